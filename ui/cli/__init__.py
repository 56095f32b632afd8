"""The `byakugan` command line. Each module registers its commands' parsers beside their handlers;
any ByakuganError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import warnings
from typing import Optional, Sequence

from byakugan.embedder.errors import ByakuganError, ByakuganWarning

from . import evaluation, gallery, live, models, scores, serving
from .common import EXIT_BAD_INPUT, report, warn


class _OneLine(argparse.ArgumentParser):
    """Bad arguments are told in one line (argparse's own error, which names the argument and the
    reason, and where to see the usage), exit 2, as every other bad input is."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


class _Intermixed(_OneLine):
    """A command's parser that takes options between positionals (`enroll G --model M LABEL A.jpg`),
    which plain argparse stops at. argparse cannot do this with subparsers itself, so each
    command's parser does it for its own arguments."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            # "--" ends the options (a gallery or picture named "-g"); the intermixed parse drops it
            # (Python 3.11) and then reads what follows as options: plain parsing keeps it.
            ns, extras = (super().parse_known_args(args, namespace) if args is not None and "--" in args
                          else self.parse_known_intermixed_args(args, namespace))
        finally:
            self._inside = False
        if extras:  # said here, where the help to see is this command's, not the top level's
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a service manager, `docker stop`): the command stops as on Ctrl-C, its
    clean-up runs (temporary folders of an export or of a served bundle), exit 143 (128 + 15)."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not break off the clean-up
    raise Terminated


def _show_warning(others, message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, ByakuganWarning):  # ours: one line, as the CLI's own warnings
        warn(str(message))
    else:  # as they were shown before (a test runner records them)
        others(message, category, filename, lineno, file, line)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("byakugan")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = _OneLine(prog="byakugan", description="Recognise characters and gestures from a few enrolled images.")
    p.add_argument("--version", action="version", version=f"byakugan {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Intermixed)
    for module in (gallery, scores, live, models, evaluation, serving):
        module.register(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    for name in ("stdout", "stderr"):  # started with it closed (`>&-`): what it would say goes nowhere, as to a
        if getattr(sys, name) is None:  # reader that left, not a traceback after the work was done
            setattr(sys, name, open(os.devnull, "w"))
    args = build_parser().parse_args(argv)
    import faiss

    # The CLI searches a few images at a time. On 10k references a single query took 8-10 ms with
    # one OpenMP thread in every run of benchmarks/speed.py here, and 8-19 ms with two.
    faiss.omp_set_num_threads(1)
    # uvicorn puts this back when it stops serving and raises the signal it caught again.
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            return args.func(args)
    except ByakuganError as exc:
        report(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:  # said, so a silent exit is not taken for success or for damage
        terminated = isinstance(exc, Terminated)
        print(f"byakugan: interrupted{' (SIGTERM)' if terminated else ''}; every gallery and model folder is as its "
              "last completed save left it", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `byakugan watch ... --json | head`: the reader left; nothing to say
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:  # the system refused a write (a full disk, a read-only folder): one line, no traceback
        report(f"{os.fsdecode(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
