"""What every command module shares: exit codes, error lines, JSON and table output, shared options."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import unicodedata
from pathlib import Path
from typing import Iterator, Sequence

from byakugan.embedder.atomic import fsync_dir, write_atomic
from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.scoring.adapt import Adaptation, advised, completed
from byakugan.index import store
from byakugan.index.errors import shown
from byakugan.index.labels import JOINERS

EXIT_BAD_INPUT = 2


def report(msg: str) -> None:
    # printable: a file name in the message may hold a terminal's escape sequences or a line break
    print(f"byakugan: error: {printable(msg)}", file=sys.stderr)


def warn(msg: str) -> None:
    print(f"byakugan: warning: {printable(msg)}", file=sys.stderr)


def waiting(gallery) -> None:
    """Said when an edit waits for another one to end, which may take minutes (a reindex)."""
    print(f"byakugan: waiting for another program editing {printable(gallery)} to finish...", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(gallery: os.PathLike | str) -> Iterator[None]:
    """The gallery's lock for an edit (store.locked), saying when it waits for another."""
    path = Path(gallery)
    with store.locked(path, lambda: waiting(path)):
        yield


def adapt_value(text: str) -> dict:
    """--adapt WEIGHT[,RIDGE[,COHORT]]: the parts given, checked; the command fills the rest from the
    model's advice (embedder.scoring.adapt.completed)."""
    parts = text.split(",")
    try:
        if len(parts) > 3:
            raise ValueError(f"{len(parts)} parts")
        spec = dict(zip(("weight", "ridge", "cohort"), map(float, parts)))
        Adaptation.from_dict({"ridge": 0.03} | spec)  # each part in its range, told now
        return spec
    except ValueError as exc:
        why = str(exc) if len(str(exc)) <= 100 else str(exc)[:100] + "..."  # float() quotes the whole text
        raise argparse.ArgumentTypeError(f"{shown(text)}: {why} (WEIGHT, WEIGHT,RIDGE or WEIGHT,RIDGE,COHORT)") from None


def completed_for(gallery, given: dict) -> dict:
    """--adapt's parts for this gallery, the rest from its model's advice (read only when needed)."""
    from byakugan.index.pipeline import Pipeline  # only here: every command imports this module

    if len(given) == 3:
        return completed(given, None).to_dict()
    try:
        pipe = Pipeline.for_gallery(gallery)
    except ByakuganError as exc:
        raise ByakuganError(f"{exc}; the parts of --adapt left out come from the model's advice: give all three "
                            "(WEIGHT,RIDGE,COHORT)") from None
    return completed(given, advised(pipe.encoder, pipe.landmarks)).to_dict()


def check_new_file(path: os.PathLike | str, what: str, overwrite: bool) -> Path:
    """An output file that is there already is replaced only with --overwrite: told before any work."""
    p = Path(path)
    if not overwrite and (p.exists() or p.is_symlink()):
        raise ByakuganError(f"{what} {p}: exists; add --overwrite to replace it, or name another file")
    return p


def write_new(path: os.PathLike | str, data: bytes, what: str, overwrite: bool) -> Path:
    """write_atomic, but without --overwrite it replaces nothing, not even a file that appeared
    under the name while the work was done (as export places a bundle: a hard link refuses a name in use)."""
    p = Path(path)
    if overwrite:
        return write_atomic(p, data)
    staged = p.with_name(f".{p.name}.new-{os.getpid()}")
    try:
        write_atomic(staged, data, sync_dir=False)
        try:
            os.link(staged, p)
        except FileExistsError:
            raise ByakuganError(f"{what} {p}: appeared while it was being made; nothing was replaced (name another "
                                "file, or add --overwrite to replace it)") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            check_new_file(p, what, overwrite)  # a file system without hard links: checked again just before
            os.replace(staged, p)
        fsync_dir(p.parent)
    except OSError as exc:  # (a full disk) told of the file asked for, not of the one it was staged in
        raise OSError(exc.errno, exc.strerror or str(exc), str(p)) from exc
    finally:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
    return p


@contextlib.contextmanager
def saving(gallery: os.PathLike | str):
    """Around a gallery's save: a write the system refuses with no file named (a full disk, `ulimit -f`: "File too
    large" alone) is told of the gallery, and that it was left as it was (the save is all or nothing)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, f"could not be saved ({exc.strerror or exc}); nothing was changed",
                      f"gallery {os.fsdecode(gallery)}") from exc


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def printable(value: object) -> str:
    """str(value) with control and invisible formatting characters written as escapes: a file name
    sent to the server can hold a terminal's escape sequences or a direction override."""
    return "".join(f"\\u{ord(c):04x}" if c not in JOINERS and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                   else c for c in str(value))


def width(text: str) -> int:
    """Columns a terminal gives the text: two for a wide character (初音ミク, a full-width letter), none for a
    combining mark or a joiner. len() would misalign every column after a Japanese label."""
    return sum(0 if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def table(rows: list[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[printable(c) for c in r] for r in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c + " " * (w - width(c)) for c, w in zip(r, widths)).rstrip() for r in cells)


def seed(text: str) -> int:
    """argparse type of --seed: what numpy takes, told in one line before any work."""
    from byakugan.embedder.evaluation.protocol import check_seed

    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to {2**32 - 1}") from None


def detectors() -> list[str]:
    from byakugan.embedder.detection import list_detectors

    return list_detectors()


def landmarks_arg(s: argparse.ArgumentParser, when: str) -> None:
    s.add_argument("--landmarks", default="auto", metavar="NAME|DIR|none",
                   help=f"landmark model fused with the CNN embedding {when} (default: hand-landmarks-2 for detector hand)")


def given(a: argparse.Namespace, names: Sequence[str], rename: dict[str, str] | None = None) -> dict:
    """The options the user gave (parsers use argparse.SUPPRESS), keyed by config field name, so a
    config dataclass keeps the only copy of each default."""
    rename = rename or {}
    return {rename.get(k, k): v for k, v in vars(a).items() if k in names or k in rename}


def calibration(g):
    """The gallery's calibration, which needs its model; a fixed threshold is read without it, its
    strangers' share left unsaid, where the model cannot be loaded (moved, removed)."""
    from byakugan.index.pipeline import Pipeline

    try:
        return Pipeline.for_gallery(g, runtime="onnx").calibration(g)
    except ByakuganError:
        if g.threshold_auto:  # the threshold in force is the model's own work
            raise
        return None
