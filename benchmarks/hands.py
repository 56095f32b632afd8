"""Hands: how often MediaPipe finds them, and 5-shot accuracy of the CNN embedding of the hand crop,
the landmark encoding alone, and both joined; prints JSON.

    .venv/bin/python benchmarks/hands.py --per-class 60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import embedder
from embedder.data import scan
from embedder.detect import create_detector
from embedder.evaluation import enrolment_trials

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def brief(s: dict) -> dict:
    return {k: s[k] for k in ("top1_nearest", "top1_prototype", "far_at_tar95", "roc_auc")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("datasets", nargs="*", default=["sign-digits", "rock-paper-scissors", "hand-fingers"])
    p.add_argument("--model", default="default")
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--landmark-weight", type=float, default=1.0)
    a = p.parse_args()
    model, _ = embedder.load(a.model)
    det = create_detector("hand")
    report = {"model": model.name, "per_class": a.per_class, "results": {}}
    for ds in a.datasets:
        samples = scan([DATA / ds], per_class=a.per_class, seed=0)
        crops, marks, found, start = [], [], 0, time.perf_counter()
        for s in samples:
            img = embedder.load_image(s.path)
            d = det(img)
            found += bool(d)
            crops.append(d[0].crop(img) if d else img)
            marks.append(d[0].landmarks if d else np.zeros(128, np.float32))
        ms = (time.perf_counter() - start) / len(samples) * 1000
        labels = [s.label for s in samples]
        cnn_whole = model.embed([s.path for s in samples])
        cnn = model.embed(crops)
        lm = unit(np.stack(marks))
        fused = unit(np.concatenate([cnn, a.landmark_weight * lm], 1))
        trial = lambda e: brief(enrolment_trials(e, labels, shots=5, trials=10, unknown_fraction=0.25).summary)  # noqa: E731
        report["results"][ds] = {
            "images": len(samples), "hands_found": round(found / len(samples), 4), "ms_per_image_detect": round(ms, 1),
            "cnn_whole_image": trial(cnn_whole), "cnn_hand_crop": trial(cnn), "landmarks_only": trial(lm),
            "fusion": trial(fused),
        }
        print(ds, json.dumps(report["results"][ds]), flush=True, file=__import__("sys").stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
