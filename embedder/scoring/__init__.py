"""How scores are made from vectors, torch-free (bundles use it): the two label scorings, fusion of
a CNN and a landmark embedding (fusion.py), cohort normalisation (cohort.py)."""

from __future__ import annotations

# How labels are ranked: by their best reference, or by the cosine to their references' mean.
# The evaluation protocol reports both; galleries and model configs choose one.
SCORINGS = ("nearest", "mean")


def check_scoring(scoring: object) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f"scoring {scoring!r}: must be one of {', '.join(SCORINGS)}")
    return scoring
