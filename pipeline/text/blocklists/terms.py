"""Bad-word lists for Chinese and English, and finding them in a column of texts.

**Lists.** ``ldnoobw:en`` and ``ldnoobw:zh`` are LDNOOBW's lists (CC BY 4.0, vendored with their
license and provenance in ``data/ldnoobw/``); a file of one term per line can be added for
either language. What grist leaves out of a Chinese list is decided here, not by editing the
files:

* **single characters** never match alone (性 is in 性能, 性别; 奶 in 牛奶; 幹 in 幹部);
* :data:`ZH_EXCLUDE`: entries that are not words (``13.`` matches every "2013.") or whose
  common sense is not offensive (刚度 stiffness, 祖宗 ancestors, 野鸡 pheasant, 靠背 backrest,
  肥西 a county ...);
* a match inside a longer word of :data:`ZH_ALLOW` does not count (成人教育, 处女作, 后庭花).

Every Chinese entry is also looked for in its OpenCC ``t2s`` form (the lists mix scripts).

**Matching.** English terms match case-insensitively between ASCII word boundaries (C4's rule:
``sex`` does not match in "Essex", but does in "看sex视频"), as one regular expression over the
column. Chinese terms are found with polars' Aho-Corasick (``str.find_many``/``extract_many``,
overlapping) and then, with ``zh_mode="segmented"`` (the default, chosen by measurement: see
docs/web-filters.md), a match counts only if it starts and ends on a jieba word boundary --
成人 in 造成人口 (造成 / 人口), 你妈 in 你妈妈 (你 / 妈妈), 妈的 in 妈妈的 do not count. The
words come from :mod:`pipeline.text.quality.jieba_np` (Python jieba's algorithm and dictionary,
vectorized), computed only for documents with a candidate match. ``zh_mode="substring"``
counts every match outside the allow-list.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

LDNOOBW_INFO = {
    "license": "CC-BY-4.0",
    "origin": "List of Dirty, Naughty, Obscene, and Otherwise Bad Words (LDNOOBW, https://github.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words)",
    "taken_from": "npm package naughty-words 1.2.0 (tarball sha256 c34b05e10a97ec7b9e0c3dd91d09888187c0f08d0812eaea79679795585b217e)",
    "vendored_at": "pipeline/text/blocklists/data/ldnoobw/ (LICENSE, SOURCE.md)",
}

NAMED_TERM_LISTS = {"ldnoobw:en": ("en", "ldnoobw/en.txt"), "ldnoobw:zh": ("zh", "ldnoobw/zh.txt")}

# Chinese entries of the lists grist does not use: not words, or words whose everyday sense is
# not offensive (each fired on ordinary text or is a place, a body-part term of biology, a
# plain noun). Measured and listed in docs/web-filters.md.
ZH_EXCLUDE = frozenset(
    {
        "13.", "13点", "十三点",  # "2013.", "13点" = 1 p.m.
        "刚度",  # stiffness (mechanics)
        "九游",  # a game platform
        "私服",  # casual clothes; private game server
        "祖宗",  # ancestors
        "激情",  # passion
        "交配",  # mating (biology)
        "包皮", "月经", "精子", "卵子",  # biology / medicine
        "屁股",  # buttocks
        "老二", "老母",  # second child; old mother
        "你老闆", "你老板",  # "your boss"
        "笨蛋", "白痴", "白癡",  # mild insults, everyday words
        "撒尿",  # to urinate
        "野鸡",  # pheasant
        "杂种",  # hybrid (杂种优势)
        "靠背",  # backrest
        "玉杵",  # jade pestle
        "贝肉",  # shellfish meat
        "肥西",  # 肥西县, a county in Anhui
        "粉腸",  # a food
        "吹箫",  # to play the xiao flute
        "打炮", "打飞机",  # to fire artillery; to shoot down planes
        "狗屁",  # "nonsense", everyday
        "妈妈的",  # "mother's" (妈妈的手艺): the insult is 妈的 / 他妈的
    }
)

# Longer words that contain a listed term in a harmless sense: a match inside one of them does
# not count (in both modes; segmentation already handles most compounds).
ZH_ALLOW = (
    "成人教育", "成人高等教育", "成人高考", "成人礼", "成人式", "成人期",
    "处女作", "处女座", "处女航", "处女地", "处女峰", "处女秀", "处女膜",
    "后庭花",
    "性交易",
)

EN_EXCLUDE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TermList:
    name: str
    lang: str  # "zh" | "en"
    terms: tuple[str, ...]
    info: dict = field(default_factory=dict, compare=False, hash=False)


def _data(rel: str) -> bytes:
    return resources.files("pipeline.text.blocklists").joinpath("data", *rel.split("/")).read_bytes()


def _parse_terms(data: bytes) -> list[str]:
    out = []
    for line in data.decode("utf-8").splitlines():
        t = line.strip()
        if t and not t.startswith("#"):
            out.append(t)
    return out


@lru_cache(maxsize=16)
def load_term_list(spec: str, lang: str | None = None) -> TermList:
    """A named list (``ldnoobw:en``, ``ldnoobw:zh``) or a file (one term per line, ``#``
    comments) for language ``lang``."""
    if spec in NAMED_TERM_LISTS:
        lang_of, rel = NAMED_TERM_LISTS[spec]
        data = _data(rel)
        info = {"name": spec, "lang": lang_of, **LDNOOBW_INFO, "file": rel, "sha256": hashlib.sha256(data).hexdigest()}
        terms = _parse_terms(data)
        info["entries"] = len(terms)
        return TermList(spec, lang_of, tuple(terms), info)
    if lang not in ("zh", "en"):
        raise ValueError(f"a term list file needs its language (zh or en): {spec!r}")
    p = Path(spec)
    data = p.read_bytes()
    terms = _parse_terms(data)
    return TermList(f"{lang}:{p.stem}", lang, tuple(terms), {"name": f"{lang}:{p.stem}", "lang": lang, "file": p.name, "sha256": hashlib.sha256(data).hexdigest(), "entries": len(terms)})


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s.json")


def _ascii_word(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def en_pattern(terms: Iterable[str]) -> str:
    """One case-insensitive alternation, longest terms first, each bounded by an ASCII word
    boundary on a side where it starts/ends with an ASCII word character."""
    parts = []
    for t in sorted(set(terms), key=lambda x: (-len(x), x)):
        e = re.escape(t)
        parts.append(("(?-u:\\b)" if _ascii_word(t[0]) else "") + e + ("(?-u:\\b)" if _ascii_word(t[-1]) else ""))
    return "(?i)(?:" + "|".join(parts) + ")"


@dataclass
class Matches:
    """Per input row: ``count`` matches, ``chars`` matched characters, ``zh``/``en`` counts, and
    ``terms`` {term: count} (rows without matches: empty)."""

    count: np.ndarray
    chars: np.ndarray
    zh: np.ndarray
    en: np.ndarray
    terms: list[dict[str, int]]


class TermMatcher:
    """The terms of some lists, ready to be found in texts (see the module's doc)."""

    def __init__(
        self,
        lists: Sequence[TermList],
        *,
        zh_mode: str = "segmented",
        exclude: Iterable[str] | None = None,
        allow: Iterable[str] | None = None,
        t2s_variants: bool = True,
        traditional: bool = True,
    ):
        if zh_mode not in ("segmented", "substring"):
            raise ValueError(f"zh_mode must be segmented or substring, not {zh_mode!r}")
        self.zh_mode = zh_mode
        self.exclude = frozenset(ZH_EXCLUDE | EN_EXCLUDE if exclude is None else exclude)
        zh_raw = [t for lst in lists if lst.lang == "zh" for t in lst.terms]
        en_raw = [t for lst in lists if lst.lang == "en" for t in lst.terms]
        zh = {t for t in zh_raw if len(t) >= 2 and t not in self.exclude}
        self.zh_single_dropped = sorted({t for t in zh_raw if len(t) < 2})
        if t2s_variants and zh:
            conv = _t2s()
            zh |= {v for v in (conv.convert(t) for t in list(zh)) if len(v) >= 2 and v not in self.exclude}
        self.zh_terms = sorted(zh)
        # Traditional text: candidates are found with the terms' Traditional forms too, then the
        # candidate texts are mapped to Simplified character by character (length-preserving)
        # and matched, and segmented, as Simplified text (jieba's dictionary is Simplified).
        self.traditional = traditional
        self._candidates = self.zh_terms
        if traditional and zh:
            import opencc

            convs = [opencc.OpenCC(c) for c in ("s2t.json", "s2tw.json", "s2hk.json")]
            variants = {c.convert(t) for c in convs for t in self.zh_terms}
            self._candidates = sorted(zh | {v for v in variants if len(v) >= 2})
        self.en_terms = sorted({t.lower() for t in en_raw if t.lower() not in self.exclude})
        allow_words = list(ZH_ALLOW if allow is None else allow)
        # an allow word matters only if it contains a term (case-insensitively for ASCII)
        zl = [t.lower() for t in self.zh_terms]
        self.zh_allow = sorted({a for a in allow_words if len(a) >= 2 and any(t in a.lower() for t in zl)})
        self._en_re = en_pattern(self.en_terms) if self.en_terms else None
        self._lang_of_list = {lst.name: lst.lang for lst in lists}

    def describe(self) -> dict:
        digest = hashlib.sha256("\n".join(["zh", *self.zh_terms, "en", *self.en_terms, "allow", *self.zh_allow]).encode()).hexdigest()
        return {
            "zh_mode": self.zh_mode,
            "traditional": "candidate texts mapped to Simplified per character (OpenCC t2s) before matching" if self.traditional else "not normalized",
            "zh_terms": len(self.zh_terms),
            "en_terms": len(self.en_terms),
            "zh_single_characters_ignored": len(self.zh_single_dropped),
            "excluded": sorted(self.exclude),
            "zh_allow": self.zh_allow,
            "terms_sha256": digest,
        }

    # ------------------------------------------------------------------ matching
    def match(self, texts: pl.Series | Sequence[str | None]) -> Matches:
        s = (texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.String)).cast(pl.String).fill_null("")
        n = len(s)
        parts = []
        if self.en_terms and n:
            parts.append(self._match_en(s))
        if self.zh_terms and n:
            parts.append(self._match_zh(s))
        m = pl.concat(parts) if parts else pl.DataFrame(schema={"row": pl.Int64, "term": pl.String, "lang": pl.String, "chars": pl.Int64})
        count = np.zeros(n, dtype=np.int64)
        chars = np.zeros(n, dtype=np.int64)
        zh = np.zeros(n, dtype=np.int64)
        en = np.zeros(n, dtype=np.int64)
        terms: list[dict[str, int]] = [{} for _ in range(n)]
        if m.height:
            g = m.group_by("row").agg(pl.len().alias("k"), pl.col("chars").sum().alias("c"), (pl.col("lang") == "zh").sum().alias("z"), (pl.col("lang") == "en").sum().alias("e"))
            r = g.get_column("row").to_numpy()
            count[r] = g.get_column("k").to_numpy()
            chars[r] = g.get_column("c").to_numpy()
            zh[r] = g.get_column("z").to_numpy()
            en[r] = g.get_column("e").to_numpy()
            per = m.group_by("row", "term").agg(pl.len().alias("k")).sort(["row", "k", "term"], descending=[False, True, False])
            for row, term, k in per.iter_rows():
                terms[row][term] = k
        return Matches(count, chars, zh, en, terms)

    def _match_en(self, s: pl.Series) -> pl.DataFrame:
        # Aho-Corasick first (no boundaries, case-insensitive): the regex runs on candidates only
        rows = np.flatnonzero(s.str.contains_any(self.en_terms, ascii_case_insensitive=True).to_numpy())
        found = s.gather(rows).str.extract_all(self._en_re)
        df = pl.DataFrame({"row": rows.astype(np.int64), "m": found}).explode("m").drop_nulls("m")
        return df.select("row", pl.col("m").str.to_lowercase().alias("term"), pl.lit("en").alias("lang"), pl.col("m").str.len_chars().cast(pl.Int64).alias("chars"))

    def _match_zh(self, s: pl.Series) -> pl.DataFrame:
        empty = pl.DataFrame(schema={"row": pl.Int64, "term": pl.String, "lang": pl.String, "chars": pl.Int64})
        candidate = s.str.contains_any(self._candidates, ascii_case_insensitive=True)
        rows = np.flatnonzero(candidate.to_numpy())
        if len(rows) == 0:
            return empty
        sub = s.gather(rows)
        if self.traditional:
            sub = to_simplified(sub)
        patterns = self.zh_terms + [a for a in self.zh_allow if a not in self.zh_terms]
        canon = {p.lower(): p for p in patterns}
        allow_set = set(self.zh_allow)
        starts = sub.str.find_many(patterns, overlapping=True, ascii_case_insensitive=True)
        found = sub.str.extract_many(patterns, overlapping=True, ascii_case_insensitive=True)
        df = pl.DataFrame({"i": np.arange(len(sub), dtype=np.int64), "b": starts, "m": found}).explode(["b", "m"]).drop_nulls("m")
        df = df.with_columns(term=pl.col("m").str.to_lowercase().replace_strict(canon, return_dtype=pl.String), nb=pl.col("m").str.len_bytes().cast(pl.Int64), b=pl.col("b").cast(pl.Int64))
        df = df.with_columns(e=pl.col("b") + pl.col("nb"), is_allow=pl.col("term").is_in(pl.Series(sorted(allow_set), dtype=pl.String).implode()))
        bad = df.filter(~pl.col("is_allow"))
        allowed = df.filter(pl.col("is_allow"))
        if allowed.height and bad.height:
            covered = bad.join(allowed.select("i", pl.col("b").alias("ab"), pl.col("e").alias("ae")), on="i").filter((pl.col("ab") <= pl.col("b")) & (pl.col("e") <= pl.col("ae"))).select("i", "b", "e").unique()
            bad = bad.join(covered, on=["i", "b", "e"], how="anti")
        if bad.height == 0:
            return empty
        if self.zh_mode == "segmented":
            bad = bad.filter(pl.Series(_aligned(sub, bad)))
        if bad.height == 0:
            return empty
        # one match per stretch of text: a match inside a longer one (操你 in 操你妈) is not
        # counted again; partly overlapping matches count the characters they add
        bad = bad.unique(["i", "b", "e"], keep="first").sort(["i", "b", "e"], descending=[False, False, True])
        prev_end = pl.col("e").cum_max().shift(1).over("i")
        bad = bad.with_columns(prev=prev_end.fill_null(-1)).filter(pl.col("prev") < pl.col("e"))
        new_bytes = pl.col("e") - pl.max_horizontal(pl.col("b"), pl.col("prev"))
        chars = (pl.col("term").str.len_chars() * new_bytes / pl.col("nb")).round(0).cast(pl.Int64)
        return bad.select(pl.Series("row", rows[bad.get_column("i").to_numpy()], dtype=pl.Int64), "term", pl.lit("zh").alias("lang"), chars.alias("chars"))


def to_simplified(texts: pl.Series) -> pl.Series:
    """Each Han character replaced by its OpenCC ``t2s`` form (character level, the table dedup
    uses): lengths and positions stay the same."""
    from pipeline.text.minhash import t2s_table

    values = texts.to_list()
    if not values:
        return texts
    codes = np.frombuffer("".join(values).encode("utf-32-le"), dtype=np.uint32)
    mapped = t2s_table()[codes]
    if np.array_equal(mapped, codes):
        return texts
    joined = mapped.astype("<u4").tobytes().decode("utf-32-le")
    ends = np.cumsum([len(v) for v in values]).tolist()
    starts = [0, *ends[:-1]]
    return pl.Series(texts.name, [joined[a:b] for a, b in zip(starts, ends)], dtype=pl.String)


def _aligned(sub: pl.Series, matches: pl.DataFrame) -> np.ndarray:
    """Whether each match (``i`` row of ``sub``, byte span ``b``..``e``) starts and ends on a
    jieba word boundary of its text. Only the texts of ``matches`` are segmented."""
    from pipeline.text.quality import jieba_np

    idx = np.unique(matches.get_column("i").to_numpy())
    texts = sub.gather(idx).to_list()
    pos_of = np.full(len(sub), -1, dtype=np.int64)
    pos_of[idx] = np.arange(len(idx))
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    n_chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    char_start = np.concatenate([[0], np.cumsum(n_chars)])  # per text, first char index (global)
    nbytes = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
    byte_pos = np.concatenate([[0], np.cumsum(nbytes)])  # global byte offset of each char (+ end)
    byte_base = byte_pos[char_start]  # per text, its first byte (global)
    cls = _char_classes()[codes]
    n = len(codes)
    k = pos_of[matches.get_column("i").to_numpy()]
    gb = byte_base[k] + matches.get_column("b").to_numpy()
    ge = byte_base[k] + matches.get_column("e").to_numpy()
    cs = np.searchsorted(byte_pos, gb)
    ce = np.searchsorted(byte_pos, ge)
    boundary = np.ones(n + 1, dtype=bool)
    if n:
        blk = cls == 1
        prev_blk = np.r_[False, blk[:-1]]
        doc_first = np.zeros(n, dtype=bool)
        doc_first[char_start[:-1][n_chars > 0]] = True
        inner = blk & prev_blk & ~doc_first  # a position inside a run of block characters
        bpos = np.flatnonzero(blk)
        if len(bpos):
            first = (blk & (doc_first | ~prev_blk))[bpos]
            run = np.cumsum(first) - 1  # run id of each block character
            lens = np.bincount(run)
            # jieba segments each run of block characters on its own: segmenting only the runs a
            # match touches gives the same boundaries there as segmenting the whole text
            run_of = np.full(n, -1, dtype=np.int64)
            run_of[bpos] = run
            width = int((ce - cs).max()) if len(cs) else 0
            touched = np.concatenate([run_of[np.minimum(cs + o, np.maximum(ce - 1, cs))] for o in range(max(width, 1))])
            need = np.zeros(len(lens), dtype=bool)
            need[touched[touched >= 0]] = True
            sel = need[run]
            is_start = np.zeros(n, dtype=bool)
            if sel.any():
                is_start[bpos[sel]] = jieba_np.segment_codes(codes[bpos[sel]], lens[need])
            boundary[:n] = ~inner | is_start
    # aligned at both ends (粗口 / 你 / 妈妈: 你妈 is not), or the start or the end of one longer
    # word (色情片, 淫秽内容: compounds jieba keeps whole); a match across a word boundary with a
    # loose end (造成|人口, 妈妈|的) never counts
    c = np.concatenate([[0], np.cumsum(boundary)])
    inside = c[ce] - c[np.minimum(cs + 1, ce)]  # boundaries strictly between start and end
    return (boundary[cs] & boundary[ce]) | ((boundary[cs] | boundary[ce]) & (inside == 0))


@lru_cache(maxsize=1)
def _char_classes() -> np.ndarray:
    """Per code point: 1 a character of jieba's blocks (``[\\u4E00-\\u9FD5a-zA-Z0-9+#&._%-]``,
    what it segments), 0 anything else (a token by itself, or whitespace: both boundaries)."""
    cls = np.zeros(0x110000, dtype=np.uint8)
    cls[0x4E00 : 0x9FD5 + 1] = 1
    cls[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+#&._%-"]] = 1
    return cls
