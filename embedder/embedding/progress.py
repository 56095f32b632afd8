"""The bar long embedding work shows, the same for the torch and the onnxruntime encoder (which
imports no torch, so it cannot take it from embedding.model)."""

from __future__ import annotations


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, enabled: bool, desc: str = "embedding"):
    if not enabled or total < 2:  # tqdm only where a bar is shown: a bundle's user may not have it
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=desc, leave=False)
