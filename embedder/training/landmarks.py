"""Training the landmark encoder: MediaPipe landmarks of labelled hand images (cached), a
pytorch-metric-learning loss and miner by name, MPerClassSampler, and held-out validation."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import random
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from pytorch_metric_learning import samplers
from safetensors.numpy import load_file
from safetensors.numpy import save as save_arrays
from tqdm.auto import tqdm

from ..detection import create_detector
from ..detection.hands import LANDMARK_DIM
from ..atomic import write_atomic
from ..embedding.landmarks import HANDS, LANDMARKS_FORMAT, LandmarkEncoder
from ..errors import ByakuganError
from ..evaluation.protocol import check_seed, enrolment_trials
from ..images import load_image
from .config import LOSSES, MINERS, check_loss
from .crops import stamps, still_current
from .data import Sample, check_model_out, check_places, check_setting, check_training_classes, scan, split_classes
from .outlock import training_into
from .metric import accuracy


# hand-landmarks' recipe before the "hands" and "mirror" settings existed: what its training.json
# and the studies measured with it mean when they do not name them.
JOINT_RECIPE = {"hands": "joint", "mirror": 0.0, "dim": 64}


@dataclass
class LandmarkTrainConfig:
    data: list[str]
    out: str
    dim: int = 64
    hidden: int = 256
    hands: str = "sum"  # one net for each hand, vectors added ("sum") or joined ("each"); or one over both ("joint")
    mirror: float = 0.5  # chance that a training draw shows a hand mirrored (left for right)
    loss: str = "multisimilarity"
    miner: str = "multisimilarity"
    m_per_class: int = 8
    batch_size: int = 128
    epochs: int = 40
    lr: float = 1e-3
    weight: float = 0.4  # the landmark share of a fused score
    threshold: Optional[float] = None  # landmark part of a gallery's default threshold; None: calibrate on holdout
    rotate: float = 15.0  # degrees of in-plane rotation added to each training draw
    noise: float = 0.02  # landmark jitter, in units of hand size
    holdout: list[str] = field(default_factory=list)  # "dataset/class" or whole "dataset" kept out
    per_class: Optional[int] = None
    cache: Optional[str] = None
    seed: int = 0

    def check(self) -> None:
        for name, table in (("loss", LOSSES), ("miner", MINERS)):
            if getattr(self, name) not in table:
                raise ByakuganError(f"{name} {getattr(self, name)!r} is not one of {', '.join(table)}")
        if not (isinstance(self.weight, numbers.Real) and 0.0 < self.weight < 1.0):
            raise ByakuganError(f"landmark weight {self.weight!r}: must be between 0 and 1, neither end included")
        if self.hands not in HANDS:
            raise ByakuganError(f"hands {self.hands!r}: must be one of {', '.join(HANDS)}")
        if not isinstance(self.dim, numbers.Integral) or self.dim < 2 or self.hands == "each" and self.dim % 2:
            raise ByakuganError(f"dim {self.dim!r}: must be at least 2, and even with hands 'each' (half for each hand)")
        if not (isinstance(self.mirror, numbers.Real) and 0.0 <= self.mirror <= 1.0):
            raise ByakuganError(f"mirror {self.mirror!r}: must be a chance between 0 and 1")
        self.weight, self.dim, self.mirror = float(self.weight), int(self.dim), float(self.mirror)  # json takes no numpy number
        # m per class 2 or more: its MultiSimilarity loss learns from pairs of one class in a batch
        for name, low in (("hidden", 1), ("m_per_class", 2), ("batch_size", 2), ("epochs", 1), ("per_class", 1)):
            if getattr(self, name) is not None:
                setattr(self, name, check_setting(name, getattr(self, name), low, whole=True))
        if self.batch_size % self.m_per_class or self.batch_size < 2 * self.m_per_class:  # one class: no negatives
            raise ByakuganError(f"batch size {self.batch_size} must be a multiple of m per class {self.m_per_class} and at "
                                f"least {2 * self.m_per_class}: a batch holds m samples of each of 2 or more classes")
        # NaN passes every comparison: each rate and amount is checked finite, or a NaN model is saved.
        for name, low, high, above in (("lr", 0, math.inf, True), ("rotate", 0, 180, False), ("noise", 0, math.inf, False)):
            setattr(self, name, check_setting(name, getattr(self, name), low, high, above))
        if self.threshold is not None:
            self.threshold = check_setting("threshold", self.threshold, -1, 1)
        try:
            self.seed = check_seed(self.seed)
        except ValueError as exc:
            raise ByakuganError(str(exc)) from None
        check_places(self.out, self.data, self.cache)


def extract(samples: Sequence[Sample], cache: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 128) landmark encodings and a found mask, per dataset cached in `cache` when given."""
    detector = None
    marks, found = [], []
    for dataset, group in groupby(samples, key=lambda s: s.dataset):
        group = list(group)
        key = json.dumps([detector_key(), [str(s.path.resolve()) for s in group]])
        path = Path(cache) / f"landmarks-{dataset}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors" if cache else None
        files = stamps(group)
        if still_current(path, files):
            saved = load_file(str(path))
            marks.append(saved["marks"])
            found.append(saved["found"].astype(bool))
            continue
        detector = detector or create_detector("hand")
        m = np.zeros((len(group), LANDMARK_DIM), np.float32)
        for i, s in enumerate(tqdm(group, desc=f"landmarks {dataset}", unit="img", leave=False)):
            d = detector(load_image(s.path))
            if d:
                m[i] = d[0].landmarks
        f = np.abs(m).sum(1) > 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, save_arrays({"marks": m, "found": f.astype(np.uint8)}, {"files": files}))
        marks.append(m)
        found.append(f)
    return np.concatenate(marks), np.concatenate(found)


def detector_key() -> dict:
    from ..detection.hands import HandSettings

    return asdict(HandSettings())


def augment(x: torch.Tensor, rotate: float, noise: float, gen: torch.Generator, mirror: float = 0.0) -> torch.Tensor:
    """Rotate each hand in the image plane, jitter its points and, with chance `mirror`, mirror it
    (hand order and presence kept)."""
    n = x.shape[0]
    hands = x.view(n, 2, 64)
    present, pts = hands[:, :, :1], hands[:, :, 1:].reshape(n, 2, 21, 3)
    angle = (torch.rand(n, 1, generator=gen) * 2 - 1) * np.deg2rad(rotate)
    c, s = torch.cos(angle), torch.sin(angle)
    px, py = pts[..., 0], pts[..., 1]
    x_rot = c[:, :, None] * px - s[:, :, None] * py
    y_rot = s[:, :, None] * px + c[:, :, None] * py
    pts = torch.stack([x_rot, y_rot, pts[..., 2]], dim=-1)
    pts = pts + noise * torch.randn(pts.shape, generator=gen)
    pts = pts * present[..., None]  # an absent hand stays all zero
    if mirror > 0:
        # A gesture made with the other hand is the same gesture; sources show mostly one hand.
        flip = torch.rand(n, 2, generator=gen) < mirror
        pts = torch.cat([torch.where(flip[:, :, None, None], -pts[..., :1], pts[..., :1]), pts[..., 1:]], dim=-1)
    return torch.cat([present, pts.reshape(n, 2, 63)], dim=2).reshape(n, LANDMARK_DIM)


def train_landmarks(cfg: LandmarkTrainConfig, log: Callable[[str], None] = print, overwrite: bool = False) -> LandmarkEncoder:
    """Extract (or read cached) landmarks of cfg.data, fit the encoder, set its threshold, save it.
    overwrite: replace a landmark model already in cfg.out (without it, one there is refused).
    One run at a time into one folder (outlock)."""
    cfg.check()
    with training_into(cfg.out):
        return _train_landmarks(cfg, log, overwrite)


def _train_landmarks(cfg: LandmarkTrainConfig, log: Callable[[str], None], overwrite: bool) -> LandmarkEncoder:
    check_model_out(cfg.out, LANDMARKS_FORMAT, None, overwrite, cfg.cache)
    samples = scan(cfg.data, per_class=cfg.per_class, seed=cfg.seed)
    train_set, held_set = split_classes(samples, cfg.holdout)
    check_training_classes(train_set, held_set)  # before extracting landmarks, which takes a while
    marks, found = extract(samples, cfg.cache)
    log(f"hands found in {found.mean():.1%} of {len(samples)} images; training on those")
    train_keys = set(train_set)
    in_train = np.array([s in train_keys for s in samples])
    labels = np.array([s.label for s in samples])
    use, held = in_train & found, ~in_train & found
    try:
        check_training_classes([s for s, u in zip(samples, use) if u], [])
    except ByakuganError as exc:
        raise ByakuganError(f"too few hands found: {exc}") from None
    model, history = fit(marks[use], labels[use], cfg, (marks[held], labels[held]), log)
    if cfg.threshold is not None:
        model.config["threshold"] = cfg.threshold
    elif len(set(labels[held])) >= 3:
        # The landmark part of a fused gallery's default threshold: keeps 95% of held-out known queries.
        trials = enrolment_trials(model.encode(marks[held]), labels[held], shots=5, trials=10, unknown_fraction=0.25, seed=cfg.seed)
        model.config["threshold"] = trials.summary.get("threshold_tar95", model.config["threshold"])
        log(f"threshold {model.config['threshold']} (keeps 95% of held-out known queries)")
    else:  # said, not left for the user to find in config.json
        log(f"threshold {model.config['threshold']}: not calibrated (that needs 3 or more held-out classes with hands "
            f"found, --holdout; {len(set(labels[held]))} here); --threshold sets one")
    model.save(cfg.out)
    (Path(cfg.out) / "training.json").write_text(json.dumps({"config": asdict(cfg), "history": history}, indent=1) + "\n")
    return model


def fit(X: np.ndarray, labels: np.ndarray, cfg: LandmarkTrainConfig,
        held: Optional[tuple[np.ndarray, np.ndarray]] = None, log: Callable[[str], None] = print) -> tuple[LandmarkEncoder, list]:
    """Train an encoder on (N, 128) landmark encodings; held = (X, labels) of classes kept out."""
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    classes = sorted(set(labels.tolist()))
    y = torch.tensor([classes.index(c) for c in labels])
    X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    model = LandmarkEncoder({"name": Path(os.path.abspath(cfg.out)).name, "dim": cfg.dim, "hidden": cfg.hidden, "weight": cfg.weight,
                             "hands": cfg.hands})
    loss_fn = LOSSES[cfg.loss](len(classes), cfg.dim)
    miner = MINERS[cfg.miner]()
    opt = torch.optim.AdamW([{"params": model.parameters()}, {"params": loss_fn.parameters()}], lr=cfg.lr, weight_decay=1e-4)
    batch = min(cfg.batch_size, cfg.m_per_class * len(classes))  # the sampler needs m * classes >= batch
    # At least one batch an epoch: the sampler draws with replacement, but refuses a pass shorter than a batch.
    sampler = samplers.MPerClassSampler(y.tolist(), m=cfg.m_per_class, batch_size=batch,
                                        length_before_new_iter=max(batch, len(y)))
    gen = torch.Generator().manual_seed(cfg.seed)
    validate = held is not None and len(set(held[1].tolist())) >= 2
    history = []
    for epoch in tqdm(range(cfg.epochs), desc="landmark epochs", unit="epoch", leave=False):
        model.train()
        order, total, steps = list(iter(sampler)), 0.0, 0
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            z = model(augment(X[idx], cfg.rotate, cfg.noise, gen, cfg.mirror))
            loss = loss_fn(z, y[idx], miner(z, y[idx])) if miner else loss_fn(z, y[idx])
            check_loss(loss, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        model.eval()
        record = {"epoch": epoch + 1, "loss": round(total / max(1, steps), 4)}
        if validate and ((epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs):
            record |= {f"heldout_{k}": v for k, v in accuracy(model.encode(held[0]), held[1]).items()}
            log(json.dumps(record))
        history.append(record)
    return model.eval(), history
