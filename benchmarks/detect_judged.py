"""Issue #19: the share of an anime detector's boxes that are faces on real pictures, judged by eye.
Prints JSON and writes --out.

The composed benchmark (detect_composed.py) counts boxes against pasted heads in photographs of
people; these sources are drawn pictures nobody pasted anything into, with no box annotations:
anime-scenes (whole illustrations) and anime-onepiece (loose head shots), neither trained on by the
detector. Every box the detector returns is cut out onto numbered contact sheets (--sheets DIR:
they hold the artists' pictures, so keep them out of the repository); a person looks at them and
writes down the boxes that are not faces in a judgement file (--judged, committed):

    {"detector": ..., "rule": ..., "boxes": {"SOURCE/CLASS/FILE#N": {"box": [x, y, w, h], "verdict": "face"}}}

`--template` writes one with every box "face", to edit. A box counts as judged when a judged box
of the same picture overlaps it (IoU >= 0.5; each judged box once, best overlap first); any other
box is reported as unjudged, so a changed detector cannot borrow an old judgement. Verdicts: "face" (a drawn face,
the box on it and covering most of it), "part" (on a face but cutting most of it away), "not" (no
face: hair, a body, clothes, background). The share of boxes that are faces counts "part" as not a
face. Per source: the share of pictures with a box (`found`), with a box judged a face
(`pictures_with_a_face_box`), and whose first box, the one enrolment and `evaluate` crop, is a face
(`first_box_a_face`).

    .venv/bin/python benchmarks/detect_judged.py --sheets bench-out/sheets --template bench-out/judged.json
    .venv/bin/python benchmarks/detect_judged.py --judged models/anime-face-net/judged_boxes.json [--grey --out F]

A changed detector (or the same in grey) returns boxes nobody judged: `--judged FILE --unjudged
--sheets DIR --template NEW` shows only those, keyed `PICTURE#+N` apart from FILE's; once judged,
NEW's boxes are added to FILE's (renumbered where two templates made from one FILE clash) and the
figures counted again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from byakugan.embedder.atomic import write_atomic
from byakugan.embedder.detection import create_detector
from byakugan.embedder.images import list_images, load_image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
VERDICTS = ("face", "part", "not")
TILE, COLS, ROWS = 128, 8, 8
DEFAULT_DETECTOR = '{"name": "anime-face-net"}'
SHIPPED_FIGURES = ROOT / "models" / "anime-face-net" / "judged.json"
RULE = ("face: a drawn face, the box on it and covering most of it; part: on a face but cutting most of it "
        "away; not: no face")


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / max(aw * ah + bw * bh - inter, 1)


def detect(sources: list[str], detector: dict, grey: bool = False) -> tuple[list[dict], dict]:
    """Every box on every picture of the sources: key, box, crop; and pictures and time per source.
    grey: each picture in shades of grey first, as a manga page is."""
    det = create_detector(detector)
    boxes, per_source = [], {}
    for source in sources:
        files = [f for d in sorted(p for p in (DATA / source).iterdir() if p.is_dir()) for f in list_images(d)]
        found, seconds = 0, 0.0
        for n, f in enumerate(files):
            img = load_image(f)
            if grey:
                img = img.convert("L").convert("RGB")
            start = time.perf_counter()
            found_here = det(img)
            seconds += time.perf_counter() - start
            found += bool(found_here)
            for i, d in enumerate(found_here):
                key = f"{source}/{f.parent.name}/{f.name}#{i}"
                boxes.append({"key": key, "source": source, "box": list(map(int, d.box)), "crop": d.crop(img),
                              "score": d.score, "picture": img.size})
            if n % 100 == 0:
                print(f"{source}: {n}/{len(files)} pictures", file=sys.stderr, flush=True)
        per_source[source] = {"pictures": len(files), "with_a_box": found, "ms_per_picture": round(1000 * seconds / len(files), 1)}
    return boxes, per_source


def sheets(boxes: list[dict], folder: Path) -> None:
    """Numbered contact sheets of every box (the number is the box's place in the template's order)."""
    folder.mkdir(parents=True, exist_ok=True)
    per = COLS * ROWS
    for s in range(0, len(boxes), per):
        sheet = Image.new("RGB", (COLS * TILE, ROWS * TILE), "white")
        draw = ImageDraw.Draw(sheet)
        for j, b in enumerate(boxes[s:s + per]):
            x, y = TILE * (j % COLS), TILE * (j // COLS)
            sheet.paste(b["crop"].convert("RGB").resize((TILE - 4, TILE - 4)), (x + 2, y + 2))
            draw.rectangle((x + 2, y + 2, x + 34, y + 14), fill="black")
            draw.text((x + 4, y + 3), str(s + j), fill="yellow")
        sheet.save(folder / f"sheet-{s // per:03d}.png")


def unused_keys(boxes: list[dict], judged: dict) -> list[str]:
    """A key for each box that no judged box of its picture has: PICTURE#+N, N counting on from the
    picture's judged boxes, so new verdicts can be added to a judgement file beside the old."""
    taken = {}
    for key in judged:
        picture = key.rpartition("#")[0]
        taken[picture] = taken.get(picture, 0) + 1
    keys = []
    for b in boxes:
        picture = b["key"].rpartition("#")[0]
        n = taken.get(picture, 0)
        while f"{picture}#+{n}" in judged:
            n += 1
        taken[picture] = n + 1
        keys.append(f"{picture}#+{n}")
    return keys


def judge(boxes: list[dict], judged: dict) -> dict[str, str]:
    """Each box's verdict: that of a judged box of the same picture it overlaps (IoU >= 0.5), each
    judged box given once, best overlap first (any number: a detector that drops a box renumbers the
    rest); else 'unjudged'."""
    by_picture: dict[str, list[dict]] = {}
    for key, j in judged.items():
        by_picture.setdefault(key.rpartition("#")[0], []).append(j)
    found: dict[str, list[dict]] = {}
    for b in boxes:
        found.setdefault(b["key"].rpartition("#")[0], []).append(b)
    verdicts = {b["key"]: "unjudged" for b in boxes}
    for picture, got in found.items():
        pairs = sorted(((iou(j["box"], b["box"]), n, m) for n, b in enumerate(got)
                        for m, j in enumerate(by_picture.get(picture, []))), reverse=True)
        used_box, used_judged = set(), set()
        for overlap, n, m in pairs:
            j = by_picture[picture][m]
            if overlap < 0.5:
                break
            if n not in used_box and m not in used_judged and j.get("verdict") in VERDICTS:
                verdicts[got[n]["key"]] = j["verdict"]
                used_box.add(n)
                used_judged.add(m)
    return verdicts


def counted(boxes: list[dict], verdicts: dict[str, str], row: dict, source: str) -> dict:
    """One source's figures: detect()'s row for it, then its boxes by verdict and the shares of them."""
    v = [verdicts[b["key"]] for b in boxes if b["source"] == source]
    counts = {k: v.count(k) for k in VERDICTS + ("unjudged",)}
    n = len(v)
    firsts = [verdicts[b["key"]] for b in boxes if b["source"] == source and b["key"].endswith("#0")]
    faced = {b["key"].rpartition("#")[0] for b in boxes if b["source"] == source and verdicts[b["key"]] == "face"}
    return {
        **row, "found": round(row["with_a_box"] / row["pictures"], 4), "boxes": n,
        "boxes_per_picture": round(n / row["pictures"], 3), **counts,
        "boxes_that_are_faces": round(counts["face"] / n, 4) if n else None,
        "boxes_not_faces": round((counts["part"] + counts["not"]) / n, 4) if n else None,
        "pictures_with_a_face_box": round(len(faced) / row["pictures"], 4),
        "first_box_a_face": round(firsts.count("face") / row["pictures"], 4),
        "not_faces": sorted(b["key"] for b in boxes if b["source"] == source and verdicts[b["key"]] in ("part", "not")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", nargs="+", default=["anime-scenes", "anime-onepiece"])
    p.add_argument("--detector", default=DEFAULT_DETECTOR, help="a detector config (JSON)")
    p.add_argument("--grey", action="store_true", help="every picture in shades of grey (as manga pages are); "
                   "its boxes are judged by the judgement of the same pictures in colour, box for box by overlap")
    p.add_argument("--sheets", help="write numbered contact sheets of every box into this folder")
    p.add_argument("--template", help="write a judgement file with every box 'face', to edit")
    p.add_argument("--judged", help="the judgement file to count with")
    p.add_argument("--unjudged", action="store_true", help="sheets and template of only the boxes --judged does "
                   "not cover, keyed apart from its boxes: judged, their entries are added to its \"boxes\"")
    p.add_argument("--out", help=f"the JSON file to write (default {SHIPPED_FIGURES.relative_to(ROOT)}, only for "
                   "the shipped detector in colour: any other run names its file)")
    a = p.parse_args()
    if a.out is None and a.judged:
        if a.grey or a.unjudged or a.detector != DEFAULT_DETECTOR:
            p.error("--out: name the file to write; the default, judged.json, holds the shipped detector's figures in colour")
        a.out = str(SHIPPED_FIGURES)
    try:
        detector = json.loads(a.detector)
    except ValueError:
        p.error(f"--detector {a.detector!r}: not JSON (for example '{{\"name\": \"anime-face-net\"}}')")
    if a.judged and not Path(a.judged).is_file():
        p.error(f"--judged {a.judged}: no such file")
    if a.unjudged and not a.judged:
        p.error("--unjudged needs --judged: the boxes it leaves out are those a judgement file covers")
    boxes, per_source = detect(a.sources, detector, a.grey)
    judged = json.loads(Path(a.judged).read_text()) if a.judged else {"boxes": {}}
    verdicts = judge(boxes, judged["boxes"])
    shown = [b for b in boxes if verdicts[b["key"]] == "unjudged"] if a.unjudged else boxes
    if a.sheets:
        sheets(shown, Path(a.sheets))
    if a.template:
        keys = unused_keys(shown, judged["boxes"]) if a.unjudged else [b["key"] for b in shown]
        template = {"detector": detector, "grey": a.grey, "rule": RULE,
                    "boxes": {k: {"box": b["box"], "verdict": "face", "sheet_number": n}
                              for n, (k, b) in enumerate(zip(keys, shown))}}
        write_atomic(Path(a.template), json.dumps(template, indent=1).encode())
    if not a.judged:
        return
    out = {"detector": detector, "grey": a.grey, "judged_by": a.judged, "rule": judged.get("rule", RULE),
           "sources": {source: counted(boxes, verdicts, row, source) for source, row in per_source.items()}}
    v = list(verdicts.values())
    out["all"] = {"boxes": len(v), "faces": v.count("face"), "unjudged": v.count("unjudged"),
                  "boxes_not_faces": round((v.count("part") + v.count("not")) / max(len(v), 1), 4)}
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        write_atomic(Path(a.out), (text + "\n").encode())


if __name__ == "__main__":
    main()
