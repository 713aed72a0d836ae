"""Stage ``mix``: combine input nodes with target proportions, by tokens or by documents.

``weights: {NODE: w}`` names every input once; shares are the weights normalized to sum 1. The
target size ``total`` (in the chosen unit) is split by share; an input with more than its target
is **down-sampled**, one with less is **up-sampled by repetition** (at most ``max_repeat``
occurrences of a document, the original included). ``total: null`` is the largest mix that needs
no repetition: the limiting input is kept whole, the others down-sampled to match it.

Deterministic whatever the partitioning or the executor: every document gets a key,
``xxh3_64(b"mix:" + id, seed)``, and an input's documents are visited in key order. Every document
of an input appears ``base = floor(factor)`` times, plus once more if it is *selected* for the rest
(``(factor - base) * size`` units): in key order, every document while the sum stays below that
rest, then each later document that brings the sum closer (a long article that would overshoot is
passed over for shorter ones). ``base = 0`` is down-sampling; documents that appear 0 times go to
the ledger as ``mix:downsampled:<node>``. Repeated copies get ids ``<id>#r1``, ``<id>#r2``, ... and
every kept row carries ``mix_repeat`` (0 for the original) and ``mix_input`` (the input node).

Accounting: a task reports ``added`` (the repeated copies), and the check is
``in + added = out + removed`` (``pipeline/exec/tasks.py``).

Phases: ``count`` (one task per input part: key and token count of every document, written to
``work/``) -> the plan, from the global counts (main process, ``_mix.json``) -> final (one task
per input part writes its rows, repeats and ledger). ``docs/mixing.md`` has the details.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.common import storage
from pipeline.common.errors import StageError
from pipeline.core.stage import NodeContext, Stage, removed_rows
from pipeline.exec.task_sync import ensure_local

# Columns that already count tokens, in order of preference (``auto``): a real tokenizer's count
# first, then quality_filter's ``q_tokens`` (datatrove words: jieba words for Chinese).
TOKEN_COLUMNS = ("tokens", "n_tokens", "num_tokens", "token_count", "q_tokens")
MIX_COLUMNS = ("mix_repeat", "mix_input")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(min_length=1, description="input node -> weight (>= 0); normalized to shares that sum to 1; every input once")
    by: Literal["tokens", "documents"] = Field("tokens", description="the unit of the proportions and of total")
    total: int | None = Field(None, gt=0, description="target size of the mix in the unit of `by`; null: the largest mix with no repetition (the limiting input kept whole)")
    max_repeat: int = Field(4, ge=1, le=1000, description="most occurrences of one document in the output, the original included (1: never up-sample)")
    over_cap: Literal["error", "shrink"] = Field("error", description="when `total` needs more than max_repeat: error (stop, say what is possible), or shrink the total to the largest mix within the cap (same shares; a warning in stats)")
    tokens_from: str = Field("auto", description="token counts: auto (a token column present in every input, else estimate), estimate, or a column name")
    seed: int = Field(0, description="seed of the document keys (the sampling order)")

    @model_validator(mode="after")
    def _check(self) -> "Params":
        bad = [k for k, w in self.weights.items() if not (w >= 0 and math.isfinite(w))]
        if bad:
            raise ValueError(f"weights must be finite and >= 0: {', '.join(bad)}")
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return self

    def shares(self) -> dict[str, float]:
        s = sum(self.weights.values())
        return {k: w / s for k, w in self.weights.items()}


def check_inputs(params: Params, inputs: list[str]) -> list[str]:
    """Problems of ``weights`` against the node's inputs (an empty list when they agree)."""
    problems = [f"weights.{k}: {k!r} is not an input of this stage (inputs: {', '.join(inputs)})" for k in params.weights if k not in inputs]
    problems += [f"weights: input {k!r} has no weight (give every input a weight; 0 drops it)" for k in inputs if k not in params.weights]
    if len(set(inputs)) != len(inputs):
        problems.append("inputs: an input is listed twice")
    return problems


class Mix(Stage):
    name = "mix"
    version = "1"
    Params = Params
    check_inputs = staticmethod(check_inputs)  # pipeline validate checks weights against inputs
    description = "combine inputs with target shares by tokens or documents: deterministic down-sampling, up-sampling by repetition with a cap"
    check_inputs = staticmethod(check_inputs)  # for a load-time hook: (params, input names) -> problems

    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        names = [inp.name for inp in ctx.inputs]
        problems = check_inputs(p, names)
        if problems:
            raise StageError(
                "; ".join(problems),
                where=f"node {self.node!r} (mix)",
                hint=f"params.weights must name each of the stage's inputs once: {', '.join(names)}",
            )
        parts = [(inp.name, str(part)) for inp in ctx.inputs for part in inp.parts]
        token_col = _token_column(p.tokens_from, [path for _, path in parts], self.node)
        work = ctx.dir / "work"
        plan_path = ctx.dir / "_mix.json"
        if plan_path.exists():  # an interrupted run: the counts are taken and the plan made
            plan = storage.read_json(plan_path)
        else:
            counts = ctx.run_tasks(_count_task, [(path, i, p.seed, token_col, str(work)) for i, (_, path) in enumerate(parts)], desc="count", phase="count")
            plan = _plan(p, names, parts, counts, work, self.node, token_col)
            storage.atomic_write_json(plan_path, plan)
        tasks = [(path, i, name, plan["inputs"][name], p.by, self.node, str(ctx.part_path(i)), str(ctx.removed_path(i)), str(work)) for i, (name, path) in enumerate(parts)]
        results = ctx.run_tasks(_final_task, tasks, desc="write")
        for marker in [*(ctx.dir / "_tasks").glob("count-*")]:  # phase markers first: a crash below never reads half-deleted work
            marker.unlink()
        storage.remove_tree(work)
        realized = _realized(p, names, plan, results)
        ctx.provenance["mix"] = realized
        return {"mix": realized, "card": _card(p, realized)}


# ------------------------------------------------------------------------------------ token counts
def _token_column(tokens_from: str, paths: list[str], node: str) -> str | None:
    """The column to read token counts from, or None for the estimate. A column is used only if
    every part has it: mixing two units (a tokenizer's count here, an estimate there) would bias
    the shares."""
    if tokens_from == "estimate" or not paths:
        return None
    schemas = [pq.read_schema(ensure_local(Path(path))) for path in paths]
    wanted = TOKEN_COLUMNS if tokens_from == "auto" else (tokens_from,)
    for col in wanted:
        if all(col in s.names and pa.types.is_integer(s.field(col).type) for s in schemas):
            return col
    if tokens_from != "auto":
        raise StageError(
            f"tokens_from: column {tokens_from!r} is not an integer column of every input part",
            where=f"node {node!r} (mix)",
            hint="name a column every input has (e.g. q_tokens after quality_filter), or use tokens_from: auto|estimate",
        )
    return None


def _byte_classes() -> np.ndarray:
    """Token class of a character by its first UTF-8 byte: 0 space/control, 1 part of a word
    (ASCII letters and digits; 2-byte and low 3-byte scripts: Latin, Cyrillic, Greek, Arabic,
    Indic...), 2 a token by itself (ASCII punctuation; U+2000 and up: general punctuation, CJK,
    kana, Hangul, full-width forms, emoji), 3 a continuation byte (not a character start)."""
    lut = np.zeros(256, np.uint8)
    ascii_word = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for b in range(0x21, 0x7F):
        lut[b] = 1 if b in ascii_word else 2
    lut[0x80:0xC0] = 3
    lut[0xC0:0xE2] = 1
    lut[0xE2:] = 2
    return lut


_BYTE_CLASS = _byte_classes()
_ESTIMATE_ROWS = 8192  # documents per vectorized slice (bounded memory: ~9 bytes per character)


def estimate_tokens(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A tokenizer-free token count: one token per CJK character (Han, kana, Hangul) and per
    punctuation mark or symbol, one per run of other letters/digits (a word). Subword tokenizers
    give Chinese roughly one token per 1-1.5 characters and English ~1.3 per word, so this is a
    lower bound in one unit for both scripts: what the shares need. Vectorized over the UTF-8
    bytes (no regex, no Python loop per document)."""
    arr = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    arr = arr.cast(pa.large_string())
    out = np.zeros(len(arr), np.int64)
    for lo in range(0, len(arr), _ESTIMATE_ROWS):
        piece = arr.slice(lo, _ESTIMATE_ROWS)
        n = len(piece)
        offsets = np.frombuffer(piece.buffers()[1], np.int64)[piece.offset : piece.offset + n + 1]
        if piece.buffers()[2] is None or offsets[-1] == offsets[0]:
            continue
        rel = offsets - offsets[0]
        cls = _BYTE_CLASS[np.frombuffer(piece.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]]
        starts = np.flatnonzero(cls != 3)  # byte positions of the characters
        c = cls[starts]
        first = np.zeros(len(cls) + 1, bool)
        first[rel] = True  # documents start here
        word = c == 1
        token = c == 2
        token[0] |= word[0]
        token[1:] |= word[1:] & (~word[:-1] | first[starts[1:]])  # a word starts: after a non-word character, or a document's first
        per_byte = np.zeros(len(cls) + 1, np.int64)
        per_byte[starts[token] + 1] = 1
        cum = np.cumsum(per_byte)
        out[lo : lo + n] = cum[rel[1:]] - cum[rel[:-1]]
    if arr.null_count:
        out[arr.is_null().to_numpy(zero_copy_only=False)] = 0
    return out


def doc_keys(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """The sampling order: ``xxh3_64(b"mix:" + id, seed)``, the same for a document wherever it is
    (the prefix keeps it independent of tokenize's split and sample hashes under the same seed)."""
    s = seed & 0xFFFFFFFFFFFFFFFF
    return np.fromiter((xxhash.xxh3_64_intdigest(b"mix:" + (i or "").encode("utf-8"), seed=s) for i in ids.to_pylist()), dtype=np.uint64, count=len(ids))


def _count_task(part_path: str, index: int, seed: int, token_col: str | None, work: str) -> dict:
    cols = ["id", "text"] if token_col is None else ["id", "text", token_col]
    table = pq.read_table(part_path, columns=cols)
    keys = doc_keys(table["id"], seed)
    if token_col is None:
        tokens = estimate_tokens(table["text"])
    else:
        col = table[token_col]
        tokens = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        if col.null_count:  # a missing count: the estimate rather than 0
            tokens = np.where(col.is_null().to_numpy(zero_copy_only=False), estimate_tokens(table["text"]), tokens)
    storage.write_parquet(pa.table({"key": pa.array(keys, pa.uint64()), "tokens": pa.array(tokens, pa.int64())}), _keys_path(work, index))
    return {"docs": table.num_rows, "tokens": int(tokens.sum())}


def _keys_path(work: str | Path, index: int) -> Path:
    return Path(work) / "keys" / f"part-{index:05d}.parquet"


# ------------------------------------------------------------------------------------ the plan
def _plan(p: Params, names: list[str], parts: list[tuple[str, str]], counts: list[dict], work: Path, node: str, token_col: str | None) -> dict:
    """From every input's size, the target of each and how to reach it: ``base`` copies of every
    document plus one for the selected ones; the copies of each document are written per part
    (``work/copies/``) for the final tasks."""
    shares = p.shares()
    size = {n: {"docs": 0, "tokens": 0} for n in names}
    for (name, _), c in zip(parts, counts):
        size[name]["docs"] += c["docs"]
        size[name]["tokens"] += c["tokens"]
    unit = "docs" if p.by == "documents" else "tokens"
    where = f"node {node!r} (mix)"
    empty = [n for n in names if shares[n] > 0 and size[n][unit] == 0]
    if empty:
        raise StageError(
            f"input(s) {', '.join(map(repr, empty))} have a weight but no {p.by}",
            where=where,
            hint="give them weight 0, or check why they are empty (pipeline inspect OUT)",
        )
    weighted = [n for n in names if shares[n] > 0]
    no_repeat = min(size[n][unit] / shares[n] for n in weighted)  # the largest total with no document repeated
    at_cap = min(p.max_repeat * size[n][unit] / shares[n] for n in weighted)  # ... with every document at most max_repeat times
    warnings: list[str] = []
    if p.total is None:
        total = no_repeat
    elif p.total > at_cap * (1 + 1e-9):
        limiting = min(weighted, key=lambda n: p.max_repeat * size[n][unit] / shares[n])
        need = shares[limiting] * p.total / size[limiting][unit]
        msg = f"total {p.total:,} {p.by} needs input {limiting!r} repeated {need:.2f} times (max_repeat {p.max_repeat}); the largest mix within the cap is {math.floor(at_cap):,} {p.by}"
        if p.over_cap == "error":
            raise StageError(msg, where=where, hint=f"lower total to <= {math.floor(at_cap):,}, raise max_repeat, or set over_cap: shrink")
        total = at_cap
        warnings.append(msg + ": total shrunk to it (over_cap: shrink)")
    else:
        total = float(p.total)
    inputs = {}
    for name in names:
        target = shares[name] * total
        have = size[name][unit]
        factor = target / have if have else 0.0
        base = int(math.floor(factor + 1e-12))
        rest = target - base * have
        extra, prefix = _write_copies(work, [i for i, (n, _) in enumerate(parts) if n == name], base, rest, p.by)
        inputs[name] = {
            "share": shares[name],
            "weight": p.weights[name],
            "docs_in": size[name]["docs"],
            "tokens_in": size[name]["tokens"],
            "target": round(target, 3),
            "factor": round(factor, 6),
            "base": base,
            "extra_docs": extra,  # documents with base + 1 copies
            "extra_prefix_docs": prefix,  # ... of which the unbroken prefix in key order
        }
    return {"by": p.by, "tokens_from": token_col or "estimate", "total_requested": p.total, "total_planned": round(total, 3), "no_repeat_total": round(no_repeat, 3), "cap_total": round(at_cap, 3), "warnings": warnings, "inputs": inputs}


def select(units: np.ndarray, rest: float) -> np.ndarray:
    """Which documents (given in key order, with their units) make up ``rest`` units: every one
    while the sum stays below ``rest``, then (greedy) each later one that brings the sum closer,
    i.e. whose half fits in what is left. A plain prefix would stop before a long article and miss
    the target by up to half of it."""
    take = np.zeros(len(units), bool)
    if rest <= 0 or not len(units):
        return take
    before = np.cumsum(units) - units
    stop = np.flatnonzero(before + units / 2 >= rest)
    k0 = int(stop[0]) if len(stop) else len(units)
    take[:k0] = True
    if k0 == len(units):
        return take
    budget = rest - before[k0]
    for i in k0 + np.flatnonzero(units[k0:] < 2 * budget):  # the candidates only: fewer as the budget shrinks
        if units[i] < 2 * budget:
            take[i] = True
            budget -= units[i]
            if budget < 0.5:  # no document of >= 1 unit brings the sum closer any more
                break
    return take


def _write_copies(work: Path, indices: list[int], base: int, rest: float, by: str) -> tuple[int, int]:
    """Copies of every document of one input (its parts ``indices``), written per part. The order
    is (key, tokens), over the whole input: the same selection whatever the partitioning."""
    tables = [pq.read_table(ensure_local(_keys_path(work, i))) for i in indices]
    keys = np.concatenate([t["key"].to_numpy() for t in tables]) if tables else np.zeros(0, np.uint64)
    tokens = np.concatenate([t["tokens"].to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
    units = np.ones(len(keys), np.int64) if by == "documents" else tokens
    order = np.lexsort((tokens, keys))
    extra = np.zeros(len(keys), bool)
    extra[order] = select(units[order], rest)
    copies = base + extra.astype(np.int32)
    at = 0
    for i, t in zip(indices, tables):
        storage.write_parquet(pa.table({"copies": pa.array(copies[at : at + t.num_rows], pa.int32())}), _copies_path(work, i))
        at += t.num_rows
    prefix = int(np.argmin(extra[order])) if not extra.all() else len(extra)
    return int(extra.sum()), prefix


def _copies_path(work: str | Path, index: int) -> Path:
    return Path(work) / "copies" / f"part-{index:05d}.parquet"


# ------------------------------------------------------------------------------------ final phase
def _final_task(part_path: str, index: int, input_name: str, plan: dict, by: str, node: str, out_path: str, removed_path: str, work: str) -> dict:
    table = storage.read_parquet(Path(part_path))
    n = table.num_rows
    kt = pq.read_table(ensure_local(_keys_path(work, index)))
    tokens = kt["tokens"].to_numpy()
    copies = pq.read_table(ensure_local(_copies_path(work, index)))["copies"].to_numpy().astype(np.int64)
    table = table.drop_columns([c for c in MIX_COLUMNS if c in table.column_names])
    pieces = []
    for r in range(int(copies.max()) if n else 0):
        idx = np.flatnonzero(copies > r)
        rows = table.take(pa.array(idx, pa.int64()))
        if r:  # a repeated copy: its own id, so nothing downstream confuses it with the original
            rows = rows.set_column(rows.column_names.index("id"), "id", pc.binary_join_element_wise(rows["id"].cast(pa.string()), pa.scalar(f"#r{r}"), ""))
        rows = rows.append_column("mix_repeat", pa.array(np.full(len(idx), r, np.int32), pa.int32()))
        rows = rows.append_column("mix_input", pa.array([input_name] * len(idx), pa.string()))
        pieces.append(rows)
    if pieces:
        kept = pa.concat_tables(pieces)
    else:
        kept = table.slice(0, 0).append_column("mix_repeat", pa.array([], pa.int32())).append_column("mix_input", pa.array([], pa.string()))
    gone = np.flatnonzero(copies == 0)
    reason = f"mix:downsampled:{input_name}"
    signal = {"input": input_name, "by": by, "share": round(plan["share"], 6), "factor": plan["factor"]}
    removed = removed_rows(table.take(pa.array(gone, pa.int64())), node, [reason] * len(gone), [signal] * len(gone))
    storage.write_parquet(kept, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    added = int(np.maximum(copies - 1, 0).sum())
    chars_out = int(pc.sum(pc.utf8_length(kept["text"])).as_py() or 0) if "text" in kept.column_names and kept.num_rows else 0
    return {
        "in": n,
        "out": kept.num_rows,
        "removed": len(gone),
        "added": added,
        "removed_by_reason": {reason: len(gone)} if len(gone) else {},
        "chars_out": chars_out,
        "mix_counts": {
            input_name: {"docs_in": n, "tokens_in": int(tokens.sum()), "docs_out": kept.num_rows, "tokens_out": int((tokens * copies).sum()), "docs_removed": len(gone), "copies_added": added, "max_copies": int(copies.max()) if n else 0}
        },
    }


# ------------------------------------------------------------------------------------ what was realized
def _realized(p: Params, names: list[str], plan: dict, results: list[dict]) -> dict:
    counts = {n: {"docs_in": 0, "tokens_in": 0, "docs_out": 0, "tokens_out": 0, "docs_removed": 0, "copies_added": 0, "max_copies": 0} for n in names}
    for r in results:
        for name, c in r.get("mix_counts", {}).items():
            for k, v in c.items():
                counts[name][k] = max(counts[name][k], v) if k == "max_copies" else counts[name][k] + v
    unit = "docs" if p.by == "documents" else "tokens"
    out_total = sum(c[f"{unit}_out"] for c in counts.values())
    inputs = {}
    for name in names:
        c = counts[name]
        inputs[name] = {
            **c,
            "target_share": round(plan["inputs"][name]["share"], 6),
            "achieved_share": round(c[f"{unit}_out"] / out_total, 6) if out_total else 0.0,
            "target": plan["inputs"][name]["target"],
            "repeat_factor": round(c[f"{unit}_out"] / c[f"{unit}_in"], 6) if c[f"{unit}_in"] else 0.0,
        }
    return {
        "by": p.by,
        "tokens_from": plan["tokens_from"],
        "total_requested": plan["total_requested"],
        "total_planned": plan["total_planned"],
        "total_achieved": out_total,
        "max_repeat": p.max_repeat,
        "seed": p.seed,
        "warnings": plan["warnings"],
        "inputs": inputs,
    }


def _card(p: Params, m: dict) -> dict:
    unit = "documents" if p.by == "documents" else "tokens"
    rows = [["unit", unit], ["total", f"{m['total_achieved']:,} {unit}" + (f" (requested {m['total_requested']:,})" if m["total_requested"] else " (largest mix with no repetition)")]]
    for name, c in m["inputs"].items():
        rows.append(
            [
                name,
                f"target {c['target_share']:.1%}, achieved {c['achieved_share']:.1%}; {c['docs_out']:,} documents / {c['tokens_out']:,} tokens out of {c['docs_in']:,} / {c['tokens_in']:,} (x{c['repeat_factor']:.3g})",
            ]
        )
    notes = [
        "Tokens: " + ("a tokenizer-free estimate (one per CJK character, per run of other letters/digits, per punctuation mark)" if m["tokens_from"] == "estimate" else f"the column {m['tokens_from']}") + ".",
        f"Down-sampling and the extra copies follow a hash of (seed {p.seed}, document id); a document appears at most {p.max_repeat} times; repeated copies have ids <id>#rN and mix_repeat N.",
        *m["warnings"],
    ]
    return {"title": "Data mix", "rows": rows, "notes": notes}
