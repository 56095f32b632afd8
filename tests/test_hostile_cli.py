"""What a hostile user of the CLI and the server found: bad options, outputs that are folders,
labels typed in another Unicode spelling, a gallery moved from under its server, tied neighbours."""

import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from byakugan.index import Gallery, GalleryError
from byakugan.index.export import export
from byakugan.index.reindex import label_recall
from byakugan.index.settings import GallerySettings
from byakugan.index.vectors import FlatStore
from byakugan.ui.cli import main
from byakugan.ui.http import create_app

DECOMPOSED = "e\u0301"  # é as e + combining accent (macOS file names); stored as one character


@pytest.mark.parametrize("args, told", [(["--port", "99999"], "argument --port: 99999: a port is 0 to 65535"),
                                        (["--port", "-1"], "a port is 0 to 65535"),
                                        (["--max-upload-mb", "nan"], "must be more than 0 and at most 4096"),
                                        (["--max-upload-mb", "inf"], "must be more than 0 and at most 4096"),
                                        (["--max-upload-mb", "0"], "must be more than 0 and at most 4096")])
def test_serve_options_out_of_range_are_one_line(capsys, tmp_path, args, told):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and told in err


def test_outputs_that_are_folders_are_refused_before_any_work(tmp_path, capsys, digits):
    (tmp_path / "d.npy").mkdir()
    assert main(["embed", str(digits["7"][0]), "--out", str(tmp_path / "d.npy")]) == 2
    assert "is a folder; name a .npy file" in capsys.readouterr().err
    (tmp_path / "v.mp4").mkdir()
    assert main(["watch", str(tmp_path / "g"), str(digits["7"][0]), "--out", str(tmp_path / "v.mp4")]) == 2
    assert "is a folder; name a video file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "v.mp4"]  # nothing left behind


def small(tmp_path) -> Gallery:
    g = Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": 4}, {"name": "none"}, 0.5),
                       tmp_path / "small")
    g.enroll(DECOMPOSED, np.eye(4, dtype=np.float32)[:2])
    g.enroll("b", np.eye(4, dtype=np.float32)[2:])
    return g


def test_a_label_answers_to_any_spelling_it_was_enrolled_with(tmp_path):
    g = small(tmp_path)
    assert list(g.labels()) == ["b", unicodedata.normalize("NFC", DECOMPOSED)]
    assert len(g.references(DECOMPOSED)) == 2
    seq = g.sequences.add("combo", [DECOMPOSED, "b"])
    assert seq.steps[0] == "\u00e9" and "combo" in g.sequences
    assert g.rename(DECOMPOSED, "x") == 2 and g.rename("x", DECOMPOSED) == 2
    assert g.remove(DECOMPOSED) == 2 and list(g.labels()) == ["b"]
    with pytest.raises(GalleryError, match=r"label 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\.\.\.: not in gallery"):
        g.remove("z" * 5000)  # named, not echoed whole


def test_reindex_names_the_index_asked_for_and_takes_any_case(tmp_path):
    g = small(tmp_path)
    with pytest.raises(GalleryError, match=r"index IVF2,PQ2: 4 references cannot train its codes"):
        g.reindex("ivf2,pq2")
    g.reindex(" flat ")
    assert g.vectors.factory == "Flat"


def test_recall_counts_a_tied_neighbour_under_another_label_as_found():
    store = FlatStore.empty(4, "HNSW32")
    v = np.eye(4, dtype=np.float32)
    store.add(np.arange(12), np.concatenate([v, v, v]))  # the same vectors three times: ids 0-3, 4-7, 8-11
    labels = {i: f"{'abc'[i // 4]}{i % 4}" for i in range(12)}  # each copy under another label
    assert label_recall(store, labels) == 1.0


def test_a_gallery_moved_from_under_its_server_is_503_and_no_stray_folder(digit_gallery, tmp_path, digits):
    folder = shutil.copytree(digit_gallery, tmp_path / "g")
    c = TestClient(create_app(folder))
    assert c.get("/healthz").status_code == 200
    folder.rename(tmp_path / "moved")
    r = c.post("/enroll", data={"label": "x"}, files={"images": ("q.jpg", open(digits["7"][0], "rb"), "image/jpeg")})
    assert r.status_code == 503 and "was moved or removed while this server ran" in r.json()["error"]
    assert c.get("/healthz").status_code == 503
    assert not folder.exists()  # restoring it is a plain move again
    b = export(Gallery.open(tmp_path / "moved"), tmp_path / "b.zip")
    read_only = TestClient(create_app(b))
    for r in (read_only.post("/enroll", data={"label": "x"}), read_only.delete("/labels/7"),
              read_only.put("/sequences/s", json={"steps": ["7"]})):
        assert r.status_code == 405 and "an exported bundle is read-only" in r.json()["error"]


def test_an_edit_waiting_for_anothers_lock_says_so_and_then_goes_on(tmp_path, capsys):
    import fcntl
    import threading
    import time

    from byakugan.index.store import LOCK_FILE

    small(tmp_path).save()
    folder = tmp_path / "small"
    holder = open(folder / LOCK_FILE, "a")
    fcntl.flock(holder, fcntl.LOCK_EX)  # another program's reindex, say (minutes at a million)
    result = []
    t = threading.Thread(target=lambda: result.append(main(["rename", str(folder), "b", "c"])))
    t.start()
    for _ in range(200):
        if "waiting" in capsys.readouterr().err:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no word while waiting for the lock")
    assert t.is_alive() and not result  # still waiting, as it should
    holder.close()
    t.join(60)
    assert result == [0] and set(Gallery.open(folder).labels()) == {unicodedata.normalize("NFC", DECOMPOSED), "c"}


def test_labels_and_galleries_given_in_the_wrong_places_are_named(tmp_path, capsys, digits):
    from byakugan.index import Pipeline

    a, b = digits["4"][:2]
    assert main(["enroll", str(tmp_path / "g"), str(a), str(b)]) == 2  # the label left out
    assert capsys.readouterr().err.strip() == (
        f"byakugan: error: enroll: the label {str(a)!r} is an image file; the label comes first, then the images "
        "(byakugan enroll GALLERY LABEL IMAGE...)")
    assert not (tmp_path / "g").exists()
    (tmp_path / "1").write_text("a file of that name, by chance")
    assert main(["enroll", str(tmp_path / "g1"), str(tmp_path / "1"), str(a)]) == 0  # a label all the same
    assert main(["enroll", str(tmp_path / "g1"), "あ" * 90, str(a)]) == 0  # 270 bytes: no file name is that long
    capsys.readouterr()
    (tmp_path / "afile").write_text("mine")
    assert main(["enroll", str(tmp_path / "afile" / "g"), "a", str(a)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"byakugan: error: gallery {tmp_path / 'afile' / 'g'}: {tmp_path / 'afile'} is a file, not a folder")  # not "File exists"
    if Path("/proc/self").is_dir():  # a place no folder can be made: "its folder went away 100 times"
        assert main(["enroll", "/proc/byakugan-gallery", "a", str(a)]) == 2
        assert "cannot be created or locked (no folder can be made there)" in capsys.readouterr().err
    g = small(tmp_path)
    for not_a_label in (["b"], {"b": 1}):
        with pytest.raises(GalleryError, match="not in gallery"):
            g.remove(not_a_label)
        with pytest.raises(GalleryError, match="not in gallery"):
            g.rename(not_a_label, "x")
    pipe = Pipeline.create("imagenet")
    for call in (lambda: pipe.search("/some/gallery", [np.zeros((32, 32, 3), np.uint8)]),
                 lambda: pipe.match("/some/gallery", [np.zeros((32, 32, 3), np.uint8)]),  # an AttributeError before
                 lambda: pipe.threshold("/some/gallery"), lambda: Pipeline.for_gallery("/some/gallery")):
        with pytest.raises(GalleryError, match=r"gallery '/some/gallery': must be a Gallery \(byakugan.index.Gallery.open"
                                               r"\(PATH\)\), not a str"):
            call()
    with pytest.raises(GalleryError, match=r"index 'AAAAAAAAAA.*\.\.\.: not one a gallery can use"):
        g.reindex("A" * 100_000)


def test_a_folder_named_against_the_new_label_rules_is_refused_before_any_work(tmp_path, capsys, digits):
    """Into an existing gallery the new-label rules came only at Gallery.enroll, after the folders
    before it were embedded: the run failed part-way."""
    g = tmp_path / "g"
    assert main(["enroll", str(g), "1", str(digits["1"][0])]) == 0
    root = tmp_path / "photos"
    for name, image in (("2", digits["2"][0]), ("a\u3000b", digits["3"][0])):
        (root / name).mkdir(parents=True)
        shutil.copy(image, root / name / image.name)
    capsys.readouterr()
    assert main(["enroll", str(g), "--from-folder", str(root)]) == 2
    assert "holds U+3000 (IDEOGRAPHIC SPACE)" in capsys.readouterr().err
    assert Gallery.open(g).labels() == {"1": 1}


def test_a_gallery_that_is_a_dangling_link_is_named_as_one(tmp_path, capsys, digits):
    """Locking it used to fail 100 times over ("its folder went away") before saying so."""
    (tmp_path / "g").symlink_to(tmp_path / "nowhere")
    assert main(["enroll", str(tmp_path / "g"), "x", str(digits["3"][0])]) == 2
    assert f"gallery {tmp_path / 'g'}: is a link to {tmp_path / 'nowhere'}, which does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_error_and_warning_lines_escape_what_a_file_name_may_hide(capsys):
    """A file name is the user's to choose: a terminal's escape sequence or a line break in it is
    written as an escape, so an error or warning stays one line that cannot recolour the terminal."""
    from byakugan.ui.cli.common import report, warn

    report("z\x1b[31mRED.jpg: no such file")
    warn("dup\x1b]0;pwned\x07.jpg: near-duplicate of a.jpg\nsecond line")
    err = capsys.readouterr().err
    assert err == ("byakugan: error: z\\u001b[31mRED.jpg: no such file\n"
                   "byakugan: warning: dup\\u001b]0;pwned\\u0007.jpg: near-duplicate of a.jpg\\u000asecond line\n")
