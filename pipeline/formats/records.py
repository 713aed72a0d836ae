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

from pipeline.errors import StageError

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


def iter_records(path: Path, fmt: str, txt_mode: str = "file") -> Iterator[tuple[str, dict | str]]:
    """Yield ("ok", record dict) or ("error", reason) per record, in file order."""
    if fmt == "jsonl":
        with _open_text(path) as fh:
            for line in fh:
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
        with _open_text(path) as fh:
            if txt_mode == "file":
                yield "ok", {"text": fh.read()}
            else:
                for line in fh:
                    if line.strip():
                        yield "ok", {"text": line.rstrip("\n")}
    elif fmt in ("parquet", "arrow"):
        batches = pq.ParquetFile(path).iter_batches(BATCH_ROWS) if fmt == "parquet" else _arrow_batches(path)
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
