"""Spatial colour histograms (hair band, eye band, 2x2 grid) against today's one histogram of the
whole crop, on the anime sources, chosen and reported by leaving whole sources out (issue #14).
Prints JSON, writes bench-out/colour_spatial.json, progress on stderr.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/colour_spatial.py

What is compared. Every vector is `normalise([default embedding (unit), sqrt(w) * colour part])`,
the way Embedder.forward joins today's histogram (models/anime: colour part = one 12x4x4 HSV
histogram of the whole 160x160 preprocessed crop, w = 1). Only the colour part differs:
- W : whole crop (today's);
- S1: whole + top 40% of the rows (hair);
- S2: whole + top 40% + the band from 30% to 60% of the height (eyes);
- S3: a 2x2 grid (four quarters; no whole-crop histogram).
Each region's histogram is embedder.embedding.colour.ColourHistogram (12x4x4 bins, Hellinger: unit
length) run on that slice of the same preprocessed tensor the CNN sees; the K region histograms are
concatenated and divided by sqrt(K), so the colour part is unit length as today's is, and weight w
means what it means today: cosine = (CNN cosine + w * mean of the region histogram cosines) / (1 + w).
For W this is exactly today's vector (checked against the shipped `anime` model on a few images).
Weights: 0.5, 1, 2.

Scoring as the `anime` model does it: class mean (top1_prototype) and FAR@TAR95 by class mean
(far_at_tar95_mean) with cohort normalisation (top 5). The cohort is rebuilt for each variant the
way `byakugan train --cohort-top` built the shipped one (the same 27 classes, 50 images each,
seed 0: the 8 trained anime-faces characters and the 19 gestures), so each variant is normalised
by its own kind of vector; W at weight 1 reproduces models/anime/cohort.safetensors (checked).
Protocol as `byakugan evaluate SOURCE --trials 10 --unknown-fraction 0.33 --seed 1` (5 shots, every
image); anime-scenes cropped by the `anime-face` detector (whole image where none is found).

Nested leave-one-source-out: for each anime source left out, the variant and weight with the best
mean class-mean top-1 on the other two (ties: lower mean FAR@TAR95, then W before S1, S2, S3 and
lighter weights first) is reported on the left-out one, beside today's W at weight 1.

CNN embeddings and region histograms are cached per source in bench-out/colour_spatial_cache/.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import byakugan.embedder as embedder
from byakugan.embedder.embedding.colour import ColourHistogram
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.images import load_image
from byakugan.embedder.scoring.cohort import class_means, offsets
from byakugan.embedder.training.data import scan
from byakugan.index.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "bench-out"
CACHE = OUT / "colour_spatial_cache"
SOURCES = {k: v for k, v in json.loads(Path(__file__).with_name("sources.json").read_text()).items()
           if not k.startswith("_") and v["domain"] == "anime"}
BINS = [12, 4, 4]
WEIGHTS = (0.5, 1.0, 2.0)
# Regions as (first row, last row, first column, last column) in fractions of the crop.
REGIONS = {"whole": (0, 1, 0, 1), "top40": (0, 0.4, 0, 1), "mid30_60": (0.3, 0.6, 0, 1),
           "q_top_left": (0, 0.5, 0, 0.5), "q_top_right": (0, 0.5, 0.5, 1),
           "q_bottom_left": (0.5, 1, 0, 0.5), "q_bottom_right": (0.5, 1, 0.5, 1)}
VARIANTS = {"W": ["whole"], "S1": ["whole", "top40"], "S2": ["whole", "top40", "mid30_60"],
            "S3": ["q_top_left", "q_top_right", "q_bottom_left", "q_bottom_right"]}
PROTOCOL = dict(shots=5, trials=10, unknown_fraction=0.33, seed=1)
COHORT_TOP = 5
SEED_CHECK = (2, 3, 4, 5, 6)  # trial seeds besides 1, only to show how stable the outcome is


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def features(model, hist: ColourHistogram, crops: list) -> tuple[np.ndarray, np.ndarray]:
    """(CNN embeddings (N, 1408), region histograms (N, len(REGIONS), 192)) of PIL crops."""
    x = torch.stack([model.preprocess(load_image(c)) for c in crops])
    size = x.shape[-1]
    with torch.inference_mode():
        h = np.stack([hist(x[:, :, round(r0 * size):round(r1 * size), round(c0 * size):round(c1 * size)]).numpy()
                      for r0, r1, c0, c1 in REGIONS.values()], 1)
    return model.embed_tensors(x), h


def embed(model, hist, name: str, paths: list[Path], detector: str) -> dict:
    """CNN embeddings and region histograms of each image's crop (largest detection, else whole),
    cached in CACHE/name.npz."""
    file = CACHE / f"{name}.npz"
    key = json.dumps({"fingerprint": model.fingerprint(), "detector": detector, "regions": REGIONS, "bins": BINS,
                      "paths": [str(p) for p in paths]})
    if file.is_file():
        z = np.load(file)
        if str(z["key"]) == key:
            log(f"{name}: {len(paths)} images from the cache")
            return {"cnn": z["cnn"], "hist": z["hist"], "found": z["found"]}
    pipe = Pipeline.create(model, detector, "none")
    cnn, hists, found, start = [], [], [], time.time()
    for i in range(0, len(paths), 32):
        crops = []
        for p in paths[i : i + 32]:
            r = pipe.regions(p, every=False, fallback="whole")[0]
            crops.append(r.crop)
            found.append(r.found)
        c, h = features(model, hist, crops)
        cnn.append(c), hists.append(h)
        done = i + len(crops)
        if done % 320 < 32 or done == len(paths):
            log(f"{name}: {done}/{len(paths)} images, {time.time() - start:.0f} s")
    out = {"cnn": np.concatenate(cnn), "hist": np.concatenate(hists), "found": np.asarray(found)}
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, key=np.asarray(key), **out)
    tmp.replace(file)
    return out


def colour_part(hist: np.ndarray, variant: str) -> np.ndarray:
    idx = [list(REGIONS).index(r) for r in VARIANTS[variant]]
    return hist[:, idx].reshape(len(hist), -1) / np.sqrt(len(idx))  # unit length, as today's histogram


def joined(cnn: np.ndarray, hist: np.ndarray, variant: str, w: float) -> np.ndarray:
    e = np.concatenate([cnn, np.sqrt(w) * colour_part(hist, variant)], 1)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def figures(emb: np.ndarray, labels: list[str], cohort: np.ndarray, seed: int = PROTOCOL["seed"]) -> dict:
    s = enrolment_trials(emb, labels, offset=offsets(emb, cohort, COHORT_TOP), **(PROTOCOL | {"seed": seed})).summary
    return {"top1": s["top1_prototype"], "far_at_tar95": s["far_at_tar95_mean"], "roc_auc": s["roc_auc_mean"]}


TODAY = "W@1"


def nested(grid: dict, sources: dict) -> tuple[dict, dict, dict]:
    """Per left-out source: the grid entry best on the other two, and today's; then both summaries."""
    order = list(grid)

    def rank(tag: str, names: list[str]) -> tuple:
        return (-np.mean([grid[tag][n]["top1"] for n in names]), np.mean([grid[tag][n]["far_at_tar95"] for n in names]),
                order.index(tag))

    rows = {}
    for left in sources:
        others = [n for n in sources if n != left]
        choice = min(grid, key=lambda t: rank(t, others))
        rows[left] = {"chosen": choice,
                      "chosen_on": {n: grid[choice][n]["top1"] for n in others},
                      "chosen_mean_top1_on_others": round(float(np.mean([grid[choice][n]["top1"] for n in others])), 4),
                      "today_mean_top1_on_others": round(float(np.mean([grid[TODAY][n]["top1"] for n in others])), 4),
                      "nested_choice": grid[choice][left], "today": grid[TODAY][left],
                      "images": len(sources[left]["labels"]), "classes": len(set(sources[left]["labels"]))}
        if SOURCES[left]["detector"] != "none":
            rows[left]["detected"] = round(float(np.mean(sources[left]["found"])), 4)

    def summary(key: str) -> dict:
        cells = {n: r[key] for n, r in rows.items()}
        worst = min(cells, key=lambda n: cells[n]["top1"])
        return {"mean_top1": round(float(np.mean([c["top1"] for c in cells.values()])), 4),
                "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in cells.values()])), 4),
                "worst": {"source": worst, **cells[worst]},
                "worst_far_at_tar95": max(c["far_at_tar95"] for c in cells.values())}

    return rows, summary("today"), summary("nested_choice")


def main() -> None:
    t0 = time.time()
    torch.set_num_threads(1)
    model = embedder.load("default")[0]
    anime = embedder.load("anime")[0]
    hist = ColourHistogram({"bins": BINS}, model.preprocess)
    train_cfg = json.loads((ROOT / "models" / "anime" / "training.json").read_text())["config"]
    default_cfg = json.loads((ROOT / "models" / "default" / "training.json").read_text())["config"]

    # The cohort images, as build_cohort picked them for models/anime.
    data = [DATA / Path(d).name for d in train_cfg["data"]]
    pool = [s for s in scan(data, per_class=train_cfg["cohort_per_class"], seed=train_cfg["seed"])
            if s.label not in set(train_cfg["holdout"])]
    coh = embed(model, hist, "cohort", [s.path for s in pool], "none")
    coh_labels = [s.label for s in pool]

    sources = {}
    for name, spec in SOURCES.items():
        samples = scan([DATA / name], seed=PROTOCOL["seed"])
        f = embed(model, hist, name, [s.path for s in samples], spec["detector"])
        sources[name] = f | {"labels": [s.label.split("/", 1)[1] for s in samples], "paths": [s.path for s in samples]}

    # Checks: W at weight 1 is the shipped `anime` model, vectors and cohort.
    checks = {}
    for name, f in sources.items():
        pipe = Pipeline.create(anime, SOURCES[name]["detector"], "none")
        sel = list(range(0, len(f["labels"]), max(1, len(f["labels"]) // 16)))[:16]
        shipped = anime.embed([pipe.regions(f["paths"][i], every=False, fallback="whole")[0].crop for i in sel])
        checks[f"max |W@1 - anime model| on {len(sel)} {name} vectors"] = float(np.abs(shipped - joined(
            f["cnn"][sel], f["hist"][sel], "W", 1.0)).max())
    mine = class_means(joined(coh["cnn"], coh["hist"], "W", 1.0), coh_labels)
    checks["max |W@1 cohort - models/anime/cohort.safetensors|"] = float(np.abs(mine - anime.cohort).max())
    checks["cohort classes"] = len(mine)
    # What `byakugan evaluate SOURCE --model anime` reports (its stored fp16-era cohort instead of the rebuilt one).
    checks["W@1 with the shipped cohort (= byakugan evaluate --model anime)"] = {
        name: figures(joined(f["cnn"], f["hist"], "W", 1.0), f["labels"], anime.cohort) for name, f in sources.items()}
    log(json.dumps(checks))

    cohorts = {f"{v}@{w:g}": (v, w, class_means(joined(coh["cnn"], coh["hist"], v, w), coh_labels))
               for v in VARIANTS for w in WEIGHTS}
    vectors = {tag: {name: joined(f["cnn"], f["hist"], v, w) for name, f in sources.items()}
               for tag, (v, w, _) in cohorts.items()}

    def make_grid(seed: int) -> dict[str, dict[str, dict]]:
        return {tag: {name: figures(vectors[tag][name], f["labels"], cohorts[tag][2], seed) for name, f in sources.items()}
                for tag in cohorts}

    grid = make_grid(PROTOCOL["seed"])
    for tag, cells in grid.items():
        log(f"{tag}: " + ", ".join(f"{n} {c['top1']:.4f}/{c['far_at_tar95']:.4f}" for n, c in cells.items()))
    rows, s_today, s_nested = nested(grid, sources)
    # Post hoc (decided after seeing the seed-1 grid, so not the pre-set protocol): the nested choice
    # of the variant alone, with the weight kept at today's 1.
    at1 = lambda g: {t: c for t, c in g.items() if t.endswith("@1")}  # noqa: E731
    rows1, _, s_nested1 = nested(at1(grid), sources)
    # The same nested choice with other trial seeds: how much of the outcome is the draw of trials.
    seeds = {}
    for seed in SEED_CHECK:
        g = make_grid(seed)
        r, t, n = nested(g, sources)
        r1, _, n1 = nested(at1(g), sources)
        seeds[seed] = {"chosen": {k: v["chosen"] for k, v in r.items()},
                       "today": {"mean_top1": t["mean_top1"], "worst_top1": t["worst"]["top1"],
                                 "mean_far_at_tar95": t["mean_far_at_tar95"]},
                       "nested choice": {"mean_top1": n["mean_top1"], "worst_top1": n["worst"]["top1"],
                                         "mean_far_at_tar95": n["mean_far_at_tar95"]},
                       "post hoc: chosen at weight 1": {k: v["chosen"] for k, v in r1.items()},
                       "post hoc: nested choice at weight 1": {"mean_top1": n1["mean_top1"], "worst_top1": n1["worst"]["top1"],
                                                               "mean_far_at_tar95": n1["mean_far_at_tar95"]}}
        log(f"seed {seed}: {json.dumps(seeds[seed])}")
    out = {
        "what": "default CNN embedding joined with colour histograms of regions of the crop; nested leave-one-source-out "
                "choice of variant and weight on the anime sources, against today's whole-crop histogram at weight 1",
        "caveat": ("The CNN part is the shipped `default` model, trained on " + ", ".join(Path(d).name for d in default_cfg["data"])
                   + f" (anime-faces less the held-out {', '.join(default_cfg['holdout'])}: 8 of its 12 characters), and the "
                   "shipped cohort holds those 8 characters and the 19 gestures; the 12x4x4 bins and weight 1 were chosen "
                   "on anime-faces too. So absolute figures are not leave-one-source-out honest (anime-faces least of all); "
                   "only the comparison of colour parts on the same CNN part is."),
        "protocol": "5 shots, 10 trials, unknown fraction 0.33, seed 1; class-mean top-1 and class-mean FAR@TAR95, "
                    "cohort-normalised (top 5, cohort rebuilt per variant)",
        "variants": {v: VARIANTS[v] for v in VARIANTS}, "regions": REGIONS, "bins": BINS, "weights": list(WEIGHTS),
        "scaling": "each region histogram unit (Hellinger); concatenation / sqrt(K) so the colour part is unit; "
                   "joined as normalise([cnn, sqrt(w) * colour]), as Embedder.forward",
        "selection": "best mean class-mean top-1 on the other two anime sources; ties: lower mean FAR, then grid order",
        "checks": checks,
        "sources": rows,
        "summary": {"today (W@1)": s_today, "nested choice": s_nested},
        "beats_today_on_mean_and_worst_top1": bool(s_nested["mean_top1"] > s_today["mean_top1"]
                                                   and s_nested["worst"]["top1"] > s_today["worst"]["top1"]),
        "grid": grid,  # every variant and weight on every source (seed 1)
        "post_hoc_weight_1_only": {
            "note": "NOT the pre-set protocol: restricting the choice to weight 1 was decided after seeing the seed-1 grid",
            "chosen": {k: v["chosen"] for k, v in rows1.items()},
            "per_source": {k: v["nested_choice"] for k, v in rows1.items()},
            "summary": s_nested1},
        "grid_summary_post_hoc": {tag: {"mean_top1": round(float(np.mean([c["top1"] for c in cells.values()])), 4),
                                        "worst_top1": min(c["top1"] for c in cells.values()),
                                        "mean_far_at_tar95": round(float(np.mean([c["far_at_tar95"] for c in cells.values()])), 4)}
                                  for tag, cells in grid.items()},
        "other_trial_seeds": seeds,
        "seconds": round(time.time() - t0),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "colour_spatial.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
