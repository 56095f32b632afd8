"""What a hostile user still found in the CLI and the HTTP server: a sequence that exists without the
flag that replaces it named, a read-only gallery told as "cannot be created or locked", a repeated
query parameter read as one of its values, a WebSocket to no route refused with a bare 403, a JSON
route sent text told "steps: required", and a label told from an old one only by invisible characters."""

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.conftest import disk_state
from tests.test_stale_and_damaged import DIM, unit

from byakugan.index import Gallery, GalleryError
from byakugan.index.labels import check_label_in, find
from byakugan.index.settings import GallerySettings
from byakugan.ui.cli import main
from byakugan.ui.http import create_app

# The invisible characters a hostile label hides in "ab": each shows as nothing between the letters.
UNSEEN = {"ZWJ": "\u200d", "ZWSP": "\u200b", "ZWNJ": "\u200c", "WJ": "\u2060", "SHY": "\u00ad", "BOM": "\ufeff"}


@pytest.fixture()
def folder(tmp_path):
    """A gallery of made-up vectors: the CLI's sequence, rename and remove never load a model."""
    g = Gallery.create(GallerySettings({"name": "synthetic", "fingerprint": "-", "dim": DIM}, {"name": "none"}, 0.5),
                       tmp_path / "g")
    g.enroll("ab", unit(3, 1))
    g.enroll("paper", unit(3, 2))
    g.sequences.add("combo", ["ab", "paper"])
    g.save()
    return tmp_path / "g"


def one_line(capsys, *args) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("byakugan: error: "), err
    return err.strip()


# ---- 1. a sequence that exists ------------------------------------------------------------------

def test_adding_a_sequence_that_exists_names_the_flag_that_replaces_it(folder, capsys):
    before = disk_state(folder)
    assert one_line(capsys, "sequence", folder, "add", "combo", "paper") == (
        "byakugan: error: sequence 'combo': already exists (ab -> paper); add --replace to replace it, or remove it first")
    assert disk_state(folder) == before
    assert main(["sequence", str(folder), "add", "combo", "paper", "--replace"]) == 0
    assert Gallery.open(folder).sequences.get("combo").steps == ("paper",)


# ---- 2. a read-only gallery ---------------------------------------------------------------------

@contextlib.contextmanager
def unwritable(folder):
    """The folder made unwritable: by chmod, or for root (whom a chmod does not stop) by chattr +i."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot make a folder unwritable here (root, and no chattr on this filesystem)")
        undo = ["chattr", "-i", str(folder)]
    else:
        os.chmod(folder, 0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        yield folder
    finally:
        subprocess.run(undo, check=True)


def test_an_edit_of_a_read_only_gallery_says_it_is_read_only(folder, capsys, tiny_images):
    before = disk_state(folder)
    why = (f"byakugan: error: gallery {folder}: its folder is read-only (not writable by this user, or on a "
           "read-only disk), and an edit must write there; nothing was changed (edit a writable copy, or get "
           "write access to the folder)")
    with unwritable(folder):
        for edit in (["sequence", folder, "add", "fire", "ab"], ["rename", folder, "ab", "stone"],
                     ["remove", folder, "paper"], ["threshold", folder, "0.7"],
                     ["enroll", folder, "paper", tiny_images[0]]):
            assert one_line(capsys, *edit) == why, edit
    assert disk_state(folder) == before



def test_a_read_only_gallery_is_still_read(folder, capsys):
    """On read-only media SQLite cannot make the WAL index a reader needs: read as immutable."""
    want = Gallery.open(folder).search(unit(1, 1), k=2)
    with unwritable(folder):
        assert main(["labels", str(folder)]) == 0
        assert capsys.readouterr().out.split() == ["label", "references", "ab", "3", "paper", "3"]
        g = Gallery.open(folder)
        assert g.search(unit(1, 1), k=2) == want and g.sequences.get("combo").steps == ("ab", "paper")


def test_an_immutable_read_written_meanwhile_by_another_user_is_read_again(folder, monkeypatch):
    """Immutable, SQLite takes no lock: a write by someone who may write the folder is told by the
    file's stamp, and the read made again; one that never stops is said in one line."""
    from itertools import chain, count, repeat

    from byakugan.index import committed

    want = Gallery.open(folder).labels()
    stamps = chain([0, 1], repeat(2))  # the first read: written under it; the second: not
    calls = count()
    monkeypatch.setattr(committed, "still", lambda f: True)
    monkeypatch.setattr(committed, "stamp", lambda f: (next(calls), next(stamps))[1])
    assert Gallery.open(folder).labels() == want and next(calls) == 4  # read twice
    ticks = count()
    monkeypatch.setattr(committed, "stamp", lambda f: next(ticks))  # moves during every read
    with pytest.raises(GalleryError, match=r"gallery.db kept changing while it was read \(another user writing it\); try again$"):
        Gallery.open(folder)


def test_a_folder_named_with_uri_characters_opens_itself(folder, tmp_path, monkeypatch):
    """Its database is read through a file: URI; `?`, `#` and `%` must not cut the path short."""
    odd = folder.rename(tmp_path / "a?b#c%20d")
    monkeypatch.chdir(tmp_path)
    assert Gallery.open("a?b#c%20d").labels() == {"ab": 3, "paper": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd.name]  # no stray database named "a"

# ---- 3-5. the HTTP server -----------------------------------------------------------------------

@pytest.fixture()
def client(digit_gallery, tmp_path):
    path = shutil.copytree(digit_gallery, tmp_path / "g")
    return TestClient(create_app(path)), path


def test_a_query_parameter_given_twice_is_refused_not_one_read(client, digits):
    c, path = client
    image = {"image": ("q.jpg", digits["3"][5].read_bytes())}
    for query, name in (("k=1&k=2", "k"), ("threshold=0.1&threshold=0.9", "threshold"), ("k=3&threshold=0&k=3", "k")):
        r = c.post(f"/search?{query}", files=image)
        assert r.status_code == 422 and r.json() == {"error": f"query.{name}: given 2 times; give it once"}, query
    r = c.post("/search?k=2&threshold=0.1", files=image)
    assert r.status_code == 200 and len(r.json()["detections"][0]["hits"]) == 2
    with c.websocket_connect("/watch?embed_every=1&embed_every=5") as ws:
        assert ws.receive_json() == {"error": "query.embed_every: given 2 times; give it once"}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008


def test_a_query_parameter_no_route_takes_is_refused_not_ignored(client, digits):
    c, path = client
    image = {"image": ("q.jpg", digits["3"][5].read_bytes())}
    r = c.post("/search?kk=2", files=image)  # a typo of k: it would search for 5, unsaid
    assert r.status_code == 422 and r.json() == {"error": "query parameter 'kk': not one POST /search takes; it takes k, threshold"}
    for method, url, where in (("GET", "/labels?x=1", "GET /labels"), ("GET", "/sequences?all", "GET /sequences"),
                               ("DELETE", "/labels/3?force=1", "DELETE /labels/{label}")):
        r = c.request(method, url)
        assert r.status_code == 422 and r.json()["error"].endswith(f"not one {where} takes; it takes none"), url
    r = c.post("/enroll?label=3", data={"label": "3"}, files={"images": ("q.jpg", digits["3"][5].read_bytes())})
    assert r.status_code == 422 and "not one POST /enroll takes" in r.json()["error"]
    assert c.get("/labels").json()["labels"]["3"] == 5  # nothing enrolled
    assert c.get("/healthz?probe=1").status_code == 200  # a load balancer's own parameters are let be
    with c.websocket_connect("/watch?embed_evry=2") as ws:
        assert ws.receive_json() == {"error": "query parameter 'embed_evry': not one WS /watch takes; it takes embed_every, token"}


def test_a_read_only_gallery_is_served_and_says_it_cannot_be_written(client, digits):
    c, path = client
    image = {"image": ("q.jpg", digits["3"][5].read_bytes())}
    want = c.post("/search", files=image).json()
    assert c.get("/healthz").json()["writable"] is True
    with unwritable(path):
        assert c.get("/healthz").json()["writable"] is False
        assert TestClient(create_app(path)).post("/search", files=image).json() == want
        r = c.post("/enroll", data={"label": "x"}, files={"images": ("q.jpg", digits["3"][5].read_bytes())})
        assert r.status_code == 409 and "its folder is read-only" in r.json()["error"]


def test_a_websocket_to_no_route_is_told_the_route_there_is(client, digit_gallery):
    c, _ = client
    for path in ("/nope", "/watch/", "/search"):
        with c.websocket_connect(path) as ws:
            assert ws.receive_json() == {"error": f"WS '{path}': no such route; the WebSocket route is /watch"}
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert (closed.value.code, closed.value.reason) == (1008, "no such route; the WebSocket route is /watch")
    assert c.get("/nope").status_code == 404 and c.get("/labels").status_code == 200  # HTTP as it was
    guarded = TestClient(create_app(digit_gallery, token="s3cret"))  # without the token, no route is named
    with guarded.websocket_connect("/nope") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (1008, "missing or wrong bearer token")
    with guarded.websocket_connect("/nope?token=s3cret") as ws:
        assert "no such route" in ws.receive_json()["error"]


def test_a_json_route_sent_another_content_type_names_the_one_it_takes(client):
    c, path = client
    before = disk_state(path)
    body = b'{"steps": ["0", "3"]}'
    for headers, what in (({"content-type": "text/plain"}, "Content-Type 'text/plain'"),
                          ({"content-type": "application/x-www-form-urlencoded"},
                           "Content-Type 'application/x-www-form-urlencoded'"), ({}, "Content-Type missing")):
        r = c.put("/sequences/s", content=body, headers=headers)
        assert r.status_code == 415 and r.json() == {
            "error": f"{what}: PUT '/sequences/s' takes application/json, {{\"steps\": [label, ...]}}"}, headers
    assert disk_state(path) == before
    for kind in ("application/json; charset=utf-8", "application/merge-patch+json"):  # what the framework reads as JSON
        r = c.put("/sequences/s", content=body, headers={"content-type": kind})
        assert r.status_code == 200 and r.json() == {"name": "s", "steps": ["0", "3"]}, kind

    before = disk_state(path)
    for body, key in ((b'{"steps": ["0"], "steps": ["0", "3"]}', "steps"), (b'{"steps": ["0"], "x": {"a": 1, "a": 2}}', "a")):
        r = c.put("/sequences/t", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json() == {"error": f"body: key {key!r} given twice in one object; give it once"}
    r = c.put("/sequences/t", headers={"content-type": "application/json"})  # curl -X PUT without -d: no body
    assert r.status_code == 422 and r.json() == {"error": "body.steps: required, and not empty"}
    assert disk_state(path) == before

# ---- 6. labels told apart only by invisible characters ------------------------------------------

@pytest.mark.parametrize("name", UNSEEN)
def test_a_label_told_from_another_only_by_invisible_characters_is_refused(folder, capsys, name):
    hidden = f"a{UNSEEN[name]}b"
    code = f"U+{ord(UNSEEN[name]):04X}"
    g = Gallery.open(folder)
    with pytest.raises(GalleryError, match=re.escape(f"looks like 'ab', already there, differing only by invisible characters ({code})")):
        g.enroll(hidden, unit(1, 3))
    with pytest.raises(GalleryError, match="sequence name .* looks like 'combo'"):
        g.sequences.add(f"com{UNSEEN[name]}bo", ["ab"])
    before = disk_state(folder)
    line = one_line(capsys, "rename", folder, "paper", hidden)  # refused by the rule that comes first
    assert (f"looks like 'ab', already there, differing only by invisible characters ({code})" if name in ("ZWJ", "ZWNJ")
            else "must not contain control or invisible formatting characters") in line
    line = one_line(capsys, "remove", folder, hidden)  # a name that may mean either removes nothing
    assert "looks like 'ab'" in line
    assert disk_state(folder) == before
    # The other way round: a plain label beside a stored one that holds a joiner.
    g.enroll("x\u200dy", unit(1, 4))
    with pytest.raises(GalleryError, match=r"'xy': looks like 'x\\u200dy'"):
        g.enroll("xy", unit(1, 5))
    assert g.rename("x\u200dy", "xy") == 1 and "xy" in g.labels()  # what the message invites: it is itself


def test_a_gallery_holding_labels_told_apart_only_by_invisible_characters_still_opens(folder, capsys):
    g = Gallery.open(folder)
    g.enroll("spare", unit(2, 6))
    g.save()
    with sqlite3.connect(folder / "gallery.db") as con:  # what a gallery saved before the rule may hold
        con.execute("UPDATE refs SET label = 'a\u200db' WHERE label = 'paper'")
        con.execute("UPDATE refs SET label = 'a\u2060b' WHERE label = 'spare'")
    g = Gallery.open(folder)
    assert g.labels() == {"ab": 3, "a\u200db": 3, "a\u2060b": 2}
    assert find("ab", g.labels()) == "ab" and find("a\u200db", g.labels()) == "a\u200db"  # each named exactly
    assert check_label_in("a\u200db", g.labels()) == "a\u200db"
    assert main(["labels", str(folder)]) == 0
    assert "a\\u2060b" in capsys.readouterr().out  # shown escaped, told from "ab"
    g.enroll("a\u200db", unit(1, 7))  # more references for an old one, named as stored
    g.save()
    assert Gallery.open(folder).labels()["a\u200db"] == 4


def test_the_servers_edit_of_a_read_only_gallery_says_it_is_read_only(client):
    c, path = client
    before = disk_state(path)
    with unwritable(path):
        r = c.delete("/labels/3")
    assert r.status_code == 409 and "its folder is read-only" in r.json()["error"], r.text
    assert disk_state(path) == before and c.get("/labels").json()["labels"]["3"] == 5


def test_a_fixed_threshold_and_the_labels_are_read_without_the_model(folder, capsys):
    """Its share of strangers needs the model (a calibration); a fixed threshold does not."""
    import json

    assert main(["threshold", str(folder), "0.5"]) == 0  # fixed (setting one needs no model either)
    capsys.readouterr()
    assert main(["threshold", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "0.5" and err == ""  # the model 'synthetic' cannot be loaded: nothing more said
    assert main(["labels", str(folder), "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["threshold"] == 0.5 and said["strangers_passing"] is None and said["labels"] == {"ab": 3, "paper": 3}


def test_a_fault_of_the_vector_store_is_503_not_the_requests_400(client, monkeypatch):
    from byakugan.index import service
    from byakugan.index.errors import StoreError

    c, path = client

    def refused(self, *a, **kw):
        raise StoreError("Milvus milvus-lite, collection gallery_x: flush failed: Operation not permitted")

    monkeypatch.setattr(service.GalleryService, "remove", refused)
    r = c.delete("/labels/3")
    assert r.status_code == 503 and "flush failed" in r.json()["error"], r.text
