"""The `byakugan` command line. Any ByakuganError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

import embedder
from embedder import ByakuganError, ImageError
from embedder.detect import list_detectors
from embedder.evaluation import SCORINGS

from . import store
from .cli_more import (
    cmd_embed,
    cmd_evaluate,
    cmd_export,
    cmd_models,
    cmd_serve,
    cmd_train,
    cmd_train_landmarks,
    cmd_ui,
)
from .cli_util import EXIT_BAD_INPUT, _print_json, _report, _table
from .errors import GalleryError
from .gallery import Gallery


# ---- commands ------------------------------------------------------------------------------
def cmd_enroll(a: argparse.Namespace) -> int:
    if a.from_folder:
        if a.label or a.images:
            raise GalleryError("enroll: give either LABEL IMAGE... or --from-folder DIR, not both")
        root = Path(a.from_folder)
        if not root.is_dir():
            raise GalleryError(f"--from-folder {root}: not a folder")
        plan = [(d.name, [str(p) for p in embedder.list_images(d)]) for d in sorted(root.iterdir()) if d.is_dir()]
        plan = [(lab, files) for lab, files in plan if files]
        if not plan:
            raise GalleryError(f"--from-folder {root}: no sub-folders with images (expected one sub-folder per label)")
    else:
        if not a.label or not a.images:
            raise GalleryError("enroll: needs LABEL and at least one IMAGE, or --from-folder DIR")
        plan = [(a.label, a.images)]
    ok_all = True
    gallery_dir = Path(a.gallery)
    with store.locked(gallery_dir):
        g = Gallery.open_or_create(gallery_dir, a.model, detector=a.detector, landmarks=a.landmarks)
        added: dict[str, int] = {}
        for label, files in plan:
            images, sources, marks = [], [], []
            for f in files:
                try:
                    crops = g.crops(f, every=a.all, fallback=a.fallback)
                except ImageError as exc:
                    _report(str(exc))
                    ok_all = False
                    continue
                images += [crop for _, crop in crops]
                marks += [det.landmarks for det, _ in crops]
                sources += [f if len(crops) == 1 else f"{f}#{n}" for n in range(1, len(crops) + 1)]
            if images:
                g.enroll(label, images, sources=sources, detect=False, landmarks=marks)
                added[label] = len(images)
        if not added:
            raise ImageError("enroll: none of the images could be read; gallery unchanged")
        g.save()
    if a.json:
        _print_json({"gallery": str(gallery_dir), "added": added, "labels": g.labels()})
    else:
        for label, n in added.items():
            print(f"enrolled {n} image(s) as {label!r}")
        print(f"{gallery_dir}: {len(g)} references, {len(g.labels())} labels")
    return 0 if ok_all else EXIT_BAD_INPUT


def cmd_search(a: argparse.Namespace) -> int:
    g = Gallery.open(a.gallery, a.model)
    if a.threshold is not None:
        g.threshold = a.threshold
    if not len(g):
        raise GalleryError(f"gallery {a.gallery}: is empty; enrol images first")
    out, ok_all = [], True
    for image in a.images:
        try:
            detections = g.find(image, k=a.k, fallback=a.fallback)
        except ImageError as exc:
            _report(str(exc))
            out.append({"image": image, "error": str(exc)})
            ok_all = False
            continue
        if not detections:
            print(f"byakugan: {image}: no {g.detector_config['name']} found (--fallback whole searches the whole image)",
                  file=sys.stderr)
        out.append({"image": image, "detections": detections})
    if a.json:
        _print_json(out)
    else:
        for item in out:
            for n, d in enumerate(item.get("detections", []), 1):
                m = d["match"]
                where = f" [detection {n} at {tuple(d['box'])}]" if g.detector_config["name"] != "none" else ""
                print(f"{item['image']}{where}: {m['label']} ({m['score']:.3f})")
                rows = [(r + 1, h["label"], f"{h['score']:.3f}", h["source"]) for r, h in enumerate(d["hits"])]
                print("  " + _table(rows, ("#", "label", "score", "reference")).replace("\n", "\n  "))
    return 0 if ok_all else EXIT_BAD_INPUT


def cmd_labels(a: argparse.Namespace) -> int:
    g = Gallery.open(a.gallery)
    labels = g.labels()
    if a.json:
        _print_json({"gallery": a.gallery, "model": g.model_name, "threshold": g.threshold, "labels": labels})
    elif labels:
        print(_table(sorted(labels.items()), ("label", "references")))
    else:
        print(f"{a.gallery}: no labels enrolled")
    return 0


@contextlib.contextmanager
def _edit(gallery: str) -> Iterator[Gallery]:
    """Open a gallery under its lock for a read-modify-save; nothing is saved if the edit fails."""
    path = Path(gallery)
    if not (path / store.META_FILE).is_file():
        Gallery.open(path)  # raises the precise "missing" or "not a gallery" error without creating a lock file
    with store.locked(path):
        g = Gallery.open(path)
        yield g
        g.save()


def cmd_remove(a: argparse.Namespace) -> int:
    if (a.label is None) == (a.id is None):
        raise GalleryError("remove: give either LABEL or --id N")
    with _edit(a.gallery) as g:
        if a.id is not None:
            ref = g.remove_reference(a.id)
            print(f"removed reference {ref.id} ({ref.label!r}, {ref.source})")
        else:
            n = g.remove(a.label)
            print(f"removed {a.label!r} ({n} references)")
    return 0


def cmd_rename(a: argparse.Namespace) -> int:
    with _edit(a.gallery) as g:
        n = g.rename(a.old, a.new)
    print(f"renamed {a.old!r} to {a.new!r} ({n} references)")
    return 0


def cmd_threshold(a: argparse.Namespace) -> int:
    if a.value is None:
        print(Gallery.open(a.gallery).threshold)
        return 0
    with _edit(a.gallery) as g:
        g.threshold = a.value
    print(f"threshold set to {g.threshold}")
    return 0


def cmd_scoring(a: argparse.Namespace) -> int:
    if a.value is None:
        print(Gallery.open(a.gallery).scoring)
        return 0
    with _edit(a.gallery) as g:
        g.scoring = a.value
    print(f"scoring set to {g.scoring}; the threshold ({g.threshold}) was calibrated for one scoring: "
          "check it with `byakugan evaluate` (threshold_tar95 / threshold_tar95_mean)")
    return 0


# ---- parser --------------------------------------------------------------------------------
def _landmarks_arg(s: argparse.ArgumentParser, when: str) -> None:
    s.add_argument("--landmarks", default="auto", metavar="NAME|DIR|none",
                   help=f"landmark model fused with the CNN embedding {when} (default: hand-landmarks)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="byakugan", description="Recognise characters and gestures from a few enrolled images.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = "model name or directory (default: the gallery's own model, or 'default' for a new gallery)"

    s = sub.add_parser("enroll", help="add reference images for a label (creates the gallery if needed)")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("label", metavar="LABEL", nargs="?")
    s.add_argument("images", metavar="IMAGE", nargs="*")
    s.add_argument("--from-folder", metavar="DIR", help="enrol every sub-folder of DIR as a label")
    s.add_argument("--model", help=model_help)
    s.add_argument("--detector", choices=list_detectors(), help="crop with this detector (a new gallery keeps it; default none)")
    _landmarks_arg(s, "for a new gallery with detector 'hand'")
    s.add_argument("--all", action="store_true", help="enrol every detection, not only the largest")
    s.add_argument("--fallback", choices=["whole"], help="use the whole image when nothing is detected")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_enroll)

    s = sub.add_parser("search", help="find the nearest enrolled references for images")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("images", metavar="IMAGE", nargs="+")
    s.add_argument("--k", type=int, default=5, help="references and labels to return per image (default 5)")
    s.add_argument("--threshold", type=float, help="below this score the match is 'unknown' (default: the gallery's)")
    s.add_argument("--model", help="check the gallery against this model (default: the gallery's own)")
    s.add_argument("--fallback", choices=["whole"], help="search the whole image when nothing is detected")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("labels", help="list enrolled labels and their reference counts")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_labels)

    s = sub.add_parser("remove", help="remove a label, or one reference with --id")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("label", metavar="LABEL", nargs="?")
    s.add_argument("--id", type=int, help="remove only the reference with this id")
    s.set_defaults(func=cmd_remove)

    s = sub.add_parser("rename", help="rename a label")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("old", metavar="OLD")
    s.add_argument("new", metavar="NEW")
    s.set_defaults(func=cmd_rename)

    s = sub.add_parser("threshold", help="show or set the gallery's unknown threshold")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("value", metavar="VALUE", type=float, nargs="?")
    s.set_defaults(func=cmd_threshold)

    s = sub.add_parser("scoring", help="show or set how labels are ranked: nearest reference or class mean")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("value", metavar="nearest|mean", nargs="?")
    s.set_defaults(func=cmd_scoring)

    s = sub.add_parser("embed", help="write embeddings of images to a .npy file, one row per image in order")
    s.add_argument("images", metavar="IMAGE", nargs="+")
    s.add_argument("--out", required=True, metavar="FILE.npy")
    s.add_argument("--model", default=embedder.DEFAULT_MODEL, help="model name or directory (default: default)")
    s.add_argument("--detector", choices=list_detectors(), default="none", help="embed the largest detection (default: none)")
    s.add_argument("--fallback", choices=["whole"], help="embed the whole image when nothing is detected")
    _landmarks_arg(s, "for detector 'hand'")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("export", help="write a gallery as a bundle (directory, .zip or .tar.gz) for other services")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("out", metavar="OUT")
    s.add_argument("--model", help="check the gallery against this model (default: the gallery's own)")
    s.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="serve a gallery or a bundle over HTTP (FastAPI; docs at /docs)")
    s.add_argument("source", metavar="BUNDLE_OR_GALLERY")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $BYAKUGAN_TOKEN, else none)")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body accepted (default 10)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("ui", help="start the Streamlit page (search, enrol, manage, export)")
    s.add_argument("--gallery", help="gallery folder (default: byakugan/gallery in the user data directory)")
    s.add_argument("--model", help="model for a new gallery (default: the gallery's own, or 'default')")
    s.add_argument("--detector", choices=list_detectors(), help="detector for a new gallery (default none)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8501)
    s.add_argument("--max-upload-mb", type=int, default=10, help="largest image upload accepted (default 10)")
    s.set_defaults(func=cmd_ui)

    s = sub.add_parser("train", help="train an embedding head (metric learning) on labelled image folders")
    s.add_argument("data", metavar="DATA_DIR", nargs="+", help="folders with one sub-folder per class")
    s.add_argument("--out", required=True, help="model folder to write, e.g. models/NAME")
    s.add_argument("--backbone", default="efficientnet_lite0")
    s.add_argument("--taps", type=int, nargs="+", metavar="LEVEL",
                   help="also pool these earlier backbone levels (timm feature_info indices, e.g. 3; see embedder/taps.py)")
    s.add_argument("--size", type=int, default=160, help="input size in pixels (default 160)")
    s.add_argument("--dim", type=int, default=128, help="size of the learned part of the embedding (default 128)")
    s.add_argument("--head-weight", type=float, default=1.0, help="weight of the learned part beside the frozen features")
    s.add_argument("--colour-weight", type=float, default=0.0,
                   help="> 0 joins a colour histogram of the crop with this weight (anime characters; hurts hands)")
    s.add_argument("--scoring", choices=SCORINGS,
                   help="how galleries built with the model rank labels unless set (default nearest)")
    s.add_argument("--cohort-top", type=int, metavar="N",
                   help="normalise scores by a cohort of the training classes: take off a query's mean cosine to "
                        "its N most similar class means (0: all); fewer unknowns accepted (anime: 5)")
    s.add_argument("--cohort-per-class", type=int, default=50, help="images per class in the cohort (default 50)")
    s.add_argument("--loss", default="multisimilarity", help="triplet, multisimilarity, supcon, proxyanchor, arcface")
    s.add_argument("--miner", default="multisimilarity", help="none, semihard, hard, multisimilarity")
    s.add_argument("--m-per-class", type=int, default=4, help="images per class in each batch (MPerClassSampler)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--lr", type=float, default=1e-3, help="learning rate of the head")
    s.add_argument("--backbone-lr", type=float, default=0.0, help="0 keeps the backbone frozen (default)")
    s.add_argument("--views", type=int, default=4, help="augmented views per image for a frozen backbone")
    s.add_argument("--hflip", action="store_true", help="augment with horizontal flips (off: it swaps hands)")
    s.add_argument("--no-colour-jitter", dest="colour_jitter", action="store_false",
                   help="augment without colour jitter or greyscale (for classes told apart by colour)")
    s.add_argument("--holdout", nargs="*", metavar="DATASET[/CLASS]",
                   help="classes, or whole datasets, kept out of training and validated on each epoch")
    s.add_argument("--cache", help="folder to keep frozen-backbone features in between runs")
    s.add_argument("--per-class", type=int, help="train on a seeded sample of this many images per class")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("train-landmarks", help="train the hand-landmark encoder fused with the CNN for detector 'hand'")
    s.add_argument("data", metavar="DATA_DIR", nargs="+", help="folders with one sub-folder per gesture")
    s.add_argument("--out", required=True, help="model folder to write, e.g. models/hand-landmarks")
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--loss", default="multisimilarity", help="triplet, multisimilarity, supcon, proxyanchor, arcface")
    s.add_argument("--miner", default="multisimilarity", help="none, semihard, hard, multisimilarity")
    s.add_argument("--epochs", type=int, default=40)
    s.add_argument("--weight", type=float, default=0.4, help="landmark share of a fused score (default 0.4)")
    s.add_argument("--threshold", type=float, help="landmark part of a fused gallery's default threshold "
                   "(default: the cosine keeping 95%% of known queries of the --holdout classes)")
    s.add_argument("--holdout", nargs="*", metavar="DATASET[/CLASS]", help="kept out of training, validated on")
    s.add_argument("--cache", help="folder to keep extracted landmarks in between runs")
    s.add_argument("--per-class", type=int, help="train on a seeded sample of this many images per class")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_train_landmarks)

    s = sub.add_parser("evaluate", help="few-shot enrolment protocol on a labelled folder, with open-set figures")
    s.add_argument("data", metavar="DATA_DIR")
    s.add_argument("--model", default=embedder.DEFAULT_MODEL)
    s.add_argument("--shots", type=int, default=5)
    s.add_argument("--trials", type=int, default=10)
    s.add_argument("--unknown-fraction", type=float, default=0.33, help="share of classes left out of the gallery")
    s.add_argument("--per-class", type=int, help="use a seeded sample of this many images per class")
    s.add_argument("--classes", nargs="+", metavar="CLASS", help="evaluate only these class folders")
    s.add_argument("--detector", choices=list_detectors(), default="none", help="crop each image to its largest detection")
    _landmarks_arg(s, "for detector 'hand'")
    s.add_argument("--no-cohort", action="store_true", help="raw cosines even if the model normalises scores by a cohort")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.add_argument("--report", metavar="DIR", help="write confusion.png, scores.png, embeddings.png, summary.json")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("models", help="list model names")
    s.set_defaults(func=cmd_models)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import faiss

    # The CLI searches a few images at a time. On 10k references a single query took 8-10 ms with
    # one OpenMP thread in every run of benchmarks/speed.py here, and 8-19 ms with two.
    faiss.omp_set_num_threads(1)
    try:
        return args.func(args)
    except ByakuganError as exc:
        _report(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
