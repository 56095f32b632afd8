"""Train an anime-face verifier (embedder/detection/verifier.py) and write it as ONNX.

    .venv/bin/python -m byakugan.embedder.training.verifier --out models/anime-face-verifier/anime_face_verifier.onnx
    .venv/bin/python -m byakugan.embedder.training.verifier --out V.onnx --net-mined 2000
    (anime-face-net's colour unit; training.grey_heads joins it with the grey one into the shipped file)
    .venv/bin/python -m byakugan.embedder.training.verifier --check V.onnx [V2.onnx ...]

Positives: ../shared/datasets/anime-face-patches/train/face. Negatives: its not-face patches,
plus hard negatives mined from photographs with no anime face in them (four hand sources' frames):
every box the permissive cascade proposes there. With --net-mined N, also the boxes `anime-face-net`
proposes, unverified and framed as it frames them, in N composed pictures (embedder/training/
face_net.py's, a seed neither its training nor its threshold used): those on a pasted face are
positives, the rest negatives, so the verifier learns the framing and the mistakes of the network
it checks. Prints accuracy on the patches' own test split and the mined negatives held out, as JSON,
and with --net-mined the network with this verifier on its threshold pictures (`net_check`), which
--check alone prints for any verifiers: those pictures reuse the training face patches in new
layouts, so they compare verifiers and flatter the one trained on the network's boxes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..detection.verifier import SIZE, patches
from ..images import list_images, load_image

from .face_net import DATA, PHOTOS, data, detection_figures, matches


class Verifier(torch.nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 features of a patch -> one logit (face or not): features
    of a large pretrained network hold across drawing styles that one dataset's patches do not cover."""

    def __init__(self) -> None:
        super().__init__()
        from ..embedding.backbones import create_backbone

        self.backbone, _ = create_backbone("efficientnet_lite0", pretrained=True)
        self.linear = torch.nn.Linear(self.backbone.num_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.backbone((x * 255.0 - 127.0) / 128.0), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def mined_negatives(per_source: int, seed: int) -> list[Image.Image]:
    """Crops the permissive cascade proposes in photographs that hold no anime face."""
    from ..detection.faces import candidates, load_cascade

    cascade = load_cascade()
    rng = random.Random(seed)
    out = []
    for source in PHOTOS:
        files = sorted(f for d in sorted((DATA / source).iterdir()) if d.is_dir() for f in list_images(d))
        for f in rng.sample(files, min(per_source, len(files))):
            img = load_image(f)
            out += [img.crop((x, y, x + w, y + h)) for (x, y, w, h), _ in candidates(img, cascade)[1:]]  # not the whole frame
    return out


def net_mined(n: int, seed: int, log, grey: float = 0.0) -> tuple[list[Image.Image], list[Image.Image]]:
    """(faces, not faces): anime-face-net's unverified boxes in n composed pictures (each in shades
    of grey with chance `grey`), judged by the known boxes."""
    from ..detection.face_net import ONE_LOOK_LARGEST_FIRST, FaceNetDetector, FaceNetSettings

    pictures, truth = data(n, seed, log, grey)
    # A little below the shipped threshold, so that the verifier also sees what lies just under it.
    detect = FaceNetDetector(FaceNetSettings(min_score=0.1, verify=False, **ONE_LOOK_LARGEST_FIRST))
    faces, others = [], []
    for i, (pic, boxes) in enumerate(zip(pictures, truth)):
        for d in detect(pic):
            x, y, w, h = d.box
            (faces if any(matches(d.box, b) for b in boxes) else others).append(pic.crop((x, y, x + w, y + h)))
        if i % 200 == 199:
            log(f"net boxes in {i + 1}/{n} pictures: {len(faces)} faces, {len(others)} not")
    return faces, others


def net_check(verifier: str, pictures: list, truth: list) -> dict:
    """anime-face-net with this verifier on composed pictures with known boxes (the network's
    threshold pictures, seed 1): the figures a verifier is chosen by, never the benchmark's."""
    from ..detection.face_net import ONE_LOOK_LARGEST_FIRST, FaceNetDetector, FaceNetSettings

    detect = FaceNetDetector(FaceNetSettings(**ONE_LOOK_LARGEST_FIRST), verifier=verifier)
    return {"pictures": len(pictures), **detection_figures([[d.box for d in detect(pic)] for pic in pictures], truth)}

def views(images: list, rng: random.Random, n: int, grey: float = 0.0) -> list:
    """n views of each image: flipped or not, cut a little tighter or looser, as candidates are;
    with chance `grey` in shades of grey (as manga pages are: the patches are nearly all in colour)."""
    out = []
    for im in images:
        for _ in range(n):
            w, h = im.size
            m = rng.uniform(-0.12, 0.12)  # < 0: tighter, > 0: looser (edges repeated)
            dx, dy = rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h
            box = (-m * w + dx, -m * h + dy, w * (1 + m) + dx, h * (1 + m) + dy)
            v = im.convert("RGB").transform((w, h), Image.EXTENT, box, Image.BILINEAR)
            v = v.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else v
            if grey and rng.random() < grey:  # no draw at 0: the recipe without it is reproduced exactly
                v = v.convert("L").convert("RGB")
            out.append(v)
    return out


def embed(net: Verifier, images: list, log) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), 256):
            out.append(net.features(torch.from_numpy(patches(images[i : i + 256]))))
            log(f"features {min(i + 256, len(images))}/{len(images)}")
    return torch.cat(out)


def judged_examples(file: str | Path, sources: Sequence[str]) -> tuple[list[Image.Image], list[Image.Image]]:
    """(faces, not faces): the boxes of a judgement file (benchmarks/detect_judged.py: drawn pictures
    whose detected boxes a person judged) on the named sources, cut from their pictures. "part" (a
    box cutting most of a face away) is not a face: the crop it gives the embedder is a poor one."""
    judged = json.loads(Path(file).read_text())["boxes"]
    faces, others = [], []
    for key, j in sorted(judged.items()):
        path, _, _ = key.rpartition("#")
        if path.split("/")[0] not in sources:
            continue
        x, y, w, h = j["box"]
        crop = load_image(DATA / path).crop((x, y, x + w, y + h))
        (faces if j["verdict"] == "face" else others).append(crop)
    return faces, others


def examples(a: argparse.Namespace, log) -> tuple[list, list, list, dict]:
    """(faces, not faces, mined negatives held out, how many of each kind) of the recipe: the
    patches, the permissive cascade's boxes in photographs and, with --net-mined, the network's
    boxes in composed pictures."""
    root = DATA / "anime-face-patches"
    face = [load_image(f) for f in list_images(root / "train" / "face")]
    bg = [load_image(f) for f in list_images(root / "train" / "not-face")]
    mined = mined_negatives(a.mined_per_source, a.seed)
    random.Random(a.seed).shuffle(mined)
    held = mined[: len(mined) // 5]
    mined = mined[len(mined) // 5 :]
    # Seeds 0 and 1 composed the network's training and threshold pictures.
    net_faces, net_others = net_mined(a.net_mined, a.seed + 2, log, a.net_mined_grey) if a.net_mined else ([], [])
    log(f"{len(face) + len(net_faces)} faces ({len(net_faces)} net boxes), {len(bg)} not-face patches, "
        f"{len(mined) + len(net_others)} mined negatives ({len(net_others)} net boxes, +{len(held)} held out)")
    # mined counts the network's other boxes with the cascade's, as training.json files always have
    counts = {"faces": len(face) + len(net_faces), "not_faces": len(bg), "mined": len(mined) + len(net_others),
              "net_faces": len(net_faces), "net_not_faces": len(net_others)}
    return face + net_faces, bg + mined + net_others, held, counts


def fit(net: Verifier, X: torch.Tensor, y: torch.Tensor) -> float:
    """Logistic regression of the verifier's unit on features X: the final loss."""
    opt = torch.optim.LBFGS(net.linear.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net.linear(X).squeeze(1), y) + 1e-4 * net.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    return float(opt.step(closure))


def export(net: Verifier, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net.eval(), torch.zeros(1, 3, SIZE, SIZE), str(out), input_names=["patches"], output_names=["logit"],
                      dynamic_axes={"patches": {0: "n"}, "logit": {0: "n"}}, opset_version=17, dynamo=False)


def accuracy(net: Verifier, images: list, label: int) -> float:
    with torch.inference_mode():
        prob = torch.sigmoid(net(torch.from_numpy(patches(images))).squeeze(1))
    return float(((prob >= 0.5) == bool(label)).float().mean())


def main() -> None:
    p = argparse.ArgumentParser()
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="the ONNX file to write")
    what.add_argument("--check", nargs="+", metavar="ONNX", help="instead of training: anime-face-net with each of "
                      "these verifiers on its 200 threshold pictures (composed with --seed + 1)")
    p.add_argument("--views", type=int, default=2, help="augmented views of each patch")
    p.add_argument("--mined-per-source", type=int, default=150)
    p.add_argument("--net-mined", type=int, default=0, help="composed pictures to mine anime-face-net boxes from")
    p.add_argument("--judged", metavar="FILE", help="also the boxes a person judged in drawn pictures "
                   "(benchmarks/detect_judged.py's judgement file): faces positive, the rest negative")
    p.add_argument("--judged-sources", nargs="+", default=["anime-scenes", "anime-onepiece"])
    p.add_argument("--judged-views", type=int, default=8, help="views of each judged box (they are few)")
    p.add_argument("--grey", type=float, default=0.0, metavar="P",
                   help="each view in shades of grey with this chance (torchvision's RandomGrayscale default is 0.1)")
    p.add_argument("--net-mined-grey", type=float, default=0.0, metavar="P",
                   help="each picture the network's boxes are mined from in shades of grey with this chance; "
                   "the network's check is then run on its threshold pictures in grey as well")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    for name in ("grey", "net_mined_grey"):
        if not 0 <= getattr(a, name) <= 1:
            p.error(f"--{name.replace('_', '-')} {getattr(a, name)}: must be a chance from 0 to 1")
    if a.check:
        from ..detection.verifier import FaceVerifier
        from ..errors import ModelError

        for path in a.check:  # each file checked before minutes of work
            if not Path(path).is_file():
                p.error(f"--check {path}: no such file")
            try:
                FaceVerifier(path)
            except ModelError as exc:
                p.error(f"--check {path}: {exc}")
        pictures, truth = data(200, a.seed + 1, lambda m: None)
        for path in a.check:
            print(json.dumps({"verifier": path, "seed": a.seed + 1, **net_check(path, pictures, truth)}), flush=True)
        return
    if a.judged and not Path(a.judged).is_file():
        p.error(f"--judged {a.judged}: no such file")
    for source in a.judged_sources if a.judged else ():
        if not (DATA / source).is_dir():
            p.error(f"--judged-sources {source}: no such source in {DATA}")
    torch.manual_seed(a.seed)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    face, negatives, held, counts = examples(a, log)
    judged_faces, judged_others = judged_examples(a.judged, a.judged_sources) if a.judged else ([], [])
    rng = random.Random(a.seed)
    net = Verifier().eval()
    X = embed(net, views(face, rng, a.views, a.grey) + views(negatives, rng, a.views, a.grey)
              + views(judged_faces, rng, a.judged_views, a.grey) + views(judged_others, rng, a.judged_views, a.grey), log)
    y = torch.cat([torch.ones(len(face) * a.views), torch.zeros(len(negatives) * a.views),
                   torch.ones(len(judged_faces) * a.judged_views), torch.zeros(len(judged_others) * a.judged_views)])
    log(f"logistic regression on {len(X)} views: loss {fit(net, X, y):.4f}")
    root = DATA / "anime-face-patches"
    test_face = [load_image(f) for f in list_images(root / "test" / "face")]
    test_bg = [load_image(f) for f in list_images(root / "test" / "not-face")]
    export(net, a.out)
    print(json.dumps({"out": str(a.out), "test_faces_accepted": round(accuracy(net, test_face, 1), 4),
                      "test_not_faces_refused": round(accuracy(net, test_bg, 0), 4),
                      "held_out_mined_refused": round(accuracy(net, held, 0), 4),
                      "train": {**counts, "views": a.views, "net_mined_pictures": a.net_mined, "judged": a.judged,
                                "judged_sources": a.judged_sources if a.judged else [],
                                "judged_faces": len(judged_faces), "judged_not_faces": len(judged_others),
                                "judged_views": a.judged_views, "grey": a.grey,
                                **({"net_mined_grey": a.net_mined_grey} if a.net_mined_grey else {})},
                      # the network's threshold pictures (--seed + 1), not the seed the boxes were mined from
                      "net_threshold_pictures": {"seed": a.seed + 1,
                                                 **net_check(str(a.out), *data(200, a.seed + 1, log))},
                      **({"net_threshold_pictures_grey": {"seed": a.seed + 1, **net_check(
                          str(a.out), *data(200, a.seed + 1, log, grey=1.0))}} if a.net_mined_grey else {})}))


if __name__ == "__main__":
    main()
