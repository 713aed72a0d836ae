"""Held-out token streams to score a language model on, and the loss on them.

An eval set is a split of token shards (a run's output folder with ``tokens/``, or ``tokens/``
itself) made with the model's tokenizer, or a text file (``.jsonl``/``.json``/``.parquet`` with a
``text`` field, ``.txt`` one document per line) encoded with the model's tokenizer exactly as the
tokenize stage packs documents: BOS (when the shards use one), the ids, EOS. ``loss_on`` scores
the first ``max_tokens`` tokens in windows of the model's context with
``pipeline.train.loop.evaluate`` (the trainer's own validation loss). ``pipeline ablate`` and
``pipeline eval`` share this module (``pipeline/ablate/evalsets.py`` re-exports it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.common.errors import PipelineError
from pipeline.train import TrainError

TEXT_HINT = "a .jsonl/.json/.parquet file with a text field, or a .txt file (one document per line)"


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

    def slice(self, a: int, b: int) -> np.ndarray:
        return self.ids[a:b]


@dataclass
class EvalSet:
    name: str
    path: str
    kind: str  # "tokens" | "text"
    stream: object = field(repr=False)
    tokens: int = 0
    documents: int | None = None
    note: str = ""
    split: str | None = None  # token shards: the split scored
    text_bytes: int | None = None  # text sets: UTF-8 bytes of the documents (bits per byte)

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "kind": self.kind, "tokens": self.tokens, "documents": self.documents, "note": self.note}


def pick_split(index: dict, split: str | None) -> tuple[str, str]:
    """The split to score and a note. ``None``: test, else validation, else train (shards made
    before the test split existed have none). A named split must exist and hold tokens."""
    have = {s for s, info in (index.get("splits") or {}).items() if (info or {}).get("tokens")}
    if split is not None:
        if split not in have:
            raise TrainError(
                f"split {split!r} has no tokens in these shards (splits with tokens: {', '.join(sorted(have)) or 'none'})",
                hint="pick one of those with --split, or re-run the tokenize stage with test_fraction > 0 for a test split",
            )
        return split, ""
    for cand in ("test", "validation", "train"):
        if cand in have:
            note = "" if cand == "test" else f"no test split with tokens here: scored the {cand} split instead" + (" (the model trained on it)" if cand == "train" else "")
            return cand, note
    raise TrainError("the token shards hold no tokens", hint="re-run the tokenize stage on more documents")


def token_set(name: str, path: Path, tok_hash: str, note: str = "", *, split: str | None = None, default_order: tuple[str, ...] | None = ("validation", "train"), error=TrainError, whose: str = "the model's", check=None) -> EvalSet:
    """A split of token shards made by the tokenizer ``tok_hash``; another tokenizer is refused
    (``check(index) -> why or None`` replaces the hash comparison when given).
    ``split`` None: the first of ``default_order`` with tokens (``None``: ``pick_split``)."""
    from pipeline.train.data import TokenStream, find_tokens_dir, read_index, tokenizer_hash

    tokens_dir = find_tokens_dir(path)
    index = read_index(tokens_dir)
    why = check(index) if check is not None else None
    if why:
        raise error(f"eval set {name!r}: its tokens were {why}" if why.startswith("made ") else f"eval set {name!r}: {why}", where=str(path), hint="losses are only comparable on one vocabulary: give the text (jsonl/txt) instead, it is encoded with the model's tokenizer")
    if check is None and tokenizer_hash(index) != tok_hash:
        raise error(
            f"eval set {name!r}: its tokens were made with another tokenizer ({tokenizer_hash(index)[:12]}…, {whose} is {tok_hash[:12]}…)",
            where=str(path),
            hint="losses are only comparable on one vocabulary: give the text (jsonl/txt) instead, it is encoded with the model's tokenizer",
        )
    extra = ""
    if split is None and default_order is not None:
        split = next((s for s in default_order if (index["splits"].get(s) or {}).get("tokens")), default_order[-1])
    else:
        try:
            split, extra = pick_split(index, split)
        except TrainError as exc:
            raise error(f"eval set {name!r}: {exc.what}", where=str(tokens_dir / "index.json"), hint=exc.hint) from None
    stream = TokenStream(tokens_dir, split)
    docs = (index.get("documents") or {}).get(split)
    text = note or f"split {split} of {tokens_dir}"
    return EvalSet(name, str(path), "tokens", stream, stream.n_tokens, docs, text + (f"; {extra}" if extra else ""), split=split)


def read_texts(path: Path, name: str = "eval", error=TrainError, field_name: str = "text") -> list[str]:
    """The non-empty ``text`` fields of a record file (``.txt``: one document per line)."""
    from pipeline.io.formats.records import detect_format, iter_records

    bad = None  # (what, where, hint) of the first record that cannot be scored
    texts = []
    try:
        fmt = detect_format(str(path))
        for status, rec, where in iter_records(path, fmt, txt_mode="lines"):
            # a score over part of a file would read as a score over the file: a bad record stops it
            value = rec.get(field_name) if status == "ok" and isinstance(rec, dict) else None
            if status != "ok":
                bad = (f"a record cannot be read ({rec})", where, "fix or remove that record")
            elif not isinstance(value, str):
                bad = (f"a record has no {field_name!r} text field", where, f"every record needs a {field_name!r} string (.txt: one document per line)")
            if bad:
                break
            if value.strip():
                texts.append(value)
    except PipelineError as exc:
        raise error(f"eval set {name!r}: {exc.what}", where=str(path), hint=exc.hint) from None
    except (OSError, ValueError) as exc:
        raise error(f"eval set {name!r}: cannot read it ({exc})", where=str(path), hint=TEXT_HINT) from None
    if bad:
        at = ", ".join(f"{k} {v}" for k, v in bad[1].items()) if isinstance(bad[1], dict) else str(bad[1])
        raise error(f"eval set {name!r}: {bad[0]}", where=f"{path} ({at})", hint=bad[2])
    if not texts:
        raise error(f"eval set {name!r} has no documents with a {field_name} field", where=str(path), hint=f"records need a non-empty {field_name!r} field (.txt: one document per line)")
    return texts


def encode_documents(tok, texts: list[str], eos_id: int, bos_id: int | None) -> np.ndarray:
    """[BOS] ids EOS per document, concatenated: the tokenize stage's stream layout."""
    head = [bos_id] if bos_id is not None else []
    return np.concatenate([np.asarray(head + list(map(int, t)) + [eos_id], dtype=np.int64) for t in tok.encode_batch(texts)])


def text_set(name: str, path: Path, tokenizer, eos_id: int, bos_id: int | None, *, error=TrainError, note: str = "encoded with the model's tokenizer (BOS/EOS as in the shards)") -> EvalSet:
    """A text file encoded with ``tokenizer`` (a folder, or a loaded ``TextTokenizer``)."""
    from pipeline.text.tokenizer import load_tokenizer

    texts = read_texts(Path(path), name, error)
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    ids = encode_documents(tok, texts, eos_id, bos_id)
    return EvalSet(name, str(path), "text", ArrayStream(ids), len(ids), len(texts), note, text_bytes=sum(len(t.encode("utf-8")) for t in texts))


def scored_bytes(stream, n_windows: int, T: int, tok, special: set[int]) -> int:
    """UTF-8 bytes of the targets scored in the first ``n_windows`` windows: the tokens decoded
    document by document (special tokens carry no bytes)."""
    ids = np.asarray(stream.slice(1, n_windows * T + 1), dtype=np.int64)
    if not len(ids):
        return 0
    cuts = np.flatnonzero(np.isin(ids, list(special))) if special else np.zeros(0, np.int64)
    total, a = 0, 0
    for c in [*cuts.tolist(), len(ids)]:
        if c > a:
            total += len(tok.decode(ids[a:c]).encode("utf-8"))
        a = c + 1
    return total


def loss_on(model, stream, T: int, *, batch_size: int, max_tokens: int, device, autocast) -> dict:
    """Mean token cross-entropy (nats) and perplexity on the first ``max_tokens`` tokens of
    ``stream`` (windows of ``T`` + 1, in order); ``windows``: how many were scored."""
    from pipeline.train.loop import evaluate

    n = stream.n_windows(T)
    if n == 0:
        raise TrainError(f"{stream.n_tokens} tokens: fewer than one window of {T + 1}", hint="give more text, or a model with a shorter context")
    r = evaluate(model, stream, SimpleNamespace(batch_size=batch_size, eval_tokens=max_tokens), T, device, autocast)
    windows = min(n, max(1, max_tokens // T))
    return {"loss": r["val_loss"], "ppl": math.exp(min(r["val_loss"], 50.0)), "tokens": r["val_tokens"], "windows": windows, "complete": windows == n}
