"""Held-out evaluation sets for an ablation, and the loss of a trained model on them.

An eval set is a token-shard folder made with the ablation's tokenizer (a run's output folder
with ``tokens/``, or the ``tokens/`` folder: its validation split, else its train split) or a
text file (``.jsonl``/``.json``/``.parquet`` with a ``text`` field, ``.txt`` one document per
line) encoded with the shared tokenizer exactly as the tokenize stage packs documents: BOS (when
the shards use one), the ids, EOS. Every model is scored on the same first ``eval_tokens``
tokens, in order, with ``pipeline.train.loop.evaluate``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.ablate.spec import AblateError
from pipeline.common.errors import PipelineError


class ArrayStream:
    """A token stream in memory with the two methods ``eval_batches`` uses."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64)
        self.n_tokens = len(self.ids)

    def n_windows(self, T: int) -> int:
        return max(0, (self.n_tokens - 1) // T)

    def windows(self, ks, T: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.stack([self.ids[int(k) * T : int(k) * T + T + 1] for k in ks])
        return rows[:, :-1], rows[:, 1:]


@dataclass
class EvalSet:
    name: str
    path: str
    kind: str  # "tokens" | "text"
    stream: object = field(repr=False)
    tokens: int = 0
    documents: int | None = None
    note: str = ""

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "kind": self.kind, "tokens": self.tokens, "documents": self.documents, "note": self.note}


def token_set(name: str, path: Path, tok_hash: str, note: str = "") -> EvalSet:
    from pipeline.train.data import TokenStream, find_tokens_dir, read_index, tokenizer_hash

    tokens_dir = find_tokens_dir(path)
    index = read_index(tokens_dir)
    if tokenizer_hash(index) != tok_hash:
        raise AblateError(
            f"eval set {name!r}: its tokens were made with another tokenizer ({tokenizer_hash(index)[:12]}…, the ablation's is {tok_hash[:12]}…)",
            where=str(path),
            hint="losses are only comparable on one vocabulary: give the text (jsonl/txt) instead, it is encoded with the ablation's tokenizer",
        )
    split = "validation" if index["splits"].get("validation", {}).get("tokens") else "train"
    stream = TokenStream(tokens_dir, split)
    docs = (index.get("documents") or {}).get(split)
    return EvalSet(name, str(path), "tokens", stream, stream.n_tokens, docs, note or f"split {split} of {tokens_dir}")


def text_set(name: str, path: Path, tokenizer_dir: Path, eos_id: int, bos_id: int | None) -> EvalSet:
    from pipeline.io.formats.records import detect_format, iter_records
    from pipeline.text.tokenizer import load_tokenizer

    try:
        fmt = detect_format(str(path))
        texts = [rec["text"] for status, rec, _ in iter_records(path, fmt, txt_mode="lines") if status == "ok" and isinstance(rec.get("text"), str) and rec["text"].strip()]
    except PipelineError as exc:
        raise AblateError(f"eval set {name!r}: {exc.what}", where=str(path), hint=exc.hint) from None
    except (OSError, ValueError) as exc:
        raise AblateError(f"eval set {name!r}: cannot read it ({exc})", where=str(path), hint="a .jsonl/.json/.parquet file with a text field, or a .txt file (one document per line)") from None
    if not texts:
        raise AblateError(f"eval set {name!r} has no documents with a text field", where=str(path), hint="records need a non-empty 'text' field (.txt: one document per line)")
    tok = load_tokenizer(tokenizer_dir)
    head = [bos_id] if bos_id is not None else []
    ids = np.concatenate([np.asarray(head + list(map(int, t)) + [eos_id], dtype=np.int64) for t in tok.encode_batch(texts)])
    return EvalSet(name, str(path), "text", ArrayStream(ids), len(ids), len(texts), "encoded with the ablation's tokenizer (BOS/EOS as in the shards)")


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
