"""Issue #14: does centring the embeddings on the gallery's own references carry a model to a source it
never saw? Prints JSON.

    .venv/bin/python benchmarks/loso.py --joint-landmarks --no-baseline --save-embeddings bench-out/emb-all
    .venv/bin/python benchmarks/centring.py bench-out/emb-all [--out F]

A source nobody trained on moves every embedding the same way (its drawing style, its room and
camera): the part all its pictures share. Taking the mean of the enrolled references off every
vector, query and reference alike, before the cosine (the few-shot literature's "centre and
L2-normalise", with the gallery's own mean where SimpleShot uses the training set's) removes that
part and leaves what tells the enrolled classes apart. Nothing is trained; a gallery knows its mean.

Input, trials and class scores as benchmarks/score_norm.py (each fold's embeddings of the source it
left out; 5 shots, 10 trials, a third of the classes unknown, seed 1; class mean for anime, nearest
reference fused with landmarks for hands). Variants, each with the domain's shipped scoring
(cohort T-norm for anime, its cohort centred the same way):
- raw: as shipped;
- centred: less the mean of the trial's references (hands: the CNN part and the landmark part each
  centred on their own and normalised again, then fused at the fold's weight);
- centred_train (anime only): less the mean of the fold's cohort, its training classes' means:
  SimpleShot's centring, the same for every gallery.
Hands also by class mean (the scoring anime uses, which a hand gallery can be set to): `*_class_mean`.
What a gallery can keep up to date cheaply, from its class sums alone (no vector normalised again):
- centred_means: the cosine of (query - m) to (class mean - m), m the mean of all references, on
  the stored (fused) vectors as they are;
- centred_means_parts (hands): the same for the CNN part and the landmark part each (a part's
  mean over the references that have it), the two cosines weighted as fusion weights them; a
  query without landmarks scores by its CNN part alone.

Selection is nested, as score_norm.py's: each source is reported under the variant with the best
mean top-1 on the *other* sources of its domain (ties: the lower mean FAR@TAR95), so no reported
figure chose its own setting; `nested` in the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open

from byakugan.embedder.evaluation.protocol import draw_trial
from byakugan.embedder.scoring.cohort import offsets
from byakugan.embedder.scoring.fusion import fuse, has_landmarks, query_form

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from score_norm import class_scores  # noqa: E402  (the same class scores the score study uses)

SOURCES = {k: v for k, v in json.loads(Path(__file__).with_name("sources.json").read_text()).items()
           if not k.startswith("_")}
TOP = 5


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def centre(x: np.ndarray, m: np.ndarray, keep_zero: bool = False) -> np.ndarray:
    out = unit(x - m)
    if keep_zero:  # rows without landmarks stay without them
        out[np.abs(x).sum(1) == 0] = 0
    return out


def load(path: Path) -> dict:
    with safe_open(str(path), "np") as f:
        d = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    d["labels"] = np.asarray(json.loads(meta["labels"]))
    d["weight"] = float(meta["landmark_weight"])
    return d


def embed(d: dict, m_cnn: np.ndarray | None, m_lm: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(stored form, query form) of every row, centred on the given means (None: as it is)."""
    cnn = d["cnn"] if m_cnn is None else centre(d["cnn"], m_cnn)
    w = d["weight"]
    if "landmarks" not in d or w <= 0:
        return cnn, cnn
    lm = d["landmarks"] if m_lm is None else centre(d["landmarks"], m_lm, keep_zero=True)
    emb = fuse(cnn, lm, w)
    return emb, query_form(emb, cnn.shape[1], w)


def cheap(d: dict, rows: np.ndarray, refs: np.ndarray, groups: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The centred class-mean scores a gallery gets from its class sums (see the module's note)."""
    emb, _ = embed(d, None, None)
    R, Q = emb[refs], emb[rows]
    m = R.mean(0)
    P = unit(np.stack([R[g].mean(0) for g in groups]) - m)
    out = {"centred_means": unit(Q - m) @ P.T}
    if "landmarks" in d and d["weight"] > 0:
        w, cnn, lm = d["weight"], d["cnn"], d["landmarks"]
        has = has_landmarks(lm, 0)
        mc, ml = cnn[refs].mean(0), lm[refs][has[refs]].mean(0)
        Pc = unit(np.stack([cnn[refs][g].mean(0) for g in groups]) - mc)
        Pl = np.stack([lm[refs][g][has[refs][g]].mean(0) - ml if has[refs][g].any() else np.zeros_like(ml) for g in groups])
        Pl = unit(Pl) * np.stack([has[refs][g].any() for g in groups])[:, None]
        sc, sl = unit(cnn[rows] - mc) @ Pc.T, unit(lm[rows] - ml) @ Pl.T
        out["centred_means_parts"] = np.where(has[rows][:, None], (1 - w) * sc + w * sl, sc)
    return out


def run(d: dict, mode: str, trials: int = 10, shots: int = 5, unknown_fraction: float = 0.33, seed: int = 1) -> dict:
    labels, cohort = d["labels"], d.get("cohort")
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for _ in range(trials):
        known, unknown, refs, queries = draw_trial(rng, labels, classes, int(round(len(classes) * unknown_fraction)), shots)
        refs = np.asarray(refs)
        unk = np.flatnonzero(np.isin(labels, list(unknown)))
        rows = np.concatenate([queries, unk])
        is_known = np.arange(len(rows)) < len(queries)
        groups = [np.flatnonzero(labels[refs] == c) for c in known]
        means = {"raw": (None, None)}
        with_lm = refs[has_landmarks(d["landmarks"], 0)[refs]] if "landmarks" in d else refs[:0]
        means["centred"] = (d["cnn"][refs].mean(0), d["landmarks"][with_lm].mean(0) if len(with_lm) else None)
        if cohort is not None:
            means["centred_train"] = (cohort.mean(0), None)
        for name, (m_cnn, m_lm) in means.items():
            emb, qemb = embed(d, m_cnn, m_lm)
            if name == "raw":
                for k, S in cheap(d, rows, refs, groups).items():
                    if cohort is not None:
                        m = d["cnn"][refs].mean(0)
                        S = S - offsets(unit(d["cnn"][rows] - m), centre(cohort, m), TOP)[:, None]
                    pred = np.asarray(known)[S.argmax(1)]
                    out.setdefault(k, []).append((S.max(1)[is_known], pred[is_known] == labels[rows][is_known], S.max(1)[~is_known]))
            for how in [mode] + (["mean"] if mode == "nearest" else []):
                S = class_scores(qemb[rows], emb[refs], groups, how)
                if cohort is not None:  # the shipped anime scoring: T-norm against the cohort, centred alike
                    c = cohort if m_cnn is None else centre(cohort, m_cnn)
                    S = S - offsets(qemb[rows], c, TOP)[:, None]
                pred = np.asarray(known)[S.argmax(1)]
                out.setdefault(name + ("_class_mean" if how != mode else ""), []).append(
                    (S.max(1)[is_known], pred[is_known] == labels[rows][is_known], S.max(1)[~is_known]))
    return out


def figures(trials: list) -> dict:
    """Top-1, FAR@TAR95 and the threshold at TAR95 (the score that keeps 95% of a trial's true matches:
    what a model's default threshold for galleries scored so is set from), means over the trials."""
    return {"top1": round(float(np.mean([np.mean(r) for _, r, _ in trials])), 4),
            "far_at_tar95": round(float(np.mean([np.mean(u >= np.quantile(k, 0.05)) for k, _, u in trials])), 4),
            "threshold_tar95": round(float(np.mean([np.quantile(k, 0.05) for k, _, _ in trials])), 4)}


def nested(table: dict, srcs: list[str]) -> dict:
    picks = {}
    for s in srcs:
        others = [o for o in srcs if o != s]
        mean = lambda n, k: np.mean([table[o][n][k] for o in others])  # noqa: E731
        picks[s] = max(table[s], key=lambda n: (round(mean(n, "top1"), 4), -mean(n, "far_at_tar95")))
    chosen = {s: table[s][picks[s]] for s in srcs}
    worst = min(srcs, key=lambda s: chosen[s]["top1"])
    return {"picks": picks, "mean_top1": round(float(np.mean([c["top1"] for c in chosen.values()])), 4),
            "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in chosen.values()])), 4),
            "worst": {"source": worst, **chosen[worst]}}


def per_variant(table: dict, srcs: list[str], names) -> dict:
    """Each variant's mean top-1 and FAR@TAR95 over the sources, and its worst source."""
    out = {}
    for n in names:
        worst = min(srcs, key=lambda s: table[s][n]["top1"])
        out[n] = {"mean_top1": round(float(np.mean([table[s][n]["top1"] for s in srcs])), 4),
                  "mean_far_at_tar95": round(float(np.mean([table[s][n]["far_at_tar95"] for s in srcs])), 4),
                  "worst": {"source": worst, **table[worst][n]}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="SOURCE.safetensors files from loso.py --save-embeddings")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    table = {}
    for f in sorted(Path(a.folder).glob("*.safetensors")):
        domain = SOURCES[f.stem]["domain"]
        table[f.stem] = {n: figures(t) for n, t in run(load(f), "mean" if domain == "anime" else "nearest").items()}
    summary = {}
    for domain in ("anime", "hand"):
        srcs = [s for s in table if SOURCES[s]["domain"] == domain]
        if not srcs:
            continue
        summary[domain] = {"nested": nested(table, srcs)} if len(srcs) > 1 else {}
        summary[domain] |= per_variant(table, srcs, table[srcs[0]])
    text = json.dumps({"protocol": "leave one source out; 5 shots, 10 trials, a third of the classes unknown, seed 1",
                       "sources": table, "summary": summary}, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
