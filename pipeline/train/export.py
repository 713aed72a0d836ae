"""Export a checkpoint to Hugging Face format as ``LlamaForCausalLM``.

The native model already uses Llama's layout and conventions, so the export is a rename:
rotary in the rotate-half convention (``cat([freqs, freqs])``, not interleaved pairs) with the
same ``rope_theta``, RMSNorm computed in float32 with the same eps (``rms_norm_eps``), SwiGLU
``down(silu(gate(x)) * up(x))``, no biases, one key/value head per query head, tied embeddings
(``tie_word_embeddings=True``: no ``lm_head.weight`` is written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pipeline.train import TrainError
from pipeline.train.model import ModelConfig, Transformer

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def llama_config(cfg: ModelConfig, **special):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        initializer_range=cfg.init_std,
        torch_dtype="float32",
        **special,
    )


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Native names -> Llama names (``model.`` prefix; the tied head is not a separate tensor)."""
    return {f"model.{k}": v.detach().float().contiguous() for k, v in model.state_dict().items()}


def load_native(checkpoint: str | Path) -> tuple[Transformer, dict]:
    from safetensors.torch import load_file

    ckpt = Path(checkpoint)
    if (ckpt / "checkpoint").is_dir():  # a training out_dir
        ckpt = ckpt / "checkpoint"
    if not (ckpt / "state.json").is_file() or not (ckpt / "model.safetensors").is_file():
        raise TrainError("no checkpoint here (state.json + model.safetensors)", where=str(ckpt), hint="pass a training out_dir or its checkpoint/ folder")
    state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    model = Transformer(ModelConfig(**state["model"]))
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    return model.eval(), state


def export_hf(checkpoint: str | Path, dest: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ generation config) and the tokenizer
    files to ``dest``; ``AutoModelForCausalLM.from_pretrained(dest)`` then gives the native
    model's logits.  The tokenizer defaults to ``<run out>/tokenizer`` beside the trained tokens."""
    from transformers import LlamaForCausalLM

    model, state = load_native(checkpoint)
    tok = Path(tokenizer_dir) if tokenizer_dir else Path(state["data"]["tokens_dir"]).parent / "tokenizer"
    special = {}
    if (tok / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model"))
        special = {k: v for k, v in (("bos_token_id", sp.bos_id()), ("eos_token_id", sp.eos_id()), ("pad_token_id", None)) if v is None or v >= 0}
    hf = LlamaForCausalLM(llama_config(model.cfg, **special))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise TrainError(f"weights do not map onto Llama: missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf.tie_weights()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(dest), safe_serialization=True)
    copied = []
    if tok.is_dir():
        for name in TOKENIZER_FILES:
            if (tok / name).is_file():
                shutil.copy2(tok / name, dest / name)
                copied.append(name)
    if not copied:
        raise TrainError("tokenizer files not found; the export has weights only", where=str(tok), hint="pass tokenizer_dir=<out>/tokenizer")
    return dest
