"""Stage ``quality_filter``: heuristic quality signals as columns, then a threshold preset.

Signals (``q_*`` columns, see ``pipeline/text/quality/signals.py``) are computed for every document
of a partition at once; the preset's rules decide (first failing rule wins). Dropped documents
go to the ledger with reason ``quality:<signal><op><threshold>`` (``quality:dup_line_frac>0.3``)
and signals ``{"rule", "preset", "lang", "threshold", "<q_signal>": value, "q_words", "q_chars"}``.
Kept documents keep the signal columns (``keep_signals``) so that reports can draw their
distributions and thresholds can be revisited without recomputing; ``signals: rules`` computes
(and keeps) only those the rules read, plus ``q_lang``, ``q_chars`` and ``q_words``.

Language: ``language: auto`` reads a ``lang`` column when there is one (``lid_filter`` writes
it); Chinese rows are segmented with jieba (its algorithm and dictionary, vectorized: the same
words as Python jieba) and, with ``preset: auto``, judged by the ``zh`` preset, all other rows
by ``gopher``. Without a ``lang`` column (or where it is null / ``und``)
a row counts as Chinese when at least 30% of its non-space characters are CJK.
``language: en`` / ``zh`` forces one language for every row.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.core.stage import MapStage, removed_rows
from pipeline.text import quality

AUTO_CJK_FRAC = 0.3


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Literal["auto", "gopher", "c4", "fineweb", "zh", "wiki-zh", "web-zh", "web-en"] = Field(
        "auto", description="threshold preset; auto: zh for Chinese rows, gopher for the others; web-zh: FineWeb-2 cmn_Hani, web-en: FineWeb (docs/web-filters.md)"
    )
    overrides: dict[str, float | None] = Field(
        default_factory=dict, description="rule -> threshold changes, e.g. {max_dup_line_frac: 0.25}; null disables a rule; new min_/max_ rules are appended"
    )
    keep_signals: bool = Field(True, description="keep the q_* signal columns in the kept rows")
    language: Literal["auto", "en", "zh"] = Field("auto", description="auto: the lang column if present, else CJK share")
    zh_segmenter: Literal["jieba", "jieba-py", "jieba-rs", "chars"] = Field(
        "jieba",
        description="Chinese words: jieba (as FineWeb-2: Python jieba's algorithm and dictionary, vectorized, the same words), jieba-py (Python jieba block by block: the same words, slowly), jieba-rs (rjieba, optional; differs on rare HMM near ties) or single characters",
    )
    signals: Literal["all", "rules"] = Field(
        "all", description="all: every q_* signal; rules: only those the presets' rules use (plus q_lang, q_chars, q_words), same decisions, less work"
    )

    @field_validator("overrides")
    @classmethod
    def _known_rules(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        for rule in value:
            quality.parse_rule(rule)  # raises ValueError naming the known signals
        return value


class QualityFilter(MapStage):
    name = "quality_filter"
    version = "1"
    Params = Params
    code_deps = (
        "pipeline.text.quality",
        "pipeline.text.quality.signals",
        "pipeline.text.quality.presets",
        "pipeline.text.quality.tokenize",
        "pipeline.text.quality.jieba_np",
        "pipeline.text.quality.ragged",
        "pipeline.text.quality._spacy_en",
    )
    description = "heuristic quality signals (q_* columns) and Gopher / C4 / FineWeb / FineWeb-2 zh thresholds"

    def presets(self) -> list[str]:
        p: Params = self.params
        return ["gopher", "zh"] if p.preset == "auto" else [p.preset]

    def provenance(self) -> dict:
        p: Params = self.params
        return {"quality_rules": {name: quality.resolve_preset(name, p.overrides) for name in self.presets()}}

    def signal_columns(self) -> list[str] | None:
        """The q_* columns to compute: None (all) or those the rules read, plus q_chars and q_words."""
        p: Params = self.params
        if p.signals == "all":
            return None
        return quality.rule_signals(*(quality.resolve_preset(name, p.overrides) for name in self.presets()))

    def languages(self, table: pa.Table) -> list[str]:
        """Per row "en" or "zh": forced by ``language``, else the ``lang`` column, else (or where
        ``lang`` is missing / ``und``) the share of CJK characters."""
        p: Params = self.params
        n = table.num_rows
        if p.language != "auto":
            return [p.language] * n
        if "lang" in table.column_names:
            out = [quality.normalize_lang(v, default="") for v in table["lang"].to_pylist()]
            if "" in out:
                by_script = _cjk_languages(table)
                out = [o or h for o, h in zip(out, by_script)]
            return out
        return _cjk_languages(table)

    def process(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        p: Params = self.params
        langs = self.languages(table)
        signals = quality.compute_signals(table["text"], langs, zh_segmenter=p.zh_segmenter, columns=self.signal_columns())
        if p.preset == "auto":
            presets = np.where(np.asarray(langs, dtype=object) == "zh", "zh", "gopher")
        else:
            presets = np.full(table.num_rows, p.preset, dtype=object)
        verdict = quality.decide(signals, presets, p.overrides)
        keep = verdict.get_column("keep").to_numpy()

        base = table.drop_columns([c for c in table.column_names if c in quality.SIGNAL_COLUMNS])
        kept = base.filter(pa.array(keep))
        if p.keep_signals:
            sig = signals.filter(pl.Series(keep)).to_arrow()
            for name in sig.column_names:
                kept = kept.append_column(name, sig[name].cast(_arrow_type(sig.schema.field(name).type)))

        drop = np.flatnonzero(~keep)
        ledger_signals = []
        if len(drop):
            v = verdict[drop]
            core = signals[drop].select("q_lang", "q_words", "q_chars").to_dicts()
            for k, row in enumerate(v.iter_rows(named=True)):
                value = row["value"]
                ledger_signals.append(
                    {
                        "rule": row["rule"],
                        "preset": str(presets[drop[k]]),
                        "lang": core[k]["q_lang"],
                        "threshold": row["threshold"],
                        row["signal"]: None if value is None or np.isnan(value) else round(float(value), 6),
                        "q_words": core[k]["q_words"],
                        "q_chars": core[k]["q_chars"],
                    }
                )
        removed = removed_rows(base.filter(pa.array(~keep)), self.node, verdict.get_column("reason").gather(drop).to_list(), ledger_signals)
        return kept, removed


def _cjk_languages(table: pa.Table) -> list[str]:
    text = pl.Series(table["text"]).cast(pl.String).fill_null("")
    cjk = text.str.count_matches(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")
    nonspace = text.str.len_chars() - text.str.count_matches(r"\s")
    is_zh = (cjk >= AUTO_CJK_FRAC * nonspace) & (cjk > 0)
    return np.where(is_zh.to_numpy(), "zh", "en").tolist()


def _arrow_type(t: pa.DataType) -> pa.DataType:
    # polars exports large_string; the document tables use string
    return pa.string() if pa.types.is_large_string(t) else t
