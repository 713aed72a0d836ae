"""Import a published Llama-family checkpoint (Llama 2/3, Qwen2/2.5, Qwen3, Mistral) for ``--init-from``.

FIRST SLICE of issue 15 item 2 (see /work/notes/issue15-import.md).  Two options are measured:

(a) load the weights into a native decoder.  ``pipeline/train/model.py``'s ``Transformer`` only
    covers the subset "one KV head per query head, no biases, tied embeddings, plain RoPE,
    head_dim == dim / n_heads" (``native_gaps`` says what a checkpoint needs beyond that;
    ``load_into_native`` loads it when nothing is missing).  ``ImportedDecoder`` below is a
    prototype of the *minimal extension* model.py would need (GQA, q/k/v biases, untied head,
    explicit head_dim, RoPE ``linear`` / ``llama3`` scaling); it reuses model.py's RMSNorm, MLP,
    rotate-half and keeps Llama's module names, so its state dict is the checkpoint's minus the
    ``model.`` prefix.

(b) train the ``transformers`` module itself: ``HFCausalLM`` wraps ``AutoModelForCausalLM`` with
    the native ``forward(idx, targets) -> (logits, loss)`` interface.

``python -m pipeline.train.hf_import bench`` measures forward+backward tokens/s of both on CPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.train import TrainError
from pipeline.train import model as model_py
from pipeline.train.model import MLP, ModelConfig, RMSNorm, Transformer, rotate_half

MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")
ROPE_TYPES = ("default", "linear", "llama3")  # what ImportedDecoder computes; yarn / dynamic / longrope: not yet


@dataclass
class ImportSpec:
    """What a Llama-family ``config.json`` says, in our terms."""

    model_type: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    max_seq_len: int
    rope_theta: float
    rope: dict = field(default_factory=lambda: {"rope_type": "default"})
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tied: bool = False
    sliding_window: int | None = None  # attention window in effect (None: full attention)
    hidden_act: str = "silu"
    qk_norm: bool = False  # Qwen3: RMSNorm over each head's q and k before RoPE
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None


def read_config(path: str | Path) -> dict:
    f = Path(path) / "config.json"
    if not f.is_file():
        raise TrainError(f"{path} has no config.json", where="--init-from", hint="give a Hugging Face model folder")
    return json.loads(f.read_text())


def spec_from_config(c: dict) -> ImportSpec:
    mt = c.get("model_type")
    if mt not in MODEL_TYPES:
        raise TrainError(f"model_type {mt!r} is not a supported decoder", where="--init-from", hint=f"supported: {', '.join(MODEL_TYPES)}")
    # transformers 5 writes rope_parameters (with rope_theta inside); 4.x writes rope_theta + rope_scaling
    rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    rope.setdefault("rope_type", rope.get("type", "default"))
    theta = float(rope.pop("rope_theta", c.get("rope_theta", 10000.0)))
    n_heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // n_heads
    if mt in ("qwen2", "qwen3"):
        qkv_bias = True if mt == "qwen2" else bool(c.get("attention_bias", False))
        o_bias = False if mt == "qwen2" else qkv_bias
        types = c.get("layer_types") or []
        window = c.get("sliding_window") if c.get("use_sliding_window") and (not types or "sliding_attention" in types) else None
    else:
        qkv_bias = o_bias = bool(c.get("attention_bias", False))
        window = c.get("sliding_window") if mt == "mistral" else None
    return ImportSpec(
        model_type=mt, vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
        n_heads=n_heads, n_kv_heads=c.get("num_key_value_heads") or n_heads, head_dim=head_dim,
        ffn_dim=c["intermediate_size"], max_seq_len=c.get("max_position_embeddings", 2048), rope_theta=theta,
        rope=rope, norm_eps=c.get("rms_norm_eps", 1e-6), qkv_bias=qkv_bias, o_bias=o_bias,
        mlp_bias=bool(c.get("mlp_bias", False)), tied=bool(c.get("tie_word_embeddings", False)),
        sliding_window=window, hidden_act=c.get("hidden_act", "silu"), qk_norm=mt == "qwen3",
        bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"),
    )


def native_gaps(spec: ImportSpec) -> list[str]:
    """What pipeline/train/model.py's Transformer lacks to run this checkpoint exactly."""
    gaps = []
    if spec.n_kv_heads != spec.n_heads:
        gaps.append(f"grouped-query attention ({spec.n_heads} query heads, {spec.n_kv_heads} key/value heads)")
    if spec.head_dim * spec.n_heads != spec.dim:
        gaps.append(f"head_dim {spec.head_dim} != hidden_size/heads {spec.dim // spec.n_heads}")
    if spec.qkv_bias or spec.o_bias:
        gaps.append("attention biases (q/k/v" + ("/o" if spec.o_bias else "") + ")")
    if spec.mlp_bias:
        gaps.append("MLP biases")
    if not spec.tied:
        gaps.append("untied output head (lm_head.weight)")
    if spec.rope.get("rope_type", "default") != "default":
        gaps.append(f"RoPE scaling {spec.rope.get('rope_type')!r}")
    if spec.hidden_act != "silu":
        gaps.append(f"activation {spec.hidden_act!r}")
    if spec.qk_norm:
        gaps.append("per-head q/k RMSNorm (Qwen3 q_norm, k_norm)")
    if spec.sliding_window and spec.sliding_window < spec.max_seq_len:
        gaps.append(f"sliding-window attention ({spec.sliding_window} < {spec.max_seq_len} positions)")
    return gaps


def prototype_gaps(spec: ImportSpec) -> list[str]:
    """What even ImportedDecoder (the proposed extension) does not do yet."""
    gaps = []
    if spec.rope.get("rope_type", "default") not in ROPE_TYPES:
        gaps.append(f"RoPE scaling {spec.rope.get('rope_type')!r} (done: {', '.join(ROPE_TYPES)})")
    if spec.hidden_act != "silu":
        gaps.append(f"activation {spec.hidden_act!r}")
    if spec.mlp_bias:
        gaps.append("MLP biases")
    return gaps


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (one model.safetensors or shards listed in its index), float32."""
    from safetensors.torch import load_file

    path = Path(path)
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not (path / name).is_file():
            raise TrainError(f"{path} has no {name}", where="--init-from", hint="only safetensors checkpoints are read")
        state.update(load_file(str(path / name)))
    return {k: v.float() for k, v in state.items()}


def _native_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}


# ---------------------------------------------------------------- option (a): native weights


def load_into_native(path: str | Path) -> Transformer:
    """model.py's Transformer with the checkpoint's weights; refuses what model.py cannot run."""
    spec = spec_from_config(read_config(path))
    gaps = native_gaps(spec)
    if gaps:
        raise TrainError(f"{path}: pipeline/train/model.py cannot run this checkpoint: " + "; ".join(gaps),
                         where="--init-from", hint="use ImportedDecoder (hf_import.py) or the transformers module")
    cfg = ModelConfig(vocab_size=spec.vocab_size, dim=spec.dim, n_layers=spec.n_layers, n_heads=spec.n_heads,
                      ffn_dim=spec.ffn_dim, max_seq_len=spec.max_seq_len, rope_theta=spec.rope_theta, norm_eps=spec.norm_eps)
    model = Transformer(cfg)
    state = _native_names(load_state(path))
    state.pop("lm_head.weight", None)  # tied: the same tensor as embed_tokens
    model.load_state_dict(state, strict=True)
    return model


def rope_inv_freq(spec: ImportSpec) -> torch.Tensor:
    """Inverse frequencies as transformers computes them for default / linear / llama3 RoPE
    (all three have attention scaling 1.0)."""
    d = spec.head_dim
    inv = 1.0 / (spec.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    kind = spec.rope.get("rope_type", "default")
    if kind == "linear":
        return inv / spec.rope["factor"]
    if kind == "llama3":
        r = spec.rope
        factor, lo, hi, old = r["factor"], r["low_freq_factor"], r["high_freq_factor"], r["original_max_position_embeddings"]
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        return torch.where(medium, smoothed, out)
    if kind != "default":
        raise TrainError(f"RoPE type {kind!r} is not implemented", where="--init-from", hint=f"implemented: {', '.join(ROPE_TYPES)}")
    return inv


class GQAttention(nn.Module):
    """model.py's Attention plus: n_kv_heads < n_heads, explicit head_dim, optional biases."""

    def __init__(self, spec: ImportSpec):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = spec.n_heads, spec.n_kv_heads, spec.head_dim
        q, kv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        self.q_proj = nn.Linear(spec.dim, q, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(spec.dim, kv, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(spec.dim, kv, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(q, spec.dim, bias=spec.o_bias)
        if spec.qk_norm:
            self.q_norm = RMSNorm(spec.head_dim, spec.norm_eps)
            self.k_norm = RMSNorm(spec.head_dim, spec.norm_eps)
        self.qk_norm = spec.qk_norm

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        if model_py.FUSED_PROJECTIONS:  # as model.py: one matmul for q, k, v
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]) if self.q_proj.bias is not None else None
            q, k, v = F.linear(x, w, b).split([self.n_heads * self.head_dim, self.n_kv * self.head_dim, self.n_kv * self.head_dim], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k = q.view(B, T, self.n_heads, self.head_dim), k.view(B, T, self.n_kv, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class _Block(nn.Module):
    def __init__(self, spec: ImportSpec):
        super().__init__()
        self.input_layernorm = RMSNorm(spec.dim, spec.norm_eps)
        self.self_attn = GQAttention(spec)
        self.post_attention_layernorm = RMSNorm(spec.dim, spec.norm_eps)
        self.mlp = MLP(ModelConfig(dim=spec.dim, ffn_dim=spec.ffn_dim, n_heads=1))

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class ImportedDecoder(nn.Module):
    """Prototype of the model.py extension: the native decoder generalized to Llama / Qwen2 /
    Mistral checkpoints. Same module names as the checkpoint (minus ``model.``). No KV cache yet."""

    def __init__(self, spec: ImportSpec):
        super().__init__()
        gaps = prototype_gaps(spec)
        if gaps:
            raise TrainError("checkpoint needs: " + "; ".join(gaps), where="--init-from")
        self.spec = spec
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.dim)
        self.layers = nn.ModuleList(_Block(spec) for _ in range(spec.n_layers))
        self.norm = RMSNorm(spec.dim, spec.norm_eps)
        self.lm_head = None if spec.tied else nn.Linear(spec.dim, spec.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(spec), persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        if T > self.spec.max_seq_len:
            raise TrainError(f"sequence of {T} tokens exceeds max_position_embeddings {self.spec.max_seq_len}")
        if self.spec.sliding_window and T > self.spec.sliding_window:
            raise TrainError(f"sequence of {T} tokens exceeds the sliding window {self.spec.sliding_window} (not implemented)")
        freqs = torch.outer(torch.arange(T, device=idx.device, dtype=torch.float32), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        x = self.embed_tokens(idx)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        logits = F.linear(x, self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_imported(path: str | Path) -> ImportedDecoder:
    spec = spec_from_config(read_config(path))
    with torch.device("meta"):  # no random init, no second copy: the checkpoint's tensors are the parameters
        model = ImportedDecoder(spec)
    state = _native_names(load_state(path))
    if spec.tied:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise TrainError(f"{path}: weights do not map: missing {missing[:5]}, unexpected {unexpected[:5]}", where="--init-from")
    model.inv_freq = rope_inv_freq(spec)  # the non-persistent buffer was built on meta
    return model


# ---------------------------------------------------------------- option (b): the transformers module


class HFCausalLM(nn.Module):
    """``AutoModelForCausalLM`` behind the native interface: forward(idx, targets) -> logits or
    (logits, mean cross-entropy), the same loss convention as model.py (targets already shifted)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    @classmethod
    def from_pretrained(cls, path: str | Path, attn_implementation: str = "sdpa") -> "HFCausalLM":
        from transformers import AutoModelForCausalLM

        spec_from_config(read_config(path))  # refuses other architectures with our message
        return cls(AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation=attn_implementation))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.hf(input_ids=idx, use_cache=False).logits
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------- tiny checkpoints + benchmark


def make_tiny_checkpoint(dest: str | Path, family: str, seed: int = 0, **overrides) -> Path:
    """A random ``transformers`` model of ``family`` (llama / qwen2 / mistral) saved to ``dest``."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    base = dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
    base.update(overrides)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}[family]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cls(**base), dtype=torch.float32)
    with torch.no_grad():  # biases (zeros) and norms (ones) at init: make them count in the parity check
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
            elif n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.save_pretrained(str(dest))
    return Path(dest)


def bench(steps: int = 2, batch: int = 4, seq: int = 256, threads: int | None = None, fused: bool = True, reverse: bool = False, rounds: int = 5, size: str = "19m") -> dict:
    """Forward+backward tokens/s on CPU, ~19M-parameter Qwen2-shaped (GQA, biases, untied) model:
    ImportedDecoder (a) vs the transformers module with sdpa and eager attention (b); model.py's
    own Transformer of the same width (MHA, tied) for reference."""
    import tempfile
    import time

    if threads:
        torch.set_num_threads(threads)
    model_py.FUSED_PROJECTIONS = fused
    shape = dict(vocab_size=8192, hidden_size=384, intermediate_size=1024, num_hidden_layers=8,
                 num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=seq)
    if size == "125m":  # the 124m preset's body with 4 KV heads, untied 32k vocabulary
        shape.update(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4)
    out = {"size": size, "batch": batch, "seq": seq, "steps": steps, "rounds": rounds, "threads": torch.get_num_threads(), "fused_projections": fused}
    with tempfile.TemporaryDirectory() as d:
        make_tiny_checkpoint(d, "qwen2", **shape)
        models = {
            "a_imported_decoder": load_imported(d),
            "b_transformers_sdpa": HFCausalLM.from_pretrained(d, "sdpa"),
            **({} if size != "19m" else {"b_transformers_eager": HFCausalLM.from_pretrained(d, "eager")}),
            "native_model_py_mha_tied": Transformer(ModelConfig(vocab_size=shape["vocab_size"], dim=shape["hidden_size"], n_layers=shape["num_hidden_layers"],
                                                                n_heads=shape["num_attention_heads"], ffn_dim=shape["intermediate_size"], max_seq_len=seq)),
        }
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, shape["vocab_size"], (batch, seq + 1), generator=g)
        order = list(reversed(models)) if reverse else list(models)
        times: dict[str, list[float]] = {n: [] for n in order}
        for r in range(rounds + 1):  # interleaved rounds (a noisy, shared CPU); round 0 warms up
            for name in order:
                m = models[name].train()
                t0 = time.perf_counter()
                for _ in range(steps):
                    _, loss = m(x[:, :-1], x[:, 1:])
                    loss.backward()
                    m.zero_grad(set_to_none=True)
                if r:
                    times[name].append(time.perf_counter() - t0)
        for name in order:
            ts = sorted(times[name])
            out[name] = {"params_M": round(sum(p.numel() for p in models[name].parameters()) / 1e6, 2),
                         "tokens_per_s_median": round(steps * batch * seq / ts[len(ts) // 2], 1),
                         "tokens_per_s_best": round(steps * batch * seq / ts[0], 1)}
    return out


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["bench"]:  # bench [unfused] [reverse]
        big = "125m" in sys.argv  # bench 125m: 1 step x 3 rounds, batch 2 x 256
        kw = dict(size="125m", steps=1, rounds=3, batch=2) if big else {}
        print(json.dumps(bench(fused="unfused" not in sys.argv, reverse="reverse" in sys.argv, **kw), indent=2))
