"""Peak memory of opening an HNSW gallery whose newest rows came after its checkpoint. Prints JSON.

    .venv/bin/python benchmarks/hnsw_open_peak.py [--n 300000] [--factory HNSW8] [--late 5]

A gallery of --n random unit vectors (dimension 1408) is reindexed to --factory and saved (the
checkpoint: graph and order, index/checkpoint.py), then --late rows are enrolled and saved (appended
after the checkpoint). A new process opens it and searches once; its peak resident memory (VmHWM)
is reported over the vectors' bytes, with and without the late rows. The docs/million_hnsw.json
run (2.14x) had late rows added to a storage buffer sized for the checkpoint's rows only, which
FAISS grew by doubling: every vector copied.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import DIM, PEAK  # noqa: E402


def peak(path: Path, n: int) -> float:
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True).stdout
    return round(int(out) / (n * DIM * 4), 2)


def main() -> None:
    from byakugan.index.gallery import Gallery
    from byakugan.index.settings import GallerySettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--factory", default="HNSW8", help="HNSW8 builds quickly; the graph is not what is measured")
    p.add_argument("--late", type=int, default=5)
    a = p.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"}, 0.5),
                           Path(tmp) / "g")
        for start in range(0, a.n, 50_000):
            v = rng.standard_normal((min(50_000, a.n - start), DIM), dtype=np.float32)
            g.enroll(f"c{start}", v / np.linalg.norm(v, axis=1, keepdims=True))
        g.save()
        g.reindex(a.factory)
        g.save()
        out = {"references": a.n, "factory": a.factory, "open_peak_over_vectors": peak(g.path, a.n)}
        g.enroll("late", np.ones((a.late, DIM), np.float32) / DIM ** 0.5)
        g.save()
        out[f"open_peak_over_vectors_with_{a.late}_late_rows"] = peak(g.path, a.n + a.late)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
