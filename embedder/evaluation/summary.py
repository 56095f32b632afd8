"""The few-shot protocol on a set of embeddings, fused or not: what `byakugan evaluate` reports."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import ByakuganError
from ..scoring.adapt import Adaptation
from ..scoring.fusion import fuse, query_form
from .protocol import Trials, check_trials, enrolment_trials

PART_KEYS = ("top1_nearest", "top1_prototype", "far_at_tar95", "roc_auc", "threshold_tar95")
MEAN_KEYS = ("far_at_tar95_mean", "roc_auc_mean", "threshold_tar95_mean")


def evaluate_embeddings(cnn: np.ndarray, labels: Sequence[str], *, shots: int = 5, trials: int = 10,
                        unknown_fraction: float = 0.33, seed: int = 0, offset: Optional[np.ndarray] = None,
                        landmarks: Optional[np.ndarray] = None, weight: float = 0.0,
                        name: str = "data", queries: Optional[np.ndarray] = None,
                        adapt: Optional[Adaptation] = None, cohort: Optional[np.ndarray] = None) -> tuple[Trials, np.ndarray, dict]:
    """Run the protocol on the CNN embeddings, or on their fusion with `landmarks` (then also on
    each part alone). queries: the rows searched with, where they differ from the stored ones (a
    colourless query against references in colour: byakugan.index.colour_queries); not with landmarks.
    adapt: labels scored as a new gallery of this model scores them (embedder.scoring.adapt); the
    figures without it are reported too, under "unadapted" (the parts of a fused model: without);
    cohort: the model's, fitted with where adapt asks (as a gallery of the model holds it).
    Returns (trials, the embeddings evaluated, {part: its summary figures})."""

    def run(e: np.ndarray, q: Optional[np.ndarray] = None, a: Optional[Adaptation] = None) -> Trials:
        try:
            return enrolment_trials(e, labels, shots=shots, trials=trials, unknown_fraction=unknown_fraction,
                                    seed=seed, query_emb=q, offset=offset, adapt=a, cohort=cohort)
        except ValueError as exc:
            raise ByakuganError(f"evaluate {name}: {exc}") from None

    def both(e: np.ndarray, q: Optional[np.ndarray]) -> Trials:
        result = run(e, q, adapt)
        if adapt is not None:
            plain = run(e, q).summary
            result.summary |= {"adapt": adapt.to_dict(), "unadapted": {k: plain[k] for k in PART_KEYS + MEAN_KEYS if k in plain}}
        return result

    if landmarks is None:
        return both(cnn, queries), cnn, {}
    if queries is not None:
        raise ValueError("queries: a fused model's queries take their form from its landmarks")
    parts = {"cnn": run(cnn).summary, "landmarks": run(landmarks).summary}
    emb = fuse(cnn, landmarks, weight)
    result = both(emb, query_form(emb, cnn.shape[1], weight))
    return result, emb, {n: {k: p[k] for k in PART_KEYS if k in p} for n, p in parts.items()}


def check_evaluation(labels: Sequence[str], *, shots: int, trials: int, unknown_fraction: float, name: str = "data",
                     seed: int = 0) -> None:
    """What evaluate_embeddings would refuse, from the labels alone: to be told before embedding."""
    try:
        check_trials(labels, shots, trials, unknown_fraction, seed)
    except ValueError as exc:
        raise ByakuganError(f"evaluate {name}: {exc}") from None
