"""Models as ONNX files: export from torch (checked against it), and run with onnxruntime alone.

An exported bundle embeds with OnnxEmbedder and OnnxLandmarks, which answer like Embedder.embed
and LandmarkEncoder.encode, so the pipeline runs either without knowing which it holds.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ModelError
from ..images import ImageSource, image_list, load_image
from ..preprocess import Preprocess
from .onnx_static import fold_pads, static_same_padding
from .progress import bar as progress_bar


def _session(path: os.PathLike | str):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class OnnxEmbedder:
    """model.onnx (preprocessed pixels -> unit vectors) with the preprocessing it was exported with."""

    runtime = "onnx"

    def __init__(self, path: os.PathLike | str, preprocess: Preprocess, name: str, dim: int, fingerprint: str,
                 input_name: str = "pixels") -> None:
        self._session, self.path = _session(path), Path(path)
        self.preprocess, self.name, self.dim, self._fp, self._input = preprocess, name, int(dim), fingerprint, input_name

    def fingerprint(self) -> str:
        return self._fp

    input_name = property(lambda self: self._input)

    def signature(self) -> tuple[Optional[list], Optional[list]]:
        """The graph's (input shape, output shape) as onnxruntime reads them: ints, or names for open axes."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        return (next((i.shape for i in inputs if i.name == self._input), None), outputs[0].shape if outputs else None)

    def embed(self, images: Sequence[ImageSource], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        images = image_list(images)
        out = np.empty((len(images), self.dim), np.float32)
        bar = progress_bar(len(images), progress)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = np.stack([self.preprocess.to_array(load_image(im)) for im in chunk])
            out[start : start + len(chunk)] = self._session.run(None, {self._input: x})[0]
            bar.update(len(chunk))
        bar.close()
        return out


class OnnxLandmarks:
    """landmarks.onnx: (N, 128) landmark encodings -> (N, dim) unit-or-zero vectors."""

    runtime = "onnx"
    adapt: Optional[dict] = None  # the torch model's advice, set by runtime.onnx_landmarks (not in its cache)
    adapted_threshold: Optional[float] = None  # likewise

    def __init__(self, path: os.PathLike | str, name: str, dim: int, weight: float, fingerprint: str,
                 input_name: str = "landmarks") -> None:
        self._session, self.path = _session(path), Path(path)
        self.name, self.dim, self.weight, self._fp, self._input = name, int(dim), float(weight), fingerprint, input_name

    def fingerprint(self) -> str:
        return self._fp

    def encode(self, marks: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(marks, np.float32)
        return np.ascontiguousarray(self._session.run(None, {self._input: x})[0], np.float32)


# torch's exporter keeps process-wide state (it refuses a second export while one runs), and the
# padding above patches the model's modules for the export: one export at a time, in any thread.
_EXPORTING = threading.Lock()


def export_onnx(model, path: Path, x=None, input_name: str = "pixels") -> None:
    """Write model as ONNX with a dynamic batch (its other dimensions as x's: the padding is fixed
    for that size, see onnx_static), and check onnxruntime gives what torch gives."""
    import torch

    # A copy is exported: the caller's model may be answering other threads meanwhile (a server),
    # and the export changes its memory format and, for the export, its modules' padding.
    model = copy.deepcopy(model).eval()
    if x is None:
        size = model.preprocess.size
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32))
        model = model.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        expected = model(x).numpy()
    names = {"input_names": [input_name], "output_names": ["embedding"]}
    with _EXPORTING, static_same_padding(model, x):
        try:
            # The TorchScript-based exporter writes one self-contained file in ~2 s; dynamo took ~25 s
            # here. It is deprecated, so the dynamo exporter is the fallback once it is gone.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)  # its notes on constant folding: the file is checked below
                # a view's size read as a constant (embedding.model.views): the input size is fixed
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(model, (x,), str(path), dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
                                  opset_version=17, dynamo=False, **names)
        except (TypeError, RuntimeError, ImportError):
            batch = torch.export.Dim("batch")
            torch.onnx.export(model, (x,), str(path), dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
                              **names)
    fold_pads(path)
    got = _session(path).run(None, {input_name: x.numpy()})[0]
    if not np.allclose(got, expected, atol=1e-5):
        raise ModelError(f"export: ONNX model differs from the torch model by {np.abs(got - expected).max():.2e}")
