"""MinHash signatures, LSH band hashes and connected components, vectorized with numpy.

No pipeline logic here: ``stages/dedup.py`` drives these functions over partitions.

Normalization (the dedup key)
    NFKC (full/half width, compatibility forms) -> ``str.lower`` -> optional Traditional->Simplified
    (OpenCC ``t2s``, character by character) -> drop every whitespace, punctuation, symbol and control
    character (Unicode categories Z*, P*, S*, C*). The exact-duplicate key is xxh3-128 of the
    remaining code points; near-duplicate shingles are built from the same code points.

Shingles
    A document is in *character mode* when at least ``cjk_min_fraction`` of its kept code
    points belong to a script written without spaces (Han, kana, Hangul, Thai, Lao, Khmer,
    Myanmar); its shingles are character n-grams of the kept code points. Otherwise it is in
    *word mode*: dropped characters separate words, and shingles are word n-grams. A document
    shorter than n units gives one shingle (all its units); an empty one gives none.

Hashing, with no Python loop per shingle or permutation (one per document: the exact-key xxh3)
    A batch of documents is joined with NUL, encoded to UTF-32 and handled as one code point array
    (normalized by table lookup). Word hashes are differences of a polynomial prefix sum (mod 2**64)
    through the murmur3 finalizer (top 32 bits kept); the shingle hash h of an n-gram of units
    (code points or word hashes) is fmix32(sum_k u[i+k] * Q_k mod 2**32). Permutation j is
    ``pi_j(h) = (a_j * h + b_j) mod 2**32`` with a_j odd: a bijection of the 32-bit hash space,
    computed for all permutations and shingles of a chunk as one (num_perm x chunk) uint32 array
    and reduced per document with ``np.minimum.reduceat``.

Exact Jaccard
    ``batch(..., shingles=True)`` also returns each document's set of shingle hashes (distinct,
    ascending); ``exact_jaccard`` compares many pairs of such sets at once (one merge by a stable
    sort), ``signature_gate`` says how few equal signature values make a pair not worth comparing.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from dataclasses import dataclass

import numpy as np
import xxhash

U64 = np.uint64
_C1 = U64(0xFF51AFD7ED558CCD)
_C2 = U64(0xC4CEB9FE1A85EC53)
_S33 = U64(33)
_PREFIX_BASE = 0x9E3779B97F4A7C15  # odd: invertible mod 2**64
EMPTY = np.uint32(0xFFFFFFFF)
COMPLEX_MARK = 0x200000  # above every code point: flags a code point whose fold is not exact

# Scripts written without spaces between words: shingle by characters.
CHAR_SCRIPT_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x323AF),  # CJK extensions B-H, compatibility supplement
)

# Han characters: what OpenCC t2s converts.
HAN_RANGES = ((0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x323AF))

_M1 = np.uint32(0x85EBCA6B)
_M2 = np.uint32(0xC2B2AE35)


def fmix32(x: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finalizer, in place on a uint32 array (returned for chaining)."""
    x ^= x >> np.uint32(16)
    x *= _M1
    x ^= x >> np.uint32(13)
    x *= _M2
    x ^= x >> np.uint32(16)
    return x


def fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finalizer, in place on a uint64 array (returned for chaining)."""
    x ^= x >> _S33
    x *= _C1
    x ^= x >> _S33
    x *= _C2
    x ^= x >> _S33
    return x


@dataclass(frozen=True)
class CharTables:
    """Lookup tables over all code points (built once per process, about a second)."""

    fold: np.ndarray  # uint32: NFKC then lower() of the code point, when that is one code point (else COMPLEX_MARK + it)
    complex: np.ndarray  # bool: the per-code-point fold is not exact (composes, decomposes to several letters, final sigma)
    drop: np.ndarray  # bool: whitespace, punctuation, symbol, control (categories Z*, P*, S*, C*)
    script: np.ndarray  # bool: a script written without spaces (character shingles)


# Planes 4-13 are unassigned and 15-16 private use: dropped, folded to themselves, never looked up.
_ASSIGNED_PLANES = ((0x0, 0x40000), (0xE0000, 0xF0000))


@functools.lru_cache(maxsize=1)
def char_tables() -> CharTables:
    size = 0x110000
    drop = np.ones(size, dtype=bool)
    fold = np.arange(size, dtype=np.uint32)
    complex_ = np.zeros(size, dtype=bool)
    composing = np.zeros(size, dtype=bool)
    blocks = [(b, min(b + 0x8000, hi)) for lo, hi in _ASSIGNED_PLANES for b in range(lo, hi, 0x8000)]  # small blocks: small peak memory

    def block(lo: int, hi: int) -> tuple[np.ndarray, list[str], str]:
        cps = np.array([i for i in range(lo, hi) if not 0xD800 <= i <= 0xDFFF and i != 0], dtype=np.int64)
        chars = [chr(i) for i in cps.tolist()]
        return cps, chars, "\x00".join(chars)

    for lo, hi in blocks:  # pass 1: categories, and what may compose
        cps, chars, joined = block(lo, hi)
        cats = [unicodedata.category(c) for c in chars]
        drop[cps] = np.fromiter((c[0] in "ZPSC" for c in cats), dtype=bool, count=len(cats))
        # may combine with neighbours under NFKC: non-zero combining class ...
        composing[[int(i) for i, c, k in zip(cps, chars, cats) if k[0] == "M" and unicodedata.combining(c)]] = True
        # ... or a non-first character of a canonical decomposition (Hangul jamo V/T, some Indic vowel signs)
        for piece in unicodedata.normalize("NFD", joined).split("\x00"):
            if len(piece) > 1:
                composing[[ord(ch) for ch in piece[1:]]] = True
    for lo, hi in blocks:  # pass 2: NFKC + lower() of each code point alone
        cps, chars, joined = block(lo, hi)
        folded = unicodedata.normalize("NFKC", joined).lower().split("\x00")
        assert len(folded) == len(cps)
        lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
        one = lengths == 1
        fold[cps[one]] = np.frombuffer("".join(p for p, o in zip(folded, one.tolist()) if o).encode("utf-32-le"), dtype=np.uint32)
        for i in np.flatnonzero(~one).tolist():
            cp, piece = int(cps[i]), folded[i]
            if not (drop[cp] and all(drop[ord(ch)] for ch in piece)):
                complex_[cp] = True  # several letters (ligatures, squared words) or nothing
    drop[0] = True
    complex_ |= composing | composing[fold]
    complex_[0x03A3] = True  # capital sigma: lower() depends on the next letter
    fold[complex_] = COMPLEX_MARK + np.flatnonzero(complex_).astype(np.uint32)
    script = np.zeros(size, dtype=bool)
    for lo, hi in CHAR_SCRIPT_RANGES:
        script[lo : hi + 1] = True
    script &= ~drop
    return CharTables(fold=fold, complex=complex_, drop=drop, script=script)


@functools.lru_cache(maxsize=1)
def t2s_table() -> np.ndarray:
    """uint32 map of every code point to its Simplified form: OpenCC ``t2s`` applied to each Han
    character alone (character level: its phrase rules are not used), identity elsewhere."""
    import opencc

    table = np.arange(0x110000, dtype=np.uint32)
    han = np.zeros(0x110000, dtype=bool)
    for lo, hi in HAN_RANGES:
        han[lo : hi + 1] = True
    cps = np.flatnonzero(han)
    converted = opencc.OpenCC("t2s").convert("\x00".join(map(chr, cps.tolist()))).split("\x00")
    assert len(converted) == len(cps)
    for cp, out in zip(cps.tolist(), converted):
        if len(out) == 1:
            table[cp] = ord(out)
    return table


class _Powers:
    """B**i and B**-i mod 2**64, grown on demand (per process)."""

    def __init__(self) -> None:
        self.pw = np.ones(1, U64)
        self.inv = np.ones(1, U64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pw) < n:
            size = max(n, 2 * len(self.pw))
            pw = np.full(size, U64(_PREFIX_BASE))
            pw[0] = 1
            self.pw = np.cumprod(pw, dtype=U64)
            inv = np.full(size, U64(pow(_PREFIX_BASE, -1, 1 << 64)))
            inv[0] = 1
            self.inv = np.cumprod(inv, dtype=U64)
        return self.pw[:n], self.inv[:n]


_POWERS = _Powers()


@dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 112
    bands: int = 14
    rows: int = 8
    ngram: int = 3  # word n-grams (word mode)
    char_ngram: int = 5  # character n-grams (character mode)
    char_mode: str = "auto"  # "auto" | "always" | "never"
    cjk_min_fraction: float = 0.1
    t2s: bool = True
    seed: int = 42
    chunk: int = 16384  # shingles per permutation block (a num_perm x chunk uint32 array)

    def __post_init__(self) -> None:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")


@dataclass
class BatchSignatures:
    """Per-document results for one batch, in input order."""

    exact: np.ndarray  # (n, 2) uint64: xxh3-128 of the normalized code points
    sig: np.ndarray  # (n, num_perm) uint32; rows of EMPTY where has_shingles is False
    has_shingles: np.ndarray  # (n,) bool
    empty: np.ndarray  # (n,) bool: nothing left after normalization (never deduplicated)
    char_mode: np.ndarray  # (n,) bool
    norm_chars: np.ndarray  # (n,) int64: code points in the normalized key
    # with ``batch(..., shingles=True)``: every document's distinct shingle hashes, ascending, one
    # document after the other (uint32), and how many each document has (int64); else None
    shingles: np.ndarray | None = None
    shingle_counts: np.ndarray | None = None


class MinHasher:
    def __init__(self, cfg: MinHashConfig):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        self.a = (rng.integers(0, 1 << 32, cfg.num_perm, dtype=np.uint64) | 1).astype(np.uint32)[:, None]
        self.b = rng.integers(0, 1 << 32, cfg.num_perm, dtype=np.uint64).astype(np.uint32)[:, None]
        self.q = (rng.integers(0, 1 << 32, max(cfg.ngram, cfg.char_ngram), dtype=np.uint64) | U64(1)).astype(np.uint32)
        self.band_mult = rng.integers(1, 1 << 63, cfg.rows, dtype=np.uint64) | U64(1)
        self.band_salt = rng.integers(0, 1 << 63, cfg.bands, dtype=np.uint64)
        self._buf = np.empty((cfg.num_perm, cfg.chunk), np.uint32)
        self.tables = char_tables()
        self.drop, self.script = self.tables.drop, self.tables.script
        self.t2s = t2s_table() if cfg.t2s else None
        self.fold = self.tables.fold
        if self.t2s is not None:  # NFKC, lower, then t2s, in one lookup
            self.fold = self.fold.copy()
            simple = self.fold < 0x110000
            self.fold[simple] = self.t2s[self.fold[simple]]

    # ---------------------------------------------------------------- normalization
    def normalize_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Code points (uint32) of the batch joined with NUL and normalized, and the separator positions.

        NFKC + lower() is a table lookup per code point; the rare texts holding a code point for
        which that is not exact (combining marks, ligatures, capital sigma) go through
        ``unicodedata.normalize`` one by one, so both paths give NFKC(text).lower()."""
        n = len(texts)
        joined = "\x00".join(texts)
        if joined.count("\x00") != n - 1:
            joined = "\x00".join(t.replace("\x00", " ") for t in texts)
        cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        seps = np.flatnonzero(cp == 0)
        out = self.fold[cp]  # complex code points fold to COMPLEX_MARK + themselves
        slow = np.flatnonzero(out >= COMPLEX_MARK) if len(out) and out.max() >= COMPLEX_MARK else ()
        if len(slow):
            bounds = np.concatenate([[-1], seps, [len(cp)]])
            pieces, prev = [], 0
            for d in np.unique(np.searchsorted(seps, slow)).tolist():
                s, e = int(bounds[d]) + 1, int(bounds[d + 1])
                pieces.append(out[prev:s])
                text = cp[s:e].tobytes().decode("utf-32-le")
                if not unicodedata.is_normalized("NFKC", text):  # most text with combining marks already is
                    text = unicodedata.normalize("NFKC", text)
                text = text.lower().replace("\x00", " ")
                folded = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
                pieces.append(self.t2s[folded] if self.t2s is not None else folded)
                prev = e
            pieces.append(out[prev:])
            out = np.concatenate(pieces)
            seps = np.flatnonzero(out == 0)
        return out, seps

    # ---------------------------------------------------------------- signatures
    def batch(self, texts: list[str], shingles: bool = False) -> BatchSignatures:
        """Signatures (and exact keys, flags) of ``texts``; with ``shingles``, also each document's set
        of shingle hashes (the same 32-bit hashes the permutations are applied to), for exact Jaccard."""
        cfg = self.cfg
        n = len(texts)
        cp, seps = self.normalize_batch(texts)
        m = len(cp)
        dropm = self.drop[cp]  # NUL separators are dropped too
        keep = ~dropm
        kept = cp[keep]
        # document d spans cp[seg_start[d]:seg_end[d]]
        seg_start = np.concatenate([[0], seps + 1]).astype(np.int64)
        seg_end = np.concatenate([seps, [m]]).astype(np.int64)
        # kept code points per document; reduceat over a padded copy (an empty last document starts at m)
        norm_chars = np.add.reduceat(np.append(keep, False), seg_start, dtype=np.int64)
        norm_chars[seg_start == seg_end] = 0
        starts = np.zeros(n + 1, np.int64)
        np.cumsum(norm_chars, out=starts[1:])
        kept_doc = np.repeat(np.arange(n, dtype=np.int64), norm_chars)

        mv = memoryview(kept.view(np.uint8))
        st = (4 * starts).tolist()
        digest = xxhash.xxh3_128_digest
        exact = np.frombuffer(b"".join([digest(mv[st[d] : st[d + 1]]) for d in range(n)]), dtype=">u8").astype(np.uint64).reshape(n, 2)
        empty = norm_chars == 0

        if cfg.char_mode == "always":
            char_mode = np.ones(n, bool)
        elif cfg.char_mode == "never":
            char_mode = np.zeros(n, bool)
        else:
            script_count = np.bincount(kept_doc[self.script[kept]], minlength=n)
            char_mode = script_count >= cfg.cjk_min_fraction * np.maximum(norm_chars, 1)
        char_mode &= ~empty
        word_docs = ~char_mode & ~empty

        sig = np.full((n, cfg.num_perm), EMPTY, np.uint32)
        has = np.zeros(n, bool)
        kept_h: list[tuple[np.ndarray, np.ndarray]] = []
        if char_mode.any():  # character n-grams over the kept code points
            if char_mode.all():
                units, udoc = kept, kept_doc
            else:
                sel = np.repeat(char_mode, norm_chars)
                units, udoc = kept[sel], kept_doc[sel]
            h, hdoc = self._ngrams(units, udoc, cfg.char_ngram)
            self._minhash(h, hdoc, sig, has)
            if shingles:
                kept_h.append((h, hdoc))
        if word_docs.any():  # word n-grams; dropped characters separate words
            if word_docs.all():
                wcp, wdrop = cp, dropm
            else:
                sel = np.repeat(word_docs, seg_end - seg_start + 1)[:m]
                wcp, wdrop = cp[sel], dropm[sel]
                seps = np.flatnonzero(wcp == 0)
            wh, wpos = self._words(wcp, wdrop)
            wh = (wh >> U64(32)).astype(np.uint32)
            wd = np.flatnonzero(word_docs)[np.searchsorted(seps, wpos)]
            h, hdoc = self._ngrams(wh, wd, cfg.ngram)
            self._minhash(h, hdoc, sig, has)
            if shingles:
                kept_h.append((h, hdoc))
        out = BatchSignatures(exact=exact, sig=sig, has_shingles=has, empty=empty, char_mode=char_mode, norm_chars=norm_chars)
        if shingles:
            if kept_h:
                h = np.concatenate([x for x, _ in kept_h])
                hdoc = np.concatenate([d for _, d in kept_h])
            else:
                h, hdoc = np.zeros(0, np.uint32), np.zeros(0, np.int64)
            out.shingles, out.shingle_counts = shingle_sets(h, hdoc, n)
        return out

    def _words(self, cp: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hash every maximal run of kept code points (a word) with a position-independent polynomial
        hash: differences of a prefix sum of c_i * B**i, times B**-start (mod 2**64). Returns the word
        hashes and their start positions."""
        m = len(cp)
        if m == 0:
            return np.zeros(0, U64), np.zeros(0, np.int64)
        keep = ~drop
        starts = keep.copy()
        starts[1:] &= drop[:-1]
        w_start = np.flatnonzero(starts)
        if not len(w_start):
            return np.zeros(0, U64), w_start
        ends = keep.copy()
        ends[:-1] &= drop[1:]
        w_end = np.flatnonzero(ends) + 1  # exclusive
        pw, inv = _POWERS.get(m)
        vals = np.multiply(cp, pw, dtype=U64)  # dropped characters never fall inside a word: no masking needed
        prefix = np.empty(m + 1, U64)
        prefix[0] = 0
        np.cumsum(vals, out=prefix[1:])
        wh = prefix[w_end]
        wh -= prefix[w_start]
        wh *= inv[w_start]
        wh += (w_end - w_start).astype(U64)  # the word length
        fmix64(wh)
        return wh, w_start

    def _ngrams(self, units: np.ndarray, udoc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes of the n-grams of ``units`` (uint32) within each document (units grouped by
        document, in order): fmix32(sum_k u[i+k] * Q_k mod 2**32), Q_k odd, so two n-grams that differ
        in one unit never collide. A document with fewer than n units gives one shingle of all of them."""
        m = len(units)
        if m == 0:
            return np.zeros(0, np.uint32), np.zeros(0, np.int64)
        pad = np.concatenate([units, np.zeros(n, np.uint32)])
        g = pad[:m] * self.q[0]
        for k in range(1, n):
            g += pad[k : m + k] * self.q[k]
        # window i is whole when units i .. i+n-1 belong to the same document
        same = np.zeros(m, bool)
        if m >= n:
            same[: m - n + 1] = udoc[: m - n + 1] == udoc[n - 1 :]
        # documents with fewer than n units: one partial window at their first unit
        first = np.flatnonzero(np.concatenate([[True], udoc[1:] != udoc[:-1]]))
        lengths = np.diff(np.concatenate([first, [m]]))
        short = first[lengths < n]
        if len(short):
            short_len = lengths[lengths < n]
            gs = np.zeros(len(short), np.uint32)
            for k in range(n - 1):
                inside = k < short_len
                gs[inside] += units[short[inside] + k] * self.q[k]
            g[short] = gs
            same[short] = True
        return fmix32(g[same]), udoc[same]

    def _minhash(self, h: np.ndarray, hdoc: np.ndarray, sig: np.ndarray, has: np.ndarray) -> None:
        """sig[d] = min over shingles s of d of (a*h_s + b) mod 2**32, chunk by chunk."""
        m = len(h)
        if m == 0:
            return
        has[hdoc] = True
        chunk = self.cfg.chunk
        buf = self._buf
        for pos in range(0, m, chunk):
            end = min(pos + chunk, m)
            hc = h[pos:end]
            dc = hdoc[pos:end]
            b = buf[:, : end - pos]
            np.multiply(self.a, hc[None, :], out=b)
            b += self.b
            cuts = np.flatnonzero(np.concatenate([[True], dc[1:] != dc[:-1]]))
            mins = np.minimum.reduceat(b, cuts, axis=1)
            docs = dc[cuts]
            sig[docs] = np.minimum(sig[docs], mins.T)

    # ---------------------------------------------------------------- LSH
    def band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """(n, bands) uint64 band hashes; the low bit is 0 (1 marks exact-key records)."""
        cfg = self.cfg
        n = sig.shape[0]
        s = sig[:, : cfg.bands * cfg.rows].reshape(n, cfg.bands, cfg.rows).astype(U64)
        s *= self.band_mult
        hb = s.sum(axis=2, dtype=U64)
        hb += self.band_salt
        fmix64(hb)
        hb &= ~U64(1)
        return hb


def exact_bucket_hash(exact: np.ndarray) -> np.ndarray:
    """64-bit bucket hash of the exact key, low bit 1 (so exact and band records never share a bucket)."""
    h = exact[:, 1] ^ (exact[:, 0] * U64(0x9E3779B97F4A7C15))
    h = fmix64(h.copy())
    h |= U64(1)
    return h


def shingle_sets(h: np.ndarray, hdoc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per document (``hdoc`` in 0..n-1), the distinct values of ``h`` (uint32) in ascending order,
    documents one after the other; and the count per document. One sort of (doc << 32 | h)."""
    if len(h) == 0:
        return np.zeros(0, np.uint32), np.zeros(n, np.int64)
    key = (hdoc.astype(U64) << U64(32)) | h.astype(U64)
    key.sort()
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    key = key[first]
    counts = np.bincount((key >> U64(32)).astype(np.int64), minlength=n).astype(np.int64)
    return (key & U64(0xFFFFFFFF)).astype(np.uint32), counts


def segment_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(starts[i], starts[i] + lengths[i]) over i (int64), without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    before = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=before[1:])
    return np.repeat(np.asarray(starts, dtype=np.int64) - before, lengths) + np.arange(total, dtype=np.int64)


def exact_jaccard(flat: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Jaccard |A & B| / |A | B| of the set pairs (a[i], b[i]): set j is
    ``flat[offsets[j]:offsets[j + 1]]``, distinct values in ascending order (``shingle_sets``).

    Vectorized over all pairs: each side is written as one array of (i << 32 | value), ascending
    (pair after pair, each set sorted); the two arrays are concatenated and sorted with a stable
    sort, which for two sorted runs is a single linear merge (timsort), and an element of both sets
    is then an equal neighbour. Memory: about 40 bytes per element of the pairs' sets. Two empty
    sets have Jaccard 1."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    n = len(a)
    if n == 0:
        return np.zeros(0, np.float64)
    counts = np.diff(offsets).astype(np.int64)
    ca, cb = counts[a], counts[b]
    tag = np.arange(n, dtype=U64) << U64(32)
    keys = np.concatenate([np.repeat(tag, ca) | flat[segment_ranges(offsets[a], ca)], np.repeat(tag, cb) | flat[segment_ranges(offsets[b], cb)]])
    keys.sort(kind="stable")
    both = keys[1:][keys[1:] == keys[:-1]]
    inter = np.bincount((both >> U64(32)).astype(np.int64), minlength=n)
    union = ca + cb - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def signature_gate(num_perm: int, threshold: float, tail: float) -> int:
    """The largest c such that a pair of Jaccard ``threshold`` has fewer than c equal values out of
    ``num_perm`` with probability <= ``tail``, for independent permutations (the count is then
    Binomial(num_perm, threshold); a pair of higher Jaccard has an even smaller tail). A candidate
    with fewer equal values can be dropped before an exact check at that risk. 0: no gate."""
    if threshold >= 1.0:
        return num_perm
    lp, lq = math.log(threshold), math.log1p(-threshold)
    cdf, c = 0.0, 0
    for i in range(num_perm + 1):
        cdf += math.exp(math.lgamma(num_perm + 1) - math.lgamma(i + 1) - math.lgamma(num_perm - i + 1) + i * lp + (num_perm - i) * lq)
        if cdf > tail:
            break
        c = i + 1
    return c


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal MinHash values per row pair."""
    if len(sig_a) == 0:
        return np.zeros(0, np.float64)
    return (sig_a == sig_b).mean(axis=1)


def lsh_probability(s: np.ndarray | float, bands: int, rows: int):
    """Probability that two documents of Jaccard s share at least one band."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


def recall_bands_rows(threshold: float, num_perm: int, min_recall: float = 0.95) -> tuple[int, int] | None:
    """The (bands, rows), bands*rows = num_perm, with the most rows (fewest candidates) whose S-curve still
    makes a pair of Jaccard ``threshold`` a candidate with probability >= ``min_recall``. For use with
    verification, which removes the extra candidates below the threshold. None if no shape reaches it."""
    best = None
    for rows in range(1, num_perm + 1):
        if num_perm % rows == 0 and lsh_probability(threshold, num_perm // rows, rows) >= min_recall:
            best = (num_perm // rows, rows)
    return best


def optimal_bands_rows(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimizing the weighted false-positive area below
    ``threshold`` and false-negative area above it under the LSH S-curve (datasketch's rule).
    Ties go to the larger bands*rows; only divisors of num_perm are considered first."""
    xs_lo = np.linspace(0.0, threshold, 501)
    xs_hi = np.linspace(threshold, 1.0, 501)
    best, best_key = (1, num_perm), None
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        fp = np.trapezoid(lsh_probability(xs_lo, bands, rows), xs_lo)
        fn = np.trapezoid(1.0 - lsh_probability(xs_hi, bands, rows), xs_hi)
        err = fp_weight * fp + fn_weight * fn
        if best_key is None or err < best_key:
            best, best_key = (bands, rows), err
    return best


# -------------------------------------------------------------------- connected components
def connected_components(n: int, edge_chunks, dtype=None) -> tuple[np.ndarray, int, int]:
    """Label every node 0..n-1 with the smallest node of its component.

    ``edge_chunks`` is a callable returning an iterator of (u, v) int64 array pairs; it is called
    once per pass, so edges are streamed from disk and never all in memory. Memory: one array of
    n node labels (int32 when n < 2**31). Each pass hooks, for every edge whose endpoints have
    different roots, the larger root under the smaller one (``np.minimum.at``), which keeps
    ``parent[x] <= x`` (a forest, no cycles); pointer jumping then flattens the trees. It stops
    after a pass with no hook: every edge then joins nodes of one tree, whose root is its
    smallest node. Returns (labels, passes, hooks).
    """
    dt = dtype or (np.int32 if n < 2**31 - 1 else np.int64)
    parent = np.arange(n, dtype=dt)
    passes = hooks_total = 0
    while True:
        passes += 1
        hooks = 0
        for u, v in edge_chunks():
            if len(u) == 0:
                continue
            ru = _roots(parent, u.astype(dt, copy=False))
            rv = _roots(parent, v.astype(dt, copy=False))
            diff = ru != rv
            if not diff.any():
                continue
            lo = np.minimum(ru[diff], rv[diff])
            hi = np.maximum(ru[diff], rv[diff])
            np.minimum.at(parent, hi, lo)
            hooks += int(diff.sum())
        _flatten(parent)
        hooks_total += hooks
        if hooks == 0:
            return parent, passes, hooks_total


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    r = parent[x]
    while True:
        r2 = parent[r]
        if np.array_equal(r2, r):
            return r
        r = r2


def _flatten(parent: np.ndarray) -> None:
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return
        parent[:] = nxt


def lsh_threshold_midpoint(bands: int, rows: int) -> float:
    """Similarity at which the S-curve is steepest, about (1/bands)**(1/rows)."""
    return math.pow(1.0 / bands, 1.0 / rows)
