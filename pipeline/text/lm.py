"""Per-document perplexity under a language model trained by ``pipeline train`` (CCNet-style
scoring, read by the ``lm_score`` stage).

Why this lives here and not in ``pipeline/train``: stages sit below ``train`` in the layers
(docs/architecture.md), so a stage may not import the training package. What scoring needs is
small and read-only: the checkpoint format (``checkpoint/state.json`` + ``model.safetensors``),
the run's tokenizer (recorded in ``state.json`` with the sha256 of its files) and an inference
forward pass of the Llama-layout decoder. The forward pass below is the same computation as
``pipeline.train.model.Transformer`` (rotate-half rotary, float32 RMSNorm, fused q/k/v and
gate/up matmuls, SwiGLU, tied head); ``tests/test_lm_score.py`` checks that the two give the
same logits, so a change to the model that this module does not follow fails there.

Scoring a document: ``[EOS] (+ [BOS]) + tokens + [EOS]`` is how a document sits in the training
stream (it follows the previous document's EOS; BOS only when the token shards had one); the
document's tokens and its closing EOS are predicted, the prefix is context only. Documents longer
than ``max_tokens`` are cut to their first ``max_tokens`` tokens (no closing EOS then); sequences
longer than the model's context are scored in consecutive, non-overlapping windows.
Perplexity = exp(mean negative log-likelihood per predicted token), in nats; or per UTF-8 byte
(``per="byte"``), which does not depend on how finely the tokenizer cuts the text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common import storage
from pipeline.common.errors import StageError

WEIGHTS = "model.safetensors"
STATE = "state.json"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
CHARS_PER_TOKEN_BOUND = 32  # SentencePiece pieces are at most 16 characters (max_piece_length); twice that for margin
LOGIT_ELEMENTS = 1 << 25  # logits computed per chunk (128 MB in float32): never [B, T, V] at once


class LmError(StageError):
    """The scoring model cannot be used (missing, not a trained run, no tokenizer, damaged)."""


# ------------------------------------------------------------------------------ finding a run
@dataclass(frozen=True)
class RunFiles:
    """Where a trained model's parts are: the checkpoint folder, its state and the tokenizer."""

    checkpoint: Path
    state: dict
    tokenizer: Path

    @property
    def weights(self) -> Path:
        return self.checkpoint / WEIGHTS


def find_run(path: str | Path) -> RunFiles:
    """A ``pipeline train`` output folder or its ``checkpoint/`` folder -> its files; anything
    else is an ``LmError`` naming the path."""
    given = Path(path).expanduser().absolute()  # errors name the folder looked at, not a relative path
    if not given.exists():
        raise LmError("the model path does not exist", where=str(given), hint="give the --out folder of `pipeline train` (or its checkpoint/ folder)")
    ckpt = given / "checkpoint" if (given / "checkpoint").is_dir() else given
    missing = [n for n in (STATE, WEIGHTS) if not (ckpt / n).is_file()]
    if missing:
        raise LmError(
            f"not a trained model: {' and '.join(missing)} missing",
            where=str(ckpt),
            hint="give the --out folder of `pipeline train` (it holds checkpoint/state.json and checkpoint/model.safetensors)",
        )
    try:
        state = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise ValueError("no model configuration")
    except (OSError, ValueError) as exc:
        raise LmError(f"unreadable checkpoint state ({exc})", where=str(ckpt / STATE), hint="restore the checkpoint folder, or train again") from None
    return RunFiles(ckpt, state, _find_tokenizer(state, ckpt))


def _find_tokenizer(state: dict, ckpt: Path) -> Path:
    """The tokenizer the run was trained with (as ``pipeline generate`` finds it): the folder
    recorded in the checkpoint, else beside its token shards, else the run's ``hf/`` export;
    each must hold every recorded file with its recorded sha256."""
    data = state.get("data") or {}
    cands = [Path(data["tokenizer_dir"])] if data.get("tokenizer_dir") else []
    if data.get("tokens_dir"):
        cands.append(Path(data["tokens_dir"]).parent / "tokenizer")
    cands += [ckpt.parent / "tokenizer", ckpt.parent / "hf"]
    files = data.get("tokenizer_files") or {}
    differs = []
    for c in cands:
        if c.is_dir() and any((c / n).is_file() for n in TOKENIZER_FILES):
            if all((c / n).is_file() and _sha256(c / n) == d for n, d in files.items()):
                return c
            differs.append(str(c))
    if differs:
        raise LmError("the tokenizer found differs from the one the model was trained with (file hashes)", where=", ".join(differs), hint="restore the run's tokenizer/ folder")
    raise LmError(
        "the model's tokenizer was not found",
        where=", ".join(str(c) for c in cands),
        hint="keep the tokenizer/ folder beside the token shards the model was trained on (or export the run: RUN/hf holds a copy)",
    )


def _sha256(path: Path) -> str:
    return storage.file_digests(Path(path))["sha256"]


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path))


def model_sha256(path: str | Path) -> str:
    """The model's identity: sha256 of its ``model.safetensors`` (cached per file version)."""
    w = find_run(path).weights
    st = w.stat()
    return _cached_sha256(str(w.resolve()), st.st_size, st.st_mtime_ns)


# ------------------------------------------------------------------------------ the model
@dataclass
class LlamaWeights:
    """Inference weights of a ``pipeline train`` model, on one device, projections fused."""

    cfg: dict
    embed: "torch.Tensor"  # noqa: F821  [V, dim], also the output head (tied)
    layers: list[dict]
    norm: "torch.Tensor"  # noqa: F821
    _rope: dict = field(default_factory=dict)

    @property
    def max_seq_len(self) -> int:
        return int(self.cfg["max_seq_len"])

    def rope(self, T: int, device) -> tuple:
        """cos/sin for positions 0..T-1 (rotate-half layout, as the training model)."""
        import torch

        key = (T, str(device))
        if key not in self._rope:
            d = self.cfg["dim"] // self.cfg["n_heads"]
            inv = 1.0 / (self.cfg.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
            freqs = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv)
            emb = torch.cat([freqs, freqs], dim=-1)
            self._rope = {key: (emb.cos(), emb.sin())}  # one length at a time: batches are sorted by length
        return self._rope[key]


# ModelConfig fields of published checkpoints (train/model.py) and the values of our presets' layout
PRESET_LAYOUT = {"n_kv_heads": None, "head_size": None, "qkv_bias": False, "o_bias": False, "qk_norm": False, "tie_embeddings": True, "rope_scaling": None, "sliding_window": None}


def unsupported_layout(cfg: dict) -> list[str]:
    """The fields of a model config this forward does not implement (GQA, biases, untied head, ...)."""
    return [f"{k}={cfg[k]!r}" for k, v in PRESET_LAYOUT.items() if cfg.get(k, v) != v]


def load_weights(weights: dict, cfg: dict, device, dtype) -> LlamaWeights:
    """Native ``Transformer`` state-dict names -> fused inference tensors (matmul weights in
    ``dtype``; norms stay float32, as the model computes them)."""
    import torch

    def w(name: str, cast: bool = True) -> torch.Tensor:
        if name not in weights:
            raise KeyError(name)
        t = weights[name].to(device)
        return t.to(dtype) if cast else t.float()

    layers = []
    for i in range(int(cfg["n_layers"])):
        p = f"layers.{i}."
        layers.append(
            {
                "in_norm": w(p + "input_layernorm.weight", cast=False),
                "qkv": torch.cat([w(p + "self_attn.q_proj.weight"), w(p + "self_attn.k_proj.weight"), w(p + "self_attn.v_proj.weight")]),
                "o": w(p + "self_attn.o_proj.weight"),
                "post_norm": w(p + "post_attention_layernorm.weight", cast=False),
                "gate_up": torch.cat([w(p + "mlp.gate_proj.weight"), w(p + "mlp.up_proj.weight")]),
                "down": w(p + "mlp.down_proj.weight"),
            }
        )
    return LlamaWeights(cfg=cfg, embed=w("embed_tokens.weight"), layers=layers, norm=w("norm.weight", cast=False))


def _rms_norm(x, weight, eps: float):
    import torch

    dtype = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (weight * xf.to(dtype)).to(dtype)


def hidden_states(m: LlamaWeights, idx):
    """Final-norm hidden states [B, T, dim] of token ids [B, T] (causal: right padding never
    reaches a real position)."""
    import torch
    import torch.nn.functional as F

    B, T = idx.shape
    C, H = int(m.cfg["dim"]), int(m.cfg["n_heads"])
    eps = float(m.cfg.get("norm_eps", 1e-5))
    cos, sin = m.rope(T, idx.device)
    x = F.embedding(idx, m.embed)

    def rot(t):
        t1, t2 = t.chunk(2, dim=-1)
        return torch.cat([-t2, t1], dim=-1)

    for L in m.layers:
        h = _rms_norm(x, L["in_norm"], eps)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in F.linear(h, L["qkv"]).split(C, dim=-1))
        c, s = cos.to(q.dtype), sin.to(q.dtype)
        q, k = q * c + rot(q) * s, k * c + rot(k) * s
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), L["o"])
        gate, up = F.linear(_rms_norm(x, L["post_norm"], eps), L["gate_up"]).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, L["down"])
    return _rms_norm(x, m.norm, eps)


def logits(m: LlamaWeights, idx):
    """Logits [B, T, V] (tests compare them with the training model's)."""
    import torch.nn.functional as F

    return F.linear(hidden_states(m, idx), m.embed)


# ------------------------------------------------------------------------------ the scorer
def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LmError("device: cuda, but torch sees no CUDA device", where="params.device", hint="use device: auto or cpu")
    return device


class LmScorer:
    """A trained model and its tokenizer, loaded once; ``score(texts)`` -> per-document
    (perplexity, predicted tokens)."""

    def __init__(self, path: str | Path, device: str = "auto", expected_sha256: str | None = None):
        import torch
        from safetensors.torch import load as load_safetensors

        from pipeline.text.tokenizer import load_tokenizer

        self.run = find_run(path)
        raw = self.run.weights.read_bytes()
        self.sha256 = hashlib.sha256(raw).hexdigest()
        if expected_sha256 and expected_sha256 != self.sha256:
            raise LmError(
                f"the model changed: its weights have sha256 {self.sha256[:16]}…, the manifest pinned {expected_sha256[:16]}…",
                where=str(self.run.weights),
                hint="run again (the new model's hash goes into the fingerprint), or restore the model",
            )
        self.device = torch.device(pick_device(device))
        # bf16 matmuls where the GPU has them (the model trained under bf16 autocast); float32 on CPU
        self.dtype = torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        cfg = self.run.state["model"]
        extra = unsupported_layout(cfg)
        if extra:
            raise LmError(f"lm_score's fast forward covers our presets' layout; this model has {', '.join(extra)}", where=str(self.run.weights),
                          hint="score with a model pretrained from a preset (pipeline train --preset ...), not one started from a published checkpoint")
        try:
            self.model = load_weights(load_safetensors(raw), cfg, self.device, self.dtype)
        except Exception as exc:  # a damaged or foreign file: name it
            raise LmError(f"the weights do not fit the model in state.json ({type(exc).__name__}: {str(exc)[:200]})", where=str(self.run.weights), hint="restore the checkpoint folder as a whole") from None
        self.tokenizer = load_tokenizer(self.run.tokenizer)
        if self.tokenizer.vocab_size > int(cfg["vocab_size"]):
            raise LmError(f"the tokenizer has {self.tokenizer.vocab_size} ids, the model {cfg['vocab_size']}", where=str(self.run.tokenizer), hint="the tokenizer does not belong to this model")
        data = self.run.state.get("data") or {}
        self.eos_id = data.get("eos_id", self.tokenizer.eos_id)
        if self.eos_id is None:
            self.eos_id = self.tokenizer.eos_id
        self.bos_id = data.get("bos_id")
        self.prefix = [self.eos_id] + ([self.bos_id] if self.bos_id is not None else [])

    def windows(self, docs: list[np.ndarray], max_tokens: int, cut: list[bool] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """(inputs, targets, document index) per window; a target of -1 is context only. A
        document longer than ``max_tokens`` (or ``cut`` before encoding) has no closing EOS."""
        T = self.model.max_seq_len
        pre = np.asarray(self.prefix, dtype=np.int64)
        ins, tgts, owner = [], [], []
        for d, ids in enumerate(docs):
            if len(ids) == 0:
                continue
            body = ids[:max_tokens].astype(np.int64)
            tail = [self.eos_id] if len(ids) <= max_tokens and not (cut and cut[d]) else []
            seq = np.concatenate([pre, body, np.asarray(tail, dtype=np.int64)])
            x, y = seq[:-1], seq[1:].copy()
            y[: len(pre) - 1] = -1  # a BOS after the EOS is context, not a prediction
            for s in range(0, len(x), T):
                ins.append(x[s : s + T])
                tgts.append(y[s : s + T])
                owner.append(d)
        return ins, tgts, np.asarray(owner, dtype=np.int64)

    def score(self, texts: list[str | None], *, max_tokens: int, batch_size: int, per: str = "token") -> tuple[np.ndarray, np.ndarray, dict]:
        """Perplexity (NaN for a document without tokens) and predicted-token count per text,
        plus timing facts. Windows are sorted by length so a batch pads little.

        ``per="token"``: exp(NLL / predicted tokens), CCNet's measure, comparable between
        documents of one language and tokenizer. ``per="byte"``: exp(NLL / UTF-8 bytes scored),
        the closing EOS counted as one byte: independent of how the tokenizer cuts the text (text
        it cuts into many small, easy tokens -- shuffled characters, another script -- does not
        look fluent) and of how many bytes a script spends per character."""
        import torch
        import torch.nn.functional as F

        t0 = time.perf_counter()
        # a token covers at most a few characters: a very long document is cut well past its
        # first max_tokens tokens before encoding (whose cost is linear in characters)
        limit = CHARS_PER_TOKEN_BOUND * max_tokens
        cut = [t is not None and len(t) > limit for t in texts]
        docs = self.tokenizer.encode_batch([(t or "")[:limit] for t in texts])
        t1 = time.perf_counter()
        ins, tgts, owner = self.windows(docs, max_tokens, cut)
        n = len(texts)
        nll = np.zeros(n, dtype=np.float64)
        count = np.zeros(n, dtype=np.int64)
        order = sorted(range(len(ins)), key=lambda i: -len(ins[i]))
        padded = real = 0
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.dtype == torch.bfloat16 else torch.autocast("cpu", enabled=False)
        with torch.inference_mode(), autocast:
            for b in range(0, len(order), batch_size):
                rows = order[b : b + batch_size]
                L = len(ins[rows[0]])
                x = np.zeros((len(rows), L), dtype=np.int64)
                y = np.full((len(rows), L), -1, dtype=np.int64)
                for r, i in enumerate(rows):
                    x[r, : len(ins[i])] = ins[i]
                    y[r, : len(tgts[i])] = tgts[i]
                padded += x.size
                real += sum(len(ins[i]) for i in rows)
                xt = torch.from_numpy(x).to(self.device, non_blocking=True)
                yt = torch.from_numpy(y).to(self.device, non_blocking=True)
                h = hidden_states(self.model, xt)
                losses = torch.zeros(y.shape, dtype=torch.float32, device=self.device)
                step = max(1, LOGIT_ELEMENTS // (L * self.model.embed.shape[0]))  # rows per logits chunk
                for r in range(0, len(rows), step):
                    lg = F.linear(h[r : r + step], self.model.embed).float()
                    tg = yt[r : r + step]
                    losses[r : r + step] = F.cross_entropy(lg.view(-1, lg.shape[-1]), tg.clamp_min(0).reshape(-1), reduction="none").view(tg.shape)
                losses = torch.where(yt >= 0, losses, 0.0).sum(1).double().cpu().numpy()
                np.add.at(nll, owner[rows], losses)
                np.add.at(count, owner[rows], (y >= 0).sum(1))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if per == "byte":
            units = np.zeros(n, dtype=np.int64)
            for d, ids in enumerate(docs):
                if len(ids) == 0:
                    continue
                whole = len(ids) <= max_tokens and not cut[d]
                units[d] = len(texts[d].encode("utf-8")) + 1 if whole else len(self.tokenizer.decode(ids[:max_tokens]).encode("utf-8"))
        elif per == "token":
            units = count
        else:
            raise ValueError(f"per must be token or byte, not {per!r}")
        with np.errstate(invalid="ignore"):
            ppl = np.where(count > 0, np.exp(nll / np.maximum(units, 1)), np.nan)
        facts = {
            "tokens_scored": int(count.sum()),
            "documents_truncated": int(sum(len(d) > max_tokens or c for d, c in zip(docs, cut))),
            "windows": len(ins),
            "padded_positions": int(padded - real),
            "positions": int(real),
            "tokenize_s": round(t1 - t0, 4),
            "forward_s": round(t2 - t1, 4),
        }
        return ppl, count, facts


@functools.lru_cache(maxsize=2)
def cached_scorer(path: str, sha256: str, device: str) -> LmScorer:
    """One loaded model per worker process and model version (``sha256`` keys the cache)."""
    return LmScorer(path, device, expected_sha256=sha256)


def nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]
