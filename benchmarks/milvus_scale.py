"""FAISS Flat against Milvus Lite (index.milvus) on the same galleries, side by side in one run:
synthetic clustered unit vectors of dimension 1408 (benchmarks/scale.py's generator), per-query
latency of the gallery's search, top-1 label agreement between the two stores, enrolling 5 and
saving, and building the gallery (enrol everything, first save).

    python benchmarks/milvus_scale.py [--sizes 10000,100000] [--out docs/milvus_scale.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import DIM, QUERIES, clustered, per_query_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build(store: str, path: Path, v: np.ndarray, labels: list[str]):
    from byakugan.index.gallery import Gallery
    from byakugan.index.settings import GallerySettings

    settings = GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"}, 0.5)
    t = time.perf_counter()
    g = Gallery.create(settings, path, store=store)
    for lab in dict.fromkeys(labels):
        idx = [i for i, x in enumerate(labels) if x == lab]  # labels come in runs: enrolled by label
        g.enroll(lab, v[idx])
    g.save()
    return g, round(time.perf_counter() - t, 2)


def main() -> None:
    from byakugan.index import store as folder
    from byakugan.index.gallery import Gallery

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--out", default=str(ROOT / "docs" / "milvus_scale.json"))
    p.add_argument("--queries", type=int, default=QUERIES)
    a = p.parse_args()
    faiss.omp_set_num_threads(1)  # as the CLI runs single queries
    out = {}
    for n in map(int, a.sizes.split(",")):
        rng = np.random.default_rng(0)
        v, labels = clustered(n, rng)
        queries = v[rng.choice(n, a.queries, replace=False)] + 0.02 * rng.standard_normal((a.queries, DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        new = v[:5] + 0.01
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        row: dict = {"queries": a.queries}
        top1 = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, store in (("faiss_flat", "faiss"), ("milvus_lite", "milvus-lite")):
                g, row[f"{name}_build_and_first_save_s"] = build(store, Path(tmp) / name, v, labels)
                g.search(queries[:1], 5)  # first search: connections, caches
                row[f"{name}_search_ms"] = per_query_ms(lambda q: g.search(q, 5), queries)
                top1[name] = [r.labels[0][0] for r in g.search(queries, 5)]
                t = time.perf_counter()
                g.enroll("new", new)
                g.save()
                row[f"{name}_enrol_5_and_save_s"] = round(time.perf_counter() - t, 3)
                t = time.perf_counter()
                with folder.locked(g.path):  # as one CLI command: lock, open, enrol, save
                    opened = Gallery.open(g.path)
                    row[f"{name}_open_s"] = round(time.perf_counter() - t, 3)
                    opened.enroll("new", new)
                    opened.save()
                row[f"{name}_open_enrol_5_and_save_s"] = round(time.perf_counter() - t, 3)
                del g, opened
        row["top1_label_agreement"] = round(float(np.mean([x == y for x, y in zip(top1["faiss_flat"], top1["milvus_lite"])])), 4)
        row["milvus_lite_over_faiss_search"] = round(row["milvus_lite_search_ms"] / row["faiss_flat_search_ms"], 1)
        out[str(n)] = row
        print(n, row, file=sys.stderr, flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
