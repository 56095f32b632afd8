"""`byakugan evaluate`: the few-shot enrolment protocol on a labelled folder, with open-set figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.scoring.adapt import Adaptation, advised, completed

from .common import adapt_value, check_new_file, detectors, landmarks_arg, print_json, report, seed, write_new
from .common import printable as escaped
from .models import pipeline_for


def cmd_evaluate(a: argparse.Namespace) -> int:
    from byakugan.embedder.evaluation.summary import check_evaluation, evaluate_embeddings
    from byakugan.embedder.training.data import check_writable, scan
    from byakugan.index.colour_queries import set_queries

    # Everything that can be told from the arguments and the folder is checked before embedding.
    if a.per_class is not None and a.per_class < 1:
        raise ByakuganError(f"--per-class {a.per_class}: must be >= 1 (images sampled from each class)")
    if a.report:
        check_writable(a.report, "--report", folder=True)
        check_report(Path(a.report), a.data, a.overwrite)
    if a.save_embeddings:
        check_writable(a.save_embeddings, "--save-embeddings", folder=False)
        check_new_file(a.save_embeddings, "--save-embeddings", a.overwrite)
    samples = scan([a.data], per_class=a.per_class, seed=a.seed, classes=a.classes)
    labels = [printable(s.label.split("/", 1)[1]) for s in samples]
    data = printable(a.data)
    # No --model: the one a new gallery of these images would take (for detector none, by what they show).
    pipe = pipeline_for(a.model, detector_config(a.detector, a.detector_setting), a.landmarks, [s.path for s in samples])
    pipe.detector  # a detector from settings is made on first use: made now, a bad setting is told before embedding
    check_evaluation(labels, shots=a.shots, trials=a.trials, unknown_fraction=a.unknown_fraction, name=data,
                     seed=a.seed)
    model, encoder = pipe.encoder, pipe.landmarks
    if not a.no_cohort and encoder is not None and getattr(model, "cohort", None) is not None \
            and getattr(model, "cohort_settings", None) is not None:
        raise ByakuganError(f"evaluate: model {model.name} normalises scores by a cohort, which fused landmarks do not "
                            "support; add --no-cohort or --landmarks none")
    advice = advised(model, encoder)  # what a new gallery of it takes; fills the parts --adapt leaves out
    adapt = None if a.no_adapt else completed(a.adapt, advice) if a.adapt else advice
    if adapt and adapt.cohort and (encoder is not None or getattr(model, "cohort", None) is None):
        raise ByakuganError(f"adapt cohort {adapt.cohort:g}: model {model.name} has no cohort to fit with"
                            f"{' beside fused landmarks' if encoder is not None else ''}; leave the third part out")
    # Each image by its first detection (the largest; anime-face-net's surest); the whole image where none is found (counted).
    embedded = pipe.embed_images([s.path for s in samples], fallback="whole", progress=True)
    bad = [e for e in embedded.errors if e is not None]
    for e in bad:
        report(str(e))
    if bad:  # a NaN row would skew every figure
        raise ByakuganError(f"evaluate {data}: {len(bad)} of {len(samples)} images could not be read (listed above); "
                            "remove or fix them")
    # A gallery of these pictures would search with a colourless one (a manga panel among colour
    # pictures) by its CNN part alone (byakugan.index.colour_queries); so do the trials.
    queries, rescaled = set_queries(model, embedded.cnn) if encoder is None else (embedded.cnn, 0)
    # A gallery with this model normalises scores by its cohort (embedder.scoring.cohort), on the
    # query as it searches; so do the trials.
    offset = None if a.no_cohort else model.cohort_offsets(queries)
    trials, emb, parts = evaluate_embeddings(
        embedded.cnn, labels, shots=a.shots, trials=a.trials, unknown_fraction=a.unknown_fraction, seed=a.seed,
        offset=offset, landmarks=embedded.landmarks, weight=encoder.weight if encoder else 0.0, name=data,
        queries=queries if rescaled else None, adapt=adapt,
        # in the fit where adapt asks, normalising or not (--no-cohort); a fused gallery holds no cohort
        cohort=getattr(model, "cohort", None) if encoder is None else None)
    summary = {"data": data, "model": printable(model.name), "detector": a.detector, **trials.summary}
    if rescaled:
        summary["colourless_queries"] = rescaled
    if pipe.choice is not None:
        summary["model_chosen_by"] = pipe.choice.why
    if offset is not None:
        summary["cohort"] = model.cohort_settings | {"size": len(model.cohort)}
    if a.detector != "none":
        summary["detected"] = round(float(np.mean(embedded.found)), 4) if embedded.found else 0.0
        summary["detect_ms_per_image"] = round(embedded.detect_seconds / max(1, len(samples)) * 1000, 1)
    if encoder is not None:
        found = float((np.abs(embedded.landmarks).sum(1) > 0).mean())
        summary["landmarks"] = {"model": encoder.name, "weight": encoder.weight, "found": round(found, 4)}
        summary["parts"] = parts
    if a.save_embeddings:
        saved = _save_embeddings(Path(a.save_embeddings), embedded, labels, offset, model, encoder,
                                 queries if rescaled else None, a.overwrite)
        summary["embeddings"] = printable(str(saved))
    if a.report:
        from byakugan.embedder.evaluation.report import write_report

        check_report(Path(a.report), a.data, a.overwrite)  # again: the embedding took a while
        score_name = "cohort-normalised score" if offset is not None else "cosine"
        # summary.json holds what --json prints (what ran, on what, and its figures), but the report's own files
        written = write_report(Path(a.report), trials, emb, labels, Path(data).name, score_name, summary)
        summary["report"] = [printable(str(p)) for p in written]
    if a.json:
        print_json(summary)
    else:
        _print_evaluation(summary, encoder)
    return 0


def printable(name: str) -> str:
    """A file name as text that any output takes: bytes that are not UTF-8 (which Python keeps as lone
    surrogates) become \\xNN escapes, so a strict UTF-8 stdout or a JSON reader does not fail on them;
    control characters (a terminal's escape sequences) become \\uNNNN, as common.printable writes them."""
    return escaped(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def detector_config(name: str, settings: list[str]) -> str | dict:
    """--detector and its --detector-setting KEY=VALUE pairs (the detector says which keys it takes)."""
    config: dict = {"name": name}
    if settings and name == "none":
        raise ByakuganError(f"--detector-setting {settings[0]!r}: detector none has no settings")
    for pair in settings:
        key, sep, value = pair.partition("=")
        if key.strip() == "name":
            raise ByakuganError(f"--detector-setting {pair!r}: the detector is named by --detector, not a setting")
        try:
            config[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            sep = ""
        if not sep or not key.strip():
            raise ByakuganError(f"--detector-setting {pair!r}: expected KEY=VALUE with a JSON value, such as grow_up=0.6")
    return config if settings else name


def check_report(folder: Path, data: str, overwrite: bool) -> None:
    """--report DIR: its files are replaced only with --overwrite; never written among the pictures evaluated
    (a class folder would take confusion.png as one of its images on the next run)."""
    if folder.resolve() == Path(data).resolve() or Path(data).resolve() in folder.resolve().parents:
        raise ByakuganError(f"--report {folder}: is inside DATA_DIR {data}, where its pictures would be read as "
                            "images of a class; name a folder outside it")
    from byakugan.embedder.evaluation.report import FILES

    there = [name for name in FILES if (folder / name).exists() or (folder / name).is_symlink()]
    if there and not overwrite:
        raise ByakuganError(f"--report {folder}: already holds {', '.join(there)}; add --overwrite to replace "
                            f"{'them' if len(there) > 1 else 'it'}, or name another folder")


def _save_embeddings(path: Path, embedded, labels: list[str], offset, model, encoder, queries=None,
                     overwrite: bool = False) -> Path:
    """What the trials ran on, so other scorings can be studied without embedding again: safetensors
    arrays (cnn, and landmarks, cohort offsets and the model's cohort where there are any; `queries`,
    the rows searched with, where colourless ones were rescaled: the offsets are those rows') with
    the labels and the landmark weight in its metadata."""

    from safetensors.numpy import save as save_arrays

    arrays = {"cnn": np.ascontiguousarray(embedded.cnn, np.float32)}
    if embedded.landmarks is not None:
        arrays["landmarks"] = np.ascontiguousarray(embedded.landmarks, np.float32)
    if offset is not None:
        arrays["offset"] = np.ascontiguousarray(offset, np.float32)
    if queries is not None:
        arrays["queries"] = np.ascontiguousarray(queries, np.float32)
    if getattr(model, "cohort", None) is not None:
        arrays["cohort"] = np.ascontiguousarray(model.cohort, np.float32)
    meta = {"labels": json.dumps(labels), "model": model.name,
            "landmark_weight": str(encoder.weight if encoder is not None else 0.0)}
    return write_new(path, save_arrays(arrays, metadata=meta), "--save-embeddings", overwrite)


def _print_evaluation(s: dict, encoder) -> None:
    fused = f" + landmarks {encoder.name} (weight {encoder.weight})" if encoder is not None else ""
    print(f"{s['data']}: {s['classes']} classes, {s['images']} images, model {s['model']}{fused}, "
          f"{s['shots']} shots, {s['trials']} trials")
    if "model_chosen_by" in s:
        print(f"  model {s['model']}, chosen because {s['model_chosen_by']} (--model names another)")
    if "cohort" in s:
        top, size = s["cohort"]["top"], s["cohort"]["size"]
        which = f"the {top} most similar of {size}" if top else f"all {size}"
        print(f"  scores cohort-normalised: less the mean cosine to {which} cohort classes (--no-cohort for raw cosines)")
    if s.get("colourless_queries"):
        print(f"  {s['colourless_queries']} pictures without colour searched by the CNN part alone, as a gallery of "
              "these pictures in colour would search them")
    print(f"  top-1 nearest reference {s['top1_nearest']:.3f} (std {s['top1_nearest_std']:.3f}), class mean {s['top1_prototype']:.3f}")
    if "far_at_tar95" in s:
        print(f"  open set: FAR@TAR95 {s['far_at_tar95']:.3f}, ROC AUC {s['roc_auc']:.3f}, threshold {s['threshold_tar95']:.3f}"
              f" (class mean: {s['far_at_tar95_mean']:.3f}, {s['roc_auc_mean']:.3f}, {s['threshold_tar95_mean']:.3f})")
    else:
        print("  open set: not measured (no class was left out of the galleries: raise --unknown-fraction)")
    if "adapt" in s:
        u = s["unadapted"]
        print(f"  scores adapted to the enrolled classes ({Adaptation.from_dict(s['adapt'])}; "
              f"--no-adapt without): without, top-1 nearest {u['top1_nearest']:.3f}, class mean {u['top1_prototype']:.3f}"
              + (f", FAR@TAR95 {u['far_at_tar95']:.3f}" if "far_at_tar95" in u else ""))
    for name, p in s.get("parts", {}).items():
        print(f"  {name} alone: top-1 nearest {p['top1_nearest']:.3f}, class mean {p['top1_prototype']:.3f}"
              + (f", FAR@TAR95 {p['far_at_tar95']:.3f}" if "far_at_tar95" in p else ""))
    worst = sorted(s["per_class_top1_nearest"].items(), key=lambda kv: kv[1])[:5]
    unscored = s["classes"] - len(s["per_class_top1_nearest"])
    print("  weakest classes: " + ", ".join(f"{c} {v:.2f}" for c, v in worst)
          + (f" ({unscored} never enrolled: left out as unknown in every trial)" if unscored else ""))
    if s.get("far_at_tar95_by_unknown_class"):
        passing = sorted(s["far_at_tar95_by_unknown_class"].items(), key=lambda kv: -kv[1][0])[:5]
        print("  most often accepted when not enrolled (FAR nearest / class mean): "
              + ", ".join(f"{c} {n:.2f}/{m:.2f}" for c, (n, m) in passing))
    for p in s.get("report", []):
        print(f"  wrote {p}")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("evaluate", help="few-shot enrolment protocol on a labelled folder, with open-set figures")
    s.add_argument("data", metavar="DATA_DIR")
    s.add_argument("--model", help="model name or directory (default: the one for --detector, see `byakugan models`)")
    s.add_argument("--shots", type=int, default=5)
    s.add_argument("--trials", type=int, default=10)
    s.add_argument("--unknown-fraction", type=float, default=0.33, help="share of classes left out of the gallery")
    s.add_argument("--per-class", type=int, help="use a seeded sample of this many images per class")
    s.add_argument("--classes", nargs="+", metavar="CLASS", help="evaluate only these class folders")
    s.add_argument("--detector", choices=detectors(), default="none", help="crop each image to its first detection (the largest; anime-face-net: the surest)")
    s.add_argument("--detector-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="one of the detector's settings, its value in JSON (for example grow_up=0.6); repeatable")
    landmarks_arg(s, "for detector 'hand'")
    s.add_argument("--no-cohort", action="store_true", help="raw cosines even if the model normalises scores by a cohort")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--no-adapt", action="store_true",
                     help="scores not adapted to the enrolled classes even where a new gallery of this model adapts them")
    how.add_argument("--adapt", type=adapt_value, metavar="WEIGHT[,RIDGE[,COHORT]]",
                     help="scores adapted to the enrolled classes with these settings, parts left out as the model advises "
                          "(as `byakugan scoring --adapt`)")
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--json", action="store_true")
    s.add_argument("--save-embeddings", metavar="FILE",
                   help="write the embeddings and labels the trials ran on (safetensors) for further study")
    s.add_argument("--report", metavar="DIR", help="write confusion.png, scores.png, embeddings.png, summary.json")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the --save-embeddings file or the --report files if they exist (else they are refused)")
    s.set_defaults(func=cmd_evaluate)
