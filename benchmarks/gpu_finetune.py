"""Issue #14: a whole-backbone fine-tune of the anime fold models on a GPU, measured leave-one-source-out
against `anime-tuned`'s recipe (the last two stages trained on cached maps). The product and its
tests never need a GPU; this benchmark is the one place that uses one.

Three steps, the first and last here, the second on the GPU machine (which cannot read ../shared,
so the training pool travels packed):

    .venv/bin/python benchmarks/gpu_pack.py gpu-data
    # on the GPU machine, this repository's embedder/ importable as byakugan.embedder:
    python3 benchmarks/gpu_finetune.py train gpu-data --out OUT      # OUT/SOURCE.tar per fold, OUT/train.json
    .venv/bin/python benchmarks/gpu_finetune.py unpack OUT --folds bench-out/folds-gpu
    .venv/bin/python benchmarks/tta_folds.py bench-out/folds-gpu --tta flip_crop --save-embeddings bench-out/emb-gpu
    .venv/bin/python benchmarks/adapt_cohort.py bench-out/emb-gpu --out F

How the measured run reached the GPU machine (this workplace's `device` tool, which carries the
working tree and named ignored folders, 64 MiB in all): gpu-data/ (46 MB) and a wheel of
pytorch-metric-learning (the machine's image lacks it; `pip download --no-deps
--only-binary=:all: --python-version 3.12 ... -d .whl`) were carried; the tracked weights under
models/ (about 80 MB, not needed there) were moved out of the working tree for the call and back
after it; the command installed the wheel into /tmp/site, linked embedder/ as
/tmp/shim/byakugan/embedder (no install needed), set PYTHONPATH=/tmp/site:/tmp/shim and ran
`train` with `--workers 14 --deadline $(( $(date +%s) + 470 ))`, so that a fold that would not end
in time is dropped and what was trained comes back.

`train`: for each anime source left out, the same model as `anime-tuned`'s folds (EfficientNet-Lite0
from ImageNet, the concat head of 128 dimensions, colour histogram weight 1, class-mean scoring)
trained on every other source of sources.json (as stage_finetune.py's pool: hands too), but every
stage of the backbone learns, on views drawn afresh each epoch (the augmentation of
embedder.training.augment, as the cached maps were drawn), with the shipped loss (ProxyAnchor, 4
per class, batch 64). Fixed before any run, nothing chosen on a reported figure: 12 epochs (about
as many steps as the cached recipe's 3 epochs of 4 views); the first epoch trains the head alone,
so that a random head's gradients do not reach the ImageNet features; then head and proxies at
1e-3, blocks.5 on at 1e-4 (as the cached recipe), the stages before at 3e-5; BatchNorm statistics
kept (as the cached recipe: batches of 16 classes would skew them); bf16 autocast.
`unpack`: each fold's folder with the cohort stage_finetune.py gives its folds (class means of
its training classes, 20 seeded images each, then 500 face patches), built here from ../shared.

`train --hands` gives the folds `default`'s settings (no colour histogram, nearest-reference scoring),
the CNN part of hand galleries, for hand sources left out (`--sources drone-gestures ...`); untar
them as DIR/SOURCE-finetuned beside links to loso.py's DIR/SOURCE-lm landmark encoders, then
`tta_folds.py DIR --tta none --sources ...` and gallery_adapt.py / fusion_refit.py on the embeddings
(models/hand-landmarks-2's card).

`train ... --sources final` leaves no source out (OUT/final.tar; `unpack` gives it the cohort of
every source): the model a release would ship, as stage_finetune.py --final makes `anime-tuned`'s;
`unpack OUT --folds DIR --name NAME --thresholds A.json ...` also writes the config it ships with.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

ANIME = ("anime-faces", "anime-onepiece", "anime-scenes")


class Packed(torch.utils.data.Dataset):
    """gpu_pack.py's sources as one dataset: each item an augmented view and its class."""

    def __init__(self, files: list[Path], augment, preprocess) -> None:
        self.blobs, self.offsets, labels, self.classes = [], [], [], []
        for f in files:
            with safe_open(str(f), "pt") as t:
                names = json.loads(t.metadata()["classes"])
                self.blobs.append(t.get_tensor("jpeg").numpy())
                offsets = t.get_tensor("offsets").numpy()
                labels += [len(self.classes) + int(i) for i in t.get_tensor("labels")]
            self.offsets += [(len(self.blobs) - 1, int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
            self.classes += names
        self.labels = labels
        self.augment, self.preprocess = augment, preprocess

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        blob, a, b = self.offsets[i]
        img = Image.open(io.BytesIO(self.blobs[blob][a:b].tobytes())).convert("RGB")
        return self.preprocess(self.augment(img)), self.labels[i]


def train_fold(source: str, data: Path, out: Path, a: argparse.Namespace, log) -> dict:
    from pytorch_metric_learning import losses, samplers

    from byakugan.embedder.embedding.model import create_embedder
    from byakugan.embedder.preprocess import Preprocess
    from byakugan.embedder.training.augment import augmentation

    random.seed(a.seed), np.random.seed(a.seed), torch.manual_seed(a.seed)
    files = [data / f"{s}.safetensors" for s in a.pool if s != source]
    head = {"type": "concat", "dim": 128, "hidden": 512, "weight": 1.0}
    colour = None if a.hands else {"weight": 1.0}  # hands: default's recipe, the CNN part of hand galleries
    model = create_embedder("efficientnet_lite0", pretrained=str(data / "efficientnet_lite0.safetensors"), head=head,
                            preprocess=Preprocess(size=160), name=f"{source}-finetuned", colour=colour)
    if not a.hands:
        model.config["scoring"] = "mean"
    ds = Packed(files, augmentation(160, False), model.preprocess)
    device = torch.device(a.device)
    model.to(device)
    net = model.backbone.to(memory_format=torch.channels_last)
    loss_fn = losses.ProxyAnchorLoss(len(ds.classes), 128).to(device)
    late = [p for m in (*net.blocks[5:], net.conv_head, net.bn2) for p in m.parameters()]
    chosen = {id(p) for p in late}
    early = [p for p in net.parameters() if id(p) not in chosen]
    opt = torch.optim.AdamW([{"params": [*model.head.parameters(), *loss_fn.parameters()], "lr": a.lr},
                             {"params": late, "lr": a.late_lr}, {"params": early, "lr": a.early_lr}], weight_decay=1e-4)
    batch = min(64, 4 * len(ds.classes))
    sampler = samplers.MPerClassSampler(ds.labels, m=4, batch_size=batch, length_before_new_iter=len(ds))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, num_workers=a.workers,
                                         persistent_workers=a.workers > 0, pin_memory=device.type == "cuda")
    epochs, start = [], time.time()
    for epoch in range(a.epochs):
        t0, total, n = time.time(), 0.0, 0
        net.requires_grad_(epoch >= a.head_epochs)  # the first epochs: the head alone
        model.eval()  # BatchNorm statistics stay ImageNet's
        model.head.train()
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                f = net(x)
            z = torch.nn.functional.normalize(model.head.learned(f.float()), dim=-1)
            loss = loss_fn(z, y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
            if a.max_steps and n >= a.max_steps:
                break
        epochs.append({"epoch": epoch + 1, "loss": round(total / max(1, n), 4), "steps": n,
                       "seconds": round(time.time() - t0, 1)})
        log(json.dumps({source: epochs[-1]}))
        # from the fastest epoch so far: the first ones also start the workers and switch the backbone on
        steady = min(e["seconds"] for e in epochs) * 1.2
        if a.deadline and time.time() + steady * (a.epochs - epoch - 1) > a.deadline:
            raise TimeoutError(f"{source}: {a.epochs - epoch - 1} epochs would end past the deadline")
    model.eval().requires_grad_(False).cpu()
    with tempfile.TemporaryDirectory() as tmp:  # one file a fold comes back: the machine returns 8 at most
        folder = Path(tmp) / f"{source}-finetuned"
        model.save(folder)
        with tarfile.open(out / f"{source}.tar", "w") as tar:
            tar.add(folder, arcname=folder.name)
    return {"classes": len(ds.classes), "images": len(ds), "epochs": epochs, "seconds": round(time.time() - start),
            "fingerprint": model.fingerprint()}


def unpack(results: Path, folds: Path, log, name: str = "", thresholds: tuple = ()) -> None:
    """Each fold's folder from its tar, with the cohort stage_finetune.py's folds have (built here:
    the GPU machine has no ../shared), so tta_folds.py evaluates it as it evaluated anime-tuned's."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loso import DATA, SOURCES
    from stage_finetune import widen_cohort

    from byakugan.embedder.embedding.model import load_saved
    from byakugan.embedder.scoring.cohort import save_cohort
    from byakugan.embedder.training.cohort import build_cohort

    folds.mkdir(parents=True, exist_ok=True)
    for tar_path in sorted(results.glob("*.tar")):
        source = tar_path.stem
        with tarfile.open(tar_path) as tar:
            tar.extractall(folds, filter="data")
        fold = folds / f"{source}-finetuned"
        model = load_saved(fold)
        others = [str(DATA / s) for s in SOURCES if s != source]
        log(f"{source}: cohort of {len(others)} sources' classes, then 500 face patches")
        save_cohort(fold, build_cohort(model, others, (), 20, 0))
        config = fold / "config.json"
        config.write_text(json.dumps(json.loads(config.read_text()) | {"cohort": {"top": 5}}, indent=2) + "\n")
        widen_cohort(str(fold), 500, log)
        if source == "final" and name:
            release(fold, name, thresholds, log)


def release(fold: Path, name: str, thresholds: list[Path], log) -> None:
    """The final model's config as a release ships it, as anime-tuned-tta's was made: the four views
    (`"tta": "flip_crop"`), the adaptation new anime galleries take, the detectors that pick it, and
    the two default thresholds: the mean over the folds (adapt_cohort.py's output of each run given)
    of the score that keeps 95% of true matches, unadapted and adapted as advised."""
    from byakugan.embedder.embedding.hub import model_for, shipped_config

    shipped = shipped_config(model_for("anime-face"))  # what new anime galleries use now: views, advice, detectors
    runs = [json.loads(p.read_text())["sources"] for p in thresholds]
    mean = lambda key: round(float(np.mean([r[s][key]["threshold_tar95"] for r in runs for s in r])), 4)  # noqa: E731
    advised = "ridge{ridge:g}_weight{weight:g}_beta{cohort:g}".format(**shipped["adapt"])
    config = fold / "config.json"
    settings = {"name": name, "tta": "flip_crop", "threshold": mean("shipped"), "adapt": shipped["adapt"],
                "adapted_threshold": mean(advised), "detectors": shipped["detectors"]}
    config.write_text(json.dumps(json.loads(config.read_text()) | settings, indent=2) + "\n")
    moved = f" and take 'detectors' out of {shipped['name']}'s config" if shipped["name"] != name else ""
    log(f"{fold}: {json.dumps(settings)}; copy it to models/{name}{moved}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    t = sub.add_parser("train", help="on the GPU machine: train each fold, write OUT/SOURCE.tar and OUT/train.json")
    t.add_argument("data", help="gpu_pack.py's folder")
    t.add_argument("--out", required=True)
    t.add_argument("--sources", nargs="+", default=list(ANIME),
                   help="the sources left out, a fold each; 'final': none left out, the model a release would ship")
    t.add_argument("--hands", action="store_true",
                   help="default's recipe (no colour histogram, nearest-reference scoring): the CNN of hand galleries, "
                        "for hand sources left out (tta_folds.py --tta none evaluates them, fused with loso.py's landmark folds)")
    t.add_argument("--pool", nargs="+", default=None, help="the sources a fold may train on (default: every packed one)")
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--head-epochs", type=int, default=1)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--late-lr", type=float, default=1e-4)
    t.add_argument("--early-lr", type=float, default=3e-5)
    t.add_argument("--workers", type=int, default=12)
    t.add_argument("--device", default="cuda")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many steps (a dry run)")
    t.add_argument("--deadline", type=float, default=0, help="a Unix time: a fold that would end past it is dropped")
    u = sub.add_parser("unpack", help="here: the folds' folders with their cohorts, for tta_folds.py")
    u.add_argument("results", help="train's OUT")
    u.add_argument("--folds", required=True)
    u.add_argument("--name", default="", help="final.tar: the model's name, and its config as a release ships it")
    u.add_argument("--thresholds", nargs="*", type=Path, default=[],
                   help="with --name: the folds' adapt_cohort.py outputs its default thresholds are the means of")
    a = p.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if a.step == "unpack":
        if a.name and not a.thresholds:
            p.error("--name needs --thresholds: the folds' adapt_cohort.py outputs")
        unpack(Path(a.results), Path(a.folds), log, a.name, a.thresholds)
        return
    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    a.pool = a.pool or sorted(f.stem for f in data.glob("*.safetensors") if f.stem != "efficientnet_lite0")
    device = torch.cuda.get_device_name(0) if a.device == "cuda" else a.device
    log(f"device {device}, torch {torch.__version__}, pool {a.pool}")
    rows = {}
    for source in a.sources:
        try:
            rows[source] = train_fold(source, data, out, a, log)
        except TimeoutError as exc:  # the machine is lent for minutes: what was trained comes back
            rows[source] = {"cut": str(exc)}
        settings = {k: v for k, v in vars(a).items() if k not in ("step", "data", "out")}
        text = json.dumps({"device": device, "settings": settings, "folds": rows}, indent=1)
        (out / "train.json").write_text(text + "\n")  # after every fold: a cut-short run keeps what it trained
        if "cut" in rows[source]:
            break
    print(text)


if __name__ == "__main__":
    main()
