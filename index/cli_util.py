"""Output helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from typing import Sequence

import numpy as np

import embedder

EXIT_BAD_INPUT = 2


def _report(msg: str) -> None:
    print(f"byakugan: error: {msg}", file=sys.stderr)


def _embed_reporting(model: embedder.Embedder, images: Sequence, progress: bool) -> tuple[np.ndarray, list[bool]]:
    """Embed what can be read; report each bad file (or an ImageError already met) on stderr and mark it."""
    emb, errors = model.embed_each(images, progress=progress)
    for err in errors:
        if err is not None:
            _report(str(err))
    return emb, [e is None for e in errors]


def _print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _table(rows: list[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)
