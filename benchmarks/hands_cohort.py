"""Would cohort score normalisation (embedder/scoring/cohort.py) help hand galleries? A study, not shipped.

Leave one dataset out, as benchmarks/landmark_sweep.py (cached crops and landmarks, frozen
ImageNet CNN, the shipped landmark-encoder settings fitted on the other two datasets, fused at
weight 0.4). The cohort: fused class means of the other two datasets' classes. Each rule takes a
query's mean cosine to its `top` most similar cohort means off its scores (`none`: raw). 5 shots,
10 trials, a quarter of the classes unknown. Prints JSON.

    .venv/bin/python benchmarks/hands_cohort.py --cache .cache/landmarks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import byakugan.embedder as embedder
from byakugan.embedder.scoring.cohort import class_means, offsets
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.scoring.fusion import fuse, query_form
from byakugan.embedder.training.landmarks import JOINT_RECIPE, LandmarkTrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from landmark_sweep import crops_and_marks  # noqa: E402

SETS = ["sign-digits", "rock-paper-scissors", "hand-fingers"]
KEYS = ("top1_nearest", "far_at_tar95", "roc_auc", "far_at_tar95_mean", "roc_auc_mean")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default=".cache/landmarks")
    p.add_argument("--weight", type=float, default=0.4)
    a = p.parse_args()
    model, _ = embedder.load("imagenet")
    data = {ds: crops_and_marks(ds, model, Path(a.cache)) for ds in SETS}
    report = {"weight": a.weight, "results": {}}
    for test in SETS:
        train = [d for d in SETS if d != test]
        X = np.concatenate([data[d]["marks"] for d in train])
        y = np.concatenate([np.char.add(f"{d}/", data[d]["labels"].astype(str)) for d in train])
        found = np.abs(X).sum(1) > 0
        enc, _ = fit(X[found], y[found], LandmarkTrainConfig(data=[], out="study", **JOINT_RECIPE), log=lambda m: None)
        fused = [fuse(data[d]["cnn"], enc.encode(data[d]["marks"]), a.weight) for d in train]
        cohort = class_means(np.concatenate(fused), list(y))
        t = data[test]
        f = fuse(t["cnn"], enc.encode(t["marks"]), a.weight)
        q = query_form(f, t["cnn"].shape[1], a.weight)
        rows = {}
        for top in (None, 0, 1, 3, 5):
            off = None if top is None else offsets(q, cohort, top)
            s = enrolment_trials(f, t["labels"], shots=5, trials=10, unknown_fraction=0.25, query_emb=q, offset=off).summary
            rows["none" if top is None else f"top {top}"] = {k: s[k] for k in KEYS}
        report["results"][test] = {"cohort_classes": len(cohort), **rows}
        print(test, json.dumps(rows), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
