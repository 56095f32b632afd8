"""`--store milvus://HOST:PORT`: a gallery on a Milvus server reached over TCP, not an embedded file.

Two servers, each started here in a process of its own:
- Milvus Lite's own gRPC server (`python -m milvus_lite server`): every test, restarts and a
  frozen server included;
- a Milvus standalone server (the PyPI package `milvus`, a dev dependency: Milvus 2.3's own
  binaries, with an embedded etcd and local storage instead of MinIO): the tests of answers,
  removals, reindexing and two processes, where Milvus's engine differs from Milvus Lite's (it
  reads at "Bounded" staleness unless asked for "Strong", and builds real HNSW and IVF indexes).
"""

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from byakugan.index import Gallery, GalleryError

from .conftest import unit_rows
from .test_milvus import D, answers, clustered, fill, settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A Milvus Lite gRPC server on localhost, keeping its data in one folder across restarts."""

    def __init__(self, data) -> None:
        self.data, self.port, self.proc = data, free_port(), None

    spec = property(lambda self: f"milvus://127.0.0.1:{self.port}")

    def start(self) -> "Server":
        self.proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data),
                                      "--host", "127.0.0.1", "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from pymilvus import MilvusClient

        deadline, last = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:  # an answer, not a listening port: on a loaded machine it listens a while before it answers
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                client = MilvusClient(uri=f"http://127.0.0.1:{self.port}", timeout=5, dedicated=True)
                try:
                    client.list_collections(timeout=5)
                finally:
                    client.close()
                return self
            except Exception as exc:
                assert self.proc.poll() is None, "the Milvus Lite server exited"
                last = exc
                time.sleep(0.2)
        raise AssertionError(f"the Milvus Lite server did not answer within 60 s: {last}")

    def freeze(self) -> None:
        """SIGSTOP, returning once every thread of it has stopped (a signal is delivered, not obeyed, at once)."""
        import signal

        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = []
            for stat in Path(f"/proc/{self.proc.pid}/task").glob("*/stat"):
                with contextlib.suppress(OSError):
                    states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            if states and all(s in "tT" for s in states):
                return
            time.sleep(0.05)
        raise AssertionError(f"the Milvus Lite server did not stop within 30 s: thread states {states}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Standalone(Server):
    """A Milvus standalone server (the `milvus` package's binaries), listening for gRPC on a free port."""

    def start(self) -> "Standalone":
        pytest.importorskip("milvus", reason="the `milvus` package (Milvus standalone for tests) is Linux x86-64 only")
        self.proc = subprocess.Popen([sys.executable, "-c", "import milvus; milvus.main()", "--data", str(self.data),
                                      "--proxy-port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        from pymilvus import MilvusClient

        deadline, last = time.monotonic() + 180, None
        try:
            while time.monotonic() < deadline:  # it listens before its coordinators are ready: wait for an answer
                # its embedded etcd takes the fixed ports 2379 and 2380, its metrics 9091: see its logs if busy
                assert self.proc.poll() is None, f"the Milvus standalone server exited (logs: {self.data}/logs)"
                try:
                    MilvusClient(uri=f"http://127.0.0.1:{self.port}", timeout=5).list_collections()
                    return self
                except Exception as exc:
                    last = exc
                    time.sleep(1)
            raise AssertionError(f"the Milvus standalone server did not answer within 180 s: {last}")
        except BaseException:
            self.stop()  # never leave it running (and holding etcd's ports) after a failed start
            raise

    def stop(self) -> None:
        import os
        import signal

        self.proc.send_signal(signal.SIGINT)  # the wrapper stops the milvus binary it started, then exits
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        binary = str(self.data / "bin" / "milvus")  # in a session of its own: found by its path if still there
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError, ValueError):
                if cmdline.read_bytes().split(b"\0")[0].decode() == binary:
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)


@pytest.fixture()
def server(tmp_path):
    s = Server(tmp_path / "milvus-data").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    s = Standalone(tmp_path_factory.mktemp("milvus-standalone")).start()
    yield s
    s.stop()


@pytest.fixture(params=["lite", "standalone"])
def any_server(request):
    return request.getfixturevalue("server" if request.param == "lite" else "standalone")


@pytest.fixture()
def forget_clients():
    """pymilvus clients are kept per address for the process; a restarted server needs new ones."""
    from byakugan.index import milvus_spec as milvus

    import os

    yield milvus._clients
    for _, handle in milvus._clients.values():
        if handle is not None:
            os.close(handle)
    milvus._clients.clear()


def test_server_gallery_answers_as_faiss_and_persists_removals(any_server, tmp_path, forget_clients):
    server = any_server
    x, labels = clustered(5, seed=1)
    faiss_g = Gallery.create(settings(), tmp_path / "faiss")
    srv = Gallery.create(settings(), tmp_path / "srv", store=server.spec)
    for g in (faiss_g, srv):
        fill(g, x, labels)
        g.save()
    q, _ = clustered(3, seed=2)
    want, want_s, want_ids = answers(faiss_g, q)
    got, got_s, got_ids = answers(srv, q)
    assert got == want and got_ids == want_ids
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    st = json.loads(__import__("sqlite3").connect(tmp_path / "srv" / "gallery.db")
                    .execute("SELECT value FROM settings WHERE key = 'storage'").fetchone()[0])
    assert st["uri"] == f"http://127.0.0.1:{server.port}" and st["collection"].startswith("byakugan_")
    assert not (tmp_path / "srv" / "milvus.db").exists()  # nothing of Milvus in the folder
    for g in (faiss_g, srv):
        g.remove("c1")
        g.rename("c2", "renamed")
        g.save()
    reopened = Gallery.open(tmp_path / "srv")
    assert reopened.vectors.spec == server.spec and len(reopened) == 55
    assert reopened.labels() == Gallery.open(tmp_path / "faiss").labels()
    assert answers(reopened, q)[0] == answers(faiss_g, q)[0]
    assert reopened.vectors._count() == 55  # deleted on the server, not only hidden
    reopened.reindex("HNSW16")  # a new collection on the server, indexed by HNSW; the old one retired
    reopened.save()
    reopened.save(tmp_path / "copy")  # saved elsewhere: a collection of its own, retiring none of this one's
    for folder in ("srv", "copy"):
        assert Gallery.open(tmp_path / folder).vectors.factory == "HNSW16"
        assert answers(Gallery.open(tmp_path / folder), q)[0] == answers(faiss_g, q)[0]


def test_two_processes_share_a_server_gallery(any_server, tiny_images, tmp_path, forget_clients):
    """What Milvus Lite's folder lock forbids: one process holds the gallery open while CLI commands,
    each a process of its own, enrol into it and search it (and see what the last one wrote)."""
    server = any_server
    g = tmp_path / "g"
    cli = [sys.executable, "-m", "byakugan.ui.cli"]
    made = subprocess.run([*cli, "enroll", str(g), "red", str(tiny_images[0]), "--store", server.spec],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    held = Gallery.open(g)  # this process keeps it open throughout
    assert held.labels() == {"red": 1}
    more = subprocess.run([*cli, "enroll", str(g), "green", str(tiny_images[1])], capture_output=True, text=True,
                          timeout=300)
    assert more.returncode == 0, more.stderr
    found = subprocess.run([*cli, "search", str(g), str(tiny_images[1]), "--json"], capture_output=True, text=True,
                           timeout=300)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["detections"][0]["match"]["nearest"] == "green"
    assert Gallery.open(g).labels() == {"red": 1, "green": 1}
    assert held.search(held.embeddings([0]), k=5)[0].labels[0][0] == "red"  # the open one still answers


def test_a_server_restart_keeps_the_gallery_for_open_and_new_processes(server, tmp_path, forget_clients):
    x, labels = clustered(4, seed=5)
    g = Gallery.create(settings(), tmp_path / "g", store=server.spec)
    fill(g, x, labels)
    g.save()
    q, _ = clustered(2, seed=6)
    want = answers(g, q)
    server.stop()
    server.start()
    held = answers(g, q)  # a long-lived process keeps answering: the released collection is loaded again
    assert held[0] == want[0] and held[2] == want[2]
    forget_clients.clear()
    again = Gallery.open(tmp_path / "g")
    got = answers(again, q)
    assert got[0] == want[0] and got[2] == want[2]
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


def test_a_server_that_went_away_is_one_line_and_keeps_the_gallery(server, tiny_images, tmp_path, forget_clients):
    g = Gallery.create(settings(), tmp_path / "g", store=server.spec)
    g.enroll("a", unit_rows(3, D, seed=1))
    g.save()
    server.stop()
    forget_clients.clear()
    with pytest.raises(GalleryError) as err:
        Gallery.open(tmp_path / "g")
    assert str(err.value).startswith(f"Milvus {server.spec}, collection byakugan_")
    assert "server unavailable" in str(err.value) and "\n" not in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "byakugan.ui.cli", "search", str(tmp_path / "g"), str(tiny_images[0])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "server unavailable" in proc.stderr
    server.start()
    forget_clients.clear()
    assert Gallery.open(tmp_path / "g").labels() == {"a": 3}


def test_a_server_that_stopped_answering_fails_a_call_in_its_time_limit(server, tmp_path, monkeypatch, forget_clients):
    """Frozen (SIGSTOP), not gone: without a limit per call pymilvus waited over a minute."""
    import signal

    from byakugan.index import milvus

    g = Gallery.create(settings(), tmp_path / "g", store=server.spec)
    g.enroll("a", unit_rows(3, D, seed=1))
    g.save()
    monkeypatch.setattr(milvus, "CALL_TIMEOUT", 2.0)
    server.freeze()
    try:
        start = time.monotonic()
        with pytest.raises(GalleryError, match=f"Milvus {server.spec}, collection .*: search failed"):
            g.search(unit_rows(1, D, seed=1), k=1)
        assert time.monotonic() - start < 10
    finally:
        server.proc.send_signal(signal.SIGCONT)
    monkeypatch.undo()  # the usual limit again: a server just woken answers what queued first
    assert g.search(unit_rows(1, D, seed=1), k=1)[0].labels[0][0] == "a"
