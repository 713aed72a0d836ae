"""Stage ``wikitext_extract``: raw MediaWiki pages -> plain-text articles.

Keeps the configured namespaces (articles, ns 0, by default), drops redirects (by the
dump's ``<redirect>`` element, never by keyword matching), converts wikitext to plain text
(``pipeline.io.formats.wikitext``: templates, refs, tables, files, categories dropped; link
text kept; ``-{zh-hans:…;zh-hant:…}-`` resolved to one variant) and drops pages that end up
empty. Every dropped page goes to the ledger with its reason.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from pipeline.core.stage import DOC_SCHEMA, MapStage, removed_rows
from pipeline.io.formats.wikitext import DEFAULT_DROP_SECTIONS, wikitext_to_text


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespaces: list[int] = Field(default_factory=lambda: [0], description="namespaces to keep")
    drop_redirects: bool = True
    variant: str = Field("zh-hans", description="language variant chosen in -{…}- markup")
    drop_sections: list[str] | None = Field(None, description="section titles dropped whole (default: references, see also, external links, … in zh/ja/en)")
    min_chars: int = Field(1, ge=0, description="articles with fewer characters after extraction are dropped")


class WikitextExtract(MapStage):
    name = "wikitext_extract"
    version = "1"
    Params = Params
    code_deps = ("pipeline.io.formats.wikitext",)

    def process(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        p: Params = self.params
        drop = frozenset(s.strip().lower() for s in p.drop_sections) if p.drop_sections is not None else DEFAULT_DROP_SECTIONS
        ns = table["ns"].to_pylist()
        redirect = table["redirect"].to_pylist()
        wikitext = table["text"].to_pylist()
        keep_ns = set(p.namespaces)
        texts: list[str | None] = []
        reasons: list[str | None] = []
        signals: list[dict | None] = []
        for i in range(table.num_rows):
            if ns[i] not in keep_ns:
                texts.append(None); reasons.append(f"namespace:{ns[i]}"); signals.append({"ns": ns[i]})
            elif p.drop_redirects and redirect[i] is not None:
                texts.append(None); reasons.append("redirect"); signals.append({"redirect_to": redirect[i]})
            else:
                try:
                    text = wikitext_to_text(wikitext[i], variant=p.variant, drop_sections=drop)
                except Exception as exc:  # the converter degrades gracefully; this is a last resort
                    texts.append(None); reasons.append("extract:error"); signals.append({"error": f"{type(exc).__name__}: {exc}"})
                    continue
                if len(text) < p.min_chars:
                    texts.append(None); reasons.append("extract:empty"); signals.append({"chars": len(text), "wikitext_chars": len(wikitext[i])})
                else:
                    texts.append(text); reasons.append(None); signals.append(None)
        keep = pa.array([r is None for r in reasons])
        kept = table.filter(keep).set_column(table.schema.get_field_index("text"), "text", pa.array([t for t in texts if t is not None], pa.string()))
        kept = kept.select(DOC_SCHEMA.names).cast(DOC_SCHEMA)
        drop_mask = pc.invert(keep)
        removed = removed_rows(
            table.filter(drop_mask),
            self.node,
            [r for r in reasons if r is not None],
            [s for s in signals if s is not None],
        )
        return kept, removed
