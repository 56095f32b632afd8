"""What a QA pass on the command line found: tables misaligned by Japanese labels, `search` silent until its
last image, a full disk told as "File too large" naming nothing, `ui --max-upload-mb 0` passed on to
Streamlit, and a long `enroll` with no progress on a terminal."""

import errno
import io
import os
import unicodedata

import pytest
from PIL import Image, ImageDraw

from tests.conftest import disk_state

from byakugan.index.gallery import Gallery
from byakugan.index.pipeline import Pipeline
from byakugan.ui.cli import main
from byakugan.ui.cli.common import table


def pictures(folder, n: int, seed: int = 0) -> list[str]:
    """n small pictures, each of its own colours and shape."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = Image.new("RGB", (64, 64), ((37 * (i + seed)) % 256, (91 * i) % 256, (53 * (i + 2 * seed)) % 256))
        ImageDraw.Draw(img).ellipse((4 + i % 9, 6, 40 + i % 20, 30 + i % 30), fill=(255 - 20 * i % 256, 40, 90))
        out.append(str(folder / f"p{i}.png"))
        img.save(out[-1])
    return out


@pytest.fixture()
def small(tmp_path):
    """A gallery of two labels (made by the CLI), and pictures to search it with."""
    a, b = pictures(tmp_path / "a", 3), pictures(tmp_path / "b", 3, seed=5)
    g = tmp_path / "g"
    assert main(["enroll", str(g), "a", *a, "--model", "default"]) == 0
    assert main(["enroll", str(g), "b", *b]) == 0
    return g, a + b


def width(text: str) -> int:
    """Terminal columns, for these few characters: wide ones take two, a combining accent none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) == "W" else 1 for c in text)


def test_table_columns_line_up_with_wide_and_combining_characters():
    lines = table([("初音ミク", 4), ("Rem", 12), ("e\u0301e", 1)], ("label", "references")).splitlines()
    # the second column starts at the same terminal column on every line
    starts = {width(line[: line.rindex(" ") + 1]) for line in lines}
    assert starts == {10}, lines
    from byakugan.ui.cli.common import width as shown_width

    assert (shown_width("初音ミク"), shown_width("e\u0301"), shown_width("Rem")) == (8, 1, 3)


def test_search_prints_each_answer_before_searching_the_next_image(small, monkeypatch, capsys):
    g, images = small
    capsys.readouterr()
    seen = []
    recognize = Pipeline.recognize

    def spy(self, gallery, image, *args, **kwargs):
        seen.append(capsys.readouterr().out)  # what was printed before this image was searched
        return recognize(self, gallery, image, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "recognize", spy)
    assert main(["search", str(g), *images[:3], "--k", "2"]) == 0
    rest = capsys.readouterr().out
    assert seen[0] == "" and seen[1].startswith(f"{images[0]}: ") and seen[2].startswith(f"{images[1]}: ")
    assert rest.startswith(f"{images[2]}: ")


def test_search_json_is_one_list_still(small, capsys):
    import json

    g, images = small
    capsys.readouterr()
    assert main(["search", str(g), *images[:2], "--json"]) == 0
    assert [item["image"] for item in json.loads(capsys.readouterr().out)] == images[:2]


@pytest.mark.parametrize("command", [["enroll", "{g}", "c", "{img}"], ["rename", "{g}", "a", "z"],
                                     ["threshold", "{g}", "0.5"], ["sequence", "{g}", "add", "s", "a", "b"]])
def test_a_save_the_system_refuses_names_the_gallery_and_changes_nothing(small, tmp_path, monkeypatch, capsys, command):
    g, images = small
    before = disk_state(g)

    def full(self):  # what a full disk or `ulimit -f` gives while the vectors are written: no file named
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(Gallery, "save", full)
    capsys.readouterr()
    assert main([a.format(g=g, img=images[0]) for a in command]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # (enroll warns first: the picture is enrolled already)
    assert err == f"byakugan: error: gallery {g}: could not be saved (File too large); nothing was changed"
    assert disk_state(g) == before


@pytest.mark.parametrize("value, told", [("0", "0: must be 1 to 4096 (megabytes)"),
                                         ("-5", "-5: must be 1 to 4096 (megabytes)"),
                                         ("2.5", "'2.5': not a whole number")])
def test_ui_refuses_an_upload_limit_streamlit_cannot_take(monkeypatch, capsys, value, told):
    def never(*args):
        raise AssertionError("Streamlit was started")

    monkeypatch.setattr(os, "execve", never)
    with pytest.raises(SystemExit) as exit:
        main(["ui", "--max-upload-mb", value])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1
    assert f"argument --max-upload-mb: {told}" in err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_enroll_shows_its_progress_on_a_terminal_and_not_in_a_file(tmp_path, monkeypatch, capsys):
    images = pictures(tmp_path / "many", 12)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert main(["enroll", str(tmp_path / "g"), "many", *images, "--model", "default"]) == 0
    import sys

    shown = sys.stderr.getvalue()
    # tqdm redraws at most every 0.1 s and a bar that does not stay is wiped at the end: "0/12" is sure, "12/12" is not
    assert "reading many" in shown and "embedding" in shown and "/12 [" in shown
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["enroll", str(tmp_path / "g"), "more", *images]) == 0
    assert "embedding" not in capsys.readouterr().err  # a log file gets no bar


def test_an_interrupted_command_says_so_and_what_it_left(small, monkeypatch, capsys):
    """Ctrl-C used to end a command without a word: no telling an interruption from a finished run."""
    g, images = small
    before = disk_state(g)

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "recognize", interrupted)
    capsys.readouterr()
    assert main(["search", str(g), images[0]]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted; every gallery and model folder is as its last completed save left it" in err
    assert disk_state(g) == before


@pytest.mark.parametrize("flags, told", [(["--embed-every", "0"], "--embed-every 0: must be a whole number, at least 1"),
                                         (["--window", "3", "--enter", "5"], "--enter 5: must be more than half the window"),
                                         (["--max-gap", "-1"], "--max-gap -1.0: must be a positive number of seconds")])
def test_watch_names_the_flag_of_a_bad_setting_before_opening_the_video(small, capsys, flags, told):
    """It named the settings field (`embed_every 0`, `smoothing enter 5`), and only once the video had opened."""
    g, _ = small
    capsys.readouterr()
    assert main(["watch", str(g), "0", *flags]) == 2  # camera 0: there is none here, and it is not opened
    err = capsys.readouterr().err
    assert err == f"byakugan: error: {told}" + err.split(told, 1)[1] and err.count("\n") == 1


def test_cli_qa_round_two_closed_stdout_double_dash_ids_and_escapes(digit_gallery, tmp_path, capsys, monkeypatch):
    """A closed stdout is not a traceback after the work is done; "--" ends the options; --id takes
    ASCII digits, and repeated removes them all; success lines escape control characters."""
    import shutil
    import sys

    from byakugan.index import Gallery
    from byakugan.ui.cli import main

    g = shutil.copytree(digit_gallery, tmp_path / "-g")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["labels", "--json", "--", "-g"]) == 0  # (stdout closed, and a gallery named like an option)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["remove", str(g), "--id", "\u0661"])
    assert exc.value.code == 2 and "'\u0661' is not a reference id" in capsys.readouterr().err
    ids = [r.id for r in Gallery.open(g).references("3")[:2]]
    assert main(["remove", str(g), "--id", str(ids[0]), "--id", str(ids[1])]) == 0
    assert Gallery.open(g).labels()["3"] == 3 and capsys.readouterr().out.count("removed reference") == 2
    assert main(["remove", str(g), "--id", str(ids[0]), "--id", "99999"]) == 2  # one not there: none removed
    assert Gallery.open(g).labels()["3"] == 3
    capsys.readouterr()
    assert main(["rename", str(g), "7", "seven\u001b[31m"]) == 2  # refused label; the refusal escaped as before
    assert "\u001b" not in capsys.readouterr().err
    assert main(["threshold", str(g), "-1"]) == 0
    assert "that is most of them" in capsys.readouterr().err  # set where every stranger passes: said at once
