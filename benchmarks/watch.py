"""Live recognition: how fast `watch` runs on 640x480 video (hand and anime paths; onnxruntime and
torch side by side in one run; embedding every n-th frame), and how often generated sequence
videos fire when they should and stay silent when they should.

Sequence videos: per hand source, 12 classes enrolled with 5 images each; each video performs a
sequence of 3 classes (2 when a source has 3) with held-back images (3 stills per step, moved a little every frame,
0.7-1.3 s per step, 2-5 frames of another class or of nothing between). Positives perform the
stored sequence; negatives perform its steps in another order, or with one step replaced. Every
frame's detections and answers are recorded once, then replayed through the real Tracker for each
smoothing setting and embed-every choice. The smoothing default is the best setting on SELECT
(sources chosen beforehand); every source is reported with it.

    python benchmarks/watch.py [--videos 8] [--out docs/watch.json] [--gif docs/watch.gif]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
params: dict[str, tuple] = {}  # a setting's key -> (window/enter/leave, min_hold, embed_every, max_jump)
sys.path.insert(0, str(ROOT))
from tests.videos import frame_of, write_video  # noqa: E402

from byakugan.index import Pipeline  # noqa: E402
from byakugan.index.smoothing import SmoothingSettings  # noqa: E402
from byakugan.index.tracker import Tracker, TrackerSettings  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
# How each source's pictures become 640x480 frames: hand close-ups get their edge pixels around them.
LOOK = {"asl-signs": dict(height=0.8), "sign-digits": dict(height=0.6, edge=True),
        "rock-paper-scissors": dict(height=0.7, edge=True), "hand-fingers": dict(height=0.7, edge=True),
        "drone-gestures": dict(height=1.0)}
SELECT = ["asl-signs", "sign-digits", "rock-paper-scissors"]
GRID = [(5, 3, 1), (5, 3, 2), (7, 4, 2), (7, 5, 2), (9, 5, 2), (9, 6, 3), (11, 6, 2), (11, 7, 3), (15, 8, 3), (15, 10, 4)]
HOLDS = [0.0, 0.2, 0.4]
JUMPS = [1.0, 3.0, 100.0]
EMBED_EVERY = [1, 2, 3]
FPS = 15


def stills(source: str, rng: random.Random, classes: int = 12) -> dict[str, list[Path]]:
    names = sorted(d.name for d in (DATA / source).iterdir() if d.is_dir() and d.name != "no_class")
    out = {}
    for c in sorted(rng.sample(names, min(classes, len(names)))):
        files = sorted((DATA / source / c).glob("*.jpg"))
        rng.shuffle(files)
        out[c] = files
    return out


def perform(order, held, others, rng, look) -> list[np.ndarray]:
    """BGR frames performing `order`, as described at the top."""
    def shift():
        return rng.randint(-24, 24), rng.randint(-16, 16)

    frames = []
    for i, label in enumerate(order):
        if i:
            filler = rng.choice(others + [None])
            still = None if filler is None else rng.choice(held[filler])
            frames += [frame_of(still, shift=shift(), **look) for _ in range(rng.randint(2, 5))]
        n = round(rng.uniform(0.7, 1.3) * FPS)
        pics = rng.sample(held[label], 3)
        frames += [frame_of(pics[k * 3 // n], shift=shift(), **look) for k in range(n)]
    return frames


class Recorder:
    """A pipeline for the Tracker that passes everything to the real one and keeps what it answered."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe, self.log = pipe.for_video(), []

    def for_video(self):
        return self

    def regions(self, img, every=True, fallback=None):
        found = self.pipe.regions(img, every=every, fallback=fallback)
        self.log.append([found, None])
        return found

    def recognize_regions(self, gallery, regions, k=1, threshold=None):
        self.log[-1][1] = self.pipe.recognize_regions(gallery, regions, k, threshold)
        return self.log[-1][1]


class Replayer:
    """Answers as a recording did, frame by frame, so other settings run on the same answers."""

    def __init__(self, log) -> None:
        self.log, self.n = log, -1

    def for_video(self):
        return self

    def regions(self, img, every=True, fallback=None):
        self.n += 1
        return self.log[self.n][0]

    def recognize_regions(self, gallery, regions, k=1, threshold=None):
        return self.log[self.n][1]


def replay(log, gallery, seq, setting, hold, every, jump) -> list[str]:
    w, e, l = setting
    settings = TrackerSettings(SmoothingSettings(w, e, l), embed_every=every, min_hold=hold, max_jump=jump)
    tracker = Tracker(Replayer(log), gallery, settings, sequences={"s": seq})
    dummy = np.zeros((2, 2, 3), np.uint8)
    return [ev.name for i in range(len(log)) for ev in tracker.update(dummy, i / FPS).events]


def key(setting, hold, every, jump) -> str:
    return f"window/enter/leave {setting[0]}/{setting[1]}/{setting[2]}, min_hold {hold}, every {every}, max_jump {jump}"


def source_videos(source: str, n_videos: int, seed: int = 0):
    """(gallery, pipeline, videos): each video (kind, frames, sequence)."""
    rng = random.Random(seed)
    files = stills(source, rng)
    pipe = Pipeline.create(None, "hand")
    g = pipe.new_gallery(None)
    for c, fs in files.items():
        pipe.enroll(g, c, fs[:5], fallback="whole")
    held = {c: fs[5:] for c, fs in files.items()}
    videos = []
    for v in range(n_videos):
        seq = rng.sample(sorted(files), 3 if len(files) >= 4 else 2)  # rock-paper-scissors: 2 steps, 1 other
        others = [c for c in files if c not in seq]
        kind = ("positive", "reordered", "replaced")[v % 3] if v % 2 else "positive"
        order = list(seq)
        if kind == "reordered":
            while order == seq:
                rng.shuffle(order)
        elif kind == "replaced":
            order[rng.randrange(len(order))] = rng.choice(others)
        videos.append((kind, seq, perform(order, held, others, rng, LOOK[source])))
    return g, pipe, videos


def sequence_accuracy(sources: list[str], n_videos: int) -> tuple[dict, dict]:
    """Per source and setting: share of positives fired exactly once and negatives silent; frame times."""
    results, timing = {}, {}
    for source in sources:
        t0 = time.perf_counter()
        g, pipe, videos = source_videos(source, n_videos)
        live = pipe.onnx()
        logs, seconds = [], []
        for kind, seq, frames in videos:
            rec = Recorder(live)
            tracker = Tracker(rec, g, TrackerSettings(embed_every=1), sequences={"s": seq})  # every answer recorded
            for i, f in enumerate(frames):
                seconds.append(tracker.update(np.ascontiguousarray(f[:, :, ::-1]), i / FPS).seconds)
            logs.append((kind, seq, rec.log))
        timing[source] = seconds
        table = {}
        for setting, hold, every, jump in [(s, h, e, j) for s in GRID for h in HOLDS for e in EMBED_EVERY for j in JUMPS]:
            pos, neg = [], []
            for kind, seq, log in logs:
                fired = replay(log, g, seq, setting, hold, every, jump)
                (pos if kind == "positive" else neg).append(fired == ["s"] if kind == "positive" else fired == [])
            params[key(setting, hold, every, jump)] = (setting, hold, every, jump)
            table[key(setting, hold, every, jump)] = {
                "positives_fired": round(sum(pos) / len(pos), 3), "negatives_silent": round(sum(neg) / len(neg), 3),
                "accuracy": round((sum(pos) + sum(neg)) / (len(pos) + len(neg)), 3)}
        results[source] = table
        print(f"{source}: {len(videos)} videos in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return results, timing


def throughput(pipe_by_name: dict, gallery, frames: list[np.ndarray], everies=(1,)) -> dict:
    """watch's loop end to end on a written 640x480 video: decode, track, JSON; per-frame times."""
    from byakugan.ui import video

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "v.avi", [(f, 1) for f in frames], fps=FPS)
        for name, pipe in pipe_by_name.items():
            for every in everies:
                tracker = Tracker(pipe, gallery, TrackerSettings(embed_every=every))
                times = []
                stream, _ = video.read(str(path))
                start = time.perf_counter()
                for frame in stream:
                    t = time.perf_counter()
                    json.dumps(tracker.update(frame.rgb, frame.t).to_dict())
                    times.append(time.perf_counter() - t)
                wall = time.perf_counter() - start
                ms = sorted(1000 * x for x in times)
                out[f"{name} every {every}"] = {"frames_per_s": round(len(times) / wall, 1),
                                                "latency_ms_p50": round(statistics.median(ms), 1),
                                                "latency_ms_p95": round(ms[int(0.95 * (len(ms) - 1))], 1)}
    return out


def anime_frames(rng: random.Random):
    from byakugan.index import Pipeline

    files = stills("anime-scenes", rng)
    out = {}
    for detector in ("anime-face", "anime-face-verified"):
        pipe = Pipeline.create(None, detector)
        g = pipe.new_gallery(None)
        for c, fs in files.items():
            pipe.enroll(g, c, fs[:5], fallback="whole")
        out[detector] = (pipe, g)
    held = [f for fs in files.values() for f in fs[5:8]]
    frames = [frame_of(p, height=1.0) for p in held for _ in range(6)]
    return out, frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8, help="sequence videos per hand source")
    p.add_argument("--sources", default=",".join(LOOK))
    p.add_argument("--out", default=str(ROOT / "docs" / "watch.json"))
    p.add_argument("--gif", default=str(ROOT / "docs" / "watch.gif"))
    a = p.parse_args()
    sources = a.sources.split(",")
    accuracy, timing = sequence_accuracy(sources, a.videos)
    chosen_on = [s for s in SELECT if s in accuracy] or sources
    default = TrackerSettings()
    # max_jump is not chosen here: the chosen sources give one still box per step, so every value
    # ties; 3 box diagonals is a design choice, and the table shows what it does on drone-gestures.
    scores = {k: statistics.mean(accuracy[s][k]["accuracy"] for s in chosen_on) for k in accuracy[chosen_on[0]]
              if params[k][3] == default.max_jump}
    # Ties go to the fewest embeddings (faster), then to the first in GRID and HOLDS order.
    best = max(scores, key=lambda k: (round(scores[k], 6), params[k][2], -list(scores).index(k)))
    sm = default.smoothing
    d = key((sm.window, sm.enter, sm.leave), default.min_hold, default.embed_every, default.max_jump)
    report = {"fps_of_videos": FPS, "chosen_on": chosen_on, "best_on_chosen": best, "shipped_default": d,
              "sequences_with_default": {s: accuracy[s][d] for s in accuracy},
              "sequences_mean_with_default": round(statistics.mean(accuracy[s][d]["accuracy"] for s in accuracy), 3),
              "sequences_worst_with_default": min((accuracy[s][d]["accuracy"], s) for s in accuracy),
              "mean_over_chosen": {k: round(v, 3) for k, v in scores.items()},
              "per_source_frame_ms_p50": {s: round(1000 * statistics.median(v), 1) for s, v in timing.items()}}

    # Speed, side by side in this run: the hand path on asl-signs and drone-gestures (a person in a room).
    speed = {}
    for source in [s for s in ("asl-signs", "drone-gestures") if s in sources]:
        g, pipe, videos = source_videos(source, 1, seed=1)
        frames = videos[0][2]
        speed[f"hand {source}"] = throughput({"onnxruntime": pipe.onnx(), "torch": pipe}, g, frames, (1, 2, 3))
        if source == "asl-signs" and a.gif:
            gif(pipe.onnx(), g, videos[0][1], frames, Path(a.gif))
    detectors, frames = anime_frames(random.Random(0))
    for name, (pipe, g) in detectors.items():
        speed[f"anime {name}"] = throughput({"onnxruntime": pipe.onnx()}, g, frames)
    report["speed_640x480"] = speed
    report["full"] = accuracy
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "full"}, indent=1))


def gif(pipe, g, seq, frames, out: Path) -> None:
    """A short animated GIF of watch --out: every other frame, at half size."""
    from PIL import Image

    from byakugan.ui.video import Annotator

    g.sequences.add("_".join(seq), list(seq), replace=True)
    tracker, draw = Tracker(pipe, g), Annotator()
    pictures = []
    for i, f in enumerate(frames):
        r = tracker.update(np.ascontiguousarray(f[:, :, ::-1]), i / FPS)
        if i % 2 == 0 or r.events:
            small = draw.draw(f, r)[::2, ::2, ::-1]
            pictures.append(Image.fromarray(np.ascontiguousarray(small)).quantize(64))
    pictures[0].save(out, save_all=True, append_images=pictures[1:], duration=int(2000 / FPS), loop=0, optimize=True)


if __name__ == "__main__":
    main()
