"""Commands on one gallery: enroll, search, labels, remove, rename, reindex (threshold and scoring: scores.py)."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path
from typing import Iterator

from byakugan.embedder.errors import ImageError
from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.labels import alike, check_label, differing
from byakugan.index.milvus import CHOICES
from byakugan.index.pipeline import Pipeline

from .common import EXIT_BAD_INPUT, calibration, detectors, landmarks_arg, locked, print_json, printable, report, saving, table, warn
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
            print(f"byakugan: {printable(image)}: no {g.detector_config['name']} found" + ("; searched the whole image" if found
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
        where = "" if not boxed else " [the whole image: nothing found]" if not d["found"] else \
            " [the whole image, taken as the face]" if d.get("whole") else f" [detection {n} at {tuple(d['box'])}]"
        if d.get("blank"):  # answered unknown whatever it scored: said why
            where += f" [blank: {d['blank']}]"
        # Unknown: the confidence is the nearest label's, not confidence in "unknown"
        said = f"{printable(m['label'])} ({m['confidence']:.0%} confident" if m["known"] else \
            f"unknown (nearest {printable(m['nearest'])}, {m['confidence']:.0%} confident, " + \
            ("a blank crop" if d.get("blank") else f"below the {m['threshold_confidence']:.0%} needed")
        print(f"{printable(item['image'])}{where}: {said}; score {m['score']:.3f}, threshold {m['threshold']:.3f} = "
              f"{m['threshold_confidence']:.0%}" + ("; confidence not calibrated yet: 50% is the threshold)"
                                                   if m.get("calibrated") is False else ")"))
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
        cal = calibration(g) if labels else None
        auto = cal.auto_threshold if cal is not None and g.threshold_auto else None
        passing = cal.strangers_passing(g.threshold if auto is None else auto) if cal is not None else None
        print_json({"gallery": a.gallery, "model": g.model_name, "threshold": g.threshold if auto is None else round(auto, 6),
                    "threshold_mode": "auto" if g.threshold_auto else "fixed",
                    "threshold_from": "fixed" if not g.threshold_auto else "references" if auto is not None else "model",
                    "scoring": g.scoring, "adapt": g.adapt, "colourless_queries": g.colourless_queries,
                    "strangers_passing": None if passing is None else round(passing, 4), "labels": labels})
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
    with edit_gallery(a.gallery) as g:  # every --id given, all or none (one missing: nothing removed)
        refs = [g.remove_reference(i) for i in dict.fromkeys(a.id or ())]
        n = 0 if a.id else g.remove(a.label)
    for ref in refs:
        print(f"removed reference {ref.id} ({printable(repr(ref.label))}, {printable(ref.source)})")
    if not a.id:
        print(f"removed {printable(repr(a.label))} ({n} references)")
    return 0


def reference_id(text: str) -> int:
    """--id: a reference's number in ASCII digits (int() takes ١ and full-width １ too: on a removal,
    a look-alike number is refused rather than read)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise argparse.ArgumentTypeError(f"{text!r} is not a reference id (a whole number, 0 or more, in digits 0-9)")
    return int(text)


def cmd_rename(a: argparse.Namespace) -> int:
    with edit_gallery(a.gallery) as g:
        n = g.rename(a.old, a.new)
    print(printable(f"renamed {a.old!r} to {check_label(a.new)!r} ({n} references)"))
    if others := alike(a.new, g.labels()):
        warn(f"{', '.join(map(repr, others[:3]))} {'is' if len(others) == 1 else 'are'} enrolled too, differing from "
             f"{check_label(a.new)!r} {differing(check_label(a.new), others[0]).removeprefix('differing ')}: "
             f"{'a second class' if len(others) == 1 else 'other classes'}")
    return 0


def cmd_reindex(a: argparse.Namespace) -> int:
    with edit_gallery(a.gallery) as g:
        recall = g.reindex(a.factory)
    if math.isnan(recall):  # a Milvus gallery's new index is built by the save: measured now
        from byakugan.index.reindex import label_recall

        recall = label_recall(g.vectors, {r.id: r.label for r in g.references()})
    chosen = " (auto)" if a.factory.strip().lower() == "auto" else ""  # else as asked, in its one spelling
    measured = f"recall@1 by label against exact search {recall:.3f} (references searched with themselves left out)" \
        if len(g) > 1 else "no recall measured (it takes two references or more)"
    print(f"{printable(a.gallery)}: {len(g)} references in a {g.vectors.factory} index{chosen}; {measured}")
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
    s.add_argument("--id", type=reference_id, action="append", metavar="N",
                   help="remove only the reference with this id (repeat for more: all of them, or none)")
    s.set_defaults(func=cmd_remove)

    s = sub.add_parser("rename", help="rename a label")
    for name in ("gallery", "old", "new"):
        s.add_argument(name, metavar=name.upper())
    s.set_defaults(func=cmd_rename)

    s = sub.add_parser("reindex", help="rebuild the vector index: Flat (exact), HNSW32 or IVF1024,Flat (fast, "
                       "approximate) or auto")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("factory", metavar="FACTORY", help="a FAISS factory string: Flat, HNSW32 (HNSWn), IVF1024,Flat "
                   "(IVFn,Flat: n lists, trained on the gallery; needs at least 39 × n references), or auto "
                   "(exact below 50000 references, HNSW32 to 100000, IVF beyond)")
    s.set_defaults(func=cmd_reindex)
