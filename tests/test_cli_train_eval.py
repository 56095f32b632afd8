"""`byakugan train` and `evaluate` refuse bad arguments, folders, checkpoints and detector settings
in one line (exit 2) before any feature is computed or image embedded, on tiny generated folders."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from byakugan.embedder.detection import create_detector
from byakugan.embedder.detection.assets import ANIMEFACE_CASCADE, shipped_path
from byakugan.embedder.errors import ModelError
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.ui.cli import main

BYAKUGAN = [sys.executable, "-m", "byakugan.ui.cli"]
TINY = ["--views", "1", "--epochs", "1", "--size", "64", "--dim", "8", "--batch-size", "8", "--m-per-class", "2",
        "--device", "cpu"]


def folder(root: Path, counts: dict[str, int]) -> Path:
    """A data folder with `counts[name]` small images in each class folder, a colour per class."""
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = np.full((40, 40, 3), (60 * k % 256, 255 - 50 * k % 256, 90), np.uint8)
            arr[rng.integers(0, 30):, rng.integers(0, 30):] = 255  # a corner of its own in each image
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def refused(capsys, *args) -> str:
    """The one error line of a command that must exit 2, having computed and embedded nothing."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("byakugan: error: "), err
    assert "features of" not in err and "%|" not in err and "np.str_" not in err  # no progress bar: nothing embedded
    return lines[0]


@pytest.mark.parametrize("counts, extra, message", [
    ({"a": 1, "b": 1, "c": 1}, [], "at least 2 classes with 2 or more images each; found 3 classes, 0 with"),
    ({"only": 5}, [], "found 1 class, 1 with 2 or more images (d/only)"),
    ({"a": 3, "b": 3}, ["--holdout", "d"], "found 0 classes after holding out 2"),
    ({"a": 3, "b": 3}, ["--batch-size", "0"], "batch size 0 must be >= 1"),
    ({"a": 3, "b": 3}, ["--m-per-class", "0"], "m per class 0 must be >= 1"),
    ({"a": 3, "b": 3}, ["--batch-size", "6", "--m-per-class", "4"], "batch size 6 must be a multiple of m per class 4"),
    ({"a": 3, "b": 3}, ["--batch-size", "4", "--m-per-class", "4"], "and at least 8: a batch holds m images of each of 2"),
    ({"a": 3, "b": 3}, ["--per-class", "0"], "per class 0 must be >= 1"),
    ({"a": 3, "b": 3}, ["--epochs", "0"], "epochs 0 must be >= 1"),
])
def test_train_refuses_what_cannot_train_in_one_line(tmp_path, capsys, counts, extra, message):
    data = folder(tmp_path / "d", counts)
    assert message in refused(capsys, "train", data, "--out", tmp_path / "m", "--views", "1", "--device", "cpu", *extra)
    assert not (tmp_path / "m").exists()


def test_train_refuses_an_out_that_is_a_file(tmp_path, capsys):
    data = folder(tmp_path / "d", {"a": 3, "b": 3})
    (tmp_path / "afile").write_text("x")
    assert f"out {tmp_path / 'afile'}: is a file" in refused(capsys, "train", data, "--out", tmp_path / "afile", *TINY)
    assert "afile is a file, not a folder" in refused(capsys, "train", data, "--out", tmp_path / "afile" / "m", *TINY)


def test_train_takes_small_classes_and_refuses_a_damaged_or_mismatched_checkpoint(tmp_path, capsys):
    # 5 rows (views 0) for a batch of 6: the sampler draws again rather than refusing a short pass
    data = folder(tmp_path / "d", {"a": 2, "b": 2, "c": 1})
    out = tmp_path / "m"
    assert main(["train", str(data), "--out", str(out), *TINY, "--views", "0"]) == 0
    capsys.readouterr()
    damaged = {"state.json": b'{"epoch": ', "optimizer.safetensors": b"garbage", "model.safetensors": b"\x00" * 10}
    for name, content in damaged.items():
        shutil.copytree(out, tmp_path / name)
        (tmp_path / name / "checkpoint" / name).write_bytes(content)
        line = refused(capsys, "train", data, "--out", tmp_path / name, *TINY, "--views", "0", "--epochs", "2", "--resume")
        assert f"checkpoint {tmp_path / name / 'checkpoint' / name}: damaged" in line and "--overwrite" in line
    line = refused(capsys, "train", data, "--out", out, *TINY, "--views", "0", "--epochs", "2", "--resume", "--dim", "16")
    assert "resume: the checkpoint's run was started with --head-dim 8, not 16; resume with its settings" in line
    line = refused(capsys, "train", data, "--out", out, *TINY, "--views", "0", "--resume")  # its 1 epoch is done
    assert "the checkpoint's run has done 1 epochs, and --epochs is 1; ask for more epochs" in line
    # ... but a run stopped after its last epoch, before its model was saved, is finished by --resume
    shutil.copytree(out, stopped := tmp_path / "stopped")
    for name in ("config.json", "model.safetensors", "training.json"):
        (stopped / name).unlink()
    assert main(["train", str(data), "--out", str(stopped), *TINY, "--views", "0", "--resume"]) == 0
    assert (stopped / "config.json").is_file()
    capsys.readouterr()
    # a checkpoint written before runs kept their settings: the weights that do not fit still say so
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    (out / "checkpoint" / "state.json").write_text(json.dumps({k: state[k] for k in ("epoch", "history")}))
    line = refused(capsys, "train", data, "--out", out, *TINY, "--epochs", "2", "--resume", "--dim", "16")
    assert f"{out / 'checkpoint' / 'model.safetensors'}: damaged, or made with other settings (--dim" in line


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "shots 2 and trials 0 must both be >= 1"),
    (["--shots", "-1"], "shots -1 and trials 2 must both be >= 1"),
    (["--shots", "0"], "shots 0 and trials 2 must both be >= 1"),
    (["--unknown-fraction", "-0.5"], "unknown fraction -0.5 must be >= 0 and < 1"),
    (["--unknown-fraction", "nan"], "unknown fraction nan must be >= 0 and < 1"),
    (["--per-class", "-3"], "--per-class -3: must be >= 1"),
    (["--shots", "4"], "classes c0, c1, c2, c3 have no images left to query after 4 references"),
    (["--save-embeddings", "NOPE/e.safetensors"], "NOPE does not exist"),
    (["--adapt", "0.5,0.1,10"], "adapt cohort 10: model default has no cohort to fit with; leave the third part out"),
])
def test_evaluate_refuses_bad_arguments_before_embedding(tmp_path, capsys, args, message):
    data = folder(tmp_path / "d", {f"c{i}": 4 for i in range(4)})
    args = [a.replace("NOPE", str(tmp_path / "nope")) for a in args]
    line = refused(capsys, "evaluate", data, "--shots", "2", "--trials", "2", *args)
    assert message.replace("NOPE", str(tmp_path / "nope")) in line


def test_evaluate_refuses_report_and_embeddings_paths_it_cannot_write(tmp_path, capsys):
    data = folder(tmp_path / "d", {f"c{i}": 4 for i in range(4)})
    (tmp_path / "afile").write_text("x")
    assert "--report" in refused(capsys, "evaluate", data, "--report", tmp_path / "afile", "--shots", "2")
    assert "is a folder" in refused(capsys, "evaluate", data, "--save-embeddings", tmp_path, "--shots", "2")


@pytest.mark.parametrize("setting, message", [
    ("scale_factor=1.0", "scale_factor 1.0 must be a number above 1 and up to 4"),
    ('min_size="abc"', "min_size 'abc' must be an integer from 1 to 4096"),
    ("min_neighbors=1.5", "min_neighbors 1.5 must be an integer from 0 to 100"),
    ("max_side=true", "max_side True must be an integer"),
    ("cascade=NOT_A_CASCADE", "cascade file NOT_A_CASCADE could not be loaded by OpenCV"),
])
def test_evaluate_refuses_bad_cascade_settings_in_one_line(tmp_path, capsys, setting, message):
    data = folder(tmp_path / "d", {f"c{i}": 4 for i in range(3)})
    (tmp_path / "NOT_A_CASCADE").write_text("root:x:0:0:root:/root:/bin/bash\n")
    setting = setting.replace("NOT_A_CASCADE", json.dumps(str(tmp_path / "NOT_A_CASCADE")))
    line = refused(capsys, "evaluate", data, "--detector", "anime-face", "--detector-setting", setting, "--shots", "2")
    assert f"detector anime-face: {message.replace('NOT_A_CASCADE', str(tmp_path / 'NOT_A_CASCADE'))}" in line


def test_the_cascade_variable_is_checked_against_its_sha256(tmp_path, monkeypatch, capsys):
    import cv2

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(ANIMEFACE_CASCADE.env, str(shipped_path(ANIMEFACE_CASCADE)))
    assert create_detector("anime-face").name == "anime-face"
    other = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # a cascade, but not the anime one
    monkeypatch.setenv(ANIMEFACE_CASCADE.env, other)
    with pytest.raises(ModelError, match=f"{ANIMEFACE_CASCADE.env}=.*: not lbpcascade_animeface.xml .*SHA-256"):
        create_detector("anime-face")
    assert create_detector({"name": "anime-face", "cascade": other}).name == "anime-face"  # one's own, given as such
    monkeypatch.setenv(ANIMEFACE_CASCADE.env, "/etc/passwd")
    data = folder(tmp_path / "d", {f"c{i}": 4 for i in range(3)})
    assert "SHA-256" in refused(capsys, "evaluate", data, "--detector", "anime-face", "--shots", "2")


def test_a_class_never_queried_has_no_top1():
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((4, 16)), 6, 0) + 0.05 * rng.standard_normal((24, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [f"c{i}" for i in range(4) for _ in range(6)]
    s = enrolment_trials(x, labels, shots=2, trials=1, unknown_fraction=0.25).summary
    assert len(s["per_class_top1_nearest"]) == 3 and set(s["far_at_tar95_by_unknown_class"]) == \
        {"c0", "c1", "c2", "c3"} - set(s["per_class_top1_nearest"])


def test_evaluate_escapes_class_names_that_are_not_utf8(tmp_path):
    data = folder(tmp_path / "d", {"plain": 4, "日本語": 4, os.fsdecode(b"bad\xffname"): 4})
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "OMP_NUM_THREADS": "1"}
    args = [*BYAKUGAN, "evaluate", str(data), "--shots", "2", "--trials", "2", "--unknown-fraction", "0"]
    text = subprocess.run(args, capture_output=True, env=env, timeout=300)
    assert text.returncode == 0, text.stderr.decode()[-2000:]
    assert "bad\\xffname" in text.stdout.decode("utf-8") and "日本語" in text.stdout.decode("utf-8")
    as_json = subprocess.run([*args, "--json"], capture_output=True, env=env, timeout=300)
    assert as_json.returncode == 0, as_json.stderr.decode()[-2000:]
    s = json.loads(as_json.stdout.decode("utf-8"))  # strict UTF-8: raw invalid bytes would fail here
    assert set(s["per_class_top1_nearest"]) == {"plain", "日本語", "bad\\xffname"}


def test_evaluate_refuses_a_cohort_model_with_landmarks_before_embedding(datasets, capsys):
    line = refused(capsys, "evaluate", datasets / "rock-paper-scissors", "--detector", "hand", "--model", "anime",
                   "--per-class", "6", "--trials", "1")
    assert "model anime normalises scores by a cohort, which fused landmarks do not support" in line
    line = refused(capsys, "evaluate", datasets / "rock-paper-scissors", "--detector", "hand", "--adapt", "0.3,0.03,5",
                   "--per-class", "6", "--trials", "1")  # it reported "cohort 5" and fitted with none
    assert "adapt cohort 5: model default has no cohort to fit with beside fused landmarks" in line


def test_evaluate_writes_class_names_with_control_characters_escaped(tmp_path, capsys):
    """A folder named with a terminal's escape sequence turned the terminal red."""
    data = folder(tmp_path / "d", {"a": 4, "b": 4, "esc\x1b[31mred": 4})
    assert main(["evaluate", str(data), "--shots", "2", "--trials", "1", "--model", "default"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "esc\\u001b[31mred" in out


def test_evaluate_with_no_class_left_out_says_the_open_set_was_not_measured(tmp_path, capsys):
    from PIL import Image

    data = folder(tmp_path / "d", {f"c{i}": 4 for i in range(4)})
    assert main(["evaluate", str(data), "--shots", "2", "--trials", "2", "--unknown-fraction", "0",
                 "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "open set: not measured (no class was left out of the galleries: raise --unknown-fraction)" in out
    scores = Image.open(tmp_path / "r" / "scores.png").convert("L")
    assert scores.getextrema()[0] < 100  # the note is drawn: not an empty plot
