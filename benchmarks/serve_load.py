"""Requests/s and latency of POST /search on a 10k-reference gallery, served by `byakugan serve`
on localhost and driven by a local load generator; prints JSON.

    .venv/bin/python benchmarks/serve_load.py --requests 300 --concurrency 4
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

import byakugan.embedder as embedder
from byakugan.index import Pipeline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--refs", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--bundle", action="store_true", help="serve an exported bundle instead of the gallery")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        model, pre = embedder.load("default")
        g = Pipeline.create(model).new_gallery(Path(tmp) / "g")
        refs = rng.standard_normal((a.refs, model.dim)).astype(np.float32)
        refs /= np.linalg.norm(refs, axis=1, keepdims=True)
        labels = rng.integers(0, 1000, a.refs)
        for lab in np.unique(labels):
            g.enroll(f"class{lab}", refs[labels == lab])
        g.save()
        source = g.path
        if a.bundle:
            from byakugan.index.export import export

            source = export(g, Path(tmp) / "bundle.zip")
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buf, "JPEG")
        body = buf.getvalue()
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "byakugan.ui.cli", "serve", str(source), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start")
                time.sleep(0.5)
            with httpx.Client(timeout=60) as client:
                def one(_: int) -> float:
                    t = time.perf_counter()
                    r = client.post(f"{url}/search", files={"image": ("q.jpg", body, "image/jpeg")})
                    r.raise_for_status()
                    return time.perf_counter() - t

                for i in range(10):  # warm-up
                    one(i)
                start = time.perf_counter()
                with ThreadPoolExecutor(a.concurrency) as pool:
                    lat = np.array(list(pool.map(one, range(a.requests))))
                wall = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps({
        "served": "bundle" if a.bundle else "gallery", "references": a.refs, "image": "320x240 JPEG",
        "requests": a.requests, "concurrency": a.concurrency,
        "requests_per_s": round(a.requests / wall, 1),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)) * 1000, 1),
                       "p95": round(float(np.percentile(lat, 95)) * 1000, 1)},
    }, indent=2))


if __name__ == "__main__":
    main()
