"""Streaming reader for MediaWiki XML export dumps (``pages-articles``), multistream-aware.

Never holds the dump in memory: bytes are decompressed chunk by chunk (each bz2 stream of
a multistream file on its own), decoded incrementally (UTF-8, or UTF-16 when a BOM says
so) and cut into ``<page>…</page>`` chunks, each parsed on its own. A malformed page is
reported as an error record with its id and the reason and does not stop the others;
truncated *compression* is fatal (the file is damaged), a truncated *XML* tail is a
recorded error for the unfinished page.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import html
import lzma
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import quote

from pipeline.common.errors import StageError

READ_CHUNK = 1 << 20


class TruncatedInput(StageError):
    pass


def _open_raw(path: Path) -> BinaryIO:
    return open(path, "rb")


def iter_bz2_range(path: Path, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Decompress the concatenated bz2 streams in bytes [start, end) of ``path``."""
    with _open_raw(path) as fh:
        fh.seek(start)
        remaining = None if end is None else end - start
        dec, fed, pos = bz2.BZ2Decompressor(), False, start
        while True:
            size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
            data = fh.read(size) if size else b""
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            pos += len(data)
            while data:
                try:
                    out = dec.decompress(data)
                except OSError as exc:
                    raise TruncatedInput(
                        f"corrupt bz2 data before byte {pos} ({exc})",
                        where=str(path),
                        hint="the file is damaged",
                    ) from None
                fed = True
                if out:
                    yield out
                if dec.eof:
                    data = dec.unused_data
                    dec, fed = bz2.BZ2Decompressor(), False
                else:
                    data = b""
        if fed and not dec.eof:
            raise TruncatedInput(
                "truncated bz2 data: the input ends in the middle of a compressed stream",
                where=f"{path} (bytes {start}-{end if end is not None else 'EOF'})",
                hint="the file is incomplete or damaged",
            )


def iter_compressed(path: Path) -> Iterator[bytes]:
    """Whole-file decompression for .bz2 / .xz / .gz / plain files."""
    name = path.name.lower()
    if name.endswith(".bz2"):
        yield from iter_bz2_range(path)
        return
    opener = lzma.open if name.endswith((".xz", ".lzma")) else gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                yield chunk
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile, OSError) as exc:
        raise TruncatedInput(
            f"compressed data is truncated or corrupt ({exc})",
            where=str(path),
            hint="the file is incomplete or damaged",
        ) from None


def iter_text(chunks: Iterator[bytes]) -> Iterator[str]:
    """Decode bytes incrementally; a UTF-16/UTF-8 BOM at the start picks the codec."""
    decoder = None
    head = b""
    for chunk in chunks:
        if decoder is None:
            head += chunk
            if len(head) < 4:
                continue
            encoding = "utf-8"
            if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
                encoding = "utf-16"
            elif head.startswith(codecs.BOM_UTF8):
                encoding = "utf-8-sig"
            decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
            chunk, head = head, b""
        text = decoder.decode(chunk)
        if text:
            yield text
    if decoder is None and head:
        yield head.decode("utf-8", errors="replace")
    elif decoder is not None:
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


@dataclass
class PageChunk:
    xml: str
    complete: bool


def iter_page_chunks(texts: Iterator[str]) -> Iterator[PageChunk]:
    """Cut decoded XML text into ``<page>…</page>`` chunks; a trailing unfinished page comes out incomplete."""
    buf = ""
    for text in texts:
        buf += text
        pos = 0
        while True:
            start = buf.find("<page>", pos)
            if start < 0:
                pos = max(pos, len(buf) - 6)  # keep a possible partial "<page" tag
                break
            end = buf.find("</page>", start)
            if end < 0:
                pos = start
                break
            end += len("</page>")
            yield PageChunk(buf[start:end], True)
            pos = end
        buf = buf[pos:]
    start = buf.find("<page>")
    if start >= 0:
        yield PageChunk(buf[start:], False)


_ID_RE = re.compile(r"<id>(\d+)</id>")
_TITLE_RE = re.compile(r"<title>(.*?)</title>", re.S)
_NS_RE = re.compile(r"<ns>(-?\d+)</ns>")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_page(xml_text: str) -> dict:
    """One ``<page>`` element to a flat dict; raises ValueError on malformed XML."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from None
    page: dict = {"title": None, "ns": None, "page_id": None, "redirect": None, "revision_id": None, "timestamp": None, "text": None}
    for child in root:
        tag = _local(child.tag)
        if tag == "title":
            page["title"] = child.text or ""
        elif tag == "ns":
            page["ns"] = int(child.text)
        elif tag == "id":
            page["page_id"] = int(child.text)
        elif tag == "redirect":
            page["redirect"] = child.get("title", "")
        elif tag == "revision":
            for rev in child:
                rtag = _local(rev.tag)
                if rtag == "id":
                    page["revision_id"] = int(rev.text)
                elif rtag == "timestamp":
                    page["timestamp"] = rev.text
                elif rtag == "text":
                    page["text"] = rev.text or ""
    if page["page_id"] is None or page["title"] is None:
        raise ValueError("page has no <id> or <title>")
    if page["ns"] is None:
        page["ns"] = 0
    if page["text"] is None:
        page["text"] = ""
    return page


def salvage_ids(xml_text: str) -> tuple[int | None, str | None, int | None]:
    """Best-effort page id / title / ns from a page that failed to parse, for the error record."""
    m_id = _ID_RE.search(xml_text)
    m_title = _TITLE_RE.search(xml_text)
    m_ns = _NS_RE.search(xml_text)
    return (
        int(m_id.group(1)) if m_id else None,
        html.unescape(m_title.group(1)) if m_title else None,
        int(m_ns.group(1)) if m_ns else None,
    )


def iter_pages(texts: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """Yield ("page", page) or ("error", {page_id, title, reason}) for each page chunk."""
    for chunk in iter_page_chunks(texts):
        if not chunk.complete:
            page_id, title, _ = salvage_ids(chunk.xml)
            yield "error", {"page_id": page_id, "title": title, "reason": "parse:truncated-page (no </page>)", "raw": chunk.xml[:2000]}
            continue
        try:
            yield "page", parse_page(chunk.xml)
        except (ValueError, TypeError) as exc:
            page_id, title, _ = salvage_ids(chunk.xml)
            yield "error", {"page_id": page_id, "title": title, "reason": f"parse:{str(exc).split(':')[0].replace(' ', '-')}", "detail": str(exc), "raw": chunk.xml[:2000]}


_SITEINFO_RE = re.compile(r"<siteinfo>.*?</siteinfo>", re.S)


def parse_siteinfo(header_text: str) -> dict:
    """dbname, sitename and article URL base from the ``<siteinfo>`` block (empty dict if absent)."""
    m = _SITEINFO_RE.search(header_text)
    if not m:
        return {}
    try:
        root = ET.fromstring(m.group(0))
    except ET.ParseError:
        return {}
    info: dict = {}
    for child in root:
        tag = _local(child.tag)
        if tag in ("sitename", "dbname", "base", "generator", "case"):
            info[tag] = child.text
        elif tag == "namespaces":
            info["namespaces"] = {int(ns.get("key")): (ns.text or "") for ns in child}
    base = info.get("base") or ""
    if "/wiki/" in base:
        info["article_base"] = base.split("/wiki/", 1)[0] + "/wiki/"
    return info


def read_header(path: Path, first_page_offset: int | None) -> dict:
    """Siteinfo from the first stream of a multistream file (or the first MB of any dump)."""
    text = ""
    chunks = iter_bz2_range(path, 0, first_page_offset) if path.name.endswith(".bz2") and first_page_offset else iter_compressed(path)
    for piece in iter_text(chunks):
        text += piece
        if "</siteinfo>" in text or len(text) > (4 << 20):
            break
    return parse_siteinfo(text)


_URL_UNSAFE = re.compile(r'[%?#"<>\[\]{}|\\^`\s]')


def article_url(base: str, title: str) -> str:
    """``https://zh.wikipedia.org/wiki/<title>``: spaces as underscores, only URL-breaking characters escaped."""
    return base + _URL_UNSAFE.sub(lambda m: quote(m.group(0)), title.replace(" ", "_"))


def wiki_article_base(wiki: str) -> str:
    """zhwiki -> https://zh.wikipedia.org/wiki/ (used when a dump has no siteinfo)."""
    lang = wiki[:-4] if wiki.endswith("wiki") else wiki
    return f"https://{lang.replace('_', '-')}.wikipedia.org/wiki/"


def iter_index_entries(texts: Iterator[str]) -> Iterator[tuple[int, int, str]]:
    """Multistream index lines ``offset:page_id:title`` (titles may contain colons)."""
    buf = ""
    for text in texts:
        buf += text
        *lines, buf = buf.split("\n")
        for line in lines:
            if line:
                yield _index_entry(line)
    if buf.strip():
        yield _index_entry(buf)


def _index_entry(line: str) -> tuple[int, int, str]:
    offset, page_id, title = line.rstrip("\r").split(":", 2)
    return int(offset), int(page_id), title


def iter_bz2_bytes(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress concatenated bz2 streams arriving as byte chunks (e.g. from ranged HTTP reads)."""
    dec = bz2.BZ2Decompressor()
    for data in chunks:
        while data:
            out = dec.decompress(data)
            if out:
                yield out
            if dec.eof:
                data = dec.unused_data
                dec = bz2.BZ2Decompressor()
            else:
                data = b""


def stream_ranges(offsets: list[int], file_size: int) -> list[tuple[int, int]]:
    """Distinct stream start offsets (sorted) to [start, end) byte ranges; the last ends at ``file_size``."""
    uniq = sorted(set(offsets))
    return [(o, uniq[i + 1] if i + 1 < len(uniq) else file_size) for i, o in enumerate(uniq)]
