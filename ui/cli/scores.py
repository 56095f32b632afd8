"""How one gallery scores: its unknown threshold, how labels are ranked, whether their scores are
adapted to its classes, and whether queries without colour score by the CNN part alone."""

from __future__ import annotations

import argparse
import sys

from byakugan.embedder.scoring import SCORINGS
from byakugan.embedder.scoring.adapt import Adaptation
from byakugan.embedder.scoring.calibration import AUTO_KEEPS, MIN_AUTO
from byakugan.index.confidence import strangers_note
from byakugan.index.errors import GalleryError, shown
from byakugan.index.gallery import Gallery
from byakugan.index.pipeline import Pipeline

from .common import adapt_value, calibration, completed_for, printable, warn
from .gallery import edit_gallery


def cmd_threshold(a: argparse.Namespace) -> int:
    if a.value is None:
        g = Gallery.open(a.gallery)
        cal = calibration(g) if g.threshold_auto or g.labels() else None
        used = g.threshold if cal is None or not g.threshold_auto or cal.auto_threshold is None else cal.auto_threshold
        print(round(used, 6) if used != g.threshold else g.threshold)
        if cal is not None and g.threshold_auto and cal.auto_threshold is None:
            note(f"auto: the model's threshold until the references give {MIN_AUTO} true-match scores "
                 f"(each reference against the rest of its class); they give {cal.genuine}"
                 + (f" ({cal.reason})" if cal.reason else ""))
        elif cal is not None and g.threshold_auto:
            note(f"auto: keeps {AUTO_KEEPS:.0%} of the {cal.genuine} true-match scores of the gallery's own references"
                 + ("; held down to the best score a reference reaches against another class (or the stored "
                    "threshold): above that, a higher one would refuse only true matches" if cal.held else ""))
        if cal is not None and (said := strangers_note(cal, used)):
            note(said)
        return 0
    with edit_gallery(a.gallery) as g:
        if a.value == "auto":
            g.threshold_auto = True
        else:
            g.threshold = a.value
    print("threshold set to auto (chosen by the gallery's own references)" if a.value == "auto"
          else f"threshold set to {g.threshold}")
    if a.value != "auto" and g.labels() and (cal := calibration(g)) is not None and (said := strangers_note(cal, g.threshold)):
        note(said)  # as showing it says: a threshold set where most strangers pass is not set silently
    return 0


def note(msg: str) -> None:
    print(f"byakugan: {printable(msg)}", file=sys.stderr)


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
    if a.adapt is not None or a.no_adapt or a.grey_queries is not None:
        # read from the model before the gallery is locked: loading it takes seconds that would hold up its edits
        spec = grey_rule(Gallery.open(a.gallery)) if a.grey_queries == "cnn" else None
        with edit_gallery(a.gallery) as g:
            g.scoring = a.value or g.scoring
            if a.adapt is not None or a.no_adapt:
                g.adapt = None if a.no_adapt else completed_for(g, a.adapt)
            if a.grey_queries is not None:
                g.colourless_queries = spec
        how = f"adapted to its classes ({Adaptation.from_dict(g.adapt)})" if g.adapt \
            else "not adapted to its classes"
        then = "the automatic threshold follows it" if g.threshold_auto else \
            "check its fixed threshold with `byakugan evaluate` on pictures like its own"
        grey = f", {grey_said(g)}" if a.grey_queries is not None or g.colourless_queries else ""  # else no colour part
        print(f"scoring set to {g.scoring}, {how}{grey}; {then}")
        if g.adapt and g.threshold_auto and not g.threshold_model_adapted:
            cal = Pipeline.for_gallery(g, runtime="onnx").calibration(g)
            if cal.auto_threshold is None:  # the model's plain threshold, held against scores that run higher
                warn(f"until the references give {MIN_AUTO} true-match scores (they give {cal.genuine}), the automatic "
                     f"threshold is the model's {g.threshold:g}, set on scores not adapted; adapted ones run higher, so "
                     "strangers pass more often: enrol more images a label, or set one with `byakugan threshold`")
        return 0
    if a.value is None:  # opened once: its scoring on stdout, what else shapes the scores beside it
        g = Gallery.open(a.gallery)
        print(g.scoring)
        if adapt := g.adapt:
            note(f"labels' scores adapted to its classes: {Adaptation.from_dict(adapt)} (--no-adapt to stop)")
        if g.colourless_queries:
            note(f"{grey_said(g)} (--grey-queries all to stop)")
        return 0
    with edit_gallery(a.gallery) as g:
        g.scoring = a.value
    if adapt := g.adapt:  # unchanged, and said: it is part of what the scores now are
        note(f"labels' scores still adapted to its classes: {Adaptation.from_dict(adapt)} (--no-adapt to stop)")
    if g.colourless_queries:
        note(f"still {grey_said(g)} (--grey-queries all to stop)")
    if g.threshold_auto:
        print(f"scoring set to {g.scoring}; the automatic threshold follows it")
    else:
        print(f"scoring set to {g.scoring}; the threshold ({g.threshold}) was calibrated for one scoring: "
              "check it with `byakugan evaluate` (threshold_tar95 / threshold_tar95_mean)")
    return 0


def grey_rule(g: Gallery) -> dict:
    """What the gallery records to score grey queries by the CNN part: read from its model, as a new
    gallery of that model records it (index.settings.colourless_spec)."""
    from byakugan.index.settings import colourless_spec

    if g.landmark_settings is not None:  # told before its model is loaded (seconds) only to be refused
        raise GalleryError(f"--grey-queries cnn: gallery {g.path} fuses hand landmarks; its model has no colour part")
    pipe = Pipeline.for_gallery(g)
    if (spec := colourless_spec(pipe.encoder)) is None:
        raise GalleryError(f"--grey-queries cnn: gallery {g.path}'s model {pipe.encoder.name!r} has no colour "
                           "histogram, so every query already scores by its CNN alone")
    return spec


def grey_said(g: Gallery) -> str:
    from byakugan.index.colour_queries import ColourQueries

    if not g.colourless_queries:
        return "every query scored alike"
    said = "queries without colour scored by the CNN part alone while most references have colour"
    # a gallery of grey references keeps the histogram for every query (index.colour_queries)
    return said + ("" if not len(g) or ColourQueries().in_colour(g) else " (not now: most have none)")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("threshold", help="show or set the gallery's unknown threshold (a score, or auto)")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("value", metavar="VALUE|auto", type=threshold_value, nargs="?",
                   help="a score, or auto: keep 95%% of the gallery's own true matches (new galleries' default)")
    s.set_defaults(func=cmd_threshold)

    s = sub.add_parser("scoring", help="show or set how labels are ranked: nearest reference or class mean, "
                       "whether scores are adapted to the gallery's classes, and how queries without colour score")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("value", metavar="|".join(SCORINGS), nargs="?")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--adapt", type=adapt_value, metavar="WEIGHT[,RIDGE[,COHORT]]",
                     help="add a ridge regression fitted on the references to each label's score; COHORT: the share of "
                          "the gallery's cohort in the fit; parts left out as its model advises (hand galleries: "
                          "0.3,0.03, anime: 1,0.1,30; ridge 0.03 and no cohort where a model advises none)")
    how.add_argument("--no-adapt", action="store_true", help="label scores not adapted to the gallery's classes")
    s.add_argument("--grey-queries", choices=["cnn", "all"],
                   help="cnn: a query without colour (a manga panel) in a gallery of colour references scores by the "
                        "CNN part alone, leaving out the colour histogram (new galleries of models with one do this); "
                        "all: every query scored alike (galleries made before did this)")
    s.set_defaults(func=cmd_scoring)
