"""Issue #14: the anime fold models again, each embedding with a test-time augmentation. Prints JSON.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stage_finetune.py --cohort-patches 500 \
        --keep bench-out/folds-tuned --save-embeddings bench-out/emb-tuned
    .venv/bin/python benchmarks/tta_folds.py bench-out/folds-tuned --tta flip_crop \
        --save-embeddings bench-out/emb-tta [--out F]
    .venv/bin/python benchmarks/adapt_cohort.py bench-out/emb-tta --out G

    .venv/bin/python benchmarks/loso.py --no-baseline --sources sign-digits rock-paper-scissors hand-fingers \
        asl-signs drone-gestures --save-embeddings bench-out/emb-hands --keep bench-out/folds-hands
    .venv/bin/python benchmarks/tta_folds.py bench-out/folds-hands --tta crop --sources sign-digits \
        rock-paper-scissors hand-fingers asl-signs drone-gestures --save-embeddings bench-out/emb-hands-crop
    .venv/bin/python benchmarks/gallery_adapt.py bench-out/emb-hands-crop --out H

Each fold model (FOLDS/SOURCE-finetuned or FOLDS/SOURCE, trained without the source it is named by; for
a hand source fused with the fold's landmark encoder FOLDS/SOURCE-lm as loso.py evaluates it) is copied with
the model setting "tta" (embedder.embedding.model.TTA: every picture, reference or query, embedded as
the mean of several views of it) and evaluated on the source it left out as loso.py evaluates it
(`byakugan evaluate --trials 10 --unknown-fraction 0.33 --seed 1`), its embeddings saved for
adapt_cohort.py, which scores them as galleries of the shipped model would (and did, without it,
on bench-out/emb-tuned). No training: the weights are the folds'; only how a picture is embedded changes.
With --cohort-views, an anime fold's cohort is embedded again with the views too, as stage_finetune.py
built it (its training classes' means, 20 seeded images each, then --cohort-patches face patches).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from loso import DATA, SOURCES, evaluate  # noqa: E402

from byakugan.embedder.embedding.model import TTA  # noqa: E402


def cohort_with_views(source: str, fold: Path, patches: int) -> None:
    """The fold's cohort as stage_finetune.py builds it (seed 0, 20 images a class of every other
    source, whole pictures), embedded by the fold model with its views, then widened by the patches."""
    from stage_finetune import widen_cohort

    from byakugan.embedder.embedding.model import load_saved
    from byakugan.embedder.scoring.cohort import save_cohort
    from byakugan.embedder.training.cohort import build_cohort

    model = load_saved(fold)
    others = [str(DATA / s) for s in SOURCES if s != source]
    save_cohort(fold, build_cohort(model, others, (), 20, 0))
    if patches:
        widen_cohort(str(fold), patches, lambda m: print(m, file=sys.stderr, flush=True))


def fold_model(folds: Path, source: str, tta: str | None, dest: Path) -> Path:
    """A copy at dest of FOLDS/SOURCE-finetuned (stage_finetune.py and gpu_finetune.py folds) or
    FOLDS/SOURCE (loso.py's), with the model setting "tta" when one is given (None or "none": as it is)."""
    kept = folds / f"{source}-finetuned"
    shutil.copytree(kept if kept.is_dir() else folds / source, dest)
    if tta and tta != "none":
        config = dest / "config.json"
        config.write_text(json.dumps(json.loads(config.read_text()) | {"tta": tta}, indent=1))
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folds", help="the fold models: FOLDS/SOURCE-finetuned (stage_finetune.py --keep) or FOLDS/SOURCE "
                   "with FOLDS/SOURCE-lm (loso.py --keep)")
    p.add_argument("--tta", required=True, choices=[t or "none" for t in TTA],
                   help="none: the fold models as they are (gpu_finetune.py's hand folds, whose baseline has no views)")
    p.add_argument("--sources", nargs="+", default=[s for s, v in SOURCES.items() if v["domain"] == "anime"])
    p.add_argument("--save-embeddings", metavar="DIR", required=True, help="DIR/SOURCE.safetensors for adapt_cohort.py")
    p.add_argument("--cohort-views", type=int, metavar="PATCHES",
                   help="embed each anime fold's cohort again with the views: its class means and this many face patches")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    Path(a.save_embeddings).mkdir(parents=True, exist_ok=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.sources:
            start = time.time()
            fold = fold_model(Path(a.folds), source, a.tta, Path(tmp) / source)
            landmarks = Path(a.folds) / f"{source}-lm"
            if a.cohort_views is not None and (fold / "cohort.safetensors").is_file():
                cohort_with_views(source, fold, a.cohort_views)
            rows[source] = evaluate(source, SOURCES[source]["detector"], str(fold),
                                    str(landmarks) if landmarks.is_dir() else "none", None,
                                    f"{a.save_embeddings}/{source}.safetensors") | {"seconds": round(time.time() - start)}
            print(f"{source}: {rows[source]}", file=sys.stderr, flush=True)
    text = json.dumps({"protocol": "each fold model with tta " + a.tta + "; byakugan evaluate --trials 10 --unknown-fraction 0.33 "
                       "--seed 1 on the source it left out", "sources": rows}, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
