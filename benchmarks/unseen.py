"""How well a trained head generalises to classes it never saw, against frozen ImageNet features.

- anime: train on every dataset except 4 held-out anime-faces characters; enrol and query those 4.
- hands, leave one dataset out: for each hand dataset, train without it and evaluate on it.
Each evaluation is the enrolment protocol (5 shots, 20 trials, a quarter of the classes unknown).
Prints JSON. Features are cached in --cache, so variants after the first run take minutes.

    .venv/bin/python benchmarks/unseen.py --cache .cache/features
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from byakugan.embedder import Preprocess, create_embedder
from byakugan.embedder.training.data import pick_holdout, scan
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.training.metric import TrainConfig, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
HANDS = ["sign-digits", "rock-paper-scissors", "hand-fingers"]
ALL = ["anime-faces", *HANDS]


def evaluate(model, dataset: str, classes=None, per_class: int = 100) -> dict:
    samples = scan([DATA / dataset], per_class=per_class, seed=1, classes=classes)
    emb = model.embed([s.path for s in samples], progress=True)
    return enrolment_trials(emb, [s.label for s in samples], shots=5, trials=20, unknown_fraction=0.25, seed=1).summary


def brief(s: dict) -> dict:
    return {k: s[k] for k in ("classes", "top1_nearest", "top1_prototype", "far_at_tar95", "roc_auc", "threshold_tar95") if k in s}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--loss", default="multisimilarity")
    p.add_argument("--miner", default="multisimilarity")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--head-weight", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--backbone-lr", type=float, default=0.0, help="> 0 fine-tunes the backbone (slow on a CPU)")
    p.add_argument("--per-class", type=int, help="train on a seeded sample of this many images per class")
    p.add_argument("--only", choices=["anime", "hands"], help="run one half")
    p.add_argument("--taps", type=int, nargs="+", default=[],
                   help="also pool these earlier backbone levels, in the trained and the frozen model (embedder/embedding/taps.py)")
    a = p.parse_args()
    held = pick_holdout(scan([DATA / "anime-faces"]), "anime-faces", 4, seed=0)
    names = [h.split("/", 1)[1] for h in held]
    base = TrainConfig(data=[], out="", views=a.views, epochs=a.epochs, loss=a.loss, miner=a.miner, head_dim=a.dim,
                       head_weight=a.head_weight, lr=a.lr, cache=a.cache, backbone_lr=a.backbone_lr, per_class=a.per_class, taps=a.taps)
    frozen = create_embedder("efficientnet_lite0", preprocess=Preprocess(size=base.size), name="frozen-imagenet", taps=a.taps)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    out = {"settings": {k: getattr(a, k) for k in ("epochs", "views", "loss", "miner", "dim", "head_weight", "lr",
                                                   "backbone_lr", "per_class", "taps")},
           "anime_heldout_characters": names, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if a.only != "hands":
            m = train(replace(base, data=[str(DATA / d) for d in ALL], out=f"{tmp}/anime", holdout=held), log=log)
            out["results"]["anime-faces (4 unseen characters)"] = {
                "frozen": brief(evaluate(frozen, "anime-faces", names)), "trained": brief(evaluate(m, "anime-faces", names))}
        if a.only != "anime":
            for h in HANDS:
                rest = [str(DATA / d) for d in ALL if d != h]
                m = train(replace(base, data=rest, out=f"{tmp}/{h}", holdout=held), log=log)
                out["results"][f"{h} (dataset unseen)"] = {"frozen": brief(evaluate(frozen, h)), "trained": brief(evaluate(m, h))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
