"""Issue #14: which ImageNet backbone to build on, screened frozen (no head, no training) on every
source, 5-shot, with `byakugan evaluate` as a user would run it. Prints JSON.

    .venv/bin/python benchmarks/backbones.py [--sources anime-faces ...] [--variants efficientnet_lite0@160 ...]

Each variant is NAME@SIZE (a registered backbone at that input size, its own preprocessing
otherwise). Frozen features say how much a backbone brings before any training, so a choice made
here is made for every fold at once; the leave-one-source-out run that follows decides whether a
trained model ships. Embedding time is measured side by side in this run (1 thread), as a ratio to
the first variant, on the same 64 images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from byakugan.embedder import create_embedder, load_image
from byakugan.embedder.atomic import write_atomic
from byakugan.embedder.embedding.backbones import get_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import DATA, SOURCES, evaluate  # noqa: E402  (the same `byakugan evaluate` cells as the folds)


def build(variant: str, root: Path) -> Path:
    name, _, size = variant.partition("@")
    spec = get_spec(name)
    model = create_embedder(name, preprocess=replace(spec.preprocess, size=int(size or spec.preprocess.size)),
                            name=variant)
    folder = root / variant.replace("@", "-")
    model.save(folder)
    return folder


def speed(folders: dict[str, Path], n: int = 64) -> dict[str, float]:
    from byakugan.embedder import load

    files = sorted((DATA / "anime-faces").rglob("*.jpg"))[:n] or sorted(DATA.rglob("*.jpg"))[:n]
    images = [load_image(f) for f in files]
    seconds = {}
    for variant, folder in folders.items():
        model, _ = load(folder)
        model.embed(images[:8])
        t = time.perf_counter()
        model.embed(images)
        seconds[variant] = (time.perf_counter() - t) / len(images)
    first = next(iter(seconds.values()))
    return {v: round(s / first, 2) for v, s in seconds.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    p.add_argument("--variants", nargs="+",
                   default=["efficientnet_lite0@160", "efficientnet_lite1@160", "efficientnet_lite2@160",
                            "efficientnet_lite2@224"])
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    result: dict = {"command": "benchmarks/backbones.py " + " ".join(sys.argv[1:]), "sources": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {v: build(v, Path(tmp)) for v in a.variants}
        result["time_ratio"] = speed(folders)
        print(json.dumps({"time_ratio": result["time_ratio"]}), file=sys.stderr, flush=True)
        for source in a.sources:
            result["sources"][source] = {}
            for variant, folder in folders.items():
                t = time.time()
                # --landmarks none: a hand source scored on the backbone's features alone.
                cell = evaluate(source, SOURCES[source]["detector"], str(folder), "none", None)
                result["sources"][source][variant] = {k: cell[k] for k in ("top1", "far_at_tar95")}
                print(f"{source} {variant} {result['sources'][source][variant]} {time.time() - t:.0f}s",
                      file=sys.stderr, flush=True)
        for domain in ("anime", "hand"):
            cells = {v: [result["sources"][s][v] for s in a.sources if SOURCES[s]["domain"] == domain]
                     for v in a.variants}
            if any(cells.values()):
                result[f"{domain}_mean"] = {v: {k: round(float(np.mean([c[k] for c in cs])), 3)
                                                for k in ("top1", "far_at_tar95")} for v, cs in cells.items()}
                result[f"{domain}_worst_top1"] = {v: round(min(c["top1"] for c in cs), 3) for v, cs in cells.items()}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        write_atomic(Path(a.out), text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
