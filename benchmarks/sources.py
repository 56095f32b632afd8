"""Every source in ../shared/datasets, evaluated with the shipped models, marked by whether each
model trained on it. Prints JSON: per source and model, then the mean and the worst over the
sources no model trained on.

    .venv/bin/python benchmarks/sources.py [--sources asl-signs drone-gestures] [--per-class N]

Each cell is `byakugan evaluate SOURCE --detector D --model M --trials 10 --unknown-fraction 0.33
--seed 1 --json` (the protocol of issue #14). Anime sources report class-mean top-1 and FAR@TAR95
(anime galleries rank by class mean); hand sources nearest-reference top-1 and FAR@TAR95 of the
fused gallery, and of each part alone. A source a model trained on (even some of its classes)
overstates: its row is marked "trained": true and kept out of the unseen mean and worst.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from byakugan.embedder.embedding.files import models_dir
from byakugan.embedder.embedding.landmarks import landmarks_for
from byakugan.ui.cli import main as byakugan

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
SOURCES = json.loads((Path(__file__).with_name("sources.json")).read_text())
MODELS = {"anime": ["imagenet", "default", "anime"], "hand": ["default"]}


def trained_on(model: str) -> set[str]:
    """The sources a shipped model (or, for hands, its landmark model) saw in training."""
    seen = set()
    for name in [model] + ([landmarks_for("hand")] if model == "default" else []):  # what evaluate fuses
        path = models_dir() / name / "training.json"
        if path.is_file():
            seen |= {Path(d).name for d in json.loads(path.read_text())["config"]["data"]}
    return seen


def evaluate(source: str, detector: str, model: str, per_class: int | None) -> dict:
    args = ["evaluate", str(DATA / source), "--detector", detector, "--model", model, "--trials", "10",
            "--unknown-fraction", "0.33", "--seed", "1", "--json"] + (["--per-class", str(per_class)] if per_class else [])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = byakugan(args)
    if code != 0:
        raise SystemExit(f"byakugan {' '.join(args)} exited {code}")
    return json.loads(out.getvalue())


def cell(domain: str, s: dict) -> dict:
    if domain == "anime":
        out = {"top1": s["top1_prototype"], "far_at_tar95": s["far_at_tar95_mean"], "top1_nearest": s["top1_nearest"]}
    else:
        out = {"top1": s["top1_nearest"], "far_at_tar95": s["far_at_tar95"], "top1_class_mean": s["top1_prototype"]}
        out["parts"] = {k: {"top1": p["top1_nearest"], "far_at_tar95": p.get("far_at_tar95")} for k, p in s.get("parts", {}).items()}
    for key in ("detected", "landmarks"):
        if key in s:
            out[key] = s[key]["found"] if key == "landmarks" else s[key]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sources", nargs="+", default=[k for k in SOURCES if not k.startswith("_")])
    p.add_argument("--per-class", type=int, help="a seeded sample per class (quick runs; the table uses all)")
    a = p.parse_args()
    rows: dict[str, dict] = {}
    for source in a.sources:
        spec = SOURCES[source]
        rows[source] = {"domain": spec["domain"], "detector": spec["detector"], "models": {}}
        for model in MODELS[spec["domain"]]:
            s = evaluate(source, spec["detector"], model, a.per_class)
            rows[source]["models"][model] = {**cell(spec["domain"], s), "trained": source in trained_on(model)}
    summary: dict[str, dict] = {}
    for domain, models in MODELS.items():
        for model in models:
            unseen = {src: r["models"][model] for src, r in rows.items()
                      if r["domain"] == domain and model in r["models"] and not r["models"][model]["trained"]}
            if unseen:
                worst = min(unseen, key=lambda s: unseen[s]["top1"])
                summary[f"{domain}/{model}"] = {
                    "unseen_sources": sorted(unseen),
                    "mean_top1": round(sum(c["top1"] for c in unseen.values()) / len(unseen), 4),
                    "mean_far_at_tar95": round(sum(c["far_at_tar95"] for c in unseen.values()) / len(unseen), 4),
                    "worst": {"source": worst, **{k: unseen[worst][k] for k in ("top1", "far_at_tar95")}}}
    print(json.dumps({"protocol": "5 shots, 10 trials, a third of the classes unknown, seed 1", "per_class": a.per_class,
                      "sources": rows, "unseen": summary}, indent=1))


if __name__ == "__main__":
    main()
