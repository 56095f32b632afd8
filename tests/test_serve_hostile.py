"""The server against a hostile client or a gallery changed from under it (QA findings)."""

import io
import shutil

import pytest

from fastapi.testclient import TestClient
from PIL import Image

from byakugan.index import Gallery, GalleryError, Pipeline
from byakugan.ui import guards
from byakugan.ui.http import create_app


def files(*paths):
    return [("images", (p.name, open(p, "rb"), "image/jpeg")) for p in paths]


def test_a_copy_put_in_the_folders_place_is_read_again_not_written_over(digit_gallery, digits, tmp_path):
    folder = shutil.copytree(digit_gallery, tmp_path / "g")
    c = TestClient(create_app(folder))
    copy = shutil.copytree(folder, tmp_path / "copy")  # the same generation as the folder
    assert c.post("/enroll", data={"label": "X"}, files=files(digits["5"][0])).status_code == 200
    pipe = Pipeline.for_gallery(g := Gallery.open(copy))
    pipe.enroll(g, "Y", [digits["5"][1]])
    g.save()  # one save each: the same generation number again
    held = Gallery.open(folder)
    folder.rename(tmp_path / "old")
    copy.rename(folder)
    assert c.get("/labels").json()["labels"] == {"0": 5, "3": 5, "7": 5, "Y": 1}  # what the folder holds now
    r = c.delete("/labels/X")
    assert r.status_code == 404 and r.json() == {"error": "label 'X': not in the gallery"}
    assert Gallery.open(folder).labels() == {"0": 5, "3": 5, "7": 5, "Y": 1}  # Y is not taken for X
    held.remove("0")  # a copy in Python, read before the swap, cannot save into the other state either
    with pytest.raises(GalleryError, match="another save changed it"):
        held.save()
    assert Gallery.open(folder).labels() == {"0": 5, "3": 5, "7": 5, "Y": 1}


def test_a_gallery_damaged_or_replaced_under_the_server_is_503(digit_gallery, tmp_path):
    folder = shutil.copytree(digit_gallery, tmp_path / "g")
    c = TestClient(create_app(folder))
    shutil.move(folder, tmp_path / "away")
    folder.write_text("a file where the folder was")
    r = c.get("/healthz")
    assert r.status_code == 503 and "was moved or removed" in r.json()["error"]
    folder.unlink()
    shutil.copytree(tmp_path / "away", folder)
    (folder / "gallery.db").write_bytes(b"not a database" * 100)
    r = c.get("/labels")
    assert r.status_code == 503 and "gallery.db is not a readable database" in r.json()["error"]


def test_a_label_that_shows_nothing_is_refused(digit_gallery, digits, tmp_path):
    c = TestClient(create_app(shutil.copytree(digit_gallery, tmp_path / "g")))
    for label in ("\u200d", "\u3164", "\u200c\u200d"):
        r = c.post("/enroll", data={"label": label}, files=files(digits["5"][0]))
        assert r.status_code == 400 and "shows nothing" in r.json()["error"], label
    assert c.post("/enroll", data={"label": "a\u200db"}, files=files(digits["5"][0])).status_code == 200
    accents = "e\u0301" * 60  # 120 characters as typed, 60 once NFC: a label of 60
    r = c.post("/enroll", data={"label": accents}, files=files(digits["5"][0]))
    assert r.status_code == 200 and r.json()["label"] == "\u00e9" * 60
    assert c.delete(f"/labels/{accents}").json() == {"label": accents, "removed": 1}
    r = c.post("/enroll", data={"label": "e\u0301" * 101}, files=files(digits["5"][0]))
    assert r.status_code == 400 and "longer than 100 characters" in r.json()["error"]


def test_a_removal_that_lost_a_race_is_404(digit_gallery, tmp_path, monkeypatch):
    from byakugan.index.service import GalleryService

    c = TestClient(create_app(shutil.copytree(digit_gallery, tmp_path / "g")))
    labels = GalleryService.labels
    monkeypatch.setattr(GalleryService, "labels", lambda self: {**labels(self), "gone": 1})  # seen before the lock
    r = c.delete("/labels/gone")
    assert r.status_code == 404 and r.json()["error"].startswith("label 'gone': not in gallery")
    monkeypatch.setattr(GalleryService, "sequences", lambda self: [type("S", (), {"name": "seq"})()])
    assert c.delete("/sequences/seq").status_code == 404


def test_the_token_is_asked_before_the_body_is_read(digit_gallery, tmp_path):
    c = TestClient(create_app(shutil.copytree(digit_gallery, tmp_path / "g"), token="s3cret"))
    broken = {"Content-Type": "multipart/form-data; boundary=XYZ"}
    r = c.post("/search", content=b"--nope", headers=broken)
    assert r.status_code == 401 and r.json() == {"error": "missing or wrong bearer token"}
    r = c.put("/sequences/x", content=b"{not json", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert c.get("/healthz").status_code == 200  # open, for a health check
    r = c.post("/search", content=b"--nope", headers=broken | {"Authorization": "bearer s3cret"})
    assert r.status_code == 400  # past the token, the body's own error


def test_an_enrolment_holds_a_bounded_number_of_pixels(digit_gallery, tmp_path, monkeypatch):
    c = TestClient(create_app(shutil.copytree(digit_gallery, tmp_path / "g")))
    big = io.BytesIO()
    Image.new("1", (2000, 2000)).save(big, "PNG", optimize=True)  # a few KB that decode to 4 megapixels
    assert len(big.getvalue()) < 20_000
    monkeypatch.setattr(guards, "MAX_REQUEST_PIXELS", 10_000_000)
    r = c.post("/enroll", data={"label": "big"},
               files=[("images", (f"b{i}.png", big.getvalue(), "image/png")) for i in range(3)])
    assert r.status_code == 413 and r.json()["error"].startswith("b2.png: the request's crops pass 10 megapixels")
    assert "big" not in c.get("/labels").json()["labels"]  # nothing enrolled
    r = c.post("/enroll", data={"label": "big"},
               files=[("images", (f"b{i}.png", big.getvalue(), "image/png")) for i in range(2)])
    assert r.status_code == 200 and r.json()["labels"]["big"] == 2


def test_a_file_name_sent_to_the_server_cannot_drive_the_terminal(digit_gallery, digits, tmp_path, capsys):
    from byakugan.ui.cli import main

    folder = shutil.copytree(digit_gallery, tmp_path / "g")
    c = TestClient(create_app(folder))
    evil = "\x1b[31mEVIL\x1b]0;title\x07\u202egpj.exe"
    r = c.post("/enroll", data={"label": "5"}, files=[("images", (evil, open(digits["5"][0], "rb"), "image/jpeg"))])
    assert r.status_code == 200
    capsys.readouterr()
    assert main(["search", str(folder), str(digits["5"][0])]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\u001b[31mEVIL" in out, out.splitlines()[:3]  # shown, escaped


def test_a_label_stored_before_the_rule_can_still_be_enrolled_into(digit_gallery, digits, tmp_path, capsys):
    import sqlite3

    from byakugan.ui.cli import main

    folder = shutil.copytree(digit_gallery, tmp_path / "g")
    with sqlite3.connect(folder / "gallery.db") as con:  # what a gallery saved before the rule may hold
        con.execute("UPDATE refs SET label = '\u3164' WHERE label = '7'")
    c = TestClient(create_app(folder))
    r = c.post("/enroll", data={"label": "\u3164"}, files=files(digits["7"][1]))
    assert r.status_code == 200 and r.json()["labels"]["\u3164"] == 6
    assert main(["enroll", str(folder), "\u3164", str(digits["7"][2])]) == 0
    assert main(["enroll", str(folder), "\u200d", str(digits["7"][2])]) == 2  # a new one is still refused
    assert "shows nothing" in capsys.readouterr().err
    assert Gallery.open(folder).labels() == {"0": 5, "3": 5, "\u3164": 7}


def test_a_request_the_routes_cannot_read_is_told_what_they_take(digit_gallery, digits, tmp_path):
    from byakugan.embedder.images import load_image

    folder = shutil.copytree(digit_gallery, tmp_path / "g")
    c = TestClient(create_app(folder))
    jpeg = digits["3"][5].read_bytes()
    cases = [  # (request, status, the error's words)
        (dict(url="/search?threshold=nan", files=[("image", ("q.jpg", jpeg, "image/jpeg"))]), 422,
         "query.threshold: Input should be a finite number"),
        (dict(url="/search?threshold=3.5", files=[("image", ("q.jpg", jpeg, "image/jpeg"))]), 422,
         "query.threshold: Input should be less than or equal to 3"),
        (dict(url="/search", content=b"x", headers={"content-type": "multipart/form-data"}), 400,
         "without a boundary: /search takes multipart/form-data, its pictures in file field 'image'"),
        (dict(url="/search", json={"image": "q.jpg"}), 415, "Content-Type 'application/json': /search takes"),
        (dict(url="/enroll", content=jpeg, headers={"content-type": "image/jpeg"}), 415, "file field 'images'"),
        (dict(url="/search", files=[("image", ("a.jpg", jpeg, "image/jpeg")), ("image", ("b.jpg", jpeg, "image/jpeg"))]),
         422, "image: 2 files sent; /search takes one picture a request"),
        (dict(url="/enroll", data={"label": ""}, files=files(digits["3"][6])), 422, "body.label: required, and not empty"),
    ]
    for request, status, words in cases:
        r = c.post(**request)
        assert r.status_code == status and words in r.json()["error"], (request["url"], r.text)
    # an adapted hand gallery's scores (and its own threshold) reach past 1: such a threshold is asked for as the CLI's
    r = c.post("/search?threshold=1.2", files=[("image", ("q.jpg", jpeg, "image/jpeg"))])
    assert r.status_code == 200 and r.json()["detections"][0]["match"]["threshold"] == 1.2, r.text
    r = c.put("/sequences/s", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].startswith("body: not valid JSON (")
    r = c.get("/nope")
    assert r.status_code == 404 and r.json()["error"].startswith("GET '/nope': no such route; the routes are ")
    assert "POST /search" in r.json()["error"] and "WS /watch" in r.json()["error"]
    for method in ("get", "post"):  # the WebSocket route asked over plain HTTP: said so, not "no such route"
        r = getattr(c, method)("/watch")
        assert r.status_code == 426 and r.headers["upgrade"] == "websocket", r.text
        assert r.json()["error"] == f"{method.upper()} /watch: takes a WebSocket (ws://…/watch), not an HTTP request"
    assert Gallery.open(folder).labels() == {"0": 5, "3": 5, "7": 5}  # nothing enrolled by any of them
    assert load_image(jpeg).size  # (the picture itself was fine)
    r = c.post("/search", files=[("image", ("q.jpg", jpeg, "image/jpeg"))])
    assert r.status_code == 200 and r.json()["detections"][0]["match"]["label"] == "3"
