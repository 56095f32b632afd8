"""What `byakugan evaluate`'s colourless rule changes on saved fold embeddings (issue #19 / #14):
the trials of each anime source scored as before (every query in its stored form) and as evaluate
now scores them (byakugan.index.colour_queries.set_queries' rule: where most of the set is in colour,
its colourless queries by the CNN part, their cohort offsets taken on that form). Prints JSON and
writes --out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loso.py --no-baseline --save-embeddings bench-out/emb-now
    .venv/bin/python benchmarks/evaluate_colourless.py bench-out/emb-now

The saved files (ui/cli/evaluation.py's --save-embeddings form: cnn, cohort, offset, labels) are
the `anime` recipe's folds, saved before evaluate applied the rule (so their offsets are the stored
rows'; a file saved since holds `queries` when it did, and offsets taken on them); the histogram is
the recipe's (bins 12 x 4 x 4, weight 1, cohort top 5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from byakugan.embedder.evaluation.summary import evaluate_embeddings
from byakugan.embedder.scoring.cohort import offsets
from byakugan.embedder.scoring.colourless import colourless, colourless_form
from byakugan.index.colour_queries import mostly_in_colour

BINS, WEIGHT, TOP = [12, 4, 4], 1.0, 5
KEYS = ("top1_prototype", "far_at_tar95")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="loso.py --save-embeddings output")
    p.add_argument("--sources", nargs="+", default=["anime-faces", "anime-onepiece", "anime-scenes"])
    p.add_argument("--out", default="models/evaluate-colourless.json")
    a = p.parse_args()
    out: dict = {"protocol": "5 shots, 10 trials, a third of the classes unknown, seed 1", "sources": {}}
    for source in a.sources:
        f = safe_open(str(Path(a.folder) / f"{source}.safetensors"), "np")
        cnn, cohort = f.get_tensor("cnn"), f.get_tensor("cohort")
        off = offsets(cnn, cohort, TOP)  # the stored rows' offsets, whichever form the file's are
        labels = json.loads(f.metadata()["labels"])
        split = cnn.shape[1] - int(np.prod(BINS))
        which = colourless(cnn, split, BINS)
        rule = mostly_in_colour(cnn, {"split": split, "bins": BINS})
        q = colourless_form(cnn, split, BINS, WEIGHT) if rule else cnn
        run = dict(shots=5, trials=10, unknown_fraction=0.33, seed=1)
        before = evaluate_embeddings(cnn, labels, offset=off, **run)[0].summary
        now = evaluate_embeddings(cnn, labels, offset=offsets(q, cohort, TOP), queries=q, **run)[0].summary
        out["sources"][source] = {"pictures": len(cnn), "colourless": int(which.sum()), "rule_applies": bool(rule),
                                  "before": {k: before[k] for k in KEYS}, "now": {k: now[k] for k in KEYS}}
    text = json.dumps(out, indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
