"""The hand fusion weight, chosen by leaving sources out. Prints JSON.

    .venv/bin/python benchmarks/fusion_weight.py --cache .cache/features

For each hand source S, the CNN head and the landmark encoder are trained as in
`benchmarks/loso.py --recipe all` (every other source), S is embedded once through the `hand`
pipeline, and the protocol (5 shots, 10 trials, a third of the classes unknown, seed 1) is run
at each fusion weight. The weight reported for S is the one with the best mean top-1 over the
*other* hand sources, so S's own figures never choose it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from byakugan.embedder.evaluation.summary import evaluate_embeddings
from byakugan.embedder.training.data import scan
from byakugan.embedder.training.landmarks import JOINT_RECIPE, LandmarkTrainConfig, train_landmarks
from byakugan.embedder.training.metric import TrainConfig, train
from byakugan.index.pipeline import Pipeline

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SOURCES = {k: v for k, v in json.loads(Path(__file__).with_name("sources.json").read_text()).items()
           if not k.startswith("_")}
WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def choose(by_source: dict, hands: list[str]) -> tuple[dict, dict]:
    """For each source, the weight with the best mean top-1 over the other sources, and its
    figures beside those at the shipped 0.4; then the mean and the worst source of each."""
    chosen = {}
    for source in hands:
        rest = [s for s in hands if s != source]
        w = max(WEIGHTS, key=lambda w: np.mean([by_source[s][str(w)]["top1"] for s in rest]))
        chosen[source] = {"weight": w, "chosen": by_source[source][str(w)], "at_0.4": by_source[source]["0.4"]}
    summary = {}
    for k in ("chosen", "at_0.4"):
        cells = {s: c[k] for s, c in chosen.items()}
        worst = min(cells, key=lambda s: cells[s]["top1"])
        summary[k] = {"mean_top1": round(float(np.mean([c["top1"] for c in cells.values()])), 4),
                      "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in cells.values()])), 4),
                      "worst": {"source": worst, **cells[worst]}}
    return chosen, summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default=".cache/features")
    p.add_argument("--per-class", type=int, default=100, help="training images per class, as loso.py")
    p.add_argument("--by-source", help="a JSON file of per-source figures this script printed (the 'by_source' "
                                       "lines of its log): choose from them instead of training again")
    a = p.parse_args()
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    hands = [s for s, v in SOURCES.items() if v["domain"] == "hand"]
    by_source: dict[str, dict] = json.loads(Path(a.by_source).read_text()) if a.by_source else {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in [h for h in hands if h not in by_source]:
            others = [str(DATA / s) for s in SOURCES if s != source]
            model = train(TrainConfig(data=others, out=f"{tmp}/{source}", epochs=4, views=3, loss="proxyanchor",
                                      miner="none", per_class=a.per_class, cache=a.cache), log=log)
            lm = train_landmarks(LandmarkTrainConfig(data=[str(DATA / s) for s in hands if s != source],
                                                     out=f"{tmp}/{source}-lm", per_class=a.per_class, cache=a.cache,
                                                     **JOINT_RECIPE), log=log)
            samples = scan([DATA / source], seed=1)
            labels = [s.label.split("/", 1)[1] for s in samples]
            emb = Pipeline.create(model, "hand", lm).embed_images([s.path for s in samples], fallback="whole", progress=True)
            by_source[source] = {}
            for w in WEIGHTS:
                trials, _, _ = evaluate_embeddings(emb.cnn, labels, shots=5, trials=10, unknown_fraction=0.33, seed=1,
                                                   landmarks=emb.landmarks, weight=w, name=source)
                by_source[source][str(w)] = {"top1": trials.summary["top1_nearest"], "far_at_tar95": trials.summary["far_at_tar95"]}
            log(json.dumps({source: by_source[source]}))
    chosen, summary = choose(by_source, hands)
    print(json.dumps({"weights": WEIGHTS, "by_source": by_source, "chosen_on_the_other_sources": chosen,
                      "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
