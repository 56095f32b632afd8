"""Commands on one gallery: enroll, search, labels, remove, rename, threshold, scoring, reindex."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path
from typing import Iterator

from byakugan.embedder.errors import ImageError
from byakugan.embedder.scoring import SCORINGS
from byakugan.embedder.scoring.adapt import Adaptation
from byakugan.embedder.scoring.calibration import AUTO_KEEPS, MIN_AUTO
from byakugan.index.errors import GalleryError, shown
from byakugan.index.gallery import Gallery
from byakugan.index.labels import check_label
from byakugan.index.milvus import CHOICES
from byakugan.index.pipeline import Pipeline

from .common import (EXIT_BAD_INPUT, adapt_value, completed_for, detectors, landmarks_arg, locked, print_json, printable,
                     report, saving, table)
from .enrolling import cmd_enroll

MODEL_HELP = "model name or directory (default: the gallery's own; for a new gallery, see `byakugan models`)"


def cmd_search(a: argparse.Namespace) -> int:
    g = Gallery.open(a.gallery)
    if a.threshold is not None:
        g.threshold = a.threshold
    if not len(g):
        raise GalleryError(f"gallery {a.gallery}: is empty; enrol images first")
    pipe = Pipeline.for_gallery(g, a.model, runtime="onnx")
    out, ok_all = [], True
    # Each image's answer is printed as soon as it is found (`search G *.jpg | head` stops early, and many images
    # show their answers as they go); --json prints one list at the end, with a bar on a terminal meanwhile.
    bar = _bar(len(a.images), a.json)
    for image in a.images:
        try:
            found = pipe.recognize(g, image, k=a.k, fallback=None if a.fallback == "none" else a.fallback)
        except ImageError as exc:
            report(str(exc))
            out.append({"image": image, "error": str(exc)})
            ok_all = False
            continue
        finally:
            bar.update()
        if not found or not found[0].found:
            print(f"byakugan: {image}: no {g.detector_config['name']} found" + ("; searched the whole image" if found
                  else " (--fallback whole searches the whole image)"), file=sys.stderr)
        out.append({"image": image, "detections": [r.to_dict() for r in found]})
        if not a.json:
            _print_answer(out.pop(), g.detector_config["name"] != "none")
    bar.close()
    if a.json:
        print_json(out)
    return 0 if ok_all else EXIT_BAD_INPUT


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="searching", leave=False,
                disable=not enabled or total < 2 or not sys.stderr.isatty())


def _print_answer(item: dict, boxed: bool) -> None:
    for n, d in enumerate(item["detections"], 1):
        m = d["match"]
        where = f" [detection {n} at {tuple(d['box'])}]" if boxed else ""
        # Unknown: the confidence is the nearest label's, not confidence in "unknown"
        said = f"{printable(m['label'])} ({m['confidence']:.0%} confident" if m["known"] else \
            f"unknown (nearest {printable(m['nearest'])}, {m['confidence']:.0%} confident, below the {m['threshold_confidence']:.0%} needed"
        print(f"{printable(item['image'])}{where}: {said}; score {m['score']:.3f}, threshold {m['threshold']:.3f} = "
              f"{m['threshold_confidence']:.0%})")
        nearest = {}  # labels as they were ranked, each with its nearest reference among the hits
        for h in d["hits"]:
            nearest.setdefault(h["label"], h["source"])
        rows = [(r + 1, e["label"], f"{e['confidence']:.0%}", f"{e['score']:.3f}", nearest.get(e["label"], ""))
                for r, e in enumerate(d["labels"])]
        print("  " + table(rows, ("#", "label", "confidence", "score", "nearest reference")).replace("\n", "\n  "))
    sys.stdout.flush()


def cmd_labels(a: argparse.Namespace) -> int:
    g = Gallery.open(a.gallery)
    labels = g.labels()
    if a.json:
        # In auto mode the stored value is only the model's fallback: the one in force is what searches use.
        auto = Pipeline.for_gallery(g, runtime="onnx").calibration(g).auto_threshold if g.threshold_auto and labels else None
        print_json({"gallery": a.gallery, "model": g.model_name, "threshold": g.threshold if auto is None else round(auto, 6),
                    "threshold_mode": "auto" if g.threshold_auto else "fixed",
                    "threshold_from": "fixed" if not g.threshold_auto else "references" if auto is not None else "model",
                    "scoring": g.scoring, "adapt": g.adapt, "labels": labels})
    elif labels:
        print(table(sorted(labels.items()), ("label", "references")))
    else:
        print(f"{a.gallery}: no labels enrolled")
    return 0


@contextlib.contextmanager
def edit_gallery(gallery: str) -> Iterator[Gallery]:
    """Open a gallery under its lock for a read-modify-save; nothing is saved if the edit fails."""
    path = Path(gallery)
    if not Gallery.exists(path):
        Gallery.open(path)  # raises the precise "missing" or "not a gallery" error without creating a lock file
    with locked(path):
        g = Gallery.open(path)
        yield g
        with saving(path):
            g.save()


def cmd_remove(a: argparse.Namespace) -> int:
    if (a.label is None) == (a.id is None):
        raise GalleryError("remove: give either LABEL or --id N")
    with edit_gallery(a.gallery) as g:
        if a.id is not None:
            ref = g.remove_reference(a.id)
            print(f"removed reference {ref.id} ({ref.label!r}, {printable(ref.source)})")
        else:
            n = g.remove(a.label)
            print(f"removed {a.label!r} ({n} references)")
    return 0


def cmd_rename(a: argparse.Namespace) -> int:
    with edit_gallery(a.gallery) as g:
        n = g.rename(a.old, a.new)
    print(f"renamed {a.old!r} to {check_label(a.new)!r} ({n} references)")
    return 0


def cmd_threshold(a: argparse.Namespace) -> int:
    if a.value is None:
        g = Gallery.open(a.gallery)
        if not g.threshold_auto:
            print(g.threshold)
            return 0
        cal = Pipeline.for_gallery(g, runtime="onnx").calibration(g)
        if cal.auto_threshold is None:
            print(g.threshold)
            note(f"auto: the model's threshold until the references give {MIN_AUTO} true-match scores "
                   f"(each reference against the rest of its class); they give {cal.genuine}"
                   + (f" ({cal.reason})" if cal.reason else ""))
        else:
            print(round(cal.auto_threshold, 6))
            note(f"auto: keeps {AUTO_KEEPS:.0%} of the {cal.genuine} true-match scores of the gallery's own references"
                 + ("; held down to the best score a reference reaches against another class (or the stored "
                    "threshold): above that, a higher one would refuse only true matches" if cal.held else ""))
        return 0
    with edit_gallery(a.gallery) as g:
        if a.value == "auto":
            g.threshold_auto = True
        else:
            g.threshold = a.value
    print("threshold set to auto (chosen by the gallery's own references)" if a.value == "auto"
          else f"threshold set to {g.threshold}")
    return 0


def cmd_reindex(a: argparse.Namespace) -> int:
    with edit_gallery(a.gallery) as g:
        recall = g.reindex(a.factory)
    if math.isnan(recall):  # a Milvus gallery's new index is built by the save: measured now
        from byakugan.index.reindex import label_recall

        recall = label_recall(g.vectors, {r.id: r.label for r in g.references()})
    chosen = " (auto)" if a.factory.strip().lower() == "auto" else ""  # else as asked, in its one spelling
    print(f"{a.gallery}: {len(g)} references in a {g.vectors.factory} index{chosen}; recall@1 by label "
          f"against exact search {recall:.3f} (references searched with themselves left out)")
    return 0


def note(msg: str) -> None:
    print(f"byakugan: {msg}", file=sys.stderr)


def threshold_value(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number or 'auto'") from None
    # Told as typed ("1e400" is not "inf", nor "1_0" "10.0"); the gallery holds it to its own range:
    # a cosine's, or an adapted score's, which reaches past 1 (index.settings.threshold_reach).
    if not -3.0 <= value <= 3.0:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a cosine similarity between -1 and 1 (an adapted "
                                         "score: from -1 - weight to 1 + weight), or 'auto'")
    return value + 0.0  # -0 is 0


def cmd_scoring(a: argparse.Namespace) -> int:
    if a.adapt is not None or a.no_adapt:
        with edit_gallery(a.gallery) as g:
            g.scoring, g.adapt = a.value or g.scoring, None if a.no_adapt else completed_for(g, a.adapt)
        how = f"adapted to its classes ({Adaptation.from_dict(g.adapt)})" if g.adapt \
            else "not adapted to its classes"
        then = "the automatic threshold follows it" if g.threshold_auto else \
            "check its fixed threshold with `byakugan evaluate --adapt` (or --no-adapt) on pictures like its own"
        print(f"scoring set to {g.scoring}, {how}; {then}")
        return 0
    if a.value is None:  # opened once: its scoring on stdout, whether it is adapted beside it
        g = Gallery.open(a.gallery)
        print(g.scoring)
        if adapt := g.adapt:
            note(f"labels' scores adapted to its classes: {Adaptation.from_dict(adapt)} (--no-adapt to stop)")
        return 0
    with edit_gallery(a.gallery) as g:
        g.scoring = a.value
    if adapt := g.adapt:  # unchanged, and said: it is part of what the scores now are
        note(f"labels' scores still adapted to its classes: {Adaptation.from_dict(adapt)} (--no-adapt to stop)")
    if g.threshold_auto:
        print(f"scoring set to {g.scoring}; the automatic threshold follows it")
    else:
        print(f"scoring set to {g.scoring}; the threshold ({g.threshold}) was calibrated for one scoring: "
              "check it with `byakugan evaluate` (threshold_tar95 / threshold_tar95_mean)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("enroll", help="add reference images for a label (creates the gallery if needed)")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("label", metavar="LABEL", nargs="?")
    s.add_argument("images", metavar="IMAGE", nargs="*")
    s.add_argument("--from-folder", metavar="DIR", help="enrol every sub-folder of DIR as a label")
    s.add_argument("--model", help=MODEL_HELP)
    s.add_argument("--detector", choices=detectors(), help="crop with this detector (a new gallery keeps it; default none)")
    s.add_argument("--detector-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="for a new gallery, one of its detector's settings, the value in JSON (for example "
                        "whole_above=0.2); repeatable; the gallery keeps them")
    landmarks_arg(s, "for a new gallery with detector 'hand'")
    s.add_argument("--store", metavar="faiss|milvus-lite|milvus://HOST:PORT",
                   help=f"where a new gallery keeps its vectors: {CHOICES} (default faiss; see docs/milvus.md)")
    s.add_argument("--all", action="store_true", help="enrol every detection, not only the first (the largest; anime-face-net: the surest)")
    s.add_argument("--fallback", choices=["whole"], help="use the whole image when nothing is detected")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_enroll)

    s = sub.add_parser("search", help="find the nearest enrolled references for images",
                       description="Answers every detection in each image, in the detector's order (what enroll "
                                   "does with --all), and the whole image where nothing is found (--fallback).")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("images", metavar="IMAGE", nargs="+")
    s.add_argument("--k", type=int, default=5, help="references and labels to return per image (default 5)")
    s.add_argument("--threshold", type=float, help="below this score the match is 'unknown' (default: the gallery's)")
    s.add_argument("--model", help="check the gallery against this model (default: the gallery's own)")
    s.add_argument("--fallback", choices=["whole", "none"], default="whole",
                   help="what to search when nothing is detected: the whole image (default), or nothing")
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
    for name in ("gallery", "old", "new"):
        s.add_argument(name, metavar=name.upper())
    s.set_defaults(func=cmd_rename)

    s = sub.add_parser("threshold", help="show or set the gallery's unknown threshold (a score, or auto)")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("value", metavar="VALUE|auto", type=threshold_value, nargs="?",
                   help="a score, or auto: keep 95%% of the gallery's own true matches (new galleries' default)")
    s.set_defaults(func=cmd_threshold)

    s = sub.add_parser("reindex", help="rebuild the vector index: Flat (exact), HNSW32 or IVF1024,Flat (fast, "
                       "approximate) or auto")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("factory", metavar="FACTORY", help="a FAISS factory string: Flat, HNSW32 (HNSWn), IVF1024,Flat "
                   "(IVFn,Flat: n lists, trained on the gallery; needs at least 39 × n references), or auto "
                   "(exact below 50000 references, HNSW32 to 100000, IVF beyond)")
    s.set_defaults(func=cmd_reindex)

    s = sub.add_parser("scoring", help="show or set how labels are ranked: nearest reference or class mean, and "
                       "whether scores are adapted to the gallery's classes")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("value", metavar="|".join(SCORINGS), nargs="?")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--adapt", type=adapt_value, metavar="WEIGHT[,RIDGE[,COHORT]]",
                     help="add a ridge regression fitted on the references to each label's score; COHORT: the share of "
                          "the gallery's cohort in the fit; parts left out as its model advises (hand galleries: "
                          "0.3,0.03, anime: 1,0.1,30; ridge 0.03 and no cohort where a model advises none)")
    how.add_argument("--no-adapt", action="store_true", help="label scores not adapted to the gallery's classes")
    s.set_defaults(func=cmd_scoring)
