"""What a colour histogram adds to the CNN embedding, on classes the model never saw. Prints JSON.

Anime: the 4 characters held out of the shipped models' training; the bins and the weight of
models/anime were chosen on the other 8 with frozen ImageNet features (which never trained on
them), so the held-out figures are not tuned on themselves. Hands: each hand dataset with
frozen ImageNet features (no model here was trained without all of them). For each, the CNN part
alone, the histogram alone, and the two joined at several weights and bin counts; the joined
vectors are built the way Embedder.forward builds them, and the `anime` row is checked against
the shipped model. Same protocol as benchmarks/unseen.py (100 images per class, seed 1,
5 shots, 20 trials, a quarter of the classes unknown).

    .venv/bin/python benchmarks/colour.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import byakugan.embedder as embedder
from byakugan.embedder.embedding.colour import ColourHistogram
from byakugan.embedder.training.data import pick_holdout, scan
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.images import load_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
WEIGHTS = (0.25, 0.5, 1.0, 2.0)
BINS = ([8, 3, 3], [12, 4, 4], [24, 6, 6])


def figures(emb: np.ndarray, labels: list[str]) -> dict:
    s = enrolment_trials(emb, labels, shots=5, trials=20, unknown_fraction=0.25, seed=1).summary
    return {k: s[k] for k in ("top1_nearest", "top1_prototype", "far_at_tar95", "far_at_tar95_mean", "roc_auc")}


def histograms(model, paths, bins) -> np.ndarray:
    h = ColourHistogram({"bins": bins}, model.preprocess)
    with torch.inference_mode():
        return np.concatenate([h(torch.stack([model.preprocess(load_image(p)) for p in paths[i : i + 64]])).numpy()
                               for i in range(0, len(paths), 64)])


def joined(cnn: np.ndarray, hist: np.ndarray, w: float) -> np.ndarray:
    e = np.concatenate([cnn, np.sqrt(w) * hist], 1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def study(model, samples, extra: dict | None = None) -> dict:
    paths, labels = [s.path for s in samples], [s.label for s in samples]
    cnn = model.embed(paths, progress=True)
    out = {"cnn": figures(cnn, labels)}
    for bins in BINS:
        hist = histograms(model, paths, bins)
        tag = "x".join(map(str, bins))
        out[f"histogram {tag}"] = figures(hist, labels)
        for w in WEIGHTS:
            out[f"cnn + histogram {tag}, weight {w}"] = figures(joined(cnn, hist, w), labels)
    for name, m in (extra or {}).items():
        shipped = m.embed(paths, progress=True)
        np.testing.assert_allclose(shipped, joined(cnn, histograms(model, paths, m.config["colour"]["bins"]),
                                                   m.config["colour"]["weight"]), atol=1e-4)
        out[name] = figures(shipped, labels)
    return out


def main() -> None:
    held = pick_holdout(scan([DATA / "anime-faces"]), "anime-faces", 4, seed=0)
    names = [h.split("/", 1)[1] for h in held]
    default, anime = embedder.load("default")[0], embedder.load("anime")[0]
    imagenet = embedder.load("imagenet")[0]
    out = {"anime_heldout_characters": names, "results": {}}
    anime_samples = scan([DATA / "anime-faces"], per_class=100, seed=1, classes=names)
    out["results"]["anime-faces (4 unseen characters), default model"] = study(default, anime_samples, {"anime (shipped)": anime})
    out["results"]["anime-faces (4 unseen characters), frozen ImageNet"] = study(imagenet, anime_samples)
    others = sorted({s.label.split("/", 1)[1] for s in scan([DATA / "anime-faces"])} - set(names))
    out["results"]["anime-faces (the other 8 characters, for choosing), frozen ImageNet"] = study(
        imagenet, scan([DATA / "anime-faces"], per_class=100, seed=1, classes=others))
    for h in ("sign-digits", "rock-paper-scissors", "hand-fingers"):
        out["results"][f"{h}, frozen ImageNet"] = study(imagenet, scan([DATA / h], per_class=100, seed=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
