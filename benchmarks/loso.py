"""Leave one source out: for each source in ../shared/datasets, train on all the others and
evaluate 5-shot on it, the way a user would meet a source nobody trained on. Prints JSON.

    .venv/bin/python benchmarks/loso.py --cache .cache/features [--sources anime-onepiece ...]

Per fold (left-out source S, benchmarks/sources.json says its domain and detector):
- the CNN head is trained with the shipped recipe on every other source (ProxyAnchor, 4 epochs,
  3 views, frozen EfficientNet-Lite0; --per-class images per class); for an anime S with the
  `anime` recipe on top (colour histogram weight 1, class-mean scoring, top-5 cohort of the
  training classes), for a hand S with the `hand-landmarks` recipe: a landmark encoder trained on
  the other hand sources, fused at weight 0.4; with --patch-instances N, also N face patches of
  anime-face-patches as one-image classes (not in the cohort); with --plain, anime folds too get
  `default`'s recipe alone (no colour, nearest scoring, no cohort);
- with --recipe today, training keeps to the sources the shipped models trained on (less S):
  what today's recipe gives on a source it never saw, to compare "more sources" against;
- S is evaluated with `byakugan evaluate S --detector D --model FOLD [--landmarks FOLD_LM]
  --trials 10 --unknown-fraction 0.33 --seed 1`, and with frozen ImageNet features beside it.
Anime cells are class-mean top-1 and FAR@TAR95, hand cells nearest-reference ones. No setting is
chosen here: these are the shipped recipes, so the table is the bar a new recipe must clear on
the mean and on the worst source.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from byakugan.embedder.atomic import write_atomic
from byakugan.embedder.embedding.files import models_dir
from byakugan.embedder.training.landmarks import JOINT_RECIPE, LandmarkTrainConfig, train_landmarks
from byakugan.embedder.training.metric import TrainConfig, train
from byakugan.ui.cli import main as byakugan

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SOURCES = {k: v for k, v in json.loads(Path(__file__).with_name("sources.json").read_text()).items()
           if not k.startswith("_")}


def evaluate(source: str, detector: str, model: str, landmarks: str, per_class, save: str | None = None) -> dict:
    args = ["evaluate", str(DATA / source), "--detector", detector, "--model", model, "--landmarks", landmarks,
            "--trials", "10", "--unknown-fraction", "0.33", "--seed", "1", "--json"]
    args += ["--per-class", str(per_class)] if per_class else []
    args += ["--save-embeddings", save] if save else []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if byakugan(args) != 0:
            raise SystemExit(f"byakugan {' '.join(args)} failed")
    s = json.loads(out.getvalue())
    anime = SOURCES[source]["domain"] == "anime"
    cell = {"top1": s["top1_prototype" if anime else "top1_nearest"],
            "far_at_tar95": s["far_at_tar95_mean" if anime else "far_at_tar95"]}
    if "parts" in s:
        cell["parts"] = {k: {"top1": p["top1_nearest"], "far_at_tar95": p.get("far_at_tar95")} for k, p in s["parts"].items()}
    if "detected" in s:
        cell["detected"] = s["detected"]
    return cell


def shipped_sources(model: str = "default") -> set[str]:
    """The sources a shipped model was trained on (its training.json)."""
    config = json.loads((models_dir() / model / "training.json").read_text())["config"]
    return {Path(d).name for d in config["data"]}


def crop_detectors() -> dict[str, str]:
    """Each source's detector from sources.json, for training on crops (--crop)."""
    return {s: v["detector"] for s, v in SOURCES.items() if v["detector"] != "none"}


def summarise(rows: dict, key: str) -> dict:
    out = {}
    for domain in ("anime", "hand"):
        cells = {s: r[key] for s, r in rows.items() if SOURCES[s]["domain"] == domain and key in r}
        if cells:
            worst = min(cells, key=lambda s: cells[s]["top1"])
            out[domain] = {"sources": len(cells), "mean_top1": round(sum(c["top1"] for c in cells.values()) / len(cells), 4),
                           "mean_far_at_tar95": round(sum(c["far_at_tar95"] for c in cells.values()) / len(cells), 4),
                           "worst": {"source": worst, "top1": cells[worst]["top1"], "far_at_tar95": cells[worst]["far_at_tar95"]}}
    return out


def patch_instances(tmp: Path, n: int) -> str:
    """A dataset folder of n face patches, one class each (links to the files: the feature cache
    is keyed by the files they resolve to)."""
    root = tmp / "anime-face-patch-instances"
    if not root.is_dir():
        faces = sorted((DATA / "anime-face-patches" / "train" / "face").glob("*.jpg"))
        for i, f in enumerate(random.Random(0).sample(faces, min(n, len(faces)))):
            (root / f"patch{i:05d}").mkdir(parents=True)
            (root / f"patch{i:05d}" / f.name).symlink_to(f)
    return str(root)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sources", nargs="+", default=list(SOURCES))
    p.add_argument("--cache", default=".cache/features", help="features and landmarks, reused across folds and runs")
    p.add_argument("--per-class", type=int, default=100, help="training images per class (seeded sample)")
    p.add_argument("--eval-per-class", type=int, help="evaluation images per class (default: all)")
    p.add_argument("--cohort-per-class", type=int, default=20, help="images per class in an anime fold's cohort")
    p.add_argument("--save-embeddings", metavar="DIR",
                   help="keep each fold's embeddings of its left-out source (DIR/SOURCE.safetensors) for scoring studies")
    p.add_argument("--tta", choices=["flip"], help="evaluate the fold models with this test-time augmentation")
    p.add_argument("--no-baseline", action="store_true", help="skip the frozen ImageNet column")
    p.add_argument("--joint-landmarks", action="store_true",
                   help="train hand folds' landmark encoders as hand-landmarks was trained (one net over both hands, "
                        "no mirroring, 64-d): what loso-all.json, loso-today.json, loso-crop.json, loso-flip.json and "
                        "the bench-out/emb-all studies used; by default, hand-landmarks-2's recipe")
    p.add_argument("--hflip", action="store_true",
                   help="train every fold's head with mirrored views too (byakugan train --hflip; off in the shipped recipes)")
    p.add_argument("--crop", action="store_true",
                   help="train on each source's crops by the detector its galleries use (sources.json), not whole images")
    p.add_argument("--patch-instances", type=lambda v: max(0, int(v)), default=0, metavar="N",
                   help="also train each fold on N seeded face patches of anime-face-patches/train/face, each "
                        "its own class (its augmented views are its only positives): many more drawn faces than "
                        "the identity sources hold, from a source no fold is evaluated on")
    p.add_argument("--plain", action="store_true",
                   help="train anime folds with `default`'s recipe too (no colour histogram, nearest scoring, no "
                        "cohort): what a gallery that names no anime model got on a source nobody trained on")
    p.add_argument("--grey-views", type=float, default=0.05,
                   help="the share of colour-jittered training views made grey (0.05 in the shipped recipes)")
    p.add_argument("--keep", metavar="DIR", help="keep each fold's CNN model in DIR/SOURCE, and a hand fold's "
                   "landmark encoder in DIR/SOURCE-lm (for studies on them)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--recipe", choices=["all", "today"], default="all",
                   help="train on every other source (all), or only on the other sources the shipped models "
                        "trained on (today: their training.json), to measure what more sources bring")
    a = p.parse_args()
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    rows: dict[str, dict] = {}
    if a.save_embeddings:
        Path(a.save_embeddings).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.sources:
            spec, start = SOURCES[source], time.time()
            pool = shipped_sources() if a.recipe == "today" else set(SOURCES)
            others = [str(DATA / s) for s in SOURCES if s != source and s in pool]
            anime = spec["domain"] == "anime" and not a.plain
            identities = list(others)  # the cohort: impostor identities, not the patch instances
            if a.patch_instances:
                others.append(patch_instances(Path(tmp), a.patch_instances))
            cfg = TrainConfig(data=others, out=f"{tmp}/{source}", epochs=4, views=3, loss="proxyanchor", miner="none",
                              per_class=a.per_class, cache=a.cache, colour_weight=1.0 if anime else 0.0, hflip=a.hflip,
                              scoring="mean" if anime else None, grey_views=a.grey_views, cohort_top=5 if anime else None,
                              cohort_per_class=a.cohort_per_class, cohort_data=identities, detectors={k: v for k, v in crop_detectors().items() if a.crop and str(DATA / k) in others})
            log(f"== fold {source}: training on {len(others)} sources")
            train(cfg, log=log)
            if a.keep:
                shutil.copytree(cfg.out, Path(a.keep) / source, dirs_exist_ok=True)
            if a.tta:  # a vector-changing setting of the saved model, as `byakugan train --tta` would write it
                config_file = Path(cfg.out) / "config.json"
                config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"tta": a.tta}, indent=1))
            landmarks = "none"
            if spec["domain"] == "hand":
                lm_pool = shipped_sources("hand-landmarks") if a.recipe == "today" else set(SOURCES)
                hands = [str(DATA / s) for s, v in SOURCES.items() if v["domain"] == "hand" and s != source and s in lm_pool]
                train_landmarks(LandmarkTrainConfig(data=hands, out=f"{tmp}/{source}-lm", per_class=a.per_class,
                                                    cache=a.cache, **(JOINT_RECIPE if a.joint_landmarks else {})),
                                log=log)
                landmarks = f"{tmp}/{source}-lm"
                if a.keep:
                    shutil.copytree(landmarks, Path(a.keep) / f"{source}-lm", dirs_exist_ok=True)
            rows[source] = {"domain": spec["domain"], "detector": spec["detector"],
                            "trained_on_the_others": evaluate(source, spec["detector"], cfg.out, landmarks, a.eval_per_class,
                                                                     a.save_embeddings and f"{a.save_embeddings}/{source}.safetensors")}
            if not a.no_baseline:
                rows[source]["frozen_imagenet"] = evaluate(source, spec["detector"], "imagenet", "none", a.eval_per_class)
            rows[source]["seconds"] = round(time.time() - start)
            log(json.dumps({source: rows[source]}))
            text = json.dumps({"protocol": "leave one source out; 5 shots, 10 trials, a third of the classes unknown, seed 1",
                               "settings": vars(a), "sources": rows,
                               "summary": {"trained_on_the_others": summarise(rows, "trained_on_the_others"),
                                           "frozen_imagenet": summarise(rows, "frozen_imagenet")}}, indent=1)
            if a.out:  # after every fold: a run cut short keeps what it measured
                write_atomic(Path(a.out), (text + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
