"""Earlier backbone levels for anime characters (embedder/embedding/taps.py, `train --taps`). Prints JSON.

1. Frozen ImageNet EfficientNet-Lite0 (160 px), each feature level pooled alone, and sets of them
   joined to the final level: on the 8 anime-faces characters the shipped models trained on (for choosing a
   level; frozen features never saw them) and on the 4 held out of training.
2. For each --models entry (a name or a folder with training.json): anime-scenes faces found by
   the anime-face detector (3 characters no model trained on: the selection set) and the 4 held-out
   anime-faces characters, with the colour part at each --colour-weights (0 drops it), raw cosines
   and with a top-5 cohort of the training classes (embedder/scoring/cohort.py).

Same protocol as `byakugan evaluate` (5 shots, 20 trials, seed 1; 100 images per class).

    BYAKUGAN_ANIMEFACE_CASCADE=../shared/detectors/lbpcascade_animeface.xml \\
        .venv/bin/python benchmarks/taps.py --models anime PATH_TRAINED_WITH_TAPS
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import byakugan.embedder as embedder
from byakugan.embedder.scoring.cohort import offsets
from byakugan.embedder.training.cohort import build_cohort
from byakugan.embedder.training.data import pick_holdout, scan
from byakugan.embedder.detection import create_detector, whole
from byakugan.embedder.evaluation.protocol import enrolment_trials
from byakugan.embedder.images import load_image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
COMBOS = ([0], [1], [2], [3], [4], [0, 1], [0, 2], [1, 2], [0, 1, 2], [0, 1, 2, 3])
KEYS = ("top1_nearest", "top1_prototype", "far_at_tar95_mean", "roc_auc_mean")


def figures(emb, labels, unknown_fraction=0.25, offset=None) -> dict:
    s = enrolment_trials(emb, labels, shots=5, trials=20, unknown_fraction=unknown_fraction, seed=1, offset=offset).summary
    return {k: s[k] for k in KEYS}


@torch.inference_mode()
def levels(paths) -> list[torch.Tensor]:
    """Per image: the unit pooled final features, then each unit pooled level 0..4."""
    frozen = embedder.create_embedder("efficientnet_lite0", preprocess=embedder.Preprocess(size=160))
    net, pre = frozen.backbone, frozen.preprocess
    out = []
    for i in range(0, len(paths), 64):
        x = torch.stack([pre(load_image(p)) for p in paths[i : i + 64]])
        final, inter = net.forward_intermediates(x, norm=False)
        out.append([F.normalize(net.forward_head(final), dim=-1)] + [F.normalize(t.mean((2, 3)), dim=-1) for t in inter])
    return [torch.cat(parts) for parts in zip(*out)]


def frozen_study(classes) -> dict:
    samples = scan([DATA / "anime-faces"], per_class=100, seed=1, classes=classes)
    labels = [s.label for s in samples]
    final, *lv = levels([s.path for s in samples])
    out = {"final": figures(final.numpy(), labels)}
    for i, t in enumerate(lv):
        out[f"level {i}"] = figures(t.numpy(), labels)
    for combo in COMBOS:
        joined = F.normalize(torch.cat([final] + [lv[i] for i in combo], 1), dim=-1)
        out[f"final + levels {combo}"] = figures(joined.numpy(), labels)
    return out


def model_study(name: str, weights: list[float], scenes, crops, held) -> dict:
    model = embedder.load(name)[0]
    folder = Path(name) if Path(name).is_dir() else ROOT / "models" / name
    cfg = json.loads((folder / "training.json").read_text())["config"]
    out = {"taps": model.config.get("taps", [])}
    for w in sorted(weights, reverse=True):  # 0 drops the colour part for good, so it comes last
        # The colour part has no weights of its own, so one trained head serves every weight.
        if w == 0:
            model.colour = None
        elif model.colour is not None:
            model.colour.weight = w
        else:
            continue
        cohort = build_cohort(model, [ROOT / d for d in cfg["data"]], cfg["holdout"], per_class=50, seed=0)
        row = {}
        for tag, images, labels, uf in (("anime-scenes", crops, [s.label for s in scenes], 0.33),
                                        ("held-out 4", [s.path for s in held], [s.label for s in held], 0.25)):
            e = model.embed(images, progress=True)
            row[tag] = {"raw": figures(e, labels, uf), "cohort top 5": figures(e, labels, uf, offsets(e, cohort, 5))}
        out[f"colour weight {w}"] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="*", default=[])
    p.add_argument("--colour-weights", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    a = p.parse_args()
    held_labels = pick_holdout(scan([DATA / "anime-faces"]), "anime-faces", 4, seed=0)
    names = [h.split("/", 1)[1] for h in held_labels]
    others = sorted({s.label.split("/", 1)[1] for s in scan([DATA / "anime-faces"])} - set(names))
    out = {"frozen": {"the 8 training characters (choosing)": frozen_study(others), "the 4 held out": frozen_study(names)}}
    if a.models:
        scenes = scan([DATA / "anime-scenes"], seed=1)
        det = create_detector("anime-face")
        crops = [(det(img) or [whole(img)])[0].crop(img) for img in (load_image(s.path) for s in scenes)]
        held = scan([DATA / "anime-faces"], per_class=100, seed=1, classes=names)
        out["trained"] = {m: model_study(m, a.colour_weights, scenes, crops, held) for m in a.models}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
