"""Metric-learning training of an embedder: loss, miner and sampler from pytorch-metric-learning.

With backbone_lr=0 (the default) the backbone stays frozen: features of a few augmented views of
every image are computed once and the head trains on them in seconds. With backbone_lr>0 the
backbone is fine-tuned on augmented images each step (slow on a CPU).
"""

from __future__ import annotations

import hashlib
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
from ..embedding.model import CONFIG_FORMAT, Embedder, create_embedder
from ..errors import ByakuganError
from ..evaluation.protocol import enrolment_trials
from ..preprocess import Preprocess
from .augment import GREY, augmentation
from .checkpoint import check_resume, resume as resume_from, save_checkpoint
from .stages import backbone_parts, train_backbone
from .cohort import build_cohort
from .config import LOSSES, MINERS, TrainConfig, check_loss
from .crops import crop_samples, stamps, still_current
from .data import Sample, check_model_out, check_training_classes, scan, split_classes
from .outlock import training_into

__all__ = ["LOSSES", "MINERS", "TrainConfig", "train", "batches", "features", "view_features", "accuracy"]


def batches(model: Embedder, samples: Sequence[Sample], aug: Optional[v2.Compose], batch: int, desc: str):
    """The samples as preprocessed tensors, batch by batch (one augmented draw each where aug is given)."""
    for start in tqdm(range(0, len(samples), batch), desc=desc, unit="batch", leave=False):
        imgs = [s.image() for s in samples[start : start + batch]]
        yield torch.stack([model.preprocess(aug(im) if aug else im) for im in imgs])


@torch.inference_mode()
def features(model: Embedder, samples: Sequence[Sample], aug: Optional[v2.Compose] = None, batch: int = 64) -> torch.Tensor:
    """Pooled backbone features (before the head) of each sample, one augmented draw if aug is given."""
    model.eval()
    out = [model.backbone(x.to(model.device).contiguous(memory_format=torch.channels_last)).cpu()
           for x in batches(model, samples, aug, batch, "features")]
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
        files = stamps(group)
        if still_current(path, files):
            out.append(load_file(str(path))["features"])
            continue
        torch.manual_seed(cfg.seed)
        aug = augmentation(cfg.size, cfg.hflip, cfg.colour_jitter, cfg.grey_views)
        f = torch.stack([features(model, group)] + [features(model, group, aug) for _ in range(cfg.views)])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, save_tensors({"features": f.contiguous()}, {"files": files}))
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
    replace the model already there (without either, a model there is refused, not replaced).
    One run at a time into one folder (outlock)."""
    cfg.check()
    with training_into(cfg.out):
        return _train(cfg, resume, log, overwrite)


def _train(cfg: TrainConfig, resume: bool, log: Callable[[str], None], overwrite: bool) -> Embedder:
    if resume and overwrite:
        raise ByakuganError("resume and overwrite: choose one (go on from the checkpoint, or start over)")
    check_model_out(cfg.out, CONFIG_FORMAT, resume, overwrite, cfg.cache)
    ckpt = Path(cfg.out) / "checkpoint"
    if resume and not (ckpt / "state.json").is_file():
        raise ByakuganError(f"resume: no checkpoint in {ckpt}; leave out --resume to start a new run")
    if resume:
        check_resume(cfg, ckpt)
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
    rates = [cfg.lr, cfg.lr] + ([] if frozen else [cfg.backbone_lr, cfg.early_rate()])
    groups = [{"params": model.head.parameters()}, {"params": loss_fn.parameters()}]
    if not frozen:  # the later stages at --backbone-lr, the earlier (more general features) slower
        late, early = backbone_parts(model.backbone)
        if not early and cfg.early_lr is not None:
            raise ByakuganError(f"early lr: backbone {cfg.backbone} has no stages byakugan can tell apart "
                                "(embedder.training.stages); leave --early-lr out, and all of it trains at --backbone-lr")
        groups += [{"params": late}, {"params": early}]
    model.backbone.requires_grad_(False)  # until an epoch trains it (after the head's own: train_backbone)
    opt = torch.optim.AdamW([g | {"lr": lr} for g, lr in zip(groups, rates)], weight_decay=1e-4)
    start, history = 0, []
    if resume:
        start, history = resume_from(model, opt, ckpt)
        for group, lr in zip(opt.param_groups, rates):
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
        # BatchNorm statistics stay the pretrained ones (batches of a few classes would skew them), as
        # the recipe anime-finetuned was trained with (benchmarks/gpu_finetune.py)
        model.backbone.eval().requires_grad_(train_backbone(cfg, epoch))
        order = list(iter(sampler))
        total = 0.0
        steps = range(0, len(order) - batch + 1, batch)
        for i in tqdm(steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False):
            idx = order[i : i + batch]
            if frozen:
                f, labels = feats[idx].to(cfg.device), y_all[idx].to(cfg.device)
            else:
                x = next(batches(model, [train_set[j] for j in idx], aug, len(idx), "batch"))
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
        save_checkpoint(model, opt, epoch + 1, history, ckpt, cfg)
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
