"""What a model's test-time augmentation costs when embedding, side by side in one run; prints JSON.

    .venv/bin/python benchmarks/tta_cost.py [--models anime-tuned anime-tuned-tta] [--rounds 30]

Each model's onnxruntime twin (what the CLI, page and server embed with) embeds the same decoded
picture, one at a time (a search) and 32 at a time (an enrolment), the models timed in turn on each
round (which goes first alternates), so the machine's load falls on both alike. Reported: the median
milliseconds per picture for each, and each model's over the first's.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import byakugan.embedder as embedder
from byakugan.embedder.embedding.runtime import onnx_embedder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["anime-tuned", "anime-tuned-tta"])
    p.add_argument("--rounds", type=int, default=30)
    a = p.parse_args()
    twins = {name: onnx_embedder(embedder.load(name)[0]) for name in a.models}
    size = next(iter(twins.values())).preprocess.size
    img = np.random.default_rng(0).integers(0, 256, (size + 40, size + 40, 3), dtype=np.uint8)
    out: dict = {"models": {name: {"tta": embedder.load(name)[0].config.get("tta")} for name in a.models}}
    for batch in (1, 32):
        times: dict[str, list[float]] = {name: [] for name in twins}
        for name, twin in twins.items():
            twin.embed([img] * batch, batch_size=batch)  # warm-up: the first call allocates
        for r in range(a.rounds):
            order = list(twins) if r % 2 == 0 else list(reversed(twins))
            for name in order:
                start = time.perf_counter()
                twins[name].embed([img] * batch, batch_size=batch)
                times[name].append((time.perf_counter() - start) / batch * 1000)
        first = float(np.median(times[a.models[0]]))
        for name in twins:
            ms = float(np.median(times[name]))
            out["models"][name][f"batch_{batch}_ms_per_picture"] = round(ms, 2)
            out["models"][name][f"batch_{batch}_over_{a.models[0]}"] = round(ms / first, 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
