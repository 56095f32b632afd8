"""What a gallery that crops nothing holds: whether its images are anime faces, each judged whole
by the anime-face-net's verifier (verifier.py), so that a new gallery of face crops can take the
anime model without being told (byakugan.embedder.embedding.hub.choose_model).

Of 100 seeded first enrolments of 5 images of one class, 98-100% took the anime model on each
anime source of ../shared/datasets (anime-onepiece, a style the verifier never saw, 98%), none on
any hand source (benchmarks/model_pick.py -> models/anime-tuned/model_pick.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import ImageError
from ..images import ImageSource, load_image
from .grey import is_grey

# Images judged at most (spread over the list): enough for a majority, about 5 ms each.
SAMPLE = 32
# The detector whose verifier judges (ANIMEFACE_NET_VERIFIER): images it calls anime faces get the
# model this detector's galleries get.
JUDGE = "anime-face-net"


@dataclass(frozen=True)
class Looks:
    anime_faces: int  # images the verifier calls anime faces (probability >= 0.5)
    judged: int  # images judged: readable ones, at most SAMPLE

    @property
    def anime(self) -> bool:
        """More than half of the images judged are anime faces."""
        return 2 * self.anime_faces > self.judged

    def __str__(self) -> str:
        return f"{self.anime_faces} of {self.judged} images look like anime faces"


def judge(images: Sequence[ImageSource]) -> Looks:
    """How many of the images (at most SAMPLE, evenly spread) are anime faces; unreadable ones are
    left out (enrolment reports them)."""
    from .assets import ANIMEFACE_NET_VERIFIER, fetch
    from .verifier import FaceVerifier

    images = list(images)
    n = len(images)
    loaded = []
    for source in (images[i * n // SAMPLE] for i in range(SAMPLE)) if n > SAMPLE else images:
        try:
            loaded.append(load_image(source))
        except ImageError:
            continue
    if not loaded:
        return Looks(0, 0)
    verifier = FaceVerifier(fetch(ANIMEFACE_NET_VERIFIER))
    grey = [verifier.has_grey and is_grey(img) for img in loaded]  # manga faces: the unit that learnt grey faces
    faces = sum(int((verifier([img for img, g in zip(loaded, grey) if g == kind], kind) >= 0.5).sum())
                for kind in (False, True))
    return Looks(faces, len(loaded))
