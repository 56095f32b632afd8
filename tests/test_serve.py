"""The HTTP API: every route and error through FastAPI's TestClient, then schemathesis."""

import io
import shutil

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from byakugan.index.export import export
from byakugan.ui.http import create_app


@pytest.fixture()
def gallery_copy(digit_gallery, tmp_path):
    return shutil.copytree(digit_gallery, tmp_path / "g")


def upload(path, name="q.jpg"):
    return {"image": (name, open(path, "rb"), "image/jpeg")}


def test_gallery_routes(gallery_copy, digits):
    c = TestClient(create_app(gallery_copy))
    assert c.get("/healthz").json() == {"status": "ok", "labels": 3, "references": 15, "writable": True}
    assert c.head("/healthz").status_code == 200
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warned of two operations with one id (GET and HEAD of one route)
        assert list(c.app.openapi()["paths"]["/healthz"]) == ["get"]
    assert c.get("/labels").json() == {"labels": {"0": 5, "3": 5, "7": 5}}
    r = c.post("/search?k=2", files=upload(digits["3"][0]))
    assert r.status_code == 200
    det = r.json()["detections"]
    assert len(det) == 1 and det[0]["match"]["label"] == "3" and det[0]["match"]["score"] > 0.999
    assert len(det[0]["hits"]) == 2
    files = [("images", (p.name, open(p, "rb"), "image/jpeg")) for p in digits["5"][:3]]
    r = c.post("/enroll", data={"label": "5"}, files=files)
    assert r.status_code == 200 and r.json()["labels"]["5"] == 3 and r.json()["warnings"] == []
    # What the CLI and the page warn of comes back too: the same picture twice, and one already enrolled
    again = digits["5"][4]
    r = c.post("/enroll", data={"label": "5"}, files=[("images", ("a.jpg", open(again, "rb"), "image/jpeg")),
                                                      ("images", ("b.jpg", open(again, "rb"), "image/jpeg")),
                                                      ("images", ("c.jpg", open(digits["5"][0], "rb"), "image/jpeg"))])
    said = r.json()["warnings"]
    assert r.status_code == 200 and r.json()["labels"]["5"] == 6 and len(said) == 2, said
    assert said[0].startswith("b.jpg: near-duplicate of a.jpg in the same upload") and \
        said[1].startswith("c.jpg: near-duplicate of reference "), said
    assert c.delete("/labels/0").json() == {"label": "0", "removed": 5}
    assert c.get("/labels").json() == {"labels": {"3": 5, "5": 6, "7": 5}}
    # Edits reach the disk: a new server sees them.
    assert TestClient(create_app(gallery_copy)).get("/labels").json()["labels"] == {"3": 5, "5": 6, "7": 5}


def test_errors_are_json_with_status_codes(gallery_copy, digits):
    c = TestClient(create_app(gallery_copy, max_bytes=20_000))
    r = c.post("/search", files={"image": ("notes.txt", io.BytesIO(b"plain text"), "text/plain")})
    assert r.status_code == 400 and r.json() == {"error": "notes.txt: not an image (format not recognised)"}
    r = c.post("/search", files={"image": ("big.jpg", io.BytesIO(b"\0" * 30_000), "image/jpeg")})
    assert r.status_code == 413 and "limit of 20000 bytes" in r.json()["error"]
    assert c.delete("/labels/nope").status_code == 404
    assert c.delete("/labels/nope").json() == {"error": "label 'nope': not in the gallery"}
    r = c.post("/search")  # no form at all
    assert r.status_code == 415 and r.json()["error"].startswith("Content-Type missing: ") and "'image'" in r.json()["error"]
    r = c.post("/search", files={"picture": ("a.jpg", io.BytesIO(b"x"), "image/jpeg")})  # a form without it
    assert r.status_code == 422 and r.json()["error"] == "body.image: required, and not empty"
    assert c.post("/search?k=0", files=upload(digits["3"][0])).status_code == 422
    r = c.post("/enroll", data={"label": "unknown"}, files=upload(digits["3"][0], "a.jpg") | {})
    assert r.status_code in (400, 422)
    r = c.post("/enroll", data={"label": "unknown"}, files=[("images", ("a.jpg", open(digits["3"][0], "rb"), "image/jpeg"))])
    assert r.status_code == 400 and "reserved" in r.json()["error"]
    assert c.get("/labels").json()["labels"] == {"0": 5, "3": 5, "7": 5}  # nothing changed


def test_bearer_token(gallery_copy):
    c = TestClient(create_app(gallery_copy, token="s3cret"))
    assert c.get("/healthz").status_code == 200  # for load balancers
    r = c.get("/labels")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert c.get("/labels", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/labels", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_bundle_is_read_only(digit_gallery, digits, tmp_path):
    from byakugan.index import Gallery

    b = export(Gallery.open(digit_gallery), tmp_path / "b.zip")
    c = TestClient(create_app(b))
    assert c.get("/healthz").json()["writable"] is False
    assert c.post("/search", files=upload(digits["7"][0])).json()["detections"][0]["match"]["label"] == "7"
    assert c.post("/enroll", data={"label": "x"}).status_code in (404, 405)
    assert c.delete("/labels/7").status_code in (404, 405)
    assert "/enroll" not in c.get("/openapi.json").json()["paths"]
    r = c.delete("/labels/7")  # a 405 names what a path takes: here nothing
    assert r.status_code == 405 and r.headers["allow"] == "" and "read-only" in r.json()["error"]
    r = c.get("/enroll")  # not "it takes POST": POST is refused too
    assert r.status_code == 405 and r.headers["allow"] == ""
    assert r.json()["error"] == "GET '/enroll': method not allowed; an exported bundle is read-only, and this path edits"


def test_schema_fuzz_finds_no_server_error(gallery_copy):
    """schemathesis generates requests for every operation from the OpenAPI schema; none may give a 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(gallery_copy))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/healthz", "/labels", "/search", "/enroll", "/labels/{label}",
                                              "/sequences", "/sequences/{name}"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=[not_a_server_error])

        check()


def test_reads_go_on_while_another_process_holds_the_gallery(gallery_copy, digits):
    """An enrolment waiting for the folder's lock (a CLI edit in another process) held the event
    loop and the service's own lock: /healthz and /search hung until the CLI was done."""
    import fcntl
    import threading

    with TestClient(create_app(gallery_copy)) as c, open(gallery_copy / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # stands in for `byakugan enroll` in another process
        files = [("images", ("a.jpg", open(digits["5"][0], "rb"), "image/jpeg"))]
        waiting = threading.Thread(target=lambda: c.post("/enroll", data={"label": "5"}, files=files), daemon=True)
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive()  # it waits for the lock ...
        answers = []
        reads = threading.Thread(target=lambda: answers.extend([c.get("/healthz").json()["labels"],
                                                                c.post("/search", files=upload(digits["3"][0])).status_code]),
                                 daemon=True)
        reads.start()
        reads.join(60)
        assert answers == [3, 200]  # ... and the reads are answered meanwhile
        fcntl.flock(lock, fcntl.LOCK_UN)
        waiting.join(60)
        assert not waiting.is_alive() and c.get("/labels").json()["labels"]["5"] == 1


def test_a_bad_watch_setting_is_a_json_error(gallery_copy):
    for value in ("0", "abc", "-1", "\u00b2", "9" * 5000):
        with TestClient(create_app(gallery_copy)).websocket_connect(f"/watch?embed_every={value}") as ws:
            error = ws.receive_json()["error"]
        assert f"embed_every {value[:20]!r}" in error or f"embed_every {value}" in error


def test_serve_stopped_by_kill_exits_143_after_its_clean_up(digit_gallery, tmp_path):
    """As every command (README: Stopping): a service manager's SIGTERM is told from a clean exit."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "byakugan.ui.cli", "serve", str(digit_gallery), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err
