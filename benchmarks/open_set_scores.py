"""Open-set rejection: which score tells a never-enrolled class from a known one best? Also
whether a horizontally flipped copy (test-time augmentation) helps. Prints JSON.

Scores, for a query's best label: its best reference cosine ("max"), that minus the second
label's ("margin"), a z-score against all the query's reference cosines ("znorm"), the best
cosine minus the mean leave-one-out nearest-reference cosine within that class ("minus_class_loo"),
and the cosine to the class mean ("class_mean"). Same protocol as `byakugan evaluate`.

    .venv/bin/python benchmarks/open_set_scores.py ../shared/datasets/anime-faces --classes ame ceci fauna irys
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import ImageOps

import byakugan.embedder as embedder
from byakugan.embedder.training.data import scan
from byakugan.embedder.evaluation.protocol import draw_trial, enrolment_trials, roc_auc


def scores(Q: np.ndarray, R: np.ndarray, rl: np.ndarray, known: list[str]) -> dict[str, np.ndarray]:
    S = Q @ R.T
    lab = np.stack([S[:, rl == c].max(1) for c in known], 1)
    order = np.argsort(-lab, 1)
    rows = np.arange(len(Q))
    best, second, best_class = lab[rows, order[:, 0]], lab[rows, order[:, 1]], np.asarray(known)[order[:, 0]]
    loo = {}
    for c in known:
        g = R[rl == c] @ R[rl == c].T
        np.fill_diagonal(g, -np.inf)
        loo[c] = float(g.max(1).mean())
    P = np.stack([R[rl == c].mean(0) for c in known])
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    return {"max": best, "margin": best - second, "znorm": (best - S.mean(1)) / (S.std(1) + 1e-6),
            "minus_class_loo": best - np.array([loo[c] for c in best_class]), "class_mean": (Q @ P.T).max(1)}


def open_set(emb: np.ndarray, labels: np.ndarray, shots: int, trials: int, fraction: float, seed: int) -> dict:
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    n_unknown = max(1, int(round(len(classes) * fraction)))
    out: dict[str, list] = {}
    for _ in range(trials):
        known, unknown, refs, queries = draw_trial(rng, labels, classes, n_unknown, shots)
        R, rl = emb[refs], labels[refs]
        k = scores(emb[queries], R, rl, known)
        u = scores(emb[np.isin(labels, list(unknown))], R, rl, known)
        for name in k:
            t = np.quantile(k[name], 0.05)  # keeps 95% of known queries
            out.setdefault(name, []).append((float(np.mean(u[name] >= t)), roc_auc(k[name], u[name])))
    return {name: {"far_at_tar95": round(float(np.mean([f for f, _ in v])), 4),
                   "roc_auc": round(float(np.mean([a for _, a in v])), 4)} for name, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--classes", nargs="+")
    p.add_argument("--model", default="default")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--unknown-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    samples = scan([a.data], per_class=a.per_class, seed=a.seed, classes=a.classes)
    labels = np.array([s.label for s in samples])
    model, _ = embedder.load(a.model)
    images = [embedder.load_image(s.path) for s in samples]
    plain = model.embed(images, progress=True)
    flipped = model.embed([ImageOps.mirror(im) for im in images], progress=True)
    tta = plain + flipped
    tta /= np.linalg.norm(tta, axis=1, keepdims=True)
    keys = ("top1_nearest", "top1_prototype", "far_at_tar95", "roc_auc")
    report = {"data": a.data, "model": model.name, "classes": sorted(set(labels.tolist())), "images": len(samples)}
    for name, emb in (("plain", plain), ("flip_tta", tta)):
        s = enrolment_trials(emb, labels, shots=a.shots, trials=a.trials, unknown_fraction=a.unknown_fraction, seed=a.seed).summary
        report[name] = {k: s[k] for k in keys}
    report["open_set_scores"] = open_set(plain, labels, a.shots, a.trials, a.unknown_fraction, a.seed)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
