"""How a benchmark hands over its JSON: printed, and written whole to --out where given (a reader of
the file never sees half of it, nor an older run's tail)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from byakugan.embedder.atomic import write_atomic


def emit(text: str, out: Optional[str]) -> None:
    if out:
        write_atomic(Path(out), (text + "\n").encode())
    print(text)
