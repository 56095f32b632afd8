"""Grey queries against colour references (issue #19: a manga panel searched in a gallery enrolled
in colour). Prints JSON and writes --out.

    .venv/bin/python benchmarks/loso.py --sources anime-faces anime-onepiece anime-scenes --no-baseline --keep bench-out/folds
    .venv/bin/python benchmarks/grey_queries.py --folds bench-out/folds --out models/loso-grey-queries.json
    .venv/bin/python benchmarks/grey_queries.py --model anime-tuned --out ...   (one model for every source)
    .venv/bin/python benchmarks/grey_queries.py --folds bench-out/folds-gpu-a --tta flip_crop \
        --out models/anime-finetuned/grey_queries_folds.json   (gpu_finetune.py's folds, with their views)

With --folds, each source is embedded by the fold model that never saw it (loso.py --keep): the
`anime` recipe trained on every other source.

Each anime source is embedded twice by MODEL through its sources.json detector (the whole image
where nothing is found): as it is, and made grey (each picture converted to shades of grey, as
detect_end_to_end.py --grey makes them). Then `byakugan evaluate`'s trials (5 shots, 10 trials, a
third of the classes unknown, seed 1; class-mean top-1, FAR@TAR95, the model's cohort) with:

- colour: references and queries in colour (what `byakugan evaluate` gives);
- grey: references and queries grey (a gallery enrolled from manga);
- colour_refs_grey_queries: references in colour, queries (known and strangers) grey, as searched today;
- ..._cnn_only: the same, with a grey query's colour histogram part left out: the query row
  rescaled to score by the CNN part's cosine alone (as a hand query without landmarks is), its
  cohort offsets taken the same way;
- colour_cnn_only: both in colour, the CNN part alone (what the histogram adds in colour);
- *_auto: each query row scored as embedder.scoring.colourless decides from the row alone (the rows
  it calls colourless by the CNN part alone), what a new gallery in colour does (index.colour_queries;
  a gallery of grey references scores as `grey`); `colourless_share` says how many rows it called so.

A --model may have trained on these sources (the shipped anime models trained on all three): its
figures compare ways of scoring the same embeddings, not how well the model knows the sources.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import DATA, SOURCES  # noqa: E402
from tta_folds import fold_model  # noqa: E402

from byakugan.embedder.evaluation.protocol import enrolment_trials  # noqa: E402
from byakugan.embedder.scoring.cohort import offsets  # noqa: E402
from byakugan.embedder.scoring.colourless import cnn_form, colourless, colourless_form  # noqa: E402
from byakugan.embedder.training.data import scan  # noqa: E402
from byakugan.index.pipeline import Pipeline  # noqa: E402


def grey_copies(paths: list[str], folder: Path) -> list[str]:
    out = []
    for i, p in enumerate(paths):
        dest = folder / f"{i:05d}.png"
        Image.open(p).convert("L").convert("RGB").save(dest)
        out.append(str(dest))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="anime-tuned")
    p.add_argument("--folds", metavar="DIR", help="embed each source by DIR/SOURCE (loso.py --keep) instead of --model")
    p.add_argument("--tta", choices=["flip", "crop", "flip_crop"],
                   help="with --folds: each fold model embeds every picture as these views (a copy of it with the setting)")
    p.add_argument("--sources", nargs="+", default=[s for s, v in SOURCES.items() if v["domain"] == "anime"])
    p.add_argument("--out", default="models/anime-tuned/grey_queries.json")
    a = p.parse_args()
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.sources:
            samples = scan([str(DATA / source)], per_class=None, seed=1)
            labels = [s.label.split("/", 1)[1] for s in samples]
            model = str(fold_model(Path(a.folds), source, a.tta, Path(tmp) / f"{source}-model")) if a.folds else a.model
            pipe = Pipeline.create(model, SOURCES[source]["detector"], "none")
            enc = pipe.encoder
            colour = enc.config.get("colour")
            if not colour or enc.cohort is None:
                raise SystemExit(f"model {model}: needs a colour histogram and a cohort")
            split, weight, bins = enc.dim - enc.colour.dim, float(colour.get("weight", 1.0)), enc.colour.bins
            folder = Path(tmp) / source
            folder.mkdir()
            paths = [s.path for s in samples]
            col = pipe.embed_images(paths, fallback="whole", progress=True).cnn
            grey = pipe.embed_images(grey_copies(paths, folder), fallback="whole", progress=True).cnn
            top = int(enc.cohort_settings["top"])

            def trial(refs: np.ndarray, queries: np.ndarray) -> dict:
                t = enrolment_trials(refs, labels, shots=5, trials=10, unknown_fraction=0.33, seed=1,
                                     query_emb=queries, offset=offsets(queries, enc.cohort, top))
                s = t.summary
                return {"top1": s["top1_prototype"], "far_at_tar95": s["far_at_tar95_mean"],
                        "threshold_tar95": s["threshold_tar95_mean"]}

            rows[source] = {"images": len(paths), "colour": trial(col, col), "grey": trial(grey, grey),
                            "colour_refs_grey_queries": trial(col, grey),
                            "colour_refs_grey_queries_cnn_only": trial(col, cnn_form(grey, split, weight)),
                            "colour_cnn_only": trial(col, cnn_form(col, split, weight)),
                            "grey_cnn_only": trial(grey, cnn_form(grey, split, weight)),
                            "colour_auto": trial(col, colourless_form(col, split, bins, weight)),
                            "colour_refs_grey_queries_auto": trial(col, colourless_form(grey, split, bins, weight)),
                            "colourless_share": {"colour": round(float(colourless(col, split, bins).mean()), 4),
                                                 "grey": round(float(colourless(grey, split, bins).mean()), 4)}}
            print(json.dumps({source: rows[source]}), file=sys.stderr, flush=True)
    variants = [v for v in next(iter(rows.values())) if v not in ("images", "colourless_share")]
    summary = {v: {"mean_top1": round(float(np.mean([rows[s][v]["top1"] for s in rows])), 4),
                   "mean_far_at_tar95": round(float(np.mean([rows[s][v]["far_at_tar95"] for s in rows])), 4)}
               for v in variants}
    text = json.dumps({"protocol": "5 shots, 10 trials, a third unknown, seed 1; class mean; the model's cohort",
                       "model": a.folds and f"{a.folds}/SOURCE" + (f" with tta {a.tta}" if a.tta else "") or a.model, "sources": rows, "mean": summary}, indent=1)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
