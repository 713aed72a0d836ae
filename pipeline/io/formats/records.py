"""Read document files (jsonl, json, parquet, arrow, txt) into tables of the document schema.

A record that cannot be read (invalid JSON, no text field) is not skipped silently: it
comes back as an error record (id, reason) for the removal ledger.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.errors import StageError

FORMATS = ("jsonl", "json", "parquet", "arrow", "txt", "mediawiki-xml")
BATCH_ROWS = 10_000


def detect_format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz"):
        if name.endswith(suffix) and not name.endswith(".xml" + suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".arrow", ".feather", ".ipc")):
        return "arrow"
    if name.endswith(".txt"):
        return "txt"
    if ".xml" in name:
        return "mediawiki-xml"
    raise StageError(f"cannot tell the format of {path!r} from its name", where=path, hint=f"set 'format' on the source to one of: {', '.join(FORMATS)}")


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, "r", encoding="utf-8", errors="strict")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _lines(path: Path, start: int = 0, end: int | None = None) -> Iterator[str]:
    """The lines of a UTF-8 file, split on "\\n" only (a "\\r\\n" ending is dropped too), from byte
    ``start`` (a line start) to the line that crosses ``end``. Byte ranges need an uncompressed file."""
    with _open_binary(path) as fh:
        if start:
            fh.seek(start)
        pos = start
        for raw in fh:
            if end is not None and pos >= end:
                break
            pos += len(raw)
            yield raw.decode("utf-8", errors="strict").rstrip("\n").removesuffix("\r")


def splittable(path: Path, fmt: str, txt_mode: str = "file") -> bool:
    """Whether a file can be read in pieces (one partition each): uncompressed JSONL or
    one-document-per-line text by byte ranges, Parquet by row groups."""
    if fmt == "parquet":
        return True
    return (fmt == "jsonl" or (fmt == "txt" and txt_mode == "line")) and not path.name.endswith((".gz", ".bz2", ".xz"))


def line_spans(path: Path, target_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``target_bytes`` each, cut after a newline, covering the file."""
    size = path.stat().st_size
    spans, start = [], 0
    with open(path, "rb") as fh:
        while start < size:
            cut = start + target_bytes
            if cut >= size:
                spans.append((start, size))
                break
            fh.seek(cut - 1)
            fh.readline()  # to the end of the line holding byte cut - 1
            cut = fh.tell()
            spans.append((start, cut))
            start = cut
    return spans or [(0, size)]


def row_group_spans(path: Path, target_bytes: int) -> list[tuple[int, int]]:
    """Ranges of row groups [first, last) of about ``target_bytes`` of uncompressed data each."""
    meta = pq.ParquetFile(path).metadata
    spans, first, acc = [], 0, 0
    for g in range(meta.num_row_groups):
        acc += meta.row_group(g).total_byte_size
        if acc >= target_bytes:
            spans.append((first, g + 1))
            first, acc = g + 1, 0
    if first < meta.num_row_groups or not spans:
        spans.append((first, meta.num_row_groups))
    return spans


def count_records(path: Path, fmt: str, start: int, end: int) -> int:
    """How many records ``iter_records`` yields for this span (the ids of the next span start there)."""
    if fmt == "parquet":
        meta = pq.ParquetFile(path).metadata
        return sum(meta.row_group(g).num_rows for g in range(start, end))
    return sum(1 for line in _lines(path, start, end) if line.strip())


def iter_records(path: Path, fmt: str, txt_mode: str = "file", span: tuple[int, int] | None = None) -> Iterator[tuple[str, dict | str]]:
    """Yield ("ok", record dict) or ("error", reason) per record, in file order; ``span`` limits
    the read to a byte range (JSONL, text lines) or a row-group range (Parquet)."""
    if fmt == "jsonl":
        for line in _lines(path, *(span or (0, None))):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                yield "error", "parse:invalid-json"
                continue
            yield ("ok", rec) if isinstance(rec, dict) else ("error", "parse:not-an-object")
    elif fmt == "json":
        with _open_text(path) as fh:
            data = json.load(fh)
        for rec in data if isinstance(data, list) else [data]:
            yield ("ok", rec) if isinstance(rec, dict) else ("error", "parse:not-an-object")
    elif fmt == "txt":
        if txt_mode == "file":
            with _open_text(path) as fh:
                yield "ok", {"text": fh.read()}
        else:
            for line in _lines(path, *(span or (0, None))):
                if line.strip():
                    yield "ok", {"text": line}
    elif fmt in ("parquet", "arrow"):
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            groups = list(range(*span)) if span else None
            batches = pf.iter_batches(BATCH_ROWS, row_groups=groups) if groups != [] else iter(())
        else:
            batches = _arrow_batches(path)
        for batch in batches:
            for rec in batch.to_pylist():
                yield "ok", rec
    else:
        raise StageError(f"unsupported record format {fmt!r}", where=str(path))


def _arrow_batches(path: Path):
    import pyarrow.ipc as ipc

    try:
        reader = ipc.open_file(path)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    except pa.ArrowInvalid:
        with ipc.open_stream(path) as stream:
            yield from stream
