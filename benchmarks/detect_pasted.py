"""Issue #19's last goal: recognition end to end on whole pictures against the same characters'
crops. Prints JSON and writes --out.

    .venv/bin/python benchmarks/detect_pasted.py [--source anime-onepiece] [--model anime]

Every image of SOURCE (head shots of characters; anime-onepiece: a series the `anime` model never
trained on) is pasted, as detect_composed.py pastes heads, into a seeded frame of drone-gestures (a
person in a room, 640x480), 60-240 px wide and rotated up to 10 degrees: the same characters and
the same images, now small in a whole picture. Then, in one run, `byakugan evaluate DIR --model M
--trials 10 --unknown-fraction 0.33 --seed 1` (class-mean top-1 and FAR@TAR95, images with a face
found) on:
- the source as it is, `--detector none` (the crops: the bar);
- the pasted pictures with each of --detectors (the first box is the crop; the whole picture
  where none is found); a detector is NAME or NAME:SETTING=VALUE,... (anime-face-net:side=512).
--diagnose splits the gap: each head alone, shrunk to the size it was pasted at (what resolution
costs), and each pasted picture cut at the box the head was pasted in (rotation, the frame's
corners in the box, JPEG: what a perfect detector with that box would give); and for each
detector, where its first box (the crop) lies: on the pasted head, elsewhere, or nowhere.
The pasted pictures are written to a temporary folder and removed (artists' images).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_composed import files  # noqa: E402
from detect_end_to_end import evaluate  # noqa: E402

from byakugan.embedder.detection import create_detector  # noqa: E402
from byakugan.embedder.images import list_images, load_image  # noqa: E402
from byakugan.ui.cli.evaluation import detector_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


def pasted(head: Image.Image, frame: Image.Image, rng: random.Random) -> tuple[Image.Image, tuple, tuple]:
    """head pasted into frame at a seeded place and size (60-240 px wide), rotated up to 10 degrees;
    the box it fills (x0, y0, x1, y1), and the head's size as pasted, before its rotation."""
    pic = frame.convert("RGB").resize((640, 480))
    side = rng.randint(60, 240)
    head = head.convert("RGB").resize((side, max(1, round(side * head.height / head.width))))
    size, angle = head.size, rng.uniform(-10, 10)
    mask = Image.new("L", head.size, 255).rotate(angle, expand=True)
    head = head.rotate(angle, expand=True)
    if head.width >= pic.width or head.height >= pic.height:  # a tall head shot: shrink it to fit
        before = head.width
        head.thumbnail((pic.width - 1, pic.height - 1))
        mask = mask.resize(head.size)
        size = tuple(max(1, round(v * head.width / before)) for v in size)
    x, y = rng.randint(0, pic.width - head.width), rng.randint(0, pic.height - head.height)
    pic.paste(head, (x, y), mask)
    return pic, (x, y, x + head.width, y + head.height), size


def first_box(detector: str, heads: dict) -> dict:
    """Where the detector's first box lies, as shares of the pasted pictures: centred in the pasted
    head; elsewhere while another box is on the head; elsewhere with none on it; no box at all."""
    name, _, extra = detector.partition(":")
    found = create_detector(detector_config(name, [kv for kv in extra.split(",") if kv]))
    counts = Counter()
    for path, (x0, y0, x1, y1) in heads.items():
        on = [x0 <= x + w / 2 <= x1 and y0 <= y + h / 2 <= y1 for x, y, w, h in (d.box for d in found(load_image(path)))]
        counts["no_box" if not on else "on_the_head" if on[0] else "another_box_on_the_head" if any(on)
               else "none_on_the_head"] += 1
    return {k: round(counts[k] / len(heads), 4) for k in ("on_the_head", "another_box_on_the_head", "none_on_the_head", "no_box")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="anime-onepiece")
    p.add_argument("--detectors", nargs="+", default=["anime-face", "anime-face-net"])
    p.add_argument("--model", default="anime", help="`anime` never trained on anime-onepiece")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--diagnose", action="store_true",
                   help="also the crops shrunk to their pasted size, and the pasted boxes cut out again (a perfect "
                        "detector), both with --detector none: what size and pasting cost before any detector; "
                        "and where each detector's first box lies")
    p.add_argument("--out", default=str(ROOT / "models" / "anime-face-net" / "end_to_end_pasted.json"))
    a = p.parse_args()
    rng, frames = random.Random(a.seed), files("drone-gestures")
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders, heads = {k: Path(tmp) / k for k in ("pasted", "small", "boxes")}, {}
        for d in sorted((DATA / a.source).iterdir()):
            if d.is_dir():
                for folder in folders.values():
                    (folder / d.name).mkdir(parents=True)
                for f in list_images(d):
                    head = load_image(f)
                    pic, box, size = pasted(head, load_image(rng.choice(frames)), rng)
                    name = f"{f.stem}.jpg"
                    pic.save(folders["pasted"] / d.name / name, quality=92)
                    heads[folders["pasted"] / d.name / name] = box
                    # the same head at the size it was pasted, alone; and the pasted box cut out again
                    head.convert("RGB").resize(size).save(folders["small"] / d.name / name, quality=92)
                    pic.crop(box).save(folders["boxes"] / d.name / name, quality=92)
        rows["crops, detector none"] = evaluate(str(DATA / a.source), "none", a.model)
        if a.diagnose:
            rows["crops shrunk to the pasted size, detector none"] = evaluate(str(folders["small"]), "none", a.model)
            rows["the pasted boxes cut out, detector none"] = evaluate(str(folders["boxes"]), "none", a.model)
        print(json.dumps(rows), file=sys.stderr, flush=True)
        tmp = str(folders["pasted"])
        for detector in a.detectors:
            rows[f"pasted, {detector}"] = evaluate(tmp, detector, a.model)
            if a.diagnose:
                rows[f"pasted, {detector}"]["first_box"] = first_box(detector, heads)
            print(json.dumps({detector: rows[f"pasted, {detector}"]}), file=sys.stderr, flush=True)
    bar = rows["crops, detector none"]["top1"]
    text = json.dumps({"protocol": f"byakugan evaluate DIR --detector D --model {a.model} --trials 10 "
                                   "--unknown-fraction 0.33 --seed 1 (class-mean top-1 and FAR@TAR95)",
                       "source": a.source, "seed": a.seed, "rows": rows,
                       "points_below_the_crops": {k: round(100 * (bar - r["top1"]), 1) for k, r in rows.items()
                                                  if k != "crops, detector none"}}, indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
