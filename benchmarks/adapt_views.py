"""Issue #14: does the adaptation fit learn more from a few augmented views of each reference? Prints JSON.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stage_finetune.py --cohort-patches 500 \
        --keep bench-out/folds-tuned --save-embeddings bench-out/emb-tuned
    .venv/bin/python benchmarks/adapt_views.py bench-out/emb-tuned/finetuned bench-out/folds-tuned \
        --views bench-out/views7-tuned [--seeds 1 2 3] [--out F]

A gallery's adaptation (embedder/scoring/adapt.py) fits a ridge regression from its 5 references a
class to their class, in 1,600 dimensions. With so few rows it can as well learn what sets one
picture apart (its framing, which way the face turns) as what sets the character apart. Views of
each reference made at enrolment (its mirror image, a tighter crop, both) are other pictures of the
same character that differ in exactly those ways; in the fit they teach it to ignore them. The
query is embedded once, as today, so searching costs the same; enrolling costs the views.

Each fold's model (stage_finetune.py --keep FOLDS: FOLDS/SOURCE-finetuned) embeds the views of every
picture of the source it left out, cropped as `byakugan evaluate` crops it (its first detection, the
whole picture where none), into --views DIR/SOURCE.safetensors (made once, reused after; checked
against the saved embeddings of the pictures themselves). Views: the mirror image, a centre crop
keeping 85% of each side, both, and turns of 8 degrees either way (cropped as tight, so no corner
is left empty to colour the histogram), with and without the mirror.
Scored with adapt_cohort.py's trials (the shipped scoring as the base, adaptation weight 1), each
picture's views as rows of the fit with its class (`VIEWSET_ridgeR_betaB`; `none`: the pictures
alone, today) for the view sets mirror / mirror+crop (3) / all (7), ridge 0.03 / 0.1 / 0.3 and the
cohort's share 10 / 30 / 100 (today's advice: none, ridge 0.1, cohort 30). Rows count one each, so
with more views the ridge and cohort count for less; the grid lets each set find its own.
Chosen nested as gallery_adapt does: each source under the variant with the best mean top-1 on the
other anime sources among those whose mean FAR@TAR95 there is no higher than the shipped scoring's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from byakugan.embedder.scoring.cohort import offsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output import emit  # noqa: E402
from adapt_cohort import directions  # noqa: E402
from centring import SOURCES, TOP, figures, load, per_variant, unit  # noqa: E402
from gallery_adapt import SHIPPED, draws, nested  # noqa: E402
from loso import DATA  # noqa: E402

WEIGHT, RIDGES, BETAS = 1.0, (0.03, 0.1, 0.3), (10.0, 30.0, 100.0)
VIEWS = ("mirror", "crop", "mirror_crop", "turn_left", "turn_right", "mirror_turn_left", "mirror_turn_right")
SETS = {"none": [], "mirror": [0], "mirror_crop": [0, 1, 2], "all": list(range(len(VIEWS)))}
CROP = 0.85  # the share of each side a tighter crop keeps, about the face
TURN = 8  # degrees; at 8 a centre crop of 0.85 leaves no corner of the turned picture empty


def views(img):
    """The views of one crop, in VIEWS order."""
    from PIL import Image, ImageOps

    def tight(im):
        w, h = im.size
        dw, dh = round(w * (1 - CROP) / 2), round(h * (1 - CROP) / 2)
        return im.crop((dw, dh, w - dw, h - dh))

    img = img.convert("RGB")
    left, right = (tight(img.rotate(a, resample=Image.BICUBIC)) for a in (TURN, -TURN))
    return [ImageOps.mirror(img), tight(img), ImageOps.mirror(tight(img)), left, right,
            ImageOps.mirror(left), ImageOps.mirror(right)]


def embed_views(source: str, fold: Path, saved: dict, out: Path) -> np.ndarray:
    """[pictures, views, dim] from the fold's model, the pictures in `byakugan evaluate`'s order."""
    if out.exists():
        return load_views(out)
    from safetensors.numpy import save_file

    from byakugan.embedder.training.data import scan
    from byakugan.index.pipeline import Pipeline

    pipe = Pipeline.create(model=str(fold), detector=SOURCES[source]["detector"], landmarks="none")
    samples = scan([DATA / source])
    if [s.label.split("/", 1)[1] for s in samples] != saved["labels"].tolist():
        raise SystemExit(f"{source}: the pictures differ from the saved embeddings' labels")
    crops = [pipe.regions(s.path, every=False, fallback="whole")[0].crop for s in samples]
    own = pipe.encoder.embed(crops[:16])
    if not np.allclose(own, saved["cnn"][:16], atol=1e-3):
        raise SystemExit(f"{source}: fold {fold} does not give the saved embeddings (max diff "
                         f"{np.abs(own - saved['cnn'][:16]).max():.3g})")
    flat = pipe.encoder.embed([v for c in crops for v in views(c)], progress=True)
    arr = flat.reshape(len(crops), len(VIEWS), -1)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"views": np.ascontiguousarray(arr)}, str(out), metadata={"views": json.dumps(VIEWS), "crop": str(CROP), "turn": str(TURN)})
    return arr


def load_views(path: Path) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return f.get_tensor("views")


def run(d: dict, V: np.ndarray, seed: int) -> dict:
    labels, cohort, emb = d["labels"], d["cohort"], d["cnn"]
    out: dict[str, list] = {}
    for known, refs, rows, is_known, groups in draws(labels, seed):
        Q = emb[rows]
        base = Q @ unit(np.stack([emb[refs][g].sum(0) for g in groups])).T - offsets(Q, cohort, TOP)[:, None]
        variants = [(SHIPPED, base)]
        for set_name, which in SETS.items():
            # the fit's rows: each picture, then its views; each class's rows among them
            nv = len(which)
            X = np.concatenate([emb[refs][:, None], V[refs][:, which]], 1).reshape(-1, emb.shape[1])
            gv = [(g[:, None] * (nv + 1) + np.arange(nv + 1)).ravel() for g in groups]
            for ridge in RIDGES:
                for beta in BETAS:
                    T = Q @ directions(X, gv, cohort, ridge, beta).T
                    variants.append((f"{set_name}_ridge{ridge:g}_beta{beta:g}", base + WEIGHT * T))
        for n, S in variants:
            pred = np.asarray(known)[S.argmax(1)]
            out.setdefault(n, []).append((S.max(1)[is_known], pred[is_known] == labels[rows][is_known], S.max(1)[~is_known]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("embeddings", help="SOURCE.safetensors files from stage_finetune.py --save-embeddings")
    p.add_argument("folds", help="the fold models, FOLDS/SOURCE-finetuned (stage_finetune.py --keep)")
    p.add_argument("--views", required=True, help="where the views' embeddings are kept (made on first use)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    table = {}
    for f in sorted(Path(a.embeddings).glob("*.safetensors")):
        if SOURCES[f.stem]["domain"] != "anime":
            continue
        d = load(f)
        V = embed_views(f.stem, Path(a.folds) / f"{f.stem}-finetuned", d, Path(a.views) / f"{f.stem}.safetensors")
        runs = [{n: figures(t) for n, t in run(d, V, seed).items()} for seed in a.seeds]
        table[f.stem] = {n: {k: round(float(np.mean([r[n][k] for r in runs])), 4) for k in runs[0][n]} for n in runs[0]}
        print(f"{f.stem}: {json.dumps(table[f.stem])}", file=sys.stderr, flush=True)
    srcs = list(table)
    summary = {"nested": nested(table, srcs)} | per_variant(table, srcs, list(table[srcs[0]]))
    text = json.dumps({"protocol": f"leave one source out; 5 shots, 10 trials, a third of the classes unknown, seeds {a.seeds}; "
                       f"views {list(VIEWS)}, crop {CROP}, turn {TURN}; adaptation weight {WEIGHT}",
                       "sources": table, "summary": summary}, indent=1)
    emit(text, a.out)


if __name__ == "__main__":
    main()
