"""Issue #14: the hand fusion weight chosen again for a hand CNN, leaving sources out. Prints JSON.

    .venv/bin/python benchmarks/fusion_refit.py bench-out/emb-hands bench-out/emb-hands-gpu [--seeds 1 2 3] [--out F]

Each folder holds fold embeddings of the five hand sources, the CNN part and the landmark part
stored apart (loso.py or tta_folds.py --save-embeddings; each fold's models never saw its source).
The weight was chosen with the CNN of `default`'s recipe (benchmarks/fusion_weight.py: 0.4); a
stronger CNN may want less of the landmarks. For each weight of fusion_weight.WEIGHTS every source
is scored as a new hand gallery scores it (the nearest fused reference, adapted as hand-landmarks-2
advises: weight 0.3, ridge 0.03; and unadapted), with gallery_adapt.py's trials (5 shots, 10 trials,
a third of the classes unknown, each seed given). Chosen nested: each source is reported at the
weight with the best mean adapted top-1 on the other four (ties: the lower FAR@TAR95); `picked_on_all`
is the weight all five pick, the one a release would ship, with its mean threshold_tar95 (a config's
thresholds are such means).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from centring import embed, figures, load  # noqa: E402
from fusion_weight import WEIGHTS  # noqa: E402
from gallery_adapt import SHIPS, draws  # noqa: E402
from score_norm import class_scores  # noqa: E402


def scored(d: dict, weight: float, seeds: list[int]) -> dict:
    """Unadapted and adapted figures of one source's embeddings fused at this weight."""
    emb, qemb = embed(d | {"weight": weight}, None, None)
    labels, trials = d["labels"], {"unadapted": [], "adapted": []}
    for seed in seeds:
        for known, refs, rows, is_known, groups in draws(labels, seed):
            base = class_scores(qemb[rows], emb[refs], groups, "nearest")
            for name, S in (("unadapted", base), ("adapted", base + SHIPS.terms(qemb[rows], emb[refs], groups))):
                pred = np.asarray(known)[S.argmax(1)]
                trials[name].append((S.max(1)[is_known], pred[is_known] == labels[rows][is_known], S.max(1)[~is_known]))
    return {name: figures(t) for name, t in trials.items()}


def pick(table: dict, sources: list[str]) -> str:
    """The weight with the best mean adapted top-1 over these sources (ties: the lower FAR@TAR95)."""
    mean = lambda w, k: float(np.mean([table[s][w]["adapted"][k] for s in sources]))  # noqa: E731
    return max(table[sources[0]], key=lambda w: (round(mean(w, "top1"), 4), -mean(w, "far_at_tar95")))


def summary(rows: dict) -> dict:
    """Mean and worst source of {source: figures}."""
    worst = min(rows, key=lambda s: rows[s]["top1"])
    return {"mean_top1": round(float(np.mean([r["top1"] for r in rows.values()])), 4),
            "mean_far_at_tar95": round(float(np.mean([r["far_at_tar95"] for r in rows.values()])), 4),
            "mean_threshold_tar95": round(float(np.mean([r["threshold_tar95"] for r in rows.values()])), 4),
            "worst": {"source": worst, **rows[worst]}}


def study(folder: Path, seeds: list[int], log) -> dict:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"{folder}: no SOURCE.safetensors (loso.py or tta_folds.py --save-embeddings)")
    table = {}
    for f in files:
        d = load(f)
        table[f.stem] = {str(w): scored(d, w, seeds) for w in WEIGHTS}
        log(f"{folder.name}/{f.stem}: " + ", ".join(f"{w} {table[f.stem][w]['adapted']['top1']}" for w in table[f.stem]))
    sources = sorted(table)
    picks = {s: pick(table, [o for o in sources if o != s]) for s in sources}
    out = {"sources": table, "nested": {"picks": picks, **{k: summary({s: table[s][picks[s]][k] for s in sources})
                                                             for k in ("adapted", "unadapted")}}}
    for w in table[sources[0]]:
        out[f"weight{w}"] = {k: summary({s: table[s][w][k] for s in sources}) for k in ("adapted", "unadapted")}
    chosen = pick(table, sources)
    out["picked_on_all"] = {"weight": float(chosen), **out[f"weight{chosen}"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="fold embeddings of the hand sources, one folder a CNN recipe")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    result = {"protocol": "leave one source out; 5 shots, 10 trials, a third of the classes unknown, seeds "
                          + " ".join(map(str, a.seeds)) + "; adapted as hand-landmarks-2 advises",
              "folders": {str(f): study(f, a.seeds, log) for f in a.folders}}
    text = json.dumps(result, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
