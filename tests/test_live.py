"""Recognition over time on real hands: test videos made from held-back asl-signs images (each seal
held for a second, a few frames of another class between), run through `byakugan watch`, the
Python tracker and the server's WebSocket route."""

import io
import json
import random
import re

import numpy as np
import pytest
from PIL import Image

from byakugan.ui.cli import main
from tests.videos import frame_of, performance, write_video

SEALS, BETWEEN = ["a", "b", "c"], "l"


@pytest.fixture(scope="module")
def stills(datasets):
    """asl-signs: 5 images of each class to enrol, the rest held back for the videos."""
    rng = random.Random(0)
    out = {}
    for c in SEALS + [BETWEEN]:
        files = sorted((datasets / "asl-signs" / c).glob("*.jpg"))
        rng.shuffle(files)
        out[c] = files
    return out


@pytest.fixture(scope="module")
def hand_gallery(stills, tmp_path_factory):
    from byakugan.index import Pipeline

    path = tmp_path_factory.mktemp("live") / "g"
    pipe = Pipeline.create(None, "hand")
    g = pipe.new_gallery(path)
    for c, files in stills.items():
        pipe.enroll(g, c, files[:5], fallback="whole")
    g.sequences.add("abc", SEALS)
    g.save()
    return path


@pytest.fixture(scope="module")
def videos(stills, tmp_path_factory):
    held = {c: files[5:] for c, files in stills.items()}
    d = tmp_path_factory.mktemp("videos")
    return {
        "abc": write_video(d / "abc.avi", performance(SEALS, held, BETWEEN)),
        "cba": write_video(d / "cba.avi", performance(SEALS[::-1], held, BETWEEN)),
        "empty": write_video(d / "empty.avi", [(None, 30)]),
    }


def watch_json(capsys, *args):
    assert main(["watch", *map(str, args), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [x for x in lines if "frame" in x], [x for x in lines if x.get("event")]


def test_watch_fires_a_performed_sequence_exactly_once(hand_gallery, videos, capsys):
    frames, events = watch_json(capsys, hand_gallery, videos["abc"])
    assert [e["name"] for e in events] == ["abc"]
    assert len(frames) == 15 * 3 + 3 * 2
    labels = [tr["label"] for f in frames for tr in f["tracks"]]
    assert {"a", "b", "c"} <= set(labels)
    # The 3 frames of another class between seals never become the steady label.
    assert "l" not in labels
    assert events[0]["t"] >= 2.0 and set(frames[0]) == {"t", "frame", "tracks"}
    assert set(frames[-1]["tracks"][0]) == {"id", "box", "label", "score", "raw", "confidence"}
    steady = [tr for f in frames for tr in f["tracks"] if tr["label"]]
    assert steady and all(0 <= tr["confidence"] <= 1 for tr in steady)  # the score on the gallery's 0-1 scale


def test_the_same_frames_in_another_order_or_no_hands_fire_nothing(hand_gallery, videos, capsys):
    frames, events = watch_json(capsys, hand_gallery, videos["cba"])
    assert events == [] and {"a", "c"} <= {tr["label"] for f in frames for tr in f["tracks"]}
    frames, events = watch_json(capsys, hand_gallery, videos["empty"])
    assert events == [] and all(f["tracks"] == [] for f in frames) and len(frames) == 30


def test_watch_reads_as_lines_and_writes_an_annotated_video(hand_gallery, videos, capsys, tmp_path):
    import cv2

    out = tmp_path / "annotated.mp4"
    assert main(["watch", str(hand_gallery), str(videos["abc"]), "--out", str(out), "--embed-every", "2"]) == 0
    text = capsys.readouterr().out
    assert "track 0: a (" in text and "sequence 'abc'" in text
    cap = cv2.VideoCapture(str(out))
    n, drawn = 0, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        drawn += int(((frame[:, :, 1] > 180) & (frame[:, :, 0] < 120) & (frame[:, :, 2] < 120)).sum() > 200)  # green box
    assert n == 51 and drawn > 30
    assert not list(tmp_path.glob(".*part*"))


@pytest.mark.parametrize("source, message", [("missing.mp4", "no such file"), ("{text}", "cannot be opened"),
                                             ("{empty}", "cannot be opened|no frame")])
def test_a_bad_video_is_one_line_and_exit_2(hand_gallery, tmp_path, capsys, source, message):
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    source = source.format(text=tmp_path / "text.mp4", empty=tmp_path / "empty.mp4")
    assert main(["watch", str(hand_gallery), source]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("byakugan: error: video ") and re.search(message, err[0])


def test_watch_refuses_to_write_over_the_video_it_reads(hand_gallery, videos, tmp_path, capsys):
    import shutil

    source = shutil.copy(videos["abc"], tmp_path / "in.avi")
    before = source.read_bytes()
    assert main(["watch", str(hand_gallery), str(source), "--out", str(source)]) == 2
    assert "is the video being read" in capsys.readouterr().err and source.read_bytes() == before
    assert main(["watch", str(hand_gallery), "\u00b2"]) == 2  # a digit to Python, not a camera number
    assert "no such file" in capsys.readouterr().err
    kept = tmp_path / "kept.avi"
    kept.write_bytes(b"a video someone made")
    assert main(["watch", str(hand_gallery), str(source), "--out", str(kept)]) == 2
    assert "exists; add --overwrite to replace it" in capsys.readouterr().err and kept.read_bytes() == b"a video someone made"
    assert main(["watch", str(hand_gallery), str(source), "--out", f"{tmp_path / 'new.avi'}/"]) == 2
    assert "names a folder" in capsys.readouterr().err and not (tmp_path / "new.avi").exists()
    assert main(["watch", str(hand_gallery), str(source), "--out", str(kept), "--overwrite", "--max-frames", "2"]) == 0
    assert kept.read_bytes()[:4] == b"RIFF"


def test_watch_stopped_by_kill_keeps_the_video_so_far_and_no_temporary_file(hand_gallery, tmp_path):
    import signal
    import subprocess
    import sys

    source = write_video(tmp_path / "long.avi", [(None, 600)], fps=15.0, size=(160, 120))
    out = tmp_path / "so-far.avi"
    proc = subprocess.Popen([sys.executable, "-m", "byakugan.ui.cli", "watch", str(hand_gallery), str(source), "--json",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert '"frame": 0' in proc.stdout.readline() and '"frame": 1' in proc.stdout.readline()  # running, writing
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert out.read_bytes()[:4] == b"RIFF" and not list(tmp_path.glob(".*part*"))


def test_a_video_that_could_not_be_written_is_an_error_not_a_success(hand_gallery, tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    import cv2

    source = write_video(tmp_path / "v.avi", [(None, 60)], fps=15.0, size=(160, 120))
    out = tmp_path / "w.avi"
    real = cv2.VideoWriter

    class Full:  # what a full disk gives: frames handed over, nothing stored, no word of it
        def __init__(self, path, *args):
            self.inner = real(path, *args)

        def isOpened(self):
            return self.inner.isOpened()

        def write(self, frame):
            pass

        def release(self):
            self.inner.release()

    monkeypatch.setattr(cv2, "VideoWriter", Full)
    assert main(["watch", str(hand_gallery), str(source), "--out", str(out)]) == 1
    assert f"error: {out}: the video could not be written, 0 of its 60 frames read back (a full disk?); nothing was kept" \
        in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*part*"))
    monkeypatch.undo()
    # The reader of the lines leaving (`| head -1`) keeps the video so far, as Ctrl-C does.
    shell = f"{sys.executable} -m byakugan.ui.cli watch {hand_gallery} {source} --json --out {out} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=300)
    assert '"frame": 0' in done.stdout and out.read_bytes()[:4] == b"RIFF", done.stderr[-500:]
    assert not list(tmp_path.glob(".*part*"))


def test_watch_warns_of_a_sequence_whose_label_was_removed(hand_gallery, videos, capsys, tmp_path):
    import shutil

    from byakugan.index import Gallery

    folder = shutil.copytree(hand_gallery, tmp_path / "g")
    g = Gallery.open(folder)
    g.remove("b")
    g.save()
    assert main(["watch", str(folder), str(videos["abc"]), "--max-frames", "2"]) == 0
    err = capsys.readouterr().err
    assert "byakugan: warning: sequence 'abc' cannot fire: 'b' no longer enrolled" in err


def test_watch_shows_progress_on_a_terminal(hand_gallery, tmp_path, capsys, monkeypatch):
    import sys

    from byakugan.ui.cli import live

    source = write_video(tmp_path / "v.avi", [(None, 3)], fps=15.0, size=(160, 120))  # no hand: no other line
    monkeypatch.setattr(live, "PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["watch", str(hand_gallery), str(source)]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("byakugan: ") and "frames (" in x]
    assert [x.split(" frames (")[0] for x in lines] == ["byakugan: 1", "byakugan: 2", "byakugan: 3"]


def test_a_video_cut_short_is_read_to_its_end_and_said_to_be_short(tmp_path):
    from byakugan.ui import video

    whole = write_video(tmp_path / "v.avi", [(None, 40)], fps=15.0, size=(64, 48))
    (cut := tmp_path / "cut.avi").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    said = []
    frames, _ = video.read(str(whole), warn=said.append)
    assert len(list(frames)) == 40 and said == []
    frames, _ = video.read(str(cut), warn=said.append)
    n = len(list(frames))
    assert 0 < n < 39 and said == [f"video {cut}: read {n} of the 40 frames its header lists (cut short or damaged?)"]
    frames, _ = video.read(str(whole), max_frames=5, warn=said.append)  # stopped by the caller: nothing to say
    assert len(list(frames)) == 5 and len(said) == 1


def test_a_frame_too_large_is_named_by_its_video_and_number(hand_gallery, tmp_path, capsys, monkeypatch):
    from byakugan.embedder.images import load_image
    from byakugan.index import tracker

    source = write_video(tmp_path / "v.avi", [(None, 3)], fps=15.0, size=(160, 120))
    monkeypatch.setattr(tracker, "load_image", lambda frame: load_image(frame, max_pixels=100))
    assert main(["watch", str(hand_gallery), str(source)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"byakugan: error: video {source}: frame 0: image too large") and len(err) == 1


def test_a_slow_video_keeps_its_own_clock(tmp_path, monkeypatch):
    """A frame every 2 seconds: steps 6 s apart must not look 0.2 s apart (sequences would fire)."""
    from byakugan.ui import video

    frames, fps = video.read(str(write_video(tmp_path / "slow.avi", [(None, 4)], fps=0.5, size=(64, 48))))
    assert fps == 0.5 and [f.t for f in frames] == [0.0, 2.0, 4.0, 6.0]

    import cv2

    real = cv2.VideoCapture

    class Fast:  # a header that gives 5000 frames/s (OpenCV writes at most 600)
        def __init__(self, *a):
            self.inner = real(*a)

        def get(self, prop):
            return 5000.0 if prop == cv2.CAP_PROP_FPS else self.inner.get(prop)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(cv2, "VideoCapture", Fast)
    said = []  # a rate no video has is a header that does not say: timed at 30 frames/s, and said so
    frames, fps = video.read(str(slow := tmp_path / "slow.avi"), warn=said.append)
    assert fps == 30.0 and said == [f"video {slow}: its header gives 5000 frames/s, which no video has; timed at 30 frames/s"]


def test_sequence_commands(hand_gallery, capsys, tmp_path):
    import shutil

    g = shutil.copytree(hand_gallery, tmp_path / "g")
    assert main(["sequence", str(g), "add", "summon", "a", "b", "a"]) == 0
    assert main(["sequence", str(g), "add", "bad", "a", "zebra"]) == 2
    assert "step 'zebra' is not an enrolled label" in capsys.readouterr().err
    assert main(["sequence", str(g), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["sequences"]
    assert [s["name"] for s in listed] == ["abc", "summon"] and listed[1]["steps"] == ["a", "b", "a"]
    assert main(["sequence", str(g), "add", "long", *["a", "b"] * 32]) == 0
    capsys.readouterr()
    assert main(["sequence", str(g), "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert max(map(len, rows)) < 100 and any(r.startswith("long") and "a b a b" in r and "…" in r for r in rows)
    assert main(["sequence", str(g), "remove", "summon"]) == 0
    assert main(["sequence", str(g), "remove", "summon"]) == 2


def test_bundle_carries_sequences_and_tracks(hand_gallery, stills, tmp_path):
    from byakugan.index import bundle
    from byakugan.index.export import export
    from byakugan.index.gallery import Gallery

    out = export(Gallery.open(hand_gallery), tmp_path / "b.zip")
    b = bundle.load(out)
    assert [(s.name, s.steps) for s in b.gallery.sequences] == [("abc", tuple(SEALS))]
    tracker = b.tracker()
    frame = np.ascontiguousarray(frame_of(stills["b"][7])[:, :, ::-1])
    labels = [tracker.update(frame).tracks[0].label for _ in range(7)]  # votes on frames 0, 3 and 6
    assert labels[-1] == "b"


def jpeg(bgr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_websocket_takes_jpeg_frames_and_answers_like_watch(hand_gallery, stills, tmp_path, monkeypatch):
    import shutil

    from fastapi.testclient import TestClient

    from byakugan.ui import http
    from byakugan.ui.http import create_app

    held = {c: files[5:] for c, files in stills.items()}
    frames = [jpeg(frame_of(img)) for img, n in performance(SEALS, held, BETWEEN, fps=5, gap_frames=1)
              for _ in range(n)]
    client = TestClient(create_app(shutil.copytree(hand_gallery, tmp_path / "g"), token="s3cret"))
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/watch") as ws:
            ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (1008, "missing or wrong bearer token")
    answers = []
    with client.websocket_connect("/watch?token=s3cret&embed_every=1") as ws:  # 5 frames/s: every one votes
        ws.send_bytes(b"not an image")
        assert "error" in ws.receive_json()
        ws.send_text("{oops")
        assert "expected" in ws.receive_json()["error"]
        for hostile in ("[" * 100_000, '{"t": 1' + "0" * 400 + "}", '{"t": NaN}', '{"t": -5}', '{"t": 1, "t": 2}'):
            ws.send_text(hostile)
            assert "expected" in ws.receive_json()["error"]  # answered; the stream goes on
        for i, data in enumerate(frames):
            if i == len(frames) - 1:
                ws.send_text(json.dumps({"t": 0}))  # back in time: refused, the stream goes on
            if i == len(frames) * 2 // 3:  # an edit while "abc" is under way: the stream goes on with it
                while sum("frame" in a for a in answers) < i:  # every frame so far tracked: the edit comes after them
                    answers.append(ws.receive_json())
                assert any(tr["label"] == "b" for a in answers for tr in a.get("tracks", []))  # a, b done; c to come
                edit = client.put("/sequences/other", json={"steps": ["c", "b"]}, headers={"Authorization": "Bearer s3cret"})
                assert edit.status_code == 200, edit.text
            ws.send_text(json.dumps({"t": i / 5}))
            ws.send_bytes(data)
        while sum("frame" in a for a in answers) < len(frames):
            answers.append(ws.receive_json())
    assert sum("times must not go back" in a.get("error", "") for a in answers) == 1
    events = [a for a in answers if a.get("event")]
    assert [e["name"] for e in events] == ["abc"] and events[0]["t"] > 1.0
    assert answers[0]["frame"] == 0 and answers[0]["tracks"][0]["raw"] == "a"
    assert [a["frame"] for a in answers if "frame" in a] == list(range(len(frames)))  # not counted again from 0
    limited = TestClient(create_app(tmp_path / "g", max_streams=1))
    with limited.websocket_connect("/watch") as first:
        with limited.websocket_connect("/watch") as second:
            assert "this server's limit (--max-streams)" in second.receive_json()["error"]
        first.send_bytes(data)
        assert "frame" in first.receive_json()
    with limited.websocket_connect("/watch") as again:  # the first one closed: room again
        again.send_bytes(data)
        assert "frame" in again.receive_json()
    monkeypatch.setattr(http, "WATCH_IDLE_SECONDS", 0.5)
    with limited.websocket_connect("/watch") as idle:  # sends nothing: closed, its place freed
        assert "nothing received for 0.5 s" in idle.receive_json()["error"]
    with limited.websocket_connect("/watch") as after:
        after.send_bytes(data)
        assert "frame" in after.receive_json()
    auth = {"Authorization": "Bearer s3cret"}
    assert client.get("/sequences", headers=auth).json() == {"sequences": {"abc": SEALS, "other": ["c", "b"]}, "missing": {}}
    assert client.delete("/labels/c", headers=auth).status_code == 200
    assert client.get("/sequences", headers=auth).json()["missing"] == {"abc": ["c"], "other": ["c"]}


def test_onnx_twin_matches_torch_and_is_exported_once(model, tmp_path, monkeypatch, tiny_images):
    from byakugan.embedder.embedding import runtime

    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "cache"))
    twin = runtime.onnx_embedder(model)
    assert twin.fingerprint() == model.fingerprint() and twin.dim == model.dim
    assert np.allclose(twin.embed(tiny_images), model.embed(tiny_images), atol=1e-5)
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    stamp = cached.stat().st_mtime_ns
    runtime.onnx_embedder(model)
    assert cached.stat().st_mtime_ns == stamp  # reused, not exported again
    cached.write_bytes(b"damaged")
    assert np.allclose(runtime.onnx_embedder(model).embed(tiny_images[:1]), model.embed(tiny_images[:1]), atol=1e-5)


def test_the_exported_graph_pads_by_constants_inside_its_convolutions(model, tmp_path, tiny_images):
    """timm's 'same' padding traced as it is becomes shape arithmetic and Pad nodes (a quarter of
    the time on onnxruntime); the export fixes it for the one input size and folds it into the Convs."""
    import collections

    import onnx
    from timm.layers import Conv2dSame

    from byakugan.embedder.embedding.onnx import OnnxEmbedder, export_onnx

    same = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    assert same  # the backbone pads on the fly: what the export has to fix
    export_onnx(model, tmp_path / "m.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node)
    assert ops["Pad"] == 0 and ops["Ceil"] == 0 and ops["Conv"] > 40
    assert all("forward" not in vars(m) for m in same)  # the torch model is left as it was
    twin = OnnxEmbedder(tmp_path / "m.onnx", model.preprocess, model.name, model.dim, model.fingerprint())
    assert np.allclose(twin.embed(tiny_images), model.embed(tiny_images), atol=1e-5)
    assert np.allclose(twin.embed(tiny_images[:1]), model.embed(tiny_images[:1]), atol=1e-5)  # any batch size


def test_search_and_watch_run_without_torch_once_the_model_is_cached(hand_gallery, stills, videos, tmp_path):
    """The live path (CLI search, watch, the page and server) embeds with onnxruntime; once a
    gallery's models are in the cache, a command never imports torch, timm or torchvision."""
    import subprocess
    import sys

    probe = ("import sys; from byakugan.ui.cli import main; code = main(sys.argv[1:]); "
             "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules); "
             "print('IMPORTED', heavy); sys.exit(code)")
    for args in (["search", str(hand_gallery), str(stills["a"][9])],  # the first run may export; later ones must not
                 ["search", str(hand_gallery), str(stills["b"][9]), "--json"],
                 ["watch", str(hand_gallery), str(videos["abc"]), "--max-frames", "2", "--json"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-500:]
    assert "IMPORTED []" in out.stdout
    first = subprocess.run([sys.executable, "-c", probe, "search", str(hand_gallery), str(stills["c"][9])],
                           capture_output=True, text=True, timeout=300)
    assert "IMPORTED []" in first.stdout and "c " in first.stdout


def test_a_camera_that_cannot_be_opened_is_one_line(hand_gallery, capfd):
    """OpenCV wrote its own "[ WARN:0@0.008] global cap_v4l.cpp ... can't open camera" lines first."""
    assert main(["watch", str(hand_gallery), "9"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["byakugan: error: video 9: cannot be opened as a camera"], err


def _vfr(tmp_path):
    """A variable-rate video: frames at 0, 0.1, 0.2, 1.2, 1.3 and 3.3 s, its header's rate 10."""
    import fractions

    import av

    with av.open(str(tmp_path / "vfr.mkv"), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt, s.time_base = 64, 64, "yuv420p", fractions.Fraction(1, 1000)
        for i, ms in enumerate([0, 100, 200, 1200, 1300, 3300]):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 40, np.uint8), format="rgb24")
            f.pts, f.time_base = ms, s.time_base
            out.mux(s.encode(f))
        out.mux(s.encode())
    return tmp_path / "vfr.mkv"


def test_a_variable_rate_video_is_timed_by_its_frames_own_times(tmp_path):
    """Frames were timed at index / average rate: a second's pause in a screen recording read as a frame's."""
    from byakugan.ui.video import read

    frames, fps = read(str(_vfr(tmp_path)))
    assert [round(f.t, 2) for f in frames] == [0.0, 0.1, 0.2, 1.2, 1.3, 3.3]


def test_a_variable_rate_videos_annotated_video_lasts_as_long_and_is_not_called_short(hand_gallery, tmp_path, capsys):
    import cv2

    vfr = _vfr(tmp_path)
    assert main(["watch", str(hand_gallery), str(vfr), "--out", str(tmp_path / "out.avi")]) == 0
    assert "frames its header lists" not in capsys.readouterr().err
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == 10 and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 34  # 3.3 s at 10/s, and one
    shown = []  # each picture's grey level (the i-th picture is i * 40): held from its own time to the next one's
    while (got := cap.read())[0]:
        shown.append(round(float(got[1][32:, :32].mean()) / 40))
    assert shown == [0, 1] + [2] * 10 + [3] + [4] * 20 + [5], shown


def test_a_jump_in_a_videos_clock_is_cut_short_in_the_annotated_video(hand_gallery, tmp_path, capsys, monkeypatch):
    import cv2

    from byakugan.ui import video

    real = video.read

    def an_hour_between(source, *a, **kw):  # a camera stopped for an hour, or a file whose clock jumps
        frames, fps = real(source, *a, **kw)
        return (video.Frame(f.t + (3600 if f.index >= 2 else 0), f.index, f.bgr) for f in frames), fps

    monkeypatch.setattr(video, "read", an_hour_between)
    source = write_video(tmp_path / "v.avi", [(None, 4)], fps=10.0, size=(64, 64))
    assert main(["watch", str(hand_gallery), str(source), "--out", str(tmp_path / "out.avi")]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 + 100  # the hour held for MAX_HELD (10 s at 10/s), no more


def test_a_video_that_cannot_be_opened_is_one_line_without_ffmpegs_own(tmp_path):
    import subprocess
    import sys

    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    script = ("import sys\nfrom byakugan.ui.video import VideoError, read\nfor f in sys.argv[1:]:\n"
              "    try:\n        read(f)\n    except VideoError as exc:\n        print(exc)\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "zero.mp4"), str(tmp_path / "cut.mp4")],
                         capture_output=True, text=True, timeout=120)
    assert run.stderr == "" and len(run.stdout.splitlines()) == 2 and "cannot be opened" in run.stdout


def test_an_annotated_video_left_half_written_by_a_killed_run_is_removed_by_the_next(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from byakugan.ui.video import VideoError, Writer, read

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname().replace(".", "_")
    left = tmp_path / f".out.{host}.{dead.stdout.strip()}-abc.part.mp4"  # a run killed (kill -9) before it could tidy
    left.write_bytes(b"half")
    mine = tmp_path / f".out.{host}.{os.getpid()}-xyz.part.mp4"  # one of a run still going: not touched
    mine.write_bytes(b"going")
    other = tmp_path / f".out.elsewhere.{dead.stdout.strip()}-abc.part.mp4"  # another machine's: not ours to judge
    other.write_bytes(b"going there")
    w = Writer(str(tmp_path / "out.mp4"), 10.0, (64, 48))
    w.write(np.zeros((48, 64, 3), np.uint8))
    w.close()
    assert not left.exists() and mine.exists() and other.exists() and (tmp_path / "out.mp4").is_file()
    with pytest.raises(VideoError, match="is not a regular file"):
        read("/dev/null")
    if os.path.isdir("/proc"):
        with pytest.raises(VideoError, match=r"--out /proc/x.mp4: (cannot write there|folder /proc is not writable)"):
            Writer("/proc/x.mp4", 10.0, (64, 48))


def test_an_out_file_that_appeared_during_the_run_is_not_replaced(hand_gallery, videos, tmp_path, capsys, monkeypatch):
    from byakugan.ui import video

    out = tmp_path / "race.avi"
    real = video.Writer.write

    def someone_writes(self, bgr):  # a file of the user's appears under the name while the video is made
        real(self, bgr)
        if self.frames == 2:
            out.write_bytes(b"precious")

    monkeypatch.setattr(video.Writer, "write", someone_writes)
    assert main(["watch", str(hand_gallery), str(videos["abc"]), "--out", str(out), "--max-frames", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"byakugan: error: --out {out}: a file appeared there while the video was made; nothing was "
                   f"replaced: the annotated video is {tmp_path / 'race-2.avi'}")
    assert out.read_bytes() == b"precious" and (tmp_path / "race-2.avi").read_bytes()[:4] == b"RIFF"
    assert not list(tmp_path.glob(".*part*"))


def test_an_out_file_that_cannot_be_replaced_is_one_line_and_leaves_no_temporary_file(hand_gallery, videos, tmp_path,
                                                                                       capsys, monkeypatch):
    from pathlib import Path

    out = tmp_path / "x.avi"
    out.write_bytes(b"kept")

    def refused(self, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "replace", refused)
    assert main(["watch", str(hand_gallery), str(videos["abc"]), "--out", str(out), "--overwrite",
                 "--max-frames", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"byakugan: error: --out {out}: the video cannot be put there (Operation not permitted); nothing was kept")
    assert out.read_bytes() == b"kept" and not list(tmp_path.glob(".*part*"))


def test_watch_flags_and_videos_refused_before_any_work(hand_gallery, videos, tmp_path, capsys, monkeypatch):
    import os

    from byakugan.ui.cli import live

    monkeypatch.setattr(live, "_tracker", lambda *a: pytest.fail("the models were loaded"))
    for flags, said in [(["--out", ""], "--out '': names no file; name a video file (.mp4 or .avi)"),
                        (["--window", str(10**23), "--enter", str(6 * 10**22)], "--window 100000000000000000000000: "
                                                                                 "must be a whole number of frames, 1 to 10000"),
                        (["--max-gap", "inf"], "--max-gap inf: must be a positive number of seconds"),
                        (["--min-hold", "inf"], "--min-hold inf: must be 0 or more seconds")]:
        assert main(["watch", str(hand_gallery), str(videos["abc"]), *flags]) == 2
        assert capsys.readouterr().err.strip() == f"byakugan: error: {said}"
    os.symlink(tmp_path / "nowhere.avi", tmp_path / "link.avi")
    assert main(["watch", str(hand_gallery), str(videos["abc"]), "--out", str(tmp_path / "link.avi")]) == 2
    assert "exists; add --overwrite" in capsys.readouterr().err and os.path.islink(tmp_path / "link.avi")
    huge = write_video(tmp_path / "huge.avi", [(None, 1)], fps=15.0, size=(8000, 6000))
    assert main(["watch", str(hand_gallery), str(huge)]) == 2
    assert capsys.readouterr().err.strip() == (f"byakugan: error: video {huge}: frames of 8000x6000 = 48000000 pixels, "
                                               "over the limit of 40000000 a picture may have")


def test_a_slow_video_is_told_how_long_a_gesture_must_be_held(hand_gallery, tmp_path, capsys):
    slow = write_video(tmp_path / "slow.avi", [(None, 2)], fps=2.0, size=(160, 120))
    assert main(["watch", str(hand_gallery), str(slow)]) == 0
    assert (f"byakugan: warning: video {slow}: at 2 frames/s a label shows only after 4.5 s held (--embed-every 3 x --enter 3 "
            "frames); for this video try --embed-every 1 and a smaller --window and --enter") in capsys.readouterr().err
    assert main(["watch", str(hand_gallery), str(slow), "--embed-every", "1", "--window", "1", "--enter", "1",
                 "--leave", "1"]) == 0
    assert "a label shows only after" not in capsys.readouterr().err


def test_watch_follows_an_edit_of_the_gallery_while_it_runs(hand_gallery, videos, tmp_path, capsys, monkeypatch):
    """A label renamed while a video is watched is answered by its new name from then on."""
    import shutil

    from byakugan.index import editing
    from byakugan.index import tracker as tracking

    folder = shutil.copytree(hand_gallery, tmp_path / "g")
    real, frames = tracking.Tracker.update, []

    def renamed_midway(self, frame, t=None):
        frames.append(t)
        if len(frames) == 10:  # while "a" is held (frames 2 to 16)
            with editing(folder) as g:
                g.rename("a", "alpha")
        return real(self, frame, t)

    monkeypatch.setattr(tracking.Tracker, "update", renamed_midway)
    lines, _ = watch_json(capsys, str(folder), str(videos["abc"]), "--embed-every", "1")
    labels = [{tr["label"] for tr in line["tracks"]} for line in lines]
    assert "a" in labels[9] and not any("a" in seen for seen in labels[10:])
    assert all(seen == {"alpha"} for seen in labels[10:16])  # its held label renamed with it, not voted again


def test_watch_goes_on_with_its_gallery_as_it_was_when_the_folder_is_removed(hand_gallery, videos, tmp_path, capsys,
                                                                              monkeypatch):
    import shutil

    from byakugan.index import tracker as tracking

    folder = shutil.copytree(hand_gallery, tmp_path / "g")
    real, frames = tracking.Tracker.update, []

    def removed_midway(self, frame, t=None):
        frames.append(t)
        if len(frames) == 10:
            shutil.rmtree(folder)
        return real(self, frame, t)

    monkeypatch.setattr(tracking.Tracker, "update", removed_midway)
    out = tmp_path / "out.avi"
    assert main(["watch", str(folder), str(videos["abc"]), "--out", str(out)]) == 0
    text, err = capsys.readouterr()
    assert "sequence 'abc'" in text and out.is_file()
    assert err.count(f"byakugan: warning: gallery {folder}: does not exist") == 1
    assert "watching on with the gallery as it last was" in err
