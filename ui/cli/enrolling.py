"""`byakugan enroll`: which images go under which label, and enrolling them (making the gallery on
first use, its model picked as Pipeline.create picks it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from byakugan.embedder.errors import ByakuganError, ImageError
from byakugan.embedder.images import IMAGE_SUFFIXES, list_images
from byakugan.index import store
from byakugan.index.errors import GalleryError
from byakugan.index.gallery import Gallery
from byakugan.index.labels import check_label, check_label_in, check_labels, shown
from byakugan.index.milvus import check_store
from byakugan.index.opening import open_gallery
from byakugan.index.model_check import check_fits
from byakugan.index.records import Crop
from byakugan.index.warnings import enrol_warnings

from .common import EXIT_BAD_INPUT, locked, print_json, printable, report, saving, warn
from .evaluation import detector_config

FILES = ("model", "verifier", "cascade")  # detector settings that name a file (embedder.detection.assets)

def _plan(a: argparse.Namespace) -> list[tuple[str, list[str]]]:
    if a.from_folder:
        if a.label or a.images:
            raise GalleryError("enroll: give either LABEL IMAGE... or --from-folder DIR, not both")
        root = Path(a.from_folder)
        if not root.is_dir():
            raise GalleryError(f"--from-folder {root}: not a folder")
        # as training reads a data folder (embedder.training.data.scan): hidden folders are no labels
        folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        listed = [(d.name, [str(p) for p in list_images(d)]) for d in folders]
        # named as images, but not files to read (a folder "x.jpg", a dangling link): said, not passed over
        if odd := [p for d in folders for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_file()]:
            warn(f"--from-folder {root}: {len(odd)} name{'s' if len(odd) > 1 else ''} with an image's suffix "
                 f"{'are' if len(odd) > 1 else 'is'} not a file and skipped: {', '.join(map(str, odd[:3]))}"
                 + (" ..." if len(odd) > 3 else ""))
        empty = [name for name, files in listed if not files]
        if empty:  # a label the user meant to enrol would be missing without a word
            many = len(empty) > 1
            raise GalleryError(f"--from-folder {root}: sub-folder{'s' if many else ''} {', '.join(empty[:5])}"
                               f"{' ...' if len(empty) > 5 else ''} hold{'' if many else 's'} no images; add images or "
                               f"move {'them' if many else 'it'} out")
        plan = listed
        # all, before any work; the rules only for new labels are the gallery's (an old label may be added to)
        plan = list(zip(check_labels([lab for lab, _ in plan], new=False), [files for _, files in plan]))
        if not plan:
            raise GalleryError(f"--from-folder {root}: no sub-folders with images (expected one sub-folder per label)")
        return plan
    if a.label is None or not a.images:
        raise GalleryError("enroll: needs LABEL and at least one IMAGE, or --from-folder DIR")
    label = check_label(a.label, new=False)  # as it is stored (stripped), in what enroll prints
    # `enroll G a.jpg b.jpg`: the label left out, the first image taken for it. Only a label named like
    # an image: one that is a file by chance ("1" beside a file "1") is a label all the same.
    if Path(label).suffix.lower() in IMAGE_SUFFIXES and Path(label).is_file():
        raise GalleryError(f"enroll: the label {shown(a.label, 120)} is an image file; the label comes first, then the "
                           "images (byakugan enroll GALLERY LABEL IMAGE...)")
    return [(label, a.images)]


def _bar(items, doing: str, label: str, unit: str = "img"):
    """A progress bar on a terminal (a thousand images take a minute), none when stderr is a file or for a few."""
    from tqdm.auto import tqdm

    name = printable(label)
    return tqdm(items, desc=f"{doing} {name if len(name) <= 24 else name[:23] + '…'}", unit=unit, leave=False,
                disable=len(items) <= 8 or not sys.stderr.isatty())


def cmd_enroll(a: argparse.Namespace) -> int:
    plan = _plan(a)
    if a.store is not None:
        check_store(a.store)  # a bad value is refused before anything is made
    if a.detector_setting and a.detector is None:
        raise ByakuganError("--detector-setting: needs --detector (the settings are that detector's)")
    detector = detector_config(a.detector, a.detector_setting) if a.detector else None
    ok_all = True
    gallery_dir = Path(a.gallery)
    new = not Gallery.exists(gallery_dir)
    if new:
        check_labels([label for label, _ in plan])  # every label is new: all of their rules, before any work
        if isinstance(detector, dict):
            from byakugan.embedder.detection import create_detector

            # A file a setting names is found again from wherever the gallery is used.
            detector |= {k: str(Path(v).resolve()) for k, v in detector.items() if k in FILES and isinstance(v, str)}
            create_detector(detector)  # a bad setting is one line before anything is made
        store.check_new(gallery_dir)  # before the lock creates anything there
    with locked(gallery_dir):
        pipe, g = open_gallery(gallery_dir, a.model, detector, a.landmarks, runtime="onnx", vectors=a.store,
                               sample=[f for _, files in plan for f in files])
        # the rules for a label new to this gallery, before any work (not part-way); one already there is
        # taken as it is stored ("a b" typed for an old "a\u00a0b", which shows alike: see labels.find)
        known = g.labels()
        plan = [(check_label_in(label, known), files) for label, files in plan]
        added: dict[str, int] = {}
        nothing: list[str] = []
        for label, files in plan:
            regions, sources = [], []
            for f in _bar(files, "reading", label):
                try:
                    found = pipe.crops(f, every=a.all, fallback=a.fallback)
                except ImageError as exc:
                    report(str(exc))
                    ok_all = False
                    continue
                regions += found
                sources += [f if len(found) == 1 else f"{f}#{n}" for n in range(1, len(found) + 1)]
            if regions:
                check_fits(g, pipe.encoder, pipe.landmarks)  # before the work of embedding
                vectors = pipe.embed_regions([r.crop for r in regions], [r.landmarks for r in regions],
                                             progress=len(regions) > 8 and sys.stderr.isatty())  # a file gets no bar
                # What the page warns of (blank crops, near-duplicates, closer to another class), from the
                # vectors enrolment stores; enrolled all the same: the user may mean it
                for said in enrol_warnings(pipe, g, label, [Crop(s, r.crop, r.landmarks, r.found)
                                                            for s, r in zip(sources, regions)], vectors):
                    warn(said)
                pipe.enroll_regions(g, label, regions, sources, vectors)
                added[label] = added.get(label, 0) + len(regions)
            else:
                nothing.append(label)
        if not added:
            raise ImageError("enroll: none of the images gave a crop (each is listed above); gallery unchanged")
        if skipped := [label for label in nothing if label not in added]:  # --from-folder: a label left out whole
            report(f"enroll: nothing enrolled for label{'s' if len(skipped) > 1 else ''} "
                   f"{', '.join(map(repr, skipped[:5]))}{' ...' if len(skipped) > 5 else ''}: none of "
                   f"{'their' if len(skipped) > 1 else 'its'} images gave a crop (each is listed above)")
        with saving(gallery_dir):
            g.save()
    chosen = {"model_chosen_by": pipe.choice.why} if pipe.choice is not None else {}  # a new gallery, no --model
    if a.json:
        print_json({"gallery": str(gallery_dir), "added": added, "labels": g.labels(), "model": g.model_name, **chosen})
    else:
        if new or chosen:  # the model a new gallery keeps, and why
            print(printable(f"{gallery_dir}: new gallery, model {g.model_name} ({pipe.choice.why if chosen else '--model'})"))
        for label, n in added.items():
            print(printable(f"enrolled {n} image(s) as {label!r}"))
        print(printable(f"{gallery_dir}: {len(g)} references, {len(g.labels())} labels"))
    return 0 if ok_all else EXIT_BAD_INPUT
