"""Hostile input and hard stops (issue #15): every case is one line and exit 2 (CLI) or a 4xx JSON
(HTTP) or a success, never a traceback; nothing is lost; readers never see a half-saved gallery."""

import io
import hashlib
import json
import shutil
import sqlite3
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import disk_state
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from byakugan.embedder.errors import ImageError
from byakugan.embedder.images import load_image
from byakugan.index import Gallery, GalleryError, Pipeline, store
from byakugan.index.labels import check_label
from byakugan.ui.cli import main
from byakugan.ui.http import create_app

from .conftest import unit_rows

PY = sys.executable


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("byakugan: error: ") and "Traceback" not in err


# ---- images --------------------------------------------------------------------------------
@given(st.binary(max_size=3000))
@settings(max_examples=150, deadline=None, database=None)
def test_any_bytes_give_an_image_or_one_image_error(data):
    try:
        img = load_image(data)
    except ImageError as exc:
        assert "\n" not in str(exc)
    else:
        assert img.mode == "RGB"


@given(w=st.integers(1, 300), h=st.integers(1, 300), mode=st.sampled_from(["RGB", "RGBA", "L", "P", "1", "I;16", "LA"]),
       fmt=st.sampled_from(["PNG", "GIF", "BMP", "TIFF", "WEBP"]), cut=st.integers(0, 400))
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_real_and_truncated_images_of_any_shape(w, h, mode, fmt, cut):
    buf = io.BytesIO()
    try:
        Image.new(mode, (w, h)).save(buf, fmt)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format
    data = buf.getvalue()
    data = data[: max(1, len(data) - cut)] if cut else data
    try:
        img = load_image(data)
    except ImageError:
        return
    from byakugan.embedder.preprocess import Preprocess

    assert Preprocess(size=64).to_array(img).shape == (3, 64, 64)


def test_postscript_is_not_handed_to_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match="not an image"):
        load_image(eps)


@pytest.mark.parametrize("size", [(40000, 1), (200000, 1), (1, 40000)])
def test_extreme_shapes_stay_under_1_gb(tmp_path, size):
    """Decode and preprocess in a process whose address space is capped at 1 GB."""
    path = tmp_path / "strip.png"
    Image.new("RGB", size, (10, 200, 10)).save(path)
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))\n"
              "from byakugan.embedder.images import load_image\n"
              "from byakugan.embedder.preprocess import Preprocess\n"
              f"x = Preprocess(size=160).to_array(load_image({str(path)!r}))\n"
              "print(x.shape)\n")
    proc = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(3, 160, 160)", proc.stderr[-500:]


# ---- labels and names ----------------------------------------------------------------------
@pytest.mark.parametrize("label, why", [("", "is empty"), ("   ", "is empty"), ("a\u202eb", "invisible formatting"),
                                        ("a\x07", "control"), ("lab\udcff", "not valid UTF-8"), ("Unknown", "reserved"),
                                        ("lu\u200bfei", "invisible formatting"), ("lu\u00adfei", "invisible formatting"),
                                        ("\ufefflufei", "invisible formatting"), ("\ufffd\ufffd", r"U\+FFFD, the mark of bytes")])
def test_bad_labels_are_refused(label, why):
    with pytest.raises(GalleryError, match=why):
        check_label(label)


def test_non_utf8_file_name_and_label(model, tmp_path, capsys, tiny_images):
    odd = tmp_path / os.fsdecode(b"non\xffutf8.png")
    odd.write_bytes(Path(tiny_images[0]).read_bytes())
    g = tmp_path / "g"
    code, err = run(capsys, "enroll", g, "red", odd)
    assert code == 0, err
    assert any("non\\udcffutf8.png" in r.source for r in Gallery.open(g).references())
    code, err = run(capsys, "enroll", g, os.fsdecode(b"lab\xff"), tiny_images[1])
    assert code == 2 and one_line(err) and "not valid UTF-8" in err
    assert not list(g.glob(".*.tmp-*")) and len(list(g.glob("vectors.*.f32"))) == 1


def test_gallery_path_that_is_a_file(tmp_path, capsys, tiny_images):
    f = tmp_path / "F"
    f.write_text("x")
    for g in (f, f / "sub"):
        code, err = run(capsys, "enroll", g, "l", tiny_images[0])
        assert code == 2 and one_line(err), err
    assert f.read_text() == "x"


# ---- damaged galleries ---------------------------------------------------------------------
def saved_gallery(model, path: Path) -> Path:
    g = Pipeline.create(model).new_gallery(path)
    g.enroll("a", unit_rows(3, model.dim, seed=1), sources=["a1", "a2", "a3"])
    g.save()
    return path


COMPAT = Path(__file__).resolve().parent / "fixtures" / "compat"


@pytest.mark.parametrize("damage", ["no index_file", "a list", "reference without label", "threshold text",
                                    "references not a list", "index truncated, checksum updated", "index path escapes"])
def test_malformed_first_format_gallery_is_one_line(tmp_path, capsys, tiny_images, damage):
    """A gallery still in the first format (gallery.json, as older versions wrote it)."""
    g = Path(shutil.copytree(COMPAT / "gallery-plain", tmp_path / "g"))
    meta_path = g / "gallery.json"
    meta = json.loads(meta_path.read_text())
    if damage == "no index_file":
        del meta["index_file"]
    elif damage == "a list":
        meta = [1, 2, 3]
    elif damage == "reference without label":
        del meta["references"][0]["label"]
    elif damage == "threshold text":
        meta["threshold"] = "high"
    elif damage == "references not a list":
        meta["references"] = {"a": 1}
    elif damage == "index path escapes":
        meta["index_file"] = "../../etc/passwd"
    else:
        index = g / meta["index_file"]
        blob = index.read_bytes()[:50]
        index.write_bytes(blob)
        meta["index_sha256"] = hashlib.sha256(blob).hexdigest()
    meta_path.write_text(json.dumps(meta))
    before = disk_state(g)
    for args in (["labels", g], ["search", g, tiny_images[0]], ["enroll", g, "b", tiny_images[0]]):
        code, err = run(capsys, *args)
        assert code == 2 and one_line(err), (args, err)
    assert disk_state(g) == before


@pytest.mark.parametrize("damage", ["no storage", "setting not JSON", "threshold text", "vectors path escapes",
                                    "vectors missing", "vectors damaged", "vectors cut short", "row beyond the file",
                                    "checkpoint damaged", "checkpoint path escapes", "row not a number"])
def test_malformed_gallery_is_one_line(model, tmp_path, capsys, tiny_images, damage):
    g = saved_gallery(model, tmp_path / "g")
    loaded = Gallery.open(g)
    if damage.startswith("checkpoint"):
        loaded.reindex("HNSW16")  # an index type saved as a checkpoint beside the vectors
    loaded.enroll("b", unit_rows(2, model.dim, seed=2))
    loaded.save()  # rows appended after the first save's
    con = sqlite3.connect(g / "gallery.db", isolation_level=None)
    storage = json.loads(dict(con.execute("SELECT key, value FROM settings"))["storage"])
    vectors = g / storage["vectors"]

    def set_storage(**kw):
        con.execute("UPDATE settings SET value = ? WHERE key = 'storage'", (json.dumps(dict(storage, **kw)),))

    if damage == "no storage":
        con.execute("DELETE FROM settings WHERE key = 'storage'")
    elif damage == "setting not JSON":
        con.execute("UPDATE settings SET value = '{' WHERE key = 'next_id'")
    elif damage == "threshold text":
        con.execute("""UPDATE settings SET value = '"high"' WHERE key = 'threshold'""")
    elif damage == "vectors path escapes":
        set_storage(vectors="../../etc/passwd")
    elif damage == "checkpoint path escapes":
        set_storage(checkpoint="../index.000001.faiss")
    elif damage == "vectors missing":
        vectors.unlink()
    elif damage == "vectors damaged":
        vectors.write_bytes(vectors.read_bytes()[:-10] + b"x" * 10)
    elif damage == "vectors cut short":
        vectors.write_bytes(vectors.read_bytes()[:-10])
    elif damage == "row not a number":
        con.execute("UPDATE refs SET row = 'x' WHERE id = (SELECT MAX(id) FROM refs)")
    elif damage == "row beyond the file":
        con.execute("UPDATE refs SET row = 99 WHERE id = (SELECT MAX(id) FROM refs)")
    else:
        (g / storage["checkpoint"]).write_bytes((g / storage["checkpoint"]).read_bytes()[:50])
    con.close()
    before = disk_state(g)
    for args in (["labels", g], ["search", g, tiny_images[0]], ["enroll", g, "b", tiny_images[0]]):
        code, err = run(capsys, *args)
        assert code == 2 and one_line(err), (args, err)
    assert disk_state(g) == before


# ---- saves, readers, kills -----------------------------------------------------------------
WRITER = """
import sys, time, numpy as np
from pathlib import Path
from byakugan.index import Gallery, db, store
path, stop, n, churn = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "churn"
db.COMPACT_MIN = 4  # with churn, the vector file is compacted (replaced) every few saves
rng = np.random.default_rng(0)
saves = 0
while saves < n or not stop.exists():
    with store.locked(path):
        g = Gallery.open(path)
        v = rng.standard_normal((1, g.dim)).astype(np.float32)
        g.enroll("w", v / np.linalg.norm(v))
        if churn and len(g.references("w")) > 3:
            g.remove_reference(g.references("w")[0].id)
        g.save()
    saves += 1
print(saves)
"""


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF1,Flat"])
def test_readers_never_fail_while_a_writer_saves(model, tmp_path, factory):
    """Appends, removals and compactions (the vector file replaced; with HNSW, a checkpoint of the
    index written at each removal; with IVF, removals taken out of the checkpoint when read) while
    a reader opens the gallery again and again: every read succeeds and sees a whole saved state."""
    g = saved_gallery(model, tmp_path / "g")
    pad = 40 if factory.startswith("IVF") else 0  # IVF trains its list on 39 references at least
    if factory != "Flat":
        first = Gallery.open(g)
        if pad:
            v = np.random.default_rng(0).standard_normal((pad, first.dim)).astype(np.float32)
            first.enroll("pad", v / np.linalg.norm(v, axis=1, keepdims=True))
        first.reindex(factory)
        first.save()
    stop = tmp_path / "stop"
    writer = subprocess.Popen([PY, "-c", WRITER, str(g), str(stop), "300", "churn"], stdout=subprocess.PIPE, text=True)
    reads, failures, seen = 0, [], set()
    try:
        while reads < 3_000 or writer.poll() is None:
            try:
                got = Gallery.open(g)
                assert got.labels()["a"] == 3 and got.labels().get("w", 0) <= 3
                seen.add(max(r.id for r in got.references()))
            except GalleryError as exc:
                failures.append(str(exc))
            reads += 1
            if reads == 3_000:
                stop.touch()
            if reads > 200_000:
                break
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0 and int(out) >= 300
    assert reads >= 3_000 and not failures, failures[:3]
    assert len(seen) > 10  # the reads really happened during the saves
    final = Gallery.open(g)
    assert len(final) == 6 + pad and max(r.id for r in final.references()) == 2 + pad + int(out)
    assert final.vectors.factory == factory and len(list(g.glob("vectors.*.f32"))) == 1
    assert len(list(g.glob("index.*.faiss"))) == (factory != "Flat")


def test_kill_9_during_saves_loses_no_saved_reference(model, tmp_path):
    g = saved_gallery(model, tmp_path / "g")
    rng = np.random.default_rng(1)
    last = 3
    for _ in range(12):
        writer = subprocess.Popen([PY, "-c", WRITER, str(g), str(tmp_path / "never"), "1000000", "append"],
                                  stdout=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(1.0, 2.0)))  # past the imports, into the saves
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        now = Gallery.open(g)  # always opens: gallery.db names only complete vector files
        assert len(now) >= last and set(now.labels()) <= {"a", "w"}
        last = len(now)
    assert last > 3  # the writer did save between kills
    with store.locked(g):  # the next writer clears what the killed ones left
        pass
    assert not list(g.glob(".*.tmp-*")) and not list(g.glob("thumbs/.*.tmp-*"))


# ---- HTTP ----------------------------------------------------------------------------------
@pytest.fixture()
def client(model, tmp_path):
    return TestClient(create_app(saved_gallery(model, tmp_path / "g"), token="s3cret", max_bytes=50_000))


AUTH = {"Authorization": "Bearer s3cret"}


def test_chunked_upload_is_held_to_the_limit(client):
    def chunks():
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        yield boundary
        for _ in range(40):
            yield b"\0" * 4096
        yield b"\r\n--xyz--\r\n"

    r = client.post("/search", content=chunks(), headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and "limit of 50000 bytes" in r.json()["error"]


def test_schema_and_docs_need_the_token_and_errors_are_json(client):
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/docs").status_code == 401
    assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "byakugan"
    r = client.get("/no/such/route", headers=AUTH)
    assert r.status_code == 404 and "error" in r.json()
    r = client.put("/labels", headers=AUTH)
    assert r.status_code == 405 and "error" in r.json()


def test_a_label_with_a_slash_can_be_deleted(client, tiny_images):
    files = [("images", ("a.png", open(tiny_images[0], "rb"), "image/png"))]
    assert client.post("/enroll", data={"label": "a/b"}, files=files, headers=AUTH).status_code == 200
    r = client.delete("/labels/a%2Fb", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"label": "a/b", "removed": 1}
    assert client.delete("/labels/a/b", headers=AUTH).status_code == 404


def test_a_server_fault_is_json_500(model, tmp_path, monkeypatch):
    from byakugan.index.service import GalleryService

    c = TestClient(create_app(saved_gallery(model, tmp_path / "g")), raise_server_exceptions=False)
    monkeypatch.setattr(GalleryService, "labels", lambda self: 1 / 0)
    r = c.get("/labels")
    assert r.status_code == 500 and r.json()["error"].startswith("internal error (ZeroDivisionError)")


@given(label=st.text(max_size=120), body=st.binary(max_size=600), name=st.text(max_size=40))
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_enrol_requests_are_4xx_json_or_succeed(model, tmp_path_factory, label, body, name):
    c = TestClient(create_app(saved_gallery(model, tmp_path_factory.mktemp("fz") / "g")), raise_server_exceptions=False)
    r = c.post("/enroll", data={"label": label}, files=[("images", (name or "x", body, "image/png"))])
    assert r.status_code in (200, 400, 413, 422), (r.status_code, r.text)
    assert "error" in r.json() or r.status_code == 200


# ---- command line --------------------------------------------------------------------------
def test_options_may_stand_between_gallery_and_label(tmp_path, capsys, tiny_images):
    """The README's enrol example, options first: argparse alone stopped at them."""
    code, err = run(capsys, "enroll", tmp_path / "g", "--detector", "none", "--fallback", "whole", "red", *tiny_images[:2])
    assert code == 0, err
    assert Gallery.open(tmp_path / "g").labels() == {"red": 2}
    try:  # an option a command lacks points to that command's help
        code = main(["search", str(tmp_path / "g"), str(tiny_images[0]), "--all"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "byakugan search: error: unrecognized arguments: --all (see byakugan search -h)"]


def test_foreign_folders_are_refused_before_the_lock_touches_them(tmp_path, capsys, tiny_images):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    (work / ".draft.tmp-999999").write_text("someone else's")
    code, err = run(capsys, "enroll", work, "red", tiny_images[0])
    assert code == 2 and one_line(err) and "is not empty" in err
    assert sorted(p.name for p in work.iterdir()) == [".draft.tmp-999999", "notes.txt"]  # no lock, nothing removed
    # a first save that died leaves only gallery files: the folder is usable
    (tmp_path / "died" / "thumbs").mkdir(parents=True)
    (tmp_path / "died" / "thumbs" / "0.jpg").write_bytes(b"x")
    (tmp_path / "died" / ".index.000001.faiss.tmp-999999").write_bytes(b"x")
    code, err = run(capsys, "enroll", tmp_path / "died", "red", tiny_images[0])
    assert code == 0, err
    assert not list((tmp_path / "died").glob(".*.tmp-*"))


def test_a_first_enrolment_that_fails_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    code, err = run(capsys, "enroll", tmp_path / "new" / "g", "red", tmp_path / "bad.jpg")
    assert code == 2 and "gallery unchanged" in err
    assert not (tmp_path / "new" / "g").exists()  # no stray folder holding a .lock
    (tmp_path / "mine").mkdir()  # a folder that was there before the lock stays
    code, err = run(capsys, "enroll", tmp_path / "mine", "red", tmp_path / "bad.jpg")
    assert code == 2 and sorted(p.name for p in (tmp_path / "mine").iterdir()) == [store.LOCK_FILE]


def test_a_lock_whose_folder_went_away_while_waiting_is_taken_afresh(tmp_path):
    import fcntl
    import threading

    folder, order, inside, leave = tmp_path / "g", [], threading.Event(), threading.Event()

    def second():
        with store.locked(folder):
            order.append("in")
            inside.set()
            leave.wait(10)

    with store.locked(folder):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.3)  # the other waits on this .lock's inode, which goes with the folder
        order.append("out")
    assert inside.wait(10) and order == ["out", "in"]
    with open(folder / store.LOCK_FILE) as f:  # it made the folder again and holds the lock in it
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    leave.set()
    waiter.join(10)
    assert not folder.exists()  # nothing saved there either


def test_evaluate_refuses_unreadable_images(tmp_path, capsys, tiny_images):
    for cls in ("a", "b", "c"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(7):
            (tmp_path / "d" / cls / f"{i}.png").write_bytes(Path(tiny_images["abc".index(cls)]).read_bytes())
    (tmp_path / "d" / "a" / "bad.png").write_bytes(b"not a png")
    code, err = run(capsys, "evaluate", tmp_path / "d", "--trials", "1", "--unknown-fraction", "0")
    assert code == 2 and "bad.png: not an image" in err and "1 of 22 images could not be read" in err


@pytest.mark.parametrize("setting, why", [("grow_up", "expected KEY=VALUE"), ("=1", "expected KEY=VALUE"),
                                          ("grow_up=tall", "expected KEY=VALUE"),
                                          ("size=3", "detector anime-face: no setting 'size'; valid: cascade, grow, ")])
def test_evaluate_refuses_a_bad_detector_setting_in_one_line(tmp_path, capsys, tiny_images, setting, why):
    for cls in ("a", "b", "c"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        (tmp_path / "d" / cls / "0.png").write_bytes(Path(tiny_images["abc".index(cls)]).read_bytes())
    code, err = run(capsys, "evaluate", tmp_path / "d", "--detector", "anime-face", "--detector-setting", setting)
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("manifest", [b"[1, 2]", b'{"files": 5}', b'{"files": [1]}', b'{"files": {"a": 1}}'])
def test_malformed_bundle_manifests_are_one_line(tmp_path, manifest):
    import zipfile

    from byakugan.index.bundle import BundleError, load

    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        z.writestr("manifest.json", manifest)
    with pytest.raises(BundleError):
        load(tmp_path / "b.zip")


def test_joiners_stay_allowed_in_labels():
    assert check_label("a\u200db") == "a\u200db" and check_label("می\u200cخواهم")


def test_a_label_has_one_spelling():
    """e + combining accent (how macOS names folders) and the one character é are one label."""
    assert check_label("Re\u0301mi") == check_label("R\u00e9mi") == "R\u00e9mi"


def test_export_stopped_by_kill_leaves_no_temporary_folder(digit_gallery, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "byakugan.ui.cli", "export", str(digit_gallery), str(out / "b.zip")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob(".export-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the export finished before it could be stopped")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    # 128 + SIGTERM, after Ctrl-C's clean-up (rarely a library swallows the interrupt and the export
    # finishes: 0, with the bundle); killed outright (-15) it would leave its temporary folder
    assert proc.returncode in (143, 0), err
    assert [p.name for p in out.iterdir()] == ([] if proc.returncode else ["b.zip"])


def test_editing_opens_under_the_lock_and_saves_at_the_end(tmp_path):
    """index.editing: a Python program's edit as the CLI makes one (a CLI edit meanwhile waits, not refused)."""
    import threading

    from byakugan.index import GallerySettings, editing

    g = Gallery.create(GallerySettings({"name": "t", "fingerprint": "f", "dim": 4}, {"name": "none"}, 0.5), tmp_path / "g")
    g.enroll("a", np.eye(4, dtype=np.float32)[:1])
    g.save()
    inside, done = threading.Event(), []

    def other():  # a second editor while the first holds the lock: it waits, then edits the saved state
        inside.wait()
        with editing(tmp_path / "g") as h:
            h.enroll("c", np.eye(4, dtype=np.float32)[3:])
        done.append(True)

    t = threading.Thread(target=other)
    t.start()
    with editing(tmp_path / "g") as e:
        inside.set()
        time.sleep(0.3)
        assert not done  # still waiting for this edit's lock
        e.enroll("b", np.eye(4, dtype=np.float32)[1:3])
    t.join(30)
    assert done and Gallery.open(tmp_path / "g").labels() == {"a": 1, "b": 2, "c": 1}
    with pytest.raises(ValueError), editing(tmp_path / "g") as e:
        e.remove("a")
        raise ValueError("the edit failed")
    assert Gallery.open(tmp_path / "g").labels() == {"a": 1, "b": 2, "c": 1}  # nothing saved
