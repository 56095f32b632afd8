"""Every `byakugan` command in the README from "Command line" on runs as written, top to bottom,
in a fresh folder: placeholder images (a.jpg, scene1.jpg, t1.jpg...) are real pictures of the
kind the line means, and ../shared/datasets/NAME is a 12-per-class sample of it (same layout)."""

import random
import re
import shlex
import shutil
from pathlib import Path

import pytest

from byakugan.ui.cli import main
from tests.videos import write_video

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"train": "a template (DATA_DIR..., models/NAME)", "serve": "runs until stopped (tests/test_serve.py)"}


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Command line"):]  # the setup block before it is CI's own
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith(".venv/bin/byakugan ")]


def test_the_readme_shows_the_commands():
    names = {c[0] for c in readme_commands()}
    assert {"enroll", "search", "labels", "remove", "rename", "threshold", "scoring", "embed", "models", "evaluate",
            "export", "train", "serve", "sequence", "watch"} <= names


def test_every_readme_command_runs(datasets, tmp_path, monkeypatch, capsys):
    from byakugan.embedder.detection.assets import ANIMEFACE_CASCADE

    monkeypatch.delenv(ANIMEFACE_CASCADE.env, raising=False)  # the packaged cascade
    rng = random.Random(0)

    def pick(source: str, cls: str, n: int) -> list[Path]:
        files = sorted((datasets / source / cls).glob("*.*"))
        return rng.sample(files, n)

    work = tmp_path / "work"
    (work / ".venv").mkdir(parents=True)
    shared = tmp_path / "shared" / "datasets"
    for source in ("sign-digits", "hand-fingers"):
        for d in sorted((datasets / source).iterdir()):
            (shared / source / d.name).mkdir(parents=True)
            for f in pick(source, d.name, 12):
                shutil.copy(f, shared / source / d.name / f.name)
    scenes = sorted((datasets / "anime-scenes" / "nishikino_maki").glob("*.jpg"))
    images = {"a.jpg": pick("sign-digits", "1", 1)[0], "b.jpg": pick("sign-digits", "2", 1)[0],
              "c.jpg": pick("sign-digits", "3", 1)[0], "query.jpg": pick("sign-digits", "1", 1)[0],
              "scene1.jpg": scenes[0], "scene2.jpg": scenes[1], "group.jpg": scenes[2], "party.jpg": scenes[3],
              "photo.jpg": scenes[4]}
    images |= {f"t{i}.jpg": f for i, f in enumerate(pick("rock-paper-scissors", "rock", 5), 1)}
    images |= {f"r{i}.jpg": f for i, f in enumerate(pick("rock-paper-scissors", "paper", 5), 1)}
    for name, src in images.items():
        shutil.copy(src, work / name)
    # seals.mp4: tiger (rock), then ram (paper), each held for a second, as `watch` reads a webcam
    held = {"tiger": pick("rock-paper-scissors", "rock", 3), "ram": pick("rock-paper-scissors", "paper", 3)}
    write_video(work / "seals.mp4", [(f, 5) for f in held["tiger"]] + [(None, 3)] + [(f, 5) for f in held["ram"]])
    monkeypatch.chdir(work)  # ../shared/datasets is the sample beside it
    ran = []
    for args in readme_commands():
        if args[0] in SKIP:
            continue
        code = main(args)
        err = capsys.readouterr().err
        assert code == 0, (args, err[-800:])
        ran.append(args[0])
    assert len(ran) >= 20
    assert (work / "my-gallery.zip").is_file() and (work / "report" / "confusion.png").is_file()
    assert (work / "annotated.mp4").is_file()
