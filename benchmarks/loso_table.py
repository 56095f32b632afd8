"""Markdown tables from benchmarks/loso.py outputs: one row per left-out source, then the mean and
the worst per domain. Anime: class-mean top-1 / FAR@TAR95; hands: nearest top-1 / FAR@TAR95.

    .venv/bin/python benchmarks/loso_table.py models/loso-all.json models/loso-today.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(cell: dict | None) -> str:
    return f"{cell['top1']:.3f} / {cell['far_at_tar95']:.2f}" if cell else "–"


def main() -> None:
    runs = {Path(p).stem: json.loads(Path(p).read_text()) for p in sys.argv[1:]}
    first = next(iter(runs.values()))
    cols = [(name, "trained_on_the_others") for name in runs] + [(next(iter(runs)), "frozen_imagenet")]
    head = [f"{name} recipe" for name in runs] + ["frozen ImageNet"]
    print("| left-out source | " + " | ".join(head) + " | hand parts (CNN / landmarks), first run |")
    print("|---|" + "---|" * (len(head) + 1))
    for source, row in first["sources"].items():
        cells = [fmt(runs[n]["sources"].get(source, {}).get(k)) for n, k in cols]
        parts = row["trained_on_the_others"].get("parts")
        extra = f"{parts['cnn']['top1']:.3f} / {parts['landmarks']['top1']:.3f}" if parts else ""
        print(f"| {source} ({row['domain']}) | " + " | ".join(cells) + f" | {extra} |")
    for domain in ("anime", "hand"):
        for stat in ("mean", "worst"):
            cells = []
            for n, k in cols:
                s = runs[n]["summary"].get(k, {}).get(domain)
                if not s:
                    cells.append("–")
                elif stat == "mean":
                    cells.append(f"{s['mean_top1']:.3f} / {s['mean_far_at_tar95']:.2f}")
                else:
                    cells.append(f"{s['worst']['top1']:.3f} / {s['worst']['far_at_tar95']:.2f} ({s['worst']['source']})")
            print(f"| **{domain} {stat}** | " + " | ".join(cells) + " | |")


if __name__ == "__main__":
    main()
