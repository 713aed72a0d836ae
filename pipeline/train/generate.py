"""Sampling text from a trained model: the sample generations logged at each evaluation and
``pipeline generate RUN "prompt"``.

Sampling draws from its own CPU ``torch.Generator`` (seeded), never from the global RNG, so
logging samples during training changes neither the data order nor the weights. Generation uses
a KV cache: the prompt is prefilled once, then each new token computes one position; when the
context reaches ``max_seq_len`` the last window is prefilled again (the tokens are the same as
recomputing the whole context each step; benchmarks/bench_generate.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.train import TrainError
from pipeline.train.model import KVCache, ModelConfig, Transformer


@torch.no_grad()
def sample(
    model: Transformer,
    context: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    eos_id: int | None = None,
    autocast=contextlib.nullcontext,
    vocab_limit: int | None = None,
) -> list[int]:
    """New token ids after ``context`` (greedy when ``temperature`` <= 0); stops after ``eos_id``.
    ``vocab_limit``: the tokenizer's size, when the model's vocabulary is padded beyond it."""
    if not context:
        raise TrainError("sampling needs at least one context token", hint="give a prompt (the document-start token is added for you)")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    window = model.cfg.max_seq_len
    tokens = list(context)
    out: list[int] = []
    was_training = model.training
    model.eval()

    def prefill() -> tuple[KVCache, torch.Tensor]:
        # the last max_seq_len tokens at positions 0.., as in training (also when the window slides)
        cache = KVCache(len(model.layers))
        with autocast():
            logits = model(torch.tensor([tokens[-window:]], dtype=torch.long, device=device), cache=cache)
        return cache, logits[0, -1].float()

    try:
        cache, logits = prefill()
        for step in range(max_new_tokens):
            if step:  # the logits of the token just chosen: one position through the cache
                if cache.pos >= window:
                    cache, logits = prefill()
                else:
                    with autocast():
                        logits = model(torch.tensor([[tokens[-1]]], dtype=torch.long, device=device), cache=cache)[0, -1].float()
            if vocab_limit is not None:
                logits = logits[:vocab_limit]
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = int(torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=gen))
            out.append(nxt)
            tokens.append(nxt)
            if nxt == eos_id:
                break
    finally:
        model.train(was_training)
    return out


def strip_eos(ids: list[int], eos_id: int | None) -> list[int]:
    return ids[:-1] if ids and ids[-1] == eos_id else ids


# ------------------------------------------------------------------------------------ tokenizer
def tokenizer_files_match(folder: Path, files: dict[str, str]) -> bool:
    """True when ``folder`` holds every recorded tokenizer file with the recorded sha256."""
    for name, digest in files.items():
        p = folder / name
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return False
    return True


def find_run_tokenizer(state: dict, extra: list[Path] = ()) -> Path:
    """The tokenizer a run was trained with: the folder recorded in its checkpoint (or beside its
    tokens, or an export's copy), checked against the recorded file hashes."""
    data = state.get("data", {})
    cands = [Path(p) for p in (data.get("tokenizer_dir"),) if p]
    if data.get("tokens_dir"):
        cands.append(Path(data["tokens_dir"]).parent / "tokenizer")
    cands += list(extra)
    files = data.get("tokenizer_files") or {}
    seen = []
    for c in cands:
        if c.is_dir() and any((c / n).is_file() for n in ("tokenizer.model", "tokenizer.json")):
            if not files or tokenizer_files_match(c, files):
                return c
            seen.append(str(c))
    if seen:
        raise TrainError(
            "the tokenizer found differs from the one this run was trained with (file hashes)",
            where=", ".join(seen),
            hint="restore the run's tokenizer/ folder (the ids would decode to the wrong text)",
        )
    raise TrainError("the run's tokenizer was not found", where=", ".join(str(c) for c in cands) or "checkpoint", hint="keep the shards' tokenizer/ folder, or generate from the Hugging Face export (RUN/hf)")


# ------------------------------------------------------------------------------------ loading
def hf_to_native(folder: Path) -> Transformer:
    """A ``LlamaForCausalLM`` export of this package (tied embeddings, one KV head per head) as
    the native model: the inverse of ``export.hf_state_dict``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = str(folder / "config.json")
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if cfg.get("architectures") != ["LlamaForCausalLM"] or not cfg.get("tie_word_embeddings") or cfg.get("num_key_value_heads", cfg["num_attention_heads"]) != cfg["num_attention_heads"]:
            raise TrainError("not a grist Llama export (needs LlamaForCausalLM, tied embeddings, no grouped KV heads)", where=where, hint="pass a training run folder or its hf/ export")
        mcfg = ModelConfig(
            vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
            ffn_dim=cfg["intermediate_size"], max_seq_len=cfg["max_position_embeddings"], rope_theta=cfg.get("rope_theta", 10000.0),
            norm_eps=cfg["rms_norm_eps"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"unreadable model config ({type(exc).__name__}: {exc})", where=where, hint="re-export the run") from None
    index = folder / "model.safetensors.index.json"
    names = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    weights: dict[str, torch.Tensor] = {}
    try:
        for n in names:
            weights.update(load_file(str(folder / n)))
    except (SafetensorError, OSError) as exc:
        raise TrainError(f"cannot read the export's weights ({type(exc).__name__}: {exc})", where=str(folder), hint="re-export the run") from None
    state = {k.removeprefix("model."): v for k, v in weights.items() if k != "lm_head.weight"}
    model = Transformer(mcfg)
    model.load_state_dict(state)
    return model.eval()


@dataclass
class Loaded:
    model: Transformer
    tokenizer: object  # pipeline.text.tokenizer.TextTokenizer
    eos_id: int | None
    bos_id: int | None
    source: Path


def load_for_generation(run: str | Path, device: torch.device) -> Loaded:
    """A training run folder (its ``checkpoint/``), a checkpoint folder, or a Hugging Face export."""
    from pipeline.text.tokenizer import load_tokenizer
    from pipeline.train.checkpoint import load_native

    run = Path(run)
    if (run / "checkpoint" / "state.json").is_file() or (run / "state.json").is_file():
        model, state = load_native(run)
        base = run if (run / "checkpoint").is_dir() else run.parent
        tok_dir = find_run_tokenizer(state, [base / "hf"])
        tok = load_tokenizer(tok_dir)
        data = state.get("data", {})
        eos = data.get("eos_id", tok.eos_id)
        bos = data.get("bos_id")
        source = run
    else:
        folder = run if (run / "config.json").is_file() else run / "hf"
        if not (folder / "config.json").is_file():
            raise TrainError("no checkpoint (checkpoint/state.json) or Hugging Face export (config.json) here", where=str(run), hint="pass the --out folder of `pipeline train`")
        model = hf_to_native(folder)
        tok = load_tokenizer(folder)
        eos, bos, source = tok.eos_id, None, folder
    if tok.vocab_size > model.cfg.vocab_size:
        raise TrainError(f"the tokenizer has {tok.vocab_size} ids, the model {model.cfg.vocab_size}", where=str(source), hint="the tokenizer does not belong to this model")
    return Loaded(model.to(device), tok, eos, bos, source)


def prompt_context(loaded: Loaded, prompt: str) -> list[int]:
    """Documents in the token stream follow an EOS (and start with BOS when the data had one):
    a prompt is placed the same way, as the start of a new document."""
    head = [i for i in (loaded.eos_id, loaded.bos_id) if i is not None]
    return head + loaded.tokenizer.encode(prompt)
