"""Issue #14's experiment (benchmarks/stage_finetune.py): late backbone stages fine-tuned on cached
early-stage maps, saved as an ordinary model folder."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import byakugan.embedder as embedder
from byakugan.embedder import create_embedder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import stage_finetune as sf  # noqa: E402


@pytest.fixture(scope="module")
def net():
    return create_embedder("efficientnet_lite0", pretrained=False).backbone.eval()


@pytest.mark.parametrize("cut", [4, 5, 6])
def test_early_then_late_is_the_whole_backbone(net, cut):
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        np.testing.assert_allclose(sf.late(net, sf.early(net, x, cut), cut), net(x), atol=1e-5)


def test_late_parameters_are_the_stages_after_the_cut_and_the_conv_head(net):
    late = {id(p) for p in sf.late_parameters(net, 5)}
    named = {n for n, p in net.named_parameters() if id(p) in late}
    assert named and all(n.split(".")[0] in ("conv_head", "bn2") or n.startswith(("blocks.5.", "blocks.6.")) for n in named)
    assert {n for n, _ in net.named_parameters() if n.startswith(("blocks.5.", "blocks.6.", "conv_head", "bn2"))} == named


def _dataset(root: Path, classes=("a", "b"), n=3) -> str:
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            px = (rng.random((48, 48, 3)) * 80 + 80 * k).astype(np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.jpg")
    return str(root)


def test_stage_maps_are_cached_per_dataset(tmp_path):
    model = create_embedder("efficientnet_lite0", pretrained=False)
    samples = sf.scan([_dataset(tmp_path / "d")])
    maps = sf.stage_maps(model, samples, 5, 2, 0, tmp_path / "cache", log=lambda m: None)
    assert maps.shape == (3, 6, 112, 14, 14) and maps.dtype == torch.float16  # default preprocess: 224 px
    assert len(list((tmp_path / "cache").iterdir())) == 1
    np.testing.assert_array_equal(sf.stage_maps(model, samples, 5, 2, 0, tmp_path / "cache"), maps)


def test_finetuned_folder_carries_its_backbone_and_keeps_the_early_stages(tmp_path):
    data = [_dataset(tmp_path / "one"), _dataset(tmp_path / "two", ("c", "d"))]
    a = argparse.Namespace(seed=0, per_class=None, views=1, cut=5, cache=str(tmp_path / "cache"), lr=1e-3,
                           stage_lr=1e-2, epochs=1, max_steps=2, cohort_per_class=2, crop=False, grey_views=0.05)
    trained = sf.finetune(data, str(tmp_path / "m"), a, log=lambda m: None)
    loaded, _ = embedder.load(str(tmp_path / "m"))
    imagenet = create_embedder("efficientnet_lite0").backbone.state_dict()
    state = loaded.backbone.state_dict()
    moved = {k for k in state if not torch.equal(state[k], imagenet[k].half().to(state[k].dtype))}  # saved as fp16
    assert moved and all(k.startswith(("blocks.5.", "blocks.6.", "conv_head", "bn2")) for k in moved)
    assert not any(k.endswith(("running_mean", "running_var")) for k in moved)  # BatchNorm statistics kept
    assert loaded.config["scoring"] == "mean" and loaded.config["cohort"] == {"top": 5} and loaded.colour is not None
    images = sorted(Path(data[0]).rglob("*.jpg"))
    np.testing.assert_allclose(loaded.embed(images), trained.embed(images), atol=2e-2)  # fp16 weights


@pytest.mark.parametrize("name", ["anime-tuned", "anime-tuned-tta"])
def test_shipped_anime_tuned_runs_on_onnxruntime_as_on_torch(name, tmp_path, monkeypatch, tiny_images):
    """The models anime-face galleries used before anime-finetuned: the fine-tuned backbone exports like
    the others, and so do the views anime-tuned-tta embeds each picture as."""
    from byakugan.embedder.embedding import runtime

    model, _ = embedder.load(name)
    assert model.config["scoring"] == "mean" and model.config["cohort"] == {"top": 5} and model.colour is not None
    assert "detectors" not in model.config  # new anime galleries take anime-finetuned now; galleries made keep theirs
    assert model.config.get("tta") == ("flip_crop" if name == "anime-tuned-tta" else None)
    anime = embedder.load("anime")[0].backbone.state_dict()
    state = model.backbone.state_dict()
    assert torch.equal(state["blocks.4.0.conv_pw.weight"], anime["blocks.4.0.conv_pw.weight"])  # frozen part
    assert not torch.equal(state["blocks.6.0.conv_pw.weight"], anime["blocks.6.0.conv_pw.weight"])  # tuned part
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    twin = runtime.onnx_embedder(model)
    assert twin.fingerprint() == model.fingerprint()
    np.testing.assert_allclose(twin.embed(tiny_images), model.embed(tiny_images), atol=1e-5)


def test_shipped_anime_finetuned_is_the_whole_backbone_recipe_and_runs_on_onnxruntime(tmp_path, monkeypatch, tiny_images):
    """What new anime-face galleries use: benchmarks/gpu_finetune.py's model trained on every source.
    Every stage moved from ImageNet, BatchNorm statistics did not; its default thresholds are the
    means over the fold runs committed beside anime-tuned-tta (the release step's rule)."""
    import json

    from byakugan.embedder.embedding import runtime
    from byakugan.embedder.embedding.hub import model_for, models_dir

    model, _ = embedder.load("anime-finetuned")
    assert model_for("anime-face") == "anime-finetuned"
    assert model.config["scoring"] == "mean" and model.config["cohort"] == {"top": 5} and model.colour is not None
    assert model.config["tta"] == "flip_crop" and model.config["adapt"] == {"weight": 1.0, "ridge": 0.1, "cohort": 30.0}
    imagenet = create_embedder("efficientnet_lite0").backbone.state_dict()
    state = model.backbone.state_dict()
    moved = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("blocks.") else "")
             for k in state if not torch.equal(state[k], imagenet[k].half().to(state[k].dtype))}
    assert moved >= {"conv_stem", "bn1", "conv_head", "bn2"} | {f"blocks.{i}" for i in range(7)}
    assert not [k for k in state if k.endswith(("running_mean", "running_var"))
                and not torch.equal(state[k], imagenet[k].half().to(state[k].dtype))]
    runs = [json.loads(p.read_text())["sources"] for p in sorted((models_dir() / "anime-tuned-tta").glob("gpu_finetune_seed*_adapt.json"))]
    assert len(runs) >= 2
    for key, advised in (("threshold", "shipped"), ("adapted_threshold", "ridge0.1_weight1_beta30")):
        assert model.config[key] == round(float(np.mean([r[s][advised]["threshold_tar95"] for r in runs for s in r])), 4)
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    twin = runtime.onnx_embedder(model)
    assert twin.fingerprint() == model.fingerprint()
    np.testing.assert_allclose(twin.embed(tiny_images), model.embed(tiny_images), atol=1e-5)
