"""``TrainConfig`` and how it is assembled for ``pipeline train``.

Precedence, lowest first: the dataclass defaults, the preset's training defaults
(``PRESET_TRAIN_DEFAULTS``), the ``train:`` section of the shards' run
(``<out>/manifest.lock.yaml``, written by ``pipeline run``), the ``train:`` section of an
explicit ``--config`` manifest, then the command-line flags the user actually passed.  Keys are
checked against the fields below (and ``model:`` keys against ``ModelConfig``); values are
coerced and type-checked by pydantic, so ``lr: 3e-4`` (a string to YAML 1.1) works and
``lr: fast`` is an error naming the file and the key."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.train import TrainError
from pipeline.train.model import ModelConfig

LOCK_FILE = "manifest.lock.yaml"

# Training defaults that come with a preset (below the manifest and the flags). `tiny` is the
# CPU preset: with a 32k vocabulary its output layer dominates the cost, so a CPU step is kept
# to ~2k tokens (200 steps in minutes, not an hour) with a higher learning rate and short warmup.
PRESET_TRAIN_DEFAULTS: dict[str, dict] = {
    "tiny": {"batch_size": 2, "lr": 3e-3, "warmup_steps": 20},
}
# Continued pretraining of a published model (init_from): the architecture is the checkpoint's,
# and a from-scratch learning rate would wreck what it learned: a small peak, short warmup.
INIT_FROM_TRAIN_DEFAULTS: dict = {"lr": 3e-5, "warmup_steps": 20, "batch_size": 4}


@dataclass
class TrainConfig:
    data: str  # the run's out dir (with tokens/) or the tokens dir
    out_dir: str
    preset: str = "tiny"
    model: dict = field(default_factory=dict)  # ModelConfig overrides
    seq_len: int | None = None  # T; default: the data's seq_len
    batch_size: int = 16  # micro-batch per process, sequences
    batch_tokens: int | None = None  # tokens per optimizer step, all processes (gradient accumulation); default one micro-batch each
    lr: float = 1e-3
    min_lr: float | None = None  # default lr / 10
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    max_steps: int | None = None
    max_tokens: int | None = None
    max_time: float | None = None  # seconds of this process
    eval_every: int = 100
    eval_tokens: int = 65536
    ckpt_every: int = 500
    seed: int = 0
    device: str = "auto"  # auto: cuda -> mps -> cpu
    resume: bool = False
    init_from: str | None = None  # continued pretraining: a Hugging Face model folder or hub id (Llama/Qwen/Mistral family)
    init_revision: str | None = None  # the hub revision (commit or tag) to fetch; required with a hub id
    gradient_checkpointing: bool = False  # recompute block activations in the backward pass: less memory, ~30% more time
    compile: bool | None = None  # torch.compile; None: on for CUDA, off elsewhere
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA GPUs that have it, float32 elsewhere; bf16; fp32
    tensorboard: bool | None = None  # None: when tensorboard is installed
    samples: int = 2  # default sample prompts (the start of validation windows); 0: no samples
    sample_prompts: list[str] | None = None  # explicit prompts instead
    sample_tokens: int = 32  # new tokens per sample
    sample_temperature: float = 0.8  # 0: greedy
    sample_top_k: int | None = 50

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


# What a train: section may set (where the data is and where the run goes are the command's job).
SECTION_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("data", "out_dir", "resume"))
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# nanoGPT / Hugging Face spellings people will type
MODEL_ALIASES = {
    "n_layer": "n_layers", "n_head": "n_heads", "n_embd": "dim", "d_model": "dim", "hidden_size": "dim",
    "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads", "intermediate_size": "ffn_dim",
    "block_size": "max_seq_len", "max_position_embeddings": "max_seq_len",
}


def _type_error(exc, where: str) -> TrainError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return TrainError(f"{loc}: {err['msg']} (got {err.get('input')!r})", where=where, hint="fix the value's type (numbers, true/false, lists)")


def model_overrides(raw: Any, where: str) -> dict:
    """``model:`` keys checked against ``ModelConfig`` (aliases mapped), values type-checked."""
    from pydantic import TypeAdapter, ValidationError

    if raw in (None, {}):
        return {}
    if not isinstance(raw, dict):
        raise TrainError(f"model must be a mapping of ModelConfig fields, got {type(raw).__name__}", where=where)
    out = {}
    for key, value in raw.items():
        name = MODEL_ALIASES.get(key, key)
        if name not in MODEL_KEYS:
            raise TrainError(f"unknown model key {key!r}", where=where, hint=f"use one of: {', '.join(MODEL_KEYS)}")
        out[name] = value
    hints = typing.get_type_hints(ModelConfig)
    for name, value in out.items():
        try:
            out[name] = TypeAdapter(hints[name]).validate_python(value)
        except ValidationError as exc:
            raise TrainError(f"model.{name}: {exc.errors()[0]['msg']} (got {value!r})", where=where, hint="give a number") from None
    return out


def parse_model_flags(items: list[str] | None) -> dict:
    """``--model KEY=VALUE`` flags; values are read as YAML scalars (``4``, ``1e-5``, ``true``)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--model {item!r} is not KEY=VALUE", where="--model", hint="e.g. --model n_layers=4")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return model_overrides(out, "--model")


def section(raw: Any, where: str) -> dict:
    """A ``train:`` mapping with its keys checked (values are checked when merged)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TrainError(f"train: must be a mapping, got {type(raw).__name__}", where=where)
    unknown = [k for k in raw if k not in SECTION_KEYS]
    if unknown:
        raise TrainError(f"unknown train key {unknown[0]!r}", where=f"{where} train.{unknown[0]}", hint=f"allowed keys: {', '.join(SECTION_KEYS)}")
    out = dict(raw)
    if "model" in out:
        out["model"] = model_overrides(out["model"], f"{where} train.model")
    return out


def read_section(path: Path, required: bool) -> dict:
    """The ``train:`` section of a manifest or lock file (``{}`` when it has none and ``required`` is false)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainError(f"cannot read the config: {exc.strerror or exc}", where=str(path), hint="pass a manifest YAML file with a train: section") from None
    except yaml.YAMLError as exc:
        raise TrainError(f"invalid YAML: {exc}", where=str(path)) from None
    if not isinstance(doc, dict):
        raise TrainError("not a YAML mapping", where=str(path), hint="a manifest is a mapping with a train: section")
    if required and "train" not in doc:
        raise TrainError("no train: section", where=str(path), hint="add train: {preset: ..., max_steps: ...} or drop --config")
    return section(doc.get("train"), str(path))


def run_lock(shards: str | Path) -> Path | None:
    """``manifest.lock.yaml`` of the run that wrote the shards, if there is one."""
    p = Path(shards)
    for cand in (p, p.parent) if p.name == "tokens" or (p / "index.json").is_file() else (p,):
        if (cand / LOCK_FILE).is_file():
            return cand / LOCK_FILE
    return None


SAVED_LAYER = "the checkpoint's own settings"


def saved_train(out_dir: str | Path) -> dict | None:
    """The train settings saved in ``out_dir/checkpoint/state.json`` (section keys only)."""
    path = Path(out_dir) / "checkpoint" / "state.json"
    try:
        train = json.loads(path.read_text(encoding="utf-8")).get("train") or {}
    except (OSError, ValueError, AttributeError):
        return None  # no or damaged checkpoint: train() says so with its own message
    return {k: v for k, v in train.items() if k in SECTION_KEYS and k != "model"}


def build_config(data: str | Path, out_dir: str | Path, *, config: str | Path | None = None, flags: dict | None = None, model_flags: list[str] | None = None) -> tuple[TrainConfig, list[str]]:
    """The effective TrainConfig and the files it was read from (lowest precedence first).
    ``flags`` holds only options the user passed (``None`` values are dropped)."""
    from pydantic import TypeAdapter, ValidationError

    layers: list[tuple[str, dict]] = []
    lock = run_lock(data)
    if lock is not None:
        layers.append((str(lock), read_section(lock, required=False)))
    if config is not None:
        layers.append((str(config), read_section(Path(config), required=True)))
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = [k for k in given if k not in SECTION_KEYS + ("resume",)]
    if unknown:  # a programming error in the caller, not user input
        raise TrainError(f"unknown train option {unknown[0]!r}", hint=f"allowed: {', '.join(SECTION_KEYS)}")
    model_cli = parse_model_flags(model_flags)
    saved = saved_train(out_dir) if given.get("resume") else None
    if saved:  # a resumed run keeps its own settings (learning rate, batch, init_from, ...); flags still win
        layers.append((SAVED_LAYER, saved))
    layers.append(("command line", {**given, **({"model": model_cli} if model_cli else {})}))

    merged: dict = {}
    origin: dict[str, str] = {}
    model: dict = {}
    chosen = next((v["preset"] for _, v in reversed(layers) if "preset" in v), TrainConfig.preset)
    init_from = next((v["init_from"] for _, v in reversed(layers) if v.get("init_from")), None)
    if init_from:
        shaped = [w for w, v in layers if w != SAVED_LAYER and (v.get("model") or "preset" in v)]
        if shaped:
            raise TrainError(f"init_from {init_from} fixes the architecture: preset / model settings cannot change it", where=shaped[0], hint="drop preset and model: (or drop init_from to train from scratch)")
        layers.insert(0, ("init_from defaults", INIT_FROM_TRAIN_DEFAULTS))
    else:
        layers.insert(0, (f"preset {chosen} defaults", PRESET_TRAIN_DEFAULTS.get(chosen, {})))
    for where, values in layers:
        for k, v in values.items():
            if k == "model":
                model.update(v)
            else:
                merged[k] = v
            origin[k] = where
    try:
        cfg = TypeAdapter(TrainConfig).validate_python({**merged, "model": model, "data": str(data), "out_dir": str(out_dir)})
    except ValidationError as exc:
        key = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        raise _type_error(exc, f"{origin.get(key, 'train config')} train.{key}") from None
    return cfg, [w for w, v in layers if v or w not in ("command line",) and not w.startswith("preset ")]  # files read (even empty sections), flags if any


def finetune_section(data: str | Path, config: str | Path | None = None) -> dict:
    """The ``finetune:`` defaults: the shards' run lock, then ``--config`` (later wins).
    Keys are checked by ``FinetuneConfig.from_dict``."""
    merged: dict = {}
    paths = [p for p in (run_lock(data), Path(config) if config else None) if p is not None]
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise TrainError(f"cannot read the finetune: section: {exc}", where=str(path)) from None
        raw = (doc or {}).get("finetune") if isinstance(doc, dict) else None
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise TrainError(f"finetune: must be a mapping, got {type(raw).__name__}", where=f"{path} finetune")
        merged.update(raw)
    return merged

