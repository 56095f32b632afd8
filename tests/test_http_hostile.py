"""The HTTP server against a hostile client, second pass (QA findings): every refusal a one-line
JSON error naming the thing and the reason, nothing changed; a /watch stream holds one detector."""

import shutil

import pytest
from fastapi.testclient import TestClient

from tests.conftest import disk_state
from byakugan.index import tracker as tracker_module
from byakugan.index.tracker import Renewed
from byakugan.index.errors import GalleryError
from byakugan.ui.http import create_app


@pytest.fixture()
def folder(digit_gallery, tmp_path):
    return shutil.copytree(digit_gallery, tmp_path / "g")


def image(digits, label="5", n=0):
    return digits[label][n].read_bytes()


def test_a_method_a_route_does_not_take_is_named_with_those_it_does(folder):
    c = TestClient(create_app(folder))
    r = c.get("/sequences/x")  # two routes share the path: both methods are named, not the first route's
    assert r.status_code == 405
    assert r.json() == {"error": "GET '/sequences/x': method not allowed; it takes DELETE, PUT"}
    assert r.headers["allow"] == "DELETE, PUT"
    r = c.patch("/labels")
    assert r.status_code == 405 and r.json()["error"].endswith("method not allowed; it takes GET")


def test_a_body_the_framework_cannot_parse_is_named_with_the_reason(folder):
    c = TestClient(create_app(folder))
    before = disk_state(folder)
    json_type = {"content-type": "application/json"}
    r = c.put("/sequences/s", content=b"[" * 100_000 + b"]" * 100_000, headers=json_type)
    assert r.status_code == 400 and r.json() == {"error": "body: could not be parsed (nested too deeply)"}
    r = c.put("/sequences/s", content=b'{"steps": 1' + b"0" * 5000 + b"}", headers=json_type)
    assert r.status_code == 400 and r.json()["error"].startswith("body: could not be parsed (Exceeds the limit")
    r = c.put("/sequences/s", content=b'{"steps": ["\xff"]}', headers=json_type)
    assert r.status_code in (400, 422) and r.json()["error"].startswith("body:")
    r = c.post("/search", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=abc"})
    assert r.status_code == 400
    assert r.json() == {"error": "body: not readable as multipart/form-data (Invalid multipart data)"}
    assert disk_state(folder) == before


def test_a_file_field_sent_as_text_says_so(folder):
    c = TestClient(create_app(folder))
    r = c.post("/search", data={"image": "not a file"}, files={"other": ("a", b"b")})
    assert r.status_code == 422
    assert r.json() == {"error": "body.image: expected a file (a form part with a filename), got a text field"}


def test_two_labels_in_one_enrolment_are_refused_not_one_dropped(folder, digits):
    c = TestClient(create_app(folder))
    before = disk_state(folder)
    r = c.post("/enroll", data={"label": ["p", "q"]}, files=[("images", ("5.jpg", image(digits)))])
    assert r.status_code == 422 and r.json() == {"error": "label: 2 sent; /enroll takes one label a request"}
    assert disk_state(folder) == before


def test_an_embed_every_too_large_is_told_the_range(folder):
    with TestClient(create_app(folder)).websocket_connect("/watch?embed_every=9999999") as ws:
        assert ws.receive_json() == {"error": "embed_every '9999999': must be a whole number from 1 to 999999"}


def counting(monkeypatch) -> dict:
    """Trackers open now (made, not closed) and the most open at once, over every stream."""
    seen = {"open": 0, "most": 0}
    make, close = tracker_module.Tracker.__init__, tracker_module.Tracker.close

    def made(self, *a, **kw):
        make(self, *a, **kw)
        seen["open"] += 1
        seen["most"] = max(seen["most"], seen["open"])

    def closed(self):
        seen["open"] -= 1
        close(self)

    monkeypatch.setattr(tracker_module.Tracker, "__init__", made)
    monkeypatch.setattr(tracker_module.Tracker, "close", closed)
    return seen


def test_a_stream_taking_over_after_an_edit_holds_one_detector(folder, digits, monkeypatch):
    """Another client's edit renews the stream's tracker: the old one's detector (a MediaPipe graph
    for hands) is closed before the new one is made, so --max-streams bounds the detectors."""
    seen = counting(monkeypatch)
    c = TestClient(create_app(folder))
    with c.websocket_connect("/watch?embed_every=1") as ws:
        ws.send_bytes(image(digits, "0"))
        assert ws.receive_json()["frame"] == 0
        for n in range(1, 4):  # each edit, by another client, renews the stream on its next frame
            assert c.put("/sequences/s", json={"steps": ["3", "7"][:: 1 - 2 * (n % 2)]}).status_code == 200
            ws.send_bytes(image(digits, "0"))
            assert ws.receive_json()["frame"] == n  # taken over: the stream goes on, not from 0
    assert seen == {"open": 0, "most": 1}


def test_a_take_over_that_fails_is_tried_again_with_the_old_tracks(folder, digits, monkeypatch):
    from byakugan.index.service import GalleryService

    seen = counting(monkeypatch)
    service, version, fail = GalleryService(folder), [1], [False]

    def make(_):
        if fail[0]:
            raise GalleryError("no tracker this time")
        return service.tracker()

    stream = Renewed(lambda: version[0], make)
    frame = digits["0"][0]
    assert stream.update(frame).frame == 0
    version[0], fail[0] = 2, True
    with pytest.raises(GalleryError):
        stream.update(frame)
    assert seen["open"] == 0  # the old detector closed; its tracks kept
    fail[0] = False
    assert stream.update(frame).frame == 1  # made again on the next frame, going on from the old one
    stream.close()
    stream.close()  # twice: closed once
    assert seen == {"open": 0, "most": 1}


def test_a_stream_cancelled_while_it_waits_still_closes_its_detector(folder, monkeypatch):
    """The server stopping (or its task cancelled) mid-stream: the tracker is closed all the same."""
    import anyio

    from byakugan.index.service import GalleryService
    from byakugan.ui.http_watch import follow

    class Waiting:  # a client that never sends a frame
        async def receive(self):
            await anyio.sleep_forever()

    seen = counting(monkeypatch)

    async def main():
        with anyio.move_on_after(1.0):
            await follow(Waiting(), GalleryService(folder), "1", 10**6, 60.0)

    anyio.run(main)
    assert seen == {"open": 0, "most": 1}


def test_enrol_takes_the_whole_picture_only_when_asked(tmp_path, tiny_images):
    """The refusal names `fallback 'whole'`; /enroll takes it as a form field, and nothing else."""
    from byakugan.index import Pipeline

    Pipeline.create(None, "anime-face").new_gallery(tmp_path / "g").save()
    c = TestClient(create_app(tmp_path / "g"))
    before = disk_state(tmp_path / "g")
    flat = ("flat.png", tiny_images[0].read_bytes())  # a field of one colour: no face in it
    r = c.post("/enroll", data={"label": "p"}, files=[("images", flat)])
    assert r.status_code == 400 and "fallback 'whole'" in r.json()["error"]
    r = c.post("/enroll", data={"label": "p", "fallback": "all"}, files=[("images", flat)])
    assert r.status_code == 422 and r.json()["error"].startswith("body.fallback:") and "'none' or 'whole'" in r.json()["error"]
    assert disk_state(tmp_path / "g") == before
    r = c.post("/enroll", data={"label": "p", "fallback": "whole"}, files=[("images", flat)])
    assert r.status_code == 200 and len(r.json()["ids"]) == 1 and r.json()["labels"] == {"p": 1}
