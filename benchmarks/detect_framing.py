"""How much of a face `anime-face-net` gives the embedder (its boxes' grow and grow_up), chosen on
sources other than the one end to end is reported on (issue #19). Prints JSON and writes --out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detect_framing.py [--per-class 50]

For each framing of a grid, the protocol of `byakugan evaluate --trials 10 --unknown-fraction 0.33
--seed 1` (class-mean top-1, FAR@TAR95, images with a face found), each picture by its first box:
- anime-faces pasted into seeded drone-gestures frames as detect_pasted.py pastes them (60-240 px
  wide, rotated up to 10 degrees), recognised by a model that never trained on anime-faces (the
  `anime-tuned` recipe trained on the other anime sources, --faces-model);
- anime-scenes as they are (whole pictures), by the same recipe trained without anime-scenes.
The two models are folds of `stage_finetune.py --cohort-patches 6098 --keep bench-out/folds`. The
framing (and --first: which box is the crop, the largest or the verifier's surest; --second-side:
a second look at another side where nothing is found) with the best
mean top-1 of the two is picked; anime-onepiece (what detect_pasted.py
reports) is not looked at. The verifier judges every box at its own framing, so the faces found do
not change with the framing, only what the embedder sees of them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_composed import files  # noqa: E402
from detect_end_to_end import evaluate  # noqa: E402
from detect_pasted import pasted  # noqa: E402

from byakugan.embedder.images import load_image  # noqa: E402
from byakugan.embedder.training.data import scan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


def figures(folder: Path, model: str, framing: tuple[float, float], side: int, first: str, second: int,
            whole: float) -> dict:
    return evaluate(str(folder), f"anime-face-net:grow={framing[0]},grow_up={framing[1]},side={side},first=\"{first}\","
                                 f"second_side={second},whole_above={whole}", model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grow", type=float, nargs="+", default=[0.0, 0.15, 0.3, 0.5])
    p.add_argument("--grow-up", type=float, nargs="+", default=[0.1, 0.35, 0.6])
    p.add_argument("--side", type=int, default=512, help="the detector's picture side (its setting `side`)")
    p.add_argument("--first", nargs="+", default=["largest"], choices=["largest", "surest"],
                   help="which box is the picture's crop (the detector's setting `first`): each is a row of the grid")
    p.add_argument("--second-side", type=int, nargs="+", default=[0],
                   help="the side of a second look where nothing is found (the detector's setting `second_side`, 0: "
                        "none): each is a row of the grid")
    p.add_argument("--whole-above", type=float, nargs="+", default=[0.0],
                   help="the share of the picture a first box covers from which the whole picture is the crop (the "
                        "detector's setting `whole_above`, 0: never): each is a row of the grid; with more than one, "
                        "the same anime-faces images as they are (tight crops) are a third set, by the faces model")
    p.add_argument("--per-class", type=int, default=50, help="anime-faces images a character, pasted")
    p.add_argument("--faces-model", default=str(ROOT / "bench-out" / "folds" / "anime-faces-finetuned"),
                   help="a model that never trained on anime-faces (stage_finetune.py's fold)")
    p.add_argument("--scenes-model", default=str(ROOT / "bench-out" / "folds" / "anime-scenes-finetuned"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "models" / "anime-face-net" / "framing.json"))
    a = p.parse_args()
    rng, frames, rows = random.Random(a.seed), files("drone-gestures"), []
    with tempfile.TemporaryDirectory() as tmp:
        crops = Path(tmp) / "crops"
        for sample in scan([DATA / "anime-faces"], per_class=a.per_class, seed=1):
            label = sample.label.split("/", 1)[1]
            for folder in (Path(tmp) / "pasted" / label, crops / label):
                folder.mkdir(parents=True, exist_ok=True)
            pasted(load_image(sample.path), load_image(rng.choice(frames)), rng)[0].save(
                Path(tmp) / "pasted" / label / f"{Path(sample.path).stem}.jpg", quality=92)
            (crops / label / Path(sample.path).name).symlink_to(Path(sample.path).resolve())
        for first, second, whole, *framing in itertools.product(a.first, a.second_side, a.whole_above, a.grow, a.grow_up):
            run = lambda folder, model: figures(folder, model, framing, a.side, first, second, whole)  # noqa: E731
            row = {"grow": framing[0], "grow_up": framing[1], "first": first, "second_side": second, "whole_above": whole,
                   "anime-faces pasted": run(Path(tmp) / "pasted", a.faces_model),
                   "anime-scenes": run(DATA / "anime-scenes", a.scenes_model)}
            if len(a.whole_above) > 1:
                row["anime-faces crops"] = run(crops, a.faces_model)
            sets = [k for k in ("anime-faces pasted", "anime-scenes", "anime-faces crops") if k in row]
            row["mean_top1"] = round(sum(row[k]["top1"] for k in sets) / len(sets), 4)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: r["mean_top1"])
    text = json.dumps({"protocol": "5-shot, 10 trials, unknown fraction 0.33, seed 1 (class-mean top-1, FAR@TAR95); "
                                   "each picture by its first anime-face-net box (largest, or surest: --first)",
                       "models": {"anime-faces pasted": a.faces_model, "anime-scenes": a.scenes_model},
                       "seed": a.seed, "side": a.side, "per_class": a.per_class, "rows": rows, "picked": {k: best[k] for k in ("grow", "grow_up", "first", "second_side", "whole_above")}},
                      indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
