"""Word segmentation for the quality signals, vectorized over a batch of documents.

English (and every language that is not Chinese) follows spaCy's rule-based tokenizer, which
is what datatrove's ``split_into_words(text, "eng")`` runs (``spacy.blank("en")``): split on
whitespace, then strip prefixes / suffixes and split infixes with spaCy's own regular
expressions and special cases (``_spacy_en.py``, generated from spaCy 3.8). The text is cut
into whitespace-separated *chunks* (polars); a chunk's tokens depend only on the
chunk, so only the **distinct** chunks are tokenized:

* chunks made only of letters, or only of ASCII digits, that are not a special case
  ("cannot", "gonna" ...) are one token each, decided by a polars regex over the distinct chunks;
* seven common shapes ("word,", "(1990),", "word." / "J.", "3.5%", "1,000.", "John's",
  "well-known" / "1990-91") have vectorized rules (:func:`_english_shortcuts`);
* every other distinct chunk goes through :func:`spacy_chunk_tokens` (Python, the same
  algorithm as spaCy's ``Tokenizer._split_affixes`` / ``_attach_tokens`` /
  ``_apply_special_cases``), memoized in a per-process cache, so a chunk such as ``"(1990),"``
  costs Python time once per worker, not once per occurrence.

Chinese follows what datatrove runs for ``cmn_Hani`` (``spacy.blank("zh")`` with the jieba
segmenter, i.e. ``jieba.cut(text, HMM=True)`` minus whitespace): the text is cut with jieba's
own block regex ``[\\u4E00-\\u9FD5a-zA-Z0-9+#&._%\\-]+``; every other non-space character is a token.
The default, ``zh_segmenter="jieba"``, runs jieba's algorithm on jieba's dictionary and HMM
tables vectorized over all blocks of a batch (:mod:`pipeline.text.quality.jieba_np`: the same
words as Python jieba by construction, tested on every distinct block of the shared corpora) and
never makes a string per word (:func:`chinese_code_tokens`: tokens as code point spans).
``"jieba-py"`` is Python jieba itself, block by block (``jieba.lcut`` on each distinct block,
memoized): the reference, and what ``"jieba"`` was before. ``"jieba-rs"`` segments the blocks
with jieba-rs (``rjieba``, optional) plus a fix-up for Python jieba's HMM fallback on ASCII runs;
its HMM does not pick Python jieba's path on (near) ties -- "常在和人": Python's path S S S S beats
B E S S by 1.5e-7 in log probability, jieba-rs takes the other, presumably from HMM
probabilities that are not bit-identical -- so it segments 4 of the 503,179 distinct blocks of
3,200 synthetic zhwiki articles differently. With
``zh_segmenter="chars"`` no segmenter is used: every Han character is a word and ASCII runs
inside blocks stay whole (fully vectorized, less faithful to FineWeb-2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from pipeline.text.quality import _spacy_en as _R
from pipeline.text.quality import jieba_np

# str.isspace() characters (what spaCy splits on). Rust's \s lacks \x1c-\x1f, so spell them out.
WS_CLASS = r"\t\n\x0B\x0C\r\x1C-\x20\x85\xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
WS_CHARS = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
CHUNK_RE = f"[^{WS_CLASS}]+"
# every whitespace character but " ": replaced by " " before a literal split, which is faster
# than extracting CHUNK_RE matches
_OTHER_WS_RE = r"[\t\n\x0B\x0C\r\x1C-\x1F\x85\xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]+"


def whitespace_chunks(docs: pl.DataFrame) -> pl.DataFrame:
    """(doc, text) -> (doc, piece): the maximal runs of non-whitespace characters, in order."""
    return (
        docs.select("doc", pl.col("text").str.replace_all(_OTHER_WS_RE, " ").str.split(" ").alias("piece"))
        .explode("piece")
        .filter(pl.col("piece") != "")
    )
# a distinct chunk that is surely one token (unless it is a special case such as "cannot")
_SIMPLE_RE = r"^(?:\p{L}+|[0-9]+)$"

_PREFIX = re.compile(_R.PREFIX_RE)  # every alternative is anchored with ^: .match() is equivalent
_SUFFIX = re.compile(_R.SUFFIX_RE)
_INFIX = re.compile(_R.INFIX_RE)
_URL = re.compile(_R.URL_RE)
# Cheap pre-checks that skip spaCy's big regexes where they cannot match (checked against spaCy
# on every distinct chunk of the test corpus): an infix needs one of these characters (or an
# "icon", the So-symbol class spaCy also uses as prefix/suffix); a URL needs a dot; a suffix
# other than "\.\.+" is at most 5 characters long, so the search starts near the end.
_ICONS = re.search(r"\[\\u00A6.*?\]", _R.INFIX_RE).group(0)
_INFIX_ASCII = re.compile(r"[.+\-*^,~:<>=/]")
_INFIX_CAND = re.compile(r"[.\u2026+\-*^,\u2013\u2014~:<>=/]|" + _ICONS)
_SUFFIX_WINDOW = 8
# No prefix starts with a letter or digit except these; no suffix ends with one except "'s" (and
# its variants) and units, which need an ASCII digit before them.
_ALNUM_PREFIXES = ("US$", "C$", "A$")
_ASCII_DIGIT = re.compile(r"[0-9]")


def _prefix_len(s: str) -> int:
    if s[0].isalnum() and not s.startswith(_ALNUM_PREFIXES):
        return 0
    m = _PREFIX.match(s)
    return m.end() if m else 0


def _suffix_len(s: str) -> int:
    last = s[-1]
    if last.isalnum() and not (last in "sS" and s[-2:-1] in ("'", "\u2019")) and not _ASCII_DIGIT.search(s):
        return 0
    m = _SUFFIX.search(s, 0 if s.endswith("..") else max(0, len(s) - _SUFFIX_WINDOW))
    return m.end() - m.start() if m else 0


def _has_infix_char(s: str) -> bool:
    if s.isascii():
        return _INFIX_ASCII.search(s) is not None
    return _INFIX_CAND.search(s) is not None
_SPECIALS: dict[str, tuple[str, ...]] = _R.SPECIALS

_CACHE_MAX = 2_000_000
_en_cache: dict[str, str] = {}
_zh_cache: dict[str, str] = {}
_zh_rs_cache: dict[str, str] = {}


def _split_affixes(s: str, specials: dict) -> list[str]:
    """spaCy's ``_split_affixes`` + ``_attach_tokens`` for one whitespace-free chunk."""
    if s in specials:
        return list(specials[s])
    prefixes: list[str] = []
    suffixes: list[str] = []
    last = 0
    while s and len(s) != last:
        if s in specials:
            break
        last = len(s)
        pre_len = _prefix_len(s)
        if pre_len:
            prefix, minus_pre = s[:pre_len], s[pre_len:]
            if minus_pre and minus_pre in specials:
                s = minus_pre
                prefixes.append(prefix)
                break
        rest = s[pre_len:]
        suf_len = _suffix_len(rest) if rest else 0
        if suf_len:
            suffix, minus_suf = s[-suf_len:], s[:-suf_len]
            if minus_suf and minus_suf in specials:
                s = minus_suf
                suffixes.append(suffix)
                break
        if pre_len and suf_len and pre_len + suf_len <= len(s):
            s = s[pre_len:-suf_len]
            prefixes.append(prefix)
            suffixes.append(suffix)
        elif pre_len:
            s = minus_pre
            prefixes.append(prefix)
        elif suf_len:
            s = minus_suf
            suffixes.append(suffix)
    out = prefixes
    if s:
        if s in specials:
            out.extend(specials[s])
        elif "." in s and _URL.match(s):
            out.append(s)
        elif not _has_infix_char(s):
            out.append(s)
        else:
            start = 0
            for m in _INFIX.finditer(s):
                a, b = m.start(), m.end()
                if a == 0:
                    continue
                if a != start:
                    out.append(s[start:a])
                if a != b:
                    out.append(s[a:b])
                start = b
            if s[start:]:
                out.append(s[start:])
    out.extend(reversed(suffixes))
    return out


@lru_cache(maxsize=1)
def _special_patterns() -> tuple[dict[tuple[str, ...], str], int]:
    """Special cases that spaCy re-applies after affix splitting (``_special_matcher``): those
    whose string has a prefix, suffix or infix; keyed by their affix tokenization."""
    patterns: dict[tuple[str, ...], str] = {}
    for key in _SPECIALS:
        if _PREFIX.search(key) or _SUFFIX.search(key) or _INFIX.search(key) or " " in key:
            patterns.setdefault(tuple(_split_affixes(key, {})), key)
    return patterns, max(len(p) for p in patterns)


def spacy_chunk_tokens(chunk: str) -> tuple[str, ...]:
    """Tokens of one whitespace-free chunk, exactly as ``spacy.blank("en")`` splits it."""
    toks = _split_affixes(chunk, _SPECIALS)
    if len(toks) < 2:
        return tuple(toks)
    patterns, max_len = _special_patterns()
    n = len(toks)
    spans = []
    for i in range(n):
        for length in range(2, min(max_len, n - i) + 1):
            key = patterns.get(tuple(toks[i : i + length]))
            if key is not None:
                spans.append((i, i + length, key))
    if not spans:
        return tuple(toks)
    # spaCy's _filter_special_spans: longest first, then leftmost; a span is kept unless its
    # first or last token was already covered
    spans.sort(key=lambda x: (x[0] - x[1], x[0]))
    seen: set[int] = set()
    keep: dict[int, tuple[int, str]] = {}
    for a, b, key in spans:
        if a not in seen and b - 1 not in seen:
            keep[a] = (b, key)
        seen.update(range(a, b))
    out: list[str] = []
    i = 0
    while i < n:
        if i in keep:
            b, key = keep[i]
            out.extend(_SPECIALS[key])
            i = b
        else:
            out.append(toks[i])
            i += 1
    return tuple(out)


def _cached(cache: dict, fn, items: list[str]) -> list[str]:
    """``fn(item)`` for each item, memoized; tokens come back joined by a space (tokens never
    contain whitespace), which polars turns back into words with one ``str.split``."""
    if len(cache) > _CACHE_MAX:
        cache.clear()
    out = []
    get = cache.get
    for item in items:
        joined = get(item)
        if joined is None:
            joined = cache[item] = " ".join(fn(item))
        out.append(joined)
    return out


@lru_cache(maxsize=1)
def _special_keys() -> pl.Series:
    return pl.Series(list(_SPECIALS), dtype=pl.String)


def _map_pieces(pieces: pl.DataFrame, complex_mask: pl.Expr, fn, cache: dict) -> pl.DataFrame:
    """pieces: (doc, piece) in text order -> (doc, word) in text order. Distinct pieces selected by
    ``complex_mask`` are replaced by the tokens ``fn(piece)`` (memoized); the others are one word each."""
    distinct = pieces.lazy().select(pl.col("piece").unique()).filter(complex_mask).collect().get_column("piece").to_list()
    if not distinct:
        return pieces.rename({"piece": "word"})
    mapping = pl.DataFrame({"piece": distinct, "toks": _cached(cache, fn, distinct)}, schema={"piece": pl.String, "toks": pl.String})
    return _apply_mapping(pieces, mapping)


# Vectorized shortcuts for the commonest non-trivial chunk shapes (ASCII only), each exactly
# what spaCy's algorithm yields for that shape provided no special case is involved: a chunk
# falls back to the Python path when a contiguous run of its tokens spells a special case
# (which spaCy would re-tokenize). tests/test_quality.py checks every shortcut against
# spacy_chunk_tokens on the whole evaluation corpus.
_P = '[(\\[{"\u201c\u2018]'  # single-character prefixes
_T = '[,;:!?)\\]}"\u201d\u2019]'  # single-character suffixes
_CORE = r"[A-Za-z]+|[0-9]+"
_NUM = r"[0-9]+(?:[.,][0-9]+)*"
_SHAPE_AFFIX = f"^({_P}?)({_CORE})({_T}?)({_T}?)$"  # "(word", "word,", "(1990),", "word),"
_SHAPE_DOT = f"^({_P}?)({_CORE})\\.$"  # "word." "(word." "J." "USA."
_SHAPE_NUM = f"^({_P}?)([0-9]+(?:[.,][0-9]+)+)({_T}?)({_T}?)$"  # "1,000" "(3.5),"
_SHAPE_NUM_PCT = f"^({_P}?)({_NUM})(%)({_T}?)({_T}?)$"  # "3.5%" "(12%),"
_SHAPE_NUM_DOT = f"^({_P}?)({_NUM})\\.$"  # "1,000." "3.5."
_SHAPE_APOS = f"^([A-Za-z]+)(['\u2019])([A-Za-z]+)({_T}?)({_T}?)$"  # "John's," "O'Brien"
_SHAPE_DASH = f"^({_CORE})([-\u2013\u2014])({_CORE})({_T}?)({_T}?)$"  # "well-known," "19-year" "1990-91" "a\u2014b"


@lru_cache(maxsize=1)
def _nonidentity_keys() -> pl.Series:
    """Special cases whose tokens differ from the string itself ("cannot" -> "can" "not")."""
    return pl.Series([k for k, v in _SPECIALS.items() if v != (k,)], dtype=pl.String)


def _no_special(slots: list[pl.Expr]) -> pl.Expr:
    """No run of >= 2 non-empty token slots spells a special case, and no single token is a
    special case that spaCy would split."""
    keys, split_keys = _special_keys().implode(), _nonidentity_keys().implode()
    hit = pl.lit(False)
    for i in range(len(slots)):
        hit = hit | ((slots[i] != "") & slots[i].is_in(split_keys))
        for j in range(i + 1, len(slots)):
            hit = hit | ((slots[i] != "") & (slots[j] != "") & pl.concat_str(slots[i : j + 1]).is_in(keys))
    return ~hit


def _join_tokens(slots: list[pl.Expr]) -> pl.Expr:
    # empty slots leave double spaces; tokens never contain spaces
    return pl.concat_str(slots, separator=" ").str.replace_all(" +", " ").str.strip_chars(" ")


def _shape(distinct: pl.DataFrame, pattern: str, names: list[str]) -> pl.DataFrame:
    """Pieces matching ``pattern`` with its groups as columns (every group always participates)."""
    g = distinct.select("piece", pl.col("piece").str.extract_groups(pattern).alias("g")).unnest("g")
    return g.rename(dict(zip([str(i + 1) for i in range(len(names))], names))).filter(pl.col(names[0]).is_not_null())


def _emit(df: pl.DataFrame, slots: list[pl.Expr]) -> pl.DataFrame:
    return df.filter(_no_special(slots)).select("piece", _join_tokens(slots).alias("toks"))


def _english_shortcuts(distinct: pl.DataFrame) -> pl.DataFrame:
    """distinct: (piece) -> (piece, toks) for the pieces whose shape has a vectorized rule."""
    c = pl.col
    parts = []
    slots = [c("p"), c("c"), c("t1"), c("t2")]
    parts.append(_emit(_shape(distinct, _SHAPE_AFFIX, ["p", "c", "t1", "t2"]), slots))
    parts.append(_emit(_shape(distinct, _SHAPE_NUM, ["p", "c", "t1", "t2"]), slots))
    # "%" after a number is a unit suffix
    parts.append(_emit(_shape(distinct, _SHAPE_NUM_PCT, ["p", "c", "pct", "t1", "t2"]), [c("p"), c("c"), c("pct"), c("t1"), c("t2")]))
    # "." is a suffix after a lowercase letter or a digit, or after two capitals; else it stays
    d = _shape(distinct, _SHAPE_DOT, ["p", "c"]).with_columns(split=c("c").str.contains(r"(?:[a-z0-9]|[A-Z][A-Z])$"))
    parts.append(_emit(d.filter(c("split")), [c("p"), c("c"), pl.lit(".")]))
    parts.append(_emit(d.filter(~c("split")), [c("p"), c("c") + pl.lit(".")]))
    parts.append(_emit(_shape(distinct, _SHAPE_NUM_DOT, ["p", "c"]), [c("p"), c("c"), pl.lit(".")]))
    # "'s" / "\u2019s" is a suffix; any other apostrophe stays inside the word
    a = _shape(distinct, _SHAPE_APOS, ["c1", "q", "c2", "t1", "t2"]).with_columns(poss=c("c2").is_in(["s", "S"]))
    parts.append(_emit(a.filter(c("poss")), [c("c1"), c("q") + c("c2"), c("t1"), c("t2")]))
    parts.append(_emit(a.filter(~c("poss")), [c("c1") + c("q") + c("c2"), c("t1"), c("t2")]))
    # a dash between a letter/digit and a letter is an infix; "-" also between two numbers
    h = _shape(distinct, _SHAPE_DASH, ["c1", "h", "c2", "t1", "t2"]).with_columns(
        split=c("c2").str.contains("^[A-Za-z]") | ((c("h") == "-") & c("c1").str.contains("^[0-9]"))
    )
    parts.append(_emit(h.filter(c("split")), [c("c1"), c("h"), c("c2"), c("t1"), c("t2")]))
    parts.append(_emit(h.filter(~c("split")), [c("c1") + c("h") + c("c2"), c("t1"), c("t2")]))
    return pl.concat(parts).unique(subset="piece", keep="first")


def english_words(docs: pl.DataFrame) -> pl.DataFrame:
    """docs: (doc, text) -> (doc, word), spaCy-English tokens in text order."""
    pieces = whitespace_chunks(docs)
    distinct = (
        pieces.lazy()
        .select(pl.col("piece").unique())
        .filter(~(pl.col("piece").str.contains(_SIMPLE_RE) & ~pl.col("piece").is_in(_special_keys().implode())))
        .collect()
    )
    if distinct.height == 0:
        return pieces.rename({"piece": "word"})
    fast = _english_shortcuts(distinct)
    rest = distinct.join(fast, on="piece", how="anti").get_column("piece").to_list()
    slow = pl.DataFrame({"piece": rest, "toks": _cached(_en_cache, spacy_chunk_tokens, rest)}, schema={"piece": pl.String, "toks": pl.String})
    return _apply_mapping(pieces, pl.concat([fast, slow]))


def _apply_mapping(pieces: pl.DataFrame, mapping: pl.DataFrame) -> pl.DataFrame:
    return (
        pieces.join(mapping, on="piece", how="left", maintain_order="left")
        .select("doc", pl.coalesce(pl.col("toks").str.split(" "), pl.concat_list(pl.col("piece"))).alias("word"))
        .explode("word")
        .filter(pl.col("word").is_not_null() & (pl.col("word") != ""))
    )


# jieba's block regex (re_han_default) plus "any other non-space character" (each one a token)
_JIEBA_BLOCK = r"[\x{4E00}-\x{9FD5}a-zA-Z0-9+#&._%\-]"
_ZH_PIECES_RE = f"{_JIEBA_BLOCK}+|[^{WS_CLASS}]"
_ZH_CHARS_RE = rf"[\x{{4E00}}-\x{{9FD5}}]|[a-zA-Z0-9+#&._%\-]+|[^{WS_CLASS}]"


@lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def _jieba_tokens(block: str) -> tuple[str, ...]:
    return tuple(w for w in _jieba().lcut(block, HMM=True) if w.strip())


_ASCII_BLOCK = re.compile(r"[a-zA-Z0-9+#&._%\-]+")
_FINALSEG_SKIP = re.compile(r"([a-zA-Z0-9]+(?:\.\d+)?%?)")  # jieba.finalseg's re_skip


@lru_cache(maxsize=1)
def _rjieba():
    try:
        import rjieba
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("zh_segmenter 'jieba-rs' needs the rjieba package (pip install rjieba)") from exc
    return rjieba.cut, _jieba().dt.FREQ


def _rjieba_tokens(block: str) -> tuple[str, ...]:
    """jieba-rs (Rust) segmentation made to match Python jieba: jieba-rs keeps a run such as
    "1-3" or "16-bit" whole where jieba's HMM fallback (finalseg) splits it into alphanumeric
    runs and the characters between; dictionary words ("C++", "AT&T") stay whole in both."""
    cut, freq = _rjieba()
    out: list[str] = []
    for w in cut(block):
        if _ASCII_BLOCK.fullmatch(w) and not w.isalnum() and not freq.get(w):
            out.extend(x for x in _FINALSEG_SKIP.split(w) if x)
        elif w.strip():
            out.append(w)
    return tuple(out)


ZH_SEGMENTERS = ("jieba", "jieba-py", "jieba-rs", "chars")


def chinese_words(docs: pl.DataFrame, segmenter: str = "jieba") -> pl.DataFrame:
    """docs: (doc, text) -> (doc, word): jieba words (as datatrove's zh tokenizer) -- ``jieba``:
    Python jieba's algorithm and data vectorized (:mod:`jieba_np`, the same words by
    construction), ``jieba-py``: Python jieba itself, block by block (the reference),
    ``jieba-rs``: the same from jieba-rs -- or characters (``chars``)."""
    if segmenter == "chars":
        return docs.select("doc", pl.col("text").str.extract_all(_ZH_CHARS_RE).alias("word")).explode("word").drop_nulls("word")
    if segmenter not in ZH_SEGMENTERS:
        raise ValueError(f"unknown Chinese segmenter {segmenter!r} ({', '.join(ZH_SEGMENTERS)})")
    pieces = docs.select("doc", pl.col("text").str.extract_all(_ZH_PIECES_RE).alias("piece")).explode("piece").drop_nulls("piece")
    # one-character pieces are single tokens for jieba too (a lone Han or ASCII character)
    mask = pl.col("piece").str.len_chars() > 1
    if segmenter == "jieba":
        distinct = pieces.lazy().select(pl.col("piece").unique()).filter(mask).collect().get_column("piece")
        if distinct.len() == 0:
            return pieces.rename({"piece": "word"})
        mapping = pl.DataFrame({"piece": distinct, "toks": jieba_np.segment(distinct.to_list())}, schema={"piece": pl.String, "toks": pl.String})
        return _apply_mapping(pieces, mapping)
    if segmenter == "jieba-rs":
        return _map_pieces(pieces, mask, _rjieba_tokens, _zh_rs_cache)
    return _map_pieces(pieces, mask, _jieba_tokens, _zh_cache)


@lru_cache(maxsize=1)
def _char_classes() -> np.ndarray:
    """Per code point: 0 a character that is a token by itself, 1 a jieba block character
    (:data:`_JIEBA_BLOCK`), 2 whitespace (``str.isspace``, :data:`WS_CLASS`); the tests check
    both classes against the regexes over every code point."""
    cls = np.zeros(0x110000, dtype=np.uint8)
    cls[0x4E00 : 0x9FD5 + 1] = 1
    cls[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+#&._%-"]] = 1
    cls[[ord(c) for c in WS_CHARS]] = 2
    return cls


@dataclass
class CodeTokens:
    """Tokens as code points: ``codes`` (int64) holds the tokens' characters laid end to end
    (whitespace dropped), token ``i`` is ``codes[start[i]:start[i + 1]]`` (the last one runs to
    the end) and belongs to document ``doc[i]``; a document's tokens are contiguous, in order."""

    codes: np.ndarray
    start: np.ndarray
    doc: np.ndarray


def chinese_code_tokens(docs: pl.DataFrame, codes: tuple[np.ndarray, np.ndarray] | None = None) -> CodeTokens:
    """docs: (doc, text) -> jieba's words as :class:`CodeTokens`, the same tokens as
    ``chinese_words(docs, "jieba")`` without making a string per word: the texts' code points
    are classified with a table, each run of block characters is segmented by
    :func:`jieba_np.segment_codes`, every other non-space character is a token. ``codes``: the
    texts' code points (int64, end to end) and lengths, when the caller has them."""
    texts = docs.get_column("text")
    if codes is None:
        n_chars = texts.str.len_chars().fill_null(0).to_numpy().astype(np.int64)
        codes = np.frombuffer("".join(texts.fill_null("").to_list()).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    else:
        codes, n_chars = codes
    n = len(codes)
    cls = _char_classes()[codes]
    doc_first = np.zeros(n, dtype=bool)
    doc_first[(np.cumsum(n_chars) - n_chars)[n_chars > 0]] = True
    blk = cls == 1
    blk_start = blk & (doc_first | ~np.r_[False, blk[:-1]])
    is_start = cls == 0  # a character outside blocks and whitespace is a token
    bpos = np.flatnonzero(blk)
    if len(bpos):
        first = blk_start[bpos]
        lens = np.bincount(np.cumsum(first) - 1)
        is_start[bpos] = jieba_np.segment_codes(codes[bpos], lens)
    keep = cls != 2
    doc_of = np.repeat(docs.get_column("doc").to_numpy().astype(np.int64), n_chars)
    start = np.flatnonzero(is_start[keep])
    return CodeTokens(codes=codes[keep], start=start, doc=doc_of[keep][start])


def words(docs: pl.DataFrame, langs: list[str] | None = None, zh_segmenter: str = "jieba") -> pl.DataFrame:
    """(doc, text) [+ per-row language "en"/"zh"] -> (doc, word). Words of one document are
    contiguous and in text order; documents come grouped by language."""
    if langs is None:
        return english_words(docs)
    lang = pl.Series("lang", langs, dtype=pl.String)
    is_zh = lang == "zh"
    parts = []
    if (~is_zh).any():
        parts.append(english_words(docs.filter(~is_zh)))
    if is_zh.any():
        parts.append(chinese_words(docs.filter(is_zh), zh_segmenter))
    if not parts:
        return pl.DataFrame(schema={"doc": docs.schema["doc"], "word": pl.String})
    return pl.concat(parts)
