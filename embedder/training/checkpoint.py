"""A training run's checkpoint (OUT/checkpoint): the weights, the optimizer's state and the run's
settings after each epoch, so that `byakugan train --resume` goes on where a run stopped.

Everything is safetensors or JSON: no pickle is written or read (the optimizer's tensors in
optimizer.safetensors, its settings and plain numbers in that file's metadata).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from ..atomic import write_atomic
from ..embedding.model import Embedder
from ..errors import ByakuganError, ModelError
from ..embedding.files import CONFIG_FILE
from .config import TrainConfig

# What a resumed run may change: how long, how fast, where it runs and keeps its cache (and its
# folder, moved or copied).
RESUMABLE = ("epochs", "lr", "backbone_lr", "early_lr", "device", "cache", "out")
OPTIMIZER = "optimizer.safetensors"


def run_settings(cfg: TrainConfig) -> dict:
    out = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}
    resolved = {k: [str(Path(d).resolve()) for d in out[k]] for k in ("data", "cohort_data") if out.get(k)}
    return out | resolved  # however the folders are spelt


def save_checkpoint(model: Embedder, opt: torch.optim.Optimizer, epoch: int, history: list, d: Path,
                    cfg: TrainConfig) -> None:
    d.mkdir(parents=True, exist_ok=True)
    # state.json goes last: a checkpoint is whole once it names its epoch.
    write_atomic(d / "model.safetensors", save_tensors({k: v.contiguous() for k, v in model.state_dict().items()}))
    write_atomic(d / OPTIMIZER, optimizer_bytes(opt))
    write_atomic(d / "state.json", json.dumps({"epoch": epoch, "history": history, "config": run_settings(cfg)}).encode())


def optimizer_bytes(opt: torch.optim.Optimizer) -> bytes:
    """The optimizer's state_dict as safetensors: tensor "INDEX.NAME" per parameter's state; the
    param_groups and any state that is not a tensor, JSON in the metadata."""
    sd = opt.state_dict()
    tensors, plain = {}, {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{name}"] = value
    return save_tensors(tensors, {"param_groups": json.dumps(sd["param_groups"]), "plain": json.dumps(plain)})


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        values = {k: f.get_tensor(k) for k in f.keys()} | json.loads(meta["plain"])
    state: dict[int, dict] = {}
    for key, value in values.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def check_state(state) -> None:
    """An epoch count its history matches, as save_checkpoint writes it: anything else was edited or damaged."""
    start, history = state["epoch"], state["history"]
    if isinstance(start, bool) or not isinstance(start, int) or start < 1 or not isinstance(history, list) \
            or len(history) != start or not all(isinstance(r, dict) for r in history):
        raise ValueError("state.json")


def check_resume(cfg: TrainConfig, ckpt: Path) -> None:
    """Before any work: a resumed run goes on with the settings it started with, and has epochs left."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        check_state(state)
    except Exception:  # damaged: resume() says so, naming the file
        return
    done, then = state["epoch"], state.get("config")
    now = json.loads(json.dumps(run_settings(cfg)))  # as stored: tuples are lists
    if isinstance(then, dict) and (changed := sorted(k for k in now if k in then and then[k] != now[k])):
        k = changed[0]
        raise ByakuganError(f"resume: the checkpoint's run was started with --{k.replace('_', '-')} {then[k]!r}, not "
                            f"{now[k]!r}; resume with its settings (only --epochs, --lr, --backbone-lr, --early-lr, "
                            "--device, --cache and the folder may change), or --overwrite to start over")
    # done == epochs with no model saved: a run stopped after its last epoch (a full disk at the save) is finished
    if done > cfg.epochs or done == cfg.epochs and (Path(cfg.out) / CONFIG_FILE).is_file():
        raise ByakuganError(f"resume: the checkpoint's run has done {done} epochs, and --epochs is {cfg.epochs}; "
                            "ask for more epochs to train on")


def resume(model: Embedder, opt: torch.optim.Optimizer, ckpt: Path) -> tuple[int, list]:
    """(epoch, history) of the checkpoint in `ckpt`, its weights loaded into model and opt."""
    if not (ckpt / OPTIMIZER).is_file() and (ckpt / "optimizer.pt").is_file():
        raise ModelError(f"checkpoint {ckpt}: written by an older byakugan (optimizer.pt, a pickle, which is not "
                         "loaded); leave out --resume to start over, or train into a new --out")
    name = "state.json"
    try:
        state = json.loads((ckpt / name).read_text())
        check_state(state)
        start, history = state["epoch"], state["history"]
        name = "model.safetensors"
        model.load_state_dict(load_file(str(ckpt / name)))
        name = OPTIMIZER
        load_optimizer(opt, ckpt / name)
    except Exception:  # safetensors, JSON and torch each raise their own types for a bad file
        why = "" if name == "state.json" else (", or made with other settings (--dim, --backbone, --taps, "
                                               "--colour-weight, --loss, --backbone-lr from 0 or to 0)")
        raise ModelError(f"checkpoint {ckpt / name}: damaged{why}; train into a new --out, or leave out --resume "
                         "to start over") from None
    return start, history
