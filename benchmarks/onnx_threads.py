"""onnxruntime's thread settings for the live path, side by side in one run: one image at a time
(a search, a video frame) and batches of 32 (enrolment), with 1 and 2 intra-op threads and
onnxruntime's default, on the shipped `default` model. Prints JSON.

    python benchmarks/onnx_threads.py [--seconds 5]      (writes docs/onnx_threads.json)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def rate(session, x: np.ndarray, seconds: float) -> float:
    """Images per second over `seconds` of repeated runs (after one warm-up run)."""
    session.run(None, {"pixels": x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"pixels": x})
        n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    import onnxruntime as ort

    import byakugan.embedder as embedder
    from byakugan.embedder.embedding.runtime import onnx_embedder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "onnx_threads.json"))
    a = p.parse_args()
    twin = onnx_embedder(embedder.load("default")[0])
    size = twin.preprocess.size
    rng = np.random.default_rng(0)
    out = {}
    for threads in (0, 1, 2):  # 0: onnxruntime's default
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(twin.path), opts, providers=["CPUExecutionProvider"])
        row = {}
        for batch in (1, 32):
            x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
            row[f"batch_{batch}_images_per_s"] = round(rate(session, x, a.seconds), 1)
        out["default" if threads == 0 else f"{threads}_threads"] = row
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
