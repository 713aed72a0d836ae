"""Threshold presets and the keep/drop decision, separate from the signals.

A preset is an ordered dict ``rule -> threshold``. A rule is ``min_<signal>`` (drop the document
when ``q_<signal> < threshold``) or ``max_<signal>`` (drop when ``q_<signal> > threshold``);
``None`` disables a rule. The comparisons are strict, like datatrove's. A document is dropped
by the **first** failing rule in preset order; its reason reads ``quality:<signal><op><threshold>``
(``quality:dup_line_frac>0.3``). A null signal (no words, hence no mean word length) never fails.

Sources of the numbers (see docs/quality.md for the full table):

* ``gopher`` -- Rae et al. 2021 (Gopher), Table A1 and section A.1.1, as implemented by datatrove
  0.10 ``GopherQualityFilter`` + ``GopherRepetitionFilter`` defaults (``min_chars`` is the
  repetition filter's "empty" rule).
* ``c4`` -- Raffel et al. 2020 (C4), document-level rules as datatrove's ``C4QualityFilter``
  defaults apply them after its line filters.
* ``fineweb`` -- FineWeb's pipeline (datatrove ``examples/fineweb.py``): Gopher repetition and
  quality with defaults, C4 with ``filter_no_terminal_punct=False``, ``FineWebQualityFilter``
  defaults (``char_duplicates_ratio=0.01``; the FineWeb blog post says 0.1, the code says 0.01).
* ``zh`` -- FineWeb-2's ``configs/cmn_Hani.yml`` and ``fineweb-2-pipeline.py``: Gopher repetition
  with the paragraph and character rules disabled, FineWeb quality with the short-line rule
  disabled and ``char_duplicates_ratio=0.1``, Gopher quality with the cmn_Hani word-length,
  alpha-word and stop-word settings. Words come from jieba, as in datatrove for ``cmn_Hani``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import polars as pl

from pipeline.text.quality.signals import SIGNAL_COLUMNS

GOPHER_QUALITY = {
    "min_words": 50,
    "max_words": 100_000,
    "min_mean_word_len": 3,
    "max_mean_word_len": 10,
    "max_hash_ratio": 0.1,
    "max_ellipsis_ratio": 0.1,
    "max_bullet_lines_frac": 0.9,
    "max_ellipsis_lines_frac": 0.3,
    "min_alpha_words_frac": 0.8,
    "min_stopwords": 2,
}

GOPHER_REPETITION = {
    "min_chars": 1,
    "max_dup_para_frac": 0.3,
    "max_dup_para_char_frac": 0.2,
    "max_dup_line_frac": 0.3,
    "max_dup_line_char_frac": 0.2,
    "max_top_2gram_frac": 0.20,
    "max_top_3gram_frac": 0.18,
    "max_top_4gram_frac": 0.16,
    "max_dup_5gram_frac": 0.15,
    "max_dup_6gram_frac": 0.14,
    "max_dup_7gram_frac": 0.13,
    "max_dup_8gram_frac": 0.12,
    "max_dup_9gram_frac": 0.11,
    "max_dup_10gram_frac": 0.10,
}

C4 = {
    "max_c4_lorem_lines": 0,
    "max_c4_curly_lines": 0,
    "min_c4_sentences": 5,
}

C4_NO_TERMINAL_PUNCT = {
    "max_c4_all_lorem_lines": 0,
    "max_c4_all_curly_lines": 0,
    "min_c4_all_sentences": 5,
}

FINEWEB_QUALITY = {
    "min_nonblank_lines": 1,
    "min_line_punct_frac": 0.12,
    "max_short_lines_frac": 0.67,
    "max_fw_dup_line_char_frac": 0.01,
    "max_newlines_per_word": 0.3,
}

PRESETS: dict[str, dict[str, float | None]] = {
    "gopher": {**GOPHER_QUALITY, **GOPHER_REPETITION},
    "c4": dict(C4),
    "fineweb": {**GOPHER_REPETITION, **GOPHER_QUALITY, **C4_NO_TERMINAL_PUNCT, **FINEWEB_QUALITY},
    "zh": {
        # Gopher repetition (FineWeb-2 cmn_Hani): paragraph and character rules disabled
        "min_chars": 1,
        "max_dup_line_frac": 0.287,
        "max_top_2gram_frac": 0.256,
        "max_top_3gram_frac": 0.201,
        "max_top_4gram_frac": 0.171,
        "max_dup_5gram_frac": 0.198,
        "max_dup_6gram_frac": 0.182,
        "max_dup_7gram_frac": 0.167,
        "max_dup_8gram_frac": 0.154,
        "max_dup_9gram_frac": 0.14,
        "max_dup_10gram_frac": 0.127,
        # FineWeb quality (short-line rule disabled, char_duplicates_ratio 0.1)
        "min_nonblank_lines": 1,
        "min_line_punct_frac": 0.106,
        "max_fw_dup_line_char_frac": 0.1,
        "max_newlines_per_word": 0.178,
        # Gopher quality with cmn_Hani settings (and the 22 cmn_Hani stop words)
        "min_words": 50,
        "max_words": 100_000,
        "min_mean_word_len": 1,
        "max_mean_word_len": 5,
        "max_hash_ratio": 0.1,
        "max_ellipsis_ratio": 0.1,
        "max_bullet_lines_frac": 0.9,
        "max_ellipsis_lines_frac": 0.3,
        "min_alpha_words_frac": 0.735,
        "min_stopwords": 2,
    },
}

# Chinese Wikipedia after extraction (grist's own preset): encyclopedic text is edited prose plus
# section headings, lists and tables turned into short lines, so FineWeb-2's web-page rules on
# terminal punctuation per line, newlines per word and the share of alphabetic words misfire on
# real articles (they drop 24 of the 100 articles of the shared zhwiki sample). Kept: the
# repetition rules (template and boilerplate repetition), the structural Gopher rules and a
# floor against empty stubs; top n-gram, alpha-word and stop-word thresholds relaxed to about
# 1.3x the extremes seen on that sample (docs/quality.md lists the observed ranges). Line
# repetition is judged by characters, not by count: a table flattened into one-cell lines
# repeats many short lines ("西晋", "后赵") without being boilerplate.
WIKI_ZH = {
    "min_chars": 1,
    "max_dup_para_char_frac": 0.2,
    "max_dup_line_char_frac": 0.2,
    "max_top_2gram_frac": 0.3,
    "max_top_3gram_frac": 0.25,
    "max_top_4gram_frac": 0.3,
    "max_dup_5gram_frac": 0.198,
    "max_dup_6gram_frac": 0.182,
    "max_dup_7gram_frac": 0.167,
    "max_dup_8gram_frac": 0.154,
    "max_dup_9gram_frac": 0.14,
    "max_dup_10gram_frac": 0.127,
    "max_fw_dup_line_char_frac": 0.1,
    "min_words": 10,
    "max_words": 100_000,
    "min_mean_word_len": 1,
    "max_mean_word_len": 5,
    "max_hash_ratio": 0.1,
    "max_ellipsis_ratio": 0.1,
    "max_bullet_lines_frac": 0.9,
    "max_ellipsis_lines_frac": 0.3,
    "min_alpha_words_frac": 0.3,
    "min_stopwords": 1,
}
PRESETS["wiki-zh"] = WIKI_ZH

# the language each preset is meant for (used when no language is known for a row)
PRESET_LANGUAGE = {"gopher": "en", "c4": "en", "fineweb": "en", "zh": "zh", "wiki-zh": "zh"}

# Web presets (docs/web-filters.md): named for the web pipeline (manifests/web-zh.yaml), kept apart
# from PRESETS so the list of general presets stays as it was. ``web-zh`` is FineWeb-2's
# cmn_Hani filter set (huggingface/fineweb-2 configs/cmn_Hani.yml: dup_line_frac 0.287,
# top_n_grams 2/3/4 = 0.256/0.201/0.171, dup_n_grams 5..10 = 0.198 .. 0.127, line_punct_thr
# 0.106, new_line_ratio 0.178, avg word length 1..5, max_non_alpha_words_ratio 0.735, its 22
# stop words; the rest are fineweb-2-pipeline.py's settings), the same numbers as ``zh``;
# ``web-en`` is FineWeb's English pipeline (``fineweb``).
WEB_PRESETS: dict[str, dict[str, float | None]] = {
    "web-zh": dict(PRESETS["zh"]),
    "web-en": dict(PRESETS["fineweb"]),
}
PRESET_LANGUAGE.update({"web-zh": "zh", "web-en": "en"})

_SIGNALS = {c[2:] for c in SIGNAL_COLUMNS if c != "q_lang"}


def parse_rule(rule: str) -> tuple[str, str]:
    """"max_dup_line_frac" -> ("max", "dup_line_frac"); ValueError for an unknown rule."""
    op, _, signal = rule.partition("_")
    if op not in ("min", "max") or signal not in _SIGNALS:
        known = ", ".join(sorted(_SIGNALS))
        raise ValueError(f"unknown quality rule {rule!r}: expected min_<signal> or max_<signal>, signals: {known}")
    return op, signal


def rule_signals(*rule_sets: Mapping[str, float]) -> list[str]:
    """The q_* columns the rules read, plus ``q_lang``, ``q_chars`` and ``q_words`` (the ledger
    records them), in :data:`SIGNAL_COLUMNS` order."""
    need = {"q_lang", "q_chars", "q_words"} | {"q_" + parse_rule(rule)[1] for rules in rule_sets for rule in rules}
    return [c for c in SIGNAL_COLUMNS if c in need]


def resolve_preset(preset: str, overrides: Mapping[str, float | None] | None = None) -> dict[str, float]:
    """The preset's rules with ``overrides`` applied (a new rule is appended; None removes one)."""
    known = {**PRESETS, **WEB_PRESETS}
    if preset not in known:
        raise ValueError(f"unknown quality preset {preset!r} (one of {', '.join(known)})")
    rules = dict(known[preset])
    for rule, thr in (overrides or {}).items():
        parse_rule(rule)
        rules[rule] = thr
    return {r: float(t) for r, t in rules.items() if t is not None}


def format_threshold(thr: float) -> str:
    return f"{thr:g}"


def reason_for(rule: str, thr: float) -> str:
    op, signal = parse_rule(rule)
    return f"quality:{signal}{'<' if op == 'min' else '>'}{format_threshold(thr)}"


def first_failing(signals: pl.DataFrame, rules: Mapping[str, float]) -> np.ndarray:
    """Index (into ``rules``' order) of the first failing rule per row, -1 where all pass."""
    if not rules or signals.height == 0:
        return np.full(signals.height, -1, dtype=np.int64)
    conds = []
    for k, (rule, thr) in enumerate(rules.items()):
        op, signal = parse_rule(rule)
        col = pl.col(f"q_{signal}").cast(pl.Float64)
        fail = col < thr if op == "min" else col > thr
        conds.append(pl.when(fail.fill_null(False)).then(pl.lit(k, dtype=pl.Int64)))
    return signals.select(pl.coalesce(conds).fill_null(-1).alias("i")).get_column("i").to_numpy()


def decide(signals: pl.DataFrame, presets: np.ndarray | list[str] | str, overrides: Mapping[str, float | None] | None = None) -> pl.DataFrame:
    """Keep/drop per row: columns ``keep`` (bool), ``reason`` (null when kept), ``rule``,
    ``signal`` (the deciding column), ``value`` (its value) and ``threshold``.
    ``presets``: one preset name for all rows, or one per row."""
    n = signals.height
    names = np.asarray([presets] * n if isinstance(presets, str) else presets, dtype=object)
    reason = np.full(n, None, dtype=object)
    rule_col = np.full(n, None, dtype=object)
    signal_col = np.full(n, None, dtype=object)
    value = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    for name in sorted(set(names.tolist())):
        rows = np.flatnonzero(names == name)
        rules = resolve_preset(name, overrides)
        sub = signals[rows] if len(rows) < n else signals
        idx = first_failing(sub, rules)
        failed = idx >= 0
        if not failed.any():
            continue
        items = list(rules.items())
        for k in np.unique(idx[failed]).tolist():
            hit = rows[idx == k]
            rule, thr = items[k]
            sig = "q_" + parse_rule(rule)[1]
            reason[hit] = reason_for(rule, thr)
            rule_col[hit] = rule
            signal_col[hit] = sig
            value[hit] = signals.get_column(sig).cast(pl.Float64).to_numpy()[hit]
            threshold[hit] = thr
    return pl.DataFrame(
        {
            "keep": reason == None,  # noqa: E711 - elementwise
            "reason": pl.Series(reason.tolist(), dtype=pl.String),
            "rule": pl.Series(rule_col.tolist(), dtype=pl.String),
            "signal": pl.Series(signal_col.tolist(), dtype=pl.String),
            "value": value,
            "threshold": threshold,
        }
    )
