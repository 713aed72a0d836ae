"""Stage ``content_filter``: remove documents dense in bad words (adult, obscene, abusive), zh and en.

Lists: LDNOOBW's English and Chinese lists by default (``ldnoobw:en``, ``ldnoobw:zh``, CC BY 4.0,
vendored in ``pipeline/text/blocklists/data/ldnoobw`` with their license), plus files of one
term per line and literal terms. Every list is looked for in every document (web pages mix
languages). English terms match case-insensitively between word boundaries; Chinese terms only
where they start and end on a jieba word boundary (``zh_mode: segmented``), never as a single
character, minus a few entries whose everyday sense is harmless and inside allow-listed longer
words (``pipeline/text/blocklists/terms.py``; measured in docs/web-filters.md).

Decision: a document is removed when its **matched share** -- characters covered by matches /
non-whitespace characters -- is above ``max_ratio`` and it has at least ``min_matches``
matches. C4 removed a page on any match (``max_ratio: 0, min_matches: 1``); the defaults (0.005,
2) keep pages that mention such words in passing (news, medicine, an encyclopedia) and remove
pages made of them (docs/web-filters.md has the measurements behind them).

``action: score`` removes nothing and adds ``content_badword_ratio``, ``content_badword_matches``
and ``content_badword_flag`` (over the threshold) to every document; ``traditional`` (default on)
maps candidate texts to Simplified per character (OpenCC t2s) before matching.

Ledger: reason ``content:badwords:<lang>`` (``zh`` or ``en``: the language with more matches) and
signals ``{"ratio", "threshold", "matches", "matched_chars", "chars", "zh_matches",
"en_matches", "terms": {term: count, ... up to 20}, "zh_mode"}``. Provenance records each list
(name, license, origin, sha256 of the file) and the terms in use (counts, exclusions, allow-list,
a digest).
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.common.errors import StageError
from pipeline.core.stage import MapStage, removed_rows
from pipeline.text import blocklists

MAX_TERMS_IN_LEDGER = 20


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lists: list[str] = Field(default_factory=lambda: ["ldnoobw:zh", "ldnoobw:en"], description="named term lists: ldnoobw:zh, ldnoobw:en")
    files: dict[Literal["zh", "en"], list[str]] = Field(default_factory=dict, description="language -> files of one term per line (# comments)")
    terms: dict[Literal["zh", "en"], list[str]] = Field(default_factory=dict, description="language -> extra terms")
    exclude: list[str] | None = Field(None, description="terms never matched (null: grist's exclusions, ZH_EXCLUDE; [] uses the lists as they are)")
    allow: list[str] | None = Field(None, description="longer Chinese words a match inside which does not count (null: ZH_ALLOW)")
    zh_mode: Literal["segmented", "substring"] = Field("segmented", description="segmented: a Chinese match must start and end on a jieba word boundary; substring: any occurrence outside the allow-list")
    t2s_variants: bool = Field(True, description="also look for each Chinese term's OpenCC t2s form")
    traditional: bool = Field(True, description="match Traditional Chinese text: candidate texts mapped to Simplified per character (OpenCC t2s) before matching")
    max_ratio: float = Field(0.005, ge=0, description="remove when matched characters / non-whitespace characters > this (0: any match, as C4)")
    min_matches: int = Field(2, ge=1, description="... and there are at least this many matches (one word in a short page is not a page made of them)")
    action: Literal["drop", "score"] = Field("drop", description="drop: remove documents over the threshold; score: remove nothing, add the columns (a later stage or the trainer decides)")
    keep_signals: bool = Field(False, description="add content_badword_ratio, content_badword_matches and content_badword_flag columns to kept documents (always with action: score)")

    @field_validator("lists")
    @classmethod
    def _known_lists(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in blocklists.NAMED_TERM_LISTS:
                raise ValueError(f"unknown term list {name!r} (named lists: {', '.join(blocklists.NAMED_TERM_LISTS)}; files go under files: {{zh: [...], en: [...]}})")
        return value


class ContentFilter(MapStage):
    name = "content_filter"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.blocklists", "pipeline.text.blocklists.terms", "pipeline.text.quality.jieba_np", "pipeline.text.minhash")
    description = "bad-word share (LDNOOBW zh/en and files): documents above a threshold removed"

    @cached_property
    def matcher(self) -> blocklists.TermMatcher:
        from pipeline.exec.task_sync import ensure_local

        p: Params = self.params
        lists = [blocklists.load_term_list(name) for name in p.lists]
        for lang, paths in p.files.items():
            for path in paths:
                try:
                    lists.append(blocklists.load_term_list(str(ensure_local(path)), lang))
                except FileNotFoundError:
                    raise StageError(f"content_filter: term list not found: {path}", where=f"content_filter params files.{lang}", hint="give an existing UTF-8 file, one term per line (# comments), or a named list (lists: [ldnoobw:zh, ldnoobw:en])") from None
                except (OSError, UnicodeDecodeError) as e:
                    raise StageError(f"content_filter: cannot read term list {path}: {e}", where=f"content_filter params files.{lang}", hint="a term list is a UTF-8 text file, one term per line") from None
        for lang, terms in p.terms.items():
            if terms:
                lists.append(blocklists.TermList(f"{lang}:terms", lang, tuple(terms), {"name": f"{lang}:terms", "lang": lang, "entries": len(terms)}))
        self._lists = lists
        return blocklists.TermMatcher(lists, zh_mode=p.zh_mode, exclude=p.exclude, allow=p.allow, t2s_variants=p.t2s_variants, traditional=p.traditional)

    def provenance(self) -> dict:
        p: Params = self.params
        m = self.matcher
        return {
            "content_filter": {
                "lists": [lst.info for lst in self._lists],
                **m.describe(),
                "max_ratio": p.max_ratio,
                "min_matches": p.min_matches,
                "ratio": "characters covered by matches / non-whitespace characters",
            }
        }

    def process(self, table: pa.Table):
        p: Params = self.params
        n = table.num_rows
        text = pl.Series("text", table["text"]).cast(pl.String).fill_null("") if n else pl.Series("text", [], dtype=pl.String)
        res = self.matcher.match(text)
        nonspace = (text.str.len_chars() - text.str.count_matches(r"\s")).to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
        ratio = np.where(nonspace > 0, res.chars / np.maximum(nonspace, 1), 0.0)
        over = (ratio > p.max_ratio) & (res.count >= p.min_matches) & (res.count > 0)
        # scoring is separate from the decision (as NeMo Curator's score/filter split): with
        # action: score nothing is removed and the columns carry the decision instead
        drop = over if p.action == "drop" else np.zeros(n, dtype=bool)
        keep = ~drop
        kept = table.filter(pa.array(keep))
        if p.keep_signals or p.action == "score":
            kept = kept.append_column("content_badword_ratio", pa.array(np.round(ratio[keep], 6), pa.float64()))
            kept = kept.append_column("content_badword_matches", pa.array(res.count[keep], pa.int64()))
            kept = kept.append_column("content_badword_flag", pa.array(over[keep], pa.bool_()))
        gone = np.flatnonzero(drop)
        reasons, signals = [], []
        for i in gone.tolist():
            lang = "zh" if res.zh[i] >= res.en[i] else "en"
            reasons.append(f"content:badwords:{lang}")
            terms = dict(list(res.terms[i].items())[:MAX_TERMS_IN_LEDGER])
            signals.append(
                {
                    "ratio": round(float(ratio[i]), 6),
                    "threshold": p.max_ratio,
                    "matches": int(res.count[i]),
                    "matched_chars": int(res.chars[i]),
                    "chars": int(nonspace[i]),
                    "zh_matches": int(res.zh[i]),
                    "en_matches": int(res.en[i]),
                    "terms": terms,
                    "zh_mode": p.zh_mode,
                }
            )
        removed = removed_rows(table.filter(pa.array(drop)), self.node, reasons, signals)
        flagged = int((res.count > 0).sum())
        stats = {"content_filter": {"documents_with_matches": flagged, "matches": int(res.count.sum()), "removed_zh": sum(r.endswith(":zh") for r in reasons), "removed_en": sum(r.endswith(":en") for r in reasons), "over_threshold": int(over.sum())}}
        return kept, removed, stats
