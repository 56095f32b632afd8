"""Issue #14: an anime gallery choosing how much its colour histogram counts, from its references. Prints JSON.

    .venv/bin/python benchmarks/self_colour.py bench-out/emb-gpu-a [--seeds 1 2 3] [--out F]

An anime model's rows are [CNN part, colour histogram part] (weight 1 at training); sources differ
in how much colour tells their characters apart (anime-faces' CNN part alone is far below the two
together). A query's histogram part scaled by t scores as if the colour weighed t times as much
against the same stored references (t 0: the CNN part alone, as grey queries are scored). The
gallery picks t by searching each reference among the others (itself left out, nearest reference)
at each t of TS; the most found wins, ties to 1 (as shipped). Scored as new anime galleries score:
class mean less the cohort T-norm offset, plus the adaptation anime models advise (weight 1, ridge
0.1, cohort share 30), on the same trials (5 shots, 10 trials, a third unknown, each seed).
Input: fold embeddings of the anime sources with their cohorts (tta_folds.py or gpu_finetune's folds
--save-embeddings), each fold's models never trained on its source. Chosen nested over the sources.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.scoring.cohort import offsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_cohort import directions  # noqa: E402
from centring import TOP, embed, figures  # noqa: E402
from gallery_adapt import draws  # noqa: E402
from score_norm import class_scores  # noqa: E402
from self_weight import loo, self_chosen  # noqa: E402

TS = (0.0, 0.5, 1.0, 1.5, 2.0)
HIST = 12 * 4 * 4  # the colour histogram's bins (hue, saturation, value) at the end of each row


def scaled(q: np.ndarray, t: float) -> np.ndarray:
    out = np.array(q, np.float32, copy=True)
    out[:, -HIST:] *= t
    return out


def study(d: dict, seeds: list[int]) -> dict:
    emb, qemb = embed(d, None, None)
    labels, cohort = d["labels"], d["cohort"]
    forms = {t: scaled(qemb, t) for t in TS}
    trials: dict[str, list] = {}
    picked: list[float] = []
    for seed in seeds:
        for known, refs, rows, is_known, groups in draws(labels, seed):
            y, R = labels[refs], emb[refs]
            fits = {t: loo(forms[t][refs], R, y)[0] for t in TS}
            choice = max(TS, key=lambda t: (fits[t], -abs(t - 1.0)))
            picked.append(choice)
            D = directions(R, groups, cohort, 0.1, 30.0).astype(np.float32)
            scored = {}
            for t in TS:
                Q = forms[t][rows]
                scored[t] = class_scores(Q, R, groups, "mean") - offsets(Q, cohort, TOP)[:, None] + Q @ D.T
            for name, S in [*((f"t{t:g}", scored[t]) for t in TS), ("loo_top1", scored[choice])]:
                pred = np.asarray(known)[S.argmax(1)]
                trials.setdefault(name, []).append((S.max(1)[is_known], pred[is_known] == labels[rows][is_known],
                                                    S.max(1)[~is_known]))
    out = {name: figures(t) for name, t in trials.items()}
    out["t_picked"] = {f"{t:g}": picked.count(t) for t in TS if picked.count(t)}
    return out


def main() -> None:
    self_chosen(__doc__.splitlines()[0], study, "t1", "class mean less cohort T-norm, adapted 1 / 0.1 / 30")


if __name__ == "__main__":
    main()
