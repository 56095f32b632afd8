"""The colour histogram part of an embedding (models/anime): bins, export, save/load, accuracy."""

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

import byakugan.embedder as embedder
from byakugan.embedder.embedding.colour import ColourHistogram
from byakugan.embedder.errors import ModelError
from byakugan.embedder.preprocess import Preprocess
from byakugan.index import Pipeline
from byakugan.index.bundle import load as load_bundle
from byakugan.index.export import export

from .conftest import heldout_anime

PRE = Preprocess(size=32)


def _hist(arr: np.ndarray, bins=(12, 4, 4)) -> np.ndarray:
    x = PRE(Image.fromarray(arr))[None]
    return ColourHistogram({"bins": list(bins)}, PRE)(x)[0].numpy()


def test_pure_colours_land_in_their_bins():
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)  # red: hue bin 0, full saturation and value
    arr[:, 16:] = (0, 0, 255)  # blue: hue 240 degrees, bin 8
    h = _hist(arr)
    expect = np.zeros(192)
    expect[[(0 * 4 + 3) * 4 + 3, (8 * 4 + 3) * 4 + 3]] = np.sqrt(0.5)
    np.testing.assert_allclose(h, expect, atol=1e-6)
    grey = _hist(np.full((32, 32, 3), 100, np.uint8))  # no hue, no saturation, value 100 -> bin 1
    assert np.flatnonzero(grey).tolist() == [1] and grey[1] == pytest.approx(1.0)


def test_bins_agree_with_colorsys_on_random_pixels():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    counts = np.zeros(192)
    for r, g, b in arr.reshape(-1, 3):
        h, s, _ = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        counts[(min(int(h * 12), 11) * 4 + min(int(s * 4), 3)) * 4 + int(max(r, g, b)) // 64] += 1
    got = _hist(arr) ** 2 * arr.shape[0] * arr.shape[1]
    # colorsys works in floats; pixels exactly on a bin edge may fall on either side
    assert np.abs(got - counts).sum() / 2 <= 3


def test_bad_colour_settings_are_refused_in_one_line():
    with pytest.raises(ModelError, match=r"unknown colour settings \['bin'\]; valid: \['bins', 'weight'\]"):
        ColourHistogram({"bin": [8, 4, 4]}, PRE)
    with pytest.raises(ModelError, match="colour bins \\[12, 4\\] must be 3 numbers"):
        ColourHistogram({"bins": [12, 4]}, PRE)
    with pytest.raises(ModelError, match="colour weight -1.0 must be > 0"):
        ColourHistogram({"weight": -1}, PRE)


@pytest.fixture(scope="module")
def colour_model():
    return embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="c", colour={"weight": 1.0})


def test_colour_joins_the_cnn_part_and_survives_save_and_load(colour_model, tiny_images, tmp_path):
    plain = embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="c")
    assert colour_model.dim == plain.dim + 192 and colour_model.config["colour"] == {"bins": [12, 4, 4], "weight": 1.0}
    e = colour_model.embed(tiny_images)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    # weight 1: the cosine is the mean of the CNN cosine and the histogram cosine
    torch.manual_seed(0)
    plain.load_state_dict(colour_model.state_dict())
    p = plain.embed(tiny_images)
    x = torch.stack([colour_model.preprocess(Image.open(t).convert("RGB")) for t in tiny_images])
    c = colour_model.colour(x).numpy()
    np.testing.assert_allclose(e @ e.T, (p @ p.T + c @ c.T) / 2, atol=1e-5)
    loaded, _ = embedder.load(colour_model.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.embed(tiny_images), e, atol=2e-3)  # saved in fp16
    assert loaded.fingerprint() != plain.fingerprint()


def test_exported_bundle_computes_the_histogram_too(colour_model, tiny_images, tmp_path):
    pipe = Pipeline.create(colour_model)
    g = pipe.new_gallery(tmp_path / "g")
    pipe.enroll(g, "red", tiny_images[:1])
    pipe.enroll(g, "green", tiny_images[1:2])
    b = load_bundle(export(g, tmp_path / "b.zip", pipeline=pipe))
    for q in tiny_images:
        np.testing.assert_allclose(b.embed(q), colour_model.embed([q])[0], atol=1e-5)
        assert b.search(q, k=1)[0]["hits"][0]["id"] == pipe.search(g, [q], k=1)[0].hits[0].id


def test_anime_model_beats_default_on_characters_it_never_saw(datasets):
    """The four characters both shipped models were trained without, 5-shot."""
    from byakugan.embedder.evaluation.protocol import enrolment_trials

    files, labels = heldout_anime(datasets, 25)
    top1 = {}
    for name in ("default", "anime"):
        emb = embedder.load(name)[0].embed(files)
        top1[name] = enrolment_trials(emb, labels, shots=5, trials=10, unknown_fraction=0, seed=0).summary["top1_nearest"]
    assert top1["anime"] >= 0.80 and top1["anime"] > top1["default"] + 0.1, top1


def test_a_model_can_advise_class_mean_scoring_for_new_galleries(tmp_path):
    from byakugan.embedder.embedding.model import Embedder

    m = embedder.create_embedder(pretrained=False, preprocess=Preprocess(size=64), name="m")
    plain = m.fingerprint()
    m.config["scoring"] = "mean"
    assert Pipeline.create(m).new_gallery(tmp_path / "g").scoring == "mean"
    assert Embedder(m.backbone, dict(m.config)).fingerprint() == plain  # galleries of the model still fit
    with pytest.raises(ModelError, match="model scoring 'best' is not one of nearest, mean"):
        Embedder(m.backbone, dict(m.config, scoring="best"))
    assert embedder.load("anime")[0].config["scoring"] == "mean"
