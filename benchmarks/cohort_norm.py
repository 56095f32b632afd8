"""Open-set rejection with cohort score normalisation (embedder/scoring/cohort.py), on two anime sets. Prints JSON.

The cohort is what `byakugan train --cohort-top N` stores: the class means of the classes the
model trained on, 50 seeded images each (the model's own cohort when it has one, else built the
same way from models/M/training.json, or `default`'s for a model without one). Each rule
subtracts from a query's scores its mean cosine to the `top` most similar cohort vectors
(`top 0`: all of them).

- selection: ../shared/datasets/anime-scenes, faces cropped by the anime-face detector (3
  characters no model trained on), as `byakugan evaluate ... --detector anime-face --trials 20 --seed 1`.
  The shipped rule was chosen here.
- test: the 4 anime-faces characters held out of training, as `byakugan evaluate
  ../shared/datasets/anime-faces --classes ame ceci fauna irys --per-class 100 --seed 1 --trials 20
  --unknown-fraction 0.25`.

Top-1 does not change (a per-query offset keeps each query's ranking); FAR@TAR95 and ROC AUC do.

    BYAKUGAN_ANIMEFACE_CASCADE=../shared/detectors/lbpcascade_animeface.xml \\
        .venv/bin/python benchmarks/cohort_norm.py --model anime
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import byakugan.embedder as embedder
from byakugan.embedder.scoring.cohort import offsets
from byakugan.embedder.training.cohort import build_cohort
from byakugan.embedder.training.data import scan
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.index.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
TOPS = [None, 0, 1, 3, 5, 10]
KEYS = ("top1_prototype", "far_at_tar95", "far_at_tar95_mean", "roc_auc_mean", "threshold_tar95_mean")


def training_classes(model: str) -> tuple[list[Path], list[str]]:
    card = ROOT / "models" / model / "training.json"
    if not card.exists():
        card = ROOT / "models" / "default" / "training.json"
    cfg = json.loads(card.read_text())["config"]
    return [ROOT / d for d in cfg["data"]], list(cfg["holdout"])


def study(model, emb: np.ndarray, labels: list[str], cohort: np.ndarray, unknown_fraction: float) -> dict:
    out = {}
    for top in TOPS:
        off = None if top is None else offsets(emb, cohort, top)
        s = enrolment_trials(emb, labels, shots=5, trials=20, unknown_fraction=unknown_fraction, seed=1, offset=off).summary
        out["none" if top is None else f"top {top}"] = {k: s[k] for k in KEYS}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="anime")
    a = p.parse_args()
    model = embedder.load(a.model)[0]
    dirs, holdout = training_classes(a.model)
    cohort = model.cohort if model.cohort is not None else build_cohort(model, dirs, holdout, per_class=50, seed=0)

    scenes = scan([DATA / "anime-scenes"], seed=1)
    faces = Pipeline.create(model, "anime-face").embed_images([s.path for s in scenes], fallback="whole", progress=True)
    found = round(float(np.mean(faces.found)), 4)
    test = scan([DATA / "anime-faces"], per_class=100, seed=1, classes=[h.split("/", 1)[1] for h in holdout])
    out = {"model": a.model, "cohort_classes": len(cohort), "holdout": holdout,
           "selection anime-scenes": {"faces_found": found, **study(model, faces.cnn,
                                                                    [s.label for s in scenes], cohort, 0.33)},
           "test anime-faces held out": study(model, model.embed([s.path for s in test], progress=True),
                                              [s.label for s in test], cohort, 0.25)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
