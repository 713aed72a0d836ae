"""Benchmark decontamination: n-gram and exact-hash indexes of evaluation items, matched against documents.

No pipeline logic here: ``stages/decontaminate.py`` loads the evaluation sets, builds an ``Index`` once,
and matches each partition's documents with ``match``.

Normalization (shared with dedup: ``pipeline.text.minhash``)
    NFKC -> lower() -> OpenCC ``t2s`` per character, by table lookup. Whitespace, punctuation, symbols
    and control characters (Unicode Z*, P*, S*, C*) are *dropped*: they never count as content.

Three kinds of keys, all 64-bit (a 32-bit key would give false hits: with 10^6 evaluation keys, one
document window in 4,000 would collide), each salted by kind so they can share one sorted array:
  * character n-grams (Chinese and other unspaced scripts): ``ngram_zh`` consecutive kept code points,
    only windows at least half of whose code points are Han/kana/Hangul (an English text never makes one);
  * word n-grams (English and other spaced scripts): ``ngram_en`` consecutive words (maximal runs of kept
    code points);
  * exact keys of *short* items (an item with neither kind of n-gram: answer options, one-line questions)
    of at least ``min_item_chars`` kept code points; a document gives one key per segment (a line or a
    sentence, cut at newlines and 。!?;) and a second one with a leading option label ("A.", "(b)",
    "3、") removed.

Hashing, with no Python loop per document or window
    A batch of texts is joined with NUL and normalized as one code point array. A span's key is a
    polynomial hash: differences of a prefix sum of u_i * B**i (mod 2**64) times B**-start, plus the span
    length, through the murmur3 64-bit finalizer. Word n-grams apply the same to the sequence of word keys.
    Matching is ``np.searchsorted`` of all a batch's keys into the index's sorted unique keys.

Template text
    A key found in more than ``max_repeats`` items of one set (instructions every question repeats, an
    option like "以上都对" or "yes") is left out of the index: it is not evidence of a leak.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.text import minhash as mh

U64 = np.uint64
SALT_CHAR = U64(0x1F3D5B79A2C4E6F1)
SALT_WORD = U64(0x2B4D6F8193A5C7E9)
SALT_EXACT = U64(0x3C5E7A9B1D2F4861)
KINDS = ("char", "word", "exact")
# Segment boundaries for the short-item path (after NFKC: fullwidth ！？；become ASCII).
SEGMENT_ENDS = np.array([0, 10, 13, ord("。"), ord("!"), ord("?"), ord(";"), ord("|"), ord("\t")], np.uint32)
# Characters that end an option label: "A." "A)" "A、" "A:" ("（A）" and "A．" fold to these under NFKC).
LABEL_ENDS = np.array([ord("."), ord(")"), ord("、"), ord(":")], np.uint32)
EXAMPLE_CHARS = 200


@dataclass(frozen=True)
class Config:
    ngram_en: int = 13  # words
    ngram_zh: int = 13  # characters
    min_item_chars: int = 8  # kept code points of a short item matched by exact hash
    max_repeats: int = 10  # keys in more items of one set are template text
    t2s: bool = True


# the same polynomial prefix hashes as MinHash's shingles (B**i and B**-i mod 2**64, grown on demand)
_POWERS = mh._POWERS


@functools.lru_cache(maxsize=2)
def _normalizer(t2s: bool) -> mh.MinHasher:
    # only its normalization is used (one permutation, a tiny buffer)
    return mh.MinHasher(mh.MinHashConfig(num_perm=1, bands=1, rows=1, chunk=1, t2s=t2s))


def _prefix(units: np.ndarray) -> np.ndarray:
    m = len(units)
    pw, _ = _POWERS.get(max(m, 1))
    prefix = np.zeros(m + 1, U64)
    np.cumsum(np.multiply(units.astype(U64, copy=False), pw[:m], dtype=U64), out=prefix[1:])
    return prefix


def _span_keys(prefix: np.ndarray, start: np.ndarray, end: np.ndarray, salt: np.uint64) -> np.ndarray:
    """Position-independent keys of units[start:end] (vectors of spans) from ``_prefix(units)``."""
    _, inv = _POWERS.get(max(len(prefix), 1))
    h = prefix[end] - prefix[start]
    h *= inv[start]
    h += (end - start).astype(U64)
    h ^= salt
    return mh.fmix64(h)


@dataclass
class Keys:
    """Every key of a batch of texts: ``key`` (uint64), ``doc`` (text index), ``kind`` (0 char, 1 word,
    2 exact), ``start``/``end`` (positions in ``cp``, for showing what matched)."""

    key: np.ndarray
    doc: np.ndarray
    kind: np.ndarray
    start: np.ndarray
    end: np.ndarray
    cp: np.ndarray  # the batch's normalized code points
    kept_chars: np.ndarray  # per text: kept code points
    ngram_texts: np.ndarray  # per text: has at least one n-gram

    def text(self, i: int) -> str:
        """The normalized text a key covers (punctuation and spaces kept, lower case, Simplified)."""
        s, e = int(self.start[i]), int(self.end[i])
        return self.cp[s : min(e, s + EXAMPLE_CHARS)].tobytes().decode("utf-32-le", "replace").replace("\x00", " ")


def keys(texts: list[str], cfg: Config, *, segments: bool, whole: bool = False) -> Keys:
    """Keys of ``texts``: character and word n-grams, plus exact keys of each text's segments
    (``segments``: documents) or of each whole text (``whole``: evaluation items)."""
    norm = _normalizer(cfg.t2s)
    n = len(texts)
    cp, seps = norm.normalize_batch(texts) if n else (np.zeros(0, np.uint32), np.zeros(0, np.int64))
    m = len(cp)
    drop = norm.drop[cp]
    keep = ~drop
    doc_of = np.searchsorted(seps, np.arange(m), side="left").astype(np.int64)  # NULs belong to the text before
    kpos = np.flatnonzero(keep)
    kdoc = doc_of[kpos]
    kc = cp[kpos]
    kept_chars = np.bincount(kdoc, minlength=n).astype(np.int64)
    out_k, out_d, out_t, out_s, out_e = [], [], [], [], []

    def add(k, d, kind, s, e):
        out_k.append(k)
        out_d.append(d)
        out_t.append(np.full(len(k), kind, np.int8))
        out_s.append(s)
        out_e.append(e)

    kprefix = _prefix(kc)
    # character n-grams: windows within one text, at least half Han/kana/Hangul
    w = cfg.ngram_zh
    if len(kc) >= w:
        i = np.arange(len(kc) - w + 1)
        script = np.zeros(len(kc) + 1, np.int64)
        np.cumsum(norm.script[kc], out=script[1:])
        ok = (kdoc[i] == kdoc[i + w - 1]) & (script[i + w] - script[i] >= math.ceil(w / 2))
        i = i[ok]
        add(_span_keys(kprefix, i, i + w, SALT_CHAR), kdoc[i], 0, kpos[i], kpos[i + w - 1] + 1)
    # word n-grams: words are maximal runs of kept code points (dropped characters and NULs separate)
    if len(kpos):
        first = np.ones(len(kpos), bool)
        first[1:] = kpos[1:] != kpos[:-1] + 1
        wstart = np.flatnonzero(first)  # indexes into the kept sequence
        wend = np.append(wstart[1:], len(kpos))
        wkeys = _span_keys(kprefix, wstart, wend, U64(0))
        wdoc = kdoc[wstart]
        v = cfg.ngram_en
        if len(wstart) >= v:
            j = np.arange(len(wstart) - v + 1)
            j = j[wdoc[j] == wdoc[j + v - 1]]
            add(_span_keys(_prefix(wkeys), j, j + v, SALT_WORD), wdoc[j], 1, kpos[wstart[j]], kpos[wend[j + v - 1] - 1] + 1)
    kind_arrays = np.concatenate(out_d) if out_d else np.zeros(0, np.int64)
    ngram_texts = np.zeros(n, bool)
    ngram_texts[kind_arrays] = True
    kept_cum = np.zeros(m + 1, np.int64)
    np.cumsum(keep, out=kept_cum[1:])
    if whole and n:  # one exact key per text: all its kept code points
        bounds = np.concatenate([[-1], seps, [m]]).astype(np.int64)
        s_cp, e_cp = bounds[:-1] + 1, bounds[1:]
        ks, ke = kept_cum[s_cp], kept_cum[e_cp]
        add(_span_keys(kprefix, ks, ke, SALT_EXACT), np.arange(n, dtype=np.int64), 2, s_cp, e_cp)
    if segments and m:
        cuts = np.flatnonzero(np.isin(cp, SEGMENT_ENDS))
        s_cp = np.concatenate([[0], cuts + 1]).astype(np.int64)
        e_cp = np.append(cuts, m).astype(np.int64)
        ks, ke = kept_cum[s_cp], kept_cum[e_cp]
        length = ke - ks
        sel = length >= max(cfg.min_item_chars, 1)
        s_cp, e_cp, ks, ke = s_cp[sel], e_cp[sel], ks[sel], ke[sel]
        segdoc = kdoc[ks] if len(ks) else np.zeros(0, np.int64)
        add(_span_keys(kprefix, ks, ke, SALT_EXACT), segdoc, 2, s_cp, e_cp)
        # the same segment without a leading option label: one letter or digit, then . ) 、 :
        if len(ks):
            p0 = kpos[ks]
            c0 = cp[p0]
            alnum = ((c0 >= ord("a")) & (c0 <= ord("z"))) | ((c0 >= ord("0")) & (c0 <= ord("9")))
            nxt = np.minimum(p0 + 1, m - 1)
            lab = alnum & (p0 + 1 < e_cp) & np.isin(cp[nxt], LABEL_ENDS) & (ke - ks - 1 >= max(cfg.min_item_chars, 1))
            if lab.any():
                add(_span_keys(kprefix, ks[lab] + 1, ke[lab], SALT_EXACT), segdoc[lab], 2, kpos[ks[lab] + 1], e_cp[lab])
    if out_k:
        return Keys(np.concatenate(out_k), np.concatenate(out_d), np.concatenate(out_t), np.concatenate(out_s), np.concatenate(out_e), cp, kept_chars, ngram_texts)
    z = np.zeros(0, np.int64)
    return Keys(np.zeros(0, U64), z, np.zeros(0, np.int8), z, z, cp, kept_chars, ngram_texts)


@dataclass
class SetSummary:
    name: str
    rows: int = 0
    items: int = 0  # non-empty texts (a row with several fields gives several)
    ngram_items: int = 0
    short_items: int = 0  # matched by exact key
    too_short: int = 0  # fewer than min_item_chars and no n-gram: not matched at all
    keys: dict = field(default_factory=lambda: {k: 0 for k in KINDS})
    template_keys: int = 0  # left out: in more than max_repeats items

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Index:
    """Sorted unique keys; per key a bit mask of the sets holding it, its kind, and the first (set, row, text)."""

    key: np.ndarray  # uint64, ascending, unique
    sets: np.ndarray  # uint64 bit masks
    kind: np.ndarray  # int8
    first_set: np.ndarray  # int16
    first_row: np.ndarray  # int64
    names: list[str]
    summaries: list[SetSummary]

    def __post_init__(self) -> None:
        # a bit per value of the keys' top FILTER_BITS bits: most document keys miss the index, and
        # testing one bit is cheaper than a binary search through millions of keys (cache misses)
        self.filter = np.zeros(1 << (FILTER_BITS - 3), np.uint8)
        top = (self.key >> U64(64 - FILTER_BITS)).astype(np.int64)
        np.bitwise_or.at(self.filter, top >> 3, np.left_shift(1, top & 7).astype(np.uint8))

    def candidates(self, keys: np.ndarray) -> np.ndarray:
        """Indexes of ``keys`` that may be in the index (the rest are not)."""
        top = (keys >> U64(64 - FILTER_BITS)).astype(np.int64)
        return np.flatnonzero((self.filter[top >> 3] >> (top & 7).astype(np.uint8)) & 1)

    def save(self, path) -> None:
        np.savez(path, key=self.key, sets=self.sets, kind=self.kind, first_set=self.first_set, first_row=self.first_row)

    @classmethod
    def load(cls, path, names: list[str]) -> "Index":
        z = np.load(path)
        return cls(z["key"], z["sets"], z["kind"], z["first_set"], z["first_row"], list(names), [])


MAX_SETS = 64
FILTER_BITS = 26  # an 8 MiB bit filter
BATCH_CHARS = 1_000_000  # characters per matching batch: about 150 MB of numpy arrays (measured)


def _batches(texts: list[str], limit: int = BATCH_CHARS):
    start, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= limit:
            yield start, i + 1
            start, size = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


def set_keys(name: str, texts: list[str], rows: list[int], cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, SetSummary]:
    """The index keys of one evaluation set (``texts[i]`` comes from row ``rows[i]``): (key, kind, row),
    template keys removed, and a summary."""
    summary = SetSummary(name=name, rows=len(set(rows)), items=len(texts))
    ks, kinds, krow = [], [], []
    rows_arr = np.asarray(rows, np.int64)
    for a, b in _batches(texts):
        k = keys(texts[a:b], cfg, segments=False, whole=True)
        ngram = k.ngram_texts
        exact = k.kind == 2
        # exact keys only for short items: no n-gram, at least min_item_chars
        short = ~ngram & (k.kept_chars >= max(cfg.min_item_chars, 1))
        sel = ~exact | short[k.doc]
        summary.ngram_items += int(ngram.sum())
        summary.short_items += int(short.sum())
        summary.too_short += int((~ngram & ~short & (k.kept_chars > 0)).sum())
        ks.append(k.key[sel])
        kinds.append(k.kind[sel])
        krow.append(rows_arr[a:b][k.doc[sel]])
    key = np.concatenate(ks) if ks else np.zeros(0, U64)
    kind = np.concatenate(kinds) if kinds else np.zeros(0, np.int8)
    row = np.concatenate(krow) if krow else np.zeros(0, np.int64)
    # distinct (key, row) pairs, then how many rows hold each key
    order = np.lexsort((row, key))
    key, kind, row = key[order], kind[order], row[order]
    pair_new = np.ones(len(key), bool)
    pair_new[1:] = (key[1:] != key[:-1]) | (row[1:] != row[:-1])
    key, kind, row = key[pair_new], kind[pair_new], row[pair_new]
    key_new = np.ones(len(key), bool)
    key_new[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(key_new)
    counts = np.diff(np.append(starts, len(key)))
    common = counts > cfg.max_repeats
    summary.template_keys = int(common.sum())
    starts = starts[~common]
    key, kind, row = key[starts], kind[starts], row[starts]
    for i, kname in enumerate(KINDS):
        summary.keys[kname] = int((kind == i).sum())
    return key, kind, row, summary


def build_index(sets: list[tuple[str, list[str], list[int]]], cfg: Config) -> Index:
    """One index over all sets (name, texts, row of each text), in order: the first set is reported first."""
    if len(sets) > MAX_SETS:
        raise ValueError(f"at most {MAX_SETS} evaluation sets in one decontaminate node")
    parts, summaries = [], []
    for s, (name, texts, rows) in enumerate(sets):
        key, kind, row, summary = set_keys(name, texts, rows, cfg)
        parts.append((key, kind, row, np.full(len(key), s, np.int16)))
        summaries.append(summary)
    key = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, U64)
    kind = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int8)
    row = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
    sid = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int16)
    order = np.lexsort((row, sid, key))
    key, kind, row, sid = key[order], kind[order], row[order], sid[order]
    new = np.ones(len(key), bool)
    new[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(new)
    bits = np.left_shift(U64(1), sid.astype(U64))
    masks = np.bitwise_or.reduceat(bits, starts) if len(starts) else np.zeros(0, U64)
    return Index(key[starts], masks.astype(U64), kind[starts], sid[starts], row[starts], [s[0] for s in sets], summaries)


@dataclass
class Matches:
    """Per document of a batch: which sets it matches and why."""

    ngram_hits: np.ndarray  # (n, sets) distinct n-gram keys matched
    short_hits: np.ndarray  # (n, sets) distinct short-item keys matched
    first: list[dict | None]  # per document: {"set", "row", "kind", "match"} of its first matching key (in text order)


def match(index: Index, texts: list[str], cfg: Config) -> Matches:
    """Match documents against the index, a batch of texts at a time."""
    n, s = len(texts), len(index.names)
    ngram_hits = np.zeros((n, s), np.int64)
    short_hits = np.zeros((n, s), np.int64)
    first: list[dict | None] = [None] * n
    if not len(index.key):
        return Matches(ngram_hits, short_hits, first)
    for a, b in _batches(texts):
        k = keys(texts[a:b], cfg, segments=True)
        cand = index.candidates(k.key)
        pos = np.zeros(len(k.key), np.int64)
        pos[cand] = np.searchsorted(index.key, k.key[cand])
        pos[pos >= len(index.key)] = 0
        hit = cand[index.key[pos[cand]] == k.key[cand]]
        if not len(hit):
            continue
        # distinct (document, key) pairs, in text order for the example
        order = np.lexsort((k.start[hit], k.key[hit], k.doc[hit]))
        hit = hit[order]
        d, key = k.doc[hit], k.key[hit]
        distinct = np.ones(len(hit), bool)
        distinct[1:] = (d[1:] != d[:-1]) | (key[1:] != key[:-1])
        hit = hit[distinct]
        d, ip = k.doc[hit], pos[hit]
        masks, kind = index.sets[ip], index.kind[ip]
        for j in range(s):
            has = (masks >> U64(j)) & U64(1) == 1
            ngram_hits[a:b, j] += np.bincount(d[has & (kind != 2)], minlength=b - a)
            short_hits[a:b, j] += np.bincount(d[has & (kind == 2)], minlength=b - a)
        earliest = np.lexsort((k.start[hit], d))
        docs, at = np.unique(d[earliest], return_index=True)  # each document's first key in text order
        for doc, i in zip(docs.tolist(), earliest[at].tolist()):
            first[a + doc] = {"set": index.names[int(index.first_set[ip[i]])], "row": int(index.first_row[ip[i]]), "kind": KINDS[int(kind[i])], "match": k.text(int(hit[i]))}
    return Matches(ngram_hits, short_hits, first)
