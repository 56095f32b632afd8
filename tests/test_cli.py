"""The byakugan command on real sign-digits images, in process and as a real subprocess."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import disk_state

from byakugan.ui.cli import main

BYAKUGAN = [sys.executable, "-m", "byakugan.ui.cli"]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def enrolled(digits, tmp_path, capsys):
    """A gallery with 5 images of each of 3 digits, enrolled label by label."""
    g = tmp_path / "gallery"
    for label in ("0", "3", "7"):
        code, out, err = run(capsys, "enroll", g, label, *digits[label][:5])
        assert code == 0, err
    return g


def test_enroll_then_search_finds_the_right_digit(enrolled, digits, capsys):
    queries = [p for label in ("0", "3", "7") for p in digits[label][5:15]]
    code, out, err = run(capsys, "search", enrolled, *queries, digits["3"][0], "--json", "--k", "3")
    assert code == 0, err
    results = [r["detections"][0] for r in json.loads(out)]
    got = [r["match"]["nearest"] for r in results[:-1]]
    want = [label for label in ("0", "3", "7") for _ in range(10)]
    # A floor any usable model clears (frozen ImageNet features got ~0.64 over all 10 digits,
    # the shipped default ~0.98; see the README); chance here is 1/3.
    assert np.mean([g == w for g, w in zip(got, want)]) >= 0.6
    itself = results[-1]  # an enrolled image finds itself
    assert itself["match"]["label"] == "3" and itself["match"]["score"] > 0.999
    for r in results:
        assert len(r["hits"]) == 3 and 0 < r["match"]["score"] <= 1.0001
        assert r["hits"][0]["score"] == r["labels"][0]["score"]


def test_same_results_after_reload_in_a_new_process(enrolled, digits, capsys):
    queries = [digits["3"][6], digits["7"][6]]
    code, out, _ = run(capsys, "search", enrolled, *queries, "--json")
    proc = subprocess.run([*BYAKUGAN, "search", str(enrolled), *map(str, queries), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # Same answers; scores may differ in the 7th decimal when this process's torch kernels were
    # picked differently by earlier tests (thread count, oneDNN primitive cache).
    assert _same(json.loads(proc.stdout), json.loads(out))


def _same(a, b) -> bool:
    """Equal, with floats equal to 1e-5."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_enroll_from_folder_skips_and_reports_a_bad_file(datasets, digits, tmp_path, capsys):
    root = tmp_path / "photos"
    for label in ("1", "2"):
        (root / label).mkdir(parents=True)
        for p in digits[label][:3]:
            shutil.copy(p, root / label)
    (root / "2" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "1" / "album.jpg").mkdir()  # named as an image, not one: said and skipped
    code, out, err = run(capsys, "enroll", tmp_path / "g", "--from-folder", root, "--json")
    assert code == 2
    assert "broken.jpg" in err and "Traceback" not in err
    assert f"byakugan: warning: --from-folder {root}: 1 name with an image's suffix is not a file and skipped: " \
           f"{root / '1' / 'album.jpg'}" in err.splitlines()
    assert json.loads(out)["labels"] == {"1": 3, "2": 3}


def test_enroll_warns_about_a_blank_image_and_enrols_it(digits, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (120, 90), (0, 0, 0)).save(black := tmp_path / "black.png")
    code, out, err = run(capsys, "enroll", tmp_path / "g", "1", black, digits["1"][0], "--json")
    assert code == 0 and json.loads(out)["labels"] == {"1": 2}  # the user may mean it: a warning, not a refusal
    assert err.splitlines() == [f"byakugan: warning: {black}: one flat colour, nothing to tell a class by"]
    # As the page does: an image already enrolled is said to be one (it only adds weight to its class)
    code, out, err = run(capsys, "enroll", tmp_path / "g", "1", digits["1"][0], digits["1"][1], "--json")
    assert code == 0 and json.loads(out)["labels"] == {"1": 4}
    assert err.splitlines() == [f"byakugan: warning: {digits['1'][0]}: near-duplicate of reference 1 "
                                f"(1, {digits['1'][0]}), cosine 1.000"]


def test_enroll_from_folder_checks_every_label_before_any_work(digits, tmp_path, capsys):
    """A sub-folder named like no label may be (here: `unknown`) was found only after every folder
    before it was embedded, and left a gallery folder holding a lock file alone."""
    root = tmp_path / "photos"
    for label in ("1", "unknown", "x\u202ey"):
        (root / label).mkdir(parents=True)
        shutil.copy(digits["1"][0], root / label)
    code, _, err = run(capsys, "enroll", tmp_path / "g", "--from-folder", root)
    assert code == 2 and "label 'unknown': reserved" in err and "Traceback" not in err
    assert err.startswith("byakugan: error: 2 bad labels:") and "invisible formatting" in err  # all of them, at once
    assert err.count("\n") == 1
    assert not (tmp_path / "g").exists()
    shutil.rmtree(root / "unknown"), shutil.rmtree(root / "x\u202ey")
    (root / "2").mkdir()  # empty: named, not dropped
    (root / ".thumbnails").mkdir()  # hidden: no label
    code, _, err = run(capsys, "enroll", tmp_path / "g", "--from-folder", root)
    assert code == 2 and err == f"byakugan: error: --from-folder {root}: sub-folder 2 holds no images; add images or move it out\n"
    assert not (tmp_path / "g").exists()
    code, out, _ = run(capsys, "enroll", tmp_path / "g", " seven ", str(digits["7"][0]))
    assert code == 0 and "as 'seven'" in out  # what was stored, not what was typed
    code, _, err = run(capsys, "enroll", tmp_path / "g", "", str(digits["7"][0]))
    assert code == 2 and "is empty" in err


def test_labels_remove_rename_threshold(enrolled, capsys):
    code, out, _ = run(capsys, "labels", enrolled, "--json")
    assert json.loads(out)["labels"] == {"0": 5, "3": 5, "7": 5}
    # auto mode: the threshold searches use (the references' own), not the model's stored fallback
    shown = run(capsys, "threshold", enrolled)[1].strip()
    assert json.loads(out)["threshold_from"] == "references" and json.loads(out)["threshold"] == float(shown)
    assert (json.loads(out)["scoring"], json.loads(out)["adapt"]) == ("nearest", None)  # as `default` advises
    assert run(capsys, "scoring", enrolled, "mean", "--adapt", "0.5")[0] == 0
    settings = json.loads(run(capsys, "labels", enrolled, "--json")[1])
    assert (settings["scoring"], settings["adapt"]) == ("mean", {"weight": 0.5, "ridge": 0.03})
    assert run(capsys, "scoring", enrolled, "nearest", "--no-adapt")[0] == 0
    assert run(capsys, "rename", enrolled, "7", "seven")[0] == 0
    assert run(capsys, "remove", enrolled, "0")[0] == 0
    assert run(capsys, "threshold", enrolled, "0.9")[0] == 0
    code, out, _ = run(capsys, "labels", enrolled, "--json")
    assert json.loads(out)["labels"] == {"3": 5, "seven": 5} and json.loads(out)["threshold"] == 0.9
    assert json.loads(out)["threshold_from"] == "fixed"


def test_embed_writes_rows_in_argument_order(digits, model, tmp_path, capsys):
    a, b = digits["4"][0], digits["9"][0]
    out = tmp_path / "e.npy"
    assert run(capsys, "embed", a, b, "--out", out)[0] == 0
    e = np.load(out)
    assert e.shape == (2, model.dim) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    code, _, err = run(capsys, "embed", b, a, "--out", out)  # an existing file is replaced only when asked
    assert code == 2 and err == f"byakugan: error: --out {out}: exists; add --overwrite to replace it, or name another file\n"
    assert run(capsys, "embed", b, a, "--out", out, "--overwrite")[0] == 0
    np.testing.assert_allclose(np.load(out), e[::-1], atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "{tmp}/none", "{img}"], "gallery {tmp}/none: does not exist"),
        (["search", "{gallery}", "{tmp}/nope.jpg"], "{tmp}/nope.jpg: no such file"),
        (["search", "{gallery}", "{text}"], "{text}: not an image"),
        (["remove", "{gallery}", "zz"], "label 'zz': not in gallery"),
        (["search", "{gallery}", "{img}", "--model", "efficientnet_lite0"], "built with model 'default'"),
        (["labels", "{tmp}"], "not a gallery (neither gallery.db nor gallery.json in it)"),
        (["search", "{tmp}/b.zip", "{img}"], "is an exported bundle, not a gallery folder: `byakugan serve`"),
        (["labels", "{tmp}/bundle"], "is an exported bundle, not a gallery folder"),
        (["embed", "{img}", "--out", "{tmp}/e.txt"], "must end with .npy"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(enrolled, digits, tmp_path, capsys, args, message):
    text = tmp_path / "notes.txt"
    text.write_text("plain text")
    (tmp_path / "b.zip").write_bytes(b"PK")  # named as a bundle archive is
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text("{}")
    fill = {"tmp": tmp_path, "gallery": enrolled, "img": digits["3"][7], "text": text}
    before = disk_state(enrolled)
    code, out, err = run(capsys, *[a.format(**fill) for a in args])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("byakugan: error: ")
    assert message.format(**fill) in err
    assert disk_state(enrolled) == before  # nothing lost or changed


def test_one_bad_image_among_several_is_reported_and_the_rest_answered(enrolled, digits, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, out, err = run(capsys, "search", enrolled, digits["3"][5], bad, digits["0"][5], "--json")
    assert code == 2 and "bad.png" in err
    res = json.loads(out)
    assert [("error" in r) for r in res] == [False, True, False]


def test_cli_process_has_no_traceback_for_bad_input(tmp_path):
    proc = subprocess.run([*BYAKUGAN, "labels", str(tmp_path / "missing")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"byakugan: error: gallery {tmp_path / 'missing'}: does not exist (create one with `byakugan enroll`, or Pipeline.new_gallery in Python)"


@pytest.mark.parametrize("args, told", [(["search", "G", "q.jpg", "--k", "abc"], "argument --k: invalid int value: 'abc'"),
                                        (["frobnicate"], "invalid choice: 'frobnicate'"),
                                        (["search"], "the following arguments are required: GALLERY, IMAGE"),
                                        (["threshold", "G", "1e400"], "'1e400' is not a cosine similarity between -1 and 1"),
                                        (["threshold", "G", "nan"], "'nan' is not a cosine similarity between -1 and 1")])
def test_bad_arguments_are_told_in_one_line(capsys, args, told):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and told in err and "-h)" in err


def test_a_write_the_system_refuses_is_one_line_not_a_traceback(digits, tmp_path, capsys, monkeypatch):
    import errno
    import os

    def full(fd):  # what a full disk does: the write or its fsync fails, naming no file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, out, err = run(capsys, "embed", digits["1"][0], "--out", tmp_path / "e.npy")
    assert code == 1 and err.strip().splitlines()[-1] == f"byakugan: error: {tmp_path / 'e.npy'}: No space left on device"
    assert "Traceback" not in err and not (tmp_path / "e.npy").exists()


def test_an_unknown_answer_says_whose_confidence_it_shows(enrolled, digits, capsys):
    """"unknown (79% confident ...)" read as 79% sure it is unknown; the 79% is the nearest label's."""
    code, out, err = run(capsys, "search", enrolled, digits["3"][0], digits["3"][6], "--threshold", "0.99")
    assert code == 0, err
    first, second = [line for line in out.splitlines() if not line.startswith("  ")]
    assert first.startswith(f"{digits['3'][0]}: 3 (") and " confident; score 1.000, threshold 0.990 = " in first
    assert re.fullmatch(rf"{re.escape(str(digits['3'][6]))}: unknown \(nearest 3, \d+% confident, below the \d+% needed; "
                        r"score 0\.\d{3}, threshold 0\.990 = \d+%\)", second), second


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"byakugan {version('byakugan')}\n"
