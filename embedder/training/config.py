"""The settings of a metric-learning run (TrainConfig), checked in one place before any work, and the
losses and miners of pytorch-metric-learning they name."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from pytorch_metric_learning import losses, miners

from ..errors import ByakuganError
from ..evaluation.protocol import check_seed
from ..scoring import SCORINGS
from .augment import GREY
from .crops import check_detectors
from .data import MAX_SIZE, check_device, check_places, check_setting
from .stages import EARLY_SHARE

LOSSES: dict[str, Callable[[int, int], torch.nn.Module]] = {
    "triplet": lambda n, d: losses.TripletMarginLoss(margin=0.1),
    "multisimilarity": lambda n, d: losses.MultiSimilarityLoss(),
    "supcon": lambda n, d: losses.SupConLoss(temperature=0.1),
    "proxyanchor": lambda n, d: losses.ProxyAnchorLoss(n, d),
    "arcface": lambda n, d: losses.ArcFaceLoss(n, d),
}
PAIR_LOSSES = ("triplet", "multisimilarity", "supcon")  # (proxy losses learn from one picture of a class)
MINERS: dict[str, Callable[[], Optional[torch.nn.Module]]] = {
    "none": lambda: None,
    "semihard": lambda: miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard"),
    "hard": lambda: miners.BatchHardMiner(),
    "multisimilarity": lambda: miners.MultiSimilarityMiner(epsilon=0.1),
}


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    backbone: str = "efficientnet_lite0"
    taps: list[int] = field(default_factory=list)  # earlier backbone levels joined to the final features (embedder.embedding.taps)
    size: int = 160
    head_dim: int = 128
    head_hidden: int = 512
    head_weight: float = 1.0
    colour_weight: float = 0.0  # > 0 joins a colour histogram to the embedding (anime; see embedder.embedding.colour)
    scoring: Optional[str] = None  # how new galleries with this model rank labels: "nearest" or "mean"
    cohort_top: Optional[int] = None  # N >= 0: scores normalised by a cohort of the training classes (embedder.scoring.cohort)
    cohort_per_class: int = 50  # images per training class in the cohort's class means
    # Folders whose classes make the cohort, when not all of `data` (classes trained on as instances, one
    # image each, are no impostor identities); None: `data`.
    cohort_data: Optional[list[str]] = None
    loss: str = "multisimilarity"
    miner: str = "multisimilarity"
    m_per_class: int = 4
    batch_size: int = 64
    epochs: int = 30
    lr: float = 1e-3
    backbone_lr: float = 0.0  # > 0: the backbone's last two stages fine-tune at this rate (embedder.training.stages)
    early_lr: Optional[float] = None  # the stages before them; None: EARLY_SHARE of backbone_lr
    head_epochs: Optional[int] = None  # when fine-tuning, the first epochs train the head alone; None: 1
    views: int = 4  # augmented views per image when the backbone is frozen (plus the plain one)
    hflip: bool = False  # off by default: flipping swaps left and right hands
    colour_jitter: bool = True  # off keeps colours as drawn (anime characters are told apart by them)
    grey_views: float = GREY  # the share of colour-jittered views made grey (embedder.training.augment)
    cache: Optional[str] = None  # folder for frozen-backbone features, reused across runs
    per_class: Optional[int] = None  # a seeded sample of images per class (quick runs)
    holdout: list[str] = field(default_factory=list)  # "dataset/class" labels kept out of training
    # Train on each image's crop by the detector its galleries use: {"*": name} for every dataset,
    # {dataset folder name: name} for one (embedder.training.crops); empty: whole images.
    detectors: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"

    def check(self) -> None:
        for name, table in (("loss", LOSSES), ("miner", MINERS)):
            if getattr(self, name) not in table:
                raise ByakuganError(f"{name} {getattr(self, name)!r} is not one of {', '.join(table)}")
        if self.scoring not in (None, *SCORINGS):
            raise ByakuganError(f"scoring {self.scoring!r} is not one of {', '.join(SCORINGS)}")
        if self.cohort_top is not None:  # 0: the mean over the whole cohort
            self.cohort_top = check_setting("cohort_top", self.cohort_top, 0, whole=True)
        for name, low, high in (("m_per_class", 1, math.inf), ("batch_size", 1, math.inf), ("epochs", 1, math.inf),
                                ("head_dim", 1, math.inf), ("head_hidden", 1, math.inf), ("views", 0, math.inf),
                                ("per_class", 1, math.inf), ("size", 32, MAX_SIZE), ("cohort_per_class", 1, math.inf),
                                ("head_epochs", 0, math.inf)):
            if getattr(self, name) is not None:
                setattr(self, name, check_setting(name, getattr(self, name), low, high, whole=True))
        # NaN passes every comparison: each rate and weight is checked finite, or a NaN model is saved.
        for name, low, high, above in (("lr", 0, math.inf, True), ("backbone_lr", 0, math.inf, False),
                                       ("head_weight", 0, math.inf, True), ("colour_weight", 0, math.inf, False),
                                       ("grey_views", 0, 1, False), ("early_lr", 0, math.inf, False)):
            if getattr(self, name) is not None:  # early_lr None: a share of backbone_lr
                setattr(self, name, check_setting(name, getattr(self, name), low, high, above))
        try:
            self.seed = check_seed(self.seed)
        except ValueError as exc:
            raise ByakuganError(str(exc)) from None
        if self.m_per_class < 2 and (self.loss in PAIR_LOSSES or self.miner != "none"):  # its loss would be 0
            raise ByakuganError(f"m per class {self.m_per_class}: loss {self.loss!r}" + (
                f" with miner {self.miner!r}" if self.miner != "none" else "") + " learns from two or more pictures of "
                "one class in a batch; give 2 or more")
        if self.batch_size % self.m_per_class or self.batch_size < 2 * self.m_per_class:  # one class: no negatives
            raise ByakuganError(f"batch size {self.batch_size} must be a multiple of m per class {self.m_per_class} and at "
                                f"least {2 * self.m_per_class}: a batch holds m images of each of 2 or more classes")
        if self.backbone_lr == 0 and (self.early_lr is not None or self.head_epochs is not None):
            raise ByakuganError(f"{'early lr' if self.early_lr is not None else 'head epochs'}: only for a fine-tune "
                                "(--backbone-lr above 0); a frozen backbone trains the head alone in every epoch")
        if self.backbone_lr > 0 and self.head_rounds() >= self.epochs:
            raise ByakuganError(f"head epochs {self.head_rounds()} with epochs {self.epochs}: no epoch would fine-tune "
                                "the backbone (--backbone-lr); use fewer --head-epochs or more --epochs")
        check_detectors(self.detectors, self.data)
        self.device = check_device(self.device)
        check_places(self.out, self.data, self.cache)

    def head_rounds(self) -> int:
        """How many first epochs of a fine-tune train the head alone."""
        return 1 if self.head_epochs is None else self.head_epochs

    def early_rate(self) -> float:
        """The rate of the backbone's stages before its last two (embedder.training.stages)."""
        return self.backbone_lr * EARLY_SHARE if self.early_lr is None else self.early_lr


def check_loss(loss: torch.Tensor, epoch: int) -> None:
    """Stop at a loss that is not finite: the weights would become NaN and every vector with them."""
    if not torch.isfinite(loss).all():
        raise ByakuganError(f"training diverged in epoch {epoch + 1}: the loss is {loss.item()}; the model was not saved "
                            "(a lower learning rate, --lr, may help)")
