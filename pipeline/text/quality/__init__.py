"""Heuristic quality signals and filters for pretraining text (Gopher, C4, FineWeb, FineWeb-2 zh).

* :func:`compute_signals` -- one row of ``q_*`` columns per document (``signals.py``), vectorized
  with polars/numpy; words from spaCy's English rules or jieba (``tokenize.py``).
* :data:`PRESETS`, :func:`decide` -- thresholds and the first failing rule per row (``presets.py``).
* :func:`normalize_lang` -- a ``lang`` value (``zh``, ``zh-Hant``, ``cmn_Hani``, ``__label__en`` ...)
  to the tokenizer family used here, ``"zh"`` or ``"en"``.

See docs/quality.md for definitions, thresholds with their sources, agreement with datatrove and
speed.
"""

from __future__ import annotations

import re

from pipeline.text.quality.presets import PRESET_LANGUAGE, PRESETS, decide, first_failing, parse_rule, reason_for, resolve_preset, rule_signals
from pipeline.text.quality.signals import SIGNAL_COLUMNS, STOPWORDS, compute_signals

__all__ = [
    "PRESETS",
    "PRESET_LANGUAGE",
    "SIGNAL_COLUMNS",
    "STOPWORDS",
    "compute_signals",
    "decide",
    "first_failing",
    "normalize_lang",
    "parse_rule",
    "reason_for",
    "resolve_preset",
    "rule_signals",
]

_CHINESE = {"zh", "cmn", "zho", "chi", "yue", "wuu", "lzh", "gan", "hak", "nan", "hsn", "cjy"}


def normalize_lang(value: str | None, default: str = "en") -> str:
    """``"zh"`` for Chinese codes (ISO 639-1/3, with script/region/fastText decorations), ``"en"``
    for any other code, ``default`` for a missing one (None, "", "und")."""
    if not value:
        return default
    code = re.split(r"[-_]", value.strip().lower().removeprefix("__label__"), maxsplit=1)[0]
    if code in ("", "und", "unk", "none", "null"):
        return default
    return "zh" if code in _CHINESE else "en"
