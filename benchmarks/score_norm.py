"""Which score normalisation refuses strangers best on sources nobody trained on, chosen by leaving
whole sources out. Prints JSON.

    .venv/bin/python benchmarks/loso.py --joint-landmarks --no-baseline --save-embeddings bench-out/emb-all
    .venv/bin/python benchmarks/score_norm.py bench-out/emb-all

Input: each fold's embeddings of the source it left out (`byakugan evaluate --save-embeddings`),
so every figure is on a source its model never saw. The trials are `byakugan evaluate`'s (5 shots,
10 trials, a third of the classes unknown, seed 1: the same draws), the class score is the
domain's (class mean for anime, nearest reference for hands). Variants:

- raw: cosines (fused for hands) as a gallery without a cohort scores them;
- tnorm: less the query's mean cosine to its 5 most similar cohort vectors (today's `anime`);
- znorm_cohort / snorm_cohort: less each class's own mean cosine to its 5 most similar cohort
  vectors (alone, or with tnorm: both sides);
- znorm_gallery: less each class's mean score against the references of the other enrolled
  classes (its 5 most similar), no cohort needed;
- znorm_gallery_sd: the same divided by their spread;
- calibrated: (s - impostor level) / (genuine level - impostor level) per class, the impostor level
  as in znorm_gallery, the genuine level each reference's score against the rest of its class
  (leave one out): 0 = like the other classes, 1 = like its own references;
- margin_A (A = 0.25, 0.5, 1): each class's score (the shipped scoring's: tnorm for anime, raw for
  hands) less A times the best score among the other enrolled classes: a stranger tends to look
  about as like two characters as like one, a known query like its own far more. The ranking is
  unchanged (top-1 identical), only the score a threshold reads moves;
- margin_mean: less the mean of the other enrolled classes' scores instead of the best;

Operating points: a threshold fixed on the other sources of the domain (the mean of their TAR95
thresholds), and the gallery's own (genuine_q05: the score keeping 95% of its references'
leave-one-out true-match scores, what `byakugan threshold GALLERY auto` uses; logistic_p50: where
the calibration reads 50%); each with the share of true matches accepted (TAR) and of strangers.

bounded_fixed: genuine_q05 held down to the higher of the fixed one and the best score a reference
reaches against another class, what `auto` ships since the burst study (benchmarks/burst_threshold.py).

Selection is nested: for each source, the variant is the one with the lowest mean FAR@TAR95 on the
other sources of its domain among those whose mean top-1 there is within 0.5 points of raw/tnorm;
the source is then reported under that pick, so no reported figure chose its own setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from byakugan.embedder.evaluation.protocol import draw_trial
from byakugan.embedder.scoring.calibration import fit
from byakugan.embedder.scoring.cohort import offsets
from byakugan.embedder.scoring.fusion import fuse, query_form

SOURCES = {k: v for k, v in json.loads(Path(__file__).with_name("sources.json").read_text()).items()
           if not k.startswith("_")}
TOP = 5
MARGINS = (0.25, 0.5, 1.0)


def load(path: Path) -> dict:
    with safe_open(str(path), "np") as f:
        d = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    d["labels"] = np.asarray(json.loads(meta["labels"]))
    w = float(meta["landmark_weight"])
    if "landmarks" in d and w > 0:
        d["emb"] = fuse(d["cnn"], d["landmarks"], w)
        d["query"] = query_form(d["emb"], d["cnn"].shape[1], w)
    else:
        d["emb"] = d["query"] = d["cnn"]
    return d


def class_scores(Q: np.ndarray, R: np.ndarray, groups: list[np.ndarray], mode: str,
                 leave_out: bool = False) -> np.ndarray:
    """[len(Q), classes]: class mean cosine or nearest reference per class. leave_out (Q is R): a
    reference scores against its own class without itself, as a query of that class would."""
    S = Q @ R.T
    if leave_out:
        np.fill_diagonal(S, -np.inf)
    cols = []
    for g in groups:
        if mode == "nearest":
            cols.append(S[:, g].max(1))
            continue
        total = R[g].sum(0)
        m = np.tile(total, (len(Q), 1))
        if leave_out:
            m[g] -= R[g]
        cols.append(np.einsum("ij,ij->i", Q, m) / np.linalg.norm(m, axis=1))
    return np.stack(cols, 1)


def best_other(V: np.ndarray) -> np.ndarray:
    """[rows, classes]: for each class, the best score among the other classes of the row."""
    top2 = -np.partition(-V, 1, axis=1)[:, :2]
    return np.where(V >= top2[:, :1], top2[:, 1:2], top2[:, :1])


def mean_other(V: np.ndarray) -> np.ndarray:
    n = V.shape[1]
    return (V.sum(1, keepdims=True) - V) / max(n - 1, 1)


def topmean(x: np.ndarray, k: int) -> float:
    return float(np.mean(np.sort(x)[-k:]))


def run(d: dict, mode: str, trials: int = 10, shots: int = 5, unknown_fraction: float = 0.33, seed: int = 1) -> dict:
    """Per variant and trial: (known queries' best scores, right or not, unknown queries' best
    scores, the gallery's own thresholds from its references)."""
    labels, emb, qemb = d["labels"], d["emb"], d["query"]
    cohort = d.get("cohort")
    classes = np.unique(labels)
    n_unknown = int(round(len(classes) * unknown_fraction))
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for _ in range(trials):
        known, unknown, refs, queries = draw_trial(rng, labels, classes, n_unknown, shots)
        refs = np.asarray(refs)
        R = emb[refs]
        groups = [np.flatnonzero(labels[refs] == c) for c in known]
        owner = np.empty(len(R), int)
        for i, g in enumerate(groups):
            owner[g] = i
        own = np.zeros((len(R), len(groups)), bool)
        own[np.arange(len(R)), owner] = True
        unk = np.flatnonzero(np.isin(labels, list(unknown)))
        rows = np.concatenate([queries, unk])
        is_known = np.arange(len(rows)) < len(queries)
        truth = labels[rows]
        S = class_scores(qemb[rows], R, groups, mode)
        SR = class_scores(qemb[refs], R, groups, mode, leave_out=True)  # references as queries
        # per class: impostor level (its 5 most similar other-class references), spread, genuine level
        imp = np.array([topmean(SR[~own[:, i], i], TOP) for i in range(len(groups))])
        sd = np.array([max(float(np.std(SR[~own[:, i], i])), 1e-3) for i in range(len(groups))])
        gen = np.array([np.mean(SR[own[:, i], i]) for i in range(len(groups))])
        variants = {"raw": (S, SR), "znorm_gallery": (S - imp, SR - imp), "znorm_gallery_sd": ((S - imp) / sd, (SR - imp) / sd),
                    "calibrated": ((S - imp) / np.maximum(gen - imp, 1e-3), (SR - imp) / np.maximum(gen - imp, 1e-3))}
        if cohort is not None:
            tq, tr = offsets(qemb[rows], cohort, TOP)[:, None], offsets(qemb[refs], cohort, TOP)[:, None]
            P = np.stack([R[g].mean(0) for g in groups])
            tc = offsets(P / np.linalg.norm(P, axis=1, keepdims=True), cohort, TOP)[None, :]
            variants |= {"tnorm": (S - tq, SR - tr), "znorm_cohort": (S - tc, SR - tc), "snorm_cohort": (S - tq - tc, SR - tr - tc)}
        base, base_r = variants["tnorm" if cohort is not None else "raw"]
        for a in MARGINS:
            variants[f"margin_{a:g}"] = (base - a * best_other(base), base_r - a * best_other(base_r))
        variants["margin_mean"] = (base - mean_other(base), base_r - mean_other(base_r))
        for name, (V, VR) in variants.items():
            # the gallery's own evidence: each reference's score for its class (left out) and its best other class
            genuine = VR[own]
            impostor = np.where(own, -np.inf, VR).max(1)
            auto = {"genuine_q05": float(np.quantile(genuine, 0.05)),
                    "logistic_p50": fit(genuine, impostor, threshold=0.0).score_at(0.5),  # what the gallery fits
                    "impostor_max": float(impostor.max())}  # for the bounded threshold (figures, given a fixed one)
            pred = np.asarray(known)[V.argmax(1)]
            out.setdefault(name, []).append((V.max(1)[is_known], pred[is_known] == truth[is_known],
                                             V.max(1)[~is_known], auto))
    return out


def figures(trials: list, fixed: float | None = None) -> dict:
    """top-1, FAR@TAR95 (threshold per trial, chosen knowing the answers), and TAR/FAR at the
    gallery's own thresholds and at a fixed one."""
    f = {"top1": np.mean([np.mean(r) for _, r, _, _ in trials]),
         "far_at_tar95": np.mean([np.mean(u >= np.quantile(k, 0.05)) for k, _, u, _ in trials]),
         "tar95_threshold": np.mean([np.quantile(k, 0.05) for k, _, _, _ in trials])}
    for how in (h for h in trials[0][3] if h != "impostor_max"):
        f[f"tar_{how}"] = np.mean([np.mean(k >= a[how]) for k, _, _, a in trials])
        f[f"far_{how}"] = np.mean([np.mean(u >= a[how]) for _, _, u, a in trials])
    if fixed is not None:
        f["tar_fixed"] = np.mean([np.mean(k >= fixed) for k, _, _, _ in trials])
        f["far_fixed"] = np.mean([np.mean(u >= fixed) for _, _, u, _ in trials])
        # what ships (calibration.fit): the gallery's own, above the fixed one only as far as its best stranger
        bounded = [min(a["genuine_q05"], max(a["impostor_max"], fixed)) for _, _, _, a in trials]
        f["tar_bounded_fixed"] = np.mean([np.mean(k >= b) for (k, _, _, _), b in zip(trials, bounded)])
        f["far_bounded_fixed"] = np.mean([np.mean(u >= b) for (_, _, u, _), b in zip(trials, bounded)])
    return {k: round(float(v), 4) for k, v in f.items()}


def nested_pick(table: dict, source: str, domain: str) -> str:
    others = [s for s in table if s != source and SOURCES[s]["domain"] == domain]
    names = set.intersection(*(set(table[s]) for s in others))
    mean = lambda n, k: np.mean([table[s][n][k] for s in others])  # noqa: E731
    base = "tnorm" if "tnorm" in names else "raw"
    ok = [n for n in names if mean(n, "top1") >= mean(base, "top1") - 0.005]
    return min(ok, key=lambda n: mean(n, "far_at_tar95"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder", help="SOURCE.safetensors files from loso.py --save-embeddings")
    a = p.parse_args()
    raw = {}
    for f in sorted(Path(a.folder).glob("*.safetensors")):
        domain = SOURCES[f.stem]["domain"]
        raw[f.stem] = run(load(f), "mean" if domain == "anime" else "nearest")
    table = {s: {n: figures(t) for n, t in v.items()} for s, v in raw.items()}
    for s in raw:  # a fixed threshold chosen on the other sources of the domain: the mean of their TAR95 thresholds
        others = [o for o in raw if o != s and SOURCES[o]["domain"] == SOURCES[s]["domain"]]
        for n in raw[s]:
            if others:
                fixed = float(np.mean([table[o][n]["tar95_threshold"] for o in others]))
                table[s][n] |= {k: v for k, v in figures(raw[s][n], fixed).items() if k.endswith("_fixed")}
    summary = {}
    for domain in ("anime", "hand"):
        srcs = [s for s in table if SOURCES[s]["domain"] == domain]
        if len(srcs) < 2:
            continue
        picks = {s: nested_pick(table, s, domain) for s in srcs}
        chosen = {s: table[s][picks[s]] for s in srcs}
        worst = min(srcs, key=lambda s: chosen[s]["top1"])
        per_variant = {n: {k: round(float(np.mean([table[s][n][k] for s in srcs])), 4) for k in table[srcs[0]][n]}
                       for n in table[srcs[0]]}
        today = {s: table[s]["tnorm" if "tnorm" in table[s] else "raw"] for s in srcs}  # the shipped scoring
        operating = {how: {"min_tar": round(min(t[f"tar_{how}"] for t in today.values()), 4),
                           "mean_abs_tar_minus_0.95": round(float(np.mean([abs(t[f"tar_{how}"] - 0.95) for t in today.values()])), 4),
                           "mean_far": round(float(np.mean([t[f"far_{how}"] for t in today.values()])), 4)}
                     for how in ("fixed", "genuine_q05", "bounded_fixed")}
        summary[domain] = {"operating_point_today": operating, "picks": picks, "nested": {
            "mean_top1": round(float(np.mean([c["top1"] for c in chosen.values()])), 4),
            "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in chosen.values()])), 4),
            "worst": {"source": worst, **chosen[worst]}}, "per_variant_mean": per_variant}
    print(json.dumps({"protocol": "leave one source out; 5 shots, 10 trials, a third of the classes unknown, seed 1",
                      "sources": table, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
