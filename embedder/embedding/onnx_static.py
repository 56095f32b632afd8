"""Export-time help for onnxruntime: 'same' padding by constants, folded into the convolutions.

timm's TensorFlow-ported EfficientNets pad 'same' on the fly (`Conv2dSame`, at every stride-2
convolution): exported as traced, each becomes shape arithmetic (Shape, Gather, Ceil, Sub, Div,
Cast, ...) and a Pad, and the Pad breaks onnxruntime's blocked-layout (NCHWc) chain of convolutions,
so layout reorders run around it. Profiled on `default` at one thread, that was about a quarter
of the time, on work that computes nothing. The live path always feeds one input size, so the
padding is known at export: those convolutions are traced padding by constants, and each Pad is
then folded into its Conv's own `pads` attribute (ONNX allows them uneven; PyTorch does not). The
numbers are the same: export_onnx still checks the file against torch to 1e-5.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..atomic import write_atomic
from ..errors import ModelError


@contextlib.contextmanager
def static_same_padding(model, x) -> Iterator[None]:
    """While exporting `model` on input `x`: its Conv2dSame modules pad by the constants x's size
    gives them. Their own forward comes back afterwards, so the torch model is left as it was. A
    module forward never reaches, or reaches at two sizes, keeps padding on the fly."""
    import torch
    import torch.nn.functional as F
    from timm.layers import Conv2dSame
    from timm.layers.padding import get_same_padding

    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    sizes: dict = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: sizes.setdefault(m, set()).add(tuple(a[0].shape[-2:])))
             for m in convs]
    try:
        if convs:
            with torch.inference_mode():
                model(x)
    finally:
        for h in hooks:
            h.remove()
    pads = {}
    for m in convs:
        if len(sizes.get(m, ())) != 1:
            continue
        ((h, w),), (kh, kw), (sh, sw), (dh, dw) = sizes[m], m.kernel_size, m.stride, m.dilation
        ph, pw = get_same_padding(h, kh, sh, dh), get_same_padding(w, kw, sw, dw)
        pads[m] = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]  # as timm's pad_same splits it
    before = {m: vars(m).get("forward") for m in pads}
    try:
        for m, pad in pads.items():
            m.forward = lambda t, m=m, pad=pad: F.conv2d(F.pad(t, pad), m.weight, m.bias, m.stride, 0, m.dilation,
                                                         m.groups)
        yield
    finally:
        for m, own in before.items():
            if own is None:
                vars(m).pop("forward", None)
            else:
                m.forward = own


def fold_pads(path: os.PathLike | str) -> int:
    """Rewrite the ONNX file at `path` with every zero Pad that feeds one Conv folded into that Conv;
    returns how many Pads are gone (onnxruntime folds some itself). Constants are folded first by
    onnxruntime's basic level (hardware-independent rewrites; its file declares the traced file's
    opsets again, so any onnxruntime that ran that one runs this one)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    path = Path(path)
    traced = onnx.load(str(path))
    before = sum(n.op_type == "Pad" for n in traced.graph.node)
    if not before:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        opts.log_severity_level = 3  # its notes on initializers it drops are not for the user
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        model = onnx.load(opts.optimized_model_filepath)
    graph = model.graph
    outputs = {o.name for o in graph.output}
    consts = {i.name: i for i in graph.initializer}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    folded = []
    for pad in (n for n in graph.node if n.op_type == "Pad"):
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        after = users.get(pad.output[0], [])
        if (attrs.get("mode", b"constant") != b"constant" or pad.input[1] not in consts or len(after) != 1
                or after[0].op_type != "Conv" or after[0].input[0] != pad.output[0] or pad.output[0] in outputs
                or (len(pad.input) > 2 and pad.input[2]) or len(pad.input) > 3):  # a value, or axes: leave it
            continue
        pads = numpy_helper.to_array(consts[pad.input[1]]).tolist()
        r = len(pads) // 2
        if any(pads[i] for i in (0, 1, r, r + 1)) or min(pads) < 0:  # batch or channel padding, or a crop
            continue
        conv = after[0]
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0] * (2 * r - 4))
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        new = [p + q for p, q in zip(old, pads[2:r] + pads[r + 2:])]
        for a in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    used = {name for n in graph.node for name in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    # onnxruntime's file declares every domain it knows (ai.onnx.ml 5, com.microsoft, ...), which
    # older onnxruntimes refuse to load; the nodes are plain ONNX, as the traced file declared them.
    del model.opset_import[:]
    model.opset_import.extend(traced.opset_import)
    model.ir_version = traced.ir_version
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"export: folding the padding into the convolutions broke the graph: {exc}".splitlines()[0]) \
            from None
    write_atomic(path, model.SerializeToString())
    return before - sum(n.op_type == "Pad" for n in graph.node)
