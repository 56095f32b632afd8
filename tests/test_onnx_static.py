"""Export-time padding (embedder.embedding.onnx_static): folded where it is safe, left alone elsewhere,
and the file stays loadable by the onnxruntime that loaded the traced one."""

import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from byakugan.embedder.embedding.onnx import export_onnx
from byakugan.embedder.embedding.onnx_static import fold_pads, static_same_padding


def pad_conv(path, pads, pad_is_output=False):
    """x -> Pad(pads) -> Conv(3x3, 2 channels) -> y, opset 17, as a tracer writes it."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32), "w")
    p = numpy_helper.from_array(np.asarray(pads, np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["padded"], mode="constant"),
             helper.make_node("Conv", ["padded", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])]
    if pad_is_output:
        outputs.append(helper.make_tensor_value_info("padded", TensorProto.FLOAT, ["n", "c", "h", "w"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                              outputs, [w, p])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_a_zero_pad_folds_into_its_conv_with_the_same_answers_and_opsets(tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    pad_conv(tmp_path / "m.onnx", [0, 0, 0, 0, 0, 0, 1, 1])
    want = run(tmp_path / "m.onnx", x)[0]
    assert fold_pads(tmp_path / "m.onnx") == 1
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert [n.op_type for n in m.graph.node] == ["Conv"]
    # onnxruntime's own file declares every domain it knows, which older onnxruntimes refuse
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
    np.testing.assert_allclose(run(tmp_path / "m.onnx", x)[0], want, atol=1e-6)


@pytest.mark.parametrize("pads, as_output", [([0, 0, 0, 0, 0, 0, 1, 1], True),   # also a graph output
                                              ([0, 0, 1, 1, 0, 0, -1, -1], False),  # a crop on one side
                                              ([0, 1, 0, 0, 0, 0, 0, 0], False)])   # channel padding
def test_a_pad_that_cannot_fold_is_left_as_it_is(tmp_path, pads, as_output):
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    pad_conv(tmp_path / "m.onnx", pads, as_output)
    try:
        want = run(tmp_path / "m.onnx", x)
    except Exception:  # channel padding makes a Conv of the wrong width: never valid, nothing to compare
        want = None
    assert fold_pads(tmp_path / "m.onnx") == 0
    assert "Pad" in [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    if want is not None:
        for got, expected in zip(run(tmp_path / "m.onnx", x), want):
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_the_torch_model_is_left_as_it_was_even_when_the_export_fails(model):
    from timm.layers import Conv2dSame

    same = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    x = torch.zeros(1, 3, model.preprocess.size, model.preprocess.size)
    with pytest.raises(RuntimeError, match="stop"):
        with static_same_padding(model, x):
            assert all("forward" in vars(m) for m in same)
            raise RuntimeError("stop")
    assert all("forward" not in vars(m) for m in same)


def test_two_threads_exporting_one_model_both_succeed(model, tmp_path):
    errors = []

    def export(n):
        try:
            export_onnx(model, tmp_path / f"{n}.onnx")
        except Exception as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=export, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (tmp_path / "0.onnx").read_bytes() == (tmp_path / "1.onnx").read_bytes()
