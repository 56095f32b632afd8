"""Embedding throughput (torch, and onnxruntime as the live path runs it) and gallery search latency
on this machine; prints JSON.

    .venv/bin/python benchmarks/speed.py --model default --refs 10000
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import faiss
import numpy as np
import torch

import byakugan.embedder as embedder
from byakugan.embedder.embedding.runtime import onnx_embedder
from byakugan.index import Pipeline


def rate(fn, n_items: int, seconds: float) -> float:
    fn()  # warm-up: first call allocates and picks kernels
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--refs", type=int, default=10_000)
    p.add_argument("--labels", type=int, default=1_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    model, pre = embedder.load(a.model)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (pre.size + 40, pre.size + 40, 3), dtype=np.uint8)
    out = {"model": model.name, "image_size": pre.size, "dim": model.dim, "torch_threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "embed_images_per_s": {}}
    twin = onnx_embedder(model)  # what the CLI, page and server embed with
    out["onnxruntime_embed_images_per_s"] = {}
    for b in (1, 32):
        # End to end from decoded pixels: preprocessing is part of what a user waits for.
        out["embed_images_per_s"][f"batch_{b}"] = round(rate(lambda: model.embed([img] * b, batch_size=b), b, a.seconds), 1)
        out["onnxruntime_embed_images_per_s"][f"batch_{b}"] = round(
            rate(lambda: twin.embed([img] * b, batch_size=b), b, a.seconds), 1)

    refs = rng.standard_normal((a.refs, model.dim)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    g = Pipeline.create(model).new_gallery()
    labels = rng.integers(0, a.labels, a.refs)
    for lab in np.unique(labels):
        g.enroll(f"class{lab}", refs[labels == lab])
    q = rng.standard_normal((a.queries, model.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out["search"] = {"references": a.refs, "labels": a.labels, "k": 5}
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        one = rate(lambda: [g.search(q[i : i + 1], k=5) for i in range(20)], 20, a.seconds)
        batch = rate(lambda: g.search(q, k=5), a.queries, a.seconds)
        out["search"][f"faiss_threads_{threads}"] = {
            "single_query_ms": round(1000 / one, 3),
            "batch_ms_per_query": round(1000 / batch, 3),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
