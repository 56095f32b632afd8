"""Join `anime-face-net`'s network and verifier with heads trained on pictures in shades of grey,
one file each, so that a grey picture (a manga page) is searched and checked by heads that learnt
grey faces while every picture in colour gets exactly what it got before.

    .venv/bin/python -m byakugan.embedder.training.grey_heads --net models/anime-face-net/anime_face_net.onnx \\
        --grey-net G/anime_face_net.onnx --verifier models/anime-face-net/anime_face_net_verifier.onnx \\
        --grey-verifier GV.onnx --out DIR

Both networks are the frozen ImageNet EfficientNet-Lite0 trunk with a small trained part on top
(the centre-point head; one logistic unit), so the trained parts are read back from the ONNX files
(by name: `head.*`, `linear.*`) and exported again over one trunk, the grey head's outputs named
`grey_*` after the ones there were. Every output is checked against the file it came from on
composed pictures (to 1e-5) before the files are written; the check is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomic
from .face_net import H, W, Head, Trunk, data
from .verifier import Verifier

NET_OUTPUTS = ("heat", "offset", "log_size")


def trained_part(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """The initializers of an ONNX file whose names start with prefix ("head." -> the head's state)."""
    import onnx
    from onnx import numpy_helper

    found = {i.name[len(prefix):]: torch.from_numpy(numpy_helper.to_array(i).copy())
             for i in onnx.load(str(path)).graph.initializer if i.name.startswith(prefix)}
    if not found:
        raise SystemExit(f"{path}: no weights named {prefix}* (not a file exported by this project's training)")
    return found


class TwoHeads(torch.nn.Module):
    """Pixels in [0, 1] -> the colour head's (heat, offset, log size), then the grey head's."""

    def __init__(self, trunk: Trunk, head: Head, grey: Head) -> None:
        super().__init__()
        self.trunk, self.head, self.grey = trunk, head, grey

    def forward(self, x: torch.Tensor):
        f16, f32 = self.trunk(x)
        out = []
        for head in (self.head, self.grey):
            y = head(f16, f32)
            out += [torch.sigmoid(y[:, :1]), y[:, 1:3], y[:, 3:5]]
        return tuple(out)


class TwoUnits(torch.nn.Module):
    """Patches -> the colour unit's logit, then the grey unit's, over one set of features."""

    def __init__(self, verifier: Verifier, grey: torch.nn.Linear) -> None:
        super().__init__()
        self.verifier, self.grey = verifier, grey

    def forward(self, x: torch.Tensor):
        f = self.verifier.features(x)
        return self.verifier.linear(f), self.grey(f)


def largest_difference(new: Path, outputs: list[str], old: Path, inputs: np.ndarray, name: str) -> float:
    """The largest absolute difference between new's named outputs and old's (all of them, in order)."""
    import onnxruntime as ort

    a = ort.InferenceSession(str(new), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        got = dict(zip([o.name for o in a.get_outputs()], a.run(None, {name: x[None]})))
        want = b.run(None, {name: x[None]})
        worst = max(worst, *(float(np.abs(got[n] - w).max()) for n, w in zip(outputs, want)))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("net", "grey-net", "verifier", "grey-verifier"):
        p.add_argument(f"--{name}", required=True, help="an ONNX file")
    p.add_argument("--out", required=True, help="folder for anime_face_net.onnx and anime_face_net_verifier.onnx")
    p.add_argument("--seed", type=int, default=7, help="composed pictures the outputs are checked on")
    a = p.parse_args()
    import onnx

    for name in ("net", "grey_net", "verifier", "grey_verifier"):
        path = getattr(a, name)
        if not Path(path).is_file():
            p.error(f"--{name.replace('_', '-')} {path}: no such file")
        if any(o.name.startswith("grey_") for o in onnx.load(path, load_external_data=False).graph.output):
            p.error(f"--{name.replace('_', '-')} {path}: already joined (it has grey_* outputs); give the files "
                    "each head was trained into (the shipped colour ones: git show 7e7ffee:models/anime-face-net/...)")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    head, grey = Head(), Head()
    head.load_state_dict(trained_part(a.net, "head."))
    grey.load_state_dict(trained_part(a.grey_net, "head."))
    verifier, grey_unit = Verifier(), torch.nn.Linear(1280, 1)
    verifier.linear.load_state_dict(trained_part(a.verifier, "linear."))
    grey_unit.load_state_dict(trained_part(a.grey_verifier, "linear."))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # Written beside the folder's files and moved over them only once checked: a shipped file is never half-made.
    work = Path(tempfile.mkdtemp(dir=out, prefix=".grey_heads-"))
    net_file, verifier_file = work / "anime_face_net.onnx", work / "anime_face_net_verifier.onnx"
    grey_outputs = [f"grey_{n}" for n in NET_OUTPUTS]
    torch.onnx.export(TwoHeads(Trunk(), head, grey).eval(), torch.zeros(1, 3, H, W), str(net_file),
                      input_names=["pixels"], output_names=list(NET_OUTPUTS) + grey_outputs, opset_version=17,
                      dynamo=False, dynamic_axes={"pixels": {2: "h", 3: "w"},
                                                  **{n: {2: "gh", 3: "gw"} for n in list(NET_OUTPUTS) + grey_outputs}})
    torch.onnx.export(TwoUnits(verifier, grey_unit).eval(), torch.zeros(1, 3, 96, 96), str(verifier_file),
                      input_names=["patches"], output_names=["logit", "grey_logit"], opset_version=17, dynamo=False,
                      dynamic_axes={"patches": {0: "n"}, "logit": {0: "n"}, "grey_logit": {0: "n"}})
    pictures, _ = data(6, a.seed, log)
    pixels = np.stack([np.asarray(pic, np.float32).transpose(2, 0, 1) / 255.0 for pic in pictures])
    greys = np.stack([np.asarray(pic.convert("L").convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0 for pic in pictures])
    rng = random.Random(a.seed)
    crops = np.stack([np.asarray(pic.crop((x, y, x + 96, y + 96)), np.float32).transpose(2, 0, 1) / 255.0
                      for pic in pictures for x, y in [(rng.randint(0, W - 96), rng.randint(0, H - 96))]])
    check = {
        "net_colour": largest_difference(net_file, list(NET_OUTPUTS), Path(a.net), pixels, "pixels"),
        "net_grey": largest_difference(net_file, grey_outputs, Path(a.grey_net), greys, "pixels"),
        "verifier_colour": largest_difference(verifier_file, ["logit"], Path(a.verifier), crops, "patches"),
        "verifier_grey": largest_difference(verifier_file, ["grey_logit"], Path(a.grey_verifier), crops, "patches"),
    }
    report = {"net": a.net, "grey_net": a.grey_net, "verifier": a.verifier, "grey_verifier": a.grey_verifier,
              "largest_difference": check}
    print(json.dumps(report))
    try:
        if max(check.values()) > 1e-5:
            raise SystemExit(f"the joined files differ from the ones they came from by up to {max(check.values()):.2e}: "
                             "not written")
        for f in (net_file, verifier_file):
            os.replace(f, out / f.name)
        write_atomic(out / "grey_heads.json", (json.dumps(report, indent=1) + "\n").encode())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
