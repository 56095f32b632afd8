"""Few-shot and open-set figures of a model on ../shared datasets; prints JSON.

    .venv/bin/python benchmarks/open_set.py --model default --per-class 60 sign-digits anime-faces
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import byakugan.embedder as embedder
from byakugan.embedder.evaluation.protocol import enrolment_trials

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("datasets", nargs="+", help="folder names under ../shared/datasets")
    p.add_argument("--model", default="default")
    p.add_argument("--per-class", type=int, default=60, help="images sampled per class (seeded)")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--trials", type=int, default=10)
    a = p.parse_args()
    model, _ = embedder.load(a.model)
    report = {"model": model.name, "per_class": a.per_class, "results": {}}
    for ds in a.datasets:
        rng = random.Random(0)
        files, labels = [], []
        for d in sorted((SHARED / ds).iterdir()):
            imgs = embedder.list_images(d)
            rng.shuffle(imgs)
            files += imgs[: a.per_class]
            labels += [d.name] * len(imgs[: a.per_class])
        emb = model.embed(files, progress=True)
        report["results"][ds] = enrolment_trials(emb, labels, shots=a.shots, trials=a.trials).summary
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
