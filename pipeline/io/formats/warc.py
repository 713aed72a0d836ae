"""WARC and WET files: gzipped one member per record (as Common Crawl writes them), plain, or
gzipped whole (one member, or arbitrary chunks).

Two layers:

* **Framing** (here, in Python): the file is read as a sequence of gzip members (or plain
  bytes), each record is cut by its ``Content-Length`` and checked: its gzip member must be
  complete (the CRC and size trailer verified), the block must end with CRLF CRLF followed by
  the next record (or the end of the file), and a record that starts a gzip member must not
  run into the next one. A record with no gzip member of its own (plain files, whole-file gzip,
  whose CRC comes only after its records) is checked against its ``WARC-Block-Digest`` when it
  has one. Neither library does this on its own (measured, docs/warc.md): both return a record
  whose gzip member is cut short as if it were whole, warcio returns a record with a
  ``Content-Length`` too long silently, and both stop at a short one or at junk, losing every
  later record. Damage does not stop this reader: it yields a :class:`WarcProblem` and
  resynchronizes at the next record (the next gzip member holding one, or the next ``WARC/1.``
  line that opens a readable header); the output of a damaged gzip member up to the damage is
  kept (the records that end before it are whole).
* **Parsing** of each document record (``response``, ``resource``, ``conversion``): its WARC
  and HTTP headers and its payload, with transfer and content encodings decoded, by a
  maintained WARC library: FastWARC (chosen by measurement, benchmarks/bench_warc.py) or
  warcio (``backend="warcio"``, for comparison).

Other records (``request``, ``metadata``, ``warcinfo``, ``revisit``) are yielded without their
payload, for counting (a ``warcinfo`` record with its ``application/warc-fields`` in ``fields``:
``isPartOf`` names the crawl). Nothing here knows about the pipeline: callers turn problems into
ledger entries.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

DOCUMENT_TYPES = ("response", "resource", "conversion")
DEFAULT_MAX_PAYLOAD = 10 * 2**20
MAX_HEADER = 64 * 1024  # a WARC header block larger than this is not a WARC header
GZIP_MAGIC = b"\x1f\x8b\x08"
_IN_CHUNK = 256 * 1024
_OUT_CHUNK = 8 * 2**20
_RESYNC_LIMIT = 16 * 2**20  # how far one resync window looks for the next record (memory bound)

# Reasons, as they go to the ledger.
TRUNCATED = "warc:truncated"  # a gzip member cut short or damaged (CRC, data error)
BAD_LENGTH = "warc:bad-length"  # Content-Length does not frame the record
TOO_LARGE = "warc:too-large"  # the block is over the cap: not read into memory
UNPARSABLE = "warc:unparsable"  # bytes that are not a WARC record (junk), or unreadable headers
DIGEST = "warc:digest-mismatch"  # a block that does not match its WARC-Block-Digest (no gzip CRC of its own vouches for it)


@dataclass
class WarcRecord:
    warc_type: str
    record_id: str | None  # the UUID inside <urn:uuid:...> (or the raw id when it is not one)
    date: str | None  # WARC-Date as written
    url: str | None  # WARC-Target-URI
    headers: dict[str, str]  # the WARC headers (names as written)
    content_length: int
    offset: int | None  # where the record starts in the file (its gzip member for .gz files)
    length: int | None  # bytes it takes in the file (its gzip member), when known
    http_status: int | None = None
    content_type: str | None = None  # HTTP Content-Type for responses, the WARC one otherwise
    payload: bytes | None = None  # document records only: the body, encodings decoded
    payload_digest: str | None = None
    fields: dict[str, str] | None = None  # warcinfo only: its warc-fields (isPartOf, operator, ...)


@dataclass
class WarcProblem:
    reason: str
    detail: str
    offset: int | None  # in the file (compressed offset for .gz)
    length: int | None = None
    warc_type: str | None = None
    record_id: str | None = None
    url: str | None = None
    date: str | None = None
    extra: dict = field(default_factory=dict)


class NotWarc(ValueError):
    """The file is not a WARC file at all (no WARC record where one must start)."""


class _Damaged(Exception):
    def __init__(self, cpos: int, why: str, at_eof: bool = False, reason: str = TRUNCATED):
        super().__init__(why)
        self.cpos, self.why, self.at_eof, self.reason = cpos, why, at_eof, reason


def record_uuid(record_id: str | None) -> str | None:
    """``<urn:uuid:X>`` -> ``X`` (other ids without their angle brackets)."""
    if not record_id:
        return None
    rid = record_id.strip().strip("<>")
    return rid[9:] if rid.lower().startswith("urn:uuid:") else rid


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(3) == GZIP_MAGIC


# ---- the decompressed stream ------------------------------------------------------------------


class _Stream:
    """The uncompressed bytes of a file, read on demand, with the gzip member boundaries mapped
    between uncompressed and compressed offsets."""

    def __init__(self, fh: BinaryIO, gz: bool, start: int = 0):
        self.fh, self.gz = fh, gz
        fh.seek(start)
        self.buf = bytearray()
        self.r = 0  # read index into buf
        self.base = 0  # uncompressed offset of buf[0]
        self.inbuf = b""  # compressed input not yet given to a decompressor
        self.in_pos = start  # compressed offset of inbuf[0]
        self.fh_eof = False
        self.d = None
        self.member_cpos = start
        self.starts: dict[int, int] = {}  # uncompressed offset -> compressed offset, member starts
        self.ends: dict[int, int] = {}  # uncompressed offset -> compressed offset, member ends
        self.eof = False
        self.damage: _Damaged | None = None  # found while looking past a finished record: the next one's
        self.pending: _Damaged | None = None  # found by the inflater, raised once the output before it is used
        self.seen_warc = False  # a record start (``WARC/``) was seen: damage, not a file of another kind
        self._current: dict | None = None  # the record being read (for a problem raised mid-record)

    # positions
    @property
    def pos(self) -> int:
        """Uncompressed offset of the next unread byte."""
        return self.base + self.r

    def cpos_of(self, upos: int) -> int:
        """The file offset of an uncompressed offset: exact for plain files and member starts."""
        if not self.gz:
            return upos
        return self.starts.get(upos, self.ends.get(upos, self.member_cpos))

    def avail(self) -> int:
        return len(self.buf) - self.r

    def _read_in(self) -> bool:
        if self.fh_eof:
            return False
        data = self.fh.read(_IN_CHUNK)
        if not data:
            self.fh_eof = True
            return False
        self.inbuf = self.inbuf + data if self.inbuf else data
        return True

    def _compact(self) -> None:
        if self.r > (1 << 20) and self.r > len(self.buf) // 2:
            del self.buf[: self.r]
            self.base += self.r
            self.r = 0
            self.starts = {u: c for u, c in self.starts.items() if u >= self.base}
            self.ends = {u: c for u, c in self.ends.items() if u >= self.base}

    def fill(self, n: int) -> bool:
        """Make at least ``n`` unread bytes available; False at the end of the data."""
        while self.avail() < n:
            if self.eof:
                return False
            self._compact()
            if not self.gz:
                if not self._read_in():
                    self.eof = True
                    return False
                self.buf += self.inbuf
                self.in_pos += len(self.inbuf)
                self.inbuf = b""
                continue
            self._inflate_some()
        return True

    def _inflate_some(self) -> None:
        if self.pending is not None:  # the damage found while salvaging, now that its output is used
            exc, self.pending = self.pending, None
            raise exc
        if self.d is None:
            while len(self.inbuf) < 3 and self._read_in():
                pass
            if not self.inbuf:
                self.eof = True
                return
            if self.inbuf[:3] != GZIP_MAGIC:
                raise _Damaged(self.in_pos, "bytes that are not a gzip member", at_eof=self.fh_eof and len(self.inbuf) < 3, reason=UNPARSABLE)
            self.d = zlib.decompressobj(31)
            self.member_cpos = self.in_pos
            self.starts[self.base + len(self.buf)] = self.in_pos
        d = self.d
        if not self.inbuf:
            out = d.decompress(b"", _OUT_CHUNK)  # output zlib still holds
            if out:
                self.buf += out
                return
            if not self._read_in():
                try:
                    self.buf += d.flush()
                except zlib.error:
                    pass
                raise _Damaged(self.member_cpos, "the gzip member is cut short (the file ends inside it)", at_eof=True)
        before = d.copy()  # cheap (the window): lets the output before a damaged spot be salvaged
        try:
            out = d.decompress(self.inbuf, _OUT_CHUNK)
        except zlib.error as exc:
            # zlib gives no output from a call that fails: inflate again in small steps, keep what
            # came out before the damage (the records that end before it are whole), fail after.
            self.buf += _salvage(before, self.inbuf)
            self.pending = _Damaged(self.member_cpos, f"the gzip member is damaged ({exc})")
            return
        if d.eof:
            rest = d.unused_data
        else:
            rest = d.unconsumed_tail
        self.in_pos += len(self.inbuf) - len(rest)
        self.inbuf = rest
        self.buf += out
        if d.eof:
            self.ends[self.base + len(self.buf)] = self.in_pos
            self.d = None

    def peek(self, n: int) -> bytes:
        self.fill(n)
        return bytes(self.buf[self.r : self.r + n])

    def take(self, n: int) -> bytes:
        self.fill(n)
        data = bytes(self.buf[self.r : self.r + n])
        self.r += len(data)
        return data

    def skip(self, n: int) -> int:
        """Skip ``n`` bytes without keeping them (a block over the cap); returns how many."""
        done = 0
        while done < n:
            if not self.avail() and not self.fill(1):
                break
            step = min(n - done, self.avail())
            self.r += step
            done += step
            self._compact()
        return done

    def find(self, needle: bytes, limit: int, frm: int = 0) -> int:
        """Offset (from the read index) of ``needle`` within the next ``limit`` bytes (from
        ``frm`` on), or -1."""
        searched = frm
        while True:
            idx = self.buf.find(needle, self.r + max(frm, searched - len(needle)), self.r + limit)
            if idx >= 0:
                return idx - self.r
            searched = self.avail()
            if searched >= limit or not self.fill(searched + _IN_CHUNK):
                idx = self.buf.find(needle, self.r + frm, self.r + limit)
                return idx - self.r if idx >= 0 else -1

    def member_start_between(self, lo: int, hi: int) -> int | None:
        """The first gzip member start strictly inside (lo, hi) (uncompressed offsets)."""
        inside = [u for u in self.starts if lo < u < hi]
        return min(inside) if inside else None

    def resync_compressed(self, after: int) -> int | None:
        """After damage: find the next gzip member (from compressed offset ``after`` + 1) whose
        data starts a WARC record, position the stream there and return its offset (None: the
        file holds no further record)."""
        cand = _next_warc_member(self.fh, after + 1)
        self._restart(cand)
        return cand

    def _restart(self, cpos: int | None) -> None:
        self.base = self.pos + 1_000_000_000  # a fresh uncompressed numbering: nothing maps across
        self.buf, self.r = bytearray(), 0
        self.starts, self.ends = {}, {}
        self.d, self.pending = None, None
        self.inbuf = b""
        if cpos is None:
            self.eof, self.fh_eof = True, True
            return
        self.fh.seek(cpos)
        self.in_pos = self.member_cpos = cpos
        self.fh_eof = self.eof = False


def _salvage(d, data: bytes, step: int = 64) -> bytes:
    """What ``d`` inflates from ``data`` before the first zlib error."""
    out = []
    for i in range(0, len(data), step):
        try:
            out.append(d.decompress(data[i : i + step]))
        except zlib.error:
            break
        if d.eof:
            break
    return b"".join(out)


def _next_warc_member(fh: BinaryIO, pos: int, limit: int | None = None) -> int | None:
    """The offset of the first gzip member at or after ``pos`` whose data starts a WARC record
    (within ``limit`` bytes when given), or None."""
    end = None if limit is None else pos + limit
    while end is None or pos < end:
        fh.seek(pos)
        window = fh.read(1 << 20)
        if not window:
            break
        k = window.find(GZIP_MAGIC)
        while k >= 0:
            cand = pos + k
            fh.seek(cand)
            probe = fh.read(1 << 16)
            try:
                head = zlib.decompressobj(31).decompress(probe, 16)
            except zlib.error:
                head = b""
            if head.startswith(b"WARC/"):
                return cand
            k = window.find(GZIP_MAGIC, k + 1)
        if len(window) < (1 << 20):
            break
        pos += len(window) - 2
    return None


def _sniff_gz(fh: BinaryIO, start: int) -> bool:
    """Gzipped or plain? By the first bytes; when they are neither (junk before the first
    record), by whichever comes first: a gzip member holding a record, or a plain ``WARC/1.``."""
    fh.seek(start)
    head = fh.read(5)
    if head[:3] == GZIP_MAGIC:
        return True
    if head[:5] == b"WARC/":
        return False
    fh.seek(start)
    head = fh.read(_RESYNC_LIMIT)
    plain = head.find(b"WARC/1.")
    member = _next_warc_member(fh, start, len(head))
    return member is not None and (plain < 0 or member - start < plain)


# ---- headers ------------------------------------------------------------------------------


_HEADER_LINE = re.compile(rb"^([^:\s][^:]*):[ \t]*(.*?)[ \t]*$")


def _parse_header(block: bytes) -> tuple[str, dict[str, str]] | None:
    lines = block.split(b"\r\n") if b"\r\n" in block else block.split(b"\n")
    version = lines[0].decode("latin-1").strip()
    if not version.startswith("WARC/"):
        return None
    headers: dict[str, str] = {}
    last = None
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and last:  # folded continuation
            headers[last] += " " + line.strip().decode("utf-8", "replace")
            continue
        m = _HEADER_LINE.match(line)
        if not m:
            return None
        last = m.group(1).decode("latin-1")
        headers[last] = m.group(2).decode("utf-8", "replace")
    return version, headers


def _get(headers: dict[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    low = name.lower()
    for k, v in headers.items():
        if k.lower() == low:
            return v
    return None


def _warc_fields(block: bytes) -> dict[str, str]:
    """``application/warc-fields`` (warcinfo): ``name: value`` lines."""
    out: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _block_digest(headers: dict[str, str], block: bytes) -> bool | None:
    """Does ``WARC-Block-Digest`` (``sha1:BASE32`` as Common Crawl writes it, or hex) match the
    block? None when it cannot tell (no digest, an algorithm hashlib does not know)."""
    value = _get(headers, "WARC-Block-Digest")
    algo, sep, want = (value or "").strip().partition(":")
    if not sep:
        return None
    try:
        digest = hashlib.new(algo.lower().replace("-", ""), block).digest()
    except (ValueError, TypeError):  # an unknown algorithm, or a name hashlib refuses
        return None
    want = want.strip()
    return want.upper() == base64.b32encode(digest).decode("ascii") or want.lower() == digest.hex()


def _block_digest_ok(headers: dict[str, str], block: bytes) -> bool:
    """The block's digest is there and matches: the record vouches for its own length."""
    return _block_digest(headers, block) is True


def _find_record(s: "_Stream", limit: int, frm: int = 0) -> int:
    """Offset (from the read index) of the next plausible record start within ``limit`` bytes:
    ``WARC/1.`` opening a header block that parses and has a WARC-Type and a Content-Length (a
    page that merely mentions ``WARC/1.0`` is not one). -1: none."""
    at = frm
    while True:
        idx = s.find(b"WARC/1.", limit, at)
        if idx < 0:
            return -1
        end = s.find(b"\r\n\r\n", idx + MAX_HEADER, idx)
        if end >= 0:
            parsed = _parse_header(bytes(s.buf[s.r + idx : s.r + end]))
            if parsed and _get(parsed[1], "WARC-Type") and _get(parsed[1], "Content-Length"):
                return idx
        at = idx + 1


# ---- payload parsing by a library -------------------------------------------------------------


def _parse_fastwarc(raw: bytes, warc_type: str) -> tuple[int | None, str | None, bytes]:
    from fastwarc.warc import WarcRecord as FWRecord

    rec = FWRecord.from_bytes(raw)
    if warc_type == "response" and rec.is_http:
        try:
            rec.parse_http(auto_decode="all")
        except Exception:  # an encoding it cannot decode: the bytes as sent
            rec = FWRecord.from_bytes(raw)
            rec.parse_http(auto_decode="none")
        hh = rec.http_headers
        return hh.status_code, hh.get("Content-Type"), rec.reader.read()
    return None, rec.headers.get("Content-Type"), rec.reader.read()


def _parse_warcio(raw: bytes, warc_type: str) -> tuple[int | None, str | None, bytes]:
    from warcio.archiveiterator import ArchiveIterator

    rec = next(iter(ArchiveIterator(io.BytesIO(raw), ensure_http_headers=False)))
    if warc_type == "response" and rec.http_headers is not None:
        status = rec.http_headers.get_statuscode()
        try:
            payload = rec.content_stream().read()
        except Exception:
            rec = next(iter(ArchiveIterator(io.BytesIO(raw))))
            payload = rec.raw_stream.read()
        return int(status) if status and status.isdigit() else None, rec.http_headers.get_header("Content-Type"), payload
    return None, rec.rec_headers.get_header("Content-Type"), rec.content_stream().read()


BACKENDS = {"fastwarc": _parse_fastwarc, "warcio": _parse_warcio}


# ---- the reader ---------------------------------------------------------------------------


def iter_records(
    source: str | Path | BinaryIO,
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    backend: str = "fastwarc",
    gz: bool | None = None,
    start: int = 0,
) -> Iterator[WarcRecord | WarcProblem]:
    """Every record of a WARC/WET file, in order, as :class:`WarcRecord` (document records with
    their payload), and every damaged stretch as :class:`WarcProblem`. Raises :class:`NotWarc`
    when nothing in the data looks like a WARC record (problems before the first record are held
    back until one is found, so a non-WARC file yields nothing before the error). ``source``: a path
    or a seekable binary file; ``start``: a compressed offset to begin at (a record boundary)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            yield from iter_records(fh, max_payload_bytes=max_payload_bytes, backend=backend, gz=gz, start=start)
        return
    fh = source
    if gz is None:
        gz = _sniff_gz(fh, start)
    parse = BACKENDS[backend]
    s = _Stream(fh, gz, start)
    held: list[WarcProblem] | None = []  # problems before the first record (None: one was seen)
    while True:
        try:
            item = _next_record(s, parse, max_payload_bytes)
            items = [] if item is None else [item]
        except _Damaged as exc:
            item, items = False, list(_after_damage(s, exc))
        for it in items:
            if held is not None:
                if isinstance(it, WarcProblem) and it.warc_type is None:
                    held.append(it)
                    continue
                yield from held
                held = None
            yield it
        if item is None:
            break
    if held and not s.seen_warc:
        raise NotWarc(f"no WARC record found ({held[0].detail})")
    yield from held or ()  # a WARC file damaged before its first whole record


def _after_damage(s: _Stream, exc: _Damaged) -> Iterator[WarcProblem]:
    info = getattr(s, "_current", None) or {}
    s._current = None
    nxt = None if exc.at_eof else s.resync_compressed(exc.cpos)
    if exc.at_eof:
        s._restart(None)
    span = f"bytes {exc.cpos}-{nxt - 1} skipped" if nxt is not None else f"bytes {exc.cpos}- (to the end of the file) lost"
    yield WarcProblem(
        exc.reason,
        f"{exc.why}: {span}",
        exc.cpos,
        (nxt - exc.cpos) if nxt is not None else None,
        warc_type=info.get("warc_type"),
        record_id=info.get("record_id"),
        url=info.get("url"),
        date=info.get("date"),
    )


def _next_record(s: _Stream, parse, cap: int) -> WarcRecord | WarcProblem | None:
    s._current = None
    if s.damage is not None:
        exc, s.damage = s.damage, None
        raise exc
    if not s.fill(1):
        return None
    start_u = s.pos
    start_c = s.cpos_of(start_u) if s.gz else start_u
    member_start = (start_u in s.starts) if s.gz else False
    lead = s.peek(5)
    s.seen_warc = s.seen_warc or lead.startswith(b"WARC/")
    if not lead.startswith(b"WARC/"):
        return _junk(s, start_u, start_c, "bytes that are not a WARC record")
    head_end = s.find(b"\r\n\r\n", MAX_HEADER)
    if head_end < 0 and not s.fill(MAX_HEADER):
        # the data ends inside a header: a cut file (what the header says so far names the record)
        rest = s.take(s.avail())
        part = dict(re.findall(r"(?m)^(WARC-Type|WARC-Record-ID|WARC-Target-URI|WARC-Date):[ \t]*(\S+)\r?$", rest.decode("latin-1")))
        info = {
            "warc_type": (part.get("WARC-Type") or "").lower() or "?",
            "record_id": record_uuid(part.get("WARC-Record-ID")),
            "url": part.get("WARC-Target-URI"),
            "date": part.get("WARC-Date"),
        }
        return WarcProblem(TRUNCATED, f"the file ends inside a record's header ({len(rest)} bytes of it are there)", start_c, None, **info)
    if head_end < 0:
        return _junk(s, start_u, start_c, f"no end of the WARC header within {MAX_HEADER} bytes")
    header = s.take(head_end + 4)
    parsed = _parse_header(header[:-4])
    if parsed is None:
        return _junk(s, start_u, start_c, "a WARC header that cannot be read", consumed=True)
    version, headers = parsed
    wtype = (_get(headers, "WARC-Type") or "").strip().lower()
    info = {
        "warc_type": wtype or None,
        "record_id": record_uuid(_get(headers, "WARC-Record-ID")),
        "url": _get(headers, "WARC-Target-URI"),
        "date": _get(headers, "WARC-Date"),
    }
    s._current = info
    try:
        length = int((_get(headers, "Content-Length") or "").strip())
        if length < 0:
            raise ValueError
    except ValueError:
        return _resync_plain(s, start_c, BAD_LENGTH, f"Content-Length {_get(headers, 'Content-Length')!r} is not a length", info)
    block_start = s.pos
    too_large = length > cap
    if too_large:
        got = s.skip(length)  # streamed past, never held: memory stays flat whatever the length
        block = None
    else:
        block = s.take(length)
        got = len(block)
    block_end = block_start + got
    # A gzip member that starts inside the block: legitimate in a file gzipped in arbitrary
    # chunks, but when the framing fails below it is where the next record starts.
    crossed = s.member_start_between(start_u, block_end) if s.gz else None
    if crossed is not None and crossed < s.base:
        crossed = None
    into_next = f"Content-Length {length} does not end the record (it runs into the next gzip member)"
    if got < length and crossed is not None:
        return _resync_at(s, crossed, start_c, BAD_LENGTH, into_next, info)
    if got < length:
        # The data ended inside the block, cleanly (a damaged gzip member raises instead): the
        # file was cut, or (when records follow) the length is too long.
        return _resync_plain(
            s,
            start_c,
            BAD_LENGTH,
            f"Content-Length {length} runs past the end of the data ({got} bytes left)",
            info,
            search_from=block_start,
            if_last=(TRUNCATED, f"the file ends inside the record ({got} of its {length} bytes are there)"),
        )
    trailer = s.peek(4)
    if trailer != b"\r\n\r\n" and crossed is not None and crossed >= s.base:
        return _resync_at(s, crossed, start_c, BAD_LENGTH, into_next, info)
    if trailer != b"\r\n\r\n":
        return _resync_plain(s, start_c, BAD_LENGTH, f"Content-Length {length} does not end the record (found {trailer!r} where CRLF CRLF must follow)", info, search_from=block_start)
    s.take(4)
    try:
        nxt = s.peek(5)
    except _Damaged as exc:
        if not (s.gz and s.pos in s.ends):
            raise  # the record's own gzip member is cut short or damaged
        s.damage, nxt = exc, b"WARC/"  # the next member's problem: reported after this record
    if nxt and not nxt.startswith(b"WARC/") and not (s.gz and s.pos in s.starts):
        # More bytes that are not a record: either the length was short (and happened to end on
        # CRLF CRLF) or junk follows a whole record. The block digest, when there is one, decides;
        # junk is reported by the next call.
        if block is None or not _block_digest_ok(headers, block):
            if crossed is not None and crossed >= s.base:
                return _resync_at(s, crossed, start_c, BAD_LENGTH, into_next, info)
            return _resync_plain(s, start_c, BAD_LENGTH, f"Content-Length {length} is shorter than the record (bytes that are not a record follow it)", info, search_from=block_start)
    end_c = s.ends.get(s.pos) if s.gz else s.pos
    rec_offset = start_c if (not s.gz or member_start) else None
    rec_length = (end_c - start_c) if (rec_offset is not None and end_c is not None) else None
    s._current = None
    if too_large:
        return WarcProblem(TOO_LARGE, f"the record's block is {length:,} bytes, over the {cap:,}-byte cap (max_payload_bytes)", start_c, rec_length, extra={"content_length": length}, **info)
    if block is not None and not (s.gz and member_start and end_c is not None) and _block_digest(headers, block) is False:
        # Plain files and records sharing a gzip member have no CRC of their own (a whole-file
        # gzip's CRC is checked only at its end, after its records are out): the digest decides.
        return WarcProblem(DIGEST, f"the block does not match its WARC-Block-Digest {_get(headers, 'WARC-Block-Digest')}", start_c, rec_length, **info)
    rec = WarcRecord(
        warc_type=wtype,
        record_id=info["record_id"],
        date=info["date"],
        url=info["url"],
        headers=headers,
        content_length=length,
        offset=rec_offset,
        length=rec_length,
        payload_digest=_get(headers, "WARC-Payload-Digest"),
    )
    if wtype in DOCUMENT_TYPES:
        try:
            rec.http_status, rec.content_type, rec.payload = parse(header + block + b"\r\n\r\n", wtype)
        except Exception as exc:
            return WarcProblem(UNPARSABLE, f"the {wtype} record cannot be parsed ({type(exc).__name__}: {exc})", start_c, rec_length, **info)
    elif wtype == "warcinfo":
        rec.fields = _warc_fields(block)
    return rec


def _junk(s: _Stream, start_u: int, start_c: int, why: str, consumed: bool = False) -> WarcProblem:
    """Bytes that are not a WARC record: skip to the next record (in this gzip member or a later
    one), at most ``_RESYNC_LIMIT`` bytes at a time."""
    idx = _find_record(s, _RESYNC_LIMIT, 0 if consumed else 1)
    if idx >= 0:
        s.skip(idx)
        nxt = s.cpos_of(s.pos)
    else:
        s.skip(_RESYNC_LIMIT)
        nxt = s.cpos_of(s.pos) if s.fill(1) else None
    span = f"bytes {start_c}-{nxt - 1} skipped" if nxt is not None and nxt > start_c else f"bytes {start_c}- (to the end) skipped" if nxt is None else f"{s.pos - start_u} uncompressed bytes in the gzip member at {start_c} skipped"
    return WarcProblem(UNPARSABLE, f"{why}: {span}", start_c, (nxt - start_c) if nxt is not None and nxt > start_c else None, extra={"skipped_bytes": s.pos - start_u} if s.gz else {})


def _resync_at(s: _Stream, upos: int, start_c: int, reason: str, why: str, info: dict) -> WarcProblem:
    """Continue at uncompressed offset ``upos`` (a member start already decompressed)."""
    s.r = upos - s.base
    s._current = None
    nxt = s.starts.get(upos)
    return WarcProblem(reason, why, start_c, (nxt - start_c) if nxt is not None else None, **info)


def _resync_plain(s: _Stream, start_c: int, reason: str, why: str, info: dict, search_from: int | None = None, if_last: tuple[str, str] | None = None) -> WarcProblem:
    """Continue at the next record after ``search_from`` (any gzip member); ``if_last``: the
    (reason, detail) to give instead when no record follows."""
    if search_from is not None and search_from >= s.base:
        s.r = search_from - s.base
    while True:
        idx = _find_record(s, _RESYNC_LIMIT)
        if idx >= 0:
            s.skip(idx)
            nxt = s.cpos_of(s.pos)
            break
        s.skip(_RESYNC_LIMIT - 8)  # streamed, a window at a time (a header across windows is still found)
        if not s.fill(1):
            nxt = None
            if if_last:
                reason, why = if_last
            break
    s._current = None
    return WarcProblem(reason, why, start_c, (nxt - start_c) if nxt is not None and nxt > start_c else None, **info)


# ---- gzip members, for ranged fetches ------------------------------------------------------


class MemberScanner:
    """Feed the compressed bytes of a per-record gzipped WARC from its start; it reports each
    gzip member as it completes: (offset, length, the first bytes of its data). Used to read a
    file over HTTP in ranged chunks and stop after N records, and to check a fetched piece."""

    def __init__(self, offset: int = 0, keep: int = 4096):
        self.offset = offset  # compressed offset of the member being read
        self.keep = keep
        self.pending = b""
        self.d = None
        self.head = b""
        self.fed = 0

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Members completed by ``data``. Raises ValueError on bytes that are not a gzip member
        or a damaged one."""
        done = []
        buf = self.pending + data
        self.pending = b""
        while buf:
            if self.d is None:
                if len(buf) < 3:
                    self.pending = buf
                    break
                if buf[:3] != GZIP_MAGIC:
                    raise ValueError(f"bytes at offset {self.offset} are not a gzip member")
                self.d, self.head, self.fed = zlib.decompressobj(31), b"", 0
            try:
                out = self.d.decompress(buf, _OUT_CHUNK)
                while self.d.unconsumed_tail and not self.d.eof:
                    if len(self.head) < self.keep:
                        self.head += out[: self.keep - len(self.head)]
                    out = self.d.decompress(self.d.unconsumed_tail, _OUT_CHUNK)
            except zlib.error as exc:
                raise ValueError(f"the gzip member at offset {self.offset} is damaged ({exc})") from None
            if len(self.head) < self.keep:
                self.head += out[: self.keep - len(self.head)]
            if self.d.eof:
                rest = self.d.unused_data
                length = self.fed + len(buf) - len(rest)
                done.append((self.offset, length, self.head))
                self.offset += length
                self.d = None
                buf = rest
            else:
                self.fed += len(buf)
                buf = b""
        return done

    @property
    def in_member(self) -> bool:
        return self.d is not None or bool(self.pending)


def member_type(head: bytes) -> str | None:
    """The WARC-Type of a record from the first bytes of its data."""
    m = re.search(rb"\r?\nWARC-Type:[ \t]*([A-Za-z-]+)", head[:MAX_HEADER])
    return m.group(1).decode("ascii").lower() if m else None


def check_members(data: bytes, offset: int = 0) -> tuple[list[tuple[int, int, str | None]], str | None]:
    """Split ``data`` (whole gzip members from ``offset``) into members; each must decompress
    completely. Returns ([(offset, length, warc type)], problem or None)."""
    scanner = MemberScanner(offset)
    try:
        members = [(o, n, member_type(h)) for o, n, h in scanner.feed(data)]
    except ValueError as exc:
        return [], str(exc)
    if scanner.in_member:
        return members, f"the data ends inside the gzip member at offset {scanner.offset}"
    return members, None
