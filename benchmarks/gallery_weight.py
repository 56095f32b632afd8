"""Hands: can a gallery choose its own fusion weight from its references? Prints JSON.

    .venv/bin/python benchmarks/loso.py --joint-landmarks --no-baseline --save-embeddings bench-out/emb-all
    .venv/bin/python benchmarks/gallery_weight.py bench-out/emb-all

Input: each fold's CNN and landmark embeddings of the hand source it left out (as in
benchmarks/score_norm.py), so every figure is on a source its models never saw. The trials are
`byakugan evaluate`'s (5 shots, 10 trials, a third of the classes unknown, seed 1). In each trial
the gallery picks the landmark weight from WEIGHTS by its references alone: each reference is
scored against the others (leave one out, nearest reference) and the weight with the most
references nearest their own class wins, ties broken by the mean margin (own class score less the
best other class score), then by closeness to the shipped 0.4. Queries are then scored with that
weight. Compared with the shipped 0.4 on the same trials: top-1 (nearest) and FAR@TAR95.

`margin_M` variants: the gallery leaves the shipped weight only when another one puts at least a
share M more of its references nearest their own class (a few references decide each pick, so a
pick by one reference is mostly noise). `nested`: each source under the margin with the best mean
top-1 on the other hand sources (ties: the larger margin), so no reported figure chose its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from byakugan.embedder.evaluation.protocol import draw_trial

SOURCES = {k: v for k, v in json.loads(Path(__file__).with_name("sources.json").read_text()).items()
           if not k.startswith("_")}
WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SHIPPED = 0.4


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with safe_open(str(path), "np") as f:
        return f.get_tensor("cnn"), f.get_tensor("landmarks"), np.asarray(json.loads(f.metadata()["labels"]))


def scores(cq, lq, cr, lr, w: float) -> np.ndarray:
    """Fused cosines; a query without landmarks is scored by its CNN part alone (query_form)."""
    has = np.abs(lq).sum(1) > 0
    return np.where(has[:, None], (1 - w) * (cq @ cr.T) + w * (lq @ lr.T), cq @ cr.T)


MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def pick(cr, lr, rl, margin: float = 0.0) -> float:
    best, shipped = None, None
    for w in WEIGHTS:
        S = scores(cr, lr, cr, lr, w)
        np.fill_diagonal(S, -np.inf)
        same = rl[:, None] == rl[None, :]
        own, other = np.where(same, S, -np.inf).max(1), np.where(same, -np.inf, S).max(1)
        key = (float(np.mean(own > other)), float(np.mean(own - other)), -abs(w - SHIPPED))
        if w == SHIPPED:
            shipped = key
        if best is None or key > best[0]:
            best = (key, w)
    return best[1] if best[0][0] >= shipped[0] + margin - 1e-9 and best[0][0] > shipped[0] or margin == 0 else SHIPPED


def run(cnn, lm, labels, trials=10, shots=5, unknown_fraction=0.33, seed=1) -> dict:
    classes = np.unique(labels)
    n_unknown = int(round(len(classes) * unknown_fraction))
    rng = np.random.default_rng(seed)
    names = ["shipped", "gallery"] + [f"margin_{m}" for m in MARGINS[1:]]
    out = {n: {"top1": [], "far": []} for n in names} | {"picked": []}
    for _ in range(trials):
        known, unknown, refs, queries = draw_trial(rng, labels, classes, n_unknown, shots)
        unk = np.flatnonzero(np.isin(labels, list(unknown)))
        rl = labels[refs]
        w_gallery = pick(cnn[refs], lm[refs], rl)
        out["picked"].append(w_gallery)
        for name, w in [("shipped", SHIPPED), ("gallery", w_gallery)] + [
                (f"margin_{m}", pick(cnn[refs], lm[refs], rl, m)) for m in MARGINS[1:]]:
            S = scores(cnn[queries], lm[queries], cnn[refs], lm[refs], w)
            U = scores(cnn[unk], lm[unk], cnn[refs], lm[refs], w)
            out[name]["top1"].append(np.mean(rl[S.argmax(1)] == labels[queries]))
            t = np.quantile(S.max(1), 0.05)
            out[name]["far"].append(np.mean(U.max(1) >= t))
    return {n: {k: round(float(np.mean(v)), 4) for k, v in out[n].items()} for n in names} | {
        "weights_picked": out["picked"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    a = p.parse_args()
    table = {}
    for f in sorted(Path(a.folder).glob("*.safetensors")):
        if SOURCES[f.stem]["domain"] == "hand":
            table[f.stem] = run(*load(f))
    summary = {}
    variants = [n for n in next(iter(table.values())) if n != "weights_picked"]
    picks = {}
    for s in table:
        others = [o for o in table if o != s]
        picks[s] = max(variants[1:], key=lambda n: (round(np.mean([table[o][n]["top1"] for o in others]), 4),
                                                     variants.index(n)))
    chosen = {s: table[s][picks[s]] for s in table}
    worst = min(chosen, key=lambda s: chosen[s]["top1"])
    summary["nested"] = {"picks": picks, "mean_top1": round(float(np.mean([c["top1"] for c in chosen.values()])), 4),
                         "mean_far_at_tar95": round(float(np.mean([c["far"] for c in chosen.values()])), 4),
                         "worst": {"source": worst, **chosen[worst]}}
    for name in variants:
        worst = min(table, key=lambda s: table[s][name]["top1"])
        summary[name] = {"mean_top1": round(float(np.mean([t[name]["top1"] for t in table.values()])), 4),
                         "mean_far_at_tar95": round(float(np.mean([t[name]["far"] for t in table.values()])), 4),
                         "worst": {"source": worst, **table[worst][name]}}
    print(json.dumps({"protocol": "leave one source out; 5 shots, 10 trials, a third of the classes unknown, seed 1",
                      "weights": WEIGHTS, "sources": table, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
