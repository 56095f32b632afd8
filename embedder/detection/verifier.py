"""Is this patch an anime face? Frozen ImageNet EfficientNet-Lite0 features and one logistic unit
(embedder/training/verifier.py trains it) that check the candidates a permissive cascade proposes
(`anime-face-verified`) or the boxes of the face network (`anime-face-net`, with its own weights).
It runs with onnxruntime on 96 px patches, so it works the same in the package, the server and an
exported bundle, without torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ModelError

GREY_OUTPUT = "grey_logit"
SIZE = 96  # patches are resized to SIZE x SIZE, RGB, scaled to [0, 1]


def patches(images: Sequence[Image.Image]) -> np.ndarray:
    """(N, 3, SIZE, SIZE) float32 input for the verifier."""
    out = np.empty((len(images), 3, SIZE, SIZE), np.float32)
    for i, im in enumerate(images):
        out[i] = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
    return out


class FaceVerifier:
    def __init__(self, path: os.PathLike | str) -> None:
        import onnxruntime as ort

        try:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1  # a few small patches per picture: threads cost more than they give
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a missing or damaged file
            raise ModelError(f"face verifier {path}: cannot be loaded ({exc})") from None
        self._input = self._session.get_inputs()[0].name
        shape = self._session.get_inputs()[0].shape
        if len(self._session.get_inputs()) != 1 or len(shape) != 4 or shape[1:] != [3, SIZE, SIZE]:
            raise ModelError(f"face verifier {path}: is not the face verifier (input {self._input} {shape}, "
                             f"expected patches of 3 x {SIZE} x {SIZE})")
        self.path = Path(path)
        # A second unit for patches in shades of grey, in files made since (training.grey_heads).
        outputs = [o.name for o in self._session.get_outputs()]
        self.has_grey = GREY_OUTPUT in outputs
        # the colour unit: "logit" in every file made here; the first output of any other
        self._outputs = {False: "logit" if "logit" in outputs else outputs[0], True: GREY_OUTPUT if self.has_grey else None}

    def __call__(self, images: Sequence[Image.Image], grey: bool = False) -> np.ndarray:
        """The probability that each image is an anime face; grey: by the unit trained on grey patches."""
        if not images:
            return np.zeros(0, np.float32)
        if grey and not self.has_grey:
            raise ModelError(f"face verifier {self.path}: has no unit for pictures in shades of grey "
                             f"(no output {GREY_OUTPUT!r}: a file made before there was one)")
        logits = self._session.run([self._outputs[grey]], {self._input: patches(images)})[0].reshape(-1)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
