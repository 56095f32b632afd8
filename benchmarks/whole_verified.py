"""Issue #19: the whole picture as the face where `anime-face-net` finds none and its verifier says
the picture is a face (setting `whole_if_verified`). Prints JSON and writes --out.

The network learnt faces of 20-320 px pasted into 512 px pictures; a head shot whose face fills the
picture is beyond that, and in grey the network finds a box in three of five anime-onepiece head
shots. The verifier learnt face patches, which is what such a picture is. For every picture the
detector (as it ships, the whole picture never taken) finds nothing in, this records the
verifier's probability that the whole picture is a face, and counts, for each bar, the pictures
that would be taken whole.

The bar is chosen on the detector's own training photographs alone (`--choose-on`: the four hand
sources it pasted faces into; no anime face in them, so every whole picture taken there is a
mistake), each in colour and in grey: the lowest bar at which at most `--at-most` of each source's
pictures are taken whole. The other sources are reported at every bar: anime-onepiece (loose head
shots) and anime-scenes (whole illustrations), whose pictures all show a face; anime-faces (tight
crops); drone-gestures (frames of a person in a room: no anime face, never trained on).

    .venv/bin/python benchmarks/whole_verified.py --out models/anime-face-net/whole_verified.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from byakugan.embedder.detection import create_detector
from byakugan.embedder.detection.grey import is_grey
from byakugan.embedder.images import list_images, load_image
from output import emit

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BARS = (0.5, 0.6, 0.7, 0.8, 0.9)
TRAINING = ["rock-paper-scissors", "hand-fingers", "sign-digits", "asl-signs"]
REPORTED = ["anime-onepiece", "anime-scenes", "anime-faces", "drone-gestures"]


def pictures(source: str, n: int, seed: int) -> list[Path]:
    files = [f for d in sorted(p for p in (DATA / source).iterdir() if p.is_dir()) for f in list_images(d)]
    random.Random(seed).shuffle(files)
    return sorted(files[:n]) if n else files


def whole_probabilities(det, files: list[Path], grey: bool, label: str) -> dict:
    """Pictures, those with a box, and the verifier's probability on each of the others, whole."""
    probs, boxed, seconds = [], 0, 0.0
    for i, f in enumerate(files):
        if i % 100 == 0:
            print(f"{label}: {i}/{len(files)}", file=sys.stderr, flush=True)
        img = load_image(f)
        if grey:
            img = img.convert("L").convert("RGB")
        if det(img):
            boxed += 1
            continue
        start = time.perf_counter()
        probs.append(float(det.verifier([img], det.settings.grey and is_grey(img))[0]))  # the unit the detector asks
        seconds += time.perf_counter() - start
    p = np.array(probs)
    return {"pictures": len(files), "with_a_box": boxed,
            "taken_whole": {str(b): int((p >= b).sum()) for b in BARS},
            "with_a_box_or_whole": {str(b): round((boxed + int((p >= b).sum())) / max(1, len(files)), 4) for b in BARS},
            "verifier_ms_per_picture_without_a_box": round(1000 * seconds / len(probs), 2) if probs else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--choose-on", nargs="+", default=TRAINING)
    p.add_argument("--report", nargs="+", default=REPORTED)
    p.add_argument("--per-source", type=int, default=300, help="pictures drawn (seeded) from each --choose-on source; 0: all")
    p.add_argument("--report-per-source", type=int, default=0, help="the same for each --report source (0: all)")
    p.add_argument("--at-most", type=float, default=0.01, help="share of a training source's pictures taken whole")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    a = p.parse_args()
    det = create_detector({"name": "anime-face-net", "whole_if_verified": 0})
    runs = {}
    for source in a.choose_on + a.report:
        files = pictures(source, a.per_source if source in a.choose_on else a.report_per_source, a.seed)
        for grey in (False, True):
            label = f"{source}{' in grey' if grey else ''}"
            runs[label] = whole_probabilities(det, files, grey, label)
    chosen = next((b for b in BARS if all(runs[f"{s}{g}"]["taken_whole"][str(b)] <= a.at_most * runs[f"{s}{g}"]["pictures"]
                                          for s in a.choose_on for g in ("", " in grey"))), None)
    emit(json.dumps({"command": " ".join(sys.argv[1:]), "detector": det.config, "rule":
                     f"the lowest bar at which at most {a.at_most} of each --choose-on source's pictures, in colour "
                     "and in grey, are taken whole", "chosen_on": a.choose_on, "bars": list(BARS), "chosen": chosen,
                     "sources": runs}, indent=1), a.out)


if __name__ == "__main__":
    main()
