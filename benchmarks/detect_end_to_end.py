"""Anime detectors end to end, side by side in one run: recognition on sources of whole pictures,
head shots and crops, each image by its first detection (the whole image where none is found).
Prints JSON and writes --out.

    .venv/bin/python benchmarks/detect_end_to_end.py [--sources anime-scenes anime-onepiece]
        [--detectors anime-face anime-face-verified anime-face-net] [--out models/anime-face-net/end_to_end.json]

Each cell is `byakugan evaluate SOURCE --detector D --model anime --trials 10 --unknown-fraction
0.33 --seed 1` (a detector may be NAME:SETTING=VALUE,..., given as --detector-setting):
class-mean top-1, FAR@TAR95 (class mean) and the share of images with a face found. --grey: each
source copied in shades of grey first (PNG, into a temporary folder), as manga pages are.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from byakugan.embedder.images import list_images, load_image
from byakugan.ui.cli import main as byakugan

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


def evaluate(source: str, detector: str, model: str) -> dict:
    """`byakugan evaluate SOURCE --detector D --model M --trials 10 --unknown-fraction 0.33 --seed 1`;
    a detector may be NAME:SETTING=VALUE,... (anime-face-net:grow=0,grow_up=0.6: --detector-setting)."""
    name, _, extra = detector.partition(":")
    folder = Path(source) if Path(source).is_dir() else DATA / source
    args = ["evaluate", str(folder), "--detector", name, "--model", model, "--trials", "10",
            "--unknown-fraction", "0.33", "--seed", "1", "--json"]
    args += [x for kv in extra.split(",") if kv for x in ("--detector-setting", kv)]
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        if byakugan(args) != 0:
            raise SystemExit(f"byakugan {' '.join(args)} failed")
    s = json.loads(out.getvalue())
    return {"top1": s["top1_prototype"], "far_at_tar95": s["far_at_tar95_mean"], "detected": s.get("detected"),
            "images": s["images"], "seconds": round(time.perf_counter() - start)}


def grey_copy(source: Path, to: Path) -> Path:
    """The source's class folders with every picture in shades of grey (PNG: no new JPEG colour noise)."""
    for d in sorted(p for p in source.iterdir() if p.is_dir()):
        (to / d.name).mkdir(parents=True)
        for f in list_images(d):
            if (to / d.name / (f.stem + ".png")).exists():
                raise SystemExit(f"{f}: another picture of {d} has the name {f.stem}; a grey copy would replace it")
            load_image(f).convert("L").save(to / d.name / (f.stem + ".png"))
    return to


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", nargs="+", default=["anime-scenes", "anime-onepiece"])
    p.add_argument("--detectors", nargs="+", default=["anime-face", "anime-face-verified", "anime-face-net"])
    p.add_argument("--model", default="anime", help="the same for every detector; `anime` trained on anime-faces "
                   "alone (8 of its 12 characters), so anime-scenes and anime-onepiece are sources it never saw "
                   "(`anime-tuned`, which new anime galleries get, trained on all three)")
    p.add_argument("--grey", action="store_true", help="every picture in shades of grey (as manga pages are)")
    p.add_argument("--out", default=str(ROOT / "models" / "anime-face-net" / "end_to_end.json"))
    a = p.parse_args()
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.sources:
            folder = grey_copy(DATA / source, Path(tmp) / source) if a.grey else source
            for detector in a.detectors:
                rows.setdefault(source, {})[detector] = evaluate(str(folder), detector, a.model)
                print(json.dumps({source: {detector: rows[source][detector]}}), file=sys.stderr, flush=True)
    text = json.dumps({"protocol": f"byakugan evaluate SOURCE --detector D --model {a.model} --trials 10 "
                                   "--unknown-fraction 0.33 --seed 1 (class-mean top-1 and FAR@TAR95)",
                       "grey": a.grey, "sources": rows}, indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
