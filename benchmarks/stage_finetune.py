"""Issue #14: fine-tune the last stages of the backbone on cached intermediate feature maps, measured
leave-one-source-out (the anime sources unless --sources). Prints JSON and writes --out
(default models/anime/stage_finetune.json).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/stage_finetune.py [--arms finetuned baseline]
    ... benchmarks/stage_finetune.py --sources drone-gestures --crop --out models/stage-finetune-hands.json

A hand fold drops the anime parts (no colour, nearest scoring, no cohort) and is evaluated fused
with a landmark encoder trained on the other hand sources, as loso.py's hand folds are. With
--crop every training image is its crop by its source's detector (loso.py --crop).

Per fold (left-out anime source S; training pool as benchmarks/loso.py --recipe all: every other
source in sources.json, --per-class images per class):
- `finetuned`: the output of EfficientNet-Lite0 up to blocks.<cut - 1> (blocks.4: 112 channels, stride
  16, the last timm feature level before the final one) is cached once for the plain image and
  --views augmented draws (the augmentation of embedder.training.metric), per source under
  .cache/stage-maps (keyed by the images: scan's seeded sample of a source depends on the sources
  before it, so most sources are sampled, and cached, anew in each fold, as loso.py's features are);
  then blocks.<cut>.. + conv_head + bn2 (BatchNorm statistics kept, affine
  weights trained) and the shipped concat head train on the cached maps with the shipped loss
  (ProxyAnchor, no miner, 4 per class, batch 64, head lr 1e-3, stage lr --stage-lr). The anime
  parts of loso.py's fold are added as they are: colour histogram weight 1, class-mean scoring, a
  top-5 cohort of the training classes (--cohort-per-class images each). The whole model, fine-tuned
  backbone included, is saved as a normal model folder (model.safetensors carries every backbone
  weight) and evaluated with loso.py's `evaluate` (5 shots, 10 trials, a third unknown, seed 1).
- `baseline`: loso.py's fold recipe as it is (frozen backbone, head on cached pooled features).
Nothing is tuned: cut, stage lr, epochs and views were fixed before any full run (views as the shipped
recipe; 3 epochs, not 4, to fit about 100 minutes at one thread, from a timing run; the stage lr is a
tenth of the head's), so no reported figure chose a setting.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from pytorch_metric_learning import samplers
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from byakugan.embedder.atomic import write_atomic
from byakugan.embedder.embedding.model import Embedder, create_embedder
from byakugan.embedder.preprocess import Preprocess
from byakugan.embedder.training.cohort import build_cohort
from byakugan.embedder.training.crops import crop_samples
from byakugan.embedder.training.data import Sample, scan
from byakugan.embedder.training.landmarks import JOINT_RECIPE, LandmarkTrainConfig, train_landmarks
from byakugan.embedder.training.augment import GREY
from byakugan.embedder.training.metric import LOSSES, TrainConfig, batches, augmentation, backbone_key, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import DATA, SOURCES, crop_detectors, evaluate, summarise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "models" / "anime" / "stage_finetune.json"
FEATURES = ".cache/features"  # loso.py's cache: pooled features, landmarks and crop boxes


def early(net: torch.nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
    """A timm EfficientNet up to blocks[cut - 1]: the frozen part whose output is cached."""
    x = net.bn1(net.conv_stem(x))
    for block in net.blocks[:cut]:
        x = block(x)
    return x


def late(net: torch.nn.Module, maps: torch.Tensor, cut: int) -> torch.Tensor:
    """The rest of the network from blocks[cut] to the pooled features: what is fine-tuned."""
    x = maps
    for block in net.blocks[cut:]:
        x = block(x)
    return net.forward_head(net.bn2(net.conv_head(x)))


def late_parameters(net: torch.nn.Module, cut: int) -> list[torch.nn.Parameter]:
    return [p for m in (*net.blocks[cut:], net.conv_head, net.bn2) for p in m.parameters()]


@torch.inference_mode()
def stage_maps(model: Embedder, samples: list[Sample], cut: int, views: int, seed: int, cache: Path | None,
               log=print, grey: float = GREY) -> torch.Tensor:
    """[views + 1, N, C, H, W] float16 maps after blocks[cut - 1]: the plain image, then `views`
    augmented draws (drawn as embedder.training.metric.view_features draws them; `grey` of the
    colour-jittered ones made grey), cached per dataset."""
    model.eval()
    net, out = model.backbone, []
    for dataset, group in groupby(samples, key=lambda s: s.dataset):
        group = list(group)
        key = json.dumps([backbone_key(model), cut, views, seed, [str(s.path.resolve()) for s in group]]
                         + ([[s.box for s in group]] if any(s.box for s in group) else [])  # crops: other maps
                         + ([grey] if grey != GREY else []))
        path = cache / f"{dataset}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors" if cache else None
        if path is not None and path.is_file():
            out.append(load_file(str(path))["maps"])
            continue
        start = time.time()
        torch.manual_seed(seed)
        aug = augmentation(model.preprocess.size, False, grey=grey)
        draws = [None] + [aug] * views
        maps = torch.stack([torch.cat([early(net, x.contiguous(memory_format=torch.channels_last), cut).half()
                                       for x in batches(model, group, a, 64, "maps")]) for a in draws])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, save_tensors({"maps": maps.contiguous()}))
        log(f"  maps of {dataset}: {len(group)} images x {views + 1} views in {time.time() - start:.0f} s")
        out.append(maps)
    return torch.cat(out, dim=1)


def finetune(data: list[str], out: str, a: argparse.Namespace, log=print, anime: bool = True) -> Embedder:
    """Train the late stages and the head on cached maps; save a model folder to `out`. The anime
    parts (colour, class-mean scoring, cohort) only for an anime model."""
    random.seed(a.seed), np.random.seed(a.seed), torch.manual_seed(a.seed)
    samples = crop_samples(scan(data, per_class=a.per_class, seed=a.seed), detectors(data, a), FEATURES, log)
    classes = sorted({s.label for s in samples})
    y = torch.tensor([classes.index(s.label) for s in samples])
    head = {"type": "concat", "dim": 128, "hidden": 512, "weight": 1.0}
    model = create_embedder("efficientnet_lite0", pretrained=True, head=head, preprocess=Preprocess(size=160),
                            name=Path(out).name, colour={"weight": 1.0} if anime else None)
    if anime:
        model.config["scoring"] = "mean"
    net = model.backbone.to(memory_format=torch.channels_last)
    log(f"maps of {len(samples)} images x {a.views + 1} views; training on {len(classes)} classes")
    maps = stage_maps(model, samples, a.cut, a.views, a.seed, Path(a.cache) if a.cache else None, log, a.grey_views)
    maps = maps.reshape(-1, *maps.shape[2:]).clone()  # a normal tensor, not an inference-mode one
    y_all = y.repeat(a.views + 1)
    trained = late_parameters(net, a.cut)
    net.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    loss_fn = LOSSES["proxyanchor"](len(classes), 128)
    opt = torch.optim.AdamW([{"params": model.head.parameters(), "lr": a.lr}, {"params": loss_fn.parameters(), "lr": a.lr},
                             {"params": trained, "lr": a.stage_lr}], weight_decay=1e-4)
    random.seed(a.seed), np.random.seed(a.seed), torch.manual_seed(a.seed)
    batch = min(64, 4 * len(classes))
    sampler = samplers.MPerClassSampler(y_all.tolist(), m=4, batch_size=batch, length_before_new_iter=len(y_all))
    for epoch in range(a.epochs):
        start, total = time.time(), 0.0
        net.eval()  # BatchNorm statistics stay ImageNet's: batches of 64 from 4 per class would skew them
        model.head.train()
        order = list(iter(sampler))
        steps = range(0, len(order) - batch + 1, batch)
        for n, i in enumerate(steps):
            idx = order[i : i + batch]
            f = late(net, maps[idx].float().contiguous(memory_format=torch.channels_last), a.cut)
            z = torch.nn.functional.normalize(model.head.learned(f), dim=-1)
            loss = loss_fn(z, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            if a.max_steps and n + 1 >= a.max_steps:
                break
        log(json.dumps({"epoch": epoch + 1, "loss": round(total / max(1, n + 1), 4), "steps": n + 1,
                        "seconds": round(time.time() - start)}))
    model.eval().requires_grad_(False)
    if anime:
        log(f"cohort: class means of the {len(classes)} training classes, {a.cohort_per_class} images each")
        model.cohort = build_cohort(model, data, (), a.cohort_per_class, a.seed,
                                    crop=lambda pool: crop_samples(pool, detectors(data, a), FEATURES, log))
        model.config["cohort"] = {"top": 5}
    model.save(out)
    return model


def baseline(data: list[str], out: str, a: argparse.Namespace, log=print, anime: bool = True) -> None:
    """benchmarks/loso.py's fold, unchanged."""
    train(TrainConfig(data=data, out=out, epochs=4, views=3, loss="proxyanchor", miner="none", per_class=a.per_class,
                      cache=FEATURES, colour_weight=1.0 if anime else 0.0, scoring="mean" if anime else None,
                      cohort_top=5 if anime else None, cohort_per_class=a.cohort_per_class,
                      detectors=detectors(data, a)), log=log)


def widen_cohort(model_dir: str, n: int, log=print) -> None:
    """The fold model's cohort (class means of its training classes) joined by n face patches of
    anime-face-patches (many characters, each patch its own row), embedded by the same model:
    a query's 5 most similar cohort rows are then more often faces like it than class means are."""
    from byakugan.embedder import load
    from byakugan.embedder.scoring.cohort import load_cohort, save_cohort

    faces = sorted((DATA / "anime-face-patches" / "train" / "face").glob("*.jpg"))
    faces = [faces[i] for i in np.sort(np.random.default_rng(0).permutation(len(faces))[:n])]  # cohort_patches.py's
    model, _ = load(model_dir)
    log(f"cohort: + {len(faces)} face patches")
    patches = model.embed([str(f) for f in faces], progress=True)
    means = load_cohort(model_dir, patches.shape[1])
    save_cohort(model_dir, np.concatenate([means, patches]).astype(np.float32))


def detectors(data: list[str], a: argparse.Namespace) -> dict[str, str]:
    """With --crop, each training source's detector (loso.py --crop); else none (whole images)."""
    return {k: v for k, v in crop_detectors().items() if a.crop and str(DATA / k) in data}


def landmark_fold(source: str, out: str, a: argparse.Namespace, log=print) -> str:
    """A hand fold's landmark encoder, trained on the other hand sources as loso.py trains it."""
    hands = [str(DATA / s) for s, v in SOURCES.items() if v["domain"] == "hand" and s != source]
    # the joint form, as the loso-all folds it is compared with trained theirs (loso.py --joint-landmarks)
    train_landmarks(LandmarkTrainConfig(data=hands, out=out, per_class=a.per_class, cache=FEATURES, **JOINT_RECIPE),
                    log=log)
    return out


def cited(domains: set[str]) -> dict:
    """The cells of the committed loso runs (measured by benchmarks/loso.py) of these domains, for reference."""
    out = {}
    for name in ("loso-all", "loso-today", "loso-crop"):
        if not (ROOT / "models" / f"{name}.json").is_file():
            continue
        d = json.loads((ROOT / "models" / f"{name}.json").read_text())
        out[name] = {"recipe": d["settings"].get("recipe", "all") + (", crops" if d["settings"].get("crop") else ""),
                     "sources": {s: {k: r["trained_on_the_others"][k] for k in ("top1", "far_at_tar95")}
                                 for s, r in d["sources"].items() if r["domain"] in domains},
                     "summary": {k: v for k, v in d["summary"]["trained_on_the_others"].items() if k in domains}}
    return out


def saved(a: argparse.Namespace, arm: str, source: str) -> str | None:
    """Where a fold's embeddings go with --save-embeddings (made on first use)."""
    if not a.save_embeddings:
        return None
    (Path(a.save_embeddings) / arm).mkdir(parents=True, exist_ok=True)
    return str(Path(a.save_embeddings) / arm / f"{source}.safetensors")


def write(rows: dict, settings: dict, out: str) -> str:
    result = {"issue": 14, "protocol": "leave one source out; 5 shots, 10 trials, a third of the classes unknown, seed 1; "
                                       "class-mean top-1 and FAR@TAR95 (benchmarks/loso.py evaluate)",
              "pool": "every other source in benchmarks/sources.json (loso.py --recipe all)",
              "settings": settings, "sources": rows,
              "summary": {arm: summarise(rows, arm) for arm in ("finetuned", "baseline", "finetuned_cohort_patches",
                                                               "baseline_cohort_patches")
                          if any(arm in r for r in rows.values())},
              "cited": cited({r["domain"] for r in rows.values()})}
    text = json.dumps(result, indent=1)
    if out:
        write_atomic(Path(out), (text + "\n").encode())
    return text


def main() -> None:
    p = argparse.ArgumentParser()
    anime = [s for s, v in SOURCES.items() if v["domain"] == "anime"]
    p.add_argument("--sources", nargs="+", default=anime, choices=list(SOURCES),
                   help="left-out sources (default: the anime ones); a hand fold adds loso.py's landmark encoder")
    p.add_argument("--crop", action="store_true", help="train on each source's crops by its detector (loso.py --crop)")
    p.add_argument("--arms", nargs="+", default=["finetuned"], choices=["finetuned", "baseline"])
    p.add_argument("--cache", default=".cache/stage-maps")
    p.add_argument("--per-class", type=int, default=100, help="training images per class (seeded sample), as loso.py")
    p.add_argument("--cohort-per-class", type=int, default=20)
    p.add_argument("--cut", type=int, default=5, help="blocks before this index are frozen and cached")
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="3, not the head's 4: the time budget")
    p.add_argument("--grey-views", type=float, default=GREY,
                   help=f"the share of colour-jittered cached views made grey ({GREY} in the shipped recipes)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--stage-lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many steps (timing runs)")
    p.add_argument("--out", default=str(RESULTS), help="results JSON, updated arm by arm ('' writes none)")
    p.add_argument("--cohort-patches", type=int, default=0, metavar="N",
                   help="anime folds: also evaluate each model with N face patches of anime-face-patches added to its "
                        "cohort; with --final or --cohort-only, the model's cohort gets them")
    p.add_argument("--keep", metavar="DIR", help="keep each fold's model in DIR/SOURCE-ARM (bench-out/folds holds "
                   "those of the --cohort-patches 6098 run)")
    p.add_argument("--save-embeddings", metavar="DIR",
                   help="keep each fold's embeddings of the source it left out, as loso.py does, in DIR/ARM/SOURCE.safetensors "
                        "(with --cohort-patches, those of the evaluation with the widened cohort: anime-tuned's recipe)")
    p.add_argument("--cohort-only", metavar="MODEL_DIR", help="only build the cohort of a model --final made "
                   "(its training classes' means, and --cohort-patches face patches)")
    p.add_argument("--final", metavar="MODEL_DIR",
                   help="instead of measuring: train the fine-tuned recipe on every source and save the model there")
    a = p.parse_args()
    torch.set_num_threads(1)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if a.final:
        model = finetune([str(DATA / s) for s in SOURCES], a.final, a, log)
        if a.cohort_patches:
            widen_cohort(a.final, a.cohort_patches, log)
        print(json.dumps({"saved": a.final, "fingerprint": model.fingerprint()}))
        return
    if a.cohort_only:  # the cohort of a model --final made, again: its class means, then any patches
        from byakugan.embedder import load
        from byakugan.embedder.scoring.cohort import save_cohort

        data, (model, _) = [str(DATA / s) for s in SOURCES], load(a.cohort_only)
        save_cohort(a.cohort_only, build_cohort(model, data, (), a.cohort_per_class, a.seed,
                                                crop=lambda pool: crop_samples(pool, detectors(data, a), FEATURES, log)))
        if a.cohort_patches:
            widen_cohort(a.cohort_only, a.cohort_patches, log)
        return
    old = json.loads(Path(a.out).read_text()) if a.out and Path(a.out).is_file() else {}
    rows: dict = old.get("sources", {})
    settings: dict = old.get("settings", {})
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.sources:
            spec = SOURCES[source]
            others = [str(DATA / s) for s in SOURCES if s != source]
            row = rows.setdefault(source, {"domain": spec["domain"], "detector": spec["detector"]})
            anime = spec["domain"] == "anime"
            landmarks = "none" if anime else landmark_fold(source, f"{tmp}/{source}-lm", a, log)
            for arm in a.arms:
                start, out = time.time(), f"{tmp}/{source}-{arm}"
                log(f"== fold {source}, {arm}: training on {len(others)} sources")
                (finetune if arm == "finetuned" else baseline)(others, out, a, log, anime)
                trained = time.time() - start
                widen = anime and a.cohort_patches
                row[arm] = evaluate(source, spec["detector"], out, landmarks, None, None if widen else saved(a, arm, source))
                row[f"{arm}_seconds"] = {"train": round(trained), "total": round(time.time() - start)}
                settings[arm] = ({k: v for k, v in vars(a).items() if k not in ("sources", "arms", "out", "keep")} if arm == "finetuned"
                                 else {"recipe": "benchmarks/loso.py's fold: frozen backbone, 4 epochs, 3 views",
                                       "per_class": a.per_class, "cohort_per_class": a.cohort_per_class})
                log(json.dumps({source: {arm: row[arm], "seconds": row[f"{arm}_seconds"]}}))
                if anime and a.cohort_patches:
                    widen_cohort(out, a.cohort_patches, log)
                    row[f"{arm}_cohort_patches"] = evaluate(source, spec["detector"], out, landmarks, None,
                                                            saved(a, arm, source))
                    log(json.dumps({source: {f"{arm}_cohort_patches": row[f"{arm}_cohort_patches"]}}))
                if a.keep:  # fold models for later benchmarks (detect_framing.py): never trained on `source`
                    shutil.copytree(out, Path(a.keep) / f"{source}-{arm}", dirs_exist_ok=True)
                write(rows, settings, a.out)  # after every fold: a cut-short run keeps what it measured
    print(write(rows, settings, a.out))


if __name__ == "__main__":
    main()
