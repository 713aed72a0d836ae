"""Start from a published Llama-family checkpoint (Llama 2/3, Qwen2/2.5, Qwen3, Mistral):
``pipeline train --init-from PATH_OR_HUB_ID`` and fine-tuning from one.

The checkpoint's weights are loaded into our own ``model.Transformer`` (grouped-query attention,
explicit head size, q/k/v/o biases, untied head, q/k norm and RoPE scaling are options of its
``ModelConfig``), so pretraining, fine-tuning, LoRA, generation and export all run one model
whose logits equal ``transformers``' (float32, tests/test_hf_import.py). We measured the
alternative, training the ``transformers`` module behind the same interface (``HFCausalLM``,
kept for the parity tests and ``python -m pipeline.train.hf_import bench``): the same speed and
memory on CPU (docs/training.md), so the one readable model wins.

A hub id is fetched with ``huggingface_hub.snapshot_download`` at a pinned ``revision`` (the
resolved commit is recorded); a local folder is pinned by the sha256 of its files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.train import TrainError
from pipeline.train import model as model_py
from pipeline.train.model import ROPE_TYPES, ModelConfig, Transformer

MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


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


DAMAGED = "the model folder is damaged or incomplete: download it again"


def read_config(path: str | Path) -> dict:
    f = Path(path) / "config.json"
    if not f.is_file():
        raise TrainError(f"{path} has no config.json", where=str(path), hint="give a Hugging Face model folder")
    try:
        config = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainError(f"config.json is not readable JSON ({exc})", where=str(f), hint=DAMAGED) from None
    if not isinstance(config, dict):
        raise TrainError("config.json is not a JSON object", where=str(f), hint=DAMAGED)
    return config


def spec_from_config(c: dict, where: str = "config.json") -> ImportSpec:
    try:
        return _spec(c)
    except KeyError as exc:
        raise TrainError(f"config.json lacks {exc.args[0]!r}", where=where, hint=DAMAGED) from None
    except (TypeError, ValueError) as exc:
        raise TrainError(f"config.json has a value of the wrong type ({exc})", where=where, hint=DAMAGED) from None


def _spec(c: dict) -> ImportSpec:
    mt = c.get("model_type")
    if mt not in MODEL_TYPES:
        raise TrainError(f"model_type {mt!r} is not a supported decoder", where="--init-from", hint=f"supported: {', '.join(MODEL_TYPES)}")
    # transformers 5 writes rope_parameters (with rope_theta inside); 4.x writes rope_theta + rope_scaling
    rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    rope.setdefault("rope_type", rope.get("type", "default"))
    theta = float(rope.pop("rope_theta", c.get("rope_theta", 10000.0)))
    if float(rope.get("partial_rotary_factor", c.get("partial_rotary_factor") or 1.0)) != 1.0:
        raise TrainError("partial rotary embeddings (partial_rotary_factor < 1) are not implemented", where="config.json", hint="pick a checkpoint that rotates whole heads (Llama, Qwen2/3, Mistral do)")
    if rope["rope_type"] in ("llama3", "yarn"):  # as transformers: the pretraining context, else the configured one
        rope["original_max_position_embeddings"] = c.get("original_max_position_embeddings") or rope.get("original_max_position_embeddings") or c.get("max_position_embeddings", 2048)
    if rope["rope_type"] == "yarn" and rope.get("factor") is None:
        rope["factor"] = c.get("max_position_embeddings", 2048) / rope["original_max_position_embeddings"]
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


def unsupported(spec: ImportSpec) -> list[str]:
    """What model.py cannot run exactly in this checkpoint (empty: it loads)."""
    gaps = []
    if spec.rope.get("rope_type", "default") not in ROPE_TYPES:
        gaps.append(f"RoPE scaling {spec.rope.get('rope_type')!r} (implemented: {', '.join(ROPE_TYPES)})")
    if spec.hidden_act != "silu":
        gaps.append(f"activation {spec.hidden_act!r}")
    if spec.mlp_bias:
        gaps.append("MLP biases")
    return gaps


def model_config(spec: ImportSpec) -> ModelConfig:
    """The ``ModelConfig`` that runs this checkpoint (its vocabulary as is: no padding)."""
    gaps = unsupported(spec)
    if gaps:
        raise TrainError(f"this {spec.model_type} checkpoint needs what the trainer does not implement: " + "; ".join(gaps), where="--init-from", hint="pick a checkpoint without these features")
    rope = {k: v for k, v in spec.rope.items() if k != "type"}
    return ModelConfig(
        vocab_size=spec.vocab_size, dim=spec.dim, n_layers=spec.n_layers, n_heads=spec.n_heads, ffn_dim=spec.ffn_dim,
        max_seq_len=spec.max_seq_len, rope_theta=spec.rope_theta, norm_eps=spec.norm_eps,
        n_kv_heads=spec.n_kv_heads if spec.n_kv_heads != spec.n_heads else None,
        head_size=spec.head_dim if spec.head_dim * spec.n_heads != spec.dim else None,
        qkv_bias=spec.qkv_bias, o_bias=spec.o_bias, qk_norm=spec.qk_norm, tie_embeddings=spec.tied,
        rope_scaling=rope if rope.get("rope_type", "default") != "default" else None,
        sliding_window=spec.sliding_window if spec.sliding_window and spec.sliding_window < spec.max_seq_len else None,
    ).validate()


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (one model.safetensors or shards listed in its index), float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    index = path / "model.safetensors.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrainError(f"unreadable safetensors index ({type(exc).__name__}: {exc})", where=str(index), hint=DAMAGED) from None
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not (path / name).is_file():
            raise TrainError(f"{path} has no {name}", where=str(path), hint="only safetensors checkpoints are read (no .bin / pickle): " + DAMAGED)
        try:
            state.update(load_file(str(path / name)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise TrainError(f"cannot read the weights ({type(exc).__name__}: {exc})", where=str(path / name), hint=DAMAGED) from None
    return {k: v.float() for k, v in state.items()}


def _native_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}


# ---------------------------------------------------------------- loading


def load_model(path: str | Path) -> tuple[Transformer, ImportSpec]:
    """Our Transformer holding the checkpoint's weights (float32), and what its config says."""
    path = Path(path)
    spec = spec_from_config(read_config(path), str(path / "config.json"))
    cfg = model_config(spec)
    with torch.device("meta"):  # no random init and no second copy: the checkpoint's tensors become the parameters
        model = Transformer(cfg)
    state = _native_names(load_state(path))
    if spec.tied:
        state.pop("lm_head.weight", None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # shapes that do not fit the config
        raise TrainError(f"the weights do not fit config.json ({str(exc).splitlines()[0][:300]} ...)", where=str(path), hint="the folder mixes files of different models: " + DAMAGED) from None
    if missing or unexpected:
        raise TrainError(f"the weights do not match the config: missing {missing[:4]}, unexpected {unexpected[:4]}", where=str(path), hint="the folder mixes files of different models: " + DAMAGED)
    return model, spec


HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.md", "*.jinja", "LICENSE*", "NOTICE*"]


def resolve(init_from: str, revision: str | None = None) -> tuple[Path, dict]:
    """The local folder of ``init_from`` (a folder, or a hub id fetched at ``revision``) and
    its origin record: where it came from and what pins it."""
    from pipeline.text.tokenizer import is_hub_id

    local = Path(init_from).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise TrainError("no config.json here: not a Hugging Face model folder", where=str(local), hint="give a folder with config.json + *.safetensors, or a hub id")
        return local, {"source": str(init_from), "revision": None, "path": str(local.resolve()), "files": folder_digests(local)}
    if not is_hub_id(str(init_from)):
        raise TrainError("not a folder and not a hub id (org/name)", where=f"--init-from {init_from}", hint="give a local model folder or a Hugging Face hub id such as Qwen/Qwen2.5-0.5B with --revision")
    if not revision:
        raise TrainError(f"{init_from} is not a folder here; as a hub id it needs a pinned revision", where="--init-from",
                         hint="check the path, or add --revision <commit sha or tag> for the hub (what you train from must not change under you)")
    try:
        from huggingface_hub import snapshot_download

        # consolidated*.safetensors: Mistral's repos also ship the weights in their own layout (a second copy)
        folder = Path(snapshot_download(str(init_from), revision=revision, allow_patterns=HUB_PATTERNS, ignore_patterns=["consolidated*"]))
    except Exception as exc:  # network, unknown repo or revision, gated model
        raise TrainError(f"cannot fetch {init_from}@{revision} from the Hugging Face hub ({type(exc).__name__}: {exc})", where="--init-from",
                         hint="check the id, the revision, network access and HF_TOKEN for gated models; or download the folder and give its path") from None
    return folder, {"source": str(init_from), "revision": revision, "commit": folder.name, "path": str(folder), "files": folder_digests(folder)}


def folder_digests(folder: Path) -> dict[str, str]:
    """sha256 of the files that define the model (config, weights, tokenizer)."""
    from pipeline.common.storage import file_digests

    names = sorted(p.name for p in folder.iterdir() if p.is_file() and (p.suffix in (".json", ".safetensors", ".model") or p.name.endswith(".jinja")))
    return {n: file_digests(folder / n)["sha256"] for n in names}


def load_published(init_from: str, revision: str | None = None) -> tuple[Transformer, dict, Path]:
    """A published model (folder or hub id at ``revision``) in our Transformer, its origin record
    (source, revision, file digests, model type, config, card facts) and its local folder."""
    folder, origin = resolve(init_from, revision)
    model, spec = load_model(folder)
    origin.update(model_type=spec.model_type, config=read_config(folder), card=card_facts(folder))
    return model, origin, folder


def base_model_facts(origin: dict) -> dict:
    """What a summary (and the report) says of the published model a run started from."""
    card = origin.get("card") or {}
    return {"source": origin.get("source"), "revision": origin.get("commit") or origin.get("revision"), "model_type": origin.get("model_type"),
            "license": card.get("license"), "license_name": card.get("license_name"), "license_files": card.get("license_files")}


TOKEN_FILES = ("tokenizer.json", "tokenizer.model")  # what maps text to ids; the rest (config, chat template) does not change the ids


def tokenizer_mismatch(model_files: dict[str, str], data_files: dict[str, str], model_vocab: int, data_vocab: int | None) -> str | None:
    """Why token data cannot feed this model (None: it can). Data is in the model's token space
    when it was made with the model's own tokenizer file (same sha256)."""
    shared = [n for n in TOKEN_FILES if n in model_files and n in data_files]
    if not shared:
        have = ", ".join(n for n in TOKEN_FILES if n in model_files) or "none"
        return f"the model folder's tokenizer files ({have}) and the data's ({', '.join(sorted(data_files)) or 'none'}) have nothing to compare"
    for n in shared:
        if model_files[n] != data_files[n]:
            return f"the data was tokenized with another tokenizer: {n} sha256 {data_files[n][:12]}… vs the model's {model_files[n][:12]}…"
    if data_vocab is not None and data_vocab > model_vocab:
        return f"the data's tokenizer has {data_vocab} ids, the model's embedding {model_vocab}"
    return None


def card_facts(folder: Path) -> dict:
    """License and identity facts from the original model card (README.md front matter)."""
    import yaml

    readme = folder / "README.md"
    meta: dict = {}
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                meta = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                meta = {}
    keep = ("license", "license_name", "license_link", "language", "base_model", "tags", "pipeline_tag", "library_name")
    facts = {k: meta[k] for k in keep if isinstance(meta, dict) and k in meta}
    facts["license_files"] = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.upper().startswith(("LICENSE", "NOTICE", "USE_POLICY")))
    return facts


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
    loaded into model.py (a) vs the transformers module with sdpa and eager attention (b); model.py's
    own preset layout of the same width (MHA, tied) for reference."""
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
            "a_imported_into_model_py": load_model(d)[0],
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
