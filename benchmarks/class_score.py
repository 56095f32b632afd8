"""Issue #14: how a class's score is made from its 5 references (nearest, class mean, or between),
on sources nobody trained on, chosen by leaving whole sources out. Prints JSON.

    .venv/bin/python benchmarks/loso.py --no-baseline --save-embeddings bench-out/emb-now
    .venv/bin/python benchmarks/class_score.py bench-out/emb-now [--out models/class-score.json]

Anime galleries score a class by the cosine to its mean (3-6 points better than the nearest
reference on unseen characters); hand galleries by their nearest reference (drone-gestures' gestures
are made by several people, and a stranger's hand is better matched to the one reference made by
someone like them). Between the two: the mean of the best 2 or 3 references; the mean cosine;
a soft maximum (tau log-mean-exp of the cosines / tau); and `mix_a`, a x nearest + (1 - a) x
class mean. Input, trials and the rest of the scoring as benchmarks/score_norm.py: each fold's
embeddings of the source it left out, 5 shots, 10 trials, a third of the classes unknown, seed 1;
anime less its cohort T-norm offset, hands fused. Nested: each source reported under the variant
with the best mean top-1 on the *other* sources of its domain (ties: lower mean FAR@TAR95).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.evaluation.protocol import draw_trial
from byakugan.embedder.scoring.cohort import offsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from centring import figures, nested, per_variant  # noqa: E402
from score_norm import SOURCES, TOP, load  # noqa: E402

VARIANTS = ("nearest", "mean", "top2", "top3", "mean_cosine", "softmax_0.02", "softmax_0.05", "softmax_0.1",
            "mix_0.25", "mix_0.5", "mix_0.75")


def class_scores(Q: np.ndarray, R: np.ndarray, groups: list[np.ndarray], how: str) -> np.ndarray:
    """[len(Q), classes]: each class's score for each query, made as `how` names."""
    S, cols = Q @ R.T, []
    for g in groups:
        s, total = S[:, g], R[g].sum(0)
        mean = Q @ total / np.linalg.norm(total)
        if how == "nearest" or how == "mean":
            cols.append(s.max(1) if how == "nearest" else mean)
        elif how.startswith("top"):
            cols.append(np.sort(s, 1)[:, -int(how[3:]):].mean(1))
        elif how == "mean_cosine":
            cols.append(s.mean(1))
        elif how.startswith("softmax_"):
            tau, top = float(how.split("_")[1]), s.max(1, keepdims=True)
            cols.append(top[:, 0] + tau * np.log(np.exp((s - top) / tau).mean(1)))
        else:
            a = float(how.split("_")[1])
            cols.append(a * s.max(1) + (1 - a) * mean)
    return np.stack(cols, 1)


def run(d: dict, trials: int = 10, shots: int = 5, unknown_fraction: float = 0.33, seed: int = 1) -> dict:
    labels, cohort = d["labels"], d.get("cohort")
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {v: [] for v in VARIANTS}
    for _ in range(trials):
        known, unknown, refs, queries = draw_trial(rng, labels, classes, int(round(len(classes) * unknown_fraction)), shots)
        refs = np.asarray(refs)
        groups = [np.flatnonzero(labels[refs] == c) for c in known]
        rows = np.concatenate([queries, np.flatnonzero(np.isin(labels, list(unknown)))])
        is_known = np.arange(len(rows)) < len(queries)
        Q = d["query"][rows]
        off = offsets(Q, cohort, TOP)[:, None] if cohort is not None else 0.0
        for how in VARIANTS:
            V = class_scores(Q, d["emb"][refs], groups, how) - off
            pred = np.asarray(known)[V.argmax(1)]
            out[how].append((V.max(1)[is_known], pred[is_known] == labels[rows][is_known], V.max(1)[~is_known]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="SOURCE.safetensors files from loso.py --save-embeddings")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    table = {}
    for f in sorted(Path(a.folder).glob("*.safetensors")):
        table[f.stem] = {n: figures(t) for n, t in run(load(f)).items()}
        print(f.stem, json.dumps(table[f.stem]), file=sys.stderr, flush=True)
    summary = {}
    for domain in ("anime", "hand"):
        srcs = [s for s in table if SOURCES[s]["domain"] == domain]
        if len(srcs) < 2:
            continue
        summary[domain] = {"shipped": "mean" if domain == "anime" else "nearest", "nested": nested(table, srcs),
                           **per_variant(table, srcs, VARIANTS)}
    text = json.dumps({"protocol": "leave one source out; 5 shots, 10 trials, a third of the classes unknown, seed 1",
                       "sources": table, "summary": summary}, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
