"""Metric-learning training of an embedder: loss, miner and sampler from pytorch-metric-learning.

With backbone_lr=0 (the default) the backbone stays frozen: features of a few augmented views of
every image are computed once and the head trains on them in seconds. With backbone_lr>0 the
backbone is fine-tuned on augmented images each step (slow on a CPU).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from itertools import groupby
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from pytorch_metric_learning import samplers
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from ..atomic import write_atomic
from ..embedding.files import CONFIG_FILE
from ..embedding.model import CONFIG_FORMAT, Embedder, create_embedder
from ..errors import ByakuganError, ModelError
from ..evaluation.protocol import enrolment_trials
from ..preprocess import Preprocess
from .augment import GREY, augmentation
from .cohort import build_cohort
from .config import LOSSES, MINERS, TrainConfig, check_loss
from .crops import crop_samples
from .data import Sample, check_model_out, check_training_classes, scan, split_classes

__all__ = ["LOSSES", "MINERS", "TrainConfig", "train", "features", "view_features", "accuracy"]


def _batches(model: Embedder, samples: Sequence[Sample], aug: Optional[v2.Compose], batch: int, desc: str):
    for start in tqdm(range(0, len(samples), batch), desc=desc, unit="batch", leave=False):
        imgs = [s.image() for s in samples[start : start + batch]]
        yield torch.stack([model.preprocess(aug(im) if aug else im) for im in imgs])


@torch.inference_mode()
def features(model: Embedder, samples: Sequence[Sample], aug: Optional[v2.Compose] = None, batch: int = 64) -> torch.Tensor:
    """Pooled backbone features (before the head) of each sample, one augmented draw if aug is given."""
    model.eval()
    out = [model.backbone(x.to(model.device).contiguous(memory_format=torch.channels_last)).cpu()
           for x in _batches(model, samples, aug, batch, "features")]
    return torch.cat(out)


def view_features(model: Embedder, samples: list[Sample], cfg: "TrainConfig") -> torch.Tensor:
    """[views + 1, N, F]: plain features, then `views` augmented draws; cached per dataset when asked."""
    out = []
    for dataset, group in groupby(samples, key=lambda s: s.dataset):
        group = list(group)
        # Keyed by the backbone, not the whole model: every head setting reuses the same features.
        key = json.dumps([backbone_key(model), cfg.views, cfg.hflip, cfg.seed, [str(s.path.resolve()) for s in group]]
                         + ([] if cfg.colour_jitter else ["no colour jitter"])  # older caches keep their keys
                         + ([] if cfg.grey_views == GREY else [f"grey views {cfg.grey_views}"])
                         + ([[s.box for s in group]] if any(s.box for s in group) else []))
        path = Path(cfg.cache) / f"{dataset}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors" if cfg.cache else None
        if path is not None and path.is_file():
            out.append(load_file(str(path))["features"])
            continue
        torch.manual_seed(cfg.seed)
        aug = augmentation(cfg.size, cfg.hflip, cfg.colour_jitter, cfg.grey_views)
        f = torch.stack([features(model, group)] + [features(model, group, aug) for _ in range(cfg.views)])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, save_tensors({"features": f.contiguous()}))
        out.append(f)
    return torch.cat(out, dim=1)


def backbone_key(model: Embedder) -> str:
    """SHA-256 of what the cached features depend on: backbone name, preprocessing, backbone weights."""
    # taps are in the key only when set, so caches made before they existed keep their keys
    h = hashlib.sha256(json.dumps([model.config["backbone"], model.config["preprocess"]]
                                  + ([model.config["taps"]] if model.config.get("taps") else []), sort_keys=True).encode())
    for key, t in sorted(model.backbone.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def accuracy(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """precision@1 and MAP@R of held-out samples against each other (AccuracyCalculator)."""
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count", device=torch.device("cpu"))
    codes = np.unique(labels, return_inverse=True)[1]
    r = calc.get_accuracy(torch.from_numpy(emb), torch.from_numpy(codes), ref_includes_query=True)
    return {k: round(float(v), 4) for k, v in r.items()}


def _checkpoint(model: Embedder, opt: torch.optim.Optimizer, epoch: int, history: list, d: Path,
                cfg: TrainConfig) -> None:
    d.mkdir(parents=True, exist_ok=True)
    # state.json goes last: a checkpoint is whole once it names its epoch.
    write_atomic(d / "model.safetensors", save_tensors({k: v.contiguous() for k, v in model.state_dict().items()}))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # read back with weights_only=True
    write_atomic(d / "optimizer.pt", buf.getvalue())
    write_atomic(d / "state.json", json.dumps({"epoch": epoch, "history": history, "config": _run_settings(cfg)}).encode())


# What a resumed run may change: how long, how fast, where it runs and keeps its cache (and its
# folder, moved or copied).
RESUMABLE = ("epochs", "lr", "backbone_lr", "device", "cache", "out")


def _run_settings(cfg: TrainConfig) -> dict:
    out = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}
    resolved = {k: [str(Path(d).resolve()) for d in out[k]] for k in ("data", "cohort_data") if out.get(k)}
    return out | resolved  # however the folders are spelt


def _check_resume(cfg: TrainConfig, ckpt: Path) -> None:
    """Before any work: a resumed run goes on with the settings it started with, and has epochs left."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        _check_state(state)
    except Exception:  # damaged: _resume says so, naming the file
        return
    done, then = state["epoch"], state.get("config")
    now = json.loads(json.dumps(_run_settings(cfg)))  # as stored: tuples are lists
    if isinstance(then, dict) and (changed := sorted(k for k in now if k in then and then[k] != now[k])):
        k = changed[0]
        raise ByakuganError(f"resume: the checkpoint's run was started with --{k.replace('_', '-')} {then[k]!r}, not "
                            f"{now[k]!r}; resume with its settings (only --epochs, --lr, --backbone-lr, --device, "
                            "--cache and the folder may change), or --overwrite to start over")
    # done == epochs with no model saved: a run stopped after its last epoch (a full disk at the save) is finished
    if done > cfg.epochs or done == cfg.epochs and (Path(cfg.out) / CONFIG_FILE).is_file():
        raise ByakuganError(f"resume: the checkpoint's run has done {done} epochs, and --epochs is {cfg.epochs}; "
                            "ask for more epochs to train on")


def _check_state(state) -> None:
    """An epoch count its history matches, as _checkpoint writes it: anything else was edited or damaged."""
    start, history = state["epoch"], state["history"]
    if isinstance(start, bool) or not isinstance(start, int) or start < 1 or not isinstance(history, list) \
            or len(history) != start or not all(isinstance(r, dict) for r in history):
        raise ValueError("state.json")


def _resume(model: Embedder, opt: torch.optim.Optimizer, ckpt: Path) -> tuple[int, list]:
    """(epoch, history) of the checkpoint in `ckpt`, its weights loaded into model and opt."""
    name = "state.json"
    try:
        state = json.loads((ckpt / name).read_text())
        _check_state(state)
        start, history = state["epoch"], state["history"]
        name = "model.safetensors"
        model.load_state_dict(load_file(str(ckpt / name)))
        name = "optimizer.pt"
        opt.load_state_dict(torch.load(ckpt / name, weights_only=True))
    except Exception:  # safetensors, pickle, zip and torch each raise their own types for a bad file
        why = "" if name == "state.json" else ", or made with other settings (--dim, --backbone, --taps, --colour-weight, --loss)"
        raise ModelError(f"checkpoint {ckpt / name}: damaged{why}; train into a new --out, or leave out --resume to start over") from None
    return start, history


def _check_cohort_top(cfg: TrainConfig) -> None:
    """A cohort of top N class means needs N classes (build_cohort's pool), said before training."""
    if not cfg.cohort_top:
        return
    pool = cfg.data if cfg.cohort_data is None else cfg.cohort_data
    n = len({s.label for s in scan(pool, per_class=1, seed=cfg.seed)} - set(cfg.holdout))
    if cfg.cohort_top > n:
        raise ByakuganError(f"cohort_top {cfg.cohort_top}: the cohort holds the means of {n} classes (those of "
                            f"{', '.join(map(str, pool))} not held out); use 1 to {n}, or 0 for all of them")


def train(cfg: TrainConfig, resume: bool = False, log: Callable[[str], None] = print, overwrite: bool = False) -> Embedder:
    """Train and save a model into cfg.out. resume: go on from cfg.out's checkpoint; overwrite:
    replace the model already there (without either, a model there is refused, not replaced)."""
    cfg.check()
    if resume and overwrite:
        raise ByakuganError("resume and overwrite: choose one (go on from the checkpoint, or start over)")
    check_model_out(cfg.out, CONFIG_FORMAT, resume, overwrite, cfg.cache)
    ckpt = Path(cfg.out) / "checkpoint"
    if resume and not (ckpt / "state.json").is_file():
        raise ByakuganError(f"resume: no checkpoint in {ckpt}; leave out --resume to start a new run")
    if resume:
        _check_resume(cfg, ckpt)
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    samples = scan(cfg.data, per_class=cfg.per_class, seed=cfg.seed)
    check_training_classes(*split_classes(samples, cfg.holdout))  # before detecting crops, which takes a while
    _check_cohort_top(cfg)
    samples = crop_samples(samples, cfg.detectors, cfg.cache, log)
    train_set, held = split_classes(samples, cfg.holdout)
    train_keys = set(train_set)
    in_train = np.array([s in train_keys for s in samples])
    classes = sorted({s.label for s in train_set})
    y = torch.tensor([classes.index(s.label) for s in train_set])
    head = {"type": "concat", "dim": cfg.head_dim, "hidden": cfg.head_hidden, "weight": cfg.head_weight}
    colour = {"weight": cfg.colour_weight} if cfg.colour_weight > 0 else None
    model = create_embedder(cfg.backbone, pretrained=True, head=head, preprocess=Preprocess(size=cfg.size),
                            name=Path(os.path.abspath(cfg.out)).name, colour=colour, taps=cfg.taps).to(cfg.device)
    if cfg.scoring:
        model.config["scoring"] = cfg.scoring
    loss_fn = LOSSES[cfg.loss](len(classes), cfg.head_dim).to(cfg.device)
    miner = MINERS[cfg.miner]()
    frozen = cfg.backbone_lr == 0
    groups = [{"params": model.head.parameters(), "lr": cfg.lr}, {"params": loss_fn.parameters(), "lr": cfg.lr}]
    if not frozen:
        groups.append({"params": model.backbone.parameters(), "lr": cfg.backbone_lr})
    else:
        model.backbone.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    start, history = 0, []
    if resume:
        start, history = _resume(model, opt, ckpt)
        for group, lr in zip(opt.param_groups, (cfg.lr, cfg.lr, cfg.backbone_lr)):
            group["lr"] = lr  # the rates asked for now (load_state_dict restores the checkpoint's)
        log(f"resumed from {ckpt} at epoch {start}")

    aug = augmentation(cfg.size, cfg.hflip, cfg.colour_jitter, cfg.grey_views)
    if frozen:
        log(f"features of {len(samples)} images x {cfg.views + 1} views; training on {len(classes)} classes")
        every = view_features(model, samples, cfg)
        feats = every[:, torch.from_numpy(in_train)].reshape(-1, every.shape[-1])
        y_all = y.repeat(cfg.views + 1)
        held_feats = every[0, torch.from_numpy(~in_train)] if held else None
    else:
        held_feats = features(model, held) if held else None
    held_labels = np.array([s.label for s in held])

    # Seeded again here so a run gives the same model whether its features came from the cache or not.
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    batch = min(cfg.batch_size, cfg.m_per_class * len(classes))  # the sampler needs m * classes >= batch
    if batch != cfg.batch_size:
        log(f"batch size {cfg.batch_size} > {cfg.m_per_class} per class x {len(classes)} classes; using {batch}")
    # At least one batch an epoch: the sampler draws with replacement, but refuses a pass shorter than a batch.
    sampler = samplers.MPerClassSampler((y_all if frozen else y).tolist(), m=cfg.m_per_class, batch_size=batch,
                                        length_before_new_iter=max(batch, len(y_all if frozen else y)))
    for epoch in range(start, cfg.epochs):
        model.head.train()
        model.backbone.train(not frozen)
        order = list(iter(sampler))
        total = 0.0
        steps = range(0, len(order) - batch + 1, batch)
        for i in tqdm(steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False):
            idx = order[i : i + batch]
            if frozen:
                f, labels = feats[idx].to(cfg.device), y_all[idx].to(cfg.device)
            else:
                x = next(_batches(model, [train_set[j] for j in idx], aug, len(idx), "batch"))
                f, labels = model.backbone(x.to(cfg.device)), y[idx].to(cfg.device)
            z = torch.nn.functional.normalize(model.head.learned(f), dim=-1)
            loss = loss_fn(z, labels, miner(z, labels)) if miner else loss_fn(z, labels)
            check_loss(loss, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        model.eval()
        record = {"epoch": epoch + 1, "loss": round(total / max(1, len(steps)), 4)}
        if held and not frozen:  # the backbone moved: validate on its new features
            held_feats = features(model, held)
        if held_feats is not None:
            with torch.inference_mode():
                emb = torch.nn.functional.normalize(model.head(held_feats.to(cfg.device)), dim=-1).cpu().numpy()
            record |= {f"heldout_{k}": v for k, v in accuracy(emb, held_labels).items()}
        history.append(record)
        log(json.dumps(record))
        _checkpoint(model, opt, epoch + 1, history, ckpt, cfg)
    model.eval().cpu()
    if cfg.cohort_top is not None:
        pool = cfg.data if cfg.cohort_data is None else cfg.cohort_data
        log(f"cohort: class means of the training classes of {len(pool)} folders, {cfg.cohort_per_class} images each")
        model.cohort = build_cohort(model, pool, cfg.holdout, cfg.cohort_per_class, cfg.seed,
                                    crop=lambda pool: crop_samples(pool, cfg.detectors, cfg.cache, log))
        model.config["cohort"] = {"top": cfg.cohort_top}
    if held_feats is not None and len(set(held_labels)) >= 3:
        # The default unknown threshold: the cosine that keeps 95% of known queries when the
        # held-out classes are enrolled 5-shot (galleries can set their own).
        if model.colour is not None:  # the histogram needs pixels, not cached features
            emb = model.embed([s.source() for s in held], progress=True)
        else:
            with torch.inference_mode():
                emb = torch.nn.functional.normalize(model.head(held_feats), dim=-1).numpy()
        trials = enrolment_trials(emb, held_labels, shots=5, trials=10, unknown_fraction=0.25, seed=cfg.seed,
                                  offset=model.cohort_offsets(emb))
        key = "threshold_tar95_mean" if cfg.scoring == "mean" else "threshold_tar95"
        model.config["threshold"] = trials.summary.get(key, model.config["threshold"])
        log(f"threshold {model.config['threshold']} (keeps 95% of held-out known queries, {cfg.scoring or 'nearest'} scoring)")
    model.save(cfg.out)
    write_atomic(Path(cfg.out) / "training.json", (json.dumps({"config": asdict(cfg), "history": history}, indent=1) + "\n").encode())
    return model
