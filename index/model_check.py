"""Whether a pipeline's models made a gallery's vectors: a vector of another model (even one of the
same length) ranks nonsense against them, so every search and enrolment checks before it starts."""

from __future__ import annotations

from .errors import ModelMismatchError


def check_fits(gallery, encoder, landmarks) -> None:
    """Raises ModelMismatchError unless `encoder` (and `landmarks`, for a fused gallery) are the
    models the gallery was built with, by fingerprint and dimension."""
    want = gallery.model_settings
    if encoder.fingerprint() != want["fingerprint"] or encoder.dim != want["dim"]:
        raise ModelMismatchError(
            f"gallery {gallery.path or '(unsaved)'}: built with model {want['name']!r} (fingerprint "
            f"{want['fingerprint']}, dim {want['dim']}), not with {encoder.name!r} (fingerprint {encoder.fingerprint()}, "
            f"dim {encoder.dim}); use the same model or enrol into a new gallery")
    spec = gallery.landmark_settings
    if (spec is None) != (landmarks is None) or (spec is not None and landmarks.fingerprint() != spec["fingerprint"]):
        have = "none" if landmarks is None else f"{landmarks.name!r} (fingerprint {landmarks.fingerprint()})"
        built = "none" if spec is None else f"{spec['name']!r} (fingerprint {spec['fingerprint']})"
        raise ModelMismatchError(f"gallery {gallery.path or '(unsaved)'}: built with landmark model {built}, "
                                 f"not {have}; use the same model or a new gallery")
