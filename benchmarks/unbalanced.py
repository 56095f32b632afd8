"""A gallery with one large class (issue #18: gallery search <= 1.2x raw FAISS on the same index), side
by side in one run. Prints JSON and writes docs/unbalanced.json.

    .venv/bin/python benchmarks/unbalanced.py [--small 1000] [--big 3000] [--factories Flat HNSW32 IVF64,PQ64]

A gallery's k best labels lie within its top k x (largest class) references, so one class enrolled
from a whole video (here --big references of one tight class beside --small classes of 10, the
synthetic vectors of benchmarks/scale.py) made every search that deep. Now an index whose work grows
with depth (HNSW, IVF-PQ) is asked first as deep as 5 labels of the size 9 labels in 10 have take (at
least 32), and only a query short of 5 labels is asked again, as deep as the labels it found leave it
to go (IVF-PQ, where the labels found hold most of that depth: only past them, their references
left out of its search); Flat and IVF,Flat still answer in one pass.
For each factory: per-query ms of raw FAISS (the store, 5 results), of the gallery, and of the
gallery searched in one pass at full depth (what every index type did before: the store taken for a
Flat one), timed in turn on every query (benchmarks/scale.py's paired_ms); 100 queries inside the
large class and 100 near the small ones; how often each way's best label, and its 5 labels in order,
are those of exact search (brute force over every vector).
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
from scale import DIM, paired_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def agreement(name: str, results, exact) -> dict:
    """How often the best label, and all 5 labels in order, are those of exact search; the share of
    exact search's 5 nearest references among the hits (recall@5)."""
    labels, hits = exact
    got = [[lab for lab, _ in r.labels] for r in results]
    return {f"{name}_top1_as_exact": round(float(np.mean([x[:1] == y[:1] for x, y in zip(got, labels)])), 3),
            f"{name}_5_labels_as_exact": round(float(np.mean([x == y for x, y in zip(got, labels)])), 3),
            f"{name}_hit_recall_at_5": round(float(np.mean([len({h.id for h in r.hits} & set(y)) / 5
                                                           for r, y in zip(results, hits)])), 3)}


class OnePass:
    """The same store taken for a Flat one: the gallery asks it once, k x (largest class) deep."""

    factory = "Flat"

    def __init__(self, store):
        self.store, self.dim = store, store.dim

    def search(self, queries, k):
        return self.store.search(queries, k)


def main() -> None:
    from byakugan.index import ranking
    from byakugan.index.gallery import Gallery
    from byakugan.index.counts import LabelCounts
    from byakugan.index.settings import GallerySettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=1000, help="classes of 10 references")
    p.add_argument("--big", type=int, default=3000, help="references of the one large class")
    p.add_argument("--factories", nargs="+", default=["Flat", "HNSW32", "IVF64,PQ64"])
    p.add_argument("--out", default=str(ROOT / "docs" / "unbalanced.json"))
    a = p.parse_args()
    faiss.omp_set_num_threads(1)  # as the CLI runs single queries
    rng = np.random.default_rng(0)

    def vecs(centre, n, spread):
        v = centre + spread * rng.standard_normal((n, DIM), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    centres = rng.standard_normal((a.small + 1, DIM), dtype=np.float32)
    big = vecs(centres[-1], a.big, 0.3)  # one gesture, many frames: a tight class
    small = [vecs(centres[i], 10, 0.8) for i in range(a.small)]
    queries = {"inside_the_large_class": vecs(centres[-1], 100, 0.3),
               "near_small_classes": np.concatenate([vecs(centres[i], 1, 0.8) for i in range(100)])}
    every = np.concatenate([big, *small])
    names = np.array(["large"] * a.big + [f"c{i}" for i in range(a.small) for _ in range(10)])

    def exact_labels(q):
        """Each query's 5 best labels by their best reference, and its 5 nearest references' ids
        (enrolled in order: the gallery's ids are the rows of `every`), by brute force."""
        labels, hits = [], []
        for s in q @ every.T:
            order = np.argsort(-s, kind="stable")
            labels.append(list(dict.fromkeys(names[order[:a.big + 50]]))[:5])
            hits.append(set(order[:5].tolist()))
        return labels, hits

    out: dict = {"references": a.big + 10 * a.small, "largest_class": a.big, "small_classes": a.small,
                 "dim": DIM, "k": 5, "factories": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for factory in a.factories:
            g = Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"},
                                               0.5), Path(tmp) / factory.replace(",", "_"))
            g.enroll("large", big)
            for i, v in enumerate(small):
                g.enroll(f"c{i}", v)
            t = time.perf_counter()
            if factory != "Flat":
                g.reindex(factory)
            row: dict = {"build_s": round(time.perf_counter() - t, 1)}
            store = g.vectors
            refs = {r.id: r for r in g.references()}
            counts = LabelCounts(g.labels())
            once = OnePass(store)
            for name, q in queries.items():
                ms = paired_ms({"raw": lambda x: store.search(x, 5), "gallery": lambda x: g.search(x, 5),
                                "one_pass": lambda x: ranking.search(once, refs, x, 5, None, None, counts)}, q)
                exact = exact_labels(q)
                row[name] = {**{f"{k}_ms": v for k, v in ms.items()},
                             "gallery_over_raw": round(ms["gallery"] / ms["raw"], 2),
                             "one_pass_over_raw": round(ms["one_pass"] / ms["raw"], 2),
                             **agreement("gallery", g.search(q, 5), exact),
                             **agreement("one_pass", ranking.search(once, refs, q, 5, None, None, counts), exact)}
            out["factories"][factory] = row
            print(json.dumps({factory: row}), file=sys.stderr, flush=True)
    text = json.dumps(out, indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
