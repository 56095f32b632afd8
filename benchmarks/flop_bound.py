"""How close embedding comes to this CPU's FLOP bound (issue #18: >= 60%), side by side in one run.
Prints JSON and writes docs/flop_bound.json.

    .venv/bin/python benchmarks/flop_bound.py [--model default] [--seconds 5]

- FLOPs per image: torch's FlopCounterMode over the model's forward at its input size (2 per
  multiply-add, convolutions and matrix products; the depthwise convolutions count what they do).
- The bound: float32 matrix products (torch.mm, 2048 x 2048, MKL/oneDNN) at the same thread count,
  measured in the same run: the most this CPU does of useful arithmetic. The nominal bound from
  the clock and vector width is printed beside it when /proc/cpuinfo says enough.
- Embedding: onnxruntime (the live path) and torch on the same preprocessed pixels, one image at a
  time and in batches of 32, with 1 and 2 threads. Preprocessing is left out: it is not arithmetic
  a faster kernel would save.
- Beside the live path's file, the same model exported as traced, with timm's on-the-fly 'same'
  padding left in the graph (what export_onnx wrote before embedder/embedding/onnx_static.py):
  `onnxruntime_as_traced_*`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def rate(fn, n: int, seconds: float) -> float:
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n
    return done / (time.perf_counter() - start)


def matmul_gflops(threads: int, seconds: float, n: int = 2048) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return rate(lambda: torch.mm(a, b), 1, seconds) * 2 * n**3 / 1e9


def nominal_gflops_per_core() -> dict | None:
    """Clock x single-precision FLOPs per cycle (2 FMA units x lanes x 2), from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split())
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M).group(1))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    return {"model": re.search(r"^model name\s*:\s*(.*)$", info, re.M).group(1), "mhz": mhz, "lanes": lanes,
            "gflops_per_core": round(mhz / 1000 * lanes * 2 * 2, 1)}


def export_as_traced(model, path: Path) -> None:
    import warnings

    x = torch.zeros(2, 3, model.preprocess.size, model.preprocess.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False, input_names=["pixels"], output_names=["embedding"])


def main() -> None:
    import tempfile

    import onnxruntime as ort
    from torch.utils.flop_counter import FlopCounterMode

    import byakugan.embedder as embedder
    from byakugan.embedder.embedding.runtime import onnx_embedder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", default=str(ROOT / "docs" / "flop_bound.json"))
    a = p.parse_args()
    model = embedder.load(a.model)[0]
    twin = onnx_embedder(model)
    traced = Path(tempfile.mkdtemp()) / "traced.onnx"
    export_as_traced(model, traced)
    size = model.preprocess.size
    x = np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.from_numpy(x[:1]))
    flops = counter.get_total_flops()
    out = {"model": model.name, "input": size, "gflops_per_image": round(flops / 1e9, 3),
           "nominal": nominal_gflops_per_core(), "threads": {}}
    for threads in (1, 2):
        peak = matmul_gflops(threads, a.seconds)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(twin.path), opts, providers=["CPUExecutionProvider"])
        before = ort.InferenceSession(str(traced), opts, providers=["CPUExecutionProvider"])
        row = {"matmul_gflops": round(peak, 1)}
        for b in (1, 32):
            onnx = rate(lambda: session.run(None, {"pixels": x[:b]}), b, a.seconds)
            old = rate(lambda: before.run(None, {"pixels": x[:b]}), b, a.seconds)
            with torch.inference_mode():
                torch.set_num_threads(threads)
                eager = rate(lambda: model(torch.from_numpy(x[:b])), b, a.seconds)
            row[f"batch_{b}"] = {"onnxruntime_images_per_s": round(onnx, 1), "torch_images_per_s": round(eager, 1),
                                 "onnxruntime_as_traced_images_per_s": round(old, 1),
                                 "onnxruntime_share_of_bound": round(onnx * flops / 1e9 / peak, 3),
                                 "onnxruntime_as_traced_share_of_bound": round(old * flops / 1e9 / peak, 3),
                                 "torch_share_of_bound": round(eager * flops / 1e9 / peak, 3)}
        out["threads"][str(threads)] = row
    text = json.dumps(out, indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
