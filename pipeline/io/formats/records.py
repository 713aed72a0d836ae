"""Read document files (jsonl, json, parquet, arrow, txt, csv, tsv) into tables of the document schema.

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

FORMATS = ("jsonl", "json", "parquet", "arrow", "txt", "csv", "tsv", "mediawiki-xml")
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
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if ".xml" in name:
        return "mediawiki-xml"
    raise StageError(f"cannot tell the format of {path!r} from its name", where=path, hint=f"set 'format' on the source to one of: {', '.join(FORMATS)}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _decode(raw: bytes) -> tuple[str, int | None]:
    """UTF-8 text and None, or (when the bytes are not valid UTF-8) the text with the bad bytes
    kept as surrogates and the offset of the first bad byte: the caller ledgers the record."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", errors="surrogateescape"), exc.start


def _lines(path: Path, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int | None]]:
    """The lines of a file as (text, offset of the first invalid UTF-8 byte or None), split on
    "\\n" only (a "\\r\\n" ending is dropped too), from byte ``start`` (a line start) to the line
    that crosses ``end``. Byte ranges need an uncompressed file."""
    with _open_binary(path) as fh:
        if start:
            fh.seek(start)
        pos = start
        for raw in fh:
            if end is not None and pos >= end:
                break
            pos += len(raw)
            text, bad = _decode(raw)
            yield text.rstrip("\n").removesuffix("\r"), bad


def _has_invalid_text(value) -> bool:
    """Whether a parsed value holds bytes that were not UTF-8 (kept as lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_invalid_text(k) or _has_invalid_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_invalid_text(v) for v in value)
    return False


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


def count_records(path: Path, fmt: str, start: int, end: int) -> tuple[int, int]:
    """How many records ``iter_records`` yields for this span, and how many lines it spans (the
    ids and line numbers of the next span start there)."""
    if fmt == "parquet":
        meta = pq.ParquetFile(path).metadata
        return sum(meta.row_group(g).num_rows for g in range(start, end)), 0
    records = lines = 0
    for line, _ in _lines(path, start, end):
        lines += 1
        records += bool(line.strip())
    return records, lines


def iter_records(path: Path, fmt: str, txt_mode: str = "file", span: tuple[int, int] | None = None, first_line: int = 1) -> Iterator[tuple[str, dict | str, dict]]:
    """Yield ("ok", record dict, where) or ("error", reason, where) per record, in file order;
    ``where`` locates the record ({"line": n} in line formats, counted from ``first_line``, the
    number of the span's first line; {"record": n} in a JSON array). ``span`` limits the read to
    a byte range (JSONL, text lines) or a row-group range (Parquet). Bytes that are not UTF-8
    cost only their record: ``parse:invalid-utf8``, with the offset of the first bad byte."""
    if fmt in ("jsonl", "txt") and not (fmt == "txt" and txt_mode == "file"):
        for lineno, (line, bad) in enumerate(_lines(path, *(span or (0, None))), start=first_line):
            if not line.strip():
                continue
            if bad is not None:
                yield "error", "parse:invalid-utf8", {"line": lineno, "byte_in_line": bad}
                continue
            if fmt == "txt":
                yield "ok", {"text": line}, {"line": lineno}
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                yield "error", "parse:invalid-json", {"line": lineno}
                continue
            yield ("ok", rec, {"line": lineno}) if isinstance(rec, dict) else ("error", "parse:not-an-object", {"line": lineno})
    elif fmt == "json":
        with _open_binary(path) as fh:
            text, _ = _decode(fh.read())
        data = json.loads(text)
        for i, rec in enumerate(data if isinstance(data, list) else [data]):
            if not isinstance(rec, dict):
                yield "error", "parse:not-an-object", {"record": i}
            elif _has_invalid_text(rec):
                yield "error", "parse:invalid-utf8", {"record": i}
            else:
                yield "ok", rec, {"record": i}
    elif fmt == "txt":
        with _open_binary(path) as fh:
            text, bad = _decode(fh.read())
        yield ("ok", {"text": text}, {}) if bad is None else ("error", "parse:invalid-utf8", {"byte": bad})
    elif fmt in ("csv", "tsv"):
        yield from _delimited_records(path, "\t" if fmt == "tsv" else ",")
    elif fmt in ("parquet", "arrow"):
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            groups = list(range(*span)) if span else None
            batches = pf.iter_batches(BATCH_ROWS, row_groups=groups) if groups != [] else iter(())
        else:
            batches = _arrow_batches(path)
        for batch in batches:
            for rec in batch.to_pylist():
                yield "ok", rec, {}
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


def _delimited_records(path: Path, delimiter: str) -> Iterator[tuple[str, dict | str, dict]]:
    """CSV/TSV with a header row, parsed by ``pyarrow.csv`` (streamed, one thread so that a bad
    row's number is known): every column a string (an empty field is ""), quoted fields may hold
    newlines and delimiters, UTF-8 with or without a BOM, gzip/bz2 by extension. A row with the
    wrong number of fields is an error record (``parse:invalid-csv``, ``{"row": n}``: the header
    is row 1, a quoted newline does not start a row); bytes that are not UTF-8 stop the read (the
    caller names the file)."""
    import pyarrow.csv as pcsv

    problems: list[dict] = []

    def bad_row(row) -> str:
        problems.append({"row": row.number, "fields": row.actual_columns, "expected_fields": row.expected_columns})
        return "skip"

    parse = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=bad_row)
    read = pcsv.ReadOptions(use_threads=False, block_size=8 << 20)
    # the header first: every column is read as a string (ids like 007 and labels like 1 stay as written)
    probe = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=lambda row: "skip")
    names = pcsv.open_csv(str(path), read_options=read, parse_options=probe).schema.names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise StageError(f"the header repeats column(s) {dup}", where=str(path), hint="give every column its own name")
    convert = pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False, quoted_strings_can_be_null=False)
    for batch in pcsv.open_csv(str(path), read_options=read, parse_options=parse, convert_options=convert):
        for where in problems:
            yield "error", "parse:invalid-csv", where
        problems.clear()
        for rec in batch.to_pylist():
            yield "ok", rec, {}
    for where in problems:
        yield "error", "parse:invalid-csv", where
