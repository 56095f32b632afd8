"""Scores on one scale a person can read: the probability that a score is a true match.

Raw scores mean different things per model and scoring (a right `anime` match is 0.12-0.21 after
cohort normalisation, a right hand match 0.8-0.9 as a cosine). A gallery's own references say
what its scores mean: each reference scored against its own class without itself (a true match)
and against its best other class (a stranger's best chance). A logistic curve fitted to those two
sets turns any score of that gallery into a confidence between 0 and 1, and the threshold into one
on the same scale. It is a monotone map, so rankings and the known/unknown decision are unchanged.

Too few references to fit (fewer than two classes, or no class with two references): the curve is
centred on the threshold with a fixed width, and `fitted` says so.

The same evidence gives an automatic threshold: the score that keeps 95% of the true-match
scores. Left-out sources showed why (benchmarks/score_norm.py): a threshold fixed on other sources
accepted 58-100% of true matches depending on the source, the gallery's own one 85-100%. It goes
above the stored threshold (the model's, for a new gallery) only as far as the best stranger's
score: classes enrolled from bursts of near-identical shots otherwise put it where later pictures
of them were refused (benchmarks/burst_threshold.py: 11% of them accepted, 82% with the bound).
No torch: bundles use it too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import numpy as np

# Width of the curve when it cannot be fitted: a score 0.1 over the threshold reads as 88%.
DEFAULT_SLOPE = 20.0
MIN_GENUINE = 2
# An automatic threshold needs at least this many true-match scores (two classes of five).
MIN_AUTO = 10
AUTO_KEEPS = 0.95  # share of the gallery's own true matches an automatic threshold accepts


@dataclass(frozen=True)
class Calibration:
    slope: float
    intercept: float
    fitted: bool  # False: too few references, centred on the threshold
    genuine: int = 0  # evidence it was fitted on
    impostor: int = 0
    # The score that keeps AUTO_KEEPS of the true-match scores: a threshold chosen by the gallery's
    # own references (None with fewer than MIN_AUTO of them).
    auto_threshold: Optional[float] = None
    reason: str = ""  # why it is not fitted, for people: what the references lack
    # True: the references' own 95% point lay above every stranger's score and the stored threshold,
    # so auto_threshold was held at the higher of those two
    held: bool = False
    # Each reference's best score against a class not its own, sorted: how often a look-alike
    # stranger would pass a threshold (strangers_passing), told beside it so that a threshold which
    # lets most of them through is not silent.
    strangers: tuple[float, ...] = field(default=(), repr=False)  # up to index.confidence.LIMIT of them

    def strangers_passing(self, threshold: float) -> Optional[float]:
        """The share of the references' best scores against another class at or above `threshold`
        (None without any): an estimate, from the gallery alone, of the strangers a search would name."""
        if not self.strangers:
            return None
        return 1.0 - float(np.searchsorted(np.asarray(self.strangers), float(threshold), side="left")) / len(self.strangers)

    def confidence(self, score: float) -> float:
        if isinstance(score, bool) or not isinstance(score, (int, float, np.floating, np.integer)):
            raise ValueError(f"confidence of {score!r}: a score must be one number")
        if math.isnan(score):  # no score is no evidence either way, not certainty
            return math.nan
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, self.slope * float(score) + self.intercept))))

    def score_at(self, confidence: float) -> float:
        """The score that reads as `confidence` (strictly between 0 and 1)."""
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence {confidence!r}: must be strictly between 0 and 1")
        return (math.log(confidence / (1.0 - confidence)) - self.intercept) / self.slope

    def to_dict(self) -> dict:
        return asdict(self)


NO_CLASSES = "needs 2 classes, and another class found near the references"


def centred(threshold: float, reason: str = NO_CLASSES) -> Calibration:
    return Calibration(DEFAULT_SLOPE, -DEFAULT_SLOPE * float(threshold), False, reason=reason)


def fit(genuine: np.ndarray, impostor: np.ndarray, threshold: float, ridge: float = 0.01) -> Calibration:
    """p(true match | score) = sigmoid(slope * score + intercept) from the two sets, weighted
    equally (Newton's method on standardised scores with a small ridge, so that scores that
    separate perfectly give a steep but finite curve)."""
    genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    genuine, impostor = genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]
    if len(impostor) < 1:
        return centred(threshold)
    strangers = tuple(float(v) for v in np.sort(impostor))
    if len(genuine) < MIN_GENUINE:  # near-copies are not evidence (index.confidence leaves them out)
        return replace(centred(threshold, f"needs {MIN_GENUINE} true-match scores, has {len(genuine)}: a class with 2+ "
                                  "references that are not near-copies of each other"), strangers=strangers)
    x = np.concatenate([genuine, impostor])
    y = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    mu, sd = float(x.mean()), max(float(x.std()), 1e-6)
    z = (x - mu) / sd
    w = np.where(y == 1, 0.5 / len(genuine), 0.5 / len(impostor))
    a, b = 1.0, 0.0
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * z + b, -50, 50)))
        g = np.array([np.sum(w * (p - y) * z) + ridge * a, np.sum(w * (p - y))])
        h = w * p * (1 - p)
        H = np.array([[np.sum(h * z * z) + ridge, np.sum(h * z)], [np.sum(h * z), np.sum(h) + 1e-9]])
        a, b = np.array([a, b]) - np.linalg.solve(H, g)
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:  # higher scores must never read as less likely
        return replace(centred(threshold, "strangers score as high as true matches: the references do not tell the classes "
                                          "apart"), strangers=strangers)
    auto, held = None, False
    if len(genuine) >= MIN_AUTO:
        auto = float(np.quantile(genuine, 1.0 - AUTO_KEEPS))
        # Above the stored threshold only as far as the best stranger reaches: beyond it a higher one
        # refuses no stranger the references show, only true matches. References that agree more than
        # queries will (a burst of shots of one pose) put their 95% point there.
        bound = max(float(impostor.max()), float(threshold))
        auto, held = min(auto, bound), auto > bound
    return Calibration(float(a / sd), float(b - a * mu / sd), True, len(genuine), len(impostor), auto, held=held,
                       strangers=strangers)
