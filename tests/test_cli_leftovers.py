"""What the CLI still did wrong: a still image taken by `watch` as a one-frame video, `enroll --all`
and pictures with nothing found, outputs written over without --overwrite, and a label that shows
as an old one ("a b" beside "a\u00a0b") enrolled as a second label."""

import shutil
import sqlite3
import sys
import unicodedata

import numpy as np
import pytest
from PIL import Image

from tests.conftest import disk_state
from tests.test_cli_train_eval import folder, refused
from tests.videos import write_video

from byakugan.embedder.errors import ByakuganError
from byakugan.index import Gallery, GalleryError
from byakugan.index.labels import SPACES, check_label_in, find
from byakugan.index.settings import GallerySettings
from byakugan.ui.cli import main
from byakugan.ui.cli.common import write_new
from byakugan.ui.cli.live import check_not_still

NBSP = "a\u00a0b"  # a label stored before other spaces were refused: shows as "a b"


def one_line(capsys, *args) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("byakugan: error: "), err
    return err.strip()


# ---- 1. watch and still images ------------------------------------------------------------------

def test_watch_refuses_a_still_image_and_says_to_search_it(tmp_path, capsys, digits):
    jpeg = digits["7"][0]
    png = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(png)
    named_as_video = shutil.copy(png, tmp_path / "clip.mp4")  # its content decides, not its name
    g = tmp_path / "g"
    for still, kind in ((jpeg, "JPEG"), (png, "PNG"), (named_as_video, "PNG")):
        line = one_line(capsys, "watch", g, still)
        assert line == (f"byakugan: error: video {still}: is a still image ({kind}), not a video; to recognise it use "
                        f"`byakugan search {g} {still}`")
    assert not g.exists()
    bundle = tmp_path / "b.zip"  # `search` takes gallery folders: a bundle is searched through serve or Python
    bundle.write_bytes(b"PK")
    assert f"POST /search of `byakugan serve {bundle}`" in one_line(capsys, "watch", bundle, jpeg)


def test_watch_still_opens_videos_animated_pictures_and_cameras(tmp_path, capsys):
    video = write_video(tmp_path / "v.avi", [(None, 3)], fps=15.0, size=(160, 120))
    frames = [Image.new("RGB", (64, 48), (40 * i, 0, 0)) for i in range(4)]
    frames[0].save(gif := tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    check_not_still("0", "g")  # a camera number (no such file): left to OpenCV
    for source in (video, gif):  # read as videos: what is missing is the gallery, after the video was opened
        check_not_still(str(source), "g")
        assert f"gallery {tmp_path / 'g'}: does not exist" in one_line(capsys, "watch", tmp_path / "g", source)


# ---- 2. enroll --all and pictures with nothing found -------------------------------------------

def test_enroll_all_names_every_picture_with_nothing_found(datasets, tmp_path, capsys):
    hand = sorted((datasets / "rock-paper-scissors" / "rock").glob("*.jpg"))[0]
    blank, plain = tmp_path / "blank.png", tmp_path / "plain.jpg"
    Image.new("RGB", (200, 150), (90, 120, 200)).save(blank)
    Image.new("RGB", (200, 150), (200, 120, 90)).save(plain)
    g = tmp_path / "g"
    # nothing in any picture: each named, then why nothing was enrolled; exit 2, no gallery made
    assert main(["enroll", str(g), "x", str(blank), str(plain), "--all", "--detector", "hand"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"byakugan: error: {blank}: no hand found (to take the whole image instead: fallback 'whole'; on "
                   "the command line --fallback whole)",
                   f"byakugan: error: {plain}: no hand found (to take the whole image instead: fallback 'whole'; on "
                   "the command line --fallback whole)",
                   "byakugan: error: enroll: none of the images gave a crop (each is listed above); gallery unchanged"]
    assert not g.exists()
    # some pictures: the others enrolled, the empty one named, exit 2 as without --all
    assert main(["enroll", str(g), "x", str(hand), str(blank), "--all", "--detector", "hand"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"byakugan: error: {blank}: no hand found (to take the whole image instead: fallback "
                                "'whole'; on the command line --fallback whole)"]
    assert "enrolled 1 image(s) as 'x'" in out and Gallery.open(g).labels() == {"x": 1}
    # --from-folder: a label none of whose pictures had anything is said to be left out
    root = tmp_path / "photos"
    for label, image in (("rock", hand), ("empty", blank)):
        (root / label).mkdir(parents=True)
        shutil.copy(image, root / label)
    assert main(["enroll", str(g), "--from-folder", str(root), "--all"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if " warning: " not in line]  # the same hand as 'x'
    assert err[-1] == ("byakugan: error: enroll: nothing enrolled for label 'empty': none of its images gave a crop "
                       "(each is listed above)") and "blank.png: no hand found" in err[0] and len(err) == 2
    assert Gallery.open(g).labels() == {"rock": 1, "x": 1}


# ---- 3. outputs: refused when they exist, unless --overwrite --------------------------------------

def test_embed_refuses_an_existing_out_before_any_work(digits, tmp_path, capsys):
    out = tmp_path / "e.npy"
    out.write_bytes(b"someone's own file")
    assert one_line(capsys, "embed", digits["1"][0], "--out", out) == (
        f"byakugan: error: --out {out}: exists; add --overwrite to replace it, or name another file")
    assert out.read_bytes() == b"someone's own file"
    assert main(["embed", str(digits["1"][0]), "--out", str(out), "--overwrite"]) == 0
    assert np.load(out).shape[0] == 1 and capsys.readouterr().err.startswith(f"wrote {out}: 1 x ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy"]  # no temporary file left
    # nothing embedded: no file of NaN rows only (which the next run would have to --overwrite)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["embed", str(bad), "--out", str(tmp_path / "f.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"byakugan: error: embed: none of the 1 image(s) could be embedded (each is listed above); " \
                      f"{tmp_path / 'f.npy'} not written" and "bad.png" in err[0]
    assert not (tmp_path / "f.npy").exists()


def test_an_output_that_appears_during_the_work_is_not_replaced(tmp_path):
    out = tmp_path / "e.npy"
    out.write_bytes(b"made meanwhile")
    with pytest.raises(ByakuganError, match=r"--out .*e\.npy: appeared while it was being made; nothing was replaced"):
        write_new(out, b"new", "--out", overwrite=False)
    assert out.read_bytes() == b"made meanwhile" and [p.name for p in tmp_path.iterdir()] == ["e.npy"]
    write_new(out, b"new", "--out", overwrite=True)
    write_new(tmp_path / "f.npy", b"fresh", "--out", overwrite=False)
    assert out.read_bytes() == b"new" and (tmp_path / "f.npy").read_bytes() == b"fresh"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "f.npy"]


def test_evaluate_refuses_existing_outputs_before_embedding(tmp_path, capsys):
    data = folder(tmp_path / "d", {f"c{i}": 4 for i in range(4)})
    saved, report = tmp_path / "e.safetensors", tmp_path / "report"
    saved.write_bytes(b"mine")
    report.mkdir()
    (report / "summary.json").write_text("{}")
    (report / "notes.txt").write_text("mine")
    args = ["evaluate", data, "--shots", "2", "--trials", "2"]
    assert refused(capsys, *args, "--save-embeddings", saved) == (
        f"byakugan: error: --save-embeddings {saved}: exists; add --overwrite to replace it, or name another file")
    assert refused(capsys, *args, "--report", report) == (
        f"byakugan: error: --report {report}: already holds summary.json; add --overwrite to replace it, "
        "or name another folder")
    assert "is inside DATA_DIR" in refused(capsys, *args, "--report", data / "c0")
    assert saved.read_bytes() == b"mine" and (report / "summary.json").read_text() == "{}"
    assert main([str(a) for a in (*args, "--save-embeddings", saved, "--report", report, "--overwrite")]) == 0
    assert saved.read_bytes()[:8] != b"mine" and (report / "summary.json").read_text() != "{}"
    assert (report / "notes.txt").read_text() == "mine" and (report / "confusion.png").is_file()


# ---- 4. a label that shows as an old one --------------------------------------------------------

def old_gallery(tmp_path, old_labels=(NBSP,)) -> Gallery:
    """A gallery made in Python, its labels then stored as a version before today's rules stored them."""
    path = tmp_path / "old"
    g = Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": 4}, {"name": "none"}, 0.5), path)
    for n, _ in enumerate(old_labels):
        g.enroll(f"l{n}", np.eye(4, dtype=np.float32)[n : n + 1])
    g.enroll("other", np.eye(4, dtype=np.float32)[3:])
    g.save()
    with sqlite3.connect(path / "gallery.db") as con:
        for n, label in enumerate(old_labels):
            con.execute("UPDATE refs SET label = ? WHERE label = ?", (label, f"l{n}"))
    con.close()
    g = Gallery.open(path)
    assert set(g.labels()) == {*old_labels, "other"}
    return g


def test_the_space_table_holds_every_separator_but_the_plain_space():
    scan = {c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in ("Zs", "Zl", "Zp")}
    assert set(SPACES) == scan - {ord(" ")}


def test_a_label_that_shows_as_an_old_one_is_added_to_it(tmp_path):
    g = old_gallery(tmp_path)
    assert check_label_in("a b", g.labels()) == NBSP and find(" a\u3000b ", g.labels()) == NBSP
    g.enroll("a b", np.eye(4, dtype=np.float32)[1:3])
    assert g.labels() == {NBSP: 3, "other": 1}
    assert g.sequences.add("s", ["a b", "other"]).steps == (NBSP, "other")
    with pytest.raises(GalleryError, match=r"holds U\+00A0 \(NO-BREAK SPACE\)"):
        g.enroll("a\u00a0c", np.eye(4, dtype=np.float32)[:1])  # a new one is still held to the rule
    decomposed = old_gallery(tmp_path / "nfd", ("e\u0301",))  # stored before labels were stored as NFC
    decomposed.enroll("\u00e9", np.eye(4, dtype=np.float32)[1:2])
    assert decomposed.labels() == {"e\u0301": 2, "other": 1}
    two = old_gallery(tmp_path / "two", (NBSP, "a\u2003b"))
    with pytest.raises(GalleryError, match=r"label 'a b': 2 labels show as it does \('a\\xa0b', 'a\\u2003b'\)"):
        two.enroll("a b", np.eye(4, dtype=np.float32)[2:3])
    assert two.labels() == {NBSP: 1, "a\u2003b": 1, "other": 1}


def test_the_cli_resolves_a_label_that_shows_as_an_old_one(tmp_path, capsys):
    path = old_gallery(tmp_path).path
    before = disk_state(path)
    assert one_line(capsys, "rename", path, "other", "a b") == (
        "byakugan: error: rename 'other' -> 'a b': 'a\\xa0b', which shows as 'a b', already exists; remove it first")
    assert disk_state(path) == before
    assert main(["rename", str(path), "a b", "a b"]) == 0  # the old label given plain spaces
    assert Gallery.open(path).labels() == {"a b": 1, "other": 1}


def test_enroll_adds_to_the_old_label_it_shows_as(digit_gallery, digits, tmp_path, capsys):
    g = shutil.copytree(digit_gallery, tmp_path / "g")
    with sqlite3.connect(g / "gallery.db") as con:
        con.execute("UPDATE refs SET label = ? WHERE label = '3'", (NBSP,))
    con.close()
    assert main(["enroll", str(g), "a b", str(digits["3"][9])]) == 0
    assert "enrolled 1 image(s) as 'a\\xa0b'" in capsys.readouterr().out
    assert Gallery.open(g).labels() == {"0": 5, "7": 5, NBSP: 6}
