"""Python jieba's default segmentation (``jieba.lcut(block, HMM=True)``), vectorized with numpy
over a whole batch of blocks at once, with **the same words by construction**.

It runs jieba's own algorithm on jieba's own data -- the dictionary the process's jieba loaded
(``jieba.dt.FREQ``, ``jieba.dt.total``) and the HMM tables of ``jieba.finalseg`` -- and does the
same floating point operations in the same order, so every comparison, ties included, comes out
as in Python:

1. **DAG** (``Tokenizer.get_DAG``): the dictionary words (frequency > 0) starting at each
   position, found by walking a trie of the dictionary's keys (its words and their prefixes)
   one level at a time over all positions of the batch; a position where no word starts gets
   the one-character edge.
2. **Route** (``Tokenizer.calc``), right to left: ``route[i] = max((log(FREQ.get(w) or 1) -
   logtotal + route[x + 1], x) for x in DAG[i])``; on a tie the longer word wins, as with
   Python's tuple ``max``. ``log(freq) - logtotal`` is computed once per distinct frequency
   with ``math.log``, then added to ``route[x + 1]`` as Python does.
3. **Buffers** (``Tokenizer.__cut_DAG``): consecutive one-character route words form a buffer;
   a buffer of one character is a word, a buffer that is a dictionary word is split into its
   characters, any other goes to ``finalseg.cut``: its Han runs through the HMM, the rest split
   by ``finalseg.re_skip`` (``"1990"`` stays whole, ``"1-3"`` becomes ``1 - 3``). "Is a
   dictionary word" is read off the DAG, which holds it because jieba's ``FREQ`` has every
   prefix of every word (``gen_pfdict`` and ``add_word`` make it so).
4. **HMM** (``finalseg.viterbi``): ``V[t][y] = max((V[t-1][y0] + trans[y0][y] + emit[y][c], y0)
   for y0 in PrevStatus[y])``, ``MIN_FLOAT`` for a missing emission, ties to the later state
   letter (B < E < M < S) as Python's tuple ``max`` does; the last state is the larger of E
   and S (S on a tie). A word ends after each E or S.

Vectorization: the route, the path and the HMM are sequential within a block, so they loop
over the offset within a block, all blocks at once. The blocks' characters are laid out
transposed -- row ``d`` holds the ``d``-th character from the end of every block longer than
``d``, blocks sorted by decreasing length -- so each step reads contiguous slices (and the
character after ``(d, r)`` is ``(d - 1, r)``). Blocks longer than :data:`MAX_BLOCK` characters
(rare in Chinese, where punctuation ends a block) go to Python jieba itself, which keeps those
loops short.

The numpy model of the dictionary is cached in a file next to jieba's own cache (see
:func:`model`); with it, Python jieba's dictionary is not loaded at all.

``tests/test_quality.py`` compares the two segmenters on every distinct block of the shared
Chinese corpus (and the signals with the implementation before this module);
``benchmarks/bench_quality.py --compare 323f97b`` checks the stage's decisions on its corpus.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from itertools import accumulate
from typing import Sequence

import numpy as np

from pipeline.text.quality.ragged import excl_cumsum, segment_offsets

MAX_BLOCK = 400  # longer blocks go to Python jieba
HAN_LO, HAN_HI = 0x4E00, 0x9FD5  # finalseg.re_han: [\u4E00-\u9FD5]
_B, _E, _M, _S = 0, 1, 2, 3  # states in letter order: "the larger index" is Python's tie-break
_STATES = "BEMS"
_NEG_INF = -math.inf


@lru_cache(maxsize=1)
def python_jieba():
    """The jieba module, initialized (its dictionary loaded), quiet."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _slot(key: np.ndarray, bits: int) -> np.ndarray:
    """Fibonacci hashing of non-negative int64 keys into a table of 2**bits slots."""
    h = np.multiply(key.view(np.uint64), _GOLDEN)
    h >>= np.uint64(64 - bits)
    return h.view(np.int64)


class Model:
    """jieba's dictionary as a trie in numpy arrays, and the HMM tables."""

    def __init__(self, freq: dict[str, int], total: int, start_p: dict, trans_p: dict, emit_p: dict, min_float: float, prev_status: dict):
        import polars as pl

        keys = pl.Series("key", list(freq), dtype=pl.String)
        counts = np.fromiter(freq.values(), dtype=np.int64, count=len(freq))
        if len(keys) >= 1 << 20 or "\0" in freq:
            raise ValueError("jieba dictionary too large for jieba_np's trie packing, or with a NUL key")
        lens = keys.str.len_chars().to_numpy().astype(np.int64)
        codes = np.frombuffer("".join(freq).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ends = np.cumsum(lens)
        # id of each one-character key by code point; code points past the table read its last slot (-1)
        self.first = np.full(max(int(codes.max(initial=0)), HAN_HI) + 2, -1, dtype=np.int64)
        one = np.flatnonzero(lens == 1)
        self.first[codes[ends[one] - 1]] = one
        # a key's parent is the key without its last character; a key whose prefix is missing
        # is unreachable for get_DAG too and is left out
        frame = pl.DataFrame({"key": keys, "id": np.arange(len(keys))})
        parent = (
            frame.filter(pl.col("key").str.len_chars() > 1)
            .with_columns(prefix=pl.col("key").str.slice(0, pl.col("key").str.len_chars() - 1))
            .join(frame.rename({"key": "prefix", "id": "parent"}), on="prefix", how="inner")
        )
        child = parent.get_column("id").to_numpy().astype(np.int64)
        self.max_len = int(lens.max(initial=1))
        # (parent id, next character) -> child id: an open-addressing table, load <= 1/2, each
        # slot packing key << 20 | child (keys < 2**40, ids < 2**20), -1 when empty
        tkeys = parent.get_column("parent").to_numpy().astype(np.int64) << 21 | codes[ends[child] - 1]
        self.bits = max(4, (4 * max(len(tkeys), 1) - 1).bit_length())
        self.table = _build_table(tkeys, child, self.bits)
        # Tokenizer.calc: log(FREQ.get(word) or 1) - logtotal, evaluated by math.log as Python
        # does (once per distinct frequency)
        logtotal = math.log(total)
        distinct, inverse = np.unique(counts, return_inverse=True)
        terms = np.array([(math.log(f) - logtotal) if f else _NEG_INF for f in distinct.tolist()], dtype=np.float64)
        self.term = terms[inverse]
        self.single_term = math.log(1) - logtotal  # a position where no word starts
        self.start = np.array([start_p[s] for s in _STATES], dtype=np.float64)
        self.trans = np.array([[trans_p[a].get(b, min_float) for b in _STATES] for a in _STATES], dtype=np.float64)
        self.emit = np.full((4, HAN_HI - HAN_LO + 1), min_float, dtype=np.float64)
        for y, s in enumerate(_STATES):
            for c, p in emit_p[s].items():
                if HAN_LO <= ord(c) <= HAN_HI:
                    self.emit[y, ord(c) - HAN_LO] = p
        self.prev = [tuple(sorted(_STATES.index(s) for s in prev_status[y])) for y in _STATES]  # ascending

    _ARRAYS = ("first", "table", "term", "start", "trans", "emit", "prev", "scalars")

    def save(self, path: str) -> None:
        """Write the arrays to ``path`` (.npz) atomically (several processes may race)."""
        import tempfile

        arrays = {name: getattr(self, name) for name in self._ARRAYS[:-2]}
        arrays["prev"] = np.asarray(self.prev, dtype=np.int64)
        arrays["scalars"] = np.asarray([self.max_len, self.bits, self.single_term], dtype=np.float64)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str) -> "Model":
        m = cls.__new__(cls)
        with np.load(path, allow_pickle=False) as z:
            for name in cls._ARRAYS[:-2]:
                setattr(m, name, z[name])
            m.prev = [tuple(int(x) for x in row) for row in z["prev"]]
            max_len, bits, single_term = z["scalars"].tolist()
        m.max_len, m.bits, m.single_term = int(max_len), int(bits), float(single_term)
        return m

    def lookup_first(self, codes: np.ndarray) -> np.ndarray:
        return self.first[np.minimum(codes, len(self.first) - 1)]

    def lookup_child(self, parent: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Child id of each (parent id, next character), -1 where the trie has none."""
        key = parent << 21
        key |= codes
        slot = _slot(key, self.bits)
        entry = self.table[slot]
        found = (entry >> 20) == key
        out = np.where(found, entry & 0xFFFFF, -1)
        idx = np.flatnonzero(~found & (entry >= 0))  # occupied by another key: probe on
        key, slot = key[idx], slot[idx] + 1
        while len(idx):  # linear probing until the key or an empty slot (the table ends with one)
            entry = self.table[slot]
            hit = (entry >> 20) == key
            out[idx[hit]] = entry[hit] & 0xFFFFF
            go = ~hit & (entry >= 0)
            idx, key, slot = idx[go], key[go], slot[go] + 1
        return out


def _build_table(keys: np.ndarray, vals: np.ndarray, bits: int) -> np.ndarray:
    """Linear probing without wrap-around: keys sorted by home slot take the first free slot at
    or after it, ``pos[i] = max(home[i], pos[i - 1] + 1)``, a running maximum; the table gets
    room past its last home slot and always ends with an empty slot."""
    home = _slot(keys, bits)
    order = np.argsort(home, kind="stable")
    i = np.arange(len(keys))
    pos = np.maximum.accumulate(home[order] - i) + i if len(keys) else i
    table = np.full(max((1 << bits), int(pos.max(initial=0)) + 1) + 1, -1, dtype=np.int64)
    table[pos] = keys[order] << 20 | vals[order]
    return table


_CACHE_FORMAT = "1"


def _cache_path() -> str | None:
    """Where the model of jieba's dictionary is cached (next to jieba's own cache), named by a
    digest of everything it is built from: the dictionary file's bytes, the HMM tables' source
    files, jieba's version and this format. None when jieba was initialized in this process
    already (its dictionary may have been changed since: build from it directly)."""
    import hashlib
    import tempfile

    import jieba
    from jieba import finalseg

    if jieba.dt.initialized:
        return None
    h = hashlib.sha256(f"{_CACHE_FORMAT} {jieba.__version__} {np.__version__}".encode())
    try:
        with jieba.dt.get_dict_file() as fh:
            h.update(fh.read())
        for name in ("prob_start", "prob_trans", "prob_emit"):
            with open(os.path.join(os.path.dirname(finalseg.__file__), f"{name}.py"), "rb") as fh:
                h.update(fh.read())
    except OSError:
        return None
    return os.path.join(jieba.dt.tmp_dir or tempfile.gettempdir(), f"grist-jieba-np-{h.hexdigest()[:20]}.npz")


@lru_cache(maxsize=1)
def model() -> Model:
    """The model of this process's jieba dictionary, from the cache file when there is one (then
    Python jieba's own dictionary is not even loaded), else built from ``jieba.dt`` and cached."""
    from jieba import finalseg

    if finalseg.Force_Split_Words:
        raise RuntimeError("jieba.finalseg.Force_Split_Words is set (jieba.del_word): jieba_np does not reproduce it")
    path = _cache_path()
    if path is not None:
        try:
            if hasattr(os, "getuid") and os.stat(path).st_uid != os.getuid():
                raise OSError("cache file of another user")  # in a shared temporary directory
            return Model.load(path)
        except (OSError, ValueError, KeyError):
            pass
    jieba = python_jieba()
    m = Model(jieba.dt.FREQ, jieba.dt.total, finalseg.start_P, finalseg.trans_P, finalseg.emit_P, finalseg.MIN_FLOAT, finalseg.PrevStatus)
    if path is not None:
        try:
            m.save(path)
        except OSError:
            pass
    return m


def _active_counts(lens_desc: np.ndarray) -> np.ndarray:
    """``out[d]`` = how many of the (decreasing) lengths exceed ``d``, for d = 0 .. max + 1."""
    return np.searchsorted(-lens_desc, -np.arange(int(lens_desc[0]) + 2), side="left")


def segment(blocks: Sequence[str]) -> list[str]:
    """Each block's jieba words joined by single spaces (a block is a run of jieba's block
    characters ``[\\u4E00-\\u9FD5a-zA-Z0-9+#&._%-]``, so no word holds a space)."""
    blocks = list(blocks)
    if not blocks:
        return []
    codes = np.frombuffer("".join(blocks).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    lens = np.fromiter(map(len, blocks), dtype=np.int64, count=len(blocks))
    starts = segment_codes(codes, lens)
    bstart = excl_cumsum(lens)
    starts[bstart[lens > 0]] = False
    space = np.flatnonzero(starts)
    # a newline between blocks (before any space at the same place: none, spaces are inside), a
    # space between words
    where = np.concatenate([bstart[1:], space])
    what = np.concatenate([np.full(len(blocks) - 1, 0x0A, dtype=np.int64), np.full(len(space), 0x20, dtype=np.int64)])
    out = np.insert(codes, where, what)
    return out.astype(np.uint32).tobytes().decode("utf-32-le").split("\n")


def segment_codes(codes: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """``codes``: the code points (int64) of blocks laid end to end, ``lens`` their lengths.
    Returns a boolean array over ``codes``: True where a jieba word starts."""
    codes = np.asarray(codes, dtype=np.int64)
    lens = np.asarray(lens, dtype=np.int64)
    is_start = np.zeros(len(codes), dtype=bool)
    bstart = excl_cumsum(lens)
    is_start[bstart[lens > 0]] = True
    long = np.flatnonzero(lens > MAX_BLOCK)
    if len(long):
        jieba = python_jieba()
        for b in long.tolist():
            s = int(bstart[b])
            text = codes[s : s + lens[b]].astype(np.uint32).tobytes().decode("utf-32-le")
            off = np.cumsum([0] + [len(w) for w in jieba.lcut(text, HMM=True)][:-1])
            is_start[s + off] = True
    sel = np.flatnonzero((lens >= 2) & (lens <= MAX_BLOCK))
    if len(sel):
        _segment_short(model(), codes, bstart[sel], lens[sel], is_start)
    return is_start


def _segment_short(m: Model, codes: np.ndarray, bstart: np.ndarray, lens: np.ndarray, is_start: np.ndarray) -> None:
    # transposed layout: row d (offset d from a block's end) holds one entry per block longer
    # than d, blocks by decreasing length; row -1 is a sentinel row (code 0: no key, route 0)
    order = np.argsort(-lens, kind="stable")
    L_s, E_s = lens[order], (bstart + lens)[order]
    n_blocks, max_len = len(order), int(L_s[0])
    active = _active_counts(L_s)  # active[d]: blocks with a character at offset d
    row = np.zeros(max_len + 2, dtype=np.int64)  # row[d + 1]: first index of row d
    row[1] = n_blocks
    np.cumsum(active[:max_len], out=row[2:])
    row[2:] += n_blocks
    n_t = int(row[max_len + 1])
    d_of = np.repeat(np.arange(max_len), active[:max_len])
    r_of = np.arange(n_t - n_blocks) - np.repeat(row[1 : max_len + 1] - n_blocks, active[:max_len])
    tpos = E_s[r_of] - 1 - d_of  # text position of each real entry
    ct = np.zeros(n_t, dtype=np.int64)
    ct[n_blocks:] = codes[tpos]

    # 1. DAG: level 1 and 2 edges as dense arrays (term or -inf), longer ones as sorted lists
    nid = m.lookup_first(ct)  # the sentinel row's code 0 is no key
    has_edge = np.zeros(n_t, dtype=bool)
    ok = nid >= 0
    term1 = np.where(ok, m.term[nid], _NEG_INF)
    pos = np.flatnonzero(ok)
    nid, pd, pr = nid[pos], d_of[pos - n_blocks], r_of[pos - n_blocks]
    term2 = np.full(n_t, _NEG_INF)
    longer: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    level = 1
    while len(pos) and level < m.max_len:
        level += 1
        nxt = row[pd - level + 2] + pr  # the character at offset d - (level - 1)
        nid = m.lookup_child(nid, ct[nxt])
        keep = nid >= 0
        pos, nid, pd, pr = pos[keep], nid[keep], pd[keep], pr[keep]
        t = m.term[nid]
        w = t > _NEG_INF
        if level == 2:
            term2[pos[w]] = t[w]
        elif w.any():
            longer[level] = (pos[w], t[w])
        has_edge[pos[w]] = True
    has_edge |= term1 > _NEG_INF
    lone = ~has_edge
    lone[:n_blocks] = False
    term1[lone] = m.single_term  # get_DAG: no word starts here -> [k]
    bounds = {lv: np.searchsorted(p, row) for lv, (p, _) in longer.items()}

    # 2. route, right to left, all blocks at once
    route = np.zeros(n_t, dtype=np.float64)
    choice = np.zeros(n_t, dtype=np.int64)  # length of the chosen word
    for d in range(max_len):
        a, k = int(row[d + 1]), int(active[d])
        nb = int(row[d])  # row d - 1: one character further
        best = term1[a : a + k] + route[nb : nb + k]
        ch = np.ones(k, dtype=np.int64)
        if d >= 1:
            nb = int(row[d - 1])
            v = term2[a : a + k] + route[nb : nb + k]
            take = v >= best  # a tie goes to the longer word
            best = np.where(take, v, best)
            ch[take] = 2
        for lv, (p, t) in longer.items():
            if lv > d + 1:
                continue
            i0, i1 = bounds[lv][d + 1], bounds[lv][d + 2]
            if i0 == i1:
                continue
            r = p[i0:i1] - a
            v = t[i0:i1] + route[row[d - lv + 1] + r]
            take = v >= best[r]
            best[r[take]] = v[take]
            ch[r[take]] = lv
        route[a : a + k] = best
        choice[a : a + k] = ch

    # the path: from each block's first character, word after word
    on = np.zeros(n_t, dtype=bool)
    on[row[L_s] + np.arange(n_blocks)] = True  # offset len - 1: the first character
    for d in range(max_len - 1, -1, -1):
        a = int(row[d + 1])
        o = np.flatnonzero(on[a : a + active[d]])
        on[row[d - choice[a + o] + 1] + o] = True

    # 3. buffers: runs of one-character route words. In the transposed layout the character
    # after (d, r) in the text is (d - 1, r): a run is vertical. run[t]: singles from t on.
    single = on & (choice == 1)
    run = np.zeros(n_t, dtype=np.int64)
    head = np.zeros(n_t, dtype=bool)  # a single whose previous character is not one
    for d in range(max_len):
        a, k, nb = int(row[d + 1]), int(active[d]), int(row[d])
        run[a : a + k] = np.where(single[a : a + k], run[nb : nb + k] + 1, 0)
        if d:  # row d - 1's previous characters are in row d
            head[nb : nb + k] = single[nb : nb + k] & ~single[a : a + k]
    first_char = row[L_s] + np.arange(n_blocks)  # a block's first character has no previous one
    head[first_char] = single[first_char]
    bs = np.flatnonzero(head & (run >= 2))
    if len(bs):
        bl = run[bs]
        # FREQ.get(buf) > 0 exactly when the DAG has the edge (start, start + len - 1)
        in_dict = (bl == 2) & (term2[bs] > _NEG_INF)
        for lv, (p, _) in longer.items():
            f = np.flatnonzero(bl == lv)
            if len(f):
                j = np.minimum(np.searchsorted(p, bs[f]), len(p) - 1)
                in_dict[f] = p[j] == bs[f]
        # dictionary buffers: every character is a word, as marked; the others go to finalseg.cut
        hb, hl = bs[~in_dict], bl[~in_dict]
        if len(hb):
            off = segment_offsets(hl)
            d0 = np.repeat(d_of[hb - n_blocks], hl)
            bpos = row[d0 - off + 1] + np.repeat(r_of[hb - n_blocks], hl)  # the buffers' characters, in text order
            on[bpos] = False
            c = ct[bpos]
            han = (c >= HAN_LO) & (c <= HAN_HI)
            first_in_buf = off == 0
            prev_han = np.r_[False, han[:-1]]
            han_start = han & (first_in_buf | ~prev_han)  # finalseg.re_han splits the buffer
            other_start = ~han & (first_in_buf | prev_han)
            _viterbi(m, bpos, c, han, han_start, on)
            _skip_pieces(bpos, c, han, other_start, on)
    is_start[tpos] = on[n_blocks:]


def _runs(starts_mask: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of ``member`` elements that begin where ``starts_mask`` is set: (first index, length)."""
    idx = np.flatnonzero(member)
    st = starts_mask[idx]
    starts = idx[st]
    if not len(starts):
        return starts, starts
    return starts, np.bincount(np.cumsum(st) - 1, minlength=len(starts))


def _viterbi(m: Model, bpos: np.ndarray, c: np.ndarray, han: np.ndarray, han_start: np.ndarray, is_start: np.ndarray) -> None:
    """finalseg.viterbi + __cut on every Han run of the buffers at once (a run is contiguous in
    ``bpos``); marks where its words start."""
    rs, rl = _runs(han_start, han)
    if not len(rs):
        return
    by_len = np.argsort(-rl, kind="stable")
    rs, rl = rs[by_len], rl[by_len]
    max_len = int(rl[0])
    active = _active_counts(rl)  # active[t]: runs with a character at offset t
    row0 = excl_cumsum(active[:max_len])  # rows of offset t: row0[t] .. row0[t] + active[t]
    n_rows = int(active[:max_len].sum())
    back = np.zeros((n_rows, 4), dtype=np.int8)
    em = m.emit
    final = np.zeros(len(rs), dtype=np.int64)
    V = m.start[:, None] + em[:, c[rs] - HAN_LO]  # start_p[y] + emit_p[y].get(obs[0], MIN_FLOAT)
    for t in range(max_len):
        k = int(active[t])
        if t:
            V = V[:, :k]
            cc = c[rs[:k] + t] - HAN_LO
            newV = np.empty_like(V)
            bt = back[row0[t] : row0[t] + k]
            for y in range(4):
                a, b = m.prev[y]  # a < b in letter order
                e_y = em[y, cc]
                ca = V[a] + m.trans[a, y] + e_y  # (V[t-1][y0] + trans_p[y0][y]) + em_p
                cb = V[b] + m.trans[b, y] + e_y
                take_b = cb >= ca  # a tie goes to the later letter
                newV[y] = np.where(take_b, cb, ca)
                bt[:, y] = np.where(take_b, b, a)
            V = newV
        # runs whose last character is at offset t: max((V[E], 'E'), (V[S], 'S'))
        k_next = int(active[t + 1])
        if k_next < k:
            final[k_next:k] = np.where(V[_S, k_next:k] >= V[_E, k_next:k], _S, _E)
    # back-track, all runs at once
    state = final.copy()
    label = np.zeros(n_rows, dtype=np.int8)
    for t in range(max_len - 1, -1, -1):
        k, k_after = int(active[t]), int(active[t + 1])
        if k_after:  # runs going on at t + 1 follow their pointer; the others start from final
            state[:k_after] = back[row0[t + 1] + np.arange(k_after), state[:k_after]]
        label[row0[t] : row0[t] + k] = state[:k]
    # a word starts at the run's start and right after each E or S
    t_of_row = np.repeat(np.arange(max_len), active[:max_len])
    run_of_row = np.arange(n_rows) - np.repeat(row0, active[:max_len])
    at = rs[run_of_row] + t_of_row  # index into bpos
    nxt = at[(label == _E) | (label == _S)] + 1
    nxt = nxt[nxt < len(bpos)]
    nxt = nxt[han[nxt] & ~han_start[nxt]]  # still inside the same run
    is_start[bpos[rs]] = True
    is_start[bpos[nxt]] = True


_skip_cache: dict[str, tuple[int, ...]] = {}


def _skip_pieces(bpos: np.ndarray, c: np.ndarray, han: np.ndarray, other_start: np.ndarray, is_start: np.ndarray) -> None:
    """finalseg.cut on the buffers' non-Han runs (contiguous in ``bpos``, code points ``c``):
    ``re_skip.split`` pieces. A run of letters and digits is one piece (a number, mostly); the
    others are split by jieba's own regex once per distinct run."""
    starts, lengths = _runs(other_start, ~han)
    if not len(starts):
        return
    is_start[bpos[starts]] = True
    alnum = ((c >= 48) & (c <= 57)) | ((c >= 65) & (c <= 90)) | ((c >= 97) & (c <= 122))
    other = np.r_[0, np.cumsum(~alnum)]
    mixed = other[starts + lengths] > other[starts]
    starts, lengths = starts[mixed], lengths[mixed]
    if not len(starts):
        return
    from jieba import finalseg

    if len(_skip_cache) > 100_000:
        _skip_cache.clear()
    # runs of at most 8 ASCII characters pack exactly into an int64 key (7 bits each + length)
    wide = np.r_[0, np.cumsum(c >= 128)]
    small = (lengths <= 8) & (wide[starts + lengths] == wide[starts])
    key = lengths.copy()
    sm = np.flatnonzero(small)
    for j in range(8):
        has = sm[lengths[sm] > j]
        key[has] |= c[starts[has] + j] << (4 + 7 * j)
    uniq, inverse = np.unique(np.where(small, key, -1 - np.arange(len(starts))), return_inverse=True)
    rep = np.zeros(len(uniq), dtype=np.int64)
    rep[inverse] = np.arange(len(starts))
    offs, counts = [], []
    for s, n in zip(starts[rep].tolist(), lengths[rep].tolist()):
        run = c[s : s + n].astype(np.uint32).tobytes().decode("utf-32-le")
        rel = _skip_cache.get(run)
        if rel is None:
            pieces = [x for x in finalseg.re_skip.split(run) if x]
            rel = _skip_cache[run] = (0, *accumulate(len(x) for x in pieces[:-1]))
        offs.extend(rel)
        counts.append(len(rel))
    counts = np.asarray(counts, dtype=np.int64)
    rel_all = np.asarray(offs, dtype=np.int64)
    # every run gets its distinct run's piece offsets
    per = counts[inverse]
    k = np.repeat(excl_cumsum(counts)[inverse], per) + segment_offsets(per)
    is_start[bpos[np.repeat(starts, per) + rel_all[k]]] = True
