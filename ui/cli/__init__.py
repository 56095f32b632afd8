"""The `byakugan` command line. Each module registers its commands' parsers beside their handlers;
any ByakuganError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from byakugan.embedder.errors import ByakuganError

from . import evaluation, gallery, models, serving
from .common import EXIT_BAD_INPUT, report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="byakugan", description="Recognise characters and gestures from a few enrolled images.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (gallery, models, evaluation, serving):
        module.register(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import faiss

    # The CLI searches a few images at a time. On 10k references a single query took 8-10 ms with
    # one OpenMP thread in every run of benchmarks/speed.py here, and 8-19 ms with two.
    faiss.omp_set_num_threads(1)
    try:
        return args.func(args)
    except ByakuganError as exc:
        report(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
