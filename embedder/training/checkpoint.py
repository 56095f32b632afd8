"""A training run's checkpoint (OUT/checkpoint): the weights, the optimizer's state and the run's
settings after each epoch, so that `byakugan train --resume` goes on where a run stopped.

Everything is safetensors or JSON: no pickle is written or read (the optimizer's tensors in
optimizer.safetensors, its settings in that file's metadata).
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
    # --backbone-lr may change, but not to or from 0 (the optimizer's groups differ): said apart
    out |= {"fine_tunes": cfg.backbone_lr > 0, "head_epochs": cfg.head_rounds() if cfg.backbone_lr > 0 else None}
    resolved = {k: [str(Path(d).resolve()) for d in out[k]] for k in ("data", "cohort_data") if out.get(k)}
    return out | resolved  # however the folders are spelt


def save_checkpoint(model: Embedder, opt: torch.optim.Optimizer, epoch: int, history: list, d: Path,
                    cfg: TrainConfig) -> None:
    d.mkdir(parents=True, exist_ok=True)
    # state.json goes last: a checkpoint is whole once it names its epoch.
    write_atomic(d / "model.safetensors", save_tensors({k: v.contiguous() for k, v in model.state_dict().items()}))
    write_atomic(d / OPTIMIZER, optimizer_bytes(opt))
    (d / "optimizer.pt").unlink(missing_ok=True)  # an older byakugan's pickle, never read: not left beside it
    write_atomic(d / "state.json", json.dumps({"epoch": epoch, "history": history, "config": run_settings(cfg)}).encode())


def optimizer_bytes(opt: torch.optim.Optimizer) -> bytes:
    """The optimizer's state_dict as safetensors: tensor "INDEX.NAME" per parameter's state (AdamW's
    step, exp_avg and exp_avg_sq are all tensors); the param_groups, JSON in the metadata."""
    sd = opt.state_dict()
    tensors = {f"{index}.{name}": value.detach().cpu().contiguous()
               for index, state in sd["state"].items() for name, value in state.items()}
    return save_tensors(tensors, {"param_groups": json.dumps(sd["param_groups"])})


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    """Raises ValueError for a state this run's optimizer would not have made (an edited file would
    otherwise fail part-way through an epoch)."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        values = {k: f.get_tensor(k) for k in f.keys()}
    groups = json.loads(meta["param_groups"])
    mine = json.loads(json.dumps(opt.state_dict()["param_groups"]))  # as stored: tuples are lists
    if len(groups) != len(mine) or any({k: v for k, v in g.items() if k != "lr"} != {k: v for k, v in m.items() if k != "lr"}
                                       for g, m in zip(groups, mine)):
        raise ValueError("param_groups")
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, value in values.items():
        index, name = key.split(".", 1)
        if not 0 <= int(index) < len(params) or not torch.is_tensor(value) or not torch.isfinite(value).all() \
                or value.shape != (params[int(index)].shape if name in ("exp_avg", "exp_avg_sq") else ()):
            raise ValueError(key)
        state.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


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
    if isinstance(then, dict) and then.get("fine_tunes", now["fine_tunes"]) != now["fine_tunes"]:
        raise ByakuganError("resume: the checkpoint's run " + ("fine-tuned the backbone; resume with a --backbone-lr above 0"
                            if then["fine_tunes"] else "kept the backbone frozen; resume without --backbone-lr (or 0)")
                            + ", or --overwrite to start over")
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
                         "loaded); --overwrite to start over, or train into a new --out")
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
                                               "--colour-weight, --loss)")
        raise ModelError(f"checkpoint {ckpt / name}: damaged{why}; train into a new --out, or --overwrite "
                         "to start over") from None
    return start, history
