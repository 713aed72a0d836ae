"""Quality signals as columns: one row per document, every column prefixed ``q_``.

Everything is computed for a whole batch at once with polars expressions and numpy arrays --
no Python loop per document per signal. The only per-item Python work is in
:mod:`pipeline.text.quality.tokenize` (spaCy-rule tokenization of distinct non-trivial English
chunks, memoized per process); Chinese words come from jieba's algorithm vectorized with numpy
(:mod:`pipeline.text.quality.jieba_np`) as code point spans, and their features (length,
letters, punctuation, stop words, a hash for n-grams) are read from code point tables.
``compute_signals(..., columns=[...])`` computes only some columns (the values are the same).

Definitions follow datatrove 0.10 (which the tests use as the oracle) so that thresholds mean
the same thing as in the Gopher / C4 / FineWeb / FineWeb-2 papers' reference code:

=========================  ================================================================
``q_lang``                 tokenizer used for the row: ``en`` (spaCy rules) or ``zh`` (jieba)
``q_chars``                characters (code points)
``q_tokens``               all tokens, punctuation included (datatrove ``split_into_words``)
``q_words``                tokens with at least one character outside datatrove's
                           ``PUNCTUATION_SET`` (Gopher's word count)
``q_mean_word_len``        mean length of those words (null without words)
``q_alpha_words_frac``     tokens containing a letter / tokens
``q_stopwords``            distinct stop words of the row's language present (case-sensitive)
``q_hash_ratio``           ``#`` characters / tokens
``q_ellipsis_ratio``       (``...`` + ``…``) occurrences / tokens
``q_lines``                ``str.splitlines()`` lines
``q_bullet_lines_frac``    lines starting (after whitespace) with ``•`` or ``-``
``q_ellipsis_lines_frac``  lines ending (before whitespace) with ``...`` or ``…``
``q_cjk_frac``             Han/Hiragana/Katakana/Hangul characters / non-space characters
``q_punct_frac``           ``PUNCTUATION_SET`` characters / non-space characters
``q_dup_para_frac``        paragraphs (``\n\n+``-separated, text stripped) equal to an earlier one / paragraphs
``q_dup_para_char_frac``   characters of those paragraphs / ``q_chars``
``q_dup_line_frac``        lines (``\n+``-separated) equal to an earlier one / lines
``q_dup_line_char_frac``   characters of those lines / ``q_chars``
``q_top_{2,3,4}gram_frac`` characters (words joined by spaces) of the most frequent n-gram
                           times its count / ``q_chars``; ties go to the n-gram seen first
``q_dup_{5..10}gram_frac`` characters of duplicated n-grams / ``q_chars``, with datatrove's
                           greedy non-overlapping scan (``find_all_duplicate``)
``q_nonblank_lines``       ``\n``-separated lines that are not blank (FineWeb)
``q_line_punct_frac``      non-blank lines ending in a terminal punctuation mark (FineWeb)
``q_short_lines_frac``     non-blank lines of at most 30 characters (FineWeb)
``q_fw_dup_line_char_frac`` characters of non-blank lines equal to an earlier one / characters
                           other than ``\n`` (FineWeb's ``char_duplicates_ratio``)
``q_newlines_per_word``    ``\n`` count / tokens (FineWeb's ``new_line_ratio``)
``q_c4_*``                 C4's document-level rules after its line filters (lines stripped,
                           citations removed, kept if they end in ``. ? ! " '`` but not ``...``,
                           have >= 3 words, no word > 1000 characters, no "javascript", no
                           cookie/terms-of-use phrase): ``q_c4_lorem_lines`` / ``q_c4_curly_lines``
                           count lines that make C4 drop the document ("lorem ipsum", ``{``),
                           ``q_c4_sentences`` counts sentences of the kept lines (approximated,
                           see :data:`_SENTENCE_END_RE`)
``q_c4_all_*``             the same without the terminal-punctuation line filter (how FineWeb
                           ran C4: ``filter_no_terminal_punct=False``)
=========================  ================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.text.quality import tokenize
from pipeline.text.quality.ragged import excl_cumsum, segment_offsets

# datatrove.utils.text.PUNCTUATION / TERMINAL_PUNCTUATION (datatrove 0.10, Apache-2.0)
PUNCTUATION = (
    "!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\x5c\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]~\u201c\u300a\u201e';\u2019{|\u2236\xb4[=-`*"
    "\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e\xab\u3009,><\u300b)?\uff09\u3002\u2026@_.\x22}\u25ba\xbb\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0d\x0e\x0f"
    "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96"
    "\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f"
)
TERMINAL_PUNCTUATION = (
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b\u1362\u1367\u1368\u166e"
    "\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e"
    "\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d"
    "\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047"
    "\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca"
    "\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c"
    "\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88"
)

PUNCTUATION_SET = frozenset(PUNCTUATION) | frozenset(TERMINAL_PUNCTUATION)

# Stop words per language: Gopher's English list; FineWeb-2's cmn_Hani list.
STOPWORDS = {
    "en": ("the", "be", "to", "of", "and", "that", "have", "with"),
    "zh": ("的", "年", "在", "月", "是", "和", "日", "了", "於", "·", "為", "有", "被", "人", "中", "为", "他", "與", "後", "也", "而", "由"),
}

NGRAM_TOP = (2, 3, 4)
NGRAM_DUP = (5, 6, 7, 8, 9, 10)


def _cls(chars) -> str:
    """A Rust-regex character class body matching exactly ``chars``."""
    return "".join(f"\\x{{{ord(c):X}}}" for c in sorted(set(chars)))


_WS = tokenize.WS_CLASS
_WS_NO_NL = r"\t\x1F \xA0\x{1680}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}"  # isspace() minus line breaks
_LINEBREAKS_RE = r"[\r\x0B\x0C\x1C\x1D\x1E\x85\x{2028}\x{2029}]"  # str.splitlines() breaks besides \n
_PUNCT_CLASS = _cls(PUNCTUATION_SET)
_TERMINAL_CLASS = _cls(TERMINAL_PUNCTUATION)
_CJK_RE = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"
_CITATION_RE = r"\[\d*\]|\[edit\]|\[citation needed\]"
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# Sentence ends for C4's sentence count (datatrove runs spaCy's sentencizer on each line): a
# terminal mark that spaCy splits off as its own token (after a lowercase letter, a digit, two
# capitals or a closing quote/bracket; "..." is one token and ends nothing), optional closing
# quotes/brackets, whitespace, then a token that is not punctuation. An approximation: see
# docs/quality.md for its agreement with datatrove's C4QualityFilter.
_SENTENCE_END_RE = (
    r"(?:(?:[\p{Ll}0-9\)\]\"'\x{201D}\x{2019}]|\p{Lu}\p{Lu})\.[!?]*|[!?\x{3002}\x{FF01}\x{FF1F}]+)"  # the mark
    + r"(?:[\p{P}--[.!?]]*[" + _WS + r"]+|[\p{P}--[.!?]]+)"  # closing punctuation, whitespace
    + r"[^" + _WS + r"\p{P}]"  # the next word
    + r"|\p{Ll}\.\p{Lu}"  # "end.Next": spaCy splits that period as an infix
)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)

SIGNAL_COLUMNS = (
    "q_lang", "q_chars", "q_tokens", "q_words", "q_mean_word_len", "q_alpha_words_frac", "q_stopwords",
    "q_hash_ratio", "q_ellipsis_ratio", "q_lines", "q_bullet_lines_frac", "q_ellipsis_lines_frac",
    "q_cjk_frac", "q_punct_frac",
    "q_dup_para_frac", "q_dup_para_char_frac", "q_dup_line_frac", "q_dup_line_char_frac",
    *(f"q_top_{n}gram_frac" for n in NGRAM_TOP), *(f"q_dup_{n}gram_frac" for n in NGRAM_DUP),
    "q_nonblank_lines", "q_line_punct_frac", "q_short_lines_frac", "q_fw_dup_line_char_frac", "q_newlines_per_word",
    "q_c4_lorem_lines", "q_c4_curly_lines", "q_c4_sentences",
    "q_c4_all_lorem_lines", "q_c4_all_curly_lines", "q_c4_all_sentences",
)


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den as float64, 0.0 where den is 0 (Python's a / b where b > 0)."""
    return pl.when(den > 0).then(num.cast(pl.Float64) / den.cast(pl.Float64)).otherwise(0.0)


_LINE_COLUMNS = frozenset({"q_dup_line_frac", "q_dup_line_char_frac", "q_nonblank_lines", "q_line_punct_frac", "q_short_lines_frac", "q_fw_dup_line_char_frac"})
_PARAGRAPH_COLUMNS = frozenset({"q_dup_para_frac", "q_dup_para_char_frac"})
_C4_COLUMNS = frozenset(c for c in SIGNAL_COLUMNS if c.startswith("q_c4_"))
_NGRAM_COLUMNS = frozenset(c for c in SIGNAL_COLUMNS if c.endswith("gram_frac"))
_WORD_COLUMNS = frozenset(
    {"q_tokens", "q_words", "q_mean_word_len", "q_alpha_words_frac", "q_stopwords", "q_hash_ratio", "q_ellipsis_ratio", "q_newlines_per_word", "q_cjk_frac", "q_punct_frac"}
)


def compute_signals(
    texts: pa.Array | pa.ChunkedArray | pl.Series | Sequence[str | None],
    langs: Sequence[str] | pl.Series | None = None,
    *,
    zh_segmenter: str = "jieba",
    stopwords: dict[str, Sequence[str]] | None = None,
    columns: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Signals for each text (null texts count as empty), in input order.

    ``langs``: per row ``"en"`` or ``"zh"`` (anything but ``"zh"`` is tokenized as English);
    default all English. ``stopwords`` replaces :data:`STOPWORDS` for the languages it names.
    ``columns``: the ``q_*`` columns to compute (``q_lang`` always comes along), default all;
    each has the same value either way, only the work for the others is skipped (no words are
    made when no word or n-gram signal is asked for, no C4 lines without a C4 signal ...)."""
    want = set(SIGNAL_COLUMNS) if columns is None else {"q_lang", *columns}
    unknown = want - set(SIGNAL_COLUMNS)
    if unknown:
        raise ValueError(f"unknown signal columns {sorted(unknown)} (known: {', '.join(SIGNAL_COLUMNS)})")
    schema = {c: t for c, t in _output_schema().items() if c in want}
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        text = pl.Series("text", texts).cast(pl.String)
    else:
        text = pl.Series("text", texts, dtype=pl.String)
    n = len(text)
    if n == 0:
        return pl.DataFrame(schema=schema)
    lang = pl.Series("q_lang", ["en"] * n if langs is None else list(langs), dtype=pl.String)
    docs = pl.DataFrame({"text": text.fill_null(""), "q_lang": lang}).with_row_index("doc")
    docs = docs.with_columns(q_lang=pl.when(pl.col("q_lang") == "zh").then(pl.lit("zh")).otherwise(pl.lit("en")))

    codes = _Codes.of(docs)
    out = _text_signals(docs, codes, cjk="q_cjk_frac" in want, punct="q_punct_frac" in want)
    if want & _LINE_COLUMNS:
        out = out.join(_line_signals(docs), on="doc", how="left")
    if want & _PARAGRAPH_COLUMNS:
        out = out.join(_paragraph_signals(docs), on="doc", how="left")
    if want & _C4_COLUMNS:
        out = out.join(_c4_signals(docs), on="doc", how="left")
    if want & (_WORD_COLUMNS | _NGRAM_COLUMNS):
        words = _words(docs, zh_segmenter, stopwords or {}, codes)
        if want & _WORD_COLUMNS:
            out = out.join(_word_signals(words, docs), on="doc", how="left")
        if want & _NGRAM_COLUMNS:
            out = out.join(_ngram_signals(words, docs), on="doc", how="left")

    derived = {
        "q_hash_ratio": ("hashes", "q_tokens"),
        "q_ellipsis_ratio": ("ellipses", "q_tokens"),
        "q_newlines_per_word": ("newlines", "q_tokens"),
        # tokens partition the non-whitespace characters
        "q_cjk_frac": ("cjk", "nonspace"),
        "q_punct_frac": ("punct", "nonspace"),
    }
    out = out.sort("doc").with_columns(**{c: _ratio(pl.col(a), pl.col(b)) for c, (a, b) in derived.items() if c in want})
    return out.select([pl.col(c).cast(t) for c, t in schema.items()])


def _output_schema() -> dict:
    schema = {}
    for c in SIGNAL_COLUMNS:
        if c == "q_lang":
            schema[c] = pl.String
        elif c in ("q_chars", "q_tokens", "q_words", "q_stopwords", "q_lines", "q_nonblank_lines") or c.endswith(("_lines", "_sentences")):
            schema[c] = pl.Int64
        else:
            schema[c] = pl.Float64
    return schema


@dataclass
class _Codes:
    """The documents' code points laid end to end (int64) and each document's length."""

    codes: np.ndarray
    n_chars: np.ndarray

    @staticmethod
    def of(docs: pl.DataFrame) -> "_Codes":
        texts = docs.get_column("text")
        n_chars = texts.str.len_chars().to_numpy().astype(np.int64)
        return _Codes(np.frombuffer("".join(texts.to_list()).encode("utf-32-le"), dtype=np.uint32).astype(np.int64), n_chars)


def _text_signals(docs: pl.DataFrame, text: _Codes, cjk: bool = True, punct: bool = True) -> pl.DataFrame:
    t = pl.col("text")
    # str.splitlines() semantics: every line-break character, "\r\n" as one, no final empty line
    lines = docs.select("doc", "q_lang", q_chars=t.str.len_chars().cast(pl.Int64), sl=t.str.replace_all("\r\n", "\n", literal=True).str.replace_all(_LINEBREAKS_RE, "\n"))
    sl = pl.col("sl")
    n_lines = pl.when(sl == "").then(0).otherwise(sl.str.count_matches("\n", literal=True) + 1 - sl.str.ends_with("\n").cast(pl.Int64))
    out = lines.with_columns(q_lines=n_lines.cast(pl.Int64)).select(
        "doc",
        "q_lang",
        "q_chars",
        "q_lines",
        q_bullet_lines_frac=_ratio(sl.str.count_matches(f"(?m)^[{_WS_NO_NL}]*[\u2022\\-]"), pl.col("q_lines")),
        q_ellipsis_lines_frac=_ratio(sl.str.count_matches(f"(?m)(?:\\.\\.\\.|\u2026)[{_WS_NO_NL}]*$"), pl.col("q_lines")),
    )
    # character counts from the code points, the same numbers as polars' count_matches of the
    # class or literal: one histogram of (document, character flags)
    c, n = text.codes, docs.height
    starts = np.r_[0, np.cumsum(text.n_chars)[:-1]]
    flags = _flag_table()[c]
    if cjk:
        flags |= _regex_table("cjk", _CJK_RE, c)[c].view(np.uint8)
    dot = c == 0x2E
    if dot.any():  # non-overlapping "...": a run of k dots holds k // 3 (runs stop at a document's end)
        first_dot = dot.copy()
        first_dot[1:] &= ~dot[:-1]
        nonempty = starts[text.n_chars > 0]
        first_dot[nonempty] = dot[nonempty]
        dot_start = np.flatnonzero(first_dot)
        dots3 = np.bincount(np.repeat(np.arange(n), text.n_chars)[dot_start], weights=_run_lengths(dot, dot_start) // 3, minlength=n).astype(np.int64)
    else:
        dots3 = np.zeros(n, dtype=np.int64)
    hist = np.bincount(np.repeat(np.arange(n, dtype=np.int64) * 32, text.n_chars) + flags, minlength=32 * n).reshape(n, 32)
    per_flag = hist @ ((np.arange(32)[:, None] >> np.arange(5)[None, :]) & 1)  # documents x flags
    zero = np.zeros(n, dtype=np.int64)
    counts = {
        "cjk": per_flag[:, 0] if cjk else zero,
        "punct": per_flag[:, 1] if punct else zero,
        "hashes": per_flag[:, 2],
        "ellipses": dots3 + per_flag[:, 4],
        "newlines": per_flag[:, 3],
    }
    return out.with_columns(**{k: pl.Series(v, dtype=pl.Int64) for k, v in counts.items()})


@lru_cache(maxsize=1)
def _flag_table() -> np.ndarray:
    """Per code point: 2 in PUNCTUATION_SET, 4 "#", 8 "\\n", 16 "\u2026" (1 is left for CJK)."""
    t = np.zeros(0x110000, dtype=np.uint8)
    t[[ord(ch) for ch in PUNCTUATION_SET]] |= 2
    t[0x23] |= 4
    t[0x0A] |= 8
    t[0x2026] |= 16
    return t


def _run_lengths(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Length of the run of ``mask`` beginning at each of ``starts`` (run starts, ascending)."""
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    idx = np.flatnonzero(mask)
    first = np.isin(idx, starts, assume_unique=True)
    return np.bincount(np.cumsum(first) - 1, minlength=len(starts))


def _explode_lines(docs: pl.DataFrame, text: pl.Expr) -> pl.DataFrame:
    """(doc, line, first, last) for ``text.split("\n")``, in order."""
    lines = docs.select("doc", text.str.split("\n").alias("line")).explode("line")
    d = pl.col("doc")
    return lines.with_columns(first=d != d.shift(1, fill_value=-1), last=d != d.shift(-1, fill_value=-1))


def _dup_flags(key: pl.Expr) -> pl.Expr:
    """True where (doc, key) was already seen earlier in the frame's order."""
    return ~pl.struct(pl.col("doc"), key).is_first_distinct()


def _line_signals(docs: pl.DataFrame) -> pl.DataFrame:
    lines = _explode_lines(docs, pl.col("text")).with_columns(
        llen=pl.col("line").str.len_chars(),
        h=pl.col("line").hash(),
        blank=pl.col("line").str.contains(f"^[{_WS}]*$"),
    )
    # Gopher repetition: re.split("\n+", text) keeps a leading and a trailing empty element
    rep = lines.filter((pl.col("line") != "") | pl.col("first") | pl.col("last"))
    rep = rep.with_columns(dup=_dup_flags(pl.col("h"))).group_by("doc").agg(
        rep_lines=pl.len(),
        dup_lines=pl.col("dup").sum(),
        dup_line_chars=pl.col("llen").filter(pl.col("dup")).sum(),
    )
    # FineWeb: non-blank lines
    fw = lines.filter(~pl.col("blank"))
    fw = fw.with_columns(dup=_dup_flags(pl.col("h"))).group_by("doc").agg(
        q_nonblank_lines=pl.len().cast(pl.Int64),
        punct_lines=pl.col("line").str.contains(f"[{_TERMINAL_CLASS}]$").sum(),
        short_lines=(pl.col("llen") <= 30).sum(),
        fw_dup_chars=pl.col("llen").filter(pl.col("dup")).sum(),
    )
    chars = docs.select("doc", chars=pl.col("text").str.len_chars(), chars_nonl=pl.col("text").str.len_chars() - pl.col("text").str.count_matches("\n", literal=True))
    return (
        chars.join(rep, on="doc", how="left")
        .join(fw, on="doc", how="left")
        .select(
            "doc",
            q_dup_line_frac=_ratio(pl.col("dup_lines"), pl.col("rep_lines")),
            q_dup_line_char_frac=_ratio(pl.col("dup_line_chars"), pl.col("chars")),
            q_nonblank_lines=pl.col("q_nonblank_lines").fill_null(0),
            q_line_punct_frac=_ratio(pl.col("punct_lines"), pl.col("q_nonblank_lines")),
            q_short_lines_frac=_ratio(pl.col("short_lines"), pl.col("q_nonblank_lines")),
            q_fw_dup_line_char_frac=_ratio(pl.col("fw_dup_chars"), pl.col("chars_nonl")),
        )
    )


def _paragraph_signals(docs: pl.DataFrame) -> pl.DataFrame:
    # re.split(r"\n{2,}", text.strip()): runs of non-empty "\n"-split elements
    lines = _explode_lines(docs, pl.col("text").str.strip_chars(tokenize.WS_CHARS)).with_columns(
        empty=pl.col("line") == "", llen=pl.col("line").str.len_chars(), h=pl.col("line").hash()
    )
    lines = lines.with_columns(start=~pl.col("empty") & (pl.col("first") | pl.col("empty").shift(1, fill_value=True)))
    paras = (
        lines.with_columns(pid=pl.col("start").cum_sum())
        .filter(~pl.col("empty"))
        .group_by("pid", maintain_order=True)
        .agg(pl.col("doc").first(), ph=pl.col("h"), plen=pl.col("llen").sum() + pl.len() - 1)
        .with_columns(ph=pl.col("ph").hash())  # a paragraph is its sequence of lines
    )
    stats = paras.with_columns(dup=_dup_flags(pl.col("ph"))).group_by("doc").agg(
        paras=pl.len(), dup_paras=pl.col("dup").sum(), dup_para_chars=pl.col("plen").filter(pl.col("dup")).sum()
    )
    return (
        docs.select("doc", chars=pl.col("text").str.len_chars())
        .join(stats, on="doc", how="left")
        .select(
            "doc",
            # a text that strips to "" is one empty paragraph
            q_dup_para_frac=_ratio(pl.col("dup_paras").fill_null(0), pl.col("paras").fill_null(1)),
            q_dup_para_char_frac=_ratio(pl.col("dup_para_chars").fill_null(0), pl.col("chars")),
        )
    )


def _c4_signals(docs: pl.DataFrame) -> pl.DataFrame:
    """C4QualityFilter's document-level outcome, with and without its terminal-punctuation line filter."""
    sl = pl.col("text").str.replace_all("\r\n", "\n", literal=True).str.replace_all(_LINEBREAKS_RE, "\n")
    # splitlines() has no element after a final line break (nor any for "")
    lines = _explode_lines(docs, sl).filter(~(pl.col("last") & (pl.col("line") == "")))
    stripped = pl.col("line").str.strip_chars(tokenize.WS_CHARS)
    # only lines of at least three words can count (both variants require it): the line is
    # stripped, so three words means two inner whitespace runs
    lines = lines.with_columns(stripped.alias("s")).filter(pl.col("s").str.contains(f"[^{_WS}][{_WS}]+[^{_WS}]+[{_WS}]+[^{_WS}]"))
    lines = lines.with_columns(words3=pl.lit(True), c=pl.col("s").str.replace_all(_CITATION_RE, ""))
    # a word of more than 1000 characters (only lines that long can have one)
    long = (lines.get_column("s").str.len_chars() > 1000).to_numpy()
    too_long = np.zeros(lines.height, dtype=bool)
    if long.any():
        too_long[long] = lines.filter(pl.Series(long)).get_column("s").str.contains(f"[^{_WS}]{{1001}}").to_numpy()
    lines = lines.with_columns(too_long=pl.Series(too_long))
    low = pl.col("c").str.to_lowercase()
    lines = lines.with_columns(
        punct=pl.col("c").str.contains(r"[.?!\"']$") & ~pl.col("c").str.ends_with("..."),
        lorem=low.str.contains("lorem ipsum", literal=True),
        js=low.str.contains("javascript", literal=True),
        curly=pl.col("c").str.contains("{", literal=True),
        policy=pl.any_horizontal([low.str.contains(p, literal=True) for p in _POLICY]),
        sents=pl.when(pl.col("c").str.contains(f"[^{_WS}]")).then(pl.col("c").str.count_matches(_SENTENCE_END_RE) + 1).otherwise(0),
    )
    base = ~pl.col("too_long") & pl.col("words3")
    aggs = []
    for prefix, ok in (("q_c4_", base & pl.col("punct")), ("q_c4_all_", base)):
        kept = ok & ~pl.col("lorem") & ~pl.col("js") & ~pl.col("curly") & ~pl.col("policy")
        aggs += [
            (ok & pl.col("lorem")).sum().cast(pl.Int64).alias(prefix + "lorem_lines"),
            (ok & ~pl.col("lorem") & ~pl.col("js") & pl.col("curly")).sum().cast(pl.Int64).alias(prefix + "curly_lines"),
            pl.col("sents").filter(kept).sum().cast(pl.Int64).alias(prefix + "sentences"),
        ]
    stats = lines.group_by("doc").agg(aggs)
    return docs.select("doc").join(stats, on="doc", how="left").fill_null(0)


@dataclass
class _Words:
    """One entry per token (datatrove's ``split_into_words``), a document's tokens contiguous and
    in text order: its document, a 64-bit hash (equal for equal tokens), its length in
    characters, whether it has a character outside ``PUNCTUATION_SET`` (a Gopher "word"),
    whether it has a letter (``\\p{L}``), and the index of the stop word it is in its row's
    list (-1: none)."""

    doc: np.ndarray
    hash: np.ndarray
    wlen: np.ndarray
    nonsym: np.ndarray
    alpha: np.ndarray
    stop: np.ndarray

    @staticmethod
    def concat(parts: list["_Words"]) -> "_Words":
        if not parts:
            z = np.zeros(0, dtype=np.int64)
            return _Words(z, z.astype(np.uint64), z, z.astype(bool), z.astype(bool), z)
        return _Words(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("doc", "hash", "wlen", "nonsym", "alpha", "stop")))


def _words(docs: pl.DataFrame, zh_segmenter: str, stopwords: dict, codes: _Codes | None = None) -> _Words:
    """Tokens of every row: spaCy's English rules, or jieba (or characters) for Chinese rows.
    ``codes``: the rows' code points, when at hand."""
    lists = {lang: list(stopwords.get(lang, STOPWORDS[lang])) for lang in STOPWORDS}
    is_zh = docs.get_column("q_lang") == "zh"
    parts = []
    if (~is_zh).any():
        en = docs.select("doc", "text") if not is_zh.any() else docs.filter(~is_zh).select("doc", "text")
        parts.append(_words_from_frame(tokenize.english_words(en), lists["en"]))
    if is_zh.any():
        zh = docs.select("doc", "text") if is_zh.all() else docs.filter(is_zh).select("doc", "text")
        if zh_segmenter == "jieba":
            known = (codes.codes, codes.n_chars) if codes is not None and is_zh.all() else None
            parts.append(_words_from_codes(tokenize.chinese_code_tokens(zh, known), lists["zh"]))
        else:
            parts.append(_words_from_frame(tokenize.chinese_words(zh, zh_segmenter), lists["zh"]))
    return _Words.concat(parts)


def _stop_index(stop: list[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, w in enumerate(stop):
        index.setdefault(w, i)
    return index


def _words_from_frame(words: pl.DataFrame, stop: list[str]) -> _Words:
    w = pl.col("word")
    index = _stop_index(stop)
    f = words.select(
        doc=pl.col("doc").cast(pl.Int64),
        hash=w.hash(),
        wlen=w.str.len_chars().cast(pl.Int64),
        nonsym=w.str.contains(f"[^{_PUNCT_CLASS}]"),
        alpha=w.str.contains(r"\p{L}"),
        is_stop=w.is_in(list(index)),
    )
    stop_idx = np.full(f.height, -1, dtype=np.int64)
    hit = np.flatnonzero(f.get_column("is_stop").to_numpy())
    if len(hit):
        stop_idx[hit] = words.get_column("word").gather(hit).replace_strict(index, return_dtype=pl.Int64).to_numpy()
    return _Words(*(f.get_column(c).to_numpy() for c in ("doc", "hash", "wlen", "nonsym", "alpha")), stop_idx)


@lru_cache(maxsize=1)
def _punct_table() -> np.ndarray:
    t = np.zeros(0x110000, dtype=bool)
    t[[ord(c) for c in PUNCTUATION_SET]] = True
    return t


_regex_known: dict[str, np.ndarray] = {}  # per pattern and code point: 0 unknown, 1 match, 2 no match


def _regex_table(name: str, pattern: str, codes: np.ndarray) -> np.ndarray:
    """Per code point: does the one-character string match the (Rust) regex ``pattern``, the
    class the string paths use (``\\p{L}``, :data:`_CJK_RE`). Decided by that regex, once per
    code point, pattern and process, for the code points present."""
    known = _regex_known.setdefault(name, np.zeros(0x110000, dtype=np.int8))
    present = np.zeros(0x110000, dtype=bool)
    present[codes] = True
    new = np.flatnonzero(present & (known == 0))
    new = new[(new < 0xD800) | (new > 0xDFFF)]
    if len(new):
        chars = pl.Series([chr(c) for c in new.tolist()], dtype=pl.String)
        known[new] = np.where(chars.str.contains(pattern).to_numpy(), 1, 2)
    return known == 1


_HASH_M = np.uint64(0x100000001B3)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (wrapping uint64)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@lru_cache(maxsize=8)
def _one_char_table(items: tuple[tuple[str, int], ...]) -> np.ndarray | None:
    if not items:
        return None
    table = np.full(0x110000, -1, dtype=np.int64)
    for w, i in items:
        table[ord(w)] = i
    return table


def _words_from_codes(tokens: tokenize.CodeTokens, stop: list[str]) -> _Words:
    codes, start, doc = tokens.codes, tokens.start, tokens.doc
    n_tok = len(start)
    if n_tok == 0:
        return _Words.concat([])
    wlen = np.diff(np.r_[start, len(codes)])
    nonsym = np.logical_or.reduceat(~_punct_table()[codes], start)
    alpha = np.logical_or.reduceat(_regex_table("alpha", r"\p{L}", codes)[codes], start)
    # a 64-bit hash per token (equal tokens, equal hashes), through splitmix64's finalizer, a
    # bijection: a token of at most 3 code points packs exactly into 63 bits (none holds a NUL
    # but the one-character token "\\0"), so distinct short tokens never collide; longer ones
    # hash their code points polynomially, with the top bit set
    key = codes[start].astype(np.uint64)
    for j in (1, 2):
        has = np.flatnonzero(wlen > j)
        key[has] |= codes[start[has] + j].astype(np.uint64) << np.uint64(21 * j)
    long = np.flatnonzero(wlen > 3)
    if len(long):
        lw = wlen[long]
        pos = np.repeat(start[long], lw) + segment_offsets(lw)
        off = pos - np.repeat(start[long], lw)
        powers = np.ones(int(lw.max()), dtype=np.uint64)
        powers[1:] = np.cumprod(np.full(len(powers) - 1, _HASH_M, dtype=np.uint64))
        poly = np.add.reduceat(_mix64(codes[pos].astype(np.uint64) + np.uint64(1)) * powers[off], excl_cumsum(lw))
        key[long] = (poly ^ lw.astype(np.uint64)) | np.uint64(1 << 63)
    h = _mix64(key)
    stop_idx = np.full(n_tok, -1, dtype=np.int64)
    index = _stop_index(stop)
    # one-character stop words by a table over code points; longer ones compared character-wise
    one = _one_char_table(tuple((w, i) for w, i in index.items() if len(w) == 1))
    if one is not None:
        cand = np.flatnonzero(wlen == 1)
        stop_idx[cand] = one[codes[start[cand]]]
    for w, i in index.items():
        if len(w) < 2:
            continue
        cand = np.flatnonzero(wlen == len(w))
        ok = np.ones(len(cand), dtype=bool)
        for j, ch in enumerate(w):
            ok &= codes[start[cand] + j] == ord(ch)
        stop_idx[cand[ok]] = i
    return _Words(doc, h, wlen, nonsym, alpha, stop_idx)


def _word_signals(words: _Words, docs: pl.DataFrame) -> pl.DataFrame:
    n = docs.height
    d = words.doc
    q_tokens = np.bincount(d, minlength=n)
    q_words = np.bincount(d, weights=words.nonsym, minlength=n).astype(np.int64)
    word_chars = np.bincount(d, weights=words.wlen * words.nonsym, minlength=n)
    nonspace = np.bincount(d, weights=words.wlen, minlength=n).astype(np.int64)
    alpha = np.bincount(d, weights=words.alpha, minlength=n)
    hit = words.stop >= 0
    pairs = np.unique(d[hit] * (int(words.stop.max(initial=0)) + 1) + words.stop[hit])  # distinct (doc, stop word)
    q_stop = np.bincount(pairs // (int(words.stop.max(initial=0)) + 1), minlength=n) if len(pairs) else np.zeros(n, dtype=np.int64)
    return pl.DataFrame(
        {
            "doc": docs.get_column("doc"),
            "q_tokens": q_tokens.astype(np.int64),
            "q_words": q_words,
            "word_chars": word_chars,
            "alpha": alpha,
            "q_stopwords": q_stop.astype(np.int64),
            "nonspace": nonspace,
        }
    ).select(
        "doc",
        "q_tokens",
        "q_words",
        q_mean_word_len=pl.when(pl.col("q_words") > 0).then(pl.col("word_chars") / pl.col("q_words")),
        q_alpha_words_frac=_ratio(pl.col("alpha"), pl.col("q_tokens")),
        q_stopwords="q_stopwords",
        nonspace="nonspace",
    )


def _ngram_signals(words: _Words, docs: pl.DataFrame) -> pl.DataFrame:
    """Top n-gram and duplicated n-gram character fractions (datatrove's GopherRepetitionFilter).

    Words are hashed to 64 bits and n-grams to polynomial hashes of their words (collisions are
    negligible at 2^-64). Only *repeated* n-grams matter for both families of signals, and an
    n-gram can only repeat where the (n-1)-grams at i and i+1 both repeat, so each order is
    computed on the shrinking set of candidate positions of the previous one."""
    n_docs = docs.height
    chars = np.maximum(docs.get_column("text").str.len_chars().to_numpy().astype(np.float64), 1.0)
    out = {f"q_top_{n}gram_frac": np.zeros(n_docs) for n in NGRAM_TOP}
    out.update({f"q_dup_{n}gram_frac": np.zeros(n_docs) for n in NGRAM_DUP})
    N = len(words.doc)
    if N:
        d, h, wl = words.doc, words.hash, words.wlen
        cs = np.zeros(N + 1, dtype=np.int64)
        np.cumsum(wl, out=cs[1:])
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        doc_start = np.full(n_docs, -1, dtype=np.int64)
        doc_start[d[starts]] = starts
        doc_words = np.zeros(n_docs, dtype=np.int64)
        doc_words[d[starts]] = np.diff(np.r_[starts, N])
        dmix = d.astype(np.uint64) * _M2  # n-grams of different documents never meet
        with np.errstate(over="ignore"):
            rep = pl.Series(h ^ dmix).is_duplicated().to_numpy()
            cand = np.flatnonzero(rep)
            ng = h
            for n in range(2, max(NGRAM_DUP) + 1):
                ng = ng[:-1] * _M1 + h[n - 1 :]
                c = cand[cand + 1 < N]
                c = c[rep[c + 1] & (c + n - 1 < N)]
                c = c[d[c] == d[c + n - 1]]
                key = ng[c] ^ dmix[c]
                repeated = pl.Series(key).is_duplicated().to_numpy()
                cand, key = c[repeated], key[repeated]
                rep = np.zeros(N, dtype=bool)
                rep[cand] = True
                if n in NGRAM_TOP:
                    out[f"q_top_{n}gram_frac"] = _top_ngram(cand, key, d, cs, n, doc_start, doc_words) / chars
                if n in NGRAM_DUP:
                    out[f"q_dup_{n}gram_frac"] = _dup_ngram_chars(cand, key, d, cs, n, n_docs) / chars
    return pl.DataFrame({"doc": docs.get_column("doc"), **out})


def _top_ngram(pos: np.ndarray, key: np.ndarray, d: np.ndarray, cs: np.ndarray, n: int, doc_start: np.ndarray, doc_words: np.ndarray) -> np.ndarray:
    """Per doc: len(" ".join(top n-gram)) * its count, the top n-gram being Counter.most_common(1)
    (highest count, first seen on ties); 0 for documents with fewer than n words.
    ``pos``/``key``: positions and keys of the repeated n-grams only."""
    # no repeated n-gram: the top one is the first n-gram, seen once
    res = np.zeros(len(doc_words), dtype=np.float64)
    has = np.flatnonzero(doc_words >= n)
    first = doc_start[has]
    res[has] = (cs[first + n] - cs[first]) + (n - 1)
    if len(pos):
        g = pl.DataFrame({"k": key, "p": pos}).group_by("k").agg(cnt=pl.len(), p=pl.col("p").min())
        p = g.get_column("p").to_numpy()
        best = (
            pl.DataFrame({"doc": d[p], "cnt": g.get_column("cnt"), "p": p})
            .sort(["doc", "cnt", "p"], descending=[False, True, False])
            .unique(subset="doc", keep="first")
        )
        bp = best.get_column("p").to_numpy()
        res[best.get_column("doc").to_numpy()] = ((cs[bp + n] - cs[bp]) + (n - 1)) * best.get_column("cnt").to_numpy()
    return res


def _dup_ngram_chars(pos: np.ndarray, key: np.ndarray, d: np.ndarray, cs: np.ndarray, n: int, n_docs: int) -> np.ndarray:
    """datatrove's find_all_duplicate per doc: scan n-grams left to right; an n-gram already in the
    set of *visited* n-grams counts its characters ("".join) and the scan jumps n words ahead;
    otherwise it is added and the scan moves one word. Vectorized: duplicate flags by hashing,
    the greedy jumps run by run (:func:`_greedy`), then -- only if a jumped-over position holds
    the first occurrence of a repeated n-gram -- flags recomputed against the positions the scan
    really added, until they are consistent (which is the sequential result).
    ``pos``/``key``: positions and keys of the repeated n-grams only."""
    res = np.zeros(n_docs, dtype=np.float64)
    if len(pos) == 0:
        return res
    first = pl.Series(key).is_first_distinct().to_numpy()
    dup = ~first
    sel = _greedy(pos[dup], d, n)
    if len(sel) and (_skipped_mask(sel, pos, n) & first).any():
        idx = np.arange(len(pos))
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        group = np.empty(len(pos), dtype=np.int64)
        group[order] = np.cumsum(np.r_[True, sk[1:] != sk[:-1]]) - 1
        for _ in range(100):
            added = ~_skipped_mask(sel, pos, n) & ~np.isin(pos, sel, assume_unique=True)
            # first added position of each n-gram
            first_added = np.minimum.reduceat(np.where(added[order], order, len(pos)), starts)
            new_dup = first_added[group] < idx
            if np.array_equal(new_dup, dup):
                break
            dup = new_dup
            sel = _greedy(pos[dup], d, n)
    if len(sel):
        np.add.at(res, d[sel], cs[sel + n] - cs[sel])
    return res


def _skipped_mask(sel: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """For each position in ``pos``: is it jumped over (1..n-1 words after a selected start)?"""
    j = np.searchsorted(sel, pos, side="left") - 1  # last selected start before pos
    prev = sel[np.maximum(j, 0)]
    return (j >= 0) & (pos - prev < n)


def _greedy(dpos: np.ndarray, d: np.ndarray, n: int) -> np.ndarray:
    """Selected starts of datatrove's scan given the (sorted) duplicate positions: the first
    duplicate is taken, then the next duplicate at least n words further, and so on, per doc.
    Runs of consecutive duplicates are solved in closed form; only runs closer than n words to
    the previous run of the same document need the previous run's last jump (a Python loop
    over those runs only)."""
    if len(dpos) == 0:
        return dpos
    dd = d[dpos]
    brk = np.ones(len(dpos), dtype=bool)
    brk[1:] = (dpos[1:] != dpos[:-1] + 1) | (dd[1:] != dd[:-1])
    starts = dpos[brk]
    ends = dpos[np.append(brk[1:], True)]  # inclusive
    rdoc = dd[brk]
    e = starts.copy()
    cnt = (ends - e) // n + 1
    linked = np.zeros(len(starts), dtype=bool)
    linked[1:] = (rdoc[1:] == rdoc[:-1]) & (starts[1:] - ends[:-1] < n)
    if linked.any():
        last = (e + n * (cnt - 1)).tolist()
        e_l, cnt_l = e.tolist(), cnt.tolist()
        st, en = starts.tolist(), ends.tolist()
        for r in np.flatnonzero(linked).tolist():
            t = last[r - 1]
            er = max(st[r], t + n)
            if er <= en[r]:
                e_l[r], cnt_l[r] = er, (en[r] - er) // n + 1
                last[r] = er + n * (cnt_l[r] - 1)
            else:
                e_l[r], cnt_l[r], last[r] = er, 0, t
        e, cnt = np.array(e_l, dtype=np.int64), np.array(cnt_l, dtype=np.int64)
    total = int(cnt.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return np.repeat(e, cnt) + n * offs
