"""Train `anime-face-net` (embedder/detection/face_net.py): a small centre-point head (CenterNet's
heat map, offsets and sizes) on the frozen ImageNet EfficientNet-Lite0 trunk, and write it as ONNX.

    .venv/bin/python -m byakugan.embedder.training.face_net --out DIR [--grey 1]

(One head per run; training.grey_heads joins the colour head and the grey one, --grey 1, into the
shipped file.)

Training pictures are composed, with known boxes: 1-4 faces of `anime-face-patches/train/face`
(many characters, 64 px) pasted at 20-320 px, tilted up to 15 degrees, with rectangular or soft
oval edges, into a mosaic of its not-face patches (anime drawings that are not faces) or into a
photograph of four hand sources; not-face patches are pasted the same way, so an edge is never
the cue; some pictures are one face filling the frame (tight crops). drone-gestures, anime-faces and
anime-onepiece are kept out: benchmarks/detect_composed.py pastes those heads into those frames.
The trunk's outputs (stride 16 and 32) are cached once; the head trains on them. The score
threshold is the lowest whose boxes are >= 95% faces on held-out composed pictures (another seed).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from ..atomic import write_atomic
from ..images import list_images, load_image
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
# Photographs with no anime face in them (backgrounds and hard negatives); drone-gestures is kept
# out: benchmarks/detect_composed.py pastes faces into its frames.
PHOTOS = ("rock-paper-scissors", "hand-fingers", "sign-digits", "asl-signs")
W, H, STRIDE = 512, 384, 16


class Trunk(torch.nn.Module):
    """EfficientNet-Lite0 to blocks.6, giving stride-16 (blocks.4) and stride-32 (blocks.6) maps."""

    def __init__(self) -> None:
        super().__init__()
        from ..embedding.backbones import create_backbone

        self.net = create_backbone("efficientnet_lite0", pretrained=True)[0].eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.bn1(n.conv_stem((x * 255.0 - 127.0) / 128.0))
        for block in n.blocks[:5]:
            x = block(x)
        f16 = x
        for block in n.blocks[5:]:
            x = block(x)
        return f16, x


class Head(torch.nn.Module):
    """Joined maps -> heat-map logit, centre offset (x, y) and log size (w, h) per stride-16 cell."""

    def __init__(self, c16: int = 112, c32: int = 320, width: int = 64) -> None:
        super().__init__()
        self.join = torch.nn.Conv2d(c16 + c32, width, 1)
        self.mix = torch.nn.Conv2d(width, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, 5, 1)
        torch.nn.init.constant_(self.out.bias[:1], -4.0)  # CenterNet's prior: most cells are not centres

    def forward(self, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(f32, size=f16.shape[-2:], mode="nearest")
        return self.out(F.relu(self.mix(F.relu(self.join(torch.cat([f16, up], 1))))))


class Detector(torch.nn.Module):
    """Pixels in [0, 1] -> (heat in [0, 1], offset, log size): what the ONNX file holds."""

    def __init__(self, trunk: Trunk, head: Head) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x: torch.Tensor):
        y = self.head(*self.trunk(x))
        return torch.sigmoid(y[:, :1]), y[:, 1:3], y[:, 3:5]


def paste(canvas: Image.Image, patch: Image.Image, rng: random.Random, side: int, avoid: list = ()) -> tuple | None:
    """The patch pasted at a seeded place overlapping none of `avoid`; its box, or None if none was found."""
    patch = patch.convert("RGB").resize((side, side), Image.BILINEAR)
    mask = Image.new("L", patch.size, 255)
    if rng.random() < 0.5:  # a soft oval edge instead of a rectangle
        mask = Image.new("L", patch.size, 0)
        ImageDraw.Draw(mask).ellipse([0, 0, side - 1, side - 1], fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(max(1, side // 20)))
    angle = rng.uniform(-15, 15)
    patch, mask = patch.rotate(angle, expand=True), mask.rotate(angle, expand=True)
    w, h = patch.size
    if w >= canvas.width or h >= canvas.height:
        return None
    for _ in range(20):
        x, y = rng.randint(0, canvas.width - w), rng.randint(0, canvas.height - h)
        if all(x + w <= bx or bx + bw <= x or y + h <= by or by + bh <= y for bx, by, bw, bh in avoid):
            canvas.paste(patch, (x, y), mask)
            return x, y, w, h
    return None


def compose(rng: random.Random, faces: list, not_faces: list, photos: list,
            grey: float = 0.0) -> tuple[Image.Image, list[tuple]]:
    """A picture with known face boxes; with chance `grey` all of it in shades of grey, as a manga
    page is (the face patches are nearly all in colour)."""
    picture, boxes = _compose(rng, faces, not_faces, photos)
    if grey and rng.random() < grey:  # no draw at 0: the pictures without it are reproduced exactly
        picture = picture.convert("L").convert("RGB")
    return picture, boxes


def _compose(rng: random.Random, faces: list, not_faces: list, photos: list) -> tuple[Image.Image, list[tuple]]:
    if rng.random() < 0.1:  # a tight crop: one face is the picture
        return rng.choice(faces).convert("RGB").resize((W, H), Image.BILINEAR), [(W * 0.1, H * 0.05, W * 0.8, H * 0.9)]
    if rng.random() < 0.5:
        canvas = load_image(rng.choice(photos)).convert("RGB").resize((W, H), Image.BILINEAR)
    else:
        canvas = Image.new("RGB", (W, H))
        for y in range(0, H, 96):
            for x in range(0, W, 96):
                canvas.paste(rng.choice(not_faces).convert("RGB").resize((96, 96), Image.BILINEAR), (x, y))
    for _ in range(rng.randint(0, 3)):
        paste(canvas, rng.choice(not_faces), rng, int(math.exp(rng.uniform(math.log(24), math.log(200)))))
    boxes: list[tuple] = []
    for _ in range(rng.randint(1, 4)):
        side = int(math.exp(rng.uniform(math.log(20), math.log(320))))
        box = paste(canvas, rng.choice(faces), rng, side, boxes)
        if box is not None:
            boxes.append(box)
    return canvas, boxes


def targets(boxes: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gh, gw = H // STRIDE, W // STRIDE
    heat, reg, mask = np.zeros((gh, gw), np.float32), np.zeros((4, gh, gw), np.float32), np.zeros((gh, gw), np.float32)
    yy, xx = np.mgrid[0:gh, 0:gw]
    for x, y, w, h in boxes:
        cx, cy = (x + w / 2) / STRIDE, (y + h / 2) / STRIDE
        i, j = min(gh - 1, int(cy)), min(gw - 1, int(cx))
        sigma = max(0.6, 0.12 * min(w, h) / STRIDE)
        heat = np.maximum(heat, np.exp(-((xx - j) ** 2 + (yy - i) ** 2) / (2 * sigma**2)))
        reg[:, i, j] = (cx - j, cy - i, math.log(w / STRIDE), math.log(h / STRIDE))
        mask[i, j] = 1.0
    return heat, reg, mask


def matches(box: tuple, truth: tuple) -> bool:
    """A found box is this face when its centre lies in the face's box and its area is within 4x."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    x, y, w, h = truth
    return x <= cx <= x + w and y <= cy <= y + h and 0.25 <= box[2] * box[3] / (w * h) <= 4


def detection_figures(found: list[list[tuple]], truth: list[list[tuple]]) -> dict:
    """Per picture the boxes found and the known faces -> recall (faces found), precision (boxes
    that are faces) and the share of pictures with a face found, by `matches`; the boxes that are
    not faces split into those centred on a known face (the wrong size: a part of it, or it with
    much around) and those elsewhere in the picture, each as a share of all boxes."""
    boxes = sum(map(len, found))
    faces = sum(any(matches(b, t) for t in known) for got, known in zip(found, truth) for b in got)
    hits = sum(any(matches(b, t) for b in got) for got, known in zip(found, truth) for t in known)
    pictures = sum(any(matches(b, t) for b in got for t in known) for got, known in zip(found, truth))
    elsewhere = sum(not any(t[0] <= b[0] + b[2] / 2 <= t[0] + t[2] and t[1] <= b[1] + b[3] / 2 <= t[1] + t[3]
                            for t in known) for got, known in zip(found, truth) for b in got)
    return {"recall": round(hits / max(1, sum(map(len, truth))), 4), "precision": round(faces / max(1, boxes), 4),
            "pictures_with_a_face_found": round(pictures / max(1, len(found)), 4),
            "not_faces_wrong_size_on_a_face": round((boxes - faces - elsewhere) / max(1, boxes), 4),
            "not_faces_elsewhere": round(elsewhere / max(1, boxes), 4)}


def focal(logit: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss over the heat map."""
    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    loss = -(pos * (1 - p) ** 2 * torch.log(p) + (1 - pos) * (1 - heat) ** 4 * p**2 * torch.log(1 - p))
    return loss.sum() / pos.sum().clamp(min=1)


def data(n: int, seed: int, log, grey: float = 0.0) -> tuple[list, list]:
    root = DATA / "anime-face-patches" / "train"
    faces = [load_image(f) for f in list_images(root / "face")]
    not_faces = [load_image(f) for f in list_images(root / "not-face")]
    photos = [f for s in PHOTOS for d in sorted((DATA / s).iterdir()) if d.is_dir() for f in list_images(d)]
    rng = random.Random(seed)
    pictures = [compose(rng, faces, not_faces, photos, grey) for _ in range(n)]
    log(f"composed {n} pictures, {sum(len(b) for _, b in pictures)} faces (seed {seed}, grey {grey})")
    return [p for p, _ in pictures], [b for _, b in pictures]


@torch.inference_mode()
def maps(trunk: Trunk, pictures: list, log) -> tuple[torch.Tensor, torch.Tensor]:
    f16, f32 = [], []
    for i in range(0, len(pictures), 16):
        x = torch.from_numpy(np.stack([np.asarray(p, np.float32).transpose(2, 0, 1) / 255.0 for p in pictures[i:i + 16]]))
        a, b = trunk(x.contiguous(memory_format=torch.channels_last))
        f16.append(a.half())
        f32.append(b.half())
        if (i // 16) % 20 == 0:
            log(f"trunk maps {min(i + 16, len(pictures))}/{len(pictures)}")
    return torch.cat(f16), torch.cat(f32)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, help="model folder: anime_face_net.onnx and training.json")
    p.add_argument("--pictures", type=int, default=2000)
    p.add_argument("--held-out", type=int, default=200, help="composed pictures (another seed) that set the threshold")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grey", type=float, default=0.0, metavar="P",
                   help="each composed picture (threshold pictures too) in shades of grey with this chance")
    a = p.parse_args()
    if not 0 <= a.grey <= 1:
        p.error(f"--grey {a.grey}: must be a chance from 0 to 1")
    torch.manual_seed(a.seed)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    trunk = Trunk().to(memory_format=torch.channels_last)
    pictures, boxes = data(a.pictures, a.seed, log, a.grey)
    f16, f32 = maps(trunk, pictures, log)
    del pictures
    t = [targets(b) for b in boxes]
    heat = torch.from_numpy(np.stack([x[0] for x in t]))[:, None]
    reg, mask = torch.from_numpy(np.stack([x[1] for x in t])), torch.from_numpy(np.stack([x[2] for x in t]))[:, None]
    head = Head()
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=a.epochs * math.ceil(len(f16) / 32))
    history = []
    for epoch in range(a.epochs):
        order, total = torch.randperm(len(f16)), 0.0
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            y = head(f16[idx].float(), f32[idx].float())
            m = mask[idx]
            loss = focal(y[:, :1], heat[idx]) + (m * (y[:, 1:] - reg[idx]).abs()).sum() / m.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "loss": round(total / len(f16), 4)})
        log(json.dumps(history[-1]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Detector(trunk, head.eval()).eval()
    onnx = out / "anime_face_net.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, H, W), str(onnx), input_names=["pixels"],
                      output_names=["heat", "offset", "log_size"], opset_version=17, dynamo=False,
                      dynamic_axes={"pixels": {2: "h", 3: "w"}, "heat": {2: "gh", 3: "gw"},
                                    "offset": {2: "gh", 3: "gw"}, "log_size": {2: "gh", 3: "gw"}})
    threshold = choose_threshold(onnx, a.held_out, a.seed + 1, log, a.grey)
    write_atomic(out / "training.json", json.dumps({"pictures": a.pictures, "epochs": a.epochs, "seed": a.seed,
                                                    **({"grey": a.grey} if a.grey else {}), "history": history, "threshold": threshold}, indent=1).encode())
    print(json.dumps({"out": str(onnx), **threshold}))


def choose_threshold(onnx: Path, n: int, seed: int, log, grey: float = 0.0) -> dict:
    """The lowest score whose boxes are >= 95% faces on held-out composed pictures."""
    from ..detection.face_net import ONE_LOOK_LARGEST_FIRST, FaceNetDetector, FaceNetSettings

    pictures, truth = data(n, seed, log, grey)
    settings = FaceNetSettings(min_score=0.05, scale=1.0, grow=0.0, grow_up=0.0, verify=False, **ONE_LOOK_LARGEST_FIRST)
    detect = FaceNetDetector(settings, str(onnx))
    scored = []  # (score, is a face)
    for pic, boxes in zip(pictures, truth):
        for d in detect(pic):
            scored.append((d.score, any(matches(d.box, b) for b in boxes)))
    scored.sort(reverse=True)
    faces, best = 0, {"min_score": 0.5, "held_out_precision": None, "held_out_recall": None}
    total = sum(len(b) for b in truth)
    for k, (score, face) in enumerate(scored, 1):
        faces += face
        if faces / k >= 0.95:
            best = {"min_score": round(float(score), 4), "held_out_precision": round(faces / k, 4),
                    "held_out_recall": round(faces / total, 4)}
    log(json.dumps(best))
    return best


if __name__ == "__main__":
    main()
