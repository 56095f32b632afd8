"""Issue #14: adapted scores that also learn what strangers look like. Prints JSON.

    .venv/bin/python benchmarks/loso.py --no-baseline --sources anime-faces anime-onepiece anime-scenes \
        --save-embeddings bench-out/emb-anime
    .venv/bin/python benchmarks/adapt_cohort.py bench-out/emb-anime [--seeds 1 2 3] [--out F]

A gallery's adaptation (embedder/scoring/adapt.py) is a ridge regression from its references to
their class: A = XᵀX + ridge·I, a class's direction weight·A⁻¹s_c. Fitted on the enrolled classes
alone, it also lifts a stranger that looks like any of them, which is why it was not shipped for
anime (benchmarks/gallery_adapt.py: anime-scenes' FAR@TAR95 0.50 → 0.54). Here the model's cohort
(the class means of the identities it trained on, which an `anime` model ships for its T-norm) goes
into the fit as examples of no enrolled class: A = XᵀX + beta·CᵀC/|C| + ridge·I, so the directions
leave out what faces in general share. The cohort's mean outer product, so that beta means the same
for a cohort of any size (these folds' hold 80 class means; `anime-tuned`'s 592 rows). beta 0 is
gallery_adapt's adaptation.

Input: each anime fold's embeddings of the source it left out and its cohort (benchmarks/loso.py),
with the shipped scoring (class mean less the cohort T-norm offset) as the base, the trials of
`byakugan evaluate` (5 shots, 10 trials, a third of the classes unknown) for each seed; figures are
the mean over the seeds. Variants: weight 0.1 / 0.3 / 1 / 2 × ridge 0.03 / 0.1 × beta 0 / 10 / 30 / 100 /
300.
threshold_tar95: the score that keeps 95% of a trial's true matches (mean over trials and seeds), what a
model's fallback threshold for galleries scored so is set from.
Chosen nested as gallery_adapt does: each source under the variant (or none) with the best mean
top-1 on the other anime sources among those whose mean FAR@TAR95 there is no higher than the
shipped scoring's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.scoring.cohort import offsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from centring import SOURCES, TOP, embed, figures, load, per_variant  # noqa: E402
from gallery_adapt import SHIPPED, draws, nested  # noqa: E402
from score_norm import class_scores  # noqa: E402

WEIGHTS, RIDGES, BETAS = (0.1, 0.3, 1.0, 2.0), (0.03, 0.1), (0.0, 10.0, 30.0, 100.0, 300.0)


def name(weight: float, ridge: float, beta: float) -> str:
    return f"ridge{ridge:g}_weight{weight:g}_beta{beta:g}"


def directions(X: np.ndarray, groups: list, C: np.ndarray, ridge: float, beta: float) -> np.ndarray:
    """A⁻¹ s_c for each class (weight 1): [classes, dim]."""
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    A = X64.T @ X64 + beta * C64.T @ C64 / len(C64) + ridge * np.eye(X.shape[1])
    return np.linalg.solve(A, np.stack([X64[g].sum(0) for g in groups]).T).T


def run(d: dict, seed: int) -> dict:
    return trials(d, d["cohort"], seed, "mean", SHIPPED, WEIGHTS)


def trials(d: dict, cohort: np.ndarray, seed: int, scoring: str, plain: str, weights) -> dict:
    """Each variant's (known queries' best scores, whether right, strangers' best scores) per trial:
    `plain` the base scoring (class mean less the cohort T-norm offset, or the nearest reference), the
    others it plus weight × the term of the fit with ridge and the cohort's share beta."""
    labels = d["labels"]
    emb, qemb = embed(d, None, None)
    out: dict[str, list] = {}
    for known, refs, rows, is_known, groups in draws(labels, seed):
        base = class_scores(qemb[rows], emb[refs], groups, scoring)
        if scoring == "mean":
            base = base - offsets(qemb[rows], cohort, TOP)[:, None]
        variants = [(plain, base)]
        for ridge in RIDGES:
            for beta in BETAS:
                T = qemb[rows] @ directions(emb[refs], groups, cohort, ridge, beta).T
                variants += [(name(w, ridge, beta), base + w * T) for w in weights]
        for n, S in variants:
            pred = np.asarray(known)[S.argmax(1)]
            out.setdefault(n, []).append((S.max(1)[is_known], pred[is_known] == labels[rows][is_known], S.max(1)[~is_known]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="SOURCE.safetensors files from loso.py --save-embeddings")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    table = {}
    for f in sorted(Path(a.folder).glob("*.safetensors")):
        if SOURCES[f.stem]["domain"] != "anime":
            continue
        d = load(f)
        runs = [{n: figures(t) for n, t in run(d, seed).items()} for seed in a.seeds]
        table[f.stem] = {n: {k: round(float(np.mean([r[n][k] for r in runs])), 4) for k in ("top1", "far_at_tar95", "threshold_tar95")}
                         for n in runs[0]}
        print(f"{f.stem}: {table[f.stem][SHIPPED]}", file=sys.stderr, flush=True)
    srcs = list(table)
    variants = list(table[srcs[0]])
    summary = {"nested": nested(table, srcs)} | per_variant(table, srcs, variants)
    text = json.dumps({"protocol": f"leave one source out; 5 shots, 10 trials, a third of the classes unknown, seeds {a.seeds}",
                       "sources": table, "summary": summary}, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
