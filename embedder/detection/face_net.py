"""`anime-face-net`: anime faces found by a small centre-point network (a heat map of face centres,
with each centre's offset and box size) on the frozen ImageNet EfficientNet-Lite0 trunk, trained
here on composed pictures (embedder/training/face_net.py). One pass over the picture at a 512 px
long side (and one at 640 px where it finds nothing), on onnxruntime: no cascade, so faces the
cascade cannot see (tilted, small, drawn in another style) can still be found. Boxes are widened for the hair as `anime-face` widens them.
Where nothing is found, the whole picture is the face when the verifier is sure of it (a face filling the picture)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import ModelError
from .assets import ANIMEFACE_NET, ANIMEFACE_NET_VERIFIER, fetch
from .base import Detection, make_settings
from .faces import inside, iou
from .grey import is_grey

STRIDE = 16
OUTPUTS = ("heat", "offset", "log_size")
GREY_OUTPUTS = tuple(f"grey_{n}" for n in OUTPUTS)  # the head for grey pictures (training.grey_heads)
# The grey head's threshold: the lowest heat whose boxes were >= 95% faces on held-out composed pictures
# in grey (models/anime-face-net/grey_training.json), as min_score is for the colour head.
GREY_MIN_SCORE = 0.1454
# The framing the verifier learnt (the cascade's, grown as `anime-face` grows it), whatever framing
# the crops are given: the verifier judges, and overlaps are merged, on boxes framed as it learnt them.
VERIFIER_FRAMING = (0.15, 0.35)
WHOLE_IF_VERIFIED = 0.7
ORDERS = ("largest", "surest")


@dataclass(frozen=True)
class FaceNetSettings:
    # A centre's heat: the lowest at which >= 95% of boxes were faces on held-out composed pictures
    # (models/anime-face-net/training.json)
    min_score: float = 0.1471
    side: int = 512  # the picture's longer side when searched
    # The network's boxes scaled to the strict cascade's framing, which the anime models saw: on 300
    # composed training pictures (another seed) the cascade's boxes were 0.885x the network's, same centre.
    scale: float = 0.885
    # What of a face the embedder is given: the box widened by `grow` of its size on each side and
    # by `grow_up` more above, for the hair, as `anime-face` frames it. The verifier sees every box
    # at its own framing whatever these are (VERIFIER_FRAMING). A framing picked end to end on other
    # sources (0 / 0.6: benchmarks/detect_framing.py) gained on pasted heads and lost on head shots
    # and illustrations of sources nobody trained on (models/anime-face-net/MODEL_CARD.md): not shipped.
    grow: float = 0.15
    grow_up: float = 0.35
    overlap: float = 0.3  # boxes overlapping more than this (IoU) are one face
    max_faces: int = 20
    # Each box checked by a face verifier (verifier.py) trained on the network's own boxes as well as
    # the face patches: the network learnt faces pasted into pictures, never the bodies under them.
    verify: bool = True
    min_probability: float = 0.5
    # Which face comes first (what enrolment and evaluation crop, and the first answer of a search):
    # "surest", the verifier's most certain (the network's heat without a verifier), or "largest",
    # as the cascades order them. Picked end to end on pasted anime-faces and anime-scenes
    # (benchmarks/detect_framing.py --first): a person or a body in the picture can be larger than
    # the drawn face, and the verifier is less sure of it.
    first: str = "surest"
    # When nothing is found at `side`, one more look at this side (0: none): the network misses some
    # heads at one scale that it finds at another.
    second_side: int = 640
    # A picture whose first box covers at least this share of it is a face crop already: the whole
    # picture is its one face (0: never). The anime models do better on a tight crop or a head shot
    # whole than on the box inside it; 0.2, picked end to end with crops, lost 3.9 points on whole
    # illustrations nobody picked it on, so it is off (models/anime-face-net/MODEL_CARD.md).
    whole_above: float = 0.0
    # A face beyond the first must reach this heat (the first needs min_score). On drawn pictures
    # nobody pasted into, most boxes beyond the first were bodies, clothes and hands the verifier
    # passed, at a lower heat than faces (benchmarks/detect_judged.py). 0.5, about the 5th percentile
    # of the faces beyond the first on the network's threshold pictures, drops nearly all of those
    # boxes, and a third of the second and third heads pasted into photographs
    # (benchmarks/others_min_score.py, models/anime-face-net/MODEL_CARD.md).
    others_min_score: float = 0.5
    # A picture in shades of grey (grey.is_grey: a manga page) is searched by the network's head and
    # checked by the verifier's unit trained on grey pictures (training.grey_heads), at that head's
    # own threshold (the same rule as min_score, on grey held-out pictures). The colour ones, trained
    # on faces nearly all in colour, found a face in far fewer grey pictures (MODEL_CARD.md).
    grey: bool = True
    grey_min_score: float = GREY_MIN_SCORE
    # Where both looks find nothing, the verifier judges the whole picture, and at this probability or
    # more it is the one face (0: never). The network learnt faces of 20-320 px in a 512 px picture: a
    # head shot whose face fills the picture is beyond it, in grey most of all, where the verifier
    # still knows a face. The bar: the lowest from 0.5 up at which at most 1 in 100 pictures of the
    # detector's own training photographs (hands, colour and grey) is taken whole
    # (benchmarks/whole_verified.py, models/anime-face-net/MODEL_CARD.md).
    whole_if_verified: float = WHOLE_IF_VERIFIED

    def __post_init__(self) -> None:
        # A gallery or a bundle stores these: a wrong one is one line, not a traceback or a 20 GB tensor.
        rules = {"min_score": (float, 0, 1), "side": (int, 32, 2048), "scale": (float, 0.1, 4), "grow": (float, 0, 2),
                 "grow_up": (float, 0, 2), "overlap": (float, 0, 1), "max_faces": (int, 1, 100),
                 "min_probability": (float, 0, 1), "whole_above": (float, 0, 1),
                 "others_min_score": (float, 0, 1), "grey_min_score": (float, 0, 1),
                 "whole_if_verified": (float, 0, 1)}
        for name, (kind, low, high) in rules.items():
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
            if not ok or not low <= v <= high:
                raise ModelError(f"detector anime-face-net: {name} {v!r} must be a{'n integer' if kind is int else ' number'} "
                                 f"from {low} to {high}")
        for name in ("verify", "grey"):
            if not isinstance(getattr(self, name), bool):
                raise ModelError(f"detector anime-face-net: {name} {getattr(self, name)!r} must be true or false")
        v = self.second_side
        if not (isinstance(v, int) and not isinstance(v, bool) and (v == 0 or 32 <= v <= 2048)):
            raise ModelError(f"detector anime-face-net: second_side {v!r} must be 0 (no second look) or an integer "
                             "from 32 to 2048")
        if self.first not in ORDERS:
            raise ModelError(f"detector anime-face-net: first {self.first!r} must be one of {', '.join(ORDERS)}")


class FaceNetDetector:
    name = "anime-face-net"

    def __init__(self, settings: FaceNetSettings, path: Optional[os.PathLike | str] = None,
                 verifier: Optional[os.PathLike | str] = None) -> None:
        import onnxruntime as ort

        from .verifier import FaceVerifier

        self.settings = settings
        self.verifier = FaceVerifier(fetch(ANIMEFACE_NET_VERIFIER, verifier)) if settings.verify else None
        file = fetch(ANIMEFACE_NET, path)
        try:
            self._session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a missing or damaged file
            raise ModelError(f"detector anime-face-net: {file} cannot be loaded ({exc})") from None
        names = ([i.name for i in self._session.get_inputs()], [o.name for o in self._session.get_outputs()])
        if names not in ((["pixels"], list(OUTPUTS)), (["pixels"], list(OUTPUTS + GREY_OUTPUTS))):
            raise ModelError(f"detector anime-face-net: {file} is not the face network (inputs and outputs {names})")
        if settings.grey and GREY_OUTPUTS[0] not in names[1]:
            raise ModelError(f"detector anime-face-net: {file} has no head for pictures in shades of grey (a file "
                             "made before there was one); set grey false to use it")
        if settings.grey and self.verifier is not None and not self.verifier.has_grey:
            raise ModelError(f"detector anime-face-net: verifier {self.verifier.path} has no unit for pictures in "
                             "shades of grey (a file made before there was one); set grey false to use it")
        self.config = {"name": self.name, **asdict(settings)}
        if path:
            self.config["model"] = str(path)
        if verifier and settings.verify:
            self.config["verifier"] = str(verifier)

    def __call__(self, img: Image.Image) -> list[Detection]:
        s = self.settings
        grey = s.grey and is_grey(img)
        found = self._search(img, s.side, grey)
        if not found and s.second_side not in (0, s.side):
            found = self._search(img, s.second_side, grey)
        if len(found) > 1 and s.others_min_score:
            found = found[:1] + [d for d in found[1:] if d.score >= s.others_min_score]
        if found and s.whole_above and found[0].area >= s.whole_above * img.width * img.height:
            return [Detection((0, 0, img.width, img.height), score=found[0].score, whole=True)]  # the others are its parts
        if not found and s.whole_if_verified and self.verifier is not None:
            p = float(self.verifier([img], grey)[0])
            if p >= s.whole_if_verified:
                return [Detection((0, 0, img.width, img.height), score=p, whole=True)]
        return found

    def _search(self, img: Image.Image, side: int, grey: bool) -> list[Detection]:
        s = self.settings
        scale = side / max(img.size)
        w, h = max(STRIDE, round(img.width * scale)), max(STRIDE, round(img.height * scale))
        pw, ph = -(-w // 32) * 32, -(-h // 32) * 32  # the trunk halves five times: pad to a multiple of 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :h, :w] = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
        heat, offset, log_size = (o[0] for o in self._session.run(list(GREY_OUTPUTS if grey else OUTPUTS), {"pixels": x}))
        heat = heat[0]
        min_score = s.grey_min_score if grey else s.min_score
        padded = np.pad(heat, 1, constant_values=-1.0)
        peak = np.ones_like(heat, bool)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if (dy, dx) != (1, 1):
                    peak &= heat >= padded[dy:dy + heat.shape[0], dx:dx + heat.shape[1]]
        ys, xs = np.nonzero(peak & (heat >= min_score))
        order = np.argsort(-heat[ys, xs])[:200]
        found: list[tuple[Detection, tuple]] = []  # each face at the verifier's framing and at the crop's
        for i, j in zip(ys[order], xs[order]):
            cx, cy = (j + offset[0, i, j]) * STRIDE / scale, (i + offset[1, i, j]) * STRIDE / scale
            bw, bh = np.exp(np.clip(log_size[:, i, j], -3, 6)) * STRIDE / scale * s.scale
            seen = _framed(cx, cy, bw, bh, *VERIFIER_FRAMING, img.size)
            if seen[2] >= 2 and seen[3] >= 2:
                found.append((Detection(seen, score=float(heat[i, j])), _framed(cx, cy, bw, bh, s.grow, s.grow_up, img.size)))
        sure = [d.score for d, _ in found]  # how certain each is a face: the heat, or the verifier's probability
        # Verified before overlaps are merged: a body under a face must not merge the face away.
        if self.verifier is not None and found:
            prob = self.verifier([img.crop((x, y, x + w, y + h)) for x, y, w, h in (d.box for d, _ in found)], grey)
            keep = [i for i, p in enumerate(prob) if p >= s.min_probability]
            found, sure = [found[i] for i in keep], [float(prob[i]) for i in keep]
        kept: list[tuple[Detection, tuple, float]] = []
        for (d, crop), p in zip(found, sure):  # best first; a box mostly inside a better one is a part of that face
            if all(iou(d.box, k.box) <= s.overlap and inside(d.box, k.box) <= 0.5 for k, _, _ in kept):
                kept.append((d, crop, p))
            if len(kept) == s.max_faces:
                break
        out = [(Detection(crop, score=d.score), p) for d, crop, p in kept if crop[2] >= 2 and crop[3] >= 2]
        return [d for d, _ in sorted(out, key=(lambda x: -x[0].area) if s.first == "largest" else (lambda x: -x[1]))]


def _framed(cx: float, cy: float, bw: float, bh: float, grow: float, grow_up: float, size) -> tuple:
    """The box of a face centred at (cx, cy), bw x bh, widened by grow on each side and grow_up more
    above (for the hair), clipped to the picture: (x, y, w, h) in whole pixels."""
    x0, y0 = max(0.0, cx - bw / 2 - grow * bw), max(0.0, cy - bh / 2 - (grow + grow_up) * bh)
    x1, y1 = min(size[0], cx + bw / 2 + grow * bw), min(size[1], cy + bh / 2 + grow * bh)
    return (round(x0), round(y0), round(x1 - x0), round(y1 - y0))


# What a gallery or bundle made before `first` existed stores: every one of these. A setting it
# does not store takes the value that does what it did then (largest first, one look, boxes only),
# so a gallery made since, which stores the settings of its day, keeps them too; a config naming a
# few settings gets today's defaults.
_STORED_BEFORE = {"min_score", "side", "scale", "grow", "grow_up", "overlap", "max_faces", "verify", "min_probability"}
_AS_BEFORE = {"first": "largest", "second_side": 0, "whole_above": 0.0, "others_min_score": 0.0, "grey": False,
              "whole_if_verified": 0.0}
# What training and its threshold pictures ran with: one look, largest first (their figures stay reproducible).
ONE_LOOK_LARGEST_FIRST = dict(_AS_BEFORE)


def anime_face_net(config: dict) -> FaceNetDetector:
    settings = {k: v for k, v in config.items() if k not in ("name", "model", "verifier")}
    if _STORED_BEFORE <= settings.keys():
        settings = {**_AS_BEFORE, **settings}
    return FaceNetDetector(make_settings(FaceNetSettings, settings, "anime-face-net", ("model", "verifier")),
                            config.get("model"), config.get("verifier"))
