"""The bar long embedding work shows, the same for the torch and the onnxruntime encoder (which
imports no torch, so it cannot take it from embedding.model)."""

from __future__ import annotations


def bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="embedding", disable=not enabled or total < 2, leave=False)
