"""A decoder-only transformer in the Llama layout: rotary positions (Llama's rotate-half
convention), RMSNorm, SwiGLU MLP, causal attention through ``scaled_dot_product_attention``.
Module names follow ``LlamaForCausalLM`` so that export is a rename (``model.`` prefix), see
``export.py``.

Our presets use tied embeddings, one key/value head per query head and no biases. The same
module also runs published Llama-family checkpoints (``hf_import.py``: Llama 2/3, Qwen2/2.5,
Qwen3, Mistral): grouped-query attention (``n_kv_heads``), an explicit ``head_size``, q/k/v(/o)
biases, an untied ``lm_head``, per-head q/k RMSNorm (Qwen3) and RoPE scaling (``linear``, ``yarn``,
``llama3``), with logits equal to ``transformers``' (tests/test_hf_import.py)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from pipeline.train import TrainError


@dataclass
class ModelConfig:
    vocab_size: int = 32000
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 2048  # SwiGLU hidden size
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # Published checkpoints (hf_import.py); the defaults are our presets' layout.
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None: n_heads
    head_size: int | None = None  # per-head width when it is not dim / n_heads (Mistral, Qwen3)
    qkv_bias: bool = False  # Qwen2
    o_bias: bool = False  # Llama attention_bias=True, Qwen3 attention_bias
    qk_norm: bool = False  # Qwen3: RMSNorm over each head's q and k before RoPE
    tie_embeddings: bool = True  # False: a separate lm_head
    rope_scaling: dict | None = None  # {"rope_type": "linear" | "llama3", ...} as in config.json
    sliding_window: int | None = None  # attention window (Mistral v0.1); longer sequences are refused

    @property
    def head_dim(self) -> int:
        return self.head_size or self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def validate(self) -> "ModelConfig":
        if (self.head_size is None and self.dim % self.n_heads) or self.head_dim % 2:
            raise TrainError(f"dim {self.dim} must split into {self.n_heads} heads of even size", hint="change dim or n_heads")
        if self.n_heads % self.kv_heads:
            raise TrainError(f"{self.n_heads} query heads do not group into {self.kv_heads} key/value heads", hint="n_kv_heads must divide n_heads")
        kind = (self.rope_scaling or {}).get("rope_type", "default")
        if kind not in ROPE_TYPES:
            raise TrainError(f"RoPE scaling {kind!r} is not implemented", where="rope_scaling", hint=f"implemented: {', '.join(ROPE_TYPES)}")
        return self


# Architecture presets; vocab_size and max_seq_len come from the data.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=128, n_layers=4, n_heads=4, ffn_dim=352),  # ~0.8M + embeddings
    "25m": dict(dim=384, n_layers=8, n_heads=6, ffn_dim=1024),  # 14M + 384*vocab (26M at vocab 32k)
    "124m": dict(dim=768, n_layers=12, n_heads=12, ffn_dim=2048),  # GPT-2 small: 85M + 768*vocab (124M at vocab 50k)
}


# q/k/v and gate/up as one wider matmul each (joined weights: autocast copies them to bf16 anyway):
# a wider GEMM keeps a GPU busier. False: separate matmuls (benchmarks/bench_train.py --unfused).
FUSED_PROJECTIONS = True
VOCAB_MULTIPLE = 64  # tensor-core friendly: the embedding / LM-head matmul has this many rows more at most


ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def padded_vocab(n: int) -> int:
    """The model's vocabulary for a tokenizer of ``n`` ids: rounded up to a multiple of 64 (the
    extra ids are never inputs or targets; sampling masks them)."""
    return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise TrainError(f"unknown model preset {name!r}", where="preset", hint=f"use one of: {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides}).validate()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # as LlamaRMSNorm: normalize in float32
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(cfg: ModelConfig, device=None) -> torch.Tensor:
    """Inverse frequencies as transformers computes them for default, ``linear``, ``llama3`` and
    ``yarn`` RoPE (``rope_attention_scaling`` gives yarn's cos/sin factor; 1.0 for the others)."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
    r = cfg.rope_scaling or {}
    kind = r.get("rope_type", "default")
    if kind == "linear":
        return inv / r["factor"]
    if kind == "llama3":  # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth band between
        factor, lo, hi, old = r["factor"], r["low_freq_factor"], r["high_freq_factor"], r["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        out = torch.where(wl > old / lo, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        medium = ~(wl < old / hi) & ~(wl > old / lo)
        return torch.where(medium, (1 - smooth) * out / factor + smooth * out, out)
    if kind == "yarn":  # YaRN: interpolate the slow dimensions by `factor`, keep the fast ones, a linear ramp between
        base, factor, old = cfg.rope_theta, r["factor"], r["original_max_position_embeddings"]
        fast, slow = r.get("beta_fast") or 32, r.get("beta_slow") or 1

        def dim_for(rotations: float) -> float:  # the dimension that turns `rotations` times over the original context
            return (d * math.log(old / (rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = dim_for(fast), dim_for(slow)
        if r.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        high = high + 0.001 if low == high else high
        ramp = ((torch.arange(d // 2, dtype=torch.float32, device=device) - low) / (high - low)).clamp(0, 1)
        pos = base ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
        keep = 1 - ramp  # 1: extrapolate (original frequency), 0: interpolate (divided by factor)
        return (1.0 / (factor * pos)) * (1 - keep) + (1.0 / pos) * keep
    return inv


def rope_attention_scaling(cfg: ModelConfig) -> float:
    """YaRN's factor on cos and sin (``attention_factor``, or 0.1·ln(factor) + 1); 1.0 otherwise."""
    r = cfg.rope_scaling or {}
    if r.get("rope_type") != "yarn":
        return 1.0
    if r.get("attention_factor") is not None:
        return float(r["attention_factor"])

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if r.get("mscale") and r.get("mscale_all_dim"):
        return mscale(r["factor"], r["mscale"]) / mscale(r["factor"], r["mscale_all_dim"])
    return mscale(r["factor"])


def rope_cache(cfg: ModelConfig, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = torch.outer(torch.arange(T, device=device, dtype=torch.float32), rope_inv_freq(cfg, device))
    emb = torch.cat([freqs, freqs], dim=-1)  # rotate-half layout: [f0..f(d/2-1), f0..f(d/2-1)]
    scale = rope_attention_scaling(cfg)
    return emb.cos() * scale, emb.sin() * scale


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def fused(module: nn.Module) -> bool:
    """Whether ``module`` joins its projections into one matmul: off where LoRA wraps them
    (the adapters sit in the Linear modules' forward, which a joined matmul would skip)."""
    return FUSED_PROJECTIONS and getattr(module, "fuse", True)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, q, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, kv, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, kv, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(q, cfg.dim, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.qk_norm = cfg.qk_norm

    def forward(self, x, cos, sin, cache: "KVCache | None" = None, layer: int = 0, mask: torch.Tensor | None = None):
        B, T, _ = x.shape
        sizes = [self.n_heads * self.head_dim, self.n_kv * self.head_dim, self.n_kv * self.head_dim]
        if fused(self):  # one matmul for q, k and v; the weights stay three Llama-named tensors
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]) if self.q_proj.bias is not None else None
            q, k, v = F.linear(x, w, b).split(sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = q.view(B, T, self.n_heads, self.head_dim), k.view(B, T, self.n_kv, self.head_dim), v.view(B, T, self.n_kv, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.append(layer, k, v)
        gqa = self.n_kv != self.n_heads
        if mask is not None:  # batched generation: padding and causality in one boolean mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        else:  # a prefill is causal; one new token attends to every cached position
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class KVCache:
    """Keys and values of the positions seen so far, per layer: generation computes one new
    token per step instead of the whole context again. Filled by one prefill, then one token at
    a time (a multi-token step after the prefill needs an explicit ``mask``)."""

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.pos = 0  # positions cached (the next token's position)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k[layer] is not None:
            k, v = torch.cat([self.k[layer], k], dim=2), torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        if fused(self):
            gate, up = F.linear(x, torch.cat([self.gate_proj.weight, self.up_proj.weight])).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.grad_checkpointing = False  # recompute each block's activations in the backward pass: memory for time
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 style: scale residual projections by depth
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=self.cfg.init_std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states [B, T, dim] (what the LM head and fine-tuning heads read).
        With a ``cache``, ``idx`` continues the cached positions (generation). Batched generation
        of prompts of different lengths (left-padded) passes each token's ``positions`` [B, T]
        and a boolean attention ``mask`` [B, 1, T, cached + T] (True: attend)."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start and T > 1 and mask is None:  # SDPA's is_causal aligns the query block with the first key
            raise TrainError("a KV cache takes one prefill, then one token per step (or an explicit mask)")
        end = start + T if positions is None else int(positions.max()) + 1
        if end > self.cfg.max_seq_len:
            raise TrainError(f"sequence of {end} tokens exceeds the model's max_seq_len {self.cfg.max_seq_len}")
        if self.cfg.sliding_window and end > self.cfg.sliding_window:
            raise TrainError(f"sequence of {end} tokens exceeds the model's sliding attention window {self.cfg.sliding_window}", hint="use sequences no longer than the window (sliding-window attention is not implemented)")
        cos, sin = rope_cache(self.cfg, max(end, start + T), idx.device)
        if positions is None:
            cos, sin = cos[start : start + T], sin[start : start + T]
        else:  # [B, 1, T, head_dim]: broadcast over heads
            cos, sin = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
        x = self.embed_tokens(idx)
        for i, layer in enumerate(self.layers):
            if self.grad_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, None, i, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cache, i, mask)
        if cache is not None:
            cache.pos += T
        return self.norm(x)

    def output_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """Logits [B, T, V]; with targets, (logits, mean cross-entropy)."""
        logits = F.linear(self.hidden(idx, cache, positions, mask), self.output_weight())
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        """Trainable parameters, a tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6N for the weights (a tied matrix
        counted once: it is the output head's matmul; an untied input embedding is a lookup, not
        a matmul) + 12·L·(heads·head_dim)·T for attention scores and values."""
        T = seq_len or self.cfg.max_seq_len
        n = self.num_params() - (0 if self.lm_head is None else self.embed_tokens.weight.numel())
        return 6 * n + 12 * self.cfg.n_layers * self.cfg.n_heads * self.cfg.head_dim * T


def config_dict(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)
