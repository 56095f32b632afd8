"""Issue #19: the heat a face beyond the first must reach in anime-face-net (setting
`others_min_score`), and what each bar costs and saves. Prints JSON and writes --out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/others_min_score.py

The detector runs once per picture with no bar (others_min_score 0); each bar is then applied to
the boxes beyond the first, which is kept whatever its heat (it is what enrolment and `evaluate`
crop), and counted on:
- the network's 200 threshold pictures (composed with the training face patches, seed 1, known
  boxes): the heat of the faces it finds beyond the first (`rule`: the shipped bar is their 5th
  percentile, so that it keeps 95% of them);
- drawn pictures nobody pasted into, every box judged by eye (benchmarks/detect_judged.py and its
  judgement file): the share of boxes that are not faces, and of the judged faces kept;
- photographs with anime heads pasted in (benchmarks/detect_composed.py's 200 pictures): the
  share of boxes that are not faces, and of the pasted faces found.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.atomic import write_atomic
from byakugan.embedder.detection import create_detector
from byakugan.embedder.training.face_net import data, matches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_composed import compose, files  # noqa: E402
from detect_judged import detect, judge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BARS = (0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def kept(rows: list[dict], bar: float) -> list[dict]:
    return [r for r in rows if r["rank"] == 0 or r["heat"] >= bar]


def beyond_first(rows: list[dict], *verdicts: str) -> int:
    return sum(r["rank"] > 0 and r["verdict"] in verdicts for r in rows)


def median(rows: list[dict], source: str, which) -> float:
    return round(float(np.median([r["heat"] for r in rows if r["source"] == source and which(r)])), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--judged", default=str(ROOT / "models" / "anime-face-net" / "judged_boxes.json"))
    p.add_argument("--out", default=str(ROOT / "models" / "anime-face-net" / "others_min_score.json"))
    a = p.parse_args()
    config = {"name": "anime-face-net", "others_min_score": 0}
    det = create_detector(config)

    pictures, truth = data(200, 1, lambda m: None)
    beyond = [d.score for pic, known in zip(pictures, truth) for i, d in enumerate(det(pic))
              if i > 0 and any(matches(d.box, t) for t in known)]
    rule = {"faces_beyond_the_first": len(beyond), "heat_q05": round(float(np.quantile(beyond, 0.05)), 4),
            "heat_q50": round(float(np.quantile(beyond, 0.5)), 4)}

    judged = json.loads(Path(a.judged).read_text())["boxes"]
    boxes, per_source = detect(["anime-scenes", "anime-onepiece"], config)
    verdicts = judge(boxes, judged)
    drawn = [{"source": b["source"], "picture": b["key"].rpartition("#")[0], "rank": int(b["key"].rpartition("#")[2]),
              "heat": b["score"], "verdict": verdicts[b["key"]]} for b in boxes]
    pictures_of = {s: row["pictures"] for s, row in per_source.items()}
    heat = {s: {"first_boxes_that_are_faces_median": median(drawn, s, lambda r: r["rank"] == 0 and r["verdict"] == "face"),
                "not_faces_beyond_the_first_median": median(drawn, s, lambda r: r["rank"] > 0 and r["verdict"] in ("part", "not"))}
            for s in pictures_of}

    rng = random.Random(0)  # detect_composed.py's pictures (seed 0)
    heads = files("anime-onepiece") + files("anime-faces")
    composed = [compose(rng, files("drone-gestures"), heads) for _ in range(200)]
    pasted = []
    for n, (pic, known) in enumerate(composed):
        for i, d in enumerate(det(pic)):
            hit = [j for j, t in enumerate(known) if matches(d.box, t)]
            pasted.append({"picture": n, "rank": i, "heat": d.score, "face": hit[0] if hit else None})
    faces_pasted = sum(len(t) for _, t in composed)

    bars = {}
    for bar in BARS:
        row = {}
        for source in ("anime-scenes", "anime-onepiece"):
            rows = [r for r in drawn if r["source"] == source]
            k = kept(rows, bar)
            faces = sum(r["verdict"] == "face" for r in k)
            row[source] = {"boxes": len(k), "not_faces": round(1 - faces / max(len(k), 1), 4),
                           "judged_faces_kept": round(faces / max(1, sum(r["verdict"] == "face" for r in rows)), 4),
                           "faces_beyond_the_first_kept": f"{beyond_first(k, 'face')} of {beyond_first(rows, 'face')}",
                           "not_faces_beyond_the_first_kept": f"{beyond_first(k, 'part', 'not')} of "
                                                              f"{beyond_first(rows, 'part', 'not')}",
                           "pictures_with_a_face_box": round(len({r["picture"] for r in k if r["verdict"] == "face"})
                                                             / pictures_of[source], 4),
                           "unjudged": sum(r["verdict"] == "unjudged" for r in k)}
        k = kept(pasted, bar)
        found = {(r["picture"], r["face"]) for r in k if r["face"] is not None}
        row["composed"] = {"boxes": len(k), "not_faces": round(sum(r["face"] is None for r in k) / max(len(k), 1), 4),
                           "pasted_faces_found": round(len(found) / faces_pasted, 4),
                           "faces_beyond_the_first_kept": f"{sum(r['rank'] > 0 and r['face'] is not None for r in k)} of "
                                                          f"{sum(r['rank'] > 0 and r['face'] is not None for r in pasted)}",
                           "not_faces_beyond_the_first_kept": f"{sum(r['rank'] > 0 and r['face'] is None for r in k)} of "
                                                              f"{sum(r['rank'] > 0 and r['face'] is None for r in pasted)}"}
        bars[str(bar)] = row
        print(json.dumps({str(bar): row}), file=sys.stderr, flush=True)
    out = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/others_min_score.py", "judged": a.judged,
           "threshold_pictures": rule, "heat_on_drawn_pictures": heat, "bars": bars}
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        write_atomic(Path(a.out), (text + "\n").encode())


if __name__ == "__main__":
    main()
