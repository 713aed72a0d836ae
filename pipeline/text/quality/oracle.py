"""datatrove as a reference implementation (tests and benchmarks only; not a runtime dependency).

Needs ``datatrove`` and ``spacy`` (datatrove splits English words with ``spacy.blank("en")``,
which needs no model download). ``python -m pipeline.text.quality.oracle --regen-spacy-rules``
regenerates ``_spacy_en.py`` from the installed spaCy.
"""

from __future__ import annotations

import sys
from pathlib import Path


def gopher_filters():
    """datatrove's GopherQualityFilter and GopherRepetitionFilter with default parameters."""
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    return GopherQualityFilter(), GopherRepetitionFilter()


# FineWeb-2's configs/cmn_Hani.yml values and the parameters fineweb-2-pipeline.py sets
FINEWEB2_CMN_HANI = {
    "dup_line_frac": 0.287,
    "top_n_grams": ((2, 0.256), (3, 0.201), (4, 0.171)),
    "dup_n_grams": ((5, 0.198), (6, 0.182), (7, 0.167), (8, 0.154), (9, 0.14), (10, 0.127)),
    "line_punct_thr": 0.106,
    "new_line_ratio": 0.178,
    "min_avg_word_length": 1,
    "max_avg_word_length": 5,
    "max_non_alpha_words_ratio": 0.735,
}


def fineweb2_zh_filters():
    """FineWeb-2's filtering block for cmn_Hani, in pipeline order (the language-score filter aside)."""
    from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    from pipeline.text.quality.signals import STOPWORDS

    c = FINEWEB2_CMN_HANI
    return [
        GopherRepetitionFilter(
            language="cmn_Hani", dup_para_frac=0, dup_line_char_frac=0, dup_para_char_frac=0,
            dup_line_frac=c["dup_line_frac"], top_n_grams=c["top_n_grams"], dup_n_grams=c["dup_n_grams"],
        ),
        FineWebQualityFilter(language="cmn_Hani", short_line_thr=999, char_duplicates_ratio=0.1, line_punct_thr=c["line_punct_thr"], new_line_ratio=c["new_line_ratio"]),
        GopherQualityFilter(
            language="cmn_Hani", min_avg_word_length=c["min_avg_word_length"], max_avg_word_length=c["max_avg_word_length"],
            stop_words=list(STOPWORDS["zh"]), max_non_alpha_words_ratio=c["max_non_alpha_words_ratio"], min_stop_words=2,
        ),
    ]


def pipeline_keep(texts: list[str], filters) -> list[bool]:
    """Keep/drop as a datatrove pipeline decides it: filters in order, stopping at the first drop
    (``filter()`` called directly: the cheapest way to run them, used by the benchmark)."""
    from datatrove.data import Document

    keep = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        ok = True
        for f in filters:
            res = f.filter(doc)  # True, False or (False, reason)
            if not (res[0] if isinstance(res, tuple) else res):
                ok = False
                break
        keep.append(ok)
    return keep


def _verdict(result) -> tuple[bool, str | None]:
    if result is True:
        return True, None
    if isinstance(result, tuple):
        return bool(result[0]), result[1]
    return bool(result), None


def run_filters(texts: list[str], filters) -> list[tuple[bool, list[str]]]:
    """For each text: (kept by every filter, the reasons of the filters that dropped it). Every
    filter sees every document (not a pipeline), so each filter's first failing rule is known."""
    from datatrove.data import Document

    out = []
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        keep, reasons = True, []
        for f in filters:
            ok, reason = _verdict(f.filter(doc))
            if not ok:
                keep = False
                reasons.append(reason or f.name)
        out.append((keep, reasons))
    return out


def _gopher_chunk(texts: list[str]) -> list[tuple[bool, list[str]]]:
    return run_filters(texts, gopher_filters())


def datatrove_gopher(texts: list[str], workers: int = 1) -> list[tuple[bool, list[str]]]:
    """``run_filters`` with datatrove's two Gopher filters; ``workers`` > 1 splits the texts over
    spawned processes (interleaved, so long and short documents spread evenly)."""
    if workers <= 1 or len(texts) < 2 * workers:
        return _gopher_chunk(texts)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    parts = [texts[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(_gopher_chunk, parts))
    out: list = [None] * len(texts)
    for i, res in enumerate(results):
        out[i::workers] = res
    return out


def regen_spacy_rules(target: Path | None = None) -> Path:
    """Write ``_spacy_en.py``: spaCy's English prefix/suffix/infix/URL regexes and special cases."""
    import spacy
    from spacy.attrs import ORTH

    nlp = spacy.blank("en")
    tok = nlp.tokenizer
    target = target or Path(__file__).with_name("_spacy_en.py")
    parts = [
        '"""spaCy %s English tokenizer rules, generated (do not edit by hand).\n\n'
        "Source: spaCy (MIT License, Copyright (C) 2016-2024 ExplosionAI GmbH, 2016 spaCy GmbH, 2015 Matthew Honnibal),\n"
        '``spacy.blank("en").tokenizer``: its prefix/suffix/infix/url regular expressions and its special cases\n'
        "(tokenizer exceptions). datatrove splits English into words with exactly this tokenizer, so\n"
        "``pipeline.text.quality.tokenize`` reuses the rules to agree with it without depending on spaCy.\n"
        "Regenerate with ``python -m pipeline.text.quality.oracle --regen-spacy-rules`` (needs spaCy).\n"
        '"""\n' % spacy.about.__version__,
        "SPACY_VERSION = %r\n" % spacy.about.__version__,
    ]
    for attr, name in (("prefix_search", "PREFIX_RE"), ("suffix_search", "SUFFIX_RE"), ("infix_finditer", "INFIX_RE"), ("url_match", "URL_RE")):
        parts.append("%s = %r\n" % (name, getattr(tok, attr).__self__.pattern))
    parts.append("# special case -> its tokens\nSPECIALS = {\n")
    for key in sorted(tok.rules):
        parts.append("    %r: %r,\n" % (key, tuple(d.get(ORTH, d.get("ORTH")) for d in tok.rules[key])))
    parts.append("}\n")
    target.write_text("".join(parts), encoding="utf-8")
    return target


if __name__ == "__main__":  # pragma: no cover - maintenance tool
    if "--regen-spacy-rules" in sys.argv:
        print(regen_spacy_rules())
    else:
        print(__doc__)
