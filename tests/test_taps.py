"""Tapped backbones: earlier feature levels joined to the final ones (embedder/embedding/taps.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import byakugan.embedder as embedder
from byakugan.embedder import ModelError, create_embedder
from byakugan.ui.cli import main
from byakugan.embedder.embedding.onnx import export_onnx as _export_onnx


@pytest.fixture(scope="module")
def tapped():
    torch.manual_seed(0)
    return create_embedder("efficientnet_lite0", taps=[3], head={"type": "concat", "dim": 16, "hidden": 32})


def test_each_level_is_a_unit_part_after_the_plain_features(tapped):
    plain = create_embedder("efficientnet_lite0")
    assert tapped.config["taps"] == [3] and tapped.config["feature_dim"] == 1280 + 112
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        f, g = tapped.backbone(x), plain.backbone(x)
    np.testing.assert_allclose(f[:, :1280], F.normalize(g, dim=-1), atol=1e-5)  # same ImageNet weights
    np.testing.assert_allclose(f[:, 1280:].norm(dim=-1), 1, atol=1e-5)
    assert tapped.dim == 1392 + 16


def test_saved_model_rebuilds_the_taps_and_gives_the_same_vectors(tapped, tiny_images, tmp_path):
    tapped.save(tmp_path / "m", half=False)
    loaded, _ = embedder.load(str(tmp_path / "m"))
    assert loaded.config["taps"] == [3] and loaded.fingerprint() == tapped.fingerprint()
    np.testing.assert_allclose(loaded.embed(tiny_images), tapped.embed(tiny_images), atol=1e-6)


def test_onnx_export_matches_torch(tapped, tmp_path):
    _export_onnx(tapped, tmp_path / "model.onnx")  # raises if onnxruntime's vectors differ by > 1e-5
    assert (tmp_path / "model.onnx").stat().st_size > 1_000_000


@pytest.mark.parametrize("taps", [[5], [-1], [3, 3]])
def test_bad_levels_are_refused_naming_the_valid_ones(taps):
    with pytest.raises(ModelError, match=r"feature taps .*: must be distinct levels 0-4 of this backbone \(channels \[16, 24, 40, 112, 320\]\)"):
        create_embedder("efficientnet_lite0", pretrained=False, taps=taps)


def test_train_with_taps_keeps_its_own_feature_cache(datasets, tmp_path, capsys):
    args = ["train", str(datasets / "rock-paper-scissors"), "--per-class", "6", "--views", "1", "--dim", "8",
            "--epochs", "1", "--cache", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "tapped"), "--taps", "3"]) == 0
    assert len(list((tmp_path / "cache").iterdir())) == 2  # features differ, so the cache keys do
    m = embedder.load(str(tmp_path / "tapped"))[0]
    assert m.config["taps"] == [3] and m.dim == 1392 + 8
    assert main([*args, "--out", str(tmp_path / "bad"), "--taps", "9"]) == 2
    assert "feature taps [9]: must be distinct levels 0-4" in capsys.readouterr().err
