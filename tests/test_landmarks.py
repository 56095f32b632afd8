"""Hand landmarks fused with the CNN embedding: the fusion arithmetic, the encoder, its training,
and a `hand` gallery, its bundle and `byakugan evaluate` on real hand photos."""

import json

import numpy as np
import pytest

from tests.conftest import disk_state
import torch

from byakugan.embedder import ModelError
from byakugan.embedder.scoring.fusion import fuse, has_landmarks, query_form
from byakugan.embedder.training.landmarks import LandmarkTrainConfig, augment, fit
from byakugan.embedder.embedding.landmarks import DEFAULT_LANDMARKS, LandmarkEncoder, load_landmarks
from byakugan.index import Gallery, Pipeline
from byakugan.ui.cli import main

from .conftest import new_gallery, unit_rows


def test_a_query_without_landmarks_scores_by_the_cnn_alone():
    cnn_q, cnn_r, lm_r = unit_rows(3, 16, seed=1), unit_rows(4, 16, seed=2), unit_rows(4, 8, seed=3)
    lm_q = np.vstack([unit_rows(1, 8, seed=4), np.zeros((2, 8), np.float32)])  # queries 1 and 2 have no hands
    w = 0.3
    refs, queries = fuse(cnn_r, lm_r, w), fuse(cnn_q, lm_q, w)
    np.testing.assert_allclose(np.linalg.norm(refs, axis=1), 1, atol=1e-6)
    assert has_landmarks(queries, 16).tolist() == [True, False, False]
    scores = query_form(queries, 16, w) @ refs.T
    np.testing.assert_allclose(scores[0], (1 - w) * cnn_q[0] @ cnn_r.T + w * lm_q[0] @ lm_r.T, atol=1e-6)
    np.testing.assert_allclose(scores[1:], cnn_q[1:] @ cnn_r.T, atol=1e-6)
    with pytest.raises(ValueError, match="must be in"):
        fuse(cnn_q, lm_q, 1.0)


def test_encoder_keeps_missing_hands_zero_and_round_trips(tmp_path):
    torch.manual_seed(0)
    enc = LandmarkEncoder({"name": "lm", "dim": 8, "hidden": 32, "weight": 0.3}).eval()
    x = np.random.default_rng(0).standard_normal((3, 128)).astype(np.float32)
    x[1] = 0
    out = enc.encode(x)
    assert out.shape == (3, 8) and not out[1].any()
    np.testing.assert_allclose(np.linalg.norm(out[[0, 2]], axis=1), 1, atol=1e-5)
    back = load_landmarks(enc.save(tmp_path / "lm"))
    np.testing.assert_array_equal(back.encode(x), out)
    assert back.fingerprint() == enc.fingerprint() and back.weight == 0.3
    (tmp_path / "lm" / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="format is not"):
        load_landmarks(tmp_path / "lm")
    with pytest.raises(ModelError, match="no config.json"):
        load_landmarks(tmp_path / "nowhere")


def test_augment_rotates_points_but_keeps_hand_slots():
    x = torch.zeros(2, 128)
    x[:, 0] = 1.0  # one hand in slot 0, none in slot 1
    x[:, 1:64] = torch.randn(2, 63)
    y = augment(x, rotate=30, noise=0.0, gen=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, 0], x[:, 0]) and not y[:, 64:].any()
    # A rotation in the image plane keeps each point's distance to the wrist and its depth.
    p, q = x[:, 1:64].reshape(2, 21, 3), y[:, 1:64].reshape(2, 21, 3)
    torch.testing.assert_close(p[..., :2].norm(dim=-1), q[..., :2].norm(dim=-1))
    torch.testing.assert_close(p[..., 2], q[..., 2])
    assert not torch.allclose(p, q)


def _hand(seed: int) -> torch.Tensor:
    row = torch.zeros(64)
    row[0], row[1:] = 1.0, torch.randn(63, generator=torch.Generator().manual_seed(seed))
    return row


def test_each_hand_goes_through_one_shared_net_into_its_own_half(tmp_path, monkeypatch):
    torch.manual_seed(0)
    enc = LandmarkEncoder({"name": "each", "dim": 8, "hidden": 32, "hands": "each"}).eval()
    a, b, none = _hand(1), _hand(2), torch.zeros(64)
    x = torch.stack([torch.cat([a, none]), torch.cat([none, a]), torch.cat([a, b]), torch.zeros(128)]).numpy()
    out = enc.encode(x)
    assert out.shape == (4, 8) and not out[0, 4:].any() and not out[3].any()
    np.testing.assert_allclose(out[0, :4], out[1, 4:], atol=1e-6)  # one net, whichever slot the hand is in
    np.testing.assert_allclose(np.linalg.norm(out[:3], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(out[2, :4] * np.sqrt(2), out[0, :4], atol=1e-5)  # two hands: half each
    back = load_landmarks(enc.save(tmp_path / "each"))
    assert back.config["hands"] == "each" and back.fingerprint() == enc.fingerprint()
    np.testing.assert_array_equal(back.encode(x), out)
    from byakugan.embedder.embedding import runtime

    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    np.testing.assert_allclose(runtime.onnx_landmarks(back).encode(x), out, atol=1e-5)
    # A model saved before the form existed has no "hands" in its config, so its fingerprint
    # (and every gallery made with it) is unchanged: it is read as the joint form.
    assert "hands" not in LandmarkEncoder({"dim": 8}).config and not LandmarkEncoder({"dim": 8}).per_hand
    with pytest.raises(ModelError, match="hands 'both': must be one of joint, each, sum"):
        LandmarkEncoder({"dim": 8, "hands": "both"})
    with pytest.raises(ModelError, match="even dim"):
        LandmarkEncoder({"dim": 7, "hands": "each"})


def test_sum_form_gives_a_pair_of_hands_one_vector_whichever_slot_each_is_in(tmp_path, monkeypatch):
    """A mirrored camera makes MediaPipe read the left hand as the right one: the slots swap."""
    torch.manual_seed(0)
    enc = LandmarkEncoder({"name": "sum", "dim": 8, "hidden": 32, "hands": "sum"}).eval()
    a, b, none = _hand(1), _hand(2), torch.zeros(64)
    x = torch.stack([torch.cat([a, b]), torch.cat([b, a]), torch.cat([a, none]), torch.zeros(128)]).numpy()
    out = enc.encode(x)
    assert out.shape == (4, 8) and not out[3].any()
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[:3], axis=1), 1, atol=1e-5)
    each = LandmarkEncoder({"dim": 16, "hidden": 32, "hands": "each"})
    each.load_state_dict(enc.state_dict())  # the same net: 'sum' adds the two halves 'each' joins
    halves = each.eval().encode(x[2:3])
    np.testing.assert_allclose(out[2], halves[0, :8], atol=1e-6)
    from byakugan.embedder.embedding import runtime

    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    np.testing.assert_allclose(runtime.onnx_landmarks(enc).encode(x), out, atol=1e-5)


def test_augment_mirrors_hands_left_for_right():
    x = torch.stack([torch.cat([_hand(1), _hand(2)]), torch.cat([_hand(3), torch.zeros(64)])])
    y = augment(x, rotate=0, noise=0.0, gen=torch.Generator().manual_seed(0), mirror=1.0)
    p, q = x.view(2, 2, 64), y.view(2, 2, 64)
    assert torch.equal(p[..., 0], q[..., 0]) and not q[1, 1].any()  # presence kept, the absent hand stays zero
    pts_x, pts_q = p[..., 1:].reshape(2, 2, 21, 3), q[..., 1:].reshape(2, 2, 21, 3)
    torch.testing.assert_close(pts_q[..., 0], -pts_x[..., 0] * p[..., :1])
    torch.testing.assert_close(pts_q[..., 1:], pts_x[..., 1:] * p[..., :1, None])
    same = augment(x, rotate=0, noise=0.0, gen=torch.Generator().manual_seed(0), mirror=0.0)
    torch.testing.assert_close(same, x)


@pytest.mark.parametrize("bad, message", [({"hands": "both"}, "hands 'both': must be one of joint, each, sum"),
                                          ({"dim": 7, "hands": "each"}, "dim 7: must be at least 2, and even"),
                                          ({"dim": 1}, "dim 1: must be at least 2"),
                                          ({"mirror": 1.5}, "mirror 1.5: must be a chance between 0 and 1")])
def test_landmark_training_settings_are_checked(bad, message):
    from byakugan.embedder.errors import ByakuganError

    with pytest.raises(ByakuganError, match=message):
        LandmarkTrainConfig(data=[], out="x", **bad).check()


@pytest.mark.parametrize("hands", ["joint", "each", "sum"])
def test_fit_separates_unseen_gestures_better_than_an_untrained_encoder(tmp_path, hands):
    # One hand each. Hand shapes vary along a few directions, noise along all: gestures are
    # prototypes in an 8-d subspace plus noise; training sees six, held-out validation four others.
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((63, 8)))[0].T
    protos = 2.0 * rng.standard_normal((10, 8)) @ basis
    labels = np.repeat(np.arange(10), 30)
    X = np.zeros((300, 128), np.float32)
    X[:, 0], X[:, 1:64] = 1.0, protos[labels] + 0.6 * rng.standard_normal((300, 63))
    names = np.array([f"g{i}" for i in labels])
    train, held = labels < 6, labels >= 6
    # mirror 0: these made-up gestures differ in the sign of x as much as in anything else
    cfg = LandmarkTrainConfig(data=[], out=str(tmp_path / "lm"), dim=16, hidden=64, epochs=15, rotate=0, noise=0.0,
                              hands=hands, mirror=0.0)
    from byakugan.embedder.training.metric import accuracy

    untrained = LandmarkEncoder({"dim": 16, "hidden": 64, "hands": hands}).eval()
    model, history = fit(X[train], names[train], cfg, (X[held], names[held]), log=lambda m: None)
    assert model.config["hands"] == hands
    before = accuracy(untrained.encode(X[held]), names[held])["mean_average_precision_at_r"]
    after = accuracy(model.encode(X[held]), names[held])["mean_average_precision_at_r"]
    assert after > before + 0.1, (before, after)
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.fixture(scope="module")
def rps(datasets):
    """rock-paper-scissors, 8 seeded images per class: 5 to enrol, 3 to query."""
    rng = np.random.default_rng(0)
    out = {}
    for d in sorted((datasets / "rock-paper-scissors").iterdir()):
        files = sorted(d.glob("*.png")) + sorted(d.glob("*.jpg"))
        out[d.name] = [files[i] for i in rng.permutation(len(files))[:8]]
    return out


@pytest.fixture(scope="module")
def hand_gallery(model, rps, tmp_path_factory):
    path = tmp_path_factory.mktemp("hands") / "g"
    pipe, g = new_gallery(model, path, detector="hand")
    for label, files in rps.items():
        pipe.enroll(g, label, files[:5], fallback="whole")
    g.save()
    return path


def test_hand_gallery_fuses_landmarks_and_flags_queries_without_them(hand_gallery, rps, model, tiny_images):
    g = Gallery.open(hand_gallery)
    pipe = Pipeline.for_gallery(g)

    def find(image, **kw):
        return [r.to_dict() for r in pipe.recognize(g, image, **kw)]

    lm = load_landmarks(DEFAULT_LANDMARKS)
    assert g.fused and g.dim == model.dim + lm.dim
    assert g.landmark_settings["fingerprint"] == lm.fingerprint()
    right = 0
    for label, files in rps.items():
        for f in files[5:]:
            (d,) = find(f, k=3)
            assert d["landmarks"] in (True, False)
            right += d["match"]["nearest"] == label
    assert right >= 7, right  # of 9
    # A picture with no hand, searched whole: flagged, and scored by the CNN embedding alone.
    (d,) = find(tiny_images[0], k=1, fallback="whole")
    assert d["landmarks"] is False
    ref = g.embeddings([d["hits"][0]["id"]])[0]
    cnn = model.embed([tiny_images[0]])[0]
    assert d["hits"][0]["score"] == pytest.approx(float(cnn @ ref[: model.dim]) / np.sqrt(1 - lm.weight), abs=1e-5)


def test_hand_bundle_gives_the_galleries_answers(hand_gallery, rps, tmp_path):
    from byakugan.index import bundle
    from byakugan.index.export import export

    g = Gallery.open(hand_gallery)
    pipe = Pipeline.for_gallery(g)
    b = bundle.load(export(g, tmp_path / "hands.zip", pipeline=pipe))
    assert b.landmarks["weight"] == g.landmark_settings["weight"]
    for f in (rps["rock"][6], rps["paper"][7]):
        live, got = [r.to_dict() for r in pipe.recognize(g, f, k=3)], b.search(f, k=3)
        assert [d["landmarks"] for d in got] == [d["landmarks"] for d in live]
        for a, c in zip(live, got):
            assert [h["id"] for h in a["hits"]] == [h["id"] for h in c["hits"]]
            assert all(abs(h1["score"] - h2["score"]) < 1e-4 for h1, h2 in zip(a["hits"], c["hits"]))


def test_landmarks_need_the_hand_detector(model, tmp_path, capsys, tiny_images):
    from byakugan.index.errors import GalleryError

    with pytest.raises(GalleryError, match="only a gallery with detector 'hand'"):
        new_gallery(model, tmp_path / "g", landmarks=DEFAULT_LANDMARKS)
    assert main(["embed", str(tiny_images[0]), "--landmarks", DEFAULT_LANDMARKS, "--out", str(tmp_path / "e.npy")]) == 2
    assert "needs --detector hand" in capsys.readouterr().err
    assert not new_gallery(model, tmp_path / "g2", detector="hand", landmarks="none")[1].fused


def test_evaluate_reports_fusion_and_each_part(datasets, capsys):
    code = main(["evaluate", str(datasets / "rock-paper-scissors"), "--detector", "hand", "--per-class", "12",
                 "--trials", "2", "--unknown-fraction", "0", "--json"])
    assert code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["landmarks"]["model"] == DEFAULT_LANDMARKS and 0.5 < s["landmarks"]["found"] <= 1
    assert set(s["parts"]) == {"cnn", "landmarks"}
    assert 0.5 < s["top1_nearest"] <= 1 and 0 < s["parts"]["landmarks"]["top1_nearest"] <= 1


def test_train_landmarks_command_writes_a_loadable_model(datasets, model, tmp_path, capsys):
    out = tmp_path / "lm"
    code = main(["train-landmarks", str(datasets / "rock-paper-scissors"), "--out", str(out), "--per-class", "10",
                 "--epochs", "2", "--dim", "16", "--cache", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    m = load_landmarks(out)
    assert m.dim == 16 and m.name == "lm" and json.loads((out / "training.json").read_text())["history"]
    assert list((tmp_path / "cache").glob("landmarks-rock-paper-scissors-*.safetensors"))
    # A gallery built with it from its folder finds it there again, wherever it is opened from.
    _, g = new_gallery(model, tmp_path / "g", detector="hand", landmarks=str(out))
    g.enroll("x", unit_rows(1, g.dim))
    g.save()
    assert Pipeline.for_gallery(Gallery.open(tmp_path / "g")).landmarks.fingerprint() == m.fingerprint()
    # A different landmark model in that folder is refused, in one line, and the gallery is untouched.
    from byakugan.index import ModelMismatchError

    capsys.readouterr()
    before = disk_state(tmp_path / "g")
    torch.manual_seed(1)
    LandmarkEncoder(dict(m.config)).save(out)
    with pytest.raises(ModelMismatchError, match="built with landmark model 'lm'"):
        Pipeline.for_gallery(Gallery.open(tmp_path / "g"))
    assert main(["search", str(tmp_path / "g"), str(next((datasets / "rock-paper-scissors" / "rock").iterdir()))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "landmark model 'lm'" in err[0]
    assert disk_state(tmp_path / "g") == before


def test_server_enrols_and_answers_with_landmarks(hand_gallery, rps, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from byakugan.ui.http import create_app

    c = TestClient(create_app(shutil.copytree(hand_gallery, tmp_path / "g")))
    files = [("images", (p.name, open(p, "rb"), "image/png")) for p in rps["scissors"][5:7]]
    r = c.post("/enroll", data={"label": "scissors"}, files=files)
    assert r.status_code == 200 and r.json()["labels"]["scissors"] == 7
    (d,) = c.post("/search?k=1", files={"image": ("q.png", open(rps["scissors"][5], "rb"), "image/png")}).json()["detections"]
    assert d["landmarks"] is True and d["match"]["label"] == "scissors" and d["match"]["score"] > 0.999
