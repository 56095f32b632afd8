"""Which model a new gallery with detector none takes from its first images (issue #14: "the right
model without being asked"), counted on every source of ../shared/datasets. Prints JSON.

    .venv/bin/python benchmarks/model_pick.py [--draws 100] [--out models/anime-tuned/model_pick.json]

Per source: --draws seeded first enrolments (one class, 5 of its images, as `byakugan enroll G LABEL
a.jpg ... e.jpg` would make a gallery), the share that take the anime model
(byakugan.embedder.embedding.hub.choose_model); the share of its images the verifier calls anime
faces, each alone (--per-source seeded images); what `byakugan evaluate SOURCE` with no --model
takes (its 32 images spread over the source); and the check's milliseconds per image. Anime
sources should all take the anime model, hand sources none. The anime-face-patches faces are a
source no gallery model trained on, and its not-face patches are counted too. --grey: every image
in shades of grey first, as manga pages are (the verifier's unit for grey pictures judges them).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from byakugan.embedder.atomic import write_atomic
from byakugan.embedder.detection.assets import ANIMEFACE_NET_VERIFIER, fetch
from byakugan.embedder.detection.verifier import FaceVerifier
from byakugan.embedder.detection.looks import JUDGE, SAMPLE
from byakugan.embedder.embedding.hub import choose_model, model_for
from byakugan.embedder.images import list_images, load_image
from byakugan.embedder.training.data import scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import DATA, SOURCES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def classes(folder: Path) -> dict[str, list[Path]]:
    return {d.name: files for d in sorted(folder.iterdir()) if d.is_dir() and (files := list_images(d))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--draws", type=int, default=100, help="first enrolments of 5 images drawn per source")
    p.add_argument("--per-source", type=int, default=300, help="images judged one by one per source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grey", action="store_true", help="every image in shades of grey first")
    p.add_argument("--out", default=str(ROOT / "models" / "anime-tuned" / "model_pick.json"))
    a = p.parse_args()
    look = (lambda f: load_image(f).convert("L").convert("RGB")) if a.grey else (lambda f: f)
    anime, verifier = model_for(JUDGE), FaceVerifier(fetch(ANIMEFACE_NET_VERIFIER))
    folders = {s: DATA / s for s in SOURCES} | {"anime-face-patches (faces)": DATA / "anime-face-patches" / "train",
                                                "anime-face-patches (not faces)": DATA / "anime-face-patches" / "train"}
    rows = {}
    for source, folder in folders.items():
        rng = random.Random(a.seed)
        by_class = classes(folder)
        if source.startswith("anime-face-patches"):  # one folder of faces, one of not-faces: no identities
            by_class = {k: v for k, v in by_class.items() if (k == "face") == source.endswith("(faces)")}
        pool = [f for files in by_class.values() for f in files]
        singles = rng.sample(pool, min(a.per_source, len(pool)))
        start = time.perf_counter()
        prob = verifier([load_image(look(f)) for f in singles], a.grey)
        ms = (time.perf_counter() - start) / len(singles) * 1000
        # grey: what the colour unit, which judged every image before there was a grey one, says of the same images
        colour_unit = verifier([load_image(look(f)) for f in singles]) if a.grey else None
        picks = [choose_model("none", [look(f) for f in rng.sample(files, min(5, len(files)))]).name
                 for files in (by_class[rng.choice(sorted(by_class))] for _ in range(a.draws))]
        paths = [s.path for s in scan([str(folder)])]
        spread = [paths[i * len(paths) // SAMPLE] for i in range(SAMPLE)] if len(paths) > SAMPLE else paths  # as judge() spreads them
        evaluated = choose_model("none", [look(f) for f in spread]) if len(by_class) > 1 else None
        rows[source] = {"domain": SOURCES.get(source, {"domain": "anime" if source.endswith("(faces)") else "neither"})["domain"],
                        "images_called_anime_faces": round(float((prob >= 0.5).mean()), 4),
                        **({"images_called_anime_faces_by_the_colour_unit": round(float((colour_unit >= 0.5).mean()), 4)}
                           if a.grey else {}),
                        "first_enrolments_taking_the_anime_model": round(sum(n == anime for n in picks) / len(picks), 4),
                        "evaluate_takes": None if evaluated is None else {"model": evaluated.name, "why": evaluated.why},
                        "verifier_ms_per_image_in_one_batch": round(ms, 2)}
        print(json.dumps({source: rows[source]}), file=sys.stderr, flush=True)
    text = json.dumps({"issue": 14, "judge": f"{JUDGE}'s verifier on each whole image; the anime model when more "
                       "than half of them are anime faces", "anime_model": anime, "grey": a.grey, "draws": a.draws, "seed": a.seed,
                       "sources": rows,
                       "summary": {d: {"first_enrolments_taking_the_anime_model_min":
                                       min(r["first_enrolments_taking_the_anime_model"] for r in rows.values() if r["domain"] == d),
                                       "max": max(r["first_enrolments_taking_the_anime_model"] for r in rows.values() if r["domain"] == d)}
                                   for d in ("anime", "hand", "neither")}}, indent=1)
    if a.out:
        write_atomic(Path(a.out), (text + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
