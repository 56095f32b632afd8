"""What a hostile or careless caller of the Python API and of `byakugan export` must not be able to
do: delete folders, replace a gallery, or get a silently wrong picture."""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from byakugan.embedder import ImageError, load_image
from byakugan.index import Gallery, GalleryError
from byakugan.index.export import export
from byakugan.ui.cli import main

from .conftest import new_gallery


@pytest.fixture()
def gallery(digit_gallery, tmp_path):
    shutil.copytree(digit_gallery, tmp_path / "g")
    return tmp_path / "g"


def test_export_overwrite_replaces_only_an_earlier_bundle(gallery, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "2024").mkdir(parents=True)
    (photos / "2024" / "beach.jpg").write_bytes(b"holiday")
    assert main(["export", str(gallery), str(photos), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is not a byakugan bundle" in err and err.count("\n") == 1
    assert (photos / "2024" / "beach.jpg").read_bytes() == b"holiday"  # nothing of the user's deleted
    assert main(["export", str(gallery), str(gallery), "--overwrite"]) == 2
    assert "holds the gallery itself" in capsys.readouterr().err
    assert Gallery.open(gallery).labels() == {"0": 5, "3": 5, "7": 5}
    (tmp_path / "notes.zip").write_bytes(b"not a bundle")
    assert main(["export", str(gallery), str(tmp_path / "notes.zip"), "--overwrite"]) == 2
    assert (tmp_path / "notes.zip").read_bytes() == b"not a bundle"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["export", str(gallery), "", "--overwrite"]) == 2
    finally:
        os.chdir(cwd)
    assert "is not a file or folder name" in capsys.readouterr().err and (photos / "2024").is_dir()
    for name in ("b", "b.zip"):  # an earlier bundle, folder or archive, is replaced
        assert main(["export", str(gallery), str(tmp_path / name)]) == 0
        assert main(["export", str(gallery), str(tmp_path / name), "--overwrite"]) == 0
    assert "manifest.json" in zipfile.ZipFile(tmp_path / "b.zip").namelist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


@pytest.mark.parametrize("name", ["bundle", "bundle.zip"])
def test_an_export_never_replaces_what_appeared_under_its_name_while_it_ran(gallery, tmp_path, capsys, monkeypatch, name):
    """The name was checked once, at the start; what was there at the end (a folder of the user's,
    made meanwhile) was moved aside and deleted with the staging folder, with no --overwrite."""
    from byakugan.index import export as exporting

    out, real = tmp_path / name, exporting._write_onnx

    def meanwhile(model, path):
        real(model, path)
        if name == "bundle":
            (out / "2024").mkdir(parents=True)
            (out / "2024" / "beach.jpg").write_bytes(b"holiday")
        else:
            out.write_bytes(b"my notes")

    monkeypatch.setattr(exporting, "_write_onnx", meanwhile)
    assert main(["export", str(gallery), str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"byakugan: error: export: {out} appeared while the bundle was made; "
                                               "nothing was replaced (choose a new name, or --overwrite (overwrite=True) to replace an "
                                               "earlier bundle)")
    assert (out / "2024" / "beach.jpg").read_bytes() == b"holiday" if name == "bundle" else out.read_bytes() == b"my notes"
    # Past the last look (Path.exists said nothing was there): link() and rename() still refuse it
    from pathlib import Path

    real_exists = Path.exists
    monkeypatch.setattr(exporting, "_write_onnx", real)
    monkeypatch.setattr(Path, "exists", lambda self, **kw: False if self == out else real_exists(self, **kw))
    assert main(["export", str(gallery), str(out)]) == 2
    assert "appeared while the bundle was made; nothing was replaced" in capsys.readouterr().err
    monkeypatch.setattr(Path, "exists", real_exists)
    assert (out / "2024" / "beach.jpg").read_bytes() == b"holiday" if name == "bundle" else out.read_bytes() == b"my notes"
    assert main(["export", str(gallery), str(out), "--overwrite"]) == 2  # checked again at the end: not a bundle
    assert "is not a byakugan bundle" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_a_failed_export_leaves_no_folders_it_made_and_takes_any_name_the_system_does(gallery, tmp_path, capsys, monkeypatch):
    import errno

    from byakugan.index import export as exporting

    real = exporting._write_onnx

    def full_disk(model, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporting, "_write_onnx", full_disk)
    assert main(["export", str(gallery), str(tmp_path / "a" / "b" / "c" / "x.zip")]) == 2
    assert "cannot write it (No space left on device)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]
    monkeypatch.setattr(exporting, "_write_onnx", real)
    longest = tmp_path / ("a." + "x" * 249 + ".zip")  # 255 characters; the staging name was longer than 2-letter stems
    assert main(["export", str(gallery), str(longest)]) == 0
    assert main(["export", str(gallery), str(tmp_path / ("y" * 300 + ".zip"))]) == 2
    assert "cannot write it (File name too long)" in capsys.readouterr().err
    assert main(["export", str(gallery), str(tmp_path / "folder.zip") + "/"]) == 0  # the slash asks for a folder
    assert (tmp_path / "folder.zip" / "manifest.json").is_file()


def test_export_to_an_impossible_place_is_one_line(gallery, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["export", str(gallery), str(tmp_path / "file" / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("byakugan: error: export:") and err.count("\n") == 1


def test_a_bundle_names_its_sources_by_file_name_not_the_exporting_machines_folders(gallery, tmp_path):
    export(Gallery.open(gallery), tmp_path / "b")
    refs = json.loads((tmp_path / "b" / "references.json").read_text())["references"]
    assert refs and all("/" not in r["source"] for r in refs)
    assert {r["source"] for r in refs} <= {os.path.basename(r.source) for r in Gallery.open(gallery).references()}


def test_a_new_gallery_never_replaces_one_already_there(model, gallery, tmp_path):
    with pytest.raises(GalleryError, match="already holds a gallery; open it"):
        new_gallery(model, gallery)
    g = Gallery.open(gallery)
    shutil.copytree(gallery, tmp_path / "other")
    with pytest.raises(GalleryError, match="already holds another gallery"):
        g.save(tmp_path / "other")
    g.save(tmp_path / "fresh")  # a new folder is fine, and so is saving again where it was saved
    g.save()
    assert Gallery.open(tmp_path / "other").labels() == Gallery.open(tmp_path / "fresh").labels()


def test_a_copy_saved_after_another_save_says_so(gallery):
    a, b = Gallery.open(gallery), Gallery.open(gallery)
    v = a.embeddings([0])
    a.enroll("x", v)
    a.save()
    b.enroll("y", v)
    with pytest.raises(GalleryError, match="another save changed it since this copy was opened"):
        b.save()
    assert Gallery.open(gallery).labels()["x"] == 1 and "y" not in Gallery.open(gallery).labels()


def test_enrolling_nothing_or_a_threshold_that_is_not_a_number_is_refused(gallery):
    g = Gallery.open(gallery)
    with pytest.raises(GalleryError, match="no images or vectors given"):
        g.enroll("ghost", np.zeros((0, g.dim), np.float32))
    assert "ghost" not in g.labels()
    for bad in ("abc", None, float("nan"), 2):
        with pytest.raises(GalleryError, match="must be a cosine similarity"):
            g.threshold = bad


def test_sixteen_bit_pictures_load_as_their_eight_bit_selves(tmp_path):
    eight = np.random.default_rng(0).integers(1, 255, (24, 32), dtype=np.uint8)
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit greyscale
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = np.asarray(load_image(tmp_path / "g16.png"))
    assert got.shape == (24, 32, 3) and np.abs(got[..., 0].astype(int) - eight).max() <= 1


def test_a_fifo_is_refused_not_read_forever(tmp_path):
    os.mkfifo(tmp_path / "q.jpg")
    with pytest.raises(ImageError, match="is not a regular file"):
        load_image(tmp_path / "q.jpg")


def test_small_api_mistakes_are_named(gallery, tmp_path):
    from byakugan.index import Pipeline

    g = Gallery.open(gallery)
    with pytest.raises(GalleryError, match="runtime 'tensorrt': not one this runs on; valid: torch, onnx"):
        Pipeline.for_gallery(g, runtime="tensorrt")
    result = g.search(g.embeddings([0]), k=1)[0]
    for bad in (float("nan"), float("inf")):
        with pytest.raises(GalleryError, match="must be a finite number"):
            g.match(result, threshold=bad)
    with pytest.raises(GalleryError, match="reference id '0': not in gallery"):  # the string shows as one
        g.remove_reference("0")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryError, match="cannot make the folder|is a file"):
        g.save(tmp_path / "file" / "g")
    pipe, v = Pipeline.for_gallery(g, runtime="onnx"), g.embeddings([0, 1])  # the gallery's own vectors
    with pytest.raises(ImageError, match="queries: expected a list of images, got NoneType"):
        pipe.match(g, None)
    assert pipe.match(g, v)[0].cosine <= 1.0 + 1e-6
    for bad, said in ((v * 10, "query vector 0: length 10; queries are embeddings of length 1: normalise"),  # past
                      (v * 0.5, "query vector 0: length 0.5; queries are embeddings of length 1: normalise"),  # any match
                      (v * 1e-4, "vector 0: length 0.0001; a query has a direction")):
        with pytest.raises(GalleryError, match=said):
            pipe.match(g, bad)


def test_a_folder_where_a_first_save_died_still_becomes_a_gallery(model, tmp_path):
    import sqlite3

    (tmp_path / "g").mkdir()
    sqlite3.connect(tmp_path / "g" / "gallery.db").execute("PRAGMA journal_mode=WAL").fetchall()  # no settings
    pipe, g = new_gallery(model, tmp_path / "g")
    g.enroll("a", np.eye(1, g.dim, dtype=np.float32))
    g.save()
    assert Gallery.open(tmp_path / "g").labels() == {"a": 1}


def test_a_gallery_saves_to_its_own_folder_however_it_is_spelt(gallery, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(gallery)
    g = Gallery.open("g")
    for spelling in (gallery, tmp_path / "link", "link/../g/", "./g"):
        g.save(spelling)
    assert Gallery.open(gallery).labels() == {"0": 5, "3": 5, "7": 5}


def test_a_label_stored_before_normalisation_exports_to_a_bundle_that_loads(gallery, tmp_path):
    import sqlite3
    import unicodedata

    from byakugan.index.bundle import load

    nfd = unicodedata.normalize("NFD", "Café")
    with sqlite3.connect(gallery / "gallery.db") as con:  # as a gallery made before labels were normalised holds it
        con.execute("UPDATE refs SET label = ? WHERE label = '3'", (nfd,))
    assert nfd in Gallery.open(gallery).labels()
    export(Gallery.open(gallery), tmp_path / "b.zip")
    assert nfd in load(tmp_path / "b.zip").labels()


def test_a_pipeline_of_another_model_of_the_same_length_cannot_search_or_enrol(model, gallery, digits):
    from byakugan.embedder import create_embedder
    from byakugan.index import ModelMismatchError, Pipeline

    other = Pipeline.create(create_embedder("efficientnet_lite0", dim=model.dim))  # same length, another space
    g = Gallery.open(gallery)
    for act in (lambda: other.enroll(g, "3", [digits["3"][9]]), lambda: other.search(g, [digits["3"][9]]),
                lambda: other.match(g, [digits["3"][9]]), lambda: other.recognize(g, digits["3"][9])):
        with pytest.raises(ModelMismatchError, match=r"built with model 'default' .*, not with 'efficientnet_lite0'"):
            act()
    assert g.labels() == {"0": 5, "3": 5, "7": 5}
    assert Pipeline.for_gallery(g).match(g, [digits["3"][9]])[0].label == "3"


def test_enrolment_inputs_are_checked_before_anything_changes(model, tmp_path, digits):
    from .conftest import unit_rows

    pipe, g = new_gallery(model, tmp_path / "g")
    with pytest.raises(GalleryError, match="enroll: 1 sources for 3 images; give one for each"):
        pipe.enroll(g, "1", digits["1"][:3], sources=["one"])  # it took the first and dropped two
    with pytest.raises(GalleryError, match="sources 'ab': must be a list"):
        pipe.enroll(g, "1", digits["1"][:2], sources="ab")  # not two sources 'a' and 'b'
    rows = unit_rows(2, g.dim)
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        g.enroll("x", rows, images=[digits["1"][0], tmp_path / "missing.jpg"])
    with pytest.raises(GalleryError, match="enroll: 1 images for 2 vectors"):
        g.enroll("x", rows, images=[digits["1"][0]])
    with pytest.raises(GalleryError, match="sources: None is not a name"):
        g.enroll("x", rows, sources=[None, "b"])
    with pytest.raises(GalleryError, match="length 0.5; references are embeddings of length 1: normalise it"):
        g.enroll("x", rows * 0.5)  # not a fused gallery: nothing is shorter than 1
    assert len(g) == 0 and g.labels() == {} and len(g.vectors) == 0  # none of them added a vector
    for bad in (float("nan"), 5, "0.5", True):
        with pytest.raises(GalleryError, match="must be a cosine similarity between -1 and 1"):
            pipe.new_gallery(tmp_path / "t", threshold=bad)
    assert g.enroll("x", rows, sources=["a", tmp_path / "b.jpg"], images=digits["1"][:2]) == [0, 1]
    assert [r.source for r in g.references()] == ["a", str(tmp_path / "b.jpg")] and g.thumbnail(1)
    with pytest.raises(GalleryError, match="vector 0: length 0; a query has a direction"):
        g.search(np.zeros((1, g.dim), np.float32))  # every cosine 0: a match for anything below 0


def test_a_model_is_not_saved_among_a_gallerys_files_and_small_mistakes_are_named(model, gallery, tmp_path):
    from byakugan.embedder import ModelError, create_embedder
    from byakugan.index import Pipeline

    before = sorted(p.name for p in gallery.iterdir())
    with pytest.raises(ModelError, match="holds gallery.db .*save the model into a folder of its own"):
        model.save(gallery)
    assert sorted(p.name for p in gallery.iterdir()) == before
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        model.save(tmp_path / "f")
    with pytest.raises(ImageError, match="expected a list of images, got one str"):
        model.embed("a.jpg")  # not the files 'a', '.', 'j', ...
    with pytest.raises(GalleryError, match="model 5: must be a model name, a model folder, or an embedder"):
        Pipeline.create(5)
    with pytest.raises(ModelError, match="embedding dim True must be a positive integer or None"):
        create_embedder("efficientnet_lite0", dim=True)  # True is an int to Python, 1 to the head
    with pytest.raises(GalleryError, match="gallery path None: must be a folder's path"):
        Gallery.open(None)
    g = Gallery.open(gallery)
    for not_an_id in (True, 0.0):  # True == 1 and 0.0 == 0 as dictionary keys
        with pytest.raises(GalleryError, match="not in gallery"):
            g.remove_reference(not_an_id)
    assert len(g) == 15


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export_here(gallery, tmp_path):
    import subprocess
    import sys

    from byakugan.index import export as exporting

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{exporting._staging_prefix()}{done.stdout.strip()}-abc123"  # its process has ended: killed
    mine = tmp_path / f"{exporting._staging_prefix()}{os.getpid()}-def456"  # a running export's
    other = tmp_path / f".export-another_machine-{done.stdout.strip()}-ghi789"  # a machine sharing the folder
    for d in (dead, mine, other):
        (d / "bundle").mkdir(parents=True)
    assert main(["export", str(gallery), str(tmp_path / "b.zip")]) == 0
    assert not dead.exists() and mine.is_dir() and other.is_dir()


def test_one_image_array_or_one_vector_where_a_list_goes_is_named(digit_gallery):
    from byakugan.index import Pipeline

    g = Gallery.open(digit_gallery)
    pipe = Pipeline.for_gallery(g)
    picture = np.zeros((40, 30, 3), np.uint8)
    with pytest.raises(ImageError, match=r"queries: expected a list of images, got one image array of shape \(40, 30, 3\) \(put it in a list\)"):
        pipe.search(g, picture)
    with pytest.raises(ImageError, match=r"got one vector of shape \(\d+,\); vectors go as one \(N, D\) array \(v\[None\] for one\)"):
        pipe.search(g, g.embeddings([0])[0])
    result = pipe.search(g, g.embeddings([0]))[0]
    for bad in ("x", [result]):
        with pytest.raises(GalleryError, match="match: expected one SearchResult"):
            g.match(bad)
    cal = pipe.calibration(g)
    for bad in ("0.8", None, [0.1, 0.9]):
        with pytest.raises(ValueError, match="a score must be one number"):
            cal.confidence(bad)
    assert 0 < cal.confidence(np.float32(0.5)) < 1


def test_pipeline_enroll_refuses_sources_that_are_not_names(digit_gallery, digits, tmp_path):
    from byakugan.index import Pipeline

    shutil.copytree(digit_gallery, tmp_path / "g")
    g = Gallery.open(tmp_path / "g")
    with pytest.raises(GalleryError, match="sources: None is not a name"):
        Pipeline.for_gallery(g).enroll(g, "z", [digits["1"][0]], sources=[None])  # was stored as the text "None"
    assert "z" not in g.labels()


def test_an_edit_inside_an_edit_of_the_same_gallery_is_refused_not_a_hang(gallery):
    from byakugan.index import editing

    with editing(gallery) as g:
        with pytest.raises(GalleryError, match="this thread already holds its lock"):
            with editing(gallery):
                pass
        g.threshold = 0.5
    assert Gallery.open(gallery).threshold == 0.5  # the outer edit saved; the lock was let go
    with editing(gallery):
        pass
    for bad in (None, 3):
        with pytest.raises(GalleryError, match=f"gallery path {bad}: must be a folder's path"):
            with editing(bad):
                pass


def test_pipeline_match_answers_a_blank_picture_unknown_as_recognize_does(model, gallery, digits):
    from byakugan.index import Pipeline

    g = Gallery.open(gallery)
    pipe = Pipeline.for_gallery(g, model)
    flat = Image.new("RGB", (90, 90), (200, 52, 50))
    pictures = (p for p in [flat, digits["3"][6]])  # a generator: read once, answered for both
    blank, real = pipe.match(g, pictures)
    assert blank.label == "unknown" and real.label == "3"
    assert pipe.recognize(g, flat)[0].match.label == "unknown"
    assert pipe.match(g, g.embeddings([0]))[0].label == "0"  # vectors: no picture to judge


def test_a_copy_of_a_gallery_removed_since_is_not_saved_over_it_in_part(gallery, tmp_path):
    g = Gallery.open(gallery)
    shutil.rmtree(gallery)
    g.enroll("z", g.embeddings([0]), ["z"])
    with pytest.raises(GalleryError, match="was removed \\(or moved\\) since this copy was opened; nothing saved"):
        g.save()
    assert not gallery.exists()
    g.save(tmp_path / "kept")
    assert Gallery.open(tmp_path / "kept").labels()["z"] == 1


def test_enrol_warnings_take_pictures_or_regions_as_well_as_crops(model, gallery, digits):
    from byakugan.index import Pipeline
    from byakugan.index.warnings import enrol_warnings

    g = Gallery.open(gallery)
    pipe = Pipeline.for_gallery(g, model)
    said = enrol_warnings(pipe, g, "3", [digits["3"][0], Image.new("RGB", (50, 50))])
    assert f"{digits['3'][0]}: near-duplicate of reference" in said[1] and "one flat colour" in said[0]
    assert "region 1: near-duplicate of reference" in enrol_warnings(pipe, g, "3", pipe.crops(digits["3"][0]))[0]
