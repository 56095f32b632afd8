"""Anime-face detection on ../shared/datasets/anime-scenes (whole illustrations); prints JSON.

"found" is the share of images with at least one box. The set has no box annotations, so false
boxes are counted as the boxes beyond the first in each image (every illustration shows its
character's face): an upper bound where a picture shows several faces. --sheet PATH writes the
largest crop of each image into one PNG to check by eye (it holds the artists' images: keep it
out of the repository).

    .venv/bin/python benchmarks/detect.py --cascade ../shared/detectors/lbpcascade_animeface.xml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from byakugan.embedder import list_images, load_image
from byakugan.embedder.detection import create_detector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "anime-scenes"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cascade", help="path to lbpcascade_animeface.xml (default: the user cache, downloading it)")
    p.add_argument("--min-neighbors", type=int, default=5)
    p.add_argument("--scale-factor", type=float, default=1.1)
    p.add_argument("--sheet", help="write a contact sheet of the largest crops here")
    a = p.parse_args()
    config = {"name": "anime-face", "min_neighbors": a.min_neighbors, "scale_factor": a.scale_factor}
    if a.cascade:
        config["cascade"] = a.cascade
    det = create_detector(config)
    files = [f for d in sorted(DATA.iterdir()) for f in list_images(d)]
    images = [load_image(f) for f in files]
    det(images[0])  # warm-up
    start = time.perf_counter()
    boxes = [det(img) for img in images]
    ms = (time.perf_counter() - start) / len(images) * 1000
    counts = np.array([len(b) for b in boxes])
    print(json.dumps({
        "images": len(images), "detector": {k: v for k, v in config.items() if k != "cascade"},
        "found": round(float(np.mean(counts > 0)), 4),
        "boxes_per_image": round(float(counts.mean()), 3),
        "extra_boxes_per_image": round(float(np.maximum(counts - 1, 0).mean()), 3),
        "ms_per_image": round(ms, 1),
        "image_sizes": f"{min(min(i.size) for i in images)}-{max(max(i.size) for i in images)} px",
    }, indent=2))
    if a.sheet:
        crops = [b[0].crop(img).resize((96, 96)) for img, b in zip(images, boxes) if b]
        cols = 12
        sheet = Image.new("RGB", (96 * cols, 96 * ((len(crops) + cols - 1) // cols)), "white")
        for i, c in enumerate(crops):
            sheet.paste(c, (96 * (i % cols), 96 * (i // cols)))
        sheet.save(a.sheet)


if __name__ == "__main__":
    main()
