"""The training loop: ``train(TrainConfig) -> dict``.

AdamW (fused on CUDA), linear warmup then cosine decay to ``min_lr``, gradient accumulation up
to ``batch_tokens`` per optimizer step, gradient clipping, bf16 autocast on CUDA, optional
``torch.compile``, data parallel over processes started by ``torchrun`` (DDP), a fixed
validation budget every ``eval_every`` steps followed by a few sample generations, checkpoints
every ``ckpt_every`` steps, at the end and on SIGINT/SIGTERM.  ``resume=True`` restores weights,
optimizer and data position, so the run continues with the same batches and the same losses as
an uninterrupted one.

``out_dir`` layout (written by rank 0 only)::

    checkpoint/model.safetensors   weights (float32, the uncompiled module's names)
    checkpoint/optimizer.pt        AdamW state (torch.save, loaded with weights_only=True)
    checkpoint/state.json          step, tokens, horizon, data position, model + train config, data identity
    metrics.jsonl                  one line per step (type train), per eval (type eval), per sample (type sample)
    metrics.json                   the summary returned by train()
    tensorboard/                   event files (when tensorboard is installed)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.train import TrainError, hf_import
from pipeline.train.checkpoint import load_checkpoint, save_checkpoint
from pipeline.train.config import TrainConfig
from pipeline.train.data import Batches, TokenStream, eval_batches, find_tokens_dir, tokenizer_hash, vocab_size
from pipeline.train.generate import sample, strip_eos
from pipeline.train.model import ModelConfig, Transformer, padded_vocab, preset

__all__ = ["TrainConfig", "train", "read_metrics", "lr_at", "pick_device"]

# Dense bf16 peak, FLOP/s, by device name substring (first match wins).
PEAK_BF16 = [("H200", 989e12), ("H100", 989e12), ("A100", 312e12)]
# With only max_time, the schedule's horizon is estimated after this many timed steps (see Horizon).
HORIZON_PROBE_STEPS = 4


def use_bf16_for(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: ``precision`` auto (CUDA GPUs that support it), bf16 or fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise TrainError(f"unknown precision {precision!r}", where="--precision", hint="use auto, bf16 or fp32")
    if precision == "fp32":
        return False
    supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not supported and device.type != "cpu":
        raise TrainError(f"bf16 is not supported on {device}", where="--precision", hint="use fp32 (or auto)")
    return supported or precision == "bf16"  # bf16 on a CPU: slow but allowed (for comparisons)


def available_devices() -> list[str]:
    """The device kinds this torch build can use on this machine."""
    kinds = ["cpu"]
    if torch.cuda.is_available():
        kinds.insert(0, "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        kinds.insert(0, "mps")
    return kinds


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu. A named device this build or machine cannot use is a
    ``TrainError`` that says which devices can be used and how to get a CUDA build."""
    usable = available_devices()
    if name in ("", "auto", None):
        return torch.device(usable[0])
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"unknown device {name!r}", where="--device", hint=f"use auto, or one of the devices usable here: {', '.join(usable)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda is not None
        why = "no CUDA GPU is visible to this process" if built else f"this torch build ({torch.__version__}) has no CUDA support"
        how = "check nvidia-smi and CUDA_VISIBLE_DEVICES" if built else "install a CUDA build of PyTorch (see https://pytorch.org/get-started/locally/, e.g. pip install torch --index-url https://download.pytorch.org/whl/cu124)"
        raise TrainError(f"--device {name}: {why}", where="--device", hint=f"devices usable here: {', '.join(usable)}; for a GPU, {how}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TrainError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible", where="--device", hint=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and "mps" not in usable:
        raise TrainError(f"--device {name}: MPS (Apple GPU) is not available here", where="--device", hint=f"devices usable here: {', '.join(usable)}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise TrainError(f"--device {name}: the trainer runs on cpu, cuda or mps, not {device.type}", where="--device", hint=f"devices usable here: {', '.join(usable)}")
    return device


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


# ---------------------------------------------------------------------------------- processes
@dataclass
class Dist:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 otherwise)."""

    rank: int = 0
    world: int = 1
    created: bool = False  # we called init_process_group, so we destroy the group

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def dist_setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group that ``torchrun`` describes in RANK / WORLD_SIZE / LOCAL_RANK:
    NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist(), device
    import torch.distributed as tdist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local) if device.index is None else device
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise TrainError(f"multi-process training runs on CUDA (nccl) or CPU (gloo), not {device.type}", where="WORLD_SIZE", hint="use --device cuda or cpu, or launch one process")
    created = False
    if not tdist.is_initialized():
        try:
            tdist.init_process_group(backend=backend)
        except (ValueError, RuntimeError) as exc:
            raise TrainError(f"cannot join the process group ({exc})", where=f"RANK {rank} of WORLD_SIZE {world}", hint="launch with torchrun --nproc_per_node=N -m pipeline.cli train ...") from None
        created = True
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size(), created=created), device


def all_reduce(d: Dist, values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    if not d.on:
        return values
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    tdist.all_reduce(t, op={"sum": tdist.ReduceOp.SUM, "max": tdist.ReduceOp.MAX, "min": tdist.ReduceOp.MIN}[op])
    return t.tolist()


# ---------------------------------------------------------------------------------- checkpoints
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


# ------------------------------------------------------------------------------------ logging
class RunLog:
    """metrics.jsonl (+ TensorBoard scalars) on rank 0; other ranks log nothing."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None, on_log=None):
        self.enabled, self.on_log, self.tb = enabled, on_log, None
        if not enabled:
            return
        path = out / "metrics.jsonl"
        if resume_step is not None and path.exists():  # drop what was logged after the checkpoint
            keep = [l for l in path.read_text(encoding="utf-8").splitlines() if l and json.loads(l)["step"] <= resume_step]
            path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")
        elif resume_step is None:
            path.write_text("", encoding="utf-8")
            shutil.rmtree(out / "tensorboard", ignore_errors=True)
        self.file = path.open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run hides the events its crashed predecessor wrote after the checkpoint
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1)

    def emit(self, rec: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.tb is not None:
            kind, step = rec.get("type"), rec["step"]
            if kind == "train":
                for k in ("loss", "lr", "tokens_per_s", "mfu", "grad_norm"):
                    if k in rec:
                        self.tb.add_scalar(f"train/{k}", rec[k], step)
            elif kind == "eval":
                self.tb.add_scalar("val/loss", rec["val_loss"], step)
                self.tb.add_scalar("val/ppl", rec["val_ppl"], step)
            elif kind == "sample":
                self.tb.add_text(f"samples/{rec['index']}", f"**{rec['prompt']}**{rec['text']}", step)
        if self.on_log is not None:
            self.on_log(rec)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def tensorboard_wanted(flag: bool | None) -> bool:
    import importlib

    try:
        importlib.import_module("torch.utils.tensorboard")  # fails without the tensorboard package
    except ImportError:
        if flag:
            raise TrainError("tensorboard logging was asked for but tensorboard is not installed", hint="pip install tensorboard, or pass --no-tensorboard") from None
        return False
    return flag is not False


# ------------------------------------------------------------------------------------ samples
class Sampler:
    """A few fixed prompts continued at each evaluation, decoded with the run's tokenizer.
    Default prompts are the first tokens of evenly spaced validation windows."""

    def __init__(self, cfg: TrainConfig, tokenizer_dir: Path, stream: TokenStream, T: int, eos_id: int | None, bos_id: int | None):
        self.cfg, self.eos_id, self.prompts = cfg, eos_id, []
        if cfg.sample_tokens <= 0 or (not cfg.sample_prompts and cfg.samples <= 0):
            return
        from pipeline.text.tokenizer import load_tokenizer

        if not any((tokenizer_dir / n).is_file() for n in ("tokenizer.model", "tokenizer.json")):
            if cfg.sample_prompts:
                raise TrainError("sample_prompts need the run's tokenizer, which was not found", where=str(tokenizer_dir), hint="keep tokenizer/ beside tokens/, or drop sample_prompts")
            return  # default samples are a convenience: no tokenizer, no samples
        self.tok = load_tokenizer(tokenizer_dir)
        if cfg.sample_prompts:
            head = [i for i in (eos_id, bos_id) if i is not None]  # a prompt starts a new document
            self.prompts = [(p, head + self.tok.encode(p)) for p in cfg.sample_prompts]
        else:
            n, k = stream.n_windows(T), max(1, min(16, T // 2))
            for i in range(min(cfg.samples, n)):
                w = i * n // cfg.samples
                ids = stream.slice(w * T, w * T + k).tolist()
                self.prompts.append((self.tok.decode(ids), ids))

    def __call__(self, model: Transformer, step: int, autocast) -> list[dict]:
        recs = []
        for i, (text, ctx) in enumerate(self.prompts):
            ids = sample(model, ctx, self.cfg.sample_tokens, temperature=self.cfg.sample_temperature, top_k=self.cfg.sample_top_k, seed=self.cfg.seed + i, eos_id=self.eos_id, autocast=autocast, vocab_limit=self.tok.vocab_size)
            recs.append({"type": "sample", "step": step, "index": i, "prompt": text, "text": self.tok.decode(strip_eos(ids, self.eos_id))})
        return recs


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
def evaluate(model, stream: TokenStream, cfg: TrainConfig, T: int, device, autocast, d: Dist = Dist()) -> dict:
    """Mean validation loss over the fixed budget; with several processes each takes every
    world-th batch and the sums are added up."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for x, y in eval_batches(stream, cfg.batch_size, T, cfg.eval_tokens, d.rank, d.world):
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        with autocast():
            _, loss = model(x, y)
        total += loss.double() * y.numel()
        n += y.numel()
    model.train()
    total_f, n_f = all_reduce(d, [float(total), float(n)], device)
    val = total_f / n_f
    return {"val_loss": val, "val_ppl": math.exp(min(val, 50.0)), "val_tokens": int(n_f)}


def train(config: TrainConfig | dict, on_step=None, on_log=None) -> dict:
    """Train; return the summary (also written to ``out_dir/metrics.json``).  On rank 0,
    ``on_step(record)`` is called after each optimizer step and ``on_log(record)`` for every
    record logged (steps, evaluations, samples): for progress display and tests."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    out = Path(cfg.out_dir)
    tokens_dir = find_tokens_dir(cfg.data)
    train_stream = TokenStream(tokens_dir, "train")
    val_stream = TokenStream(tokens_dir, "validation") if train_stream.index["splits"].get("validation", {}).get("tokens") else None
    tok_hash = tokenizer_hash(train_stream.index)
    T = cfg.seq_len or train_stream.seq_len

    ckpt = out / "checkpoint"
    state = weights = opt_state = origin = None
    if cfg.resume:
        if not ckpt.is_dir():
            raise TrainError("--resume was given but there is no checkpoint to resume from", where=str(ckpt), hint="drop --resume to start a new run, or point --out at the run to continue")
        state, weights, opt_state = load_checkpoint(ckpt)
        check_compatible(state, train_stream.seq_len, tok_hash, str(ckpt))
        mcfg = ModelConfig(**state["model"])
        origin = state.get("init_from")
        if cfg.init_from and (not origin or cfg.init_from != origin.get("source")):
            was = f"started from {origin['source']}" if origin else "was trained from scratch"
            raise TrainError(f"--init-from {cfg.init_from} with --resume: this run {was}", where=str(ckpt), hint="resume without --init-from (or with the same one), or start a new out_dir")
        T = state["T"]
    elif cfg.init_from:
        weights, mcfg, origin = import_model(cfg, train_stream.index, str(tokens_dir / "index.json"))
    else:
        vocab = {} if "vocab_size" in cfg.model else {"vocab_size": padded_vocab(vocab_size(tokens_dir))}
        mcfg = preset(cfg.preset, **{**vocab, "max_seq_len": T, **cfg.model})
    if T > mcfg.max_seq_len:
        raise TrainError(f"seq_len {T} exceeds the model's max_seq_len {mcfg.max_seq_len}", hint="lower seq_len" + ("" if cfg.init_from else " or raise model.max_seq_len"))
    use_tb = tensorboard_wanted(cfg.tensorboard)

    d, device = dist_setup(pick_device(cfg.device))
    try:
        return _run(cfg, out, d, device, tokens_dir, train_stream, val_stream, tok_hash, T, mcfg, state, weights, opt_state, use_tb, on_step, on_log, origin)
    finally:
        if d.created:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def import_model(cfg: TrainConfig, index: dict, where: str) -> tuple[dict, ModelConfig, dict]:
    """Weights, config and origin record of the published model ``cfg.init_from``; refuses token
    shards made with another tokenizer than the model's."""
    model, origin, _ = hf_import.load_published(cfg.init_from, cfg.init_revision)
    tok = index.get("tokenizer") or {}
    why = hf_import.tokenizer_mismatch(origin["files"], tok.get("files") or {}, model.cfg.vocab_size, index.get("vocab_size"))
    if why:
        raise TrainError(f"these token shards cannot train {cfg.init_from}: {why}", where=where,
                         hint=f"tokenize the data with the model's own tokenizer: tokenize params tokenizer_path: {cfg.init_from}" + (f" (revision: {cfg.init_revision})" if cfg.init_revision else ""))
    return model.state_dict(), model.cfg, origin


def build_model(mcfg: ModelConfig, weights: dict | None) -> Transformer:
    """A fresh (randomly initialized) model, or one holding ``weights`` without a random init first."""
    if weights is None:
        return Transformer(mcfg)
    with torch.device("meta"):
        model = Transformer(mcfg)
    model.load_state_dict(weights, assign=True)
    return model


def _run(cfg, out, d, device, tokens_dir, train_stream, val_stream, tok_hash, T, mcfg, state, weights, opt_state, use_tb, on_step, on_log, origin=None) -> dict:
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg, weights)
    model.grad_checkpointing = cfg.gradient_checkpointing
    model.to(device)
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    fwd = torch.compile(model) if use_compile else model  # checkpoints read `model`: no _orig_mod. prefix
    step_model = fwd
    if d.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_model = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    use_bf16 = use_bf16_for(cfg.precision, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else (lambda: torch.autocast(device.type, enabled=False))
    # float32 matmuls outside autocast (none in the model): TF32 under bf16, true float32 otherwise
    torch.backends.cuda.matmul.allow_tf32 = use_bf16

    # One optimizer step = one batch of `windows` windows from the data order, split into
    # `accum` micro-batches on each of the d.world processes: the order depends only on `windows`.
    micro_tokens = cfg.batch_size * T
    accum = max(1, round((cfg.batch_tokens or micro_tokens * d.world) / (micro_tokens * d.world)))
    per_rank = accum * cfg.batch_size
    windows = per_rank * d.world
    step_tokens = windows * T
    if state is not None:
        # Checkpoints from before the per-step order stored a micro-batch count instead.
        saved = state["data"].get("windows_per_step", state.get("train", {}).get("batch_size"))
        if saved != windows:
            raise TrainError(
                f"the checkpoint's data position counts batches of {saved} sequences, this run takes {windows} per step",
                where=str(out / "checkpoint"),
                hint="resume with the same batch_tokens (batch_size x grad accumulation x processes), or start a new out_dir",
            )

    horizon = cfg.max_steps or (-(-cfg.max_tokens // step_tokens) if cfg.max_tokens else None)
    estimated = horizon is None and state is not None and state.get("horizon") is not None
    if estimated:
        horizon = state["horizon"]  # estimated from max_time by the run this resumes: keep its schedule
    probe = horizon is None and cfg.max_time is not None

    pos = state["data"]["position"] if state else {"epoch": 0, "step": 0}
    batches = Batches(train_stream, windows, T, cfg.seed, **pos)
    step = state["step"] if state else 0
    start_step = step
    tokens = state["tokens"] if state else 0
    index = train_stream.index
    tok_dir = (tokens_dir / (index.get("tokenizer") or {}).get("path", "../tokenizer")).resolve()
    eos_id, bos_id = index.get("eos_id"), index.get("bos_id")
    # built on every process so that a bad sample_prompts fails everywhere, used on rank 0 only
    sampler = Sampler(cfg, tok_dir, val_stream, T, eos_id, bos_id) if val_stream is not None else None
    log = RunLog(out, d.main, use_tb, step if state is not None else None, on_log)
    if state is not None and d.main and on_log is not None:  # said once, by the main process
        on_log({"type": "resume", "step": step, "tokens": tokens, "checkpoint": str(out / "checkpoint")})

    flops_tok = model.flops_per_token(T)
    peak = peak_flops(device)
    n_params = model.num_params()

    def ckpt_state() -> dict:
        return {
            "step": step,
            "tokens": tokens,
            "T": T,
            "horizon": horizon if (estimated or probe) else None,
            "world_size": d.world,
            "model": dataclasses.asdict(mcfg),
            "init_from": origin,
            "train": cfg.to_json(),
            "data": {
                "tokens_dir": str(tokens_dir.resolve()),
                "seq_len": train_stream.seq_len,
                "tokenizer": tok_hash,
                "tokenizer_dir": str(tok_dir),
                "tokenizer_files": (index.get("tokenizer") or {}).get("files", {}),
                "eos_id": eos_id,
                "bos_id": bos_id,
                "windows_per_step": windows,
                "position": batches.position(),
            },
        }

    def run_eval() -> dict:
        rec = {"type": "eval", "step": step, **evaluate(fwd, val_stream, cfg, T, device, autocast, d)}
        log.emit(rec)
        if sampler is not None and d.main:
            for s in sampler(model, step, autocast):
                log.emit(s)
        return rec

    last_eval: dict = {}
    stopped = "max_steps"
    t_start = time.time()
    t_first = t_last = None  # ends of this process's first and last steps (the first, with compilation and warm-up, is left out of rates)
    model.train()
    try:
        with _StopFlag() as stop:
            while True:
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    stopped = "max_steps"
                    break
                if cfg.max_tokens is not None and tokens >= cfg.max_tokens:
                    stopped = "max_tokens"
                    break
                if (estimated or probe) and horizon is not None and step >= horizon:
                    stopped = "max_time"
                    break
                # time and signals differ between processes: all stop if any must
                out_of_time = cfg.max_time is not None and time.time() - t_start >= cfg.max_time
                timeup, sig = all_reduce(d, [float(out_of_time), float(stop.signal or 0)], device, "max")
                if timeup:
                    stopped = "max_time"
                    break
                if sig:
                    stopped = signal.Signals(int(sig)).name
                    break
                t0 = time.time()
                lr = lr_at(step, cfg, horizon)
                for g in opt.param_groups:
                    g["lr"] = lr
                ks = batches.next_ids()[d.rank * per_rank : (d.rank + 1) * per_rank]
                loss_sum = torch.zeros((), device=device)
                for m in range(accum):
                    x, y = train_stream.windows(ks[m * cfg.batch_size : (m + 1) * cfg.batch_size], T)
                    x, y = torch.from_numpy(x).to(device, non_blocking=True), torch.from_numpy(y).to(device, non_blocking=True)
                    # gradients are averaged across processes once per step, on the last micro-batch
                    sync = step_model.no_sync() if d.on and m < accum - 1 else contextlib.nullcontext()
                    with sync:
                        with autocast():
                            _, loss = step_model(x, y)
                        (loss / accum).backward()
                    loss_sum += loss.detach().float()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
                opt.step()
                opt.zero_grad(set_to_none=True)
                (step_loss,) = all_reduce(d, [float(loss_sum) / accum], device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.time()
                dt = max(now - t0, 1e-9)
                step += 1
                tokens += step_tokens
                if t_first is None:
                    t_first = now
                t_last = now
                rec = {"type": "train", "step": step, "loss": step_loss / d.world, "lr": lr, "tokens": tokens, "tokens_per_s": step_tokens / dt, "dt": dt}
                if grad_norm is not None:
                    rec["grad_norm"] = float(grad_norm)
                if peak:
                    rec["mfu"] = flops_tok * step_tokens / dt / (peak * d.world)
                log.emit(rec)
                if on_step is not None and d.main:
                    on_step(rec)
                if probe and horizon is None and step >= max(cfg.warmup_steps, start_step + 1 + HORIZON_PROBE_STEPS):
                    # max_time only: fix the horizon from the measured pace (evals included), the
                    # same on every process, saved in checkpoints so a resume keeps the schedule
                    pace = (now - t_first) / (step - start_step - 1)
                    left = cfg.max_time - (now - t_start)
                    (h,) = all_reduce(d, [float(step + max(0, int(left / pace)))], device, "min")
                    horizon = int(h)
                    log.emit({"type": "horizon", "step": step, "horizon": horizon, "seconds_per_step": pace})
                if val_stream is not None and cfg.eval_every and step % cfg.eval_every == 0:
                    last_eval = run_eval()
                if d.main and cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    save_checkpoint(out, model, opt, ckpt_state())

            if val_stream is not None and last_eval.get("step") != step and step > 0:
                last_eval = run_eval()
        elapsed = time.time() - t_start
        summary = {
            "step": step,
            "tokens": tokens,
            "stopped": stopped,
            "params": n_params,
            "flops_per_token": flops_tok,
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "world_size": d.world,
            "bf16": use_bf16,
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "compile": use_compile,
            "grad_accum": accum,
            "tokens_per_step": step_tokens,
            "horizon": horizon,
            "seconds": elapsed,
            "model": dataclasses.asdict(mcfg),
            "config": cfg.to_json(),
            **({"base_model": hf_import.base_model_facts(origin)} if origin else {}),
            **{k: v for k, v in last_eval.items() if k not in ("step", "type")},
        }
        if t_first is not None and step - start_step > 1:  # steps 2..n of this process, evaluations included
            summary["tokens_per_s"] = (step - start_step - 1) * step_tokens / max(t_last - t_first, 1e-9)
            if peak:
                summary["mfu"] = flops_tok * summary["tokens_per_s"] / (peak * d.world)
        if d.main:
            save_checkpoint(out, model, opt, ckpt_state())
            old = out / "metrics.json"
            if cfg.resume and old.is_file():  # `pipeline eval` results of this run stay (each names the model_step it scored)
                try:
                    earlier = json.loads(old.read_text(encoding="utf-8")).get("eval")
                except (ValueError, AttributeError):
                    earlier = None
                if earlier:
                    summary["eval"] = earlier
            old.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    finally:
        log.close()
    return summary


def read_metrics(out_dir: str | Path) -> list[dict]:
    return [json.loads(l) for l in (Path(out_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if l]
