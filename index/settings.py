"""What a gallery records of the pipeline that fills it (model, detector, landmarks, cohort)."""

from __future__ import annotations

import hashlib
import sys
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from byakugan.embedder.errors import ByakuganWarning
from byakugan.embedder.scoring import check_scoring
from byakugan.embedder.scoring.adapt import Adaptation

from .errors import GalleryError
from .ranking import Reference, check_threshold
from .sequences import check_sequences


@dataclass(frozen=True)
class GallerySettings:
    """What a new gallery records of the pipeline that fills it, so every query is embedded,
    cropped and scored as its references were (see Pipeline.settings)."""

    model: dict  # {"name", "fingerprint", "dim"}
    detector: dict  # the detector's config
    threshold: float
    scoring: Optional[str] = None  # the model's advice; "nearest" when None
    landmarks: Optional[dict] = None  # {"name", "source", "fingerprint", "dim", "weight"} when fused
    cohort_top: Optional[int] = None  # cohort normalisation (byakugan.embedder.scoring.cohort) ...
    cohort: Optional[np.ndarray] = None  # ... with these unit rows
    # {"split", "bins", "weight"} of the model's colour histogram: a query with no colour in it is
    # scored by the CNN part alone (byakugan.embedder.scoring.colourless)
    colourless_queries: Optional[dict] = None
    adapt: Optional[dict] = None  # {"weight", "ridge"}: scores adapted to its classes (embedder.scoring.adapt)
    adapted_threshold: Optional[float] = None  # the model's threshold for adapted scores, in force while they are

    @property
    def dim(self) -> int:
        return int(self.model["dim"]) + (int(self.landmarks["dim"]) if self.landmarks else 0)


def digest(cohort: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(cohort, np.float32).tobytes()).hexdigest()


def repair(meta: dict, path=None) -> list[str]:
    """Settings no save writes that a gallery can do without, put right in memory (its next save
    writes them), so that it opens and the command that sets them can run; what was put right,
    each also a warning."""
    said = _repaired(meta)
    for what in said:
        warnings.warn(f"gallery {path}: {what}", ByakuganWarning, stacklevel=3)
    return said


def new_meta(settings: GallerySettings, threshold: Optional[float] = None) -> dict:
    """A new gallery's settings (Gallery.create): a threshold given here is fixed; otherwise the gallery's
    references choose it once there are enough, and until then the model's for its scoring applies."""
    meta = {"model": dict(settings.model), "model_threshold": float(settings.threshold),  # (set_auto)
            "detector": dict(settings.detector), "next_id": 0, "references": []}
    meta |= {"scoring": check_scoring(settings.scoring)} if settings.scoring else {}
    meta |= {"landmarks": dict(settings.landmarks)} if settings.landmarks is not None else {}
    meta |= {"adapt": Adaptation.from_dict(settings.adapt).to_dict()} if settings.adapt else {}
    if settings.adapt and settings.adapted_threshold is not None:  # and the weight it was measured at
        meta["model_threshold_adapted"] = [float(settings.adapted_threshold), float(settings.adapt["weight"])]
    if settings.colourless_queries is not None:  # (galleries made before score every query alike)
        meta["colourless_queries"] = dict(settings.colourless_queries)
    meta["threshold_mode"] = "fixed" if threshold is not None else "auto"
    reach = threshold_reach(meta.get("adapt"))  # as the setter checks it
    meta["threshold"] = fallback(meta) if threshold is None else check_threshold(threshold, -reach, reach)
    return meta


def fallback(meta: dict) -> Optional[float]:
    """The model's threshold for the gallery's scoring as it is now, which automatic mode uses until the
    references give one. Where scores are adapted and the model gave a threshold for adapted scores
    (measured at its advised weight), that one, moved from the plain one in proportion to the weight:
    a score's term is linear in the weight, and so, within 0.01 on anime-tuned's folds at weights 0.1
    to 2, is the threshold (models/anime-tuned/adapt_cohort.json)."""
    plain, adapt = meta.get("model_threshold"), meta.get("adapt")
    if not _number(plain):
        return None
    spec = meta.get("model_threshold_adapted")
    if not adapt or not isinstance(spec, list) or len(spec) != 2 or not all(_number(v) for v in spec) or spec[1] <= 0:
        return float(plain)
    (t, at), weight = spec, adapt.get("weight") if isinstance(adapt, dict) else None
    return round(float(plain) + (t - plain) * weight / at, 4) if _number(weight) else float(plain)


def threshold_reach(adapt: object) -> float:
    """How far either way a fixed threshold may go: a cosine's 1, and where scores are adapted to the
    gallery's classes ({"weight", "ridge"}, embedder.scoring.adapt) 1 plus the weight, since a score
    is then its cosine plus up to about the weight."""
    weight = adapt.get("weight") if isinstance(adapt, dict) else None
    return 1.0 + (float(weight) if _number(weight) and 0 < weight <= 2 else 0.0)


def _repaired(meta: dict) -> list[str]:
    said, t, model = [], meta.get("threshold"), fallback(meta)
    bound = threshold_reach(meta.get("adapt")) + 1.0  # past any score, with room for a cohort's offset
    if _number(t) and not -bound <= t <= bound and model is not None and -bound <= model <= bound:
        meta["threshold"] = model
        said.append(f"its threshold {t!r} is past any score; the model's, {model}, is used until one is set")
    try:
        top = max((r.id if isinstance(r, Reference) else int(r["id"]) for r in meta["references"]), default=-1)
    except (KeyError, TypeError, ValueError):
        return said  # check_meta names what is wrong with them
    if type(meta.get("next_id")) is int and meta["next_id"] <= top and not meta.get("read_only"):
        said.append(f"its next id {meta['next_id']} was in use; new references take ids from {top + 1}")
        meta["next_id"] = top + 1
    return said


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= sys.float_info.max  # not 10**400


def check_meta(meta: dict) -> None:
    """Raises KeyError, TypeError or ValueError when gallery.json is not of the shape a save writes."""
    if not isinstance(meta["model"], dict) or not isinstance(meta["model"]["dim"], int):
        raise ValueError("model must be {name, fingerprint, dim}")
    for key in ("name", "fingerprint"):
        if not isinstance(meta["model"][key], str):
            raise ValueError(f"model {key} must be text")
    if meta.get("adapt") is not None:
        Adaptation.from_dict(meta["adapt"])
    for key, bound in (("threshold", threshold_reach(meta.get("adapt")) + 1.0), ("model_threshold", 2.0)):
        # A cosine, an adapted score or a cohort-normalised one (a cosine less a mean of cosines): a
        # threshold past them (5, say) would answer every search "unknown" without a word.
        if key in meta and not (_number(meta[key]) and -bound <= meta[key] <= bound):
            raise ValueError(f"{key} {meta[key]!r} must be a number from {-bound:g} to {bound:g}")
    spec = meta.get("model_threshold_adapted", [0.0, 1.0])  # [threshold, the adapt weight it was measured at]
    if not (isinstance(spec, list) and len(spec) == 2 and all(_number(v) for v in spec) and 0.01 <= spec[1] <= 2
            and abs(spec[0]) <= 1 + spec[1]):
        raise ValueError(f"model_threshold_adapted {spec!r} must be [threshold, weight]: a weight from 0.01 to 2 and a "
                         "threshold within ±(1 + weight)")
    if "scoring" in meta:
        check_scoring(meta["scoring"])
    if meta.get("threshold_mode", "fixed") not in ("auto", "fixed"):  # else read as fixed, at a stale value
        raise ValueError(f"threshold_mode {meta['threshold_mode']!r} must be 'auto' or 'fixed'")
    if not isinstance(meta["next_id"], int) or not isinstance(meta["references"], list):
        raise ValueError("next_id must be a number and references a list")
    if meta["references"] and not meta.get("read_only") and meta["next_id"] <= max(r.id if isinstance(r, Reference) else int(r["id"]) for r in meta["references"]):
        raise ValueError(f"next_id {meta['next_id']} must be above every reference's id (each new reference would take one in use)")
    for r in meta["references"]:
        if isinstance(r, Reference):
            continue  # typed by its reader (index.db has SQLite check the columns' types)
        if not isinstance(r, dict) or set(r) != {"id", "label", "source", "added"} or not isinstance(r["id"], int) \
                or not all(isinstance(r[k], str) for k in ("label", "source", "added")):
            raise ValueError(f"reference {r!r} must be {{id, label, source, added}}")
    if not isinstance(meta.get("detector", {}), dict) or not isinstance(meta.get("landmarks", {}), dict) \
            or not isinstance(meta.get("cohort", {}), dict):
        raise ValueError("detector, landmarks and cohort must be objects")
    check_sequences(meta.get("sequences"))
    if meta.get("colourless_queries") is not None:  # null: turned off (set_colourless)
        check_colourless(meta["colourless_queries"], int(meta["model"]["dim"]), "landmarks" in meta)


def colourless_spec(model) -> Optional[dict]:
    """What a new gallery records of its model's colour histogram (GallerySettings.colourless_queries)."""
    colour = getattr(model, "colour", None)
    # A model with views ("tta") too: its rows are [Σe, Σh] of the views, still split there, and a grey
    # picture's views are all grey (benchmarks/grey_queries.py on anime-finetuned's recipe's folds with
    # its views: grey queries 0.480 -> 0.635 top-1, colour queries 0.8896 -> 0.8895)
    return None if colour is None else \
        {"split": model.dim - colour.dim, "bins": list(colour.bins), "weight": float(colour.weight)}


def check_colourless(spec, dim: int, fused: bool = False) -> dict:
    """colourless_queries as a gallery or bundle records it; raises ValueError when it is not of that shape."""
    if not isinstance(spec, dict) or set(spec) != {"split", "bins", "weight"}:
        raise ValueError("colourless_queries must be {split, bins, weight}")
    if fused:
        raise ValueError("colourless_queries: not for a gallery that fuses hand landmarks (its models have no colour)")
    split, bins, weight = spec["split"], spec["bins"], spec["weight"]
    if not isinstance(bins, list) or len(bins) != 3 or not all(type(b) is int and 1 <= b <= 64 for b in bins):
        raise ValueError("colourless_queries bins must be 3 whole numbers in 1..64")
    if not isinstance(split, int) or isinstance(split, bool) or split < 1 or split + bins[0] * bins[1] * bins[2] != dim:
        raise ValueError(f"colourless_queries split {split!r}: with bins {bins} it must leave the model's {dim} columns")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 100:
        raise ValueError(f"colourless_queries weight {weight!r}: must be a number above 0, at most 100")
    return {"split": split, "bins": list(bins), "weight": float(weight)}


def set_colourless(meta: dict, value: Optional[dict]) -> None:
    """Grey queries scored by the CNN part alone ({"split", "bins", "weight"}, as colourless_spec gives it
    for the gallery's model), or like any query (None: kept as null, as set_adapt keeps it)."""
    try:
        meta["colourless_queries"] = None if value is None else \
            check_colourless(value, int(meta["model"]["dim"]), "landmarks" in meta)
    except ValueError as exc:
        raise GalleryError(str(exc)) from None


def set_auto(meta: dict, value: bool) -> None:
    """Threshold mode automatic (or fixed). Back to automatic, the threshold in force until the
    references give one is the model's again, not the last one set by hand (galleries made before
    it was recorded keep the last one)."""
    if not isinstance(value, (bool, np.bool_)):  # "no" is true
        raise GalleryError(f"threshold_auto {value!r}: must be True or False")
    meta["threshold_mode"] = "auto" if value else "fixed"
    if value and fallback(meta) is not None:
        meta["threshold"] = fallback(meta)


def set_threshold(meta: dict, value) -> None:
    """A threshold fixed by hand: a cosine similarity, so between -1 and 1, or where scores are adapted
    to the gallery's classes an adapted score, within threshold_reach."""
    reach = threshold_reach(meta.get("adapt"))
    unit = "an adapted score (a cosine plus up to the adaptation's weight)" if reach > 1 else "a cosine similarity"
    meta["threshold"], meta["threshold_mode"] = check_threshold(value, -reach, reach, unit), "fixed"


def set_adapt(meta: dict, value: Optional[dict]) -> None:
    """Scores adapted to the gallery's classes ({"weight", "ridge"}), or not (None: kept as null, since a
    save writes the settings it holds and leaves any other row as it was)."""
    try:
        adapt = None if value is None else Adaptation.from_dict(value).to_dict()
    except ValueError as exc:
        raise GalleryError(str(exc)) from None
    if adapt and adapt.get("cohort") and "cohort" not in meta:  # said rather than stored with no effect
        raise GalleryError(f"adapt cohort {adapt['cohort']:g}: this gallery holds no cohort to fit with (its model "
                           "has none); leave the third part out")
    t, reach = meta.get("threshold"), threshold_reach(adapt)
    if meta.get("threshold_mode") == "fixed" and _number(t) and abs(t) > reach:  # else every search says unknown
        raise GalleryError(f"threshold {t:g}: fixed, and past any score {'unadapted' if adapt is None else 'at that weight'} "
                           f"(from {-reach:g} to {reach:g}); set another threshold, or auto, first")
    meta["adapt"] = adapt
    if meta.get("threshold_mode") == "auto" and fallback(meta) is not None:  # the model's for scores as they now are
        meta["threshold"] = fallback(meta)


def set_scoring(meta: dict, value: str) -> None:
    try:
        meta["scoring"] = check_scoring(value)
    except ValueError as exc:
        raise GalleryError(str(exc)) from None
