"""PNG plots of an evaluation: confusion matrix, known-vs-unknown score histograms, embedding map."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..atomic import write_atomic
from .protocol import Trials

CONFUSION, SCORES, EMBEDDINGS, SUMMARY = "confusion.png", "scores.png", "embeddings.png", "summary.json"
FILES = (CONFUSION, SCORES, EMBEDDINGS, SUMMARY)  # what write_report writes into its folder


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    return plt


def pca_2d(emb: np.ndarray) -> np.ndarray:
    centred = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def score_bins(*scores: np.ndarray, n: int = 60) -> np.ndarray:
    """Histogram edges that hold every score, cosines or cohort-normalised scores, and no more: a
    range stretched to hold 0 squeezed cosines near 0.9 into a few bins."""
    every = np.concatenate([np.ravel(s) for s in scores if len(s)] or [np.zeros(1)])
    lo, hi = float(every.min()), float(every.max())
    if hi - lo < 0.1:  # one value, or nearly: a readable width around it
        lo, hi = (lo + hi) / 2 - 0.05, (lo + hi) / 2 + 0.05
    pad = 0.02 * (hi - lo)
    return np.linspace(lo - pad, hi + pad, n + 1)


def write_report(directory: Path, trials: Trials, emb: np.ndarray, labels: Sequence[str], title: str,
                 score_name: str = "cosine", summary: Optional[dict] = None) -> list[Path]:
    """score_name: what the scores are ("cosine", or "cohort-normalised score" for a model with a cohort);
    summary: what summary.json holds (the run's figures and what it ran with), else the trials' figures."""
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    written = []

    n = len(trials.classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * n + 2), max(4, 0.5 * n + 1.5)))
    rates = trials.confusion / np.maximum(trials.confusion.sum(1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), trials.classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), trials.classes, fontsize=8)
    ax.set_xlabel("predicted (nearest reference)")
    ax.set_ylabel("true")
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if trials.confusion[i, j]:
                    ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"{title}: {trials.summary['shots']}-shot top-1 {trials.summary['top1_nearest']:.3f}")
    written.append(_save(fig, directory / CONFUSION))

    fig, ax = plt.subplots(figsize=(7, 4))
    if not len(trials.unknown_scores):  # no class left out of any gallery: no strangers' scores to draw
        ax.text(0.5, 0.5, "No class was left out of the galleries (--unknown-fraction too small for\n"
                f"{n} classes): no strangers' scores, so no open-set figures.", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(f"{title}: open set not measured")
    else:
        bins = score_bins(trials.known_scores, trials.unknown_scores)
        ax.hist(trials.known_scores, bins=bins, alpha=0.6, density=True, label="enrolled classes")
        ax.hist(trials.unknown_scores, bins=bins, alpha=0.6, density=True, label="classes not enrolled")
        ax.axvline(trials.summary["threshold_tar95"], color="k", ls="--", label="threshold at TAR 95%")
        ax.set_xlabel(f"best {score_name} to a reference")
        ax.set_ylabel("density")
        ax.legend()
        ax.set_title(f"{title}: FAR@TAR95 {trials.summary.get('far_at_tar95', float('nan')):.3f}, "
                     f"AUC {trials.summary.get('roc_auc', float('nan')):.3f}")
    written.append(_save(fig, directory / SCORES))

    fig, ax = plt.subplots(figsize=(7 if n <= 20 else 7 + 1.6 * math.ceil(n / 40), 6))
    xy = pca_2d(emb)
    labels = np.asarray(labels)
    # Past tab20's 20 colours: colours spread over a wider map and a marker each, so that no two classes
    # look alike, and the legend beside the plot (it had none: no class could be told).
    cmap = plt.get_cmap("tab20" if n <= 20 else "turbo", max(n, 1))
    for i, c in enumerate(trials.classes):
        sel = labels == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6 if n <= 20 else 9, color=cmap(i), label=c,
                   marker="o" if n <= 20 else "o^sDvP*X"[i % 8])
    if n <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best")
    else:
        ax.legend(markerscale=2, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=math.ceil(n / 40))
    ax.set_title(f"{title}: embeddings, first two principal components")
    written.append(_save(fig, directory / EMBEDDINGS))

    write_atomic(directory / SUMMARY, (json.dumps(summary or trials.summary, indent=1) + "\n").encode())
    return written + [directory / SUMMARY]


def _save(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())  # a full disk leaves no half picture under its name

    plt.close(fig)
    return path
