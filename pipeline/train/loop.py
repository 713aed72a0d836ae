"""The training loop: ``train(TrainConfig) -> dict``.

AdamW (fused on CUDA), linear warmup then cosine decay to ``min_lr``, gradient accumulation up
to ``batch_tokens`` per optimizer step, gradient clipping, bf16 autocast on CUDA, a fixed
validation budget every ``eval_every`` steps, checkpoints every ``ckpt_every`` steps, at the end
and on SIGINT/SIGTERM.  ``resume=True`` restores weights, optimizer and data position, so the run
continues with the same batches and the same losses as an uninterrupted one.

``out_dir`` layout::

    checkpoint/model.safetensors   weights (float32)
    checkpoint/optimizer.pt        AdamW state (torch.save, loaded with weights_only=True)
    checkpoint/state.json          step, tokens, data position, model + train config, data identity
    metrics.jsonl                  one line per step (loss, lr, tokens/s, mfu on CUDA) and per eval
    metrics.json                   the summary returned by train()
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.train import TrainError
from pipeline.train.data import Batches, TokenStream, eval_batches, find_tokens_dir, tokenizer_hash, vocab_size
from pipeline.train.model import ModelConfig, Transformer, preset

# Dense bf16 peak, FLOP/s, by device name substring (first match wins).
PEAK_BF16 = [("H200", 989e12), ("H100", 989e12), ("A100", 312e12)]


@dataclass
class TrainConfig:
    data: str  # the run's out dir (with tokens/) or the tokens dir
    out_dir: str
    preset: str = "tiny"
    model: dict = field(default_factory=dict)  # ModelConfig overrides
    seq_len: int | None = None  # T; default: the data's seq_len
    batch_size: int = 16  # micro-batch, sequences
    batch_tokens: int | None = None  # tokens per optimizer step (gradient accumulation); default one micro-batch
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

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16 if k in name), None)


def lr_at(step: int, cfg: TrainConfig, horizon: int | None) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if not horizon or horizon <= cfg.warmup_steps:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / (horizon - cfg.warmup_steps))
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


# ---------------------------------------------------------------------------------- checkpoints
def save_checkpoint(out: Path, model: Transformer, opt: torch.optim.Optimizer, state: dict) -> None:
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


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(state, weights, optimizer state) from a checkpoint folder."""
    from safetensors.torch import load_file

    files = [path / n for n in ("state.json", "model.safetensors", "optimizer.pt")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TrainError("checkpoint incomplete", where=", ".join(missing), hint="start without resume, or restore the checkpoint folder")
    state = json.loads(files[0].read_text(encoding="utf-8"))
    return state, load_file(str(files[1])), torch.load(files[2], map_location="cpu", weights_only=True)


def check_compatible(state: dict, seq_len: int, tok_hash: str, where: str) -> None:
    if state["data"]["seq_len"] != seq_len:
        raise TrainError(
            f"seq_len mismatch: the checkpoint was trained on seq_len {state['data']['seq_len']}, the data has {seq_len}",
            where=where,
            hint="resume on the same token shards (or start a new out_dir)",
        )
    if state["data"]["tokenizer"] != tok_hash:
        raise TrainError(
            f"tokenizer mismatch: the checkpoint's tokenizer hash {state['data']['tokenizer'][:12]}… differs from the data's {tok_hash[:12]}…",
            where=where,
            hint="the token ids would mean different things: resume on data made with the same tokenizer, or start a new out_dir",
        )


# ------------------------------------------------------------------------------------ the loop
class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and returns at the next step boundary."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


@torch.no_grad()
def evaluate(model: Transformer, stream: TokenStream, cfg: TrainConfig, T: int, device, autocast) -> dict:
    model.eval()
    total, n = 0.0, 0
    for x, y in eval_batches(stream, cfg.batch_size, T, cfg.eval_tokens):
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        with autocast():
            _, loss = model(x, y)
        total += loss.item() * y.numel()
        n += y.numel()
    model.train()
    val = total / n
    return {"val_loss": val, "val_ppl": math.exp(min(val, 50.0)), "val_tokens": n}


def train(config: TrainConfig | dict, on_step=None) -> dict:
    """Train; return the summary (also written to ``out_dir/metrics.json``).  ``on_step(record)``
    is called after each optimizer step (for progress display and tests)."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens_dir = find_tokens_dir(cfg.data)
    train_stream = TokenStream(tokens_dir, "train")
    val_stream = TokenStream(tokens_dir, "validation") if train_stream.index["splits"].get("validation", {}).get("tokens") else None
    tok_hash = tokenizer_hash(train_stream.index)
    T = cfg.seq_len or train_stream.seq_len

    ckpt = out / "checkpoint"
    state = None
    if cfg.resume and (ckpt / "state.json").is_file():
        state, weights, opt_state = load_checkpoint(ckpt)
        check_compatible(state, train_stream.seq_len, tok_hash, str(ckpt))
        mcfg = ModelConfig(**state["model"])
        T = state["T"]
    else:
        mcfg = preset(cfg.preset, **{"vocab_size": vocab_size(tokens_dir), "max_seq_len": T, **cfg.model})
    if T > mcfg.max_seq_len:
        raise TrainError(f"seq_len {T} exceeds the model's max_seq_len {mcfg.max_seq_len}", hint="lower seq_len or raise model.max_seq_len")

    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = Transformer(mcfg)
    if state is not None:
        model.load_state_dict(weights)
    model.to(device)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")
    if state is not None:
        opt.load_state_dict(opt_state)

    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else (lambda: torch.autocast(device.type, enabled=False))

    micro_tokens = cfg.batch_size * T
    accum = max(1, round((cfg.batch_tokens or micro_tokens) / micro_tokens))
    step_tokens = accum * micro_tokens
    horizon = cfg.max_steps or (cfg.max_tokens // step_tokens if cfg.max_tokens else None)

    pos = state["data"]["position"] if state else {"epoch": 0, "step": 0}
    batches = Batches(train_stream, cfg.batch_size, T, cfg.seed, **pos)
    step = state["step"] if state else 0
    tokens = state["tokens"] if state else 0
    metrics_path = out / "metrics.jsonl"
    if state is not None and metrics_path.exists():  # drop what was logged after the checkpoint
        keep = [l for l in metrics_path.read_text(encoding="utf-8").splitlines() if l and json.loads(l)["step"] <= step]
        metrics_path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")
    elif state is None:
        metrics_path.write_text("", encoding="utf-8")

    flops_tok = model.flops_per_token(T)
    peak = peak_flops(device)
    n_params = model.num_params()

    def ckpt_state() -> dict:
        return {
            "step": step,
            "tokens": tokens,
            "T": T,
            "model": dataclasses.asdict(mcfg),
            "train": cfg.to_json(),
            "data": {"tokens_dir": str(tokens_dir), "seq_len": train_stream.seq_len, "tokenizer": tok_hash, "position": batches.position()},
        }

    last_eval: dict = {}
    stopped = "max_steps"
    t_start = time.time()
    model.train()
    with _StopFlag() as stop, metrics_path.open("a", encoding="utf-8") as log:

        def emit(rec: dict) -> None:
            log.write(json.dumps(rec) + "\n")
            log.flush()

        while True:
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stopped = "max_steps"
                break
            if cfg.max_tokens is not None and tokens >= cfg.max_tokens:
                stopped = "max_tokens"
                break
            if cfg.max_time is not None and time.time() - t_start >= cfg.max_time:
                stopped = "max_time"
                break
            if stop.signal is not None:
                stopped = signal.Signals(stop.signal).name
                break
            t0 = time.time()
            lr = lr_at(step, cfg, horizon)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_sum = 0.0
            for _ in range(accum):
                x, y = batches.next()
                x, y = torch.from_numpy(x).to(device, non_blocking=True), torch.from_numpy(y).to(device, non_blocking=True)
                with autocast():
                    _, loss = model(x, y)
                (loss / accum).backward()
                loss_sum += loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = max(time.time() - t0, 1e-9)
            step += 1
            tokens += step_tokens
            rec = {"step": step, "loss": loss_sum / accum, "lr": lr, "tokens": tokens, "tokens_per_s": step_tokens / dt, "dt": dt}
            if grad_norm is not None:
                rec["grad_norm"] = float(grad_norm)
            if peak:
                rec["mfu"] = flops_tok * step_tokens / dt / peak
            emit(rec)
            if on_step is not None:
                on_step(rec)
            if val_stream is not None and cfg.eval_every and step % cfg.eval_every == 0:
                last_eval = {"step": step, **evaluate(model, val_stream, cfg, T, device, autocast)}
                emit(last_eval)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                save_checkpoint(out, model, opt, ckpt_state())

        if val_stream is not None and last_eval.get("step") != step and step > 0:
            last_eval = {"step": step, **evaluate(model, val_stream, cfg, T, device, autocast)}
            emit(last_eval)
    save_checkpoint(out, model, opt, ckpt_state())
    elapsed = time.time() - t_start
    summary = {
        "step": step,
        "tokens": tokens,
        "stopped": stopped,
        "params": n_params,
        "flops_per_token": flops_tok,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "bf16": use_bf16,
        "grad_accum": accum,
        "tokens_per_step": step_tokens,
        "seconds": elapsed,
        "model": dataclasses.asdict(mcfg),
        **{k: v for k, v in last_eval.items() if k != "step"},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def read_metrics(out_dir: str | Path) -> list[dict]:
    return [json.loads(l) for l in (Path(out_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if l]
