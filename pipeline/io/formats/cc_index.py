"""Common Crawl's columnar URL index (Parquet, ``cc-index/table/cc-main/warc/crawl=.../subset=warc/``):
which records of a crawl match a selection, read over HTTP with as few bytes as possible.

* Column projection: only the columns a selection tests plus the record locations are read.
* Row-group pruning: the index is sorted by SURT key (reversed host: ``cn,com,example)/...``), so
  row groups hold runs of one TLD and host; a row group whose min/max statistics exclude every
  wanted value is never fetched.
* Ranged reads: the file is opened through :class:`pipeline.io.http.RangedFile` (footer, then
  the column chunks of the kept row groups, coalesced by pyarrow's ``pre_buffer``).

Nothing here knows about the pipeline: a stage decides what to do with the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# The record locations every selection returns, and what a selection may test.
LOCATION_COLUMNS = ("url", "warc_filename", "warc_record_offset", "warc_record_length")
SELECTED_SCHEMA = pa.schema([
    ("url", pa.string()), ("warc_filename", pa.string()), ("warc_record_offset", pa.int64()), ("warc_record_length", pa.int64()),
    ("content_languages", pa.string()), ("url_host_tld", pa.string()), ("url_host_name", pa.string()),
])
_HIGH = "\U0010ffff"


@dataclass(frozen=True)
class Selection:
    """Rows kept: every given criterion holds. ``languages`` match the *primary* language of
    ``content_languages`` (ISO 639-3, as CLD2 wrote it: ``zho``, ``eng``); ``hosts`` match a host
    or any of its subdomains; ``warc_files`` (paths as in ``warc.paths.gz``) limit the files."""

    languages: tuple[str, ...] = ()
    tlds: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    mimes: tuple[str, ...] = ()
    statuses: tuple[int, ...] = ()
    warc_files: frozenset[str] | None = None

    def columns(self) -> list[str]:
        cols = list(LOCATION_COLUMNS) + ["content_languages", "url_host_tld", "url_host_name"]
        if self.mimes:
            cols.append("content_mime_detected")
        if self.statuses:
            cols.append("fetch_status")
        return cols


@dataclass
class ScanStats:
    row_groups: int = 0
    row_groups_read: int = 0
    rows_read: int = 0
    rows_selected: int = 0
    bytes_read: int = 0
    requests: int = 0
    file_bytes: int = 0
    missing_columns: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _overlaps(stats, values: Iterable[str], prefix: bool = False) -> bool:
    """Can a row group whose column lies in [min, max] hold one of ``values`` (or a value that
    starts with one, with ``prefix``)? True when the statistics do not say."""
    if stats is None or not stats.has_min_max:
        return True
    lo, hi = stats.min, stats.max
    if isinstance(lo, bytes):
        lo, hi = lo.decode("utf-8", "replace"), hi.decode("utf-8", "replace")
    for v in values:
        top = v + _HIGH if prefix else v
        if lo <= top and v <= hi:
            return True
    return False


def _overlaps_int(stats, values: Iterable[int]) -> bool:
    if stats is None or not stats.has_min_max:
        return True
    return any(stats.min <= v <= stats.max for v in values)


def keep_row_group(meta: pq.RowGroupMetaData, names: dict[str, int], sel: Selection) -> bool:
    """False when the row group's statistics prove that no row can match."""

    def stats(col: str):
        i = names.get(col)
        return meta.column(i).statistics if i is not None else None

    if sel.tlds and not _overlaps(stats("url_host_tld"), sel.tlds):
        return False
    if sel.languages and not _overlaps(stats("content_languages"), sel.languages, prefix=True):
        return False
    if sel.mimes and not _overlaps(stats("content_mime_detected"), sel.mimes):
        return False
    if sel.statuses and not _overlaps_int(stats("fetch_status"), sel.statuses):
        return False
    return True


def row_mask(table: pa.Table, sel: Selection) -> pa.ChunkedArray | pa.Array:
    """The rows of an index table that match (vectorized)."""
    mask = pa.array([True] * table.num_rows)
    if sel.languages:
        primary = pc.replace_substring_regex(pc.fill_null(table["content_languages"], ""), r",.*$", "")
        mask = pc.and_(mask, pc.is_in(primary, value_set=pa.array(list(sel.languages))))
    if sel.tlds:
        mask = pc.and_(mask, pc.is_in(pc.utf8_lower(table["url_host_tld"]), value_set=pa.array([t.lower() for t in sel.tlds])))
    if sel.hosts:
        host = pc.utf8_lower(pc.fill_null(table["url_host_name"], ""))
        hit = pc.is_in(host, value_set=pa.array([h.lower() for h in sel.hosts]))
        for h in sel.hosts:
            hit = pc.or_(hit, pc.ends_with(host, "." + h.lower()))
        mask = pc.and_(mask, hit)
    if sel.mimes:
        mask = pc.and_(mask, pc.is_in(table["content_mime_detected"], value_set=pa.array(list(sel.mimes))))
    if sel.statuses:
        mask = pc.and_(mask, pc.is_in(table["fetch_status"].cast(pa.int64()), value_set=pa.array(list(sel.statuses), pa.int64())))
    if sel.warc_files is not None:
        mask = pc.and_(mask, pc.is_in(table["warc_filename"], value_set=pa.array(sorted(sel.warc_files), pa.string())))
    return pc.fill_null(mask, False)


def read_footer(fh) -> pq.FileMetaData:
    """The file metadata, read with two small reads from the end (the footer length, then the
    footer), instead of the reader's fixed 64 KiB guess: over HTTP every byte counts."""
    fh.seek(-8, 2)
    tail = fh.read(8)
    if len(tail) != 8 or tail[4:] != b"PAR1":
        raise ValueError("not a Parquet file (no PAR1 footer)")
    n = int.from_bytes(tail[:4], "little")
    fh.seek(-(8 + n), 2)
    meta = fh.read(n)
    return pq.read_metadata(pa.BufferReader(b"PAR1" + meta + tail))


def scan(source, sel: Selection) -> tuple[pa.Table, ScanStats]:
    """The rows of one index file that match ``sel`` (``SELECTED_SCHEMA``). ``source``: a path or a
    seekable binary file (a ``RangedFile`` for a remote index); read one row group at a time with
    only the columns the selection needs. Raises ``KeyError`` naming a column the file lacks."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        source = open(source, "rb")
    pf = pq.ParquetFile(source, metadata=read_footer(source), pre_buffer=True)
    schema_names = pf.schema_arrow.names
    want = sel.columns()
    missing = [c for c in want if c not in schema_names]
    if missing:
        raise KeyError(", ".join(missing))
    names = {pf.metadata.schema.column(i).name: i for i in range(pf.metadata.num_columns)}
    st = ScanStats(row_groups=pf.metadata.num_row_groups)
    out = []
    for i in range(pf.metadata.num_row_groups):
        if not keep_row_group(pf.metadata.row_group(i), names, sel):
            continue
        table = pf.read_row_group(i, columns=want)
        st.row_groups_read += 1
        st.rows_read += table.num_rows
        kept = table.filter(row_mask(table, sel))
        if kept.num_rows:
            out.append(kept.select(SELECTED_SCHEMA.names).cast(SELECTED_SCHEMA))
    result = pa.concat_tables(out) if out else SELECTED_SCHEMA.empty_table()
    st.rows_selected = result.num_rows
    return result, st


def coalesce(ranges: list[tuple[int, int]], max_gap: int = 0) -> list[tuple[int, int, list[int]]]:
    """Sorted ``(offset, length)`` record ranges -> ``(start, end, [indexes])`` fetches: ranges
    closer than ``max_gap`` bytes are read with one request (the gap bytes are fetched and dropped)."""
    out: list[tuple[int, int, list[int]]] = []
    for k, (off, length) in sorted(enumerate(ranges), key=lambda kv: kv[1][0]):
        end = off + length
        if out and off - out[-1][1] <= max_gap and off >= out[-1][0]:
            start, prev_end, idx = out[-1]
            out[-1] = (start, max(prev_end, end), [*idx, k])
        else:
            out.append((off, end, [k]))
    return out
