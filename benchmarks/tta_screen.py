"""Issue #14: ways to use views of every picture, screened on saved views before any product code. Prints JSON.

    .venv/bin/python benchmarks/adapt_views.py bench-out/emb-tuned/finetuned bench-out/folds-tuned \
        --views bench-out/views7-tuned
    .venv/bin/python benchmarks/tta_screen.py bench-out/emb-tuned/finetuned bench-out/views7-tuned [--out F]

The views adapt_views.py embedded (each fold model, each picture of the source it left out: the mirror
image, a centre crop of 85% of each side made on the picture before preprocessing, both, and turns),
used in six ways, each scored with adapt_cohort.py's trials at the advised adaptation (weight 1,
ridge 0.1, cohort 30), seeds 1-3:
- `plain`: each picture alone (anime-tuned's galleries);
- `plain_views3`: the mirror, crop and mirrored crop also as rows of the adaptation fit;
- `tta`: every picture (reference and query) as the mean of it and its mirror (the model setting "flip");
- `tta_views1` / `tta_views3`: that, and the crop's (1) or the crop's and turns' (3) such means in the fit;
- `tta4`: every picture as the mean of it, its mirror, its crop and the mirrored crop (what became
  the model setting "flip_crop", where the crop is made on the preprocessed picture instead).
Chosen nested: each source under the way with the best mean top-1 on the other two sources.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.scoring.cohort import offsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from adapt_cohort import directions  # noqa: E402
from adapt_views import load_views  # noqa: E402
from centring import TOP, figures, load, unit  # noqa: E402
from gallery_adapt import draws  # noqa: E402

SOURCES = ("anime-faces", "anime-onepiece", "anime-scenes")


def ways(x: np.ndarray, V: np.ndarray) -> dict:
    """Each way's (every picture's vector, its views' rows for the fit); V in adapt_views.VIEWS order:
    mirror, crop, mirror_crop, turn_left, turn_right, mirror_turn_left, mirror_turn_right."""
    pairs = np.stack([unit(V[:, 1] + V[:, 2]), unit(V[:, 3] + V[:, 5]), unit(V[:, 4] + V[:, 6])], 1)
    tta = unit(x + V[:, 0])
    return {"plain": (x, V[:, []]), "plain_views3": (x, V[:, [0, 1, 2]]), "tta": (tta, pairs[:, []]),
            "tta_views1": (tta, pairs[:, [0]]), "tta_views3": (tta, pairs), "tta4": (unit(x + V[:, 0] + V[:, 1] + V[:, 2]), pairs[:, []])}


def run(d: dict, V: np.ndarray, seeds) -> dict:
    out: dict = {}
    for seed in seeds:
        for known, refs, rows, is_known, groups in draws(d["labels"], seed):
            for name, (E, views) in ways(d["cnn"], V).items():
                Q = E[rows]
                base = Q @ unit(np.stack([E[refs][g].sum(0) for g in groups])).T - offsets(Q, d["cohort"], TOP)[:, None]
                nv = views.shape[1]
                X = np.concatenate([E[refs][:, None], views[refs]], 1).reshape(-1, E.shape[1])
                rows_of = [(g[:, None] * (nv + 1) + np.arange(nv + 1)).ravel() for g in groups]
                S = base + Q @ directions(X, rows_of, d["cohort"], 0.1, 30.0).T
                pred = np.asarray(known)[S.argmax(1)]
                out.setdefault((seed, name), []).append((S.max(1)[is_known], pred[is_known] == d["labels"][rows][is_known],
                                                         S.max(1)[~is_known]))
    names = {n for _, n in out}
    return {n: {k: round(float(np.mean([figures(out[(s, n)])[k] for s in seeds])), 4) for k in ("top1", "far_at_tar95")}
            for n in sorted(names)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("embeddings", help="SOURCE.safetensors from stage_finetune.py --save-embeddings")
    p.add_argument("views", help="SOURCE.safetensors from adapt_views.py --views")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    table = {}
    for s in SOURCES:
        table[s] = run(load(Path(a.embeddings) / f"{s}.safetensors"), load_views(Path(a.views) / f"{s}.safetensors"), a.seeds)
        print(f"{s}: {table[s]}", file=sys.stderr, flush=True)
    mean = {n: {k: round(float(np.mean([table[s][n][k] for s in SOURCES])), 4) for k in ("top1", "far_at_tar95")}
            for n in table[SOURCES[0]]}
    picks = {s: max(mean, key=lambda n: np.mean([table[o][n]["top1"] for o in SOURCES if o != s])) for s in SOURCES}
    nested = {"picks": picks, "mean_top1": round(float(np.mean([table[s][picks[s]]["top1"] for s in SOURCES])), 4)}
    text = json.dumps({"protocol": f"leave one source out; 5 shots, 10 trials, a third unknown, seeds {a.seeds}; "
                       "adaptation weight 1, ridge 0.1, cohort 30", "sources": table, "mean": mean, "nested": nested}, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
