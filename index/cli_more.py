"""The `byakugan` commands that work on models, bundles and servers rather than on one gallery:
embed, export, serve, ui, train, evaluate, models. The parser lives in index.cli."""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

import embedder
from embedder import ByakuganError, ImageError
from embedder.detect import create_detector, largest_crops, regions
from embedder.hands import LANDMARK_DIM

from . import store
from .cli_util import EXIT_BAD_INPUT, _embed_reporting, _print_json
from .gallery import Gallery


def cmd_embed(a: argparse.Namespace) -> int:
    out = Path(a.out)
    if out.suffix != ".npy":
        raise ByakuganError(f"--out {out}: must end with .npy")
    if not out.parent.is_dir():
        raise ByakuganError(f"--out {out}: folder {out.parent} does not exist")
    model, _ = embedder.load(a.model)
    detector = create_detector(a.detector)
    encoder = _landmark_encoder(a.landmarks, a.detector)
    regions_or_errors: list = []
    marks: list = []
    for image in a.images:
        try:
            img = embedder.load_image(image)
            found = regions(detector, img, a.fallback)
            if not found:
                raise ImageError(f"{image}: no {detector.name} found (--fallback whole embeds the whole image)")
            regions_or_errors.append(found[0].crop(img))
            marks.append(found[0].landmarks)
        except ImageError as exc:
            regions_or_errors.append(exc)
            marks.append(None)
    emb, ok = _embed_reporting(model, regions_or_errors, progress=len(a.images) > 8)
    if encoder is not None:
        from embedder.fusion import fuse, stack_landmarks

        emb = fuse(emb, encoder.encode(stack_landmarks(marks)), encoder.weight)
    buf = io.BytesIO()
    np.save(buf, emb)
    store.write_atomic(out, buf.getvalue())
    note = f" ({len(ok) - sum(ok)} unreadable: NaN rows)" if not all(ok) else ""
    print(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} float32, model {model.name}{note}", file=sys.stderr)
    return 0 if all(ok) else EXIT_BAD_INPUT


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export

    out = export(Gallery.open(a.gallery, a.model), a.out, overwrite=a.overwrite)
    print(f"exported {a.gallery} to {out}")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn

    from .serve import create_app

    app = create_app(a.source, token=a.token or os.environ.get("BYAKUGAN_TOKEN"), max_bytes=int(a.max_upload_mb * 2**20))
    uvicorn.run(app, host=a.host, port=a.port, log_level="info")
    return 0


def cmd_ui(a: argparse.Namespace) -> int:
    import importlib.util

    spec = importlib.util.find_spec("ui")
    if spec is None or not spec.submodule_search_locations:
        raise ByakuganError("ui: the ui package is not installed")
    app = Path(list(spec.submodule_search_locations)[0]) / "app.py"
    env = dict(os.environ, BYAKUGAN_MAX_UPLOAD_MB=str(a.max_upload_mb))
    if a.gallery:
        env["BYAKUGAN_GALLERY"] = str(Path(a.gallery).resolve())
    if a.model:
        env["BYAKUGAN_MODEL"] = a.model
    if a.detector:
        env["BYAKUGAN_DETECTOR"] = a.detector
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(a.port),
           "--server.address", a.host, "--server.headless", "true", "--server.maxUploadSize", str(a.max_upload_mb),
           "--browser.gatherUsageStats", "false"]
    sys.stdout.flush()
    sys.stderr.flush()
    # Become the Streamlit server rather than wait on a child: a signal that stops `byakugan ui`
    # (Ctrl-C, a service manager's SIGTERM) then stops the server, instead of orphaning it.
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def cmd_train(a: argparse.Namespace) -> int:
    from embedder.training import TrainConfig, train

    cfg = TrainConfig(data=a.data, out=a.out, backbone=a.backbone, taps=a.taps or [], size=a.size, head_dim=a.dim, loss=a.loss,
                      miner=a.miner, m_per_class=a.m_per_class, batch_size=a.batch_size, epochs=a.epochs, lr=a.lr,
                      backbone_lr=a.backbone_lr, views=a.views, hflip=a.hflip, holdout=a.holdout or [],
                      seed=a.seed, cache=a.cache, head_weight=a.head_weight, colour_weight=a.colour_weight,
                      scoring=a.scoring, per_class=a.per_class, cohort_top=a.cohort_top,
                      cohort_per_class=a.cohort_per_class, colour_jitter=a.colour_jitter,
                      **({"device": a.device} if a.device else {}))
    model = train(cfg, resume=a.resume, log=lambda m: print(m, file=sys.stderr))
    print(f"saved {model.name} ({model.dim}-d) to {a.out}")
    return 0


def _landmark_encoder(spec: str, detector: str):
    from embedder.landmarks import resolve_landmarks

    try:
        return resolve_landmarks(spec, detector)
    except ValueError:
        raise ByakuganError(f"--landmarks {spec}: needs --detector hand, not {detector!r}") from None


def cmd_evaluate(a: argparse.Namespace) -> int:
    from embedder.data import scan
    from embedder.evaluation import enrolment_trials
    from embedder.fusion import fuse, query_form

    samples = scan([a.data], per_class=a.per_class, seed=a.seed, classes=a.classes)
    model, _ = embedder.load(a.model)
    encoder = _landmark_encoder(a.landmarks, a.detector)
    inputs: list = [s.path for s in samples]
    marks = np.zeros((len(inputs), LANDMARK_DIM), np.float32)
    detected = None
    if a.detector != "none":
        # The largest detection of each image; the whole image where none is found (counted).
        inputs, marks, detected, detect_ms = largest_crops(create_detector(a.detector), inputs, LANDMARK_DIM)
    emb = model.embed(inputs, progress=True)
    labels = [s.label.split("/", 1)[1] for s in samples]

    # A gallery with this model normalises scores by its cohort (embedder.cohort); so do the trials.
    offset = None if a.no_cohort else model.cohort_offsets(emb)
    if offset is not None and encoder is not None:
        raise ByakuganError(f"evaluate: model {model.name} normalises scores by a cohort, which fused landmarks do not "
                            "support; add --no-cohort or --landmarks none")

    def run(e: np.ndarray, q=None):
        try:
            return enrolment_trials(e, labels, shots=a.shots, trials=a.trials, unknown_fraction=a.unknown_fraction,
                                    seed=a.seed, query_emb=q, offset=offset)
        except ValueError as exc:
            raise ByakuganError(f"evaluate {a.data}: {exc}") from None

    parts = {}
    if encoder is not None:
        lm = encoder.encode(marks)
        parts = {"cnn": run(emb).summary, "landmarks": run(lm).summary}
        emb = fuse(emb, lm, encoder.weight)
        trials = run(emb, query_form(emb, model.dim, encoder.weight))
    else:
        trials = run(emb)
    summary = {"data": a.data, "model": model.name, "detector": a.detector, **trials.summary}
    if offset is not None:
        summary["cohort"] = model.cohort_settings | {"size": len(model.cohort)}
    if detected is not None:
        summary["detected"] = detected
        summary["detect_ms_per_image"] = detect_ms
    if encoder is not None:
        summary["landmarks"] = {"model": encoder.name, "weight": encoder.weight, "found": round(float((np.abs(marks).sum(1) > 0).mean()), 4)}
        summary["parts"] = {name: {k: p[k] for k in ("top1_nearest", "top1_prototype", "far_at_tar95", "roc_auc",
                                                      "threshold_tar95") if k in p}
                            for name, p in parts.items()}
    if a.report:
        from embedder.report import write_report

        score_name = "cohort-normalised score" if offset is not None else "cosine"
        summary["report"] = [str(p) for p in write_report(Path(a.report), trials, emb, labels, Path(a.data).name,
                                                          score_name)]
    if a.json:
        _print_json(summary)
    else:
        _print_evaluation(summary, encoder)
    return 0


def _print_evaluation(s: dict, encoder) -> None:
    fused = f" + landmarks {encoder.name} (weight {encoder.weight})" if encoder is not None else ""
    print(f"{s['data']}: {s['classes']} classes, {s['images']} images, model {s['model']}{fused}, "
          f"{s['shots']} shots, {s['trials']} trials")
    if "cohort" in s:
        top, size = s["cohort"]["top"], s["cohort"]["size"]
        which = f"the {top} most similar of {size}" if top else f"all {size}"
        print(f"  scores cohort-normalised: less the mean cosine to {which} cohort classes (--no-cohort for raw cosines)")
    print(f"  top-1 nearest reference {s['top1_nearest']:.3f} (std {s['top1_nearest_std']:.3f}), class mean {s['top1_prototype']:.3f}")
    if "far_at_tar95" in s:
        print(f"  open set: FAR@TAR95 {s['far_at_tar95']:.3f}, ROC AUC {s['roc_auc']:.3f}, threshold {s['threshold_tar95']:.3f}"
              f" (class mean: {s['far_at_tar95_mean']:.3f}, {s['roc_auc_mean']:.3f}, {s['threshold_tar95_mean']:.3f})")
    for name, p in s.get("parts", {}).items():
        print(f"  {name} alone: top-1 nearest {p['top1_nearest']:.3f}, class mean {p['top1_prototype']:.3f}"
              + (f", FAR@TAR95 {p['far_at_tar95']:.3f}" if "far_at_tar95" in p else ""))
    worst = sorted(s["per_class_top1_nearest"].items(), key=lambda kv: kv[1])[:5]
    print("  weakest classes: " + ", ".join(f"{c} {v:.2f}" for c, v in worst))
    if s.get("far_at_tar95_by_unknown_class"):
        passing = sorted(s["far_at_tar95_by_unknown_class"].items(), key=lambda kv: -kv[1][0])[:5]
        print("  most often accepted when not enrolled (FAR nearest / class mean): "
              + ", ".join(f"{c} {n:.2f}/{m:.2f}" for c, (n, m) in passing))
    for p in s.get("report", []):
        print(f"  wrote {p}")


def cmd_train_landmarks(a: argparse.Namespace) -> int:
    from embedder.landmark_training import LandmarkTrainConfig, train_landmarks

    cfg = LandmarkTrainConfig(data=a.data, out=a.out, dim=a.dim, loss=a.loss, miner=a.miner, epochs=a.epochs,
                              weight=a.weight, threshold=a.threshold, holdout=a.holdout or [], cache=a.cache, per_class=a.per_class, seed=a.seed)
    model = train_landmarks(cfg, log=lambda m: print(m, file=sys.stderr))
    print(f"saved landmark model {model.name} ({model.dim}-d, weight {model.weight}) to {a.out}")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from embedder.landmarks import is_landmark_model

    for name in embedder.list_models():
        print(name)
    d = embedder.models_dir()
    for p in sorted(d.glob("*")) if d.is_dir() else []:
        if is_landmark_model(p):
            print(f"{p.name} (hand-landmark model, for detector 'hand')")
    return 0
