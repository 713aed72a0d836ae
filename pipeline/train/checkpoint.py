"""Checkpoints: a folder with ``model.safetensors`` (weights), ``optimizer.pt`` (loaded with
``weights_only=True``) and ``state.json`` (step, model config, data position), replaced
atomically; ``load_native`` rebuilds a ``Transformer`` from one."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from pipeline.train import TrainError
from pipeline.train.model import ModelConfig, Transformer


def save_checkpoint(out: Path, model: Transformer, opt: torch.optim.Optimizer, state: dict) -> None:
    """``model`` is the plain module (never the compiled or DDP wrapper), so the names carry no
    ``_orig_mod.`` / ``module.`` prefix and load into a fresh ``Transformer``."""
    from safetensors.torch import save_file

    final = out / "checkpoint"
    tmp = out / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    old = out / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, optimizer: bool = True) -> tuple[dict, dict, dict | None]:
    """(state, weights, optimizer state or None) from a checkpoint folder; a missing or
    unreadable file is a ``TrainError`` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    names = ("state.json", "model.safetensors") + (("optimizer.pt",) if optimizer else ())
    files = [path / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TrainError("checkpoint incomplete", where=", ".join(missing), hint="start without resume, or restore the checkpoint folder")
    hint = "the checkpoint is damaged: restore it from a copy, or start a new run without --resume"
    try:
        state = json.loads(files[0].read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not {"step", "model", "data"} <= set(state):
            raise ValueError("missing step/model/data")
    except (OSError, ValueError) as exc:
        raise TrainError(f"corrupt checkpoint state ({exc})", where=str(files[0]), hint=hint) from None
    try:
        weights = load_file(str(files[1]))
    except (SafetensorError, OSError) as exc:
        raise TrainError(f"corrupt checkpoint weights ({exc})", where=str(files[1]), hint=hint) from None
    opt_state = None
    if optimizer:
        try:
            opt_state = torch.load(files[2], map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise TrainError(f"corrupt optimizer state ({type(exc).__name__}: {str(exc)[:200]})", where=str(files[2]), hint=hint) from None
    return state, weights, opt_state


def load_native(checkpoint: str | Path) -> tuple[Transformer, dict]:
    ckpt = Path(checkpoint)
    if (ckpt / "checkpoint").is_dir():  # a training out_dir
        ckpt = ckpt / "checkpoint"
    if not (ckpt / "state.json").is_file() or not (ckpt / "model.safetensors").is_file():
        raise TrainError("no checkpoint here (state.json + model.safetensors)", where=str(ckpt), hint="pass a training out_dir or its checkpoint/ folder")
    state, weights, _ = load_checkpoint(ckpt, optimizer=False)
    model = Transformer(ModelConfig(**state["model"]))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise TrainError(f"the weights do not fit the model recorded in state.json ({str(exc)[:300]})", where=str(ckpt), hint="restore the checkpoint folder as a whole") from None
    return model.eval(), state
