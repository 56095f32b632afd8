"""Open-set rejection with cohort score normalisation, on the 4 held-out anime characters. Prints JSON.

A study for the next step on open set (not used by galleries yet). Labels are scored by class mean;
a query's cosines to a fixed cohort of *other* identities (the class means of the 8 anime-faces
characters not held out, 50 seeded images each) are subtracted: `mean` takes alpha times their
mean, `max` alpha times their maximum, `z` also divides by their spread. Same trials as
`byakugan evaluate --per-class 100 --seed 1 --trials 20 --unknown-fraction 0.25` (1 of the 4
characters unknown in each trial); top-1 does not change, FAR@TAR95 and ROC AUC do.

    .venv/bin/python benchmarks/cohort_norm.py --model anime
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import embedder
from embedder.data import pick_holdout, scan
from embedder.evaluation import draw_trial, roc_auc

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RULES = {"plain": [0.0], "mean": [0.5, 1.0], "max": [0.5, 1.0], "z": [1.0]}


def normalised(s: np.ndarray, c: np.ndarray, rule: str, alpha: float) -> np.ndarray:
    """Label scores s (queries x labels) given the same queries' cosines c to the cohort."""
    if rule == "mean":
        return s - alpha * c.mean(1, keepdims=True)
    if rule == "max":
        return s - alpha * c.max(1, keepdims=True)
    if rule == "z":
        return (s - alpha * c.mean(1, keepdims=True)) / c.std(1, keepdims=True)
    return s


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="anime")
    a = p.parse_args()
    model = embedder.load(a.model)[0]
    every = scan([DATA / "anime-faces"])
    held = set(pick_holdout(every, "anime-faces", 4, seed=0))
    names = sorted(h.split("/", 1)[1] for h in held)
    others = sorted({s.label.split("/", 1)[1] for s in every if s.label not in held})
    test = scan([DATA / "anime-faces"], per_class=100, seed=1, classes=names)
    cohort_samples = scan([DATA / "anime-faces"], per_class=50, seed=2, classes=others)
    emb = model.embed([s.path for s in test], progress=True)
    cemb = model.embed([s.path for s in cohort_samples], progress=True)
    labels, clabels = np.array([s.label for s in test]), np.array([s.label for s in cohort_samples])
    cohort = unit(np.stack([cemb[clabels == c].mean(0) for c in np.unique(clabels)]))
    classes = np.unique(labels)
    out = {"model": a.model, "heldout": names, "cohort": others, "results": {}}
    for rule, alphas in RULES.items():
        for alpha in alphas:
            rng = np.random.default_rng(1)
            top, far, auc = [], [], []
            for _ in range(20):
                known, unknown, refs, queries = draw_trial(rng, labels, classes, 1, 5)
                protos = unit(np.stack([emb[[r for r in refs if labels[r] == c]].mean(0) for c in known]))
                unk = np.flatnonzero(np.isin(labels, list(unknown)))
                sk = normalised(emb[queries] @ protos.T, emb[queries] @ cohort.T, rule, alpha)
                su = normalised(emb[unk] @ protos.T, emb[unk] @ cohort.T, rule, alpha)
                top.append(np.mean(np.asarray(known)[sk.argmax(1)] == labels[queries]))
                kb, ub = sk.max(1), su.max(1)
                far.append(np.mean(ub >= np.quantile(kb, 0.05)))
                auc.append(roc_auc(kb, ub))
            out["results"][f"{rule} {alpha}"] = {"top1_prototype": round(float(np.mean(top)), 4),
                                                 "far_at_tar95": round(float(np.mean(far)), 4),
                                                 "roc_auc": round(float(np.mean(auc)), 4)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
