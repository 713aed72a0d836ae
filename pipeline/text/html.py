"""HTML page bytes -> text: payload sniffing, charset decisions, mojibake counting, and the
bag-of-characters / bag-of-words F1 that scores an extraction against ground truth.

Functions over bytes and strings only (no pipeline machinery); main-content extraction is in
``pipeline/text/extract.py``, ``stages/html_extract.py`` wires both into the pipeline, and
docs/html-extraction.md gives the measurements behind each choice.

Charset, in the order of the HTML standard's encoding sniffing:

1. a byte-order mark (UTF-8, UTF-16 LE/BE): self-describing bytes, it beats any label;
2. the HTTP ``Content-Type`` charset;
3. a ``<meta charset>`` / ``<meta http-equiv=Content-Type>`` / ``<?xml encoding?>`` in the first
   ``META_SCAN_BYTES`` bytes;
4. detection: pure ASCII and valid UTF-8 are recognized exactly; anything else goes to the detector.

Labels are mapped as the WHATWG Encoding Standard does (``gb2312``/``gbk`` -> GB18030,
``iso-8859-1``/``ascii`` -> windows-1252, ``big5`` -> Big5-HKSCS, ``shift_jis`` -> cp932, ...):
a page labelled GB2312 routinely uses GBK characters, and browsers have always read it so.
A declared label is verified, not trusted: bytes that are valid, non-ASCII UTF-8 (or UTF-8 with
a stray invalid byte among at least ``UTF8_VALID_PER_ERROR`` times as many valid multi-byte
characters) are UTF-8 whatever the label says (legacy-encoded text is practically never that),
and a label under which the bytes do not decode (more than ``MAX_ERROR_SHARE`` invalid
sequences) is discarded for detection.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

# ------------------------------------------------------------------------------------------
# Charset labels

# WHATWG Encoding Standard label -> Python codec, for the labels whose plain Python meaning differs
# from what browsers do (https://encoding.spec.whatwg.org/#names-and-labels).
_WHATWG = {
    **dict.fromkeys(["gb2312", "gbk", "x-gbk", "gb_2312", "gb_2312-80", "chinese", "csgb2312", "csiso58gb231280", "iso-ir-58", "cp936", "ms936", "windows-936", "euc-cn", "euccn", "gb18030", "hz-gb-2312"], "gb18030"),
    **dict.fromkeys(["big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5", "cp950", "big5hkscs"], "big5hkscs"),
    **dict.fromkeys(["iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "ascii", "us-ascii", "ansi_x3.4-1968", "cp819", "ibm819", "iso-ir-100", "csisolatin1", "windows-1252", "cp1252", "x-cp1252"], "cp1252"),
    **dict.fromkeys(["shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "ms932", "windows-31j", "csshiftjis", "cp932"], "cp932"),
    **dict.fromkeys(["euc-kr", "euckr", "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "ksc_5601", "korean", "windows-949", "cp949", "csksc56011987", "iso-ir-149"], "cp949"),
    **dict.fromkeys(["iso-8859-9", "latin5", "l5", "windows-1254", "cp1254"], "cp1254"),
    **dict.fromkeys(["tis-620", "iso-8859-11", "windows-874", "cp874", "dos-874"], "cp874"),
    **dict.fromkeys(["utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"], "utf-8"),
    **dict.fromkeys(["utf-16", "utf-16le", "unicode", "ucs-2", "csunicode", "iso-10646-ucs-2", "unicodefeff"], "utf-16-le"),
    **dict.fromkeys(["utf-16be", "unicodefffe"], "utf-16-be"),
    "x-user-defined": "cp1252",
}
_UTF16 = {"utf-16-le", "utf-16-be"}


@lru_cache(maxsize=512)
def normalize_charset(label: str | None, from_meta: bool = False) -> str | None:
    """A charset label -> the Python codec to decode with (WHATWG meaning), or None if unknown.

    ``from_meta``: a ``<meta>`` cannot truthfully declare UTF-16 (it could not have been read), so
    the standard reads that as UTF-8."""
    if not label:
        return None
    key = label.strip().strip("\"'").lower()
    codec = _WHATWG.get(key)
    if codec is None:
        try:
            codec = codecs.lookup(key).name
        except (LookupError, ValueError):
            return None
        codec = _WHATWG.get(codec, codec)
        if codec in ("mbcs", "rot-13", "base64", "hex", "zlib", "bz2", "quopri", "uu", "idna", "punycode", "undefined", "raw-unicode-escape", "unicode-escape", "utf-7"):
            return None  # not text encodings a page can use
    if from_meta and (codec in _UTF16 or codec.startswith("utf-32")):
        return "utf-8"
    return codec


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """``text/html; charset=GBK`` -> (``text/html``, ``GBK``). Missing parts are ``""`` / None."""
    if not value:
        return "", None
    mime, _, rest = value.partition(";")
    m = re.search(r"charset\s*=\s*[\"']?([^\"';,\s]+)", rest, re.I)
    return mime.strip().lower(), (m.group(1) if m else None)


META_SCAN_BYTES = 8192  # the standard says 1024; real (older, Chinese) pages put <meta> after long comments/scripts
_META_RE = re.compile(rb"""<meta[^>]{0,400}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]{2,40})""", re.I)
_XML_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([a-zA-Z0-9_.:\-]{2,40})""", re.I)


def meta_charset(raw: bytes) -> str | None:
    """The first charset a ``<meta>`` (or an XML declaration) declares in the head of the page."""
    head = raw[:META_SCAN_BYTES]
    m = _META_RE.search(head) or _XML_DECL_RE.search(head)
    return m.group(1).decode("ascii", "replace") if m else None


_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def bom_charset(raw: bytes) -> tuple[str, int] | None:
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return codec, len(bom)
    return None


# ------------------------------------------------------------------------------------------
# What the payload is

_MAGIC = [
    (b"%PDF-", "pdf"), (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"RIFF", "riff"), (b"PK\x03\x04", "zip"), (b"\x1f\x8b", "gzip"), (b"BM", None), (b"\x00\x00\x01\x00", "ico"),
    (b"wOFF", "woff"), (b"wOF2", "woff2"), (b"\x00\x01\x00\x00", "font"), (b"OggS", "ogg"), (b"ID3", "mp3"), (b"fLaC", "flac"),
    (b"\x1aE\xdf\xa3", "webm"), (b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!", "rar"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
    (b"\xd0\xcf\x11\xe0", "ole"), (b"\x7fELF", "elf"), (b"MZ", None), (b"\xca\xfe\xba\xbe", "class"), (b"%!PS", "postscript"),
]
_HTML_MIMES = {"text/html", "application/xhtml+xml", "application/xhtml", "text/xhtml"}
# Content types we never read as HTML, whatever the bytes look like.
_NOT_HTML_PREFIXES = ("image/", "audio/", "video/", "font/", "model/", "application/pdf", "application/zip", "application/gzip", "application/x-gzip",
                      "application/octet-stream+", "application/vnd.", "application/msword", "application/x-shockwave-flash", "application/javascript",
                      "application/x-javascript", "text/javascript", "text/css", "application/json", "application/ld+json", "text/csv", "application/font",
                      "application/x-font", "application/postscript", "application/x-tar", "application/x-7z", "application/x-rar", "text/calendar", "text/vcard")
_HTML_TAG_RE = re.compile(rb"<(?:!doctype\s+html|html|head|body|title|meta|div|p|br|table|a\s|script|span|h[1-6]|article)[\s>/]", re.I)
_FEED_MIMES = {"application/rss", "application/atom", "application/rdf", "text/rss"}
_XHTML_RE = re.compile(rb"<(?:!doctype\s+html|html)[\s>]", re.I)
# Bytes that do not occur in text (the MIME Sniffing Standard's "binary data bytes"; ESC allowed
# for ISO-2022 encodings).
_BINARY_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
BINARY_SHARE = 0.01  # share of binary bytes in the first SNIFF_BYTES above which a body is not text
SNIFF_BYTES = 65536


def sniff_payload(raw: bytes, mime: str) -> tuple[str, str]:
    """Classify a payload: ("html", why) | ("not-html", what) | ("binary", why).

    Magic bytes decide first (a PDF served as text/html is a PDF), then a content type that is
    never HTML, then, for anything else, markup in the first bytes. ``binary``: control bytes that
    text does not contain (the body cannot be decoded as text in any encoding)."""
    head = raw[:16].lstrip(b"\t\n\r ")
    for magic, what in _MAGIC:
        if what and head.startswith(magic):
            if what == "riff" and raw[8:12] not in (b"WEBP", b"AVI ", b"WAVE"):
                continue
            return "not-html", what
    if mime.startswith(_NOT_HTML_PREFIXES):
        return "not-html", mime
    sample = raw[:SNIFF_BYTES]
    if sample and not sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        binary = len(sample) - len(sample.translate(None, _BINARY_BYTES))
        if binary > BINARY_SHARE * len(sample):
            return "binary", f"{binary} control bytes in the first {len(sample)}"
    if mime in _HTML_MIMES:
        return "html", "content-type"
    if (mime.endswith(("/xml", "+xml")) or mime in _FEED_MIMES) and not _XHTML_RE.search(raw[:4096]):
        return "not-html", mime  # feeds and other XML hold <title> elements too: only XHTML is a page
    if _HTML_TAG_RE.search(raw[:4096]):
        return "html", "markup"
    return "not-html", mime or "no markup"


# ------------------------------------------------------------------------------------------
# Decoding

MAX_ERROR_SHARE = 0.001  # invalid sequences per byte tolerated under a charset (replaced by U+FFFD)
MIN_ERRORS_TOLERATED = 4


@dataclass
class Decoded:
    text: str
    charset: str  # the Python codec used
    source: str  # bom | header | meta | detected
    errors: int = 0  # invalid sequences replaced by U+FFFD
    declared: str | None = None  # the label that was declared (header or meta), if any
    overridden: bool = False  # a declared label was contradicted by the bytes


class DecodeFailure(ValueError):
    pass


def _decode(raw: bytes, codec: str) -> tuple[str, int] | None:
    """Decode strictly; if that fails, with replacement when the invalid sequences are few
    enough. None when the bytes are not in this charset."""
    try:
        return raw.decode(codec), 0
    except UnicodeDecodeError:
        pass
    except LookupError:
        return None
    text = raw.decode(codec, errors="replace")
    errors = text.count("\ufffd") - _count_fffd_literal(raw, codec)
    if errors <= max(MIN_ERRORS_TOLERATED, MAX_ERROR_SHARE * len(raw)):
        return text, errors
    return None


def _count_fffd_literal(raw: bytes, codec: str) -> int:
    if codec == "utf-8":
        return raw.count(b"\xef\xbf\xbd")
    return 0


def _plausible_utf8(raw: bytes) -> tuple[str, int] | None:
    """The bytes as UTF-8 when they are UTF-8 despite a legacy label: valid, or with a few invalid
    sequences (a truncated page, one stray byte) among many valid multi-byte ones. Legacy CJK or
    Latin text read as UTF-8 gives an invalid sequence almost every few characters, so it never
    passes the ``UTF8_VALID_PER_ERROR`` bar, even on a short page."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    got = _decode(raw, "utf-8")
    if not got:
        return None
    text, errors = got
    multibyte = sum(1 for ch in text if ch > "\x7f") - errors
    return got if multibyte >= UTF8_VALID_PER_ERROR * max(errors, 1) else None


UTF8_VALID_PER_ERROR = 20


def _is_ascii(raw: bytes) -> bool:
    return raw.isascii()


def _detect(raw: bytes, detector: str) -> list[str]:
    """Candidate codecs for bytes that are neither ASCII nor UTF-8, best first."""
    sample = raw[: 1 << 18]
    out: list[str] = []
    if detector == "resiliparse":
        from resiliparse.parse.encoding import detect_encoding

        out.append(detect_encoding(sample, html5_compatible=True))
    elif detector == "cchardet":
        import cchardet

        out.append(cchardet.detect(sample)["encoding"])
    elif detector == "chardet":
        import chardet

        out.append(chardet.detect(sample)["encoding"])
    elif detector == "charset-normalizer":
        from charset_normalizer import from_bytes

        best = from_bytes(sample).best()
        out.append(best.encoding if best else None)
    else:
        raise ValueError(f"unknown detector {detector!r}")
    codecs_ = [c for c in (normalize_charset(x) for x in out) if c]
    return [c for i, c in enumerate(codecs_) if c not in codecs_[:i]]


DETECTORS = ("resiliparse", "cchardet", "chardet", "charset-normalizer")


def decode_html(raw: bytes, content_type: str | None = None, detector: str = "resiliparse", fallbacks: tuple[str, ...] = ("gb18030", "cp1252")) -> Decoded:
    """Bytes of an HTML page -> text, with the charset and where the decision came from.

    Raises DecodeFailure when no charset reads the bytes as text."""
    bom = bom_charset(raw)
    if bom:
        codec, n = bom
        got = _decode(raw[n:], codec)
        if got:
            return Decoded(got[0], codec, "bom", got[1])
    header = normalize_charset(parse_content_type(content_type)[1])
    meta_label = None if header else meta_charset(raw)
    meta = normalize_charset(meta_label, from_meta=True) if meta_label else None
    declared, source = (header, "header") if header else (meta, "meta") if meta else (None, None)
    ascii_only = _is_ascii(raw)
    if declared and ascii_only and declared not in _UTF16 and not declared.startswith("utf-32"):
        # every ASCII-compatible charset reads ASCII the same (ISO-2022 escapes are ASCII too)
        if not declared.startswith("iso2022") and "hz" not in declared:
            return Decoded(raw.decode("ascii"), declared, source, 0, declared)
    utf8: tuple[str, int] | None | bool = False  # not tried yet
    if declared:
        if declared != "utf-8" and declared not in _UTF16 and not ascii_only:
            utf8 = _plausible_utf8(raw)
            if utf8:
                return Decoded(utf8[0], "utf-8", "detected", utf8[1], declared, overridden=True)
        got = _decode(raw, declared)
        if got:
            return Decoded(got[0], declared, source, got[1], declared)
    if ascii_only:
        return Decoded(raw.decode("ascii"), "utf-8", "detected", 0, declared, overridden=bool(declared))
    if utf8 is False:
        utf8 = _decode(raw, "utf-8")
        if utf8 and utf8[1] == 0:
            return Decoded(utf8[0], "utf-8", "detected", 0, declared, overridden=bool(declared))
    tried = {declared}
    candidates = _detect(raw, detector)
    for codec in [*candidates, *(["utf-8"] if utf8 else []), *fallbacks]:
        if codec in tried:
            continue
        tried.add(codec)
        got = utf8 if codec == "utf-8" and utf8 else _decode(raw, codec)
        if got:
            return Decoded(got[0], codec, "detected", got[1], declared, overridden=bool(declared))
    raise DecodeFailure(f"no charset reads these bytes as text (declared {declared or 'none'}, detector said {candidates or 'nothing'})")


# ------------------------------------------------------------------------------------------
# Mojibake

# Runs of Latin-1 / cp1252 characters above ASCII: where UTF-8 read as Latin-1/cp1252 (``cafÃ©``) or
# GBK/Big5 read as Latin-1 (``ÖÐÎÄ``) shows up.
_CP1252_HIGH = "\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
_LATIN_RUN = re.compile(f"[\u0080-\u00ff{_CP1252_HIGH}]{{2,}}")
_GB_AS_LATIN_RUN = re.compile("[\u00a1-\u00ff]{4,}")  # GB2312 bytes are A1-FE
# Runs of CJK ideographs / full-width forms: where UTF-8 read as GBK/GB18030/Big5 (``鍏徃``) shows up.
_CJK_RUN = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\ue000-\uf8ff]{2,}")
# What CJK decoders print for the replacement character's UTF-8 bytes read as GBK, and uninitialized memory.
_LITERAL = re.compile("锟斤拷|烫烫烫|屯屯屯")


def _latin_bytes(run: str) -> bytes:
    return bytes(ch.encode("cp1252")[0] if ord(ch) > 0xFF else ord(ch) for ch in run)


def mojibake_chars(text: str) -> int:
    """How many characters of ``text`` look like a wrong decoding. Counted:

    - U+FFFD replacement characters (bytes the decoder could not read);
    - UTF-8 read as Latin-1/cp1252 (``cafÃ©``): runs of high Latin-1/cp1252 characters whose bytes hold
      valid multi-byte UTF-8 sequences (``áš`` in Czech does not: E1 9A is no UTF-8);
    - GBK read as Latin-1/cp1252 (``ÖÐÎÄ``): runs of 4+ such characters whose bytes read as GB18030 are
      mostly ideographs;
    - UTF-8 read as GBK/GB18030/Big5 (``鍏徃``, ``鈥檚``): runs of 2+ CJK characters that, re-encoded as
      GB18030 or Big5, form valid UTF-8 made of 3-byte sequences (real GB2312 pairs often form 2-byte
      sequences, almost never 3-byte ones);
    - the literal ``锟斤拷`` / ``烫烫烫`` left behind by such decodings.
    """
    n = text.count("\ufffd")
    for m in _LATIN_RUN.finditer(text):
        run = m.group(0)
        raw = _latin_bytes(run)
        utf8 = raw.decode("utf-8", errors="replace")
        hits = sum(1 for ch in utf8 if ch >= "\x80" and ch != "\ufffd")
        if hits:
            n += min(len(run), 2 * hits)
    for m in _GB_AS_LATIN_RUN.finditer(text):
        gb = m.group(0).encode("latin-1").decode("gb18030", errors="replace")
        if sum(1 for ch in gb if "\u4e00" <= ch <= "\u9fff") * 2 >= len(gb):
            n += len(m.group(0))
    for m in _CJK_RUN.finditer(text):
        run = m.group(0)
        for codec in ("gb18030", "big5hkscs"):
            try:
                back = run.encode(codec).decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                continue
            if not back.isascii() and all(ch < "\x80" or ch >= "\u0800" for ch in back):
                n += len(run)
                break
    n += 3 * len(_LITERAL.findall(text))
    return n


MOJIBAKE_MIN_CHARS = 3
MOJIBAKE_MIN_SHARE = 0.001


def has_mojibake(text: str | None) -> bool:
    """A text has mojibake when at least ``MOJIBAKE_MIN_CHARS`` characters and ``MOJIBAKE_MIN_SHARE``
    of it look wrongly decoded (``mojibake_chars``): one stray replacement character in a long
    article is not a mis-decoded page."""
    if not text:
        return False
    n = mojibake_chars(text)
    return n >= MOJIBAKE_MIN_CHARS and n >= MOJIBAKE_MIN_SHARE * len(text)


# ------------------------------------------------------------------------------------------
# Scoring an extraction against ground truth

_WORD_RE = re.compile(r"\w+")


def _char_bag(text: str) -> Counter:
    """Characters, ignoring whitespace, punctuation, symbols and control/format characters."""
    return Counter(ch for ch in text if unicodedata.category(ch)[0] not in "ZPSC")


def _word_bag(text: str) -> Counter:
    return Counter(_WORD_RE.findall(text.lower()))


def bag_f1(predicted: str | None, truth: str, lang: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``predicted`` against ``truth``: bag of characters for Chinese
    (``lang`` zh/ja/ko), bag of lowercased ``\\w+`` words otherwise. Empty vs empty scores 1."""
    bag = _char_bag if lang in ("zh", "ja", "ko") else _word_bag
    p, t = bag(predicted or ""), bag(truth)
    np_, nt = sum(p.values()), sum(t.values())
    if not np_ and not nt:
        return 1.0, 1.0, 1.0
    if not np_ or not nt:
        return 0.0, 0.0, 0.0
    overlap = sum((p & t).values())
    precision, recall = overlap / np_, overlap / nt
    return precision, recall, (2 * precision * recall / (precision + recall) if overlap else 0.0)
