"""Galleries at scale on synthetic clustered vectors (dimension 1408, the hand model's): per-query
latency of gallery search against raw FAISS on the same index (Flat and HNSW32), recall@1 by label
against exact search, building HNSW, counting labels, enrolling 5 and saving (the gallery open, as
the server holds it: a server's edit copies it first, timed too; and open + enrol + save as one
CLI command does), bytes written by that save,
and opening; for HNSW also the checkpoint (its size against the whole index's, the save that writes
it, the folder's size over the vectors) and the peak memory of opening it. Ratios are measured side by side in one run.

    python benchmarks/scale.py [--sizes 2000,10000,100000] [--out docs/scale.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM, PER_LABEL, QUERIES = 1408, 10, 200


def clustered(n: int, rng) -> tuple[np.ndarray, list[str]]:
    labels = n // PER_LABEL
    centres = rng.standard_normal((labels, DIM)).astype(np.float32)
    which = np.repeat(np.arange(labels), PER_LABEL)[:n]
    v = centres[which] + 0.8 * rng.standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, [f"c{i}" for i in which]


def per_query_ms(fn, queries) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def paired_ms(fns: dict, queries) -> dict:
    """Median ms a query of each of fns, timed in turn on every query, so that a change in the
    machine's load between them cannot skew their ratio. The order rotates, so each goes first (on
    a query whose data no other has just brought into the cache) equally often."""
    times = {name: [] for name in fns}
    names = list(fns)
    for j, q in enumerate(queries):
        for name in names[j % len(names):] + names[:j % len(names)]:
            t = time.perf_counter()
            fns[name](q[None])
            times[name].append(time.perf_counter() - t)
    return {name: round(1000 * statistics.median(v), 3) for name, v in times.items()}


# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (kept across fork and exec).
PEAK = """import sys, numpy as np
from byakugan.index.gallery import Gallery
g = Gallery.open(sys.argv[1]); g.search(np.ones((1, g.dim), np.float32) / g.dim ** 0.5, 5)
print(next(int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmHWM")))"""


def peak_rss_ratio(path: Path, n: int) -> float:
    """Peak memory of a new process that opens the gallery and searches it once, over the bytes of
    its vectors (what a server holds at least), less the same process with an empty interpreter."""
    import subprocess

    base = int(subprocess.run([sys.executable, "-c", PEAK.replace("g = Gallery.open(sys.argv[1]); g.search", "0 and print")
                               .replace("(np.ones((1, g.dim), np.float32) / g.dim ** 0.5, 5)", "()")],
                              capture_output=True, text=True, check=True).stdout)
    peak = int(subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True).stdout)
    return round((peak - base) / (n * DIM * 4), 2)


def written() -> int:
    """Bytes this process has passed to write() so far (Linux /proc/self/io)."""
    return next(int(x.split()[1]) for x in open("/proc/self/io") if x.startswith("wchar"))


def enrol_and_save(g, new: np.ndarray, name: str) -> dict:
    """Enrol 5 into the open gallery and save; then the same as a CLI command does it: lock, open,
    enrol, save."""
    from byakugan.index import store
    from byakugan.index.gallery import Gallery

    t, w = time.perf_counter(), written()
    g.enroll("new", new)
    g.save()
    out = {f"{name}_enrol_5_and_save_s": round(time.perf_counter() - t, 3),
           f"{name}_enrol_5_and_save_written_mb": round((written() - w) / 2**20, 2)}
    t = time.perf_counter()
    g.clone()  # what a server's edit starts from when nobody else saved (index.service)
    out[f"{name}_clone_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    with store.locked(g.path):
        opened = Gallery.open(g.path)
        out[f"{name}_open_s"] = round(time.perf_counter() - t, 3)
        opened.enroll("new", new)
        opened.save()
    out[f"{name}_open_enrol_5_and_save_s"] = round(time.perf_counter() - t, 3)
    return out


def main() -> None:
    from byakugan.index.gallery import Gallery
    from byakugan.index.reindex import label_recall
    from byakugan.index.settings import GallerySettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="2000,10000,100000")
    p.add_argument("--out", default=str(ROOT / "docs" / "scale.json"))
    a = p.parse_args()
    faiss.omp_set_num_threads(1)  # as the CLI runs single queries
    rng = np.random.default_rng(0)
    out = {}
    for n in map(int, a.sizes.split(",")):
        v, labels = clustered(n, rng)
        settings = GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"}, 0.5)
        row: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            g = Gallery.create(settings, Path(tmp) / "g")
            for start in range(0, n, 5000):  # enrolled by label, as a user would
                chunk = labels[start:start + 5000]
                for lab in dict.fromkeys(chunk):
                    idx = [start + i for i, x in enumerate(chunk) if x == lab]
                    g.enroll(lab, v[idx])
            g.save()
            queries = v[rng.choice(n, QUERIES, replace=False)] + 0.02 * rng.standard_normal((QUERIES, DIM)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            t = time.perf_counter()
            g.labels()
            g.revision += 1  # counted again, as after an edit
            g.labels()
            row["labels_ms_after_an_edit"] = round(1000 * (time.perf_counter() - t) / 2, 2)
            raw = g.vectors
            row["flat_raw_faiss_ms"] = per_query_ms(lambda q: raw.search(q, 5), queries)
            row["flat_gallery_search_ms"] = per_query_ms(lambda q: g.search(q, 5), queries)
            new = v[:5] + 0.01
            new /= np.linalg.norm(new, axis=1, keepdims=True)
            row.update(enrol_and_save(g, new, "flat"))
            g = Gallery.open(g.path)  # as the second copy left it (its save came after g's)
            row["gallery_db_mb"] = round((Path(tmp) / "g" / "gallery.db").stat().st_size / 2**20, 1)
            row["open_and_search_peak_rss_over_vectors"] = peak_rss_ratio(Path(tmp) / "g", n)
            t = time.perf_counter()
            g.reindex("HNSW32")
            row["hnsw32_build_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            g.save()  # writes the checkpoint: the graph and the order of its vectors, not the vectors
            row["hnsw32_checkpoint_save_s"] = round(time.perf_counter() - t, 2)
            [checkpoint] = (Path(tmp) / "g").glob("index.*.faiss")
            row["hnsw32_checkpoint_mb"] = round(checkpoint.stat().st_size / 2**20, 1)
            row["hnsw32_whole_index_mb"] = round(len(g.vectors.to_bytes()) / 2**20, 1)  # what format 2 wrote
            row["hnsw32_folder_over_vectors"] = round(sum(f.stat().st_size for f in (Path(tmp) / "g").rglob("*")
                                                          if f.is_file()) / (len(g) * DIM * 4), 2)
            row["hnsw32_open_and_search_peak_rss_over_vectors"] = peak_rss_ratio(Path(tmp) / "g", len(g))
            g = Gallery.open(g.path)
            row.update(enrol_and_save(g, new, "hnsw32"))
            row["hnsw32_recall_at_1_by_label"] = round(label_recall(g.vectors, {r.id: r.label for r in g.references()}), 4)
            hnsw = g.vectors
            row["hnsw32_raw_faiss_ms"] = per_query_ms(lambda q: hnsw.search(q, 5), queries)
            row["hnsw32_gallery_search_ms"] = per_query_ms(lambda q: g.search(q, 5), queries)
            row["gallery_over_raw_flat"] = round(row["flat_gallery_search_ms"] / row["flat_raw_faiss_ms"], 2)
            row["gallery_over_raw_hnsw32"] = round(row["hnsw32_gallery_search_ms"] / row["hnsw32_raw_faiss_ms"], 2)
        out[str(n)] = row
        print(n, row, file=sys.stderr)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
