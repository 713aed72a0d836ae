"""A fast quality classifier: logistic regression over hashed n-gram features (no pipeline logic).

DCLM-style "is this like the reference text?" scorer. Measured against fastText (the DCLM
choice) on the shared corpora (``benchmarks/bench_classifier.py``, docs/quality-classifier.md)
it is as accurate on held-out text and faster to score, with numpy/scipy only.

Features (all vectorized over a batch of documents, code points in numpy):

- text is lower-cased, whitespace runs become one space, and it is cut at ``max_chars``;
- a document is *CJK* when at least ``cjk_min_fraction`` of its non-space characters are
  Han/Kana/Hangul; CJK documents get ``zh`` features: character n-grams
  (``char_ngrams``, default 1-3) or jieba words and word bigrams (``zh: jieba``);
  the others word uni..``word_ngrams``-grams (words: runs of letters and digits);
- every n-gram is hashed (a polynomial hash of its code points, computed for every window at
  once from prefix sums, then a 64-bit finalizer) into ``2**dim_bits`` buckets; the value of
  a bucket is ``log1p(count)``, and each row is L2-normalized.

The hash depends only on the code points and the seed (not on Python's or polars' hashing),
so a saved model scores the same on any machine and version.

Model: ``p = sigmoid(x . w + b)``, trained by L-BFGS (numpy) on the mean log loss with class weights
that balance the two classes, plus ``l2 / 2 * |w|^2``. Deterministic.

Saved as ``weights.npz`` (``w`` float32, ``b``; loaded with ``allow_pickle=False``) and
``model_card.json`` (the feature configuration, the metrics and whatever the caller adds).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

FORMAT = "grist-hashed-logreg"
FORMAT_VERSION = 1
WEIGHTS = "weights.npz"
CARD = "model_card.json"

_M64 = (1 << 64) - 1
_P = np.uint64(0x100000001B3)  # odd: invertible mod 2**64, so window hashes come from prefix sums
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_BIGRAM = np.uint64(0x9E3779B97F4A7C15)
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"
BATCH_CHARS = 2_000_000  # characters hashed at once by featurize
_JIEBA_BLOCK = r"[\u4E00-\u9FD5a-zA-Z0-9+#&._%-]+"  # jieba's block characters (pipeline.text.quality.jieba_np)


@dataclass(frozen=True)
class FeatureConfig:
    """How text becomes a feature vector. Saved with the model: scoring uses the training's."""

    zh: Literal["chars", "jieba"] = "chars"
    char_ngrams: tuple[int, int] = (1, 3)
    word_ngrams: int = 2
    dim_bits: int = 20
    max_chars: int = 5_000
    cjk_min_fraction: float = 0.3
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["char_ngrams"] = list(self.char_ngrams)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        d = dict(d)
        d["char_ngrams"] = tuple(d["char_ngrams"])
        return cls(**d)


# ------------------------------------------------------------------------------------ hashing
def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: every input bit reaches every output bit."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB93CA85A53E3)
    return h ^ (h >> np.uint64(33))


class _Prefix:
    """Polynomial hashes of any span [s, e) of a code point array, all spans at once:
    ``H = (S[e] - S[s]) * P^-s`` with ``S[j] = sum_{t<j} (c_t + 1) P^t`` (mod 2**64)."""

    def __init__(self, codes: np.ndarray):
        n = len(codes)
        pw = np.empty(n, np.uint64)
        inv = np.empty(n, np.uint64)
        if n:
            pw[0] = inv[0] = 1
            pw[1:] = _P
            inv[1:] = _P_INV
            with np.errstate(over="ignore"):
                pw = np.cumprod(pw, dtype=np.uint64)
                inv = np.cumprod(inv, dtype=np.uint64)
        self.inv = inv
        self.S = np.zeros(n + 1, np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum((codes.astype(np.uint64) + np.uint64(1)) * pw, dtype=np.uint64, out=self.S[1:])

    def span(self, s: np.ndarray, e: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (self.S[e] - self.S[s]) * self.inv[s]


def _codes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of the texts end to end (uint32) and each text's start offset (n + 1)."""
    joined = "".join(texts).encode("utf-32-le")
    codes = np.frombuffer(joined, dtype=np.uint32)
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    starts = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(lens, out=starts[1:])
    return codes, starts


def _salt(kind: int, n: int, seed: int) -> np.uint64:
    return np.uint64((((kind * 0x1F3D5B79) ^ (n * 0x27D4EB2F) ^ (seed * 0x165667B1)) * 0x9E3779B97F4A7C15) & _M64)


def _char_ngrams(texts: Sequence[str], lo: int, hi: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, hash) of every character n-gram, lo <= n <= hi, never across documents."""
    codes, starts = _codes(texts)
    pre = _Prefix(codes)
    m = len(codes)
    doc_of = np.repeat(np.arange(len(texts), dtype=np.int32), np.diff(starts))
    # characters left in the document from each position (the n-gram starting there fits if >= n)
    left = (starts[1:].astype(np.int64)[doc_of] - np.arange(m)).astype(np.int32)
    rows, hashes = [], []
    for n in range(lo, hi + 1):
        if m < n:
            break
        ok = left[: m - n + 1] >= n
        with np.errstate(over="ignore"):  # every window at once: slices, no gathers
            h = (pre.S[n:] - pre.S[: m - n + 1]) * pre.inv[: m - n + 1]
            hashes.append(_fmix(h[ok] ^ _salt(1, n, seed)))
        rows.append(doc_of[: m - n + 1][ok])
    return np.concatenate(rows) if rows else np.zeros(0, np.int64), np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)


def _word_ngrams(codes: np.ndarray, doc_of: np.ndarray, wstart: np.ndarray, wend: np.ndarray, n_max: int, seed: int, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, hash) of word uni..n_max-grams; words are spans [wstart, wend) of ``codes`` in order,
    ``doc_of`` their document. An n-gram never crosses documents."""
    pre = _Prefix(codes)
    w = _fmix(pre.span(wstart, wend))
    rows, hashes = [doc_of], [_fmix(w ^ _salt(kind, 1, seed))]
    g = w
    for n in range(2, n_max + 1):
        if len(w) < n:
            break
        with np.errstate(over="ignore"):
            g = _fmix(g[:-1] * _BIGRAM + w[n - 1 :])
        same = doc_of[n - 1 :] == doc_of[: len(doc_of) - n + 1]
        rows.append(doc_of[: len(g)][same])
        hashes.append(_fmix(g[same] ^ _salt(kind, n, seed)))
    return np.concatenate(rows), np.concatenate(hashes)


def _words(texts: Sequence[str], n_max: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Words: maximal runs of letters and digits (the text is already lower-cased)."""
    norm = pl.Series(texts, dtype=pl.String).str.replace_all(r"[^\p{L}\p{N}]+", " ").to_list()
    codes, starts = _codes(norm)
    is_word = codes != 0x20
    prev = np.concatenate([[False], is_word[:-1]])
    nxt = np.concatenate([is_word[1:], [False]])
    boundary = np.zeros(len(codes), bool)
    boundary[starts[:-1][starts[:-1] < len(codes)]] = True  # a document's first character starts a word
    last = np.zeros(len(codes), bool)
    ends = starts[1:] - 1
    last[ends[(ends >= 0) & (np.diff(starts) > 0)]] = True
    ws = np.flatnonzero(is_word & (~prev | boundary))
    we = np.flatnonzero(is_word & (~nxt | last)) + 1
    doc_of = np.searchsorted(starts, ws, side="right") - 1
    return _word_ngrams(codes, doc_of, ws, we, n_max, seed, kind=2)


def _jieba_words(texts: Sequence[str], n_max: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """jieba words (vectorized segmenter, the same words as Python jieba) of jieba's blocks."""
    from pipeline.text.quality import jieba_np

    blocks = pl.Series(texts, dtype=pl.String).str.extract_all(_JIEBA_BLOCK)
    counts = blocks.list.len().fill_null(0).to_numpy()
    flat = blocks.explode().drop_nulls().to_list()
    doc_of_block = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    if not flat:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    codes, bstarts = _codes(flat)
    is_start = jieba_np.segment_codes(codes.astype(np.int64), np.diff(bstarts))
    ws = np.flatnonzero(is_start)
    we = np.append(ws[1:], len(codes))
    block_of = np.searchsorted(bstarts, ws, side="right") - 1
    we = np.minimum(we, bstarts[1:][block_of])  # a word never runs past its block
    return _word_ngrams(codes, doc_of_block[block_of], ws, we, n_max, seed, kind=3)


def normalize(texts: Sequence[str | None], max_chars: int) -> pl.Series:
    s = pl.Series(list(texts), dtype=pl.String).fill_null("")
    return s.str.slice(0, max_chars).str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def cjk_mask(norm: pl.Series, min_fraction: float) -> np.ndarray:
    cjk = norm.str.count_matches(_CJK)
    nonspace = norm.str.len_chars() - norm.str.count_matches(" ")
    return ((cjk >= min_fraction * nonspace) & (cjk > 0)).to_numpy()


def featurize(texts: Sequence[str | None], cfg: FeatureConfig, batch_chars: int = BATCH_CHARS) -> sp.csr_matrix:
    """Documents -> hashed feature rows (n x 2**dim_bits, float32, rows L2-normalized), hashed
    ``batch_chars`` characters at a time (the n-gram arrays take ~25 bytes per character and
    n-gram length; the result ~8 bytes per distinct n-gram of a document)."""
    n = len(texts)
    dim = 1 << cfg.dim_bits
    if n == 0:
        return sp.csr_matrix((0, dim), dtype=np.float32)
    norm = normalize(texts, cfg.max_chars)
    ends = np.cumsum(norm.str.len_chars().fill_null(0).to_numpy().astype(np.int64))
    if ends[-1] <= batch_chars:
        return _featurize(norm, cfg)
    cuts = np.unique(np.searchsorted(ends, np.arange(batch_chars, ends[-1], batch_chars), side="left") + 1)
    bounds = [0, *[int(c) for c in cuts if 0 < c < n], n]
    return sp.vstack([_featurize(norm.slice(a, b - a), cfg) for a, b in zip(bounds[:-1], bounds[1:])], format="csr", dtype=np.float32)


def _featurize(norm: pl.Series, cfg: FeatureConfig) -> sp.csr_matrix:
    n = len(norm)
    dim = 1 << cfg.dim_bits
    zh = cjk_mask(norm, cfg.cjk_min_fraction)
    rows, hashes = [], []
    for sel, kind in ((np.flatnonzero(zh), cfg.zh), (np.flatnonzero(~zh), "words")):
        if not len(sel):
            continue
        sub = norm.gather(sel).to_list()
        if kind == "chars":
            r, h = _char_ngrams(sub, cfg.char_ngrams[0], cfg.char_ngrams[1], cfg.seed)
        elif kind == "jieba":
            r, h = _jieba_words(sub, cfg.word_ngrams, cfg.seed)
        else:
            r, h = _words(sub, cfg.word_ngrams, cfg.seed)
        rows.append(sel[r])
        hashes.append(h)
    r = np.concatenate(rows)
    col = (np.concatenate(hashes) >> np.uint64(64 - cfg.dim_bits)).astype(np.int64)
    x = sp.csr_matrix((np.ones(len(r), np.float32), (r, col)), shape=(n, dim), dtype=np.float32)
    x.sum_duplicates()
    np.log1p(x.data, out=x.data)
    counts = np.diff(x.indptr)
    full = np.flatnonzero(counts)
    norms = np.ones(n, np.float32)
    if len(full):  # the starts of the non-empty rows increase strictly: reduceat sums exactly each row
        norms[full] = np.sqrt(np.add.reduceat(np.square(x.data), x.indptr[full]))
    x.data /= np.repeat(norms, counts)
    return x


# ------------------------------------------------------------------------------------ the model
@dataclass
class Model:
    features: FeatureConfig
    w: np.ndarray  # float32, 2**dim_bits
    b: float
    card: dict = field(default_factory=dict)

    def decision(self, x: sp.csr_matrix) -> np.ndarray:
        return np.asarray(x @ self.w, dtype=np.float64) + self.b

    def predict_proba(self, texts: Sequence[str | None], batch: int = 4096) -> np.ndarray:
        """Probability of the positive class per document, ``batch`` documents at a time (and at
        most ``BATCH_CHARS`` characters hashed at once)."""
        out = np.empty(len(texts), np.float64)
        for i in range(0, len(texts), batch):
            out[i : i + batch] = sigmoid(self.decision(featurize(texts[i : i + batch], self.features)))
        return out

    def sha256(self) -> str:
        """Identity of the model: its weights and its feature configuration (not the file bytes,
        which carry zip timestamps)."""
        h = hashlib.sha256()
        h.update(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "features": self.features.to_dict()}, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.w, dtype="<f4").tobytes())
        h.update(np.float64(self.b).tobytes())
        return h.hexdigest()

    def save(self, folder: Path) -> None:
        """``weights.npz`` + ``model_card.json`` (written to temporaries, then renamed)."""
        import os

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, w=self.w.astype("<f4"), b=np.array([self.b], "<f8"))
        os.replace(tmp, folder / WEIGHTS)
        card = {"format": FORMAT, "version": FORMAT_VERSION, "features": self.features.to_dict(), "sha256": self.sha256(), **self.card}
        tmp = folder / f".{CARD}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(card, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / CARD)


class ModelFileError(ValueError):
    """A model folder that is missing, incomplete or not of this format."""


def load(folder: Path | str) -> Model:
    """Load a saved model from its folder (or the path of its ``model_card.json``)."""
    folder = Path(folder)
    if folder.name == CARD:
        folder = folder.parent
    card_path, weights_path = folder / CARD, folder / WEIGHTS
    if not card_path.is_file() or not weights_path.is_file():
        raise ModelFileError(f"{folder} has no {CARD} and {WEIGHTS} (a folder written by the quality_classifier stage: out/stages/<node>/model)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelFileError(f"{card_path} is not JSON: {exc}") from None
    if card.get("format") != FORMAT or card.get("version") != FORMAT_VERSION:
        raise ModelFileError(f"{card_path}: format {card.get('format')!r} version {card.get('version')!r}, expected {FORMAT!r} version {FORMAT_VERSION}")
    cfg = FeatureConfig.from_dict(card["features"])
    with np.load(weights_path, allow_pickle=False) as z:
        w, b = z["w"].astype(np.float32), float(z["b"][0])
    if w.shape != (1 << cfg.dim_bits,):
        raise ModelFileError(f"{weights_path}: {w.shape[0]} weights, expected 2**{cfg.dim_bits}")
    extra = {k: v for k, v in card.items() if k not in ("format", "version", "features", "sha256")}
    model = Model(cfg, w, b, extra)
    if card.get("sha256") and card["sha256"] != model.sha256():
        raise ModelFileError(f"{folder}: the weights do not match the card's sha256 (a file was changed or mixed up)")
    return model


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warnings for large |z|


def train(x: sp.csr_matrix, y: np.ndarray, features: FeatureConfig, *, l2: float = 1e-5, max_iter: int = 200) -> Model:
    """Logistic regression by L-BFGS (:func:`lbfgs`), classes weighted to count equally."""
    y = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("training needs documents of both classes")
    sw = np.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)  # sums to 1: each class weighs half
    # only the buckets some training document uses: the others' gradient is l2 * w, from 0, so
    # their weight stays 0; optimizing over the used ones alone is exact and far cheaper
    used = np.bincount(x.indices, minlength=x.shape[1]) > 0
    active = np.flatnonzero(used)
    d = len(active)
    remap = np.cumsum(used, dtype=np.int32) - 1
    # the same rows over the used columns only: new column indices, the data and row pointers shared
    xa = sp.csr_matrix((x.data.astype(np.float32, copy=False), remap[x.indices], x.indptr), shape=(x.shape[0], d))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = (xa @ w.astype(np.float32)).astype(np.float64) + b
        # log(1 + exp(-s z)) with s = +-1, stably
        s = 2 * y - 1
        m = -s * z
        val = float(sw @ (np.logaddexp(0, m))) + 0.5 * l2 * float(w @ w)
        g_z = sw * (sigmoid(z) - y)
        grad = np.empty(d + 1)
        grad[:d] = (xa.T @ g_z.astype(np.float32)) + l2 * w
        grad[d] = g_z.sum()
        return val, grad

    theta, fun, nit = lbfgs(loss, np.zeros(d + 1), max_iter=max_iter)
    w = np.zeros(x.shape[1], np.float32)
    w[active] = theta[:d]
    return Model(features, w, float(theta[d]), {"optimizer": {"method": "L-BFGS", "iterations": nit, "l2": l2, "loss": round(fun, 6), "active_features": int(d)}})


def lbfgs(fg, x0: np.ndarray, *, max_iter: int = 200, memory: int = 10, gtol: float = 1e-6, ftol: float = 1e-9) -> tuple[np.ndarray, float, int]:
    """Unconstrained L-BFGS (two-loop recursion, backtracking line search on the Armijo
    condition). scipy's L-BFGS-B spent ~0.2 s per step (in its Fortran core) at 6x10^4 variables;
    this costs a few vector operations per step. Returns (x, f(x), iterations)."""
    x = x0.astype(np.float64).copy()
    f, g = fg(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    it = 0
    for it in range(1, max_iter + 1):
        if np.abs(g).max() < gtol:
            it -= 1
            break
        q = g.copy()
        alphas = []
        for s_, y_ in zip(reversed(s_hist), reversed(y_hist)):
            a = (s_ @ q) / (y_ @ s_)
            alphas.append(a)
            q -= a * y_
        if y_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        else:
            q /= max(1.0, float(np.linalg.norm(g)))
        for (s_, y_), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s_ * (a - (y_ @ q) / (y_ @ s_))
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            s_hist.clear()
            y_hist.clear()
            direction, slope = -g, -float(g @ g)
        step = 1.0
        for _ in range(30):
            x_new = x + step * direction
            f_new, g_new = fg(x_new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break
        s_, y_ = x_new - x, g_new - g
        if s_ @ y_ > 1e-12:
            s_hist.append(s_)
            y_hist.append(y_)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(f - f_new) <= ftol * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if converged:
            break
    return x, float(f), it


# ------------------------------------------------------------------------------------ metrics
def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied scores sharing their mean rank);
    None when one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    y = np.asarray(y).astype(bool)
    pred = prob >= threshold
    auc = roc_auc(y, prob)
    return {
        "docs": int(len(y)),
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
        "accuracy": round(float((pred == y).mean()), 4) if len(y) else None,
        "auc": None if auc is None else round(auc, 4),
        "positive_recall": round(float(pred[y].mean()), 4) if y.any() else None,
        "negative_recall": round(float((~pred[~y]).mean()), 4) if (~y).any() else None,
    }
