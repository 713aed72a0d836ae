"""Stage ``lid_filter``: label each document's language, keep the configured languages.

Every kept document gets ``lang`` (ISO 639-1, ``zh`` for Chinese in any script, ``und`` when
nothing could be identified) and ``lang_score`` (float32 in [0, 1]). Without ``keep`` (the
default, or ``keep: []``) the stage only labels: every document is kept, whatever its language
or score. With ``keep``, a document is kept when its language is in ``keep`` with
``lang_score >= min_score``: a filter that drops documents is always written in the manifest.
Dropped documents go to the ledger with reason ``lang:<code>`` (a language not kept) or
``lang:<code>(score<min)`` (a kept language, identified with too little confidence) and
signals ``{"lang", "lang_score"}``.

Backends, their measured accuracy and speed, and the default: ``pipeline/text/lid.py`` and
``docs/language-id.md``. Models ship inside their packages (nothing is downloaded) and load
lazily, once per worker process.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.core.stage import MapStage, removed_rows
from pipeline.text import lid


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field(lid.DEFAULT_BACKEND, description=f"language identifier: {', '.join(lid.backend_names())}")
    keep: list[str] = Field(
        default_factory=list,
        description="ISO 639-1 codes to keep (e.g. [zh]); omitted or empty: label only, every document is kept",
    )
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="with keep: documents in a kept language below this lang_score are dropped")
    chars: int = Field(lid.DEFAULT_CHARS, ge=0, description="characters identified per document (head + middle sample); 0: whole text")
    han_override: float | None = Field(
        0.1, ge=0.0, le=1.0,
        description="label zh a document whose letters are at least this share Han characters with (almost) no kana or "
        "hangul, whatever the model says: Chinese list pages of foreign names read as English to a model; None: off",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in lid.BACKENDS:
            raise ValueError(f"unknown backend {value!r}; choose one of {', '.join(lid.backend_names())}")
        return value

    @field_validator("keep")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        out = []
        for code in value:
            norm = lid.canonical(code)  # "zh-Hant", "ZH", "no" -> "zh", "zh", "nb"
            if not re.fullmatch("[a-z]{2,3}", norm) or (norm == lid.UND and code.strip().lower() != lid.UND):
                raise ValueError(f"not an ISO 639 language code: {code!r}")
            if norm not in out:
                out.append(norm)
        return out


class LidFilter(MapStage):
    name = "lid_filter"
    version = "2"  # 2: keep defaults to label only (was [zh]); cascade routes short text and sibling languages
    Params = Params
    code_deps = ("pipeline.text.lid",)
    description = "language identification: adds lang / lang_score; with keep, keeps only those languages"

    @property
    def backend(self) -> lid.Backend:
        # lru-cached per process: the models load once per worker, on the first partition
        return lid.get_backend(self.params.backend, self.params.chars)

    def provenance(self) -> dict:
        b = self.backend  # does not load models
        return {
            "lid": {
                "backend": b.name,
                "packages": b.packages,
                "model": b.model,
                "model_license": b.license,
                "chars": self.params.chars,
                "keep": list(self.params.keep),
                "min_score": self.params.min_score,
            }
        }

    def process(self, table: pa.Table):
        p: Params = self.params
        texts = table["text"].to_pylist() if table.num_rows else []
        langs, scores = self.backend.predict(texts)
        overridden = self._han_override(table) if p.han_override is not None and table.num_rows else [False] * len(langs)
        keep_set = set(p.keep)
        mask, reasons, signals = [], [], []
        for i, (lang, score) in enumerate(zip(langs, scores)):
            if overridden[i] is not False:
                langs[i], scores[i] = lang, score = "zh", overridden[i]
            if not keep_set or (lang in keep_set and (score >= p.min_score or overridden[i] is not False)):
                mask.append(True)
                continue
            mask.append(False)
            reasons.append(f"lang:{lang}(score<min)" if lang in keep_set else f"lang:{lang}")
            signals.append({"lang": lang, "lang_score": round(score, 4)})
        keep = pa.array(mask, pa.bool_())
        kept = table.filter(keep)
        kept = _set_column(kept, "lang", pa.array([l for l, m in zip(langs, mask) if m], pa.string()))
        kept = _set_column(kept, "lang_score", pa.array([s for s, m in zip(scores, mask) if m], pa.float32()))
        removed = removed_rows(table.filter(pc.invert(keep)), self.node, reasons, signals)
        return kept, removed, {"lid_han_override": sum(o is not False for o in overridden)}

    def _han_override(self, table: pa.Table) -> list:
        """Per row: the Han share of letters when the script rule applies (then lang_score), else False."""
        text = table["text"]
        han = pc.count_substring_regex(text, r"\p{Han}")
        letters = pc.count_substring_regex(text, r"\p{L}")
        kana_hangul = pc.count_substring_regex(text, r"[\p{Hiragana}\p{Katakana}\p{Hangul}]")
        out = []
        for h, n, k in zip(han.to_pylist(), letters.to_pylist(), kana_hangul.to_pylist()):
            share = h / n if n else 0.0
            out.append(round(share, 4) if h and share >= self.params.han_override and k <= 0.02 * h else False)
        return out


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """Add the column, or replace it when an earlier identification already set it."""
    index = table.schema.get_field_index(name)
    if index >= 0:
        return table.set_column(index, pa.field(name, values.type), values)
    return table.append_column(pa.field(name, values.type), values)
