"""What a bundle's files must hold, checked when it loads (index.bundle).

The manifest only proves the files are the ones it lists: a hand-edited bundle whose manifest was
signed again passes it. Every rule below turns such a file into one BundleError line naming the
file and the rule, before the bundle serves anything, instead of a traceback or a wrong answer later.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import faiss
import numpy as np

from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.preprocess import Preprocess

from .archive import BundleError
from .errors import GalleryError, shown
from .labels import check_label
from .sequences import MAX_STEPS
from .settings import check_colourless, set_threshold
from .vectors import wrong_lengths

MAX_DIM = 65536
# Past this the first query's pixel array alone is gigabytes (100000 px was 120 GB and an OOM kill);
# the models byakugan trains take 160-384.
MAX_SIZE = 1024
REFERENCE_KEYS = ("labels", "references", "sequences")


def read_json(directory: Path, name: str, origin: Path) -> dict:
    """The JSON object a bundle file holds."""
    try:
        obj = json.loads((directory / name).read_bytes())
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, bad UTF-8, a number of 5,000 digits
        raise BundleError(f"bundle {origin}: {name}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BundleError(f"bundle {origin}: {name}: must be a JSON object, not {type(obj).__name__}")
    return obj


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= sys.float_info.max  # not NaN, inf, 10**400


def _count(v: object, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _text(entry: dict, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if not isinstance(entry.get(k), str)]


def check_config(config: dict, origin: Path, detectors: list[str]) -> Preprocess:
    """config.json's model, preprocessing, detector, scoring, landmarks and cohort; its Preprocess."""
    where = f"bundle {origin}: config.json"
    model = config.get("model")
    if not isinstance(model, dict) or _text(model, ("name", "fingerprint", "input")):
        raise BundleError(f"{where}: 'model' must be an object with text name, fingerprint and input")
    if not _count(model.get("dim"), 1, MAX_DIM):
        raise BundleError(f"{where}: model dim {model.get('dim')!r} must be an integer from 1 to {MAX_DIM}")
    detector = config.get("detector", {"name": "none"})
    if not isinstance(detector, dict) or detector.get("name") not in detectors:
        raise BundleError(f"{where}: detector {detector!r} must be an object whose name is one of {', '.join(detectors)}")
    if _text(detector, tuple(k for k in ("cascade", "verifier", "model") if k in detector)):
        raise BundleError(f"{where}: detector files must be named by text")
    _check_landmarks(config.get("landmarks"), int(model["dim"]), where)
    _check_cohort(config.get("cohort"), where)
    if "colourless_queries" in config:
        try:
            check_colourless(config["colourless_queries"], int(model["dim"]), config.get("landmarks") is not None)
        except ValueError as exc:
            raise BundleError(f"{where}: {exc}") from None
    return check_preprocess(config.get("preprocess"), where)


def check_preprocess(d: object, where: str) -> Preprocess:
    """Preprocess.from_dict's rules, plus what it takes on trust: sane sizes and per-channel numbers."""
    if not isinstance(d, dict):
        raise BundleError(f"{where}: 'preprocess' must be an object")
    if "size" in d and not _count(d["size"], 16, MAX_SIZE):
        raise BundleError(f"{where}: preprocess size {d['size']!r} must be an integer from 16 to {MAX_SIZE}")
    for key in ("mean", "std"):
        v = d.get(key, [1.0] * 3)
        if not isinstance(v, list) or len(v) != 3 or not all(_finite(x) for x in v) \
                or (key == "std" and not all(x > 0 for x in v)):
            raise BundleError(f"{where}: preprocess {key} {v!r} must be 3 finite numbers" + (" above 0" if key == "std" else ""))
    try:
        return Preprocess.from_dict(d)
    except (ByakuganError, TypeError) as exc:
        raise BundleError(f"{where}: {exc}") from None


def _check_landmarks(lm: object, dim: int, where: str) -> None:
    if lm is None:
        return
    if not isinstance(lm, dict) or _text(lm, ("name", "fingerprint", "file", "input")):
        raise BundleError(f"{where}: 'landmarks' must be an object with text name, fingerprint, file and input")
    if not _count(lm.get("dim"), 1, MAX_DIM) or not _finite(lm.get("weight")) or not 0 <= lm["weight"] < 1:
        raise BundleError(f"{where}: landmarks dim {lm.get('dim')!r} and weight {lm.get('weight')!r} must be a "
                          f"positive integer and a number from 0 to below 1 (the landmarks' share of the score)")
    if lm.get("split", dim) != dim:  # where the fused vector changes from the image's part to the hand's
        raise BundleError(f"{where}: landmarks split {lm['split']!r} is not the model dim {dim}")


def _check_cohort(spec: object, where: str) -> None:
    if spec is None:
        return
    from byakugan.embedder.scoring.cohort import cohort_settings

    try:
        cohort_settings({"top": spec.get("top")} if isinstance(spec, dict) else spec)
    except ByakuganError as exc:
        raise BundleError(f"{where}: {exc}") from None
    if not isinstance(spec.get("file"), str):
        raise BundleError(f"{where}: cohort 'file' must name the cohort file of the bundle")


def check_thresholds(t: dict, origin: Path, adapt: dict | None = None) -> float:
    """thresholds.json's default, as Gallery.threshold accepts it (given config.json's adapt)."""
    where = f"bundle {origin}: thresholds.json"
    try:
        # the gallery's own rule; anything but a number goes in as text, which it refuses naming it
        set_threshold({"adapt": adapt}, t.get("default") if _finite(t.get("default")) else str(t.get("default")))
    except GalleryError as exc:
        raise BundleError(f"{where}: default {exc}") from None
    if t.get("per_label", {}) != {}:  # galleries have one threshold; a bundle claiming more would be ignored
        raise BundleError(f"{where}: per_label {shown(t['per_label'])}: must be empty (one threshold, 'default', applies "
                          "to every label)")
    if not isinstance(t.get("auto", False), bool):
        raise BundleError(f"{where}: auto {t['auto']!r} must be true or false")
    return float(t["default"])


def check_references(refs: dict, origin: Path) -> None:
    """Labels by the gallery's own rules, unique ids, sequences over existing labels. The shape of
    each reference is Gallery's check_meta's, run on the bundle's meta (index.bundle)."""
    where = f"bundle {origin}: references.json"
    unknown = sorted(set(refs) - set(REFERENCE_KEYS))
    if unknown or not isinstance(refs.get("references"), list):
        raise BundleError(f"{where}: must be an object with a 'references' list (keys: {', '.join(REFERENCE_KEYS)}; "
                          f"not {', '.join(unknown) or 'others'})")
    for r in refs["references"]:
        label = r.get("label") if isinstance(r, dict) else None
        try:
            # other types: check_meta names the reference's shape. Not required in its stored form (stripped,
            # NFC): galleries made before labels were normalised export them as they are.
            if isinstance(label, str):
                check_label(label, new=False)
        except GalleryError as exc:
            raise BundleError(f"{where}: reference {r.get('id')!r}: {exc}") from None


def check_reference_set(refs: dict, origin: Path) -> np.ndarray:
    """Once the shape is known good: the sorted reference ids, each once; labels and sequences agree."""
    where = f"bundle {origin}: references.json"
    if bad := next((r["id"] for r in refs["references"] if not 0 <= r["id"] < 2 ** 63), None):
        raise BundleError(f"{where}: reference id {shown(bad)}: must be from 0 to 2**63 - 1 (a FAISS id)")
    ids = np.sort(np.array([r["id"] for r in refs["references"]], np.int64))
    if len(ids) and (ids[1:] == ids[:-1]).any():
        raise BundleError(f"{where}: reference id {int(ids[1:][ids[1:] == ids[:-1]][0])} appears more than once")
    counts = dict(Counter(r["label"] for r in refs["references"]))
    if refs.get("labels", counts) != counts:
        raise BundleError(f"{where}: 'labels' does not count the references' labels")
    # A step may name a label no longer enrolled: a gallery keeps such sequences when a label is
    # removed (Sequence.missing), and its export must load. Every name and step is a valid label.
    for name, steps in (refs.get("sequences") or {}).items():
        if len(steps) > MAX_STEPS:
            raise BundleError(f"{where}: sequence {name!r}: {len(steps)} steps; at most {MAX_STEPS}")
        for text in [name, *steps]:
            try:
                check_label(text, new=False)
            except GalleryError as exc:
                raise BundleError(f"{where}: sequence {name!r}: {exc}") from None
    return ids


def check_index(store, dim: int, ids: np.ndarray, origin: Path) -> None:
    """index.faiss: an index export writes (inner product, of the gallery's dim) holding exactly the
    references' ids, none longer than 1 nor zero. Not exactly 1: galleries enrolled shorter vectors
    through the API before that was refused, and their bundles must load (a shorter row only lowers
    its own scores; a longer one would outscore every true match)."""
    where = f"bundle {origin}: index.faiss"
    index = store.faiss_index
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if not (isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSWFlat)) and inner is not index
            or isinstance(inner, faiss.IndexIVFFlat)):
        raise BundleError(f"{where}: index type {type(inner).__name__}; a bundle holds IDMap2 over Flat or HNSW, or IVF,Flat")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise BundleError(f"{where}: FAISS metric {index.metric_type} is not inner product ({faiss.METRIC_INNER_PRODUCT}); "
                          "it would rank matches backwards")
    if store.dim != dim:
        raise BundleError(f"{where}: vectors of dim {store.dim}; the model gives {dim}")
    if isinstance(inner, faiss.IndexHNSWFlat):
        _check_hnsw(inner, where)
    if isinstance(inner, faiss.IndexIVFFlat) and (inner.quantizer.ntotal != inner.nlist or inner.quantizer.d != dim):
        raise BundleError(f"{where}: IVF quantizer holds {inner.quantizer.ntotal} centroids for {inner.nlist} lists")
    held = np.sort(store.ids())
    if len(held) != len(store) or not np.array_equal(held, ids):
        raise BundleError(f"{where}: its {len(store)} vector ids are not the {len(ids)} reference ids of references.json")
    if isinstance(inner, faiss.IndexIVFFlat):
        finite = _finite_rows(faiss.downcast_index(inner.quantizer), unit=False) and _finite_lists(inner, False)
    else:
        finite = _finite_rows(inner if isinstance(inner, faiss.IndexFlat) else faiss.downcast_index(inner.storage),
                              exact=False)
    if not finite:  # a longer vector would outscore every true match; a zero one matches nothing
        raise BundleError(f"{where}: holds NaN, infinite or zero vectors, or vectors longer than 1 "
                          "(references are embeddings of length 1, less only for a fused hand vector without landmarks)")


def _check_hnsw(hnsw_index, where: str) -> None:
    """FAISS reads an HNSW graph without checking its links; one out of range reads memory it does not own."""
    h, n = hnsw_index.hnsw, hnsw_index.ntotal
    neighbors, offsets = faiss.vector_to_array(h.neighbors), faiss.vector_to_array(h.offsets)
    ok = hnsw_index.storage.ntotal == n and h.levels.size() == n and len(offsets) == n + 1 \
        and (not n or (np.diff(offsets.astype(np.int64)) >= 0).all() and offsets[-1] == len(neighbors)) \
        and -1 <= h.entry_point < max(n, 1) and (neighbors >= -1).all() and (neighbors < n).all()
    if not ok:
        raise BundleError(f"{where}: HNSW graph is inconsistent (links or levels out of range)")


def _good(rows: np.ndarray, unit: bool = True, exact: bool = True) -> bool:
    """Finite, and with unit: of the lengths Gallery.enroll takes (index.vectors.as_vectors)."""
    return bool(np.isfinite(rows).all()) and not (unit and wrong_lengths(rows, exact).size)


def _finite_rows(flat, rows: int = 65536, unit: bool = True, exact: bool = True) -> bool:
    """Whether every stored vector is finite (and of a reference's length), read in place from FAISS's
    memory, block by block."""
    n, d = flat.ntotal, flat.d
    if not n:
        return True
    view = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    return all(_good(view[i:i + rows], unit, exact) for i in range(0, n, rows))


def _finite_lists(ivf, exact: bool = True) -> bool:
    """Whether every vector in an IVF,Flat index's lists is finite, read in place list by list."""
    lists = ivf.invlists
    for i in range(ivf.nlist):
        n = lists.list_size(i)
        if n and not _good(faiss.rev_swig_ptr(lists.get_codes(i), n * lists.code_size).view(np.float32).reshape(n, -1),
                           exact=exact):
            return False
    return True


def check_embedder(encoder, origin: Path) -> None:
    """model.onnx takes the preprocessed pixels under its declared input name and gives vectors of
    the declared dim: read from the graph's signature when it states them (export's models do), by
    running it once on a seeded image when it leaves them open."""
    where, size = f"bundle {origin}: model.onnx", encoder.preprocess.size
    wanted = {"input": [None, 3, size, size], "output": [None, encoder.dim]}
    found = dict(zip(("input", "output"), encoder.signature()))
    for key, shape in found.items():
        if shape is None:
            raise BundleError(f"{where}: has no input named {encoder.input_name!r}" if key == "input" else f"{where}: has no output")
        if len(shape) != len(wanted[key]) or any(isinstance(a, int) and b is not None and a != b
                                                 for a, b in zip(shape, wanted[key])):
            raise BundleError(f"{where}: {key} of shape {list(shape)}; the bundle needs {['N', *wanted[key][1:]]}")
    if not all(isinstance(a, int) for a in found["input"][1:] + found["output"][1:]):
        _probe(encoder, where)


def _probe(encoder, where: str) -> None:
    from PIL import Image

    size = encoder.preprocess.size
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)  # seeded: same probe each load
    try:
        out = encoder.embed([Image.fromarray(pixels)])
    except Exception as exc:  # onnxruntime's own error types, or a shape numpy cannot fit
        raise BundleError(f"{where}: does not give {encoder.dim}-dim embeddings of {size}x{size} pixels "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]})") from None
    norm = float(np.linalg.norm(out[0]))
    if not abs(norm - 1.0) < 1e-3:  # a narrower output numpy broadcast into the row is not unit length either
        raise BundleError(f"{where}: gives an embedding of length {norm:.4g}, not a unit vector of dim {encoder.dim}")


def probe_landmarks(encoder, origin: Path) -> None:
    """landmarks.onnx maps the landmark encodings to finite vectors of the declared dim."""
    from byakugan.embedder.detection.hands import LANDMARK_DIM

    try:
        out = encoder.encode(np.random.default_rng(0).standard_normal((1, LANDMARK_DIM)).astype(np.float32))
    except Exception as exc:  # onnxruntime's own error types
        raise BundleError(f"bundle {origin}: {encoder.path.name}: does not run on landmark encodings "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]})") from None
    if out.shape != (1, encoder.dim) or not np.isfinite(out).all():
        raise BundleError(f"bundle {origin}: {encoder.path.name}: gives {out.shape}, not finite vectors of dim {encoder.dim}")


def check_cohort(cohort: np.ndarray, origin: Path, name: str) -> None:
    norms = np.linalg.norm(cohort, axis=1)
    if not np.isfinite(cohort).all() or not (np.abs(norms - 1.0) < 1e-2).all():
        raise BundleError(f"bundle {origin}: {name}: cohort rows must be finite unit vectors")
