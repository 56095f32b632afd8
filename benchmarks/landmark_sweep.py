"""Landmark encoder settings, leave one dataset out, on cached landmarks and CNN crop embeddings:
for each variant and each hand dataset, fit on the other two and report 5-shot top-1 (nearest,
class mean), FAR@TAR95 and ROC AUC of the raw encoding, the learned one and the fusion at several
weights. Prints JSON. The first run detects hands and embeds crops (~6 min here), later ones ~1 min
per variant.

    .venv/bin/python benchmarks/landmark_sweep.py --cache .cache/landmarks
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

import byakugan.embedder as embedder
from byakugan.embedder.training.data import scan
from byakugan.embedder.detection import create_detector
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.scoring.fusion import fuse, query_form
from byakugan.embedder.training.landmarks import JOINT_RECIPE, LandmarkTrainConfig, fit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
VARIANTS = {
    "shipped (multisimilarity)": {},
    "triplet + semihard": {"loss": "triplet", "miner": "semihard"},
    "supcon": {"loss": "supcon", "miner": "none"},
    "80 epochs": {"epochs": 80},
    "no rotation": {"rotate": 0.0},
    "128-d": {"dim": 128, "hidden": 512},
}


def crops_and_marks(ds: str, model, cache: Path) -> dict[str, np.ndarray]:
    samples = scan([DATA / ds])
    det = create_detector("hand")
    key = json.dumps([model.fingerprint(), det.config, [str(s.path.resolve()) for s in samples]])
    path = cache / f"crops-{ds}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if path.is_file():
        return load_file(str(path))
    crops, marks = [], np.zeros((len(samples), 128), np.float32)
    for i, s in enumerate(tqdm(samples, desc=f"hands {ds}", unit="img")):
        img = embedder.load_image(s.path)
        d = det(img)
        crops.append(d[0].crop(img) if d else img)
        if d:
            marks[i] = d[0].landmarks
    out = {"cnn": model.embed(crops, progress=True), "marks": marks,
           "labels": np.unique([s.label for s in samples], return_inverse=True)[1].astype(np.int64)}
    cache.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return out


def brief(emb: np.ndarray, labels: np.ndarray, queries=None) -> list[float]:
    s = enrolment_trials(emb, labels, shots=5, trials=10, unknown_fraction=0.25, query_emb=queries).summary
    return [s["top1_nearest"], s["top1_prototype"], s["far_at_tar95"], s["roc_auc"], s["threshold_tar95"]]


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="imagenet", help="CNN model for the crops (default imagenet: unseen)")
    p.add_argument("--cache", default=".cache/landmarks")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of {list(VARIANTS)}")
    p.add_argument("--weights", nargs="*", type=float, default=[0.2, 0.3, 0.4, 0.5])
    a = p.parse_args()
    model, _ = embedder.load(a.model)
    sets = ["sign-digits", "rock-paper-scissors", "hand-fingers"]
    data = {ds: crops_and_marks(ds, model, Path(a.cache)) for ds in sets}
    report = {"model": a.model, "columns": ["top1_nearest", "top1_prototype", "far_at_tar95", "roc_auc", "threshold_tar95"], "results": {}}
    for name in a.variants:
        base = LandmarkTrainConfig(data=[], out="sweep", **JOINT_RECIPE)
        cfg = replace(base, **VARIANTS[name])
        for test in sets:
            train = [d for d in sets if d != test]
            X = np.concatenate([data[d]["marks"] for d in train])
            y = np.concatenate([np.char.add(f"{d}/", data[d]["labels"].astype(str)) for d in train])
            found = np.abs(X).sum(1) > 0
            enc, _ = fit(X[found], y[found], cfg, log=lambda m: None)
            t = data[test]
            lm = enc.encode(t["marks"])
            row = {"cnn": brief(t["cnn"], t["labels"]), "raw": brief(unit(t["marks"]), t["labels"]),
                   "learned": brief(lm, t["labels"])}
            for w in a.weights:
                f = fuse(t["cnn"], lm, w)
                row[f"fused_{w}"] = brief(f, t["labels"], query_form(f, t["cnn"].shape[1], w))
            report["results"].setdefault(name, {})[test] = row
            print(name, test, json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
