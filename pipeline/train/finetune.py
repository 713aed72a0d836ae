"""Fine-tuning a pretrained checkpoint: ``finetune(FinetuneConfig) -> dict``.

Two tasks, on the examples the ``finetune_data`` stage wrote (``<out>/finetune``):

* ``classification``: the pretrained transformer's final hidden states (embedding, blocks,
  final norm: the model's own modules, without the LM head), pooled over the real tokens
  (``mean``) or taken at the last one (``last``: the EOS), then a linear head and cross-entropy.
  The checkpoint with the best validation macro F1 is kept; the test split is scored with
  accuracy, macro precision / recall / F1, per-class scores, the confusion matrix and the
  majority-class baseline (the most frequent training label).
* ``sft``: causal LM loss on the response tokens only (``loss_mask``, shifted with the targets);
  validation and test loss / perplexity on response tokens before and after.

Batches are padded per batch (right padding: with causal attention no real token sees a pad),
drawn in a seeded order from length-sorted chunks. The base checkpoint is read with
safetensors and its tokenizer hash, vocabulary and context are checked against the examples
before anything trains.

``out_dir/finetune/``::

    model.safetensors   the fine-tuned transformer, native names (loadable like a pretraining checkpoint)
    head.safetensors    classification: head.weight, head.bias
    state.json          model config, data identity, task, labels, pooling, base checkpoint sha256, config
    metrics.jsonl       per step (loss, lr) and per evaluation
    metrics.json        the scores (what ``finetune`` returns)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.common.storage import file_digests
from pipeline.train import TrainError, hf_import
from pipeline.train.loop import pick_device, use_bf16_for
from pipeline.train.model import ModelConfig, Transformer, padded_vocab

TASKS = ("classification", "sft")
POOLINGS = ("mean", "last")
SPLITS = ("train", "validation", "test")
INDEX_FORMAT = "grist.finetune/1"


@dataclass
class FinetuneConfig:
    data: str  # a run's out dir (with finetune/) or the finetune dir
    init_from: str  # a pretraining run dir (with checkpoint/) or a checkpoint dir
    out_dir: str
    task: str | None = None  # classification | sft; default: the data's
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 3e-4  # 1e-4 barely moves the small presets in 3 epochs (see docs/training.md)
    head_lr: float | None = None  # classification head; default lr
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # default: 6% of the steps
    eval_every: int | None = None  # steps; default: at the end of each epoch
    grad_clip: float = 1.0
    dropout: float = 0.1  # on the pooled features (classification)
    device: str = "auto"
    seed: int = 0
    pooling: str = "mean"  # mean | last
    freeze_base: bool = False  # train the head only (classification)
    init_revision: str | None = None  # the hub revision when init_from is a hub id
    patience: int | None = None  # early stopping: evaluations without a better validation score before stopping
    gradient_checkpointing: bool = False  # recompute block activations in the backward pass (memory for time)
    lora: bool = False  # train LoRA adapters (peft) instead of all base weights; merged before saving
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0  # peft keeps a dropped-out copy of every adapted input for backward: +0.75 GB at 98M params, batch 4x256 (docs/training.md)
    lora_targets: list[str] | None = None  # default: every attention and MLP projection

    def __post_init__(self):
        bad = []
        if self.task is not None and self.task not in TASKS:
            bad.append(f"task {self.task!r} (use {' or '.join(TASKS)})")
        if self.pooling not in POOLINGS:
            bad.append(f"pooling {self.pooling!r} (use {' or '.join(POOLINGS)})")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad.append(f"{name} {getattr(self, name)!r} (a positive integer)")
        for name in ("max_steps", "eval_every", "warmup_steps", "patience"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 0):
                bad.append(f"{name} {v!r} (a non-negative integer)")
        if not self.lr > 0 or (self.head_lr is not None and not self.head_lr > 0):
            bad.append("lr / head_lr must be > 0")
        if self.patience == 0:
            bad.append("patience 0 (at least 1 evaluation; leave it unset for no early stopping)")
        if not isinstance(self.lora_r, int) or self.lora_r < 1:
            bad.append(f"lora_r {self.lora_r!r} (a positive integer)")
        if self.lora and self.freeze_base:
            bad.append("lora with freeze_base (pick one: adapters or the head only)")
        if not 0 <= self.dropout < 1:
            bad.append(f"dropout {self.dropout!r} (0 <= dropout < 1)")
        if bad:
            raise TrainError("invalid fine-tuning settings: " + "; ".join(bad), where="finetune", hint="fix the values named above")

    @classmethod
    def from_dict(cls, d: dict, where: str = "finetune") -> "FinetuneConfig":
        """Build from a mapping (a manifest's ``finetune:`` section); unknown keys are an error."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise TrainError(f"unknown fine-tuning setting(s): {', '.join(unknown)}", where=where, hint=f"allowed: {', '.join(names)}")
        missing = [n for n in ("data", "init_from", "out_dir") if d.get(n) in (None, "")]
        if missing:
            raise TrainError(f"missing fine-tuning setting(s): {', '.join(missing)}", where=where, hint="data: the run with finetune/, init_from: the pretraining run, out_dir: where to write")
        return cls(**d)


# -------------------------------------------------------------------------------------- data
def find_finetune_dir(path: str | Path) -> Path:
    p = Path(path)
    for cand in (p, p / "finetune"):
        if (cand / "index.json").is_file():
            try:
                index = json.loads((cand / "index.json").read_text(encoding="utf-8"))
            except ValueError:
                index = {}
            if index.get("format") == INDEX_FORMAT:
                return cand
    raise TrainError("no fine-tuning examples here (finetune/index.json not found)", where=str(p), hint="pass the output folder of `pipeline run` with a finetune_data stage, or its finetune/ folder")


@dataclass
class Split:
    ids: list[str]
    examples: list[np.ndarray]  # int64 token ids per example
    labels: np.ndarray | None  # classification
    masks: list[np.ndarray] | None  # sft: 1 where the token is a response token (has loss)

    def __len__(self) -> int:
        return len(self.examples)


def read_split(ft_dir: Path, index: dict, split: str) -> Split:
    info = index["splits"].get(split)
    if info is None:
        raise TrainError(f"split {split!r} not in index.json", where=str(ft_dir / "index.json"), hint="re-run the finetune_data stage")
    path = ft_dir / info["file"]
    if not path.is_file():
        raise TrainError("example file missing", where=str(path), hint="the finetune folder is incomplete: re-run `pipeline run`")
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise TrainError(f"cannot read the examples ({exc})", where=str(path), hint="re-run `pipeline run` to rewrite them") from exc

    def lists(col: str, dtype) -> list[np.ndarray]:
        arr = table[col].combine_chunks() if table.num_rows else pa.array([], table.schema.field(col).type)
        values = arr.values.to_numpy(zero_copy_only=False).astype(dtype)
        offsets = arr.offsets.to_numpy()
        return [values[offsets[i] - offsets[0] : offsets[i + 1] - offsets[0]] for i in range(len(arr))]

    ids = table["id"].to_pylist()
    examples = lists("input_ids", np.int64)
    if index["task"] == "classification":
        return Split(ids, examples, table["label"].to_numpy(zero_copy_only=False).astype(np.int64), None)
    return Split(ids, examples, None, lists("loss_mask", np.int8))


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index batches. Training (``rng``): a seeded permutation cut into chunks of 50 batches, each
    sorted by length (little padding), and the batches shuffled. Evaluation: by length."""
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[a : a + batch_size] for a in range(0, n, batch_size)]
    perm = rng.permutation(n)
    chunk = 50 * batch_size
    batches = []
    for a in range(0, n, chunk):
        part = perm[a : a + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[b : b + batch_size] for b in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(examples: list[np.ndarray], pad_id: int, masks: list[np.ndarray] | None = None):
    """Right-padded ``[B, T]`` ids and the lengths; with ``masks`` (SFT) the shifted pair
    ``(inputs, targets, weights)``: ``weights[b, t]`` is 1 iff target ``t`` (= token ``t + 1``) is
    a response token, so instruction tokens and padding carry no loss."""
    lengths = torch.tensor([len(e) for e in examples], dtype=torch.long)
    T = int(lengths.max())
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    for b, e in enumerate(examples):
        ids[b, : len(e)] = torch.from_numpy(np.asarray(e, dtype=np.int64))
    if masks is None:
        return ids, lengths
    weights = torch.zeros((len(examples), T), dtype=torch.float32)
    for b, m in enumerate(masks):
        weights[b, : len(m)] = torch.from_numpy(np.asarray(m, dtype=np.float32))
    return ids[:, :-1], ids[:, 1:], weights[:, 1:]


# ------------------------------------------------------------------------------------ checkpoint
def load_published(init_from: str, revision: str | None) -> tuple[Transformer, dict, Path]:
    """A published Hugging Face model (folder or hub id) as a base: the model, a state record
    like a checkpoint's (with ``init_from``: origin, tokenizer files) and its folder."""
    model, origin, folder = hf_import.load_published(init_from, revision)
    tok_files = {n: d for n, d in origin["files"].items() if n in hf_import.TOKEN_FILES or n in ("tokenizer_config.json", "special_tokens_map.json")}
    state = {"step": 0, "model": dataclasses.asdict(model.cfg), "init_from": origin, "data": {"tokenizer_dir": str(folder), "tokenizer_files": tok_files}}
    return model, state, folder


def load_base(path: str | Path, revision: str | None = None) -> tuple[Transformer, dict, Path]:
    """The pretrained model (safetensors, no pickle), its state.json and the checkpoint folder:
    a pretraining run, its checkpoint/, a fine-tuning out, or a published Hugging Face model
    (folder or hub id). A missing, truncated or inconsistent checkpoint is a TrainError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = Path(path)
    if (ckpt / "checkpoint").is_dir():
        ckpt = ckpt / "checkpoint"
    if not (ckpt / "state.json").is_file() and ((ckpt / "config.json").is_file() or not ckpt.exists()):
        return load_published(str(path), revision)
    state_path, weights_path = ckpt / "state.json", ckpt / "model.safetensors"
    if not state_path.is_file() or not weights_path.is_file():
        raise TrainError("no checkpoint here (state.json + model.safetensors)", where=str(ckpt), hint="--init-from: a pretraining run dir (pipeline train --out) or its checkpoint/ folder, or a Hugging Face model folder (config.json + safetensors)")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        cfg = ModelConfig(**state["model"]).validate()
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"corrupt checkpoint state ({type(exc).__name__}: {exc})", where=str(state_path), hint="restore the checkpoint folder or pretrain again") from exc
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TrainError(f"corrupt checkpoint weights ({exc})", where=str(weights_path), hint="the file is truncated or not safetensors: restore it or pretrain again") from exc
    model = Transformer(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise TrainError(f"the weights do not fit the model in state.json ({str(exc).splitlines()[0]} ...)", where=str(weights_path), hint="state.json and model.safetensors come from different runs: restore the checkpoint folder") from exc
    return model, state, ckpt


def check_compatible(state: dict, index: dict, ckpt: Path, ft_dir: Path) -> None:
    """The examples must be in the checkpoint's token space and fit its context."""
    where = f"{ckpt} vs {ft_dir}"
    origin = state.get("init_from")
    if origin:  # a published model: the examples must come from its own tokenizer files
        tok = index.get("tokenizer") or {}
        why = hf_import.tokenizer_mismatch(origin["files"], tok.get("files") or {}, state["model"]["vocab_size"], index.get("vocab_size"))
        if why:
            raise TrainError(f"these examples cannot train {origin['source']}: {why}", where=where, hint=f"make them with the model's tokenizer: finetune_data params tokenizer_path: {origin['source']}")
        _check_length(state, index, where)
        return
    ck_tok = (state.get("data") or {}).get("tokenizer")
    ft_tok = (index.get("tokenizer") or {}).get("sha256")
    if ck_tok != ft_tok:
        raise TrainError(
            f"tokenizer mismatch: the checkpoint was pretrained with tokenizer {ck_tok}, the fine-tuning examples were made with {ft_tok}",
            where=where,
            hint="token ids would mean different things: run finetune_data with the pretraining run's tokenize node (or tokenizer_path: <pretraining out>/tokenizer)",
        )
    vocab = state["model"]["vocab_size"]
    tok_vocab = index.get("vocab_size")
    if tok_vocab is None or (tok_vocab != vocab and padded_vocab(tok_vocab) != vocab):  # models pad to a multiple of 64
        raise TrainError(f"vocabulary mismatch: the checkpoint has {vocab} tokens, the examples' tokenizer {index.get('vocab_size')}", where=where, hint="use the pretraining run's tokenizer")
    _check_length(state, index, where)


def _check_length(state: dict, index: dict, where: str) -> None:
    ctx = state["model"]["max_seq_len"]
    if index["max_len"] > ctx:
        raise TrainError(
            f"seq_len mismatch: examples of up to {index['max_len']} tokens (finetune_data max_len), the checkpoint's context is {ctx}",
            where=where,
            hint=f"re-run finetune_data with max_len <= {ctx}",
        )


# ---------------------------------------------------------------------------------------- model
def hidden_states(model: Transformer, idx: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states ``[B, T, dim]``: Transformer.forward without the tied LM head."""
    return model.hidden(idx)


class Classifier(nn.Module):
    def __init__(self, base: Transformer, n_labels: int, pooling: str = "mean", dropout: float = 0.0):
        super().__init__()
        self.base, self.pooling = base, pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(base.cfg.dim, n_labels)
        nn.init.normal_(self.head.weight, std=base.cfg.init_std)
        nn.init.zeros_(self.head.bias)

    def pooled(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = hidden_states(self.base, idx)
        if self.pooling == "last":
            return h[torch.arange(h.shape[0], device=h.device), lengths - 1]
        mask = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]).to(h.dtype)
        return (h * mask[..., None]).sum(1) / lengths[:, None].to(h.dtype)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(idx, lengths)))


# -------------------------------------------------------------------------------------- metrics
def classification_scores(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, macro precision / recall / F1 (over the labels present in y_true or y_pred, as
    scikit-learn's default; 0 where undefined), per-class scores, confusion matrix (rows true)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    K = len(labels)
    cm = np.zeros((K, K), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    pred_n, true_n = cm.sum(0).astype(float), cm.sum(1).astype(float)
    precision = np.divide(tp, pred_n, out=np.zeros(K), where=pred_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros(K), where=true_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(K), where=denom > 0)
    present = (pred_n + true_n) > 0
    n = len(y_true)
    return {
        "examples": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {labels[k]: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]), "support": int(true_n[k])} for k in range(K)},
        "confusion_matrix": {"labels": list(labels), "rows": "true", "columns": "predicted", "matrix": cm.tolist()},
    }


# ------------------------------------------------------------------------------------ training
def _schedule(step: int, warmup: int, total: int, lr: float) -> float:
    """Linear warmup, then linear decay to 0 at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (total - step) / max(1, total - warmup))


@torch.no_grad()
def predict(model: Classifier, split: Split, batch_size: int, pad_id: int, device, autocast=contextlib.nullcontext) -> np.ndarray:
    model.eval()
    out = np.zeros(len(split), dtype=np.int64)
    for idx in batch_order(np.array([len(e) for e in split.examples]), batch_size, None):
        x, lengths = collate([split.examples[i] for i in idx], pad_id)
        with autocast():
            out[idx] = model(x.to(device), lengths.to(device)).float().argmax(-1).cpu().numpy()
    return out


def lm_loss(model: Transformer, x, y, w) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss over weighted targets, number of weighted targets)."""
    logits = model(x)
    per = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
    n = w.sum()
    return (per * w.reshape(-1)).sum() / n.clamp(min=1), n


@torch.no_grad()
def response_loss(model: Transformer, split: Split, batch_size: int, pad_id: int, device, autocast=contextlib.nullcontext) -> dict:
    model.eval()
    total, count = 0.0, 0.0
    for idx in batch_order(np.array([len(e) for e in split.examples]), batch_size, None):
        x, y, w = collate([split.examples[i] for i in idx], pad_id, [split.masks[i] for i in idx])
        with autocast():
            loss, n = lm_loss(model, x.to(device), y.to(device), w.to(device))
        total += loss.item() * n.item()
        count += n.item()
    val = total / count if count else float("nan")
    return {"loss": val, "ppl": math.exp(min(val, 50.0)) if count else float("nan"), "tokens": int(count)}


def finetune(config: FinetuneConfig | dict, on_step=None, progress: bool = False) -> dict:
    """Fine-tune; return the scores (also ``out_dir/finetune/metrics.json``). ``on_step(record)``
    is called after each optimizer step; ``progress`` shows a rich progress bar with the loss."""
    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(config)
    ft_dir = find_finetune_dir(cfg.data)
    index = json.loads((ft_dir / "index.json").read_text(encoding="utf-8"))
    task = index["task"]
    if cfg.task is not None and cfg.task != task:
        raise TrainError(f"task mismatch: asked for {cfg.task}, the examples are for {task}", where=str(ft_dir / "index.json"), hint=f"use --finetune {task}, or point --shards at {cfg.task} examples")
    base, state, ckpt = load_base(cfg.init_from, cfg.init_revision)
    check_compatible(state, index, ckpt, ft_dir)
    splits = {s: read_split(ft_dir, index, s) for s in SPLITS}
    if not len(splits["train"]):
        raise TrainError("no training examples", where=str(ft_dir), hint="add labeled documents or lower test_fraction / validation_fraction")
    if not len(splits["test"]):
        raise TrainError("no test examples: nothing to score on", where=str(ft_dir), hint="raise finetune_data's test_fraction")
    labels = index["labels"]
    pad_id = int(index["eos_id"])

    out = Path(cfg.out_dir) / "finetune"
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    base.grad_checkpointing = cfg.gradient_checkpointing
    if cfg.lora:
        from pipeline.train import lora

        lora.apply(base, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    model: nn.Module = Classifier(base, len(labels), cfg.pooling, cfg.dropout) if task == "classification" else base
    model.to(device)
    if cfg.freeze_base:
        base.requires_grad_(False)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_params = sum(p.numel() for p in model.parameters())

    head_params = list(model.head.parameters()) if task == "classification" else []
    base_params = [p for p in base.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in base_params if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": [p for p in base_params if p.dim() < 2], "weight_decay": 0.0, "lr": cfg.lr},
        {"params": head_params, "weight_decay": 0.0, "lr": cfg.head_lr or cfg.lr},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["peak_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), fused=device.type == "cuda")
    bf16 = use_bf16_for("auto", device)  # as pretraining: bf16 autocast on GPUs that have it
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    train = splits["train"]
    lengths = np.array([len(e) for e in train.examples])
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.06 * total))
    has_val = len(splits["validation"]) > 0
    if cfg.patience is not None and not has_val:
        raise TrainError("patience (early stopping) needs a validation split, and these examples have none", where=str(ft_dir), hint="raise finetune_data's validation_fraction, or drop patience")

    def evaluate(split: str) -> dict:
        if task == "classification":
            pred = predict(model, splits[split], cfg.batch_size, pad_id, device, autocast)
            model.train()
            return classification_scores(splits[split].labels, pred, labels)
        res = response_loss(base, splits[split], cfg.batch_size, pad_id, device, autocast)
        model.train()
        return res

    def better(a: dict, b: dict | None) -> bool:
        if b is None:
            return True
        return a["macro_f1"] > b["macro_f1"] if task == "classification" else a["loss"] < b["loss"]

    before = {s: evaluate(s) for s in ("validation", "test") if len(splits[s])} if task == "sft" else {}
    (out / "metrics.jsonl").write_text("", encoding="utf-8")
    best, best_step, best_state = None, 0, None
    since_best, early_stop = 0, False  # evaluations without improvement (patience)
    step, epoch = 0, 0
    train_seconds, train_examples, train_tokens = 0.0, 0, 0  # the optimizer steps alone (no evaluation)
    t0 = time.time()
    bar = _Progress(total, enabled=progress)
    model.train()
    with (out / "metrics.jsonl").open("a", encoding="utf-8") as log, bar:
        def emit(rec: dict) -> None:
            log.write(json.dumps(rec) + "\n")
            log.flush()

        def checkpoint_eval() -> None:
            nonlocal best, best_step, best_state, since_best, early_stop
            if not has_val:
                return
            res = evaluate("validation")
            rec = {"step": step, "epoch": epoch, **({"val_accuracy": res["accuracy"], "val_macro_f1": res["macro_f1"]} if task == "classification" else {"val_loss": res["loss"], "val_ppl": res["ppl"]})}
            emit(rec)
            if better(res, best):
                best, best_step, since_best = res, step, 0
                # with LoRA only the adapters (and head) change: keep those, not a copy of the whole model
                keep = {k: v for k, v in model.state_dict().items() if not cfg.lora or "lora_" in k or k.startswith("head.")}
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in keep.items()})
            else:
                since_best += 1
                early_stop = cfg.patience is not None and since_best >= cfg.patience

        while step < total and not early_stop:
            for idx in batch_order(lengths, cfg.batch_size, rng):
                if step >= total or early_stop:
                    break
                t_step = time.time()
                for g in opt.param_groups:
                    g["lr"] = _schedule(step, warmup, total, g["peak_lr"])
                if task == "classification":
                    x, lens = collate([train.examples[i] for i in idx], pad_id)
                    y = torch.from_numpy(train.labels[idx]).to(device)
                    with autocast():
                        logits = model(x.to(device), lens.to(device))
                    loss = F.cross_entropy(logits.float(), y)
                else:
                    x, y, w = collate([train.examples[i] for i in idx], pad_id, [train.masks[i] for i in idx])
                    with autocast():
                        loss, _ = lm_loss(base, x.to(device), y.to(device), w.to(device))
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                rec = {"step": step, "epoch": epoch, "loss": loss.item(), "lr": opt.param_groups[0]["lr"]}  # .item() waits for the step
                train_seconds += time.time() - t_step
                train_examples += len(idx)
                train_tokens += x.numel()
                emit(rec)
                bar.update(step, rec["loss"])
                if on_step is not None:
                    on_step(rec)
                if cfg.eval_every and step % cfg.eval_every == 0:
                    checkpoint_eval()
            epoch += 1
            if not cfg.eval_every and not early_stop:
                checkpoint_eval()
        if cfg.eval_every and step % cfg.eval_every and not early_stop:
            checkpoint_eval()
    if best_state is not None:
        model.load_state_dict(best_state, strict=not cfg.lora)
    if cfg.lora:
        from pipeline.train import lora

        lora.merge(base)
    seconds = time.time() - t0

    summary = {
        "task": task,
        "steps": step,
        "epochs": round(step / steps_per_epoch, 3),
        "selected_step": best_step if best_state is not None else step,
        "selection": ("best validation macro F1" if task == "classification" else "best validation loss") if best_state is not None else "last step (no validation split)",
        "stopped": f"early stopping (patience {cfg.patience})" if early_stop else ("max_steps" if cfg.max_steps is not None and step >= cfg.max_steps else "epochs"),
        "parameters": {"total": n_params, "trainable": n_trainable, "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "targets": cfg.lora_targets or "all projections"} if cfg.lora else None, "gradient_checkpointing": cfg.gradient_checkpointing},
        "seconds": round(seconds, 2),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "bf16": bf16,
        "throughput": {"examples_per_s": train_examples / max(train_seconds, 1e-9), "tokens_per_s": train_tokens / max(train_seconds, 1e-9), "train_seconds": round(train_seconds, 2), "tokens": "padded batch tokens"},
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "examples": {s: len(splits[s]) for s in SPLITS},
        "base": _base_record(ckpt, state),
        **({"base_model": hf_import.base_model_facts(state["init_from"])} if state.get("init_from") else {}),
    }
    if task == "classification":
        train_counts = np.bincount(train.labels, minlength=len(labels))
        majority = int(train_counts.argmax())
        test = splits["test"]
        summary.update(
            labels=labels,
            pooling=cfg.pooling,
            test=evaluate("test"),
            validation=best,
            baseline={"rule": f"always {labels[majority]!r} (the most frequent training label)", **{k: v for k, v in classification_scores(test.labels, np.full(len(test), majority), labels).items() if k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")}},
        )
    else:
        summary.update(before=before, after={s: evaluate(s) for s in before})
    _save(out, model, base, state, ckpt, index, ft_dir, cfg, summary)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _base_record(ckpt: Path, state: dict) -> dict:
    origin = state.get("init_from")
    if origin and (ckpt / "config.json").is_file() and not (ckpt / "state.json").is_file():  # a published model
        from pipeline.text.tokenizer import dir_sha256

        return {"checkpoint": origin["source"], "revision": origin.get("commit") or origin.get("revision"), "sha256": dir_sha256(origin["files"]), "step": None, "published": True}
    return {"checkpoint": str(ckpt), "sha256": file_digests(ckpt / "model.safetensors")["sha256"], "step": state.get("step")}


def _save(out: Path, model: nn.Module, base: Transformer, state: dict, ckpt: Path, index: dict, ft_dir: Path, cfg: FinetuneConfig, summary: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().float().contiguous().cpu() for k, v in base.state_dict().items()}, str(out / "model.safetensors"))
    if isinstance(model, Classifier):
        save_file({f"head.{k}": v.detach().float().contiguous().cpu() for k, v in model.head.state_dict().items()}, str(out / "head.safetensors"))
    new_state = {
        "step": summary["steps"],
        "T": index["max_len"],
        "model": dataclasses.asdict(base.cfg),
        "init_from": state.get("init_from"),
        "data": {**(state.get("data") or {}), "finetune_dir": str(ft_dir)},
        "finetune": {
            "task": summary["task"],
            "labels": index["labels"],
            "pooling": cfg.pooling if summary["task"] == "classification" else None,
            "max_len": index["max_len"],
            "eos_id": index["eos_id"],
            "bos_id": index.get("bos_id"),
            "base_checkpoint": summary["base"],
            "config": dataclasses.asdict(cfg),
        },
    }
    (out / "state.json").write_text(json.dumps(new_state, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_classifier(path: str | Path) -> tuple[Classifier, dict]:
    """A fine-tuned classifier (``out_dir`` or ``out_dir/finetune``) and its state, for inference."""
    from safetensors.torch import load_file

    folder = Path(path)
    folder = folder / "finetune" if (folder / "finetune" / "state.json").is_file() else folder
    base, state, _ = load_base(folder)
    info = state.get("finetune") or {}
    if info.get("task") != "classification" or not (folder / "head.safetensors").is_file():
        raise TrainError("not a fine-tuned classifier (state.json finetune.task / head.safetensors)", where=str(folder), hint="pass the out_dir of a classification fine-tuning")
    model = Classifier(base, len(info["labels"]), info.get("pooling") or "mean")
    try:
        model.head.load_state_dict({k.removeprefix("head."): v for k, v in load_file(str(folder / "head.safetensors")).items()})
    except Exception as exc:  # safetensors and torch raise several types for a damaged file
        raise TrainError(f"corrupt classification head ({exc})", where=str(folder / "head.safetensors"), hint="fine-tune again") from exc
    return model.eval(), state


class _Progress:
    """A rich progress bar with the running loss; a no-op when disabled (tests, pipes)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self._bar = total, enabled, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("steps", total=self.total, loss="-")
        return self

    def update(self, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}")

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
