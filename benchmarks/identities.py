"""How unseen-character figures depend on how many anime identities the head trained on. Prints JSON.

`anime`'s training (all hand datasets, colour weight 1, class-mean scoring, top-5 cohort of the
training classes) with 0, 2, 4, 6 or all 8 of the non-held-out anime-faces characters, seeded
subsets; each model is then evaluated on the same 4 held-out characters as `byakugan evaluate
../shared/datasets/anime-faces --classes ame ceci fauna irys --per-class 100 --seed 1 --trials 20
--unknown-fraction 0.25` does. Features come from --cache, so each run is a head training.

    .venv/bin/python benchmarks/identities.py --cache .cache/features
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from byakugan.embedder.training.data import pick_holdout, scan
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.training.metric import TrainConfig, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
ALL = ["anime-faces", "sign-digits", "rock-paper-scissors", "hand-fingers"]
KEYS = ("top1_nearest", "top1_prototype", "far_at_tar95_mean", "roc_auc_mean")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--counts", type=int, nargs="+", default=[0, 2, 4, 6, 8])
    p.add_argument("--repeats", type=int, default=2, help="seeded subsets per count (one when the count is 0 or all)")
    a = p.parse_args()
    anime = scan([DATA / "anime-faces"])
    held = pick_holdout(anime, "anime-faces", 4, seed=0)
    others = sorted({s.label for s in anime} - set(held))
    test = scan([DATA / "anime-faces"], per_class=100, seed=1, classes=[h.split("/", 1)[1] for h in held])
    out = {"test_characters": held, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.counts:
            for rep in range(a.repeats if 0 < n < len(others) else 1):
                trained = sorted(random.Random(rep).sample(others, n))
                cfg = TrainConfig(data=[str(DATA / d) for d in ALL], out=f"{tmp}/m", epochs=4, views=3, loss="proxyanchor",
                                  miner="none", colour_weight=1.0, scoring="mean", cohort_top=5, cache=a.cache,
                                  holdout=held + [c for c in others if c not in trained])
                model = train(cfg, log=lambda m: print(m, file=sys.stderr), overwrite=True)  # one folder, a model each run
                emb = model.embed([s.path for s in test], progress=True)
                s = enrolment_trials(emb, [s.label for s in test], shots=5, trials=20, unknown_fraction=0.25, seed=1,
                                     offset=model.cohort_offsets(emb)).summary
                out["runs"].append({"anime_characters_trained": n, "characters": trained, **{k: s[k] for k in KEYS}})
                print(json.dumps(out["runs"][-1]), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
