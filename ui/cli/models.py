"""Commands on models: embed, models, train, train-landmarks."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.errors import ByakuganError
from byakugan.index.errors import LandmarksNeedHandError
from byakugan.index.pipeline import Pipeline

from .common import EXIT_BAD_INPUT, check_new_file, detectors, given, landmarks_arg, printable, report, seed, write_new

S = argparse.SUPPRESS  # defaults live in TrainConfig / LandmarkTrainConfig, not here


def pipeline_for(model, detector: str, landmarks: str, sample=()) -> Pipeline:
    """The pipeline a command embeds with (sample: images that pick the model, see Pipeline.create);
    --landmarks without --detector hand is refused."""
    try:
        return Pipeline.create(model, detector, landmarks, sample)
    except LandmarksNeedHandError:
        raise ByakuganError(f"--landmarks {landmarks}: needs --detector hand, not {detector!r}") from None


def cmd_embed(a: argparse.Namespace) -> int:
    out = Path(a.out)
    if out.suffix != ".npy":
        raise ByakuganError(f"--out {out}: must end with .npy")
    if not out.parent.is_dir():
        raise ByakuganError(f"--out {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise ByakuganError(f"--out {out}: is a folder; name a .npy file")
    from byakugan.embedder.atomic import check_writable

    check_writable(out, "--out", folder=False)  # before the work, not after it
    check_new_file(out, "--out", a.overwrite)
    pipe = pipeline_for(a.model, a.detector, a.landmarks)  # one model whatever the images: vectors of two runs compare
    result = pipe.embed_images(a.images, fallback=a.fallback, progress=len(a.images) > 8)
    for err in result.errors:
        if err is not None:
            report(str(err))
    bad = sum(e is not None for e in result.errors)
    if bad == len(a.images):  # a file of NaN rows only is of no use, and would stand in the way of the next run
        raise ByakuganError(f"embed: none of the {bad} image(s) could be embedded (each is listed above); "
                            f"{out} not written")
    buf = io.BytesIO()
    np.save(buf, result.vectors)
    write_new(out, buf.getvalue(), "--out", a.overwrite)
    note = f" ({bad} unreadable or with nothing detected: NaN rows)" if bad else ""
    emb = result.vectors
    print(printable(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} float32, model {pipe.encoder.name}{note}"), file=sys.stderr)
    return EXIT_BAD_INPUT if bad else 0


def cmd_models(a: argparse.Namespace) -> int:
    from byakugan.embedder.detection import list_detectors
    from byakugan.embedder.embedding.files import models_dir
    from byakugan.embedder.detection.looks import JUDGE
    from byakugan.embedder.embedding.hub import list_models, model_for
    from byakugan.embedder.embedding.landmarks import is_landmark_model, landmarks_for

    chosen: dict[str, list[str]] = {}
    for det in list_detectors():
        chosen.setdefault(model_for(det), []).append(det)
    from byakugan.embedder.embedding.backbones import list_backbones, weights_source

    d = models_dir()
    for name in list_models():
        used, adapt = chosen.get(name), advice(d / name)
        if used:
            print(f"{name}  (new galleries with detector {', '.join(used)}{adapt})")
        elif name in list_backbones():  # not trained here: what --model gives, and whether it works offline
            print(f"{name}  (an ImageNet backbone's features alone, untrained here; {weights_source(name)})")
        else:
            print(f"{name}  (new galleries made with it: {adapt[2:]})" if adapt else name)
    if model_for(JUDGE) != model_for("none"):
        print(f"(a new gallery with detector none takes {model_for(JUDGE)} when most of its first images look like "
              f"anime faces to {JUDGE}'s verifier, else {model_for('none')})")
    for p in sorted(d.glob("*")) if d.is_dir() else []:
        if is_landmark_model(p):
            auto = ", fused into new hand galleries" if p.name == landmarks_for("hand") else ""
            print(f"{p.name}  (hand-landmark model, for detector hand{auto}{advice(p)})")
    return 0


def advice(folder: Path) -> str:
    """What a model folder advises its new galleries' scores (embedder.scoring.adapt), for a listing:
    nothing where there is none or it is bad (the model's own use names the fault; a listing goes on)."""
    from byakugan.embedder.embedding.files import listed_config
    from byakugan.embedder.scoring.adapt import Adaptation, threshold_fault

    config = listed_config(folder)
    try:
        adapt = Adaptation.from_dict(config.get("adapt"))
    except ValueError:
        return ""
    t = config.get("adapted_threshold")  # the threshold they start with, where it is one the model's use takes
    shown = t is not None and threshold_fault(t, adapt.weight) is None
    return f"; their scores adapted to their classes, {adapt}" + (f", threshold {t:g} until their references choose one"
                                                                  if shown else "")


TRAIN_FIELDS = ("data", "out", "backbone", "taps", "size", "head_weight", "colour_weight", "scoring", "cohort_top",
                "cohort_per_class", "loss", "miner", "m_per_class", "batch_size", "epochs", "lr", "backbone_lr",
                "early_lr", "head_epochs", "views", "hflip", "colour_jitter", "holdout", "cache", "per_class", "seed", "device")


def cmd_train(a: argparse.Namespace) -> int:
    from byakugan.embedder.training.crops import parse_detectors
    from byakugan.embedder.training.metric import TrainConfig, train

    fields = given(a, TRAIN_FIELDS, {"dim": "head_dim", "detector": "detector"})
    if "detector" in fields:
        fields["detectors"] = parse_detectors(fields.pop("detector"))
    cfg = TrainConfig(**fields)
    model = train(cfg, resume=a.resume, log=lambda m: print(m, file=sys.stderr), overwrite=a.overwrite)
    print(printable(f"saved {model.name} ({model.dim}-d) to {a.out}"))
    return 0


LANDMARK_FIELDS = ("data", "out", "dim", "hands", "mirror", "loss", "miner", "epochs", "weight", "threshold", "holdout", "cache",
                   "per_class", "seed")


def cmd_train_landmarks(a: argparse.Namespace) -> int:
    from byakugan.embedder.training.landmarks import LandmarkTrainConfig, train_landmarks

    model = train_landmarks(LandmarkTrainConfig(**given(a, LANDMARK_FIELDS)), log=lambda m: print(m, file=sys.stderr),
                            overwrite=a.overwrite)
    print(printable(f"saved landmark model {model.name} ({model.dim}-d, weight {model.weight}) to {a.out}"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("embed", help="write embeddings of images to a .npy file, one row per image in order")
    s.add_argument("images", metavar="IMAGE", nargs="+")
    s.add_argument("--out", required=True, metavar="FILE.npy")
    s.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists (else it is refused)")
    s.add_argument("--model", help="model name or directory (default: the one for --detector, see `byakugan models`)")
    s.add_argument("--detector", choices=detectors(), default="none", help="embed the first detection (the largest; anime-face-net: the surest; default: none)")
    s.add_argument("--fallback", choices=["whole"], help="embed the whole image when nothing is detected")
    landmarks_arg(s, "for detector 'hand'")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("models", help="list model names")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("train", help="train an embedding head (metric learning) on labelled image folders",
                       description="Defaults are those of byakugan.embedder.training.metric.TrainConfig.")
    s.add_argument("data", metavar="DATA_DIR", nargs="+", help="folders with one sub-folder per class")
    s.add_argument("--out", required=True, help="model folder to write, e.g. models/NAME")
    s.add_argument("--backbone", default=S, help="timm backbone (default efficientnet_lite0)")
    s.add_argument("--taps", type=int, nargs="+", metavar="LEVEL", default=S,
                   help="also pool these earlier backbone levels (timm feature_info indices, e.g. 3; see embedder/embedding/taps.py)")
    s.add_argument("--size", type=int, default=S, help="input size in pixels (default 160)")
    s.add_argument("--dim", type=int, default=S, help="size of the learned part of the embedding (default 128)")
    s.add_argument("--head-weight", type=float, default=S, help="weight of the learned part beside the frozen features")
    s.add_argument("--colour-weight", type=float, default=S,
                   help="> 0 joins a colour histogram of the crop with this weight (anime characters; hurts hands)")
    s.add_argument("--scoring", choices=["nearest", "mean"], default=S,
                   help="how galleries built with the model rank labels unless set (default nearest)")
    s.add_argument("--cohort-top", type=int, metavar="N", default=S,
                   help="normalise scores by a cohort of the training classes: take off a query's mean cosine to "
                        "its N most similar class means (0: all); fewer unknowns accepted (anime: 5)")
    s.add_argument("--cohort-per-class", type=int, default=S, help="images per class in the cohort (default 50)")
    s.add_argument("--loss", default=S, help="triplet, multisimilarity (default), supcon, proxyanchor, arcface")
    s.add_argument("--miner", default=S, help="none, semihard, hard, multisimilarity (default)")
    s.add_argument("--m-per-class", type=int, default=S, help="images per class in each batch (MPerClassSampler)")
    s.add_argument("--batch-size", type=int, default=S)
    s.add_argument("--epochs", type=int, default=S)
    s.add_argument("--lr", type=float, default=S, help="learning rate of the head")
    s.add_argument("--backbone-lr", type=float, default=S,
                   help="0 keeps the backbone frozen (default); else the rate of its last two stages (1e-4 made anime-finetuned)")
    s.add_argument("--early-lr", type=float, default=S, help="with --backbone-lr: the rate of the stages before its last two (default 0.3 of it)")
    s.add_argument("--head-epochs", type=int, default=S, help="with --backbone-lr: the first epochs train the head alone (default 1)")
    s.add_argument("--views", type=int, default=S, help="augmented views per image for a frozen backbone")
    s.add_argument("--hflip", action="store_true", default=S, help="augment with horizontal flips (off: it swaps hands)")
    s.add_argument("--no-colour-jitter", dest="colour_jitter", action="store_false", default=S,
                   help="augment without colour jitter or greyscale (for classes told apart by colour)")
    s.add_argument("--holdout", nargs="*", metavar="DATASET[/CLASS]", default=S,
                   help="classes, or whole datasets, kept out of training and validated on each epoch")
    s.add_argument("--detector", action="append", metavar="[DATASET=]NAME", default=S,
                   help="train on each image's crop by this detector, as galleries with it crop (for example hand, "
                        "or anime-scenes=anime-face for one data folder; repeat for several); default: whole images")
    s.add_argument("--cache", default=S, help="folder to keep frozen-backbone features (and crop boxes) in between runs")
    s.add_argument("--per-class", type=int, default=S, help="train on a seeded sample of this many images per class")
    s.add_argument("--seed", type=seed, default=S)
    s.add_argument("--device", default=S, help="cpu or cuda (default: cuda when present)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    s.add_argument("--overwrite", action="store_true", help="replace the model already in --out (else it is refused)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("train-landmarks", help="train the hand-landmark encoder fused with the CNN for detector 'hand'",
                       description="Defaults are those of byakugan.embedder.training.landmarks.LandmarkTrainConfig.")
    s.add_argument("data", metavar="DATA_DIR", nargs="+", help="folders with one sub-folder per gesture")
    s.add_argument("--out", required=True, help="model folder to write, e.g. models/my-gestures")
    s.add_argument("--dim", type=int, default=S, help="embedding size (default 64; with --hands each, half for each hand)")
    s.add_argument("--hands", choices=("sum", "each", "joint"), default=S,
                   help="sum (default): one net embeds each hand, the two vectors added (no hand order); each: "
                        "joined in hand order, half the vector each; joint: one net over both hands")
    s.add_argument("--mirror", type=float, default=S, help="chance a training draw mirrors a hand (default 0.5)")
    s.add_argument("--loss", default=S, help="triplet, multisimilarity (default), supcon, proxyanchor, arcface")
    s.add_argument("--miner", default=S, help="none, semihard, hard, multisimilarity (default)")
    s.add_argument("--epochs", type=int, default=S)
    s.add_argument("--weight", type=float, default=S, help="landmark share of a fused score (default 0.4)")
    s.add_argument("--threshold", type=float, default=S, help="landmark part of a fused gallery's default threshold "
                   "(default: the cosine keeping 95%% of known queries of the --holdout classes)")
    s.add_argument("--holdout", nargs="*", metavar="DATASET[/CLASS]", default=S, help="kept out of training, validated on")
    s.add_argument("--cache", default=S, help="folder to keep extracted landmarks in between runs")
    s.add_argument("--per-class", type=int, default=S, help="train on a seeded sample of this many images per class")
    s.add_argument("--seed", type=seed, default=S)
    s.add_argument("--overwrite", action="store_true", help="replace the landmark model already in --out (else it is refused)")
    s.set_defaults(func=cmd_train_landmarks)
