"""Held-out evaluation sets for an ablation, and the loss of a trained model on them.

An eval set is a token-shard folder made with the ablation's tokenizer (a run's output folder
with ``tokens/``, or the ``tokens/`` folder: its validation split, else its train split) or a
text file (``.jsonl``/``.json``/``.parquet`` with a ``text`` field, ``.txt`` one document per
line) encoded with the shared tokenizer exactly as the tokenize stage packs documents: BOS (when
the shards use one), the ids, EOS. Every model is scored on the same first ``eval_tokens``
tokens, in order, with ``pipeline.train.loop.evaluate``. The eval-set readers live in
``pipeline/train/evalsets.py`` (shared with ``pipeline eval``); this module names the errors
after the ablation."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

from pipeline.ablate.spec import AblateError
from pipeline.train import evalsets as _train_sets
from pipeline.train.evalsets import ArrayStream, EvalSet  # re-exported: the reusable parts live in train

__all__ = ["ArrayStream", "EvalSet", "token_set", "text_set", "load_eval_sets", "score"]


def token_set(name: str, path: Path, tok_hash: str, note: str = "") -> EvalSet:
    """The validation split (else train) of token shards made with the ablation's tokenizer."""
    return _train_sets.token_set(name, path, tok_hash, note, error=AblateError, whose="the ablation's")


def text_set(name: str, path: Path, tokenizer_dir: Path, eos_id: int, bos_id: int | None) -> EvalSet:
    return _train_sets.text_set(name, path, tokenizer_dir, eos_id, bos_id, error=AblateError, note="encoded with the ablation's tokenizer (BOS/EOS as in the shards)")


def load_eval_sets(paths: list[Path], tokenizer_dir: Path, tok_hash: str, eos_id: int, bos_id: int | None) -> list[EvalSet]:
    """The ``--eval-data`` sets, named by file or folder name (made unique)."""
    out: list[EvalSet] = []
    for p in paths:
        p = Path(p)
        base = p.name if p.is_dir() else p.name.split(".")[0]
        name, n = base or "eval", 1
        while any(e.name == name for e in out):
            n += 1
            name = f"{base}-{n}"
        if not p.exists():
            raise AblateError(f"eval set {name!r} does not exist", where=str(p), hint="give a token-shard folder (a run's out dir or its tokens/) or a .jsonl/.txt file")
        if p.is_dir():
            out.append(token_set(name, p, tok_hash))
        else:
            out.append(text_set(name, p, tokenizer_dir, eos_id, bos_id))
    return out


def score(run_dir: Path, sets: list[EvalSet], *, eval_tokens: int, batch_size: int, device: str = "auto") -> dict[str, dict]:
    """Loss and perplexity of the model in ``run_dir`` on each set (the first ``eval_tokens``
    tokens in windows of the model's context). A set too short for one window is an error entry."""
    import torch

    from pipeline.train.checkpoint import load_native
    from pipeline.train.loop import evaluate, pick_device, use_bf16_for

    model, state = load_native(run_dir)
    dev = pick_device(device)
    model.to(dev)
    bf16 = use_bf16_for("auto", dev)
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else (lambda: torch.autocast(dev.type, enabled=False))
    T = int(state["T"])
    cfg = SimpleNamespace(batch_size=batch_size, eval_tokens=eval_tokens)
    out: dict[str, dict] = {}
    for s in sets:
        if s.stream.n_windows(T) == 0:
            out[s.name] = {"error": f"{s.tokens} tokens: fewer than one window of {T + 1}"}
            continue
        r = evaluate(model, s.stream, cfg, T, dev, autocast)
        out[s.name] = {"loss": r["val_loss"], "ppl": math.exp(min(r["val_loss"], 50.0)), "tokens": r["val_tokens"]}
    return out
