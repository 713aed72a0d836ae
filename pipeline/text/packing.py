"""Token work files and sequence packing into a ``datasets`` DatasetDict of Arrow shards.

Encode tasks (one per input part, in parallel) write, per split, a flat token file and the
document boundaries (``WorkWriter``). Packing then streams those files in part order
(``pack_split``), cuts the token stream into rows of ``seq_len`` tokens (only the last row of a
split may be shorter: no padding anywhere) and writes the rows in the on-disk layout of
``DatasetDict.save_to_disk``:

    tokens/
      dataset_dict.json                {"splits": ["train", "validation", "test"]}
      train/data-00000-of-0000N.arrow  Arrow IPC streams, uncompressed: memory-mapped by load_from_disk
      train/state.json, train/dataset_info.json
      validation/..., test/...         (test: documents held out from training and validation, for `pipeline eval`)
      index.json                       shards, sequence and token counts, tokenizer hash, seq_len, dtype

Rows: ``input_ids`` (list of uint16, or uint32 when the vocabulary needs it), ``doc_ids``
(list<string>: every document with at least one token in the row, in stream order) and
``doc_starts`` (list<int32>: where each of those documents' tokens start in the row; 0 for a
document continued from the previous row). Everything is streamed: token files are
memory-mapped, one batch of rows is in memory at a time, and the output bytes depend only on
the work files (so on the input and the parameters, never on the number of workers).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.common import storage
from pipeline.io.export import write_dataset_metadata

SPLITS = ("train", "validation", "test")
DEFAULT_SHARD_BYTES = 512 << 20
BATCH_BYTES = 8 << 20  # tokens per record batch, in bytes (~4096 rows of 1024 uint16 tokens)
INDEX_FORMAT = "grist.tokens/1"


# ------------------------------------------------------------------------------- work files
def work_paths(work: str | Path, split: str, index: int) -> tuple[Path, Path]:
    base = Path(work) / split
    return base / f"part-{index:05d}.tokens", base / f"part-{index:05d}.docs.arrow"


DOCS_SCHEMA = pa.schema([("id", pa.string()), ("n_tokens", pa.int64())])


class WorkWriter:
    """Per task and split: tokens appended to a flat binary file, document (id, token count)
    rows to an Arrow IPC file. Both written under temp names and renamed by ``close``."""

    def __init__(self, work: str | Path, split: str, index: int, dtype: np.dtype):
        self.paths = work_paths(work, split, index)
        self.paths[0].parent.mkdir(parents=True, exist_ok=True)
        self.tmp = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in self.paths]
        self.dtype = np.dtype(dtype)
        self._tokens = open(self.tmp[0], "wb")
        self._docs = pa.ipc.new_file(str(self.tmp[1]), DOCS_SCHEMA)
        self.tokens = 0
        self.documents = 0

    def write(self, tokens: np.ndarray, ids: list[str], lengths: np.ndarray) -> None:
        if not len(ids):
            return
        self._tokens.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._docs.write_batch(pa.record_batch([pa.array(ids, pa.string()), pa.array(lengths, pa.int64())], schema=DOCS_SCHEMA))
        self.tokens += int(len(tokens))
        self.documents += len(ids)

    def close(self) -> dict:
        self._tokens.close()
        self._docs.close()
        for tmp, final in zip(self.tmp, self.paths):
            os.replace(tmp, final)
        return {"tokens": self.tokens, "documents": self.documents}

    def abort(self) -> None:
        try:
            self._tokens.close()
            self._docs.close()
        finally:
            for tmp in self.tmp:
                tmp.unlink(missing_ok=True)


def work_complete(work: str | Path, index: int) -> bool:
    return all(p.exists() for split in SPLITS for p in work_paths(work, split, index))


# --------------------------------------------------------------------------- split stream
@dataclass
class _Part:
    tokens_path: Path
    docs_path: Path
    n_tokens: int
    start: int  # global token offset of the part in the split's stream


class SplitStream:
    """The concatenation of one split's work files (in part order) as a random-access token
    stream plus document spans, read through memory maps: nothing is loaded whole."""

    def __init__(self, work: str | Path, split: str, n_parts: int, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.parts: list[_Part] = []
        pos = 0
        for i in range(n_parts):
            tokens_path, docs_path = work_paths(work, split, i)
            n = tokens_path.stat().st_size // self.dtype.itemsize
            self.parts.append(_Part(tokens_path, docs_path, n, pos))
            pos += n
        self.n_tokens = pos
        self._starts = np.array([p.start for p in self.parts] + [pos], dtype=np.int64)
        self._cache: dict[int, tuple] = {}

    def _part_data(self, i: int) -> tuple:
        if i not in self._cache:
            if len(self._cache) >= 2:  # streaming forwards: older parts are done
                self._cache.pop(min(self._cache))
            part = self.parts[i]
            tokens = np.memmap(part.tokens_path, dtype=self.dtype, mode="r") if part.n_tokens else np.zeros(0, self.dtype)
            with pa.memory_map(str(part.docs_path)) as source:
                table = pa.ipc.open_file(source).read_all()
            lengths = table.column("n_tokens").to_numpy()
            ends = part.start + np.cumsum(lengths, dtype=np.int64)
            starts = ends - lengths
            self._cache[i] = (tokens, table.column("id"), starts, ends)
        return self._cache[i]

    def _parts_between(self, a: int, b: int) -> range:
        first = int(np.searchsorted(self._starts, a, side="right")) - 1
        last = int(np.searchsorted(self._starts, b, side="left")) - 1
        return range(max(first, 0), min(last, len(self.parts) - 1) + 1)

    def tokens(self, a: int, b: int) -> np.ndarray:
        chunks = []
        for i in self._parts_between(a, b):
            part = self.parts[i]
            lo, hi = max(a, part.start) - part.start, min(b, part.start + part.n_tokens) - part.start
            if hi > lo:
                chunks.append(np.asarray(self._part_data(i)[0][lo:hi]))
        return np.concatenate(chunks) if chunks else np.zeros(0, self.dtype)

    def documents(self, a: int, b: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """(ids, global starts, global ends) of the documents with tokens in [a, b), in order."""
        ids, starts, ends = [], [], []
        for i in self._parts_between(a, b):
            if not self.parts[i].n_tokens:
                continue
            _, pid, pstarts, pends = self._part_data(i)
            lo = int(np.searchsorted(pends, a, side="right"))
            hi = int(np.searchsorted(pstarts, b, side="left"))
            if hi > lo:
                ids.append(pid.slice(lo, hi - lo))
                starts.append(pstarts[lo:hi])
                ends.append(pends[lo:hi])
        if not ids:
            return pa.array([], pa.string()), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return pa.concat_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in ids]), np.concatenate(starts), np.concatenate(ends)


# -------------------------------------------------------------------------------- packing
def token_schema(dtype: np.dtype) -> pa.Schema:
    """The rows' Arrow schema, with the ``datasets`` features in its metadata."""
    from datasets import Features

    schema = pa.schema(
        [
            ("input_ids", pa.list_(pa.from_numpy_dtype(np.dtype(dtype)))),
            ("doc_ids", pa.list_(pa.string())),
            ("doc_starts", pa.list_(pa.int32())),
        ]
    )
    return Features.from_arrow_schema(schema).arrow_schema


def _rows_batch(stream: SplitStream, a: int, b: int, seq_len: int, schema: pa.Schema) -> pa.RecordBatch:
    """Rows for the token range [a, b) (a multiple of seq_len from a; the last may be short)."""
    tokens = stream.tokens(a, b)
    n = b - a
    n_rows = -(-n // seq_len)
    row_lo = a + np.arange(n_rows, dtype=np.int64) * seq_len
    row_hi = np.minimum(row_lo + seq_len, b)
    offsets = np.append(row_lo - a, n).astype(np.int32)
    input_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens))

    ids, starts, ends = stream.documents(a, b)
    first = np.searchsorted(ends, row_lo, side="right")  # first document ending after the row start
    last = np.searchsorted(starts, row_hi, side="left") - 1  # last document starting before the row end
    counts = last - first + 1
    doc_offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=doc_offsets[1:])
    flat = np.arange(doc_offsets[-1], dtype=np.int64) - np.repeat(doc_offsets[:-1] - first, counts)
    rel = np.maximum(starts[flat] - np.repeat(row_lo, counts), 0).astype(np.int32)
    doc_ids = pa.ListArray.from_arrays(pa.array(doc_offsets.astype(np.int32)), ids.take(pa.array(flat)))
    doc_starts = pa.ListArray.from_arrays(pa.array(doc_offsets.astype(np.int32)), pa.array(rel))
    return pa.RecordBatch.from_arrays([input_ids.cast(schema.field(0).type), doc_ids.cast(schema.field(1).type), doc_starts.cast(schema.field(2).type)], schema=schema)


def pack_split(stream: SplitStream, dest: Path, seq_len: int, *, fingerprint: str, split: str, shard_bytes: int = DEFAULT_SHARD_BYTES, info: dict | None = None) -> dict:
    """Write one split of packed rows to ``dest`` (a ``datasets`` Dataset folder)."""
    dtype = stream.dtype
    schema = token_schema(dtype)
    dest.mkdir(parents=True, exist_ok=True)
    total = stream.n_tokens
    n_rows = -(-total // seq_len)
    row_bytes = seq_len * dtype.itemsize
    rows_per_shard = max(1, shard_bytes // row_bytes)
    rows_per_batch = max(1, min(rows_per_shard, BATCH_BYTES // row_bytes))
    n_shards = max(1, math.ceil(n_rows / rows_per_shard))
    shards = []
    for s in range(n_shards):
        name = f"data-{s:05d}-of-{n_shards:05d}.arrow"
        r0, r1 = s * rows_per_shard, min((s + 1) * rows_per_shard, n_rows)
        with pa.OSFile(str(dest / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for b0 in range(r0, r1, rows_per_batch):
                b1 = min(b0 + rows_per_batch, r1)
                writer.write_batch(_rows_batch(stream, b0 * seq_len, min(b1 * seq_len, total), seq_len, schema))
        tokens = max(0, min(r1 * seq_len, total) - r0 * seq_len)
        shards.append({"file": f"{split}/{name}", "sequences": max(0, r1 - r0), "tokens": tokens, "bytes": (dest / name).stat().st_size})
    write_dataset_metadata(dest, schema, [Path(s["file"]).name for s in shards], fingerprint, info)
    return {
        "sequences": n_rows,
        "tokens": total,
        "full_sequences": total // seq_len,
        "last_sequence_tokens": (total - (n_rows - 1) * seq_len) if n_rows else 0,
        "shards": shards,
    }


def write_token_dataset(work: str | Path, n_parts: int, dest: Path, *, seq_len: int, dtype: np.dtype, fingerprint: str, index_extra: dict, shard_bytes: int = DEFAULT_SHARD_BYTES, info: dict | None = None) -> dict:
    """Pack every split into ``dest`` (atomically: built beside it, renamed into place) and write
    ``index.json``. Returns the index."""
    import hashlib

    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    storage.remove_tree(tmp)
    tmp.mkdir(parents=True)
    splits = {}
    for split in SPLITS:
        stream = SplitStream(work, split, n_parts, dtype)
        split_fp = hashlib.sha256(f"{fingerprint}:{split}".encode()).hexdigest()
        splits[split] = pack_split(stream, tmp / split, seq_len, fingerprint=split_fp, split=split, shard_bytes=shard_bytes, info=info)
    storage.atomic_write_text(tmp / "dataset_dict.json", json.dumps({"splits": list(SPLITS)}) + "\n")
    index = {
        "format": INDEX_FORMAT,
        "seq_len": seq_len,
        "dtype": np.dtype(dtype).name,
        **index_extra,
        "splits": splits,
        "columns": {
            "input_ids": f"list<{np.dtype(dtype).name}>: seq_len token ids (the last row of a split may be shorter; no padding)",
            "doc_ids": "list<string>: ids of the documents with tokens in the row, in stream order",
            "doc_starts": "list<int32>: offset in the row of each document's first token here (0 when continued from the previous row)",
        },
    }
    storage.atomic_write_json(tmp / "index.json", index)
    storage.remove_tree(dest)
    os.replace(tmp, dest)
    return index


def read_index(tokens_dir: str | Path) -> dict:
    return storage.read_json(Path(tokens_dir) / "index.json")


def iter_split_tokens(tokens_dir: str | Path, split: str):
    """Yield the split's rows as numpy arrays, in order, without ``datasets``: each is a view
    into the memory-mapped shard (no copy; copy it to keep it past the next row's shard)."""
    index = read_index(tokens_dir)
    for shard in index["splits"][split]["shards"]:
        with pa.memory_map(str(Path(tokens_dir) / shard["file"])) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                col = batch.column(0)
                values = col.flatten().to_numpy(zero_copy_only=True)
                offsets = col.offsets.to_numpy()
                offsets = offsets - offsets[0]
                for i in range(len(col)):
                    yield values[offsets[i] : offsets[i + 1]]
