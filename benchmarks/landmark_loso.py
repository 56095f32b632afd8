"""The hand-landmark encoder, leave one source out (issue #14): does training it on every other
hand source beat today's recipe on a hand source it never saw? Prints JSON and writes it to --out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/landmark_loso.py --cache .cache/landmarks

For each hand source S (benchmarks/sources.json), three landmark encoders are fused with the same
CNN (`default`, as shipped) at the shipped weight (0.4) and S is scored by the protocol of
`byakugan evaluate S --detector hand --model default --landmarks LM --trials 10
--unknown-fraction 0.33 --seed 1` (the protocol of benchmarks/loso.py):
- today: `train_landmarks` with models/hand-landmarks/training.json's settings (every one of them:
  all images, 40 epochs, MultiSimilarity, ...) on the sources it lists, less S;
- others: the same settings on every other hand source;
- shipped: models/hand-landmarks as it is (it trained on three of the sources: those rows are
  marked and are not unseen figures).
Nothing is chosen here: the settings are the shipped ones, the figures only compare them. When
"others" beats "today" on the mean top-1 and on the worst source's top-1 (class-mean top-1, the
rule's primary figure; nearest-reference top-1 is reported beside it), a candidate is trained the
same way on all the hand sources into --candidate (never models/).

Each source goes once through the `hand` pipeline of `byakugan evaluate` (MediaPipe, crop, CNN),
cached in --cache; its landmarks also fill train-landmarks' own cache there, so MediaPipe runs once
per image. The CNN part is the shipped `default`, which trained on sign-digits,
rock-paper-scissors and hand-fingers: on those three only the landmark part is unseen; the
summary also gives the sources neither part trained on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save as save_arrays

from byakugan.embedder.atomic import write_atomic
from byakugan.embedder.embedding.files import models_dir
from byakugan.embedder.embedding.landmarks import load_landmarks
from byakugan.embedder.evaluation.summary import evaluate_embeddings
from byakugan.embedder.training.data import scan
from byakugan.embedder.training.landmarks import JOINT_RECIPE, LandmarkTrainConfig, detector_key, train_landmarks
from byakugan.index.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
SOURCES = {k: v for k, v in json.loads(Path(__file__).with_name("sources.json").read_text()).items()
           if not k.startswith("_")}
HANDS = [s for s, v in SOURCES.items() if v["domain"] == "hand"]
PROTOCOL = {"shots": 5, "trials": 10, "unknown_fraction": 0.33, "seed": 1}
COLUMNS = ("today", "others", "shipped")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_config(model: str = "hand-landmarks") -> dict:
    """A shipped landmark model's training settings (its training.json; one written before the
    "hands" and "mirror" settings existed trained the joint form without mirroring)."""
    return JOINT_RECIPE | json.loads((models_dir() / model / "training.json").read_text())["config"]


class RawLandmarks:
    """Stands in for a landmark encoder in the pipeline so that `embed_images` hands back the
    detector's raw landmark encodings (zero rows where no hand was found) beside the CNN rows."""

    name, weight, dim = "raw", 0.0, 128
    config = {"threshold": 0.0}

    def encode(self, marks: np.ndarray) -> np.ndarray:
        return np.asarray(marks, np.float32)


def embed_source(source: str, cnn_model: str, cache: Path, per_class: int | None) -> dict:
    """CNN rows of the hand crops, raw landmarks and labels of every image of a source, through
    the pipeline `byakugan evaluate --detector hand` uses (largest detection, whole image if none)."""
    samples = scan([DATA / source], per_class=per_class, seed=PROTOCOL["seed"])
    pipe = Pipeline.create(cnn_model, "hand", "none")
    key = json.dumps([pipe.encoder.fingerprint(), pipe.detector_config, [str(s.path.resolve()) for s in samples]])
    path = cache / f"hand-eval-{source}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    labels = [s.label.split("/", 1)[1] for s in samples]
    if path.is_file():
        saved = load_file(str(path))
        log(f"{source}: {len(samples)} images from {path}")
        return {"samples": samples, "labels": labels, "cnn": saved["cnn"], "marks": saved["marks"],
                "detected": saved["detected"].astype(bool), "seconds": 0.0}
    start = time.perf_counter()
    pipe.landmarks = RawLandmarks()
    embedded = pipe.embed_images([s.path for s in samples], fallback="whole", progress=True)
    bad = [e for e in embedded.errors if e is not None]
    if bad:
        raise SystemExit(f"{source}: {len(bad)} images could not be read, e.g. {bad[0]}")
    out = {"cnn": np.ascontiguousarray(embedded.cnn, np.float32), "marks": np.ascontiguousarray(embedded.landmarks),
           "detected": np.asarray(embedded.found, np.uint8)}
    cache.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save_arrays(out))
    seconds = time.perf_counter() - start
    log(f"{source}: embedded {len(samples)} images in {seconds:.0f} s ({seconds / len(samples) * 1000:.0f} ms each)")
    return {"samples": samples, "labels": labels, "cnn": out["cnn"], "marks": out["marks"],
            "detected": out["detected"].astype(bool), "seconds": seconds}


def seed_training_cache(source: str, data: dict, cache: Path) -> None:
    """Write train-landmarks' cache entry for a source from the pipeline's landmarks: the same
    detector call on the same image (embedder.training.landmarks.extract's key and format)."""
    samples = scan([DATA / source])  # what train_landmarks scans (all images, in folder order)
    if [s.path for s in samples] != [s.path for s in data["samples"]]:
        return  # a sample of the source: let train-landmarks detect its own
    key = json.dumps([detector_key(), [str(s.path.resolve()) for s in samples]])
    path = cache / f"landmarks-{source}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if not path.is_file():
        found = np.abs(data["marks"]).sum(1) > 0
        write_atomic(path, save_arrays({"marks": data["marks"], "found": found.astype(np.uint8)}))


def train(sources: list[str], out: str, recipe: dict, cache: str, per_class: int | None) -> tuple[object, float]:
    names = {f.name for f in fields(LandmarkTrainConfig)}
    cfg = LandmarkTrainConfig(**{k: v for k, v in recipe.items() if k in names}
                              | {"data": [str(DATA / s) for s in sources], "out": out, "cache": cache,
                                 "per_class": per_class if per_class is not None else recipe.get("per_class")})
    start = time.perf_counter()
    model = train_landmarks(cfg, log=lambda m: log(f"  {m}"), overwrite=True)  # a rerun replaces its candidate
    return model, time.perf_counter() - start


def cell(data: dict, encoder) -> dict:
    """The fused protocol on a source with this landmark encoder, as `byakugan evaluate` reports it."""
    lm = encoder.encode(data["marks"])
    trials, _, parts = evaluate_embeddings(data["cnn"], data["labels"], landmarks=lm, weight=encoder.weight,
                                           name=data["samples"][0].dataset, **PROTOCOL)
    s = trials.summary
    return {"top1_class_mean": s["top1_prototype"], "top1_nearest": s["top1_nearest"],
            "far_at_tar95": s["far_at_tar95"], "far_at_tar95_class_mean": s["far_at_tar95_mean"],
            "roc_auc": s["roc_auc"],
            "parts": {k: {"top1_nearest": p["top1_nearest"], "top1_class_mean": p["top1_prototype"],
                          "far_at_tar95": p.get("far_at_tar95")} for k, p in parts.items()}}


def summarise(rows: dict, column: str, sources: list[str]) -> dict:
    """Mean and worst source (by each top-1) of one column over the given sources."""
    cells = {s: rows[s][column] for s in sources if column in rows.get(s, {})}
    if not cells:
        return {}
    out = {"sources": sorted(cells)}
    for top1, far in (("top1_class_mean", "far_at_tar95_class_mean"), ("top1_nearest", "far_at_tar95")):
        worst = min(cells, key=lambda s: cells[s][top1])
        out[top1] = {"mean": round(float(np.mean([c[top1] for c in cells.values()])), 4),
                     "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in cells.values()])), 4),
                     "worst": {"source": worst, "top1": cells[worst][top1],
                               "far_at_tar95": cells[worst]["far_at_tar95"]}}
    return out


def verdict(summary: dict, top1: str) -> dict:
    a, b = summary["today"][top1], summary["others"][top1]
    mean, worst = b["mean"] > a["mean"], b["worst"]["top1"] > a["worst"]["top1"]
    return {"mean": [a["mean"], b["mean"]], "worst": [a["worst"]["top1"], b["worst"]["top1"]],
            "others_better_mean": mean, "others_better_worst": worst, "others_wins": mean and worst}


def check_cli(source: str, cnn_model: str, rows: dict) -> dict:
    """`byakugan evaluate SOURCE --detector hand` with the shipped landmarks, against the shipped column."""
    from byakugan.ui.cli import main as byakugan

    args = ["evaluate", str(DATA / source), "--detector", "hand", "--model", cnn_model, "--landmarks", "hand-landmarks",
            "--trials", "10", "--unknown-fraction", "0.33", "--seed", "1", "--json"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if byakugan(args) != 0:
            raise SystemExit(f"byakugan {' '.join(args)} failed")
    s = json.loads(out.getvalue())
    mine = rows[source]["shipped"]
    cli = {"top1_class_mean": s["top1_prototype"], "top1_nearest": s["top1_nearest"], "far_at_tar95": s["far_at_tar95"]}
    return {"command": "byakugan " + " ".join(args), "cli": cli, "this_script": {k: mine[k] for k in cli},
            "equal": all(abs(cli[k] - mine[k]) < 1e-4 for k in cli)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", nargs="+", default=HANDS, choices=HANDS, help="hand sources to leave out in turn")
    p.add_argument("--model", default="default", help="CNN model fused with the landmarks (default: the shipped one)")
    p.add_argument("--cache", default=".cache/landmarks", help="pipeline embeddings and train-landmarks' landmarks")
    p.add_argument("--out", default="bench-out/landmark_loso.json")
    p.add_argument("--candidate", default="bench-out/hand-landmarks-all",
                   help="where to train on all hand sources if 'others' wins on the mean and the worst source")
    p.add_argument("--no-candidate", action="store_true", help="do not train the candidate even if 'others' wins")
    p.add_argument("--per-class", type=int, help="a seeded sample per class, training and evaluation (smoke runs only)")
    p.add_argument("--check-cli", metavar="SOURCE", help="also run `byakugan evaluate` on SOURCE with the shipped "
                                                         "landmarks and compare it with this script's shipped cell")
    a = p.parse_args()
    if Path(a.candidate).resolve().is_relative_to(models_dir().resolve()):
        raise SystemExit(f"--candidate {a.candidate}: not under models/; compare it first")
    started = time.perf_counter()
    cache = Path(a.cache)
    recipe = training_config("hand-landmarks")
    today = [Path(d).name for d in recipe["data"]]
    shipped = load_landmarks("hand-landmarks")
    cnn_training = models_dir() / a.model / "training.json"
    cnn_trained_on = {Path(d).name for d in training_config(a.model)["data"]} if cnn_training.is_file() else set()

    data: dict[str, dict] = {}
    for source in HANDS:  # every hand source: each is a training source of the other folds
        log(f"== embedding {source}")
        data[source] = embed_source(source, a.model, cache, a.per_class)
        seed_training_cache(source, data[source], cache)

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.sources:
            d = data[source]
            row = rows[source] = {"images": len(d["labels"]), "classes": len(set(d["labels"])),
                                  "hands_found": round(float((np.abs(d["marks"]).sum(1) > 0).mean()), 4),
                                  "cnn_trained_on_source": source in cnn_trained_on, "train_seconds": {}}
            for column, pool in (("today", today), ("others", HANDS)):
                train_on = [s for s in pool if s != source]
                log(f"== fold {source}, {column}: training on {', '.join(train_on)}")
                encoder, seconds = train(train_on, f"{tmp}/{source}-{column}", recipe, a.cache, a.per_class)
                row[column] = {"trained_on": train_on, **cell(d, encoder)}
                row["train_seconds"][column] = round(seconds, 1)
            row["shipped"] = {"trained_on": today, "saw_source": source in today, **cell(d, shipped)}
            log(json.dumps({source: {c: {k: row[c][k] for k in ("top1_class_mean", "top1_nearest", "far_at_tar95")}
                                     for c in COLUMNS}}))

    sources = list(rows)
    unseen_by_cnn = [s for s in sources if s not in cnn_trained_on]
    summary = {c: summarise(rows, c, sources) for c in COLUMNS}
    summary["shipped_unseen_only"] = summarise(rows, "shipped", [s for s in sources if s not in today])
    summary["sources_the_cnn_never_saw"] = {c: summarise(rows, c, unseen_by_cnn) for c in COLUMNS}
    report = {
        "what": "landmark encoder leave one source out; CNN part fixed; fused as shipped",
        "protocol": "byakugan evaluate --detector hand: 5 shots, 10 trials, a third of the classes unknown, seed 1",
        "cnn_model": a.model, "cnn_trained_on": sorted(cnn_trained_on), "weight": shipped.weight,
        "recipe": {k: v for k, v in recipe.items() if k not in ("data", "out", "cache")},
        "per_class": a.per_class,
        "sources": rows, "summary": summary,
        "verdict": {"rule": "others beats today on the mean top-1 and on the worst source's top-1",
                    "top1_class_mean": verdict(summary, "top1_class_mean"),
                    "top1_nearest": verdict(summary, "top1_nearest")},
    }
    if a.check_cli:
        log(f"== checking against byakugan evaluate on {a.check_cli}")
        report["check_cli"] = check_cli(a.check_cli, a.model, rows)
    wins = report["verdict"]["top1_class_mean"]["others_wins"]
    if wins and set(sources) == set(HANDS) and not a.no_candidate:
        log(f"== candidate: training on all {len(HANDS)} hand sources into {a.candidate}")
        _, seconds = train(HANDS, a.candidate, recipe, a.cache, a.per_class)
        report["candidate"] = {"out": a.candidate, "trained_on": HANDS, "train_seconds": round(seconds, 1)}
    else:
        report["candidate"] = None
    report["wall_seconds"] = round(time.perf_counter() - started)
    text = json.dumps(report, indent=1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(a.out), (text + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
