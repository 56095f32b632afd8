"""The cohort a trained model carries for score normalisation (see embedder.scoring.cohort)."""

from __future__ import annotations

from typing import Callable, Collection, Optional, Sequence

import numpy as np

from ..errors import ByakuganError
from ..scoring.cohort import class_means
from .data import Sample, scan


def build_cohort(model, data: Sequence, exclude: Collection[str] = (), per_class: int = 50, seed: int = 0,
                 crop: Optional[Callable[[list[Sample]], list[Sample]]] = None) -> np.ndarray:
    """The class means of every class under the `data` folders but those in `exclude`, each from a
    seeded sample of `per_class` images (cropped by `crop` when given, as training was) embedded by
    `model`: what `byakugan train --cohort-top` stores."""
    pool = [s for s in scan(data, per_class=per_class, seed=seed) if s.label not in set(exclude)]
    if not pool:
        raise ByakuganError(f"cohort: no images left in {', '.join(map(str, data))} once {len(exclude)} classes are left out")
    pool = crop(pool) if crop else pool
    return class_means(model.embed([s.source() for s in pool], progress=True), [s.label for s in pool])
