"""Hands: one landmark net for each hand, how a picture's hands are combined, and mirrored training draws
(issue #14). Prints JSON
and writes it to --out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loso.py --joint-landmarks --no-baseline --save-embeddings bench-out/emb-all
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/landmark_loso.py --cache .cache/landmarks
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/landmark_hands.py bench-out/emb-all

For each hand source S, landmark encoders are trained by `train-landmarks`' own `fit` on the
other hand sources, exactly as `loso.py` trains each fold's (100 images per class, seed 0, the
loso cache of landmarks), in five forms:
- joint: one net over both hands' 128 numbers, no mirroring (`hand-landmarks`, what the loso
  folds used: its rows must reproduce the fold's saved landmark vectors, checked here);
- joint_mirror: the same, each hand of a training draw mirrored with chance 0.5;
- each: one net shared by both hand slots, each hand embedded alone into half the vector;
- each_mirror: both;
- sum_mirror: each hand embedded alone, the two vectors added (no slot order), mirrored draws
  (`hand-landmarks-2`).
S's landmarks (landmark_loso.py's cache of the `hand` pipeline: the same images in the same order
as the folds' saved embeddings) are encoded and fused at 0.4 with the fold CNN's vectors of S
(bench-out/emb-all), and scored as `byakugan evaluate` scores (5 shots, 10 trials, a third of the
classes unknown, seed 1). `nested`: each source under the form with the best mean top-1 on the
other hand sources (ties: the earlier form), so no reported figure chose its own setting.
Beside the protocol's figures: top-1 by how many hands were found in the query, every confusion
of 20 queries or more, and the landmark part alone when every query is mirrored (each hand's x
negated, the two hands' slots swapped, as MediaPipe reads a mirrored picture) against references
as they are: a gallery enrolled from photos and searched from a mirrored selfie camera.
`--weights 0.2 0.3 ...` also scores each form at those fusion weights (`by_weight`), and
`FORM_nested_weight` gives each source the weight with the best mean top-1 on the other sources.
drone-gestures is the one source with two hands in many pictures (37%), and no other source
trains with two: its fold is the case of a two-handed gesture nobody trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

from byakugan.embedder.evaluation.protocol import draw_trial
from byakugan.embedder.evaluation.summary import evaluate_embeddings
from byakugan.embedder.scoring.fusion import fuse, query_form
from byakugan.embedder.training.data import scan
from byakugan.embedder.training.landmarks import LandmarkTrainConfig, extract, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from landmark_loso import DATA, HANDS, PROTOCOL, log  # noqa: E402

FORMS = {"joint": {"hands": "joint", "dim": 64, "mirror": 0.0},
         "joint_mirror": {"hands": "joint", "dim": 64, "mirror": 0.5},
         "each": {"hands": "each", "dim": 128, "mirror": 0.0},
         "each_mirror": {"hands": "each", "dim": 128, "mirror": 0.5},
         "sum_mirror": {"hands": "sum", "dim": 64, "mirror": 0.5}}


def fold_data(folder: Path, source: str, cache: Path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """The fold CNN's vectors of S, its saved landmark vectors, labels, and S's raw landmarks."""
    with safe_open(str(folder / f"{source}.safetensors"), "np") as f:
        cnn, saved, labels = f.get_tensor("cnn"), f.get_tensor("landmarks"), json.loads(f.metadata()["labels"])
    found = sorted(cache.glob(f"hand-eval-{source}-*.safetensors"))
    if len(found) != 1:
        raise SystemExit(f"{cache}: expected one hand-eval-{source}-*.safetensors (benchmarks/landmark_loso.py "
                         f"writes it), found {len(found)}")
    marks = load_file(str(found[0]))["marks"]
    if len(marks) != len(labels):
        raise SystemExit(f"{found[0]}: {len(marks)} rows, the fold's embeddings {len(labels)}")
    return cnn, saved, labels, marks


def train(source: str, form: dict, per_class: int, seed: int, cache: str):
    samples = scan([DATA / s for s in HANDS if s != source], per_class=per_class, seed=seed)
    marks, found = extract(samples, cache)  # loso.py's cache of the same scan: no MediaPipe here
    labels = np.array([s.label for s in samples])
    cfg = LandmarkTrainConfig(data=[], out=f"fold-{source}", per_class=per_class, seed=seed, **form)
    return fit(marks[found], labels[found], cfg, None, log=lambda m: None)[0]


def mirrored(marks: np.ndarray) -> np.ndarray:
    """The detector's encoding of each picture mirrored left for right (a selfie camera against a
    photo): each hand's x negated about its wrist, and the two hands' slots swapped, since
    MediaPipe then reads the left hand as a right one; a lone hand keeps the first slot."""
    out = marks.reshape(-1, 2, 64).copy()
    out[:, :, 1::3] *= -1
    two = (out[:, 1, 0] > 0)
    out[two] = out[two][:, ::-1]
    return out.reshape(-1, 128)


def by_hands(emb, q_emb, labels, marks) -> dict:
    """Top-1 (nearest reference) of the known queries by how many hands MediaPipe found in them,
    over the same trials (draw_trial with the protocol's seed): where does a form gain? And every
    confusion of 20 queries or more (true label, answer, queries): what does mirroring cost?"""
    labels = np.asarray(labels)
    hands = (marks[:, 0] > 0).astype(int) + (marks[:, 64] > 0).astype(int)
    rng, classes = np.random.default_rng(PROTOCOL["seed"]), np.unique(labels)
    hits, confused = {n: [] for n in (0, 1, 2)}, Counter()
    for _ in range(PROTOCOL["trials"]):
        _, _, refs, queries = draw_trial(rng, labels, classes, int(round(len(classes) * PROTOCOL["unknown_fraction"])),
                                         PROTOCOL["shots"])
        best = labels[refs][(q_emb[queries] @ emb[refs].T).argmax(1)]
        for q, b in zip(queries, best):
            hits[int(hands[q])].append(b == labels[q])
            confused.update([(str(labels[q]), str(b))] if b != labels[q] else [])
    return {f"{n}_hands": {"queries": len(h), "top1": round(float(np.mean(h)), 4) if h else None} for n, h in hits.items()} \
        | {"confusions": [[t, b, n] for (t, b), n in confused.most_common() if n >= 20]}


def cell(cnn, labels, lm, source: str, marks, lm_mirrored) -> dict:
    """The protocol's figures; by hands found; and the landmark part alone when every query is
    the mirror image of what was enrolled (references as they are)."""
    trials, _, parts = evaluate_embeddings(cnn, labels, landmarks=lm, weight=0.4, name=source, **PROTOCOL)
    s, emb = trials.summary, fuse(cnn, lm, 0.4)
    return {"by_hands_found": by_hands(emb, query_form(emb, cnn.shape[1], 0.4), labels, marks),
            "landmark_part_mirrored_queries": {k: v for k, v in by_hands(lm, lm_mirrored, labels, marks).items()
                                               if k != "confusions"},
            "top1_nearest": s["top1_nearest"], "top1_class_mean": s["top1_prototype"],
            "far_at_tar95": s["far_at_tar95"], "roc_auc": s["roc_auc"],
            "landmark_part": {k: parts["landmarks"].get(k) for k in ("top1_nearest", "far_at_tar95", "threshold_tar95")}}


def by_weight(cnn, labels, lm, weight: float, source: str) -> dict:
    s = evaluate_embeddings(cnn, labels, landmarks=lm, weight=weight, name=source, **PROTOCOL)[0].summary
    return {"top1_nearest": s["top1_nearest"], "far_at_tar95": s["far_at_tar95"]}


def nested_weight(rows: dict, form: str, weights: list[float]) -> dict:
    """Each source under the fusion weight with the best mean top-1 on the other hand sources."""
    picks = {s: max(weights, key=lambda w: (round(np.mean([rows[o][form]["by_weight"][str(w)]["top1_nearest"]
                                                             for o in rows if o != s]), 4), -weights.index(w)))
             for s in rows}
    cells = {s: rows[s][form]["by_weight"][str(w)] for s, w in picks.items()}
    worst = min(cells, key=lambda s: cells[s]["top1_nearest"])
    return {"picks": picks, "mean_top1": round(float(np.mean([c["top1_nearest"] for c in cells.values()])), 4),
            "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in cells.values()])), 4),
            "worst": {"source": worst, "top1": cells[worst]["top1_nearest"], "far_at_tar95": cells[worst]["far_at_tar95"]}}


def summarise(rows: dict, pick: dict) -> dict:
    cells = {s: rows[s][pick[s]] for s in rows}
    worst = min(cells, key=lambda s: cells[s]["top1_nearest"])
    return {"mean_top1": round(float(np.mean([c["top1_nearest"] for c in cells.values()])), 4),
            "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in cells.values()])), 4),
            "worst": {"source": worst, "top1": cells[worst]["top1_nearest"], "far_at_tar95": cells[worst]["far_at_tar95"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="the folds' embeddings (loso.py --save-embeddings)")
    p.add_argument("--cache", default=".cache/features", help="loso.py's cache (its landmarks of the training sources)")
    p.add_argument("--eval-cache", type=Path, default=Path(".cache/landmarks"), help="landmark_loso.py's cache")
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    p.add_argument("--per-class", type=int, default=100, help="training images per class (loso.py's default)")
    p.add_argument("--seed", type=int, default=0, help="training seed (loso.py's folds: 0)")
    p.add_argument("--weights", nargs="+", type=float, default=[],
                   help="also score each form at these fusion weights, each source under the weight with the best "
                        "mean top-1 on the other hand sources (nested)")
    p.add_argument("--out", default="bench-out/landmark_hands.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    rows: dict[str, dict] = {}
    for source in HANDS:
        cnn, saved, labels, marks = fold_data(a.folder, source, a.eval_cache)
        rows[source] = {"two_hands": round(float((marks[:, 64] > 0).mean()), 4)}
        for name in a.forms:
            model = train(source, FORMS[name], a.per_class, a.seed, a.cache)
            lm = model.encode(marks)
            if name == "joint" and a.seed == 0 and a.per_class == 100:
                rows[source]["joint_reproduces_fold"] = bool(np.allclose(lm, saved, atol=1e-5))
            rows[source][name] = cell(cnn, labels, lm, source, marks, model.encode(mirrored(marks)))
            if a.weights:
                rows[source][name]["by_weight"] = {str(w): by_weight(cnn, labels, lm, w, source) for w in a.weights}
            log(f"{source} {name}: {json.dumps(rows[source][name])}")
    summary = {name: summarise(rows, dict.fromkeys(rows, name)) for name in a.forms}
    picks = {s: max(a.forms, key=lambda n: (round(np.mean([rows[o][n]["top1_nearest"] for o in rows if o != s]), 4),
                                            -a.forms.index(n))) for s in rows}
    summary["nested"] = {"picks": picks, **summarise(rows, picks)}
    for name in a.forms if a.weights else ():
        summary[f"{name}_nested_weight"] = nested_weight(rows, name, a.weights)
    report = {"protocol": "leave one source out; fused at 0.4 with the fold CNN; 5 shots, 10 trials, "
                          "a third of the classes unknown, seed 1; top-1 by nearest reference",
              "forms": {n: FORMS[n] for n in a.forms}, "per_class": a.per_class, "seed": a.seed,
              "sources": rows, "summary": summary}
    text = json.dumps(report, indent=1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
