"""A decoder-only transformer in the Llama layout: rotary positions (Llama's rotate-half
convention), RMSNorm, SwiGLU MLP, tied input/output embeddings, causal attention through
``scaled_dot_product_attention``.  Module names follow ``LlamaForCausalLM`` so that export is a
rename (``model.`` prefix), see ``export.py``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

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

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> "ModelConfig":
        if self.dim % self.n_heads or self.head_dim % 2:
            raise TrainError(f"dim {self.dim} must split into {self.n_heads} heads of even size", hint="change dim or n_heads")
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


def rope_cache(cfg: ModelConfig, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64, device=device).float() / cfg.head_dim))
    freqs = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)  # rotate-half layout: [f0..f(d/2-1), f0..f(d/2-1)]
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, cache: "KVCache | None" = None, layer: int = 0):
        B, T, C = x.shape
        if FUSED_PROJECTIONS:  # one matmul for q, k and v; the weights stay three Llama-named tensors
            qkv = F.linear(x, torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])).split(C, dim=-1)
        else:
            qkv = (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in qkv)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.append(layer, k, v)
        # a prefill is causal; one new token attends to every cached position
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class KVCache:
    """Keys and values of the positions seen so far, per layer: generation computes one new
    token per step instead of the whole context again. Filled by one prefill, then one token at
    a time (a multi-token step after the prefill would need a mask SDPA's is_causal does not give)."""

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.pos = 0  # positions cached (the next token's position)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k[layer] is not None:
            if k.shape[2] != 1:
                raise TrainError("a KV cache takes one prefill, then one token per step")
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
        if FUSED_PROJECTIONS:
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

    def forward(self, x, cos, sin, cache: KVCache | None = None, layer: int = 0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 style: scale residual projections by depth
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=self.cfg.init_std)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final-norm hidden states [B, T, dim] (what the LM head and fine-tuning heads read).
        With a ``cache``, ``idx`` continues the cached positions (generation)."""
        T = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise TrainError(f"sequence of {start + T} tokens exceeds the model's max_seq_len {self.cfg.max_seq_len}")
        cos, sin = rope_cache(self.cfg, start + T, idx.device)
        cos, sin = cos[start:], sin[start:]
        x = self.embed_tokens(idx)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        if cache is not None:
            cache.pos += T
        return self.norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """Logits [B, T, V]; with targets, (logits, mean cross-entropy)."""
        logits = F.linear(self.hidden(idx, cache), self.embed_tokens.weight)  # tied output head
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        """Trainable parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6N for the weights (the tied matrix
        counted once: it is the output head's matmul) + 12·L·d·T for attention scores and values."""
        T = seq_len or self.cfg.max_seq_len
        return 6 * self.num_params() + 12 * self.cfg.n_layers * self.cfg.dim * T


def config_dict(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)
