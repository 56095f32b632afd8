"""Training on the crops galleries see (`byakugan train --detector`): boxes as the pipeline finds
them, cached, and features keyed by them."""

import json

import pytest

from byakugan.embedder.detection import create_detector
from byakugan.embedder.images import load_image
from byakugan.embedder.training import crops
from byakugan.embedder.training.crops import parse_detectors
from byakugan.ui.cli import main


def test_detector_specs_parse_to_a_mapping():
    assert parse_detectors(["hand", "anime-scenes=anime-face"]) == {"*": "hand", "anime-scenes": "anime-face"}
    assert parse_detectors([]) == {}


def test_training_crops_by_the_detector_and_caches_the_boxes(datasets, tmp_path, monkeypatch, capsys):
    cache, out = tmp_path / "cache", tmp_path / "m"
    args = ["train", str(datasets / "drone-gestures"), str(datasets / "rock-paper-scissors"), "--per-class", "2",
            "--views", "1", "--epochs", "1", "--dim", "8", "--loss", "proxyanchor", "--miner", "none",
            "--cache", str(cache)]
    assert main([*args, "--out", str(out), "--detector", "drone-gestures=hand"]) == 0
    assert "crops of drone-gestures by hand: found in" in capsys.readouterr().err
    assert json.loads((out / "training.json").read_text())["config"]["detectors"] == {"drone-gestures": "hand"}
    [box_file] = cache.glob("boxes-drone-gestures-hand-*.json")
    boxes = {k: v["box"] for k, v in json.loads(box_file.read_text()).items()}
    assert len(boxes) == 30 and all(b is None or len(b) == 4 for b in boxes.values())
    # the box is the one a hand gallery crops: the largest detection of the same detector
    name, box = next((k, b) for k, b in sorted(boxes.items()) if b)
    img = load_image(name)
    assert list(create_detector("hand")(img)[0].box) == box
    assert box[2] * box[3] < img.width * img.height / 2  # a hand, not the room
    features = {p.name for p in cache.glob("drone-gestures-*.safetensors")}

    class CacheOnly:  # the same settings, so the same cache file; detecting anything fails the test
        def __init__(self, name):
            self.config = create_detector(name).config

        def __call__(self, img):
            raise AssertionError("the boxes should come from the cache")

    monkeypatch.setattr(crops, "create_detector", CacheOnly)
    assert main([*args, "--out", str(tmp_path / "again"), "--detector", "drone-gestures=hand"]) == 0
    assert {p.name for p in cache.glob("drone-gestures-*.safetensors")} == features  # same crops, same features
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert len(list(cache.glob("drone-gestures-*.safetensors"))) == 2  # whole pictures are other features


def test_a_changed_image_is_detected_again(datasets, tmp_path, monkeypatch):
    """Boxes are keyed by the file (path, size, time), not by a folder's name: a folder of the same
    name elsewhere, or an image replaced in place, never gets another image's box."""
    from byakugan.embedder.detection.base import Detection
    from byakugan.embedder.training.data import scan

    src = sorted((datasets / "drone-gestures" / "closer").glob("*.jpg"))[:2]
    for n, where in enumerate(("a", "b")):
        (tmp_path / where / "drone-gestures" / "closer").mkdir(parents=True)
        for f in src:
            (tmp_path / where / "drone-gestures" / "closer" / f.name).write_bytes(f.read_bytes())
    calls = []

    class Counting:
        config = {"name": "counting"}

        def __init__(self, name):
            pass

        def __call__(self, img):
            calls.append(img.size)
            return [Detection((1, 2, 3, 4))]

    monkeypatch.setattr(crops, "create_detector", Counting)
    one = lambda where: crops.crop_samples(scan([tmp_path / where / "drone-gestures"]), {"*": "hand"},  # noqa: E731
                                           str(tmp_path / "cache"), log=lambda m: None)
    assert [s.box for s in one("a")] == [(1, 2, 3, 4)] * 2 and len(calls) == 2
    one("a")
    assert len(calls) == 2  # cached
    one("b")
    assert len(calls) == 4  # same folder name, other files: detected, not borrowed
    load_image(src[0]).resize((50, 40)).save(tmp_path / "a" / "drone-gestures" / "closer" / src[0].name)
    one("a")
    assert calls[-1] == (50, 40) and len(calls) == 5  # replaced in place: detected again


@pytest.mark.parametrize("spec, message", [
    ("nope", "detector 'nope' for every dataset: not one of none, "),
    ("asl-signs=hand", "detector for dataset 'asl-signs': no such data folder; the folders are rock-paper-scissors"),
    ("=hand", "detector '=hand': name the data folder before '='"),
])
def test_training_refuses_a_bad_detector_in_one_line(datasets, tmp_path, capsys, spec, message):
    assert main(["train", str(datasets / "rock-paper-scissors"), "--out", str(tmp_path / "m"), "--detector", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_one_detector_per_data_folder(datasets, tmp_path, capsys):
    assert main(["train", str(datasets / "rock-paper-scissors"), "--out", str(tmp_path / "m"),
                 "--detector", "hand", "--detector", "face"]) == 2
    assert "every dataset already has detector 'hand'" in capsys.readouterr().err
