"""Issue #14: does a score adapted to the gallery's own classes (embedder/scoring/adapt.py: a ridge
regression from the enrolled references to their class, fitted in closed form, added to the class
score) carry a model to sources it never saw? Prints JSON.

    .venv/bin/python benchmarks/loso.py --no-baseline --save-embeddings bench-out/emb-now
    .venv/bin/python benchmarks/gallery_adapt.py bench-out/emb-now [--seeds 1 2 3] [--out F]

Input: each fold's embeddings of the source it left out (benchmarks/loso.py), scored with the same
trials as `byakugan evaluate` (5 shots, 10 trials, a third of the classes unknown) for each seed, with
each domain's shipped scoring (class mean with cohort T-norm for anime, the nearest fused reference for
hands) as the base. Variants: ridge 0.03 / 0.1 / 0.3 × weight 0.1 / 0.3 / 1. Figures are the mean over
the seeds.

Also, for no adaptation and the setting `hand-landmarks-2` ships (ridge 0.03, weight 0.3), the
gallery's own threshold as the product sets it from its references (each scored for its class with
itself left out of its class and of the fit: embedder.scoring.adapt.left_out; the score keeping 95%
of them) and the share of known queries (TAR) and of strangers (FAR) it lets through: `own_threshold`.

Chosen nested: each source is reported under the variant (or none) with the best mean top-1 on the
*other* sources of its domain among those whose mean FAR@TAR95 there is no higher than the shipped
scoring's (a gain in top-1 bought with strangers let in is not taken); `nested` in the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.evaluation.protocol import draw_trial
from byakugan.embedder.scoring.adapt import Adaptation, left_out
from byakugan.embedder.scoring.cohort import offsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from centring import SOURCES, TOP, embed, figures, load, per_variant  # noqa: E402
from score_norm import class_scores  # noqa: E402

SHIPPED = "shipped"
GRID = [Adaptation(w, r) for r in (0.03, 0.1, 0.3) for w in (0.1, 0.3, 1.0)]
SHIPS = Adaptation(0.3, 0.03)  # hand-landmarks-2's advice


def name(a: Adaptation) -> str:
    return f"ridge{a.ridge:g}_weight{a.weight:g}"


def draws(labels: np.ndarray, seed: int, trials: int = 10, shots: int = 5, unknown_fraction: float = 0.33):
    """`byakugan evaluate`'s trials: each as (known classes, reference rows, query rows with the
    strangers' after the known ones', which of them are known, each known class's rows in refs)."""
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        known, unknown, refs, queries = draw_trial(rng, labels, classes, int(round(len(classes) * unknown_fraction)), shots)
        refs = np.asarray(refs)
        rows = np.concatenate([queries, np.flatnonzero(np.isin(labels, list(unknown)))])
        yield known, refs, rows, np.arange(len(rows)) < len(queries), [np.flatnonzero(labels[refs] == c) for c in known]


def run(d: dict, mode: str, seed: int) -> dict:
    labels, cohort = d["labels"], d.get("cohort")
    emb, qemb = embed(d, None, None)  # stored (fused) form, query form
    out: dict[str, list] = {}
    for known, refs, rows, is_known, groups in draws(labels, seed):
        base = class_scores(qemb[rows], emb[refs], groups, mode)
        if cohort is not None:
            base = base - offsets(qemb[rows], cohort, TOP)[:, None]
        for n, a in [(SHIPPED, None)] + [(name(a), a) for a in GRID]:
            S = base if a is None else base + a.terms(qemb[rows], emb[refs], groups)
            pred = np.asarray(known)[S.argmax(1)]
            out.setdefault(n, []).append((S.max(1)[is_known], pred[is_known] == labels[rows][is_known], S.max(1)[~is_known]))
            if a is None or a == SHIPS:
                t = float(np.quantile(own_scores(emb[refs], qemb[refs], groups, mode, cohort, a), 0.05))
                out.setdefault("own_threshold_" + n, []).append((np.mean(S.max(1)[is_known] >= t), np.mean(S.max(1)[~is_known] >= t)))
    return out


def own_scores(R: np.ndarray, Rq: np.ndarray, groups: list, mode: str, cohort, a) -> np.ndarray:
    """Each reference's score for its own class as the gallery's calibration takes it: without itself
    in the class, and (adapted) in the fit."""
    owner = np.empty(len(R), int)
    for c, g in enumerate(groups):
        owner[g] = c
    SR = Rq @ R.T
    np.fill_diagonal(SR, -np.inf)
    if mode == "nearest":
        base = np.array([SR[i, groups[owner[i]]].max() for i in range(len(R))])
    else:
        rest = np.stack([R[groups[owner[i]]].sum(0) - R[i] for i in range(len(R))])
        base = (Rq * rest).sum(1) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
    if cohort is not None:
        base = base - offsets(Rq, cohort, TOP)
    if a is not None:
        sums = np.stack([R[g].sum(0) for g in groups])
        base = base + left_out(R.T.astype(np.float64) @ R, sums, R, Rq, owner, a)[1][np.arange(len(R)), owner]
    return base[np.isfinite(base)]  # a class of one reference gives none


def own(trials: list) -> dict:
    return {"tar": round(float(np.mean([t for t, _ in trials])), 4), "far": round(float(np.mean([f for _, f in trials])), 4)}


def nested(table: dict, srcs: list[str]) -> dict:
    picks = {}
    for s in srcs:
        others = [o for o in srcs if o != s]
        mean = lambda n, k: float(np.mean([table[o][n][k] for o in others]))  # noqa: E731
        allowed = [n for n in table[s] if not n.startswith("own_") and mean(n, "far_at_tar95") <= mean(SHIPPED, "far_at_tar95")]
        picks[s] = max(allowed, key=lambda n: (round(mean(n, "top1"), 4), -mean(n, "far_at_tar95")))
    chosen = {s: table[s][picks[s]] for s in srcs}
    worst = min(srcs, key=lambda s: chosen[s]["top1"])
    return {"picks": picks, "mean_top1": round(float(np.mean([c["top1"] for c in chosen.values()])), 4),
            "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in chosen.values()])), 4),
            "worst": {"source": worst, **chosen[worst]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="SOURCE.safetensors files from loso.py --save-embeddings")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    table, by_seed = {}, {}
    for f in sorted(Path(a.folder).glob("*.safetensors")):
        domain, d = SOURCES[f.stem]["domain"], load(f)
        runs = {seed: {n: own(t) if n.startswith("own_threshold") else figures(t)
                       for n, t in run(d, "mean" if domain == "anime" else "nearest", seed).items()} for seed in a.seeds}
        by_seed[f.stem] = runs
        table[f.stem] = {n: {k: round(float(np.mean([r[n][k] for r in runs.values()])), 4) for k in r0}
                         for n, r0 in runs[a.seeds[0]].items()}
        print(f"{f.stem}: {table[f.stem][SHIPPED]}", file=sys.stderr, flush=True)
    summary = {}
    for domain in ("anime", "hand"):
        srcs = [s for s in table if SOURCES[s]["domain"] == domain]
        if srcs:
            variants = [n for n in table[srcs[0]] if not n.startswith("own_")]
            summary[domain] = ({"nested": nested(table, srcs)} if len(srcs) > 1 else {}) | per_variant(table, srcs, variants)
            summary[domain] |= {n: {k: round(float(np.mean([table[s][n][k] for s in srcs])), 4) for k in ("tar", "far")}
                                for n in table[srcs[0]] if n.startswith("own_")}
    text = json.dumps({"protocol": f"leave one source out; 5 shots, 10 trials, a third of the classes unknown, seeds {a.seeds}",
                       "sources": table, "summary": summary, "by_seed": by_seed}, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
