"""A new gallery with detector none and no model named picks its model by what its first images
show: anime faces get the anime model, anything else `default` (issue #14, "the right model
without being asked")."""

import json
import random
from pathlib import Path

import pytest

from byakugan.embedder.detection.looks import SAMPLE, judge
from byakugan.embedder.embedding.hub import choose_model, model_for
from byakugan.index import Pipeline
from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.service import Crop, GalleryService
from byakugan.embedder.images import list_images, load_image
from byakugan.ui.cli import main


def pictures(datasets: Path, source: str, n: int, seed: int = 0) -> list[Path]:
    files = [f for d in sorted((datasets / source).iterdir()) if d.is_dir() for f in list_images(d)]
    return random.Random(seed).sample(files, n)


def test_anime_face_crops_are_told_from_hands(datasets):
    faces = judge(pictures(datasets, "anime-faces", 10))
    assert faces.anime and faces.judged == 10 and faces.anime_faces >= 8
    assert str(faces) == f"{faces.anime_faces} of 10 images look like anime faces"
    for source in ("hand-fingers", "sign-digits"):
        hands = judge(pictures(datasets, source, 10))
        assert not hands.anime and hands.anime_faces <= 2, source


def test_unreadable_images_are_left_out_and_none_judged_is_not_anime(datasets, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    faces = pictures(datasets, "anime-faces", 3)
    looks = judge([bad, *faces])
    assert looks.judged == 3 and looks.anime
    assert judge([bad]) == judge([]) and not judge([]).anime and judge([]).judged == 0


def test_at_most_a_sample_is_judged_spread_over_the_list(tiny_images):
    many = [tiny_images[i % len(tiny_images)] for i in range(3 * SAMPLE + 1)]
    assert judge(many).judged == SAMPLE
    assert judge(tiny_images).judged == len(tiny_images) and not judge(tiny_images).anime  # flat colour fields


def test_the_choice_follows_the_detector_and_then_the_images(datasets):
    anime = model_for("anime-face-net")
    assert anime == "anime-finetuned"
    faces, hands = pictures(datasets, "anime-onepiece", 5), pictures(datasets, "rock-paper-scissors", 5)
    assert choose_model("anime-face", hands).name == anime  # a detector's model does not look at the images
    assert choose_model("anime-face", hands).why == "detector anime-face"
    assert choose_model("hand", faces).name == "default"
    assert choose_model("none").name == "default" and choose_model("none").why == "detector none"
    picked = choose_model("none", faces)
    assert picked.name == anime and picked.why.endswith("of 5 images look like anime faces")
    assert choose_model("none", hands).name == "default"
    assert Pipeline.create(None, "none", sample=faces).choice == picked
    named = Pipeline.create("default", "none", sample=faces)  # a named model is never second-guessed
    assert named.encoder.name == "default" and named.choice is None
    assert Pipeline.create(None, "none", sample=faces).onnx().choice == picked  # the runtime twin keeps it


def test_cli_enroll_says_which_model_a_new_gallery_took(datasets, tmp_path, capsys):
    faces = [str(p) for p in pictures(datasets, "anime-faces", 5)]
    assert main(["enroll", str(tmp_path / "g"), "someone", *faces]) == 0
    out = capsys.readouterr().out
    assert Gallery.open(tmp_path / "g").model_name == "anime-finetuned"
    assert f"{tmp_path / 'g'}: new gallery, model anime-finetuned (" in out and "look like anime faces)" in out
    # An existing gallery keeps its model, whatever is enrolled next, and says nothing about it.
    hands = [str(p) for p in pictures(datasets, "hand-fingers", 3)]
    assert main(["enroll", str(tmp_path / "g"), "hand", *hands, "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["model"] == "anime-finetuned" and "model_chosen_by" not in said
    assert main(["enroll", str(tmp_path / "h"), "someone", *faces, "--model", "default"]) == 0
    assert Gallery.open(tmp_path / "h").model_name == "default"
    assert f"{tmp_path / 'h'}: new gallery, model default (--model)" in capsys.readouterr().out  # named: said as such
    assert main(["enroll", str(tmp_path / "k"), "five", *hands, "--detector", "none", "--json"]) == 0  # named: same rule
    said = json.loads(capsys.readouterr().out)
    assert said["model"] == "default" and said["model_chosen_by"].endswith("of 3 images look like anime faces")
    # Nothing readable: one line, no gallery, and no word of a model for it.
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["enroll", str(tmp_path / "m"), "x", str(bad)]) == 2
    said = capsys.readouterr()
    assert "new gallery" not in said.out + said.err and not Gallery.exists(tmp_path / "m")


def test_embed_keeps_one_model_whatever_the_images(datasets, tmp_path, capsys):
    faces = [str(p) for p in pictures(datasets, "anime-onepiece", 3)]  # vectors of two runs must compare
    assert main(["embed", *faces, "--out", str(tmp_path / "e.npy")]) == 0
    assert capsys.readouterr().err.endswith("float32, model default\n")
    assert main(["embed", *faces, "--out", str(tmp_path / "d.npy"), "--model", "anime-tuned"]) == 0
    assert capsys.readouterr().err.endswith("float32, model anime-tuned\n")


def test_the_page_and_server_service_decides_on_the_first_enrolment(datasets, tmp_path, monkeypatch):
    svc = GalleryService(tmp_path / "g")
    assert svc.undecided and svc.labels() == {}  # an empty gallery in memory, model not yet picked
    with pytest.raises(GalleryError, match="empty"):
        svc.tracker()
    with pytest.raises(GalleryError, match=r"is empty, and its model is picked by the first images enrolled"):
        svc.set_scoring("mean")  # a setting of the model not picked yet: nothing is made on disk
    assert not Gallery.exists(tmp_path / "g")
    crops = [Crop(p.name, load_image(p)) for p in pictures(datasets, "anime-onepiece", 5)]
    hands = [Crop(p.name, load_image(p)) for p in pictures(datasets, "hand-fingers", 3)]
    loaded, create = [], Pipeline.create
    monkeypatch.setattr(Pipeline, "create", lambda *a, **k: loaded.append(a[0]) or create(*a, **k))
    svc.check("luffy", crops)  # the page checks an upload before enrolling it: with the model it would take,
    assert svc.undecided and loaded == ["anime-finetuned"]  # but the choice waits for the enrolment
    svc.check("five", hands)
    assert loaded == ["anime-finetuned"]  # `default`, the pipeline it started with, is not loaded twice
    with pytest.raises(GalleryError, match="label"):
        svc.enroll("   ", crops)  # a first enrolment that fails keeps no model
    assert svc.undecided and not Gallery.exists(tmp_path / "g")
    svc.enroll("luffy", crops)
    assert loaded == ["anime-finetuned"]
    assert not svc.undecided and svc.pipeline.choice.why.endswith("of 5 images look like anime faces")
    assert Gallery.open(tmp_path / "g").model_name == "anime-finetuned"
    with svc.tracker() as live:  # on the chosen model (a default one would not match the gallery's vectors)
        assert live.update(crops[0].image, t=0.0).tracks[0].raw == "luffy"
    again = GalleryService(tmp_path / "g")
    assert not again.undecided and again.search(crops[0].image)[0].match.label == "luffy"
    named = GalleryService(tmp_path / "n", model="default")
    assert not named.undecided
    named.enroll("luffy", crops)
    assert Gallery.open(tmp_path / "n").model_name == "default"


def test_evaluate_takes_the_model_a_gallery_of_the_same_images_would(datasets, capsys):
    args = ["evaluate", str(datasets / "anime-onepiece"), "--per-class", "7", "--trials", "2", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "anime-finetuned" and out["model_chosen_by"].endswith("look like anime faces")
    assert main(args + ["--model", "default"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "default" and "model_chosen_by" not in out


def test_a_gallery_another_process_made_first_is_taken_as_it_is(datasets, tmp_path):
    svc = GalleryService(tmp_path / "g")  # a page on a new gallery, waiting for its first images
    faces = [str(p) for p in pictures(datasets, "anime-faces", 5)]
    assert main(["enroll", str(tmp_path / "g"), "someone", *faces]) == 0  # meanwhile, the CLI makes it
    hands = [Crop(p.name, load_image(p)) for p in pictures(datasets, "hand-fingers", 3)]
    svc.enroll("five", hands)  # the gallery's model, not one these would pick
    assert not svc.undecided and svc.labels() == {"someone": 5, "five": 3}
    assert Gallery.open(tmp_path / "g").model_name == "anime-finetuned"
