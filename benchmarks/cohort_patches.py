"""Cohorts with face patches, on fold models already trained (issue #14, open set): which cohort
refuses strangers best on the anime source each fold model never saw. Prints JSON, writes --out.

    .venv/bin/python benchmarks/cohort_patches.py FOLD_DIR:SOURCE:MEANS ... [--sizes 0 1000 6087]

Each FOLD_DIR is a model benchmarks/stage_finetune.py --cohort-patches 6087 trained leaving SOURCE
out (the `anime-tuned` recipe), whose cohort is its MEANS training-class means followed by the
6,087 face patches of anime-face-patches (all embedded by it). SOURCE is embedded once (its
sources.json detector, the whole image where none is found), then scored as `byakugan evaluate
--trials 10 --unknown-fraction 0.33 --seed 1` does, with a cohort of the class means and N of the
patches (a seeded sample) for each N of --sizes: class-mean top-1 (the cohort does not change
rankings), FAR@TAR95 and the score keeping 95% of true matches (threshold_tar95_mean).

Selection is nested, as benchmarks/score_norm.py's: for each source, N is the one with the lowest
mean FAR@TAR95 on the other sources; the source is reported under that pick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import DATA, SOURCES  # noqa: E402

from byakugan.embedder.evaluation.summary import evaluate_embeddings  # noqa: E402
from byakugan.embedder.scoring.cohort import load_cohort, offsets  # noqa: E402
from byakugan.embedder.training.data import scan  # noqa: E402
from byakugan.index.pipeline import Pipeline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folds", nargs="+", metavar="FOLD_DIR:SOURCE:MEANS")
    p.add_argument("--sizes", nargs="+", type=int, default=[0, 1000, 6087])
    p.add_argument("--out", default="models/anime-tuned/cohort_patches.json")
    a = p.parse_args()
    rows: dict = {}
    for spec in a.folds:
        fold, source, means = spec.rsplit(":", 2)
        samples = scan([str(DATA / source)], per_class=None, seed=1)
        labels = [s.label.split("/", 1)[1] for s in samples]
        pipe = Pipeline.create(fold, SOURCES[source]["detector"], "none")
        emb = pipe.embed_images([s.path for s in samples], fallback="whole", progress=True).cnn
        full = load_cohort(fold, emb.shape[1])
        top = pipe.encoder.cohort_settings["top"]
        patches = full[int(means):]
        for n in a.sizes:
            pick = np.sort(np.random.default_rng(0).permutation(len(patches))[:n])
            cohort = np.concatenate([full[:int(means)], patches[pick]])
            trials, _, _ = evaluate_embeddings(emb, labels, shots=5, trials=10, unknown_fraction=0.33, seed=1,
                                               offset=offsets(emb, cohort, top))
            s = trials.summary
            rows.setdefault(source, {})[str(n)] = {"top1": s["top1_prototype"], "far_at_tar95": s["far_at_tar95_mean"],
                                                   "threshold_tar95": s["threshold_tar95_mean"], "cohort_rows": len(cohort)}
            print(json.dumps({source: {n: rows[source][str(n)]}}), file=sys.stderr, flush=True)
    picks = {}
    for source in rows:
        others = [o for o in rows if o != source]
        if others:
            n = min(map(str, a.sizes), key=lambda k: np.mean([rows[o][k]["far_at_tar95"] for o in others]))
            picks[source] = {"patches": int(n), **rows[source][n]}
    summary = {k: {"mean_top1": round(float(np.mean([rows[s][k]["top1"] for s in rows])), 4),
                   "mean_far_at_tar95": round(float(np.mean([rows[s][k]["far_at_tar95"] for s in rows])), 4),
                   "mean_threshold_tar95": round(float(np.mean([rows[s][k]["threshold_tar95"] for s in rows])), 4)}
               for k in map(str, a.sizes)}
    text = json.dumps({"protocol": "5 shots, 10 trials, a third unknown, seed 1; class mean; cohort top 5",
                       "folds": a.folds, "sources": rows, "by_patches": summary, "nested_picks": picks}, indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
