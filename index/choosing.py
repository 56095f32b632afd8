"""The model of a new gallery that names none and crops nothing, picked by what its first images
show (byakugan.embedder.embedding.hub.choose_model): the pipelines tried before the choice, one per
model, so that a check of an upload and the enrolment after it load each model once."""

from __future__ import annotations

from typing import Sequence

from byakugan.embedder.images import ImageSource

from .pipeline import Pipeline


class Candidates:
    def __init__(self, *known: Pipeline) -> None:
        self._by_model: dict[str, Pipeline] = {p.encoder.name: p for p in known}  # made already: not loaded twice

    def __call__(self, images: Sequence[ImageSource]) -> Pipeline:
        """The pipeline of the model these images call for, its .choice saying why."""
        from byakugan.embedder.embedding.hub import choose_model

        choice = choose_model("none", images)
        pipe = self._by_model.get(choice.name)
        if pipe is None:
            pipe = self._by_model[choice.name] = Pipeline.create(choice.name, "none")
        pipe.choice = choice
        return pipe
