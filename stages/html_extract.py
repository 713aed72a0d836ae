"""Stage ``html_extract``: web records (``WEB_RECORD_SCHEMA``: raw HTTP bodies) -> documents.

Per record, in order (the first rule that fires decides; every drop is a ledger entry with the
signals that decided it):

1. WET records (``html`` null, ``text`` already extracted by Common Crawl) pass through as
   documents; only an empty text is dropped (``html:empty``).
2. ``html:http-status``: a status other than 2xx (redirects and error pages are not documents;
   ``keep_status`` widens it). Records without a status (local files) pass.
3. ``html:too-large``: a body over ``max_html_bytes`` (Common Crawl truncates at 1 MiB; a 50 MB
   "page" is a dump or a trap, and would hold a worker for seconds).
4. ``html:empty``: an empty body.
5. ``html:not-html``: the bytes are a PDF, an image, an archive... (magic bytes win over the
   header: a PDF served as ``text/html`` is a PDF), the ``Content-Type`` is one that is never
   HTML, the body holds binary bytes, or it has no markup at all.
6. ``html:decode-error``: no charset reads the bytes as text (``pipeline/text/html.py``:
   BOM -> HTTP header -> ``<meta>`` -> detection, labels read the WHATWG way, GB2312/GBK as
   GB18030, a declared label verified against the bytes).
7. ``html:empty``: the main-content extractor found fewer than ``min_chars`` characters
   (navigation-only pages, empty shells filled by JavaScript).

Everything before the per-page work (status, sizes, header MIME types, building the output and
the ledger) is done on whole columns with pyarrow; only decoding and extraction run per page.

Output: ``DOC_SCHEMA`` (id and source as given, ``title`` from the page's ``<title>``, ``url``,
``timestamp`` = the date the page declares in its metadata, else the WARC-Date), plus ``crawl``,
``warc_date``, ``warc_record_id`` (trace back to the record) and ``charset`` (the codec the text
was read with; ``wet`` for WET rows). The raw HTML and the HTTP headers do not flow on.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.common.errors import StageError
from pipeline.core.stage import DOC_SCHEMA, MapStage, removed_rows
from pipeline.text import extract as ex
from pipeline.text import html as hx

# Columns of the web record that stay on the documents, beside DOC_SCHEMA's.
EXTRA_COLUMNS = [("crawl", pa.string()), ("warc_date", pa.string()), ("warc_record_id", pa.string()), ("charset", pa.string())]
OUT_SCHEMA = pa.schema([*DOC_SCHEMA, *EXTRA_COLUMNS])
# Content types that are never HTML, decided on the whole column before any page is looked at.
_NOT_HTML_MIME_RE = "^(?:" + "|".join(p.replace("+", r"\+").replace(".", r"\.") for p in hx._NOT_HTML_PREFIXES) + ")"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extractor: str = Field(ex.DEFAULT_EXTRACTOR, description=f"main-content extractor: {', '.join(ex.EXTRACTORS)} (docs/html-extraction.md)")
    max_link_density: float = Field(ex.DEFAULT_LINK_DENSITY, gt=0.0, le=1.0, description="resiliparse-ld: drop lines (not in CJK script) whose letters are more than this share link text")
    max_link_density_cjk: float = Field(ex.DEFAULT_LINK_DENSITY_CJK, gt=0.0, le=1.0, description="resiliparse-ld: the same for lines whose letters are at least 30% Chinese/Japanese/Korean")
    detector: str = Field("resiliparse", description=f"charset detector for pages that declare none or a wrong one: {', '.join(hx.DETECTORS)}")
    max_html_bytes: int = Field(5_000_000, ge=1024, description="bodies larger than this go to the ledger as html:too-large")
    min_chars: int = Field(1, ge=1, description="extracted texts shorter than this (after trimming) go to the ledger as html:empty")
    keep_status: list[int] | None = Field(None, description="HTTP statuses kept (default: any 2xx); records without a status always pass")
    page_date: ex.DateMode = Field("meta", description="timestamp = the page's publication date, else the WARC-Date. meta: what the page declares (meta / JSON-LD / <time>); htmldate: then htmldate's search of URL and text; none: always the WARC-Date")

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        if value not in ex.EXTRACTORS:
            raise ValueError(f"unknown extractor {value!r}; choose one of {', '.join(ex.EXTRACTORS)}")
        return _installed(value, {"trafilatura": "trafilatura", "readability": "readability"}.get(value))

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        if value not in hx.DETECTORS:
            raise ValueError(f"unknown detector {value!r}; choose one of {', '.join(hx.DETECTORS)}")
        return _installed(value, {"cchardet": "cchardet", "chardet": "chardet", "charset-normalizer": "charset_normalizer"}.get(value))

    @field_validator("page_date")
    @classmethod
    def _htmldate_installed(cls, value: str) -> str:
        return _installed(value, "htmldate" if value == "htmldate" else None)


def _installed(value: str, module: str | None) -> str:
    """Optional backends are checked when the manifest is validated, not page by page in the run."""
    if module and importlib.util.find_spec(module) is None:
        raise ValueError(f"{value!r} needs the Python module {module!r}, which is not installed: pip install 'grist[html-extra]'")
    return value


class HtmlExtract(MapStage):
    name = "html_extract"
    version = "2"
    Params = Params
    code_deps = ("pipeline.text.html", "pipeline.text.extract")
    description = "web records -> documents: charset, main content, title, date; non-HTML and empty pages to the ledger"

    def provenance(self) -> dict:
        p: Params = self.params
        pkgs = {"resiliparse": "Apache-2.0"}
        if p.extractor == "trafilatura":
            pkgs["trafilatura"] = "Apache-2.0"
        if p.extractor == "readability":
            pkgs["readability-lxml"] = "Apache-2.0"
        if p.page_date == "htmldate":
            pkgs["htmldate"] = "Apache-2.0"
        if p.detector == "cchardet":
            pkgs["faust-cchardet"] = "MPL-1.1/GPL-2.0/LGPL-2.1"
        elif p.detector in ("chardet", "charset-normalizer"):
            pkgs[p.detector] = "LGPL-2.1" if p.detector == "chardet" else "MIT"
        versions = {}
        for name in pkgs:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        return {"html_extract": {"extractor": p.extractor, "detector": p.detector, "max_html_bytes": p.max_html_bytes, "packages": versions, "licenses": pkgs}}

    def process(self, table: pa.Table):
        p: Params = self.params
        n = table.num_rows
        if "html" not in table.column_names:
            raise StageError(
                "html_extract needs web records (an `html` column), this input has none",
                where=f"stage {self.node!r}",
                hint="put html_extract right after a web source (commoncrawl, or local .warc/.wet files); documents that are already text need no extraction",
            )
        html = table["html"].combine_chunks() if n else pa.array([], pa.binary())
        reason: list[str | None] = [None] * n
        signals: list[dict | None] = [None] * n
        stats = {"wet": 0, "charset_overridden": 0, "charset_detected": 0, "mojibake_docs": 0}

        def drop(mask: pa.Array, why: str, make_signals) -> None:
            for i in pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist():
                if reason[i] is None:
                    reason[i], signals[i] = why, make_signals(i)

        # Whole-column rules first (cheap, vectorized).
        is_wet = pc.is_null(html)
        sizes = pc.fill_null(pc.binary_length(html), 0)
        ctype = _column(table, "content_type", n)
        mime = pc.utf8_trim_whitespace(pc.utf8_lower(pc.fill_null(pc.list_element(pc.split_pattern(ctype, ";", max_splits=1), 0), "")))
        status = _column(table, "http_status", n, pa.int32())
        wet_text = _column(table, "text", n)
        wet_empty = pc.and_(is_wet, pc.less(pc.fill_null(pc.utf8_length(pc.utf8_trim_whitespace(wet_text)), 0), p.min_chars))
        drop(wet_empty, "html:empty", lambda i: {"wet": True, "chars": 0})
        if p.keep_status is None:
            bad_status = pc.or_(pc.less(status, 200), pc.greater_equal(status, 300))
        else:
            bad_status = pc.invert(pc.is_in(status, pa.array(p.keep_status, pa.int32())))
        bad_status = pc.and_(pc.and_(pc.invert(is_wet), pc.is_valid(status)), bad_status)
        status_list = status.to_pylist()
        drop(bad_status, "html:http-status", lambda i: {"http_status": status_list[i]})
        sizes_list = sizes.to_pylist()
        drop(pc.greater(sizes, p.max_html_bytes), "html:too-large", lambda i: {"html_bytes": sizes_list[i], "max_html_bytes": p.max_html_bytes})
        drop(pc.and_(pc.invert(is_wet), pc.equal(sizes, 0)), "html:empty", lambda i: {"html_bytes": 0})
        mime_list = mime.to_pylist()
        drop(pc.match_substring_regex(mime, _NOT_HTML_MIME_RE), "html:not-html", lambda i: {"mime": mime_list[i], "by": "content-type", "html_bytes": sizes_list[i]})

        # Per page: sniff the bytes, decode, extract.
        titles = _column(table, "title", n).to_pylist()
        timestamps = pc.coalesce(_column(table, "warc_date", n), _column(table, "timestamp", n)).to_pylist()
        texts = wet_text.to_pylist()
        charsets: list[str | None] = ["wet" if w else None for w in is_wet.to_pylist()]
        ctype_list = ctype.to_pylist()
        for i in range(n):
            if reason[i] is not None or charsets[i] == "wet":
                stats["wet"] += charsets[i] == "wet" and reason[i] is None
                continue
            raw = html[i].as_py()
            kind, why = hx.sniff_payload(raw, mime_list[i])
            if kind != "html":
                reason[i], signals[i] = "html:not-html", {"mime": mime_list[i], "by": "bytes", "sniffed": kind, "why": why, "html_bytes": len(raw)}
                continue
            try:
                dec = hx.decode_html(raw, ctype_list[i], detector=p.detector)
            except hx.DecodeFailure as exc:
                reason[i], signals[i] = "html:decode-error", {"content_type": ctype_list[i], "meta_charset": hx.meta_charset(raw), "html_bytes": len(raw), "why": str(exc)}
                continue
            try:
                got = ex.extract(dec.text, p.extractor, p.max_link_density, date=p.page_date, max_link_density_cjk=p.max_link_density_cjk)
            except Exception as exc:  # a parser that gives up on a page costs that page, not the run
                reason[i], signals[i] = "html:extract-error", {"error": f"{type(exc).__name__}: {exc}"[:300], "charset": dec.charset, "html_bytes": len(raw)}
                continue
            if len(got.text) < p.min_chars:
                reason[i], signals[i] = "html:empty", {"chars": len(got.text), "html_bytes": len(raw), "charset": dec.charset, "charset_source": dec.source, "extractor": p.extractor}
                continue
            texts[i], charsets[i] = got.text, dec.charset
            titles[i] = got.title or titles[i]
            timestamps[i] = got.date or timestamps[i]
            stats["charset_overridden"] += dec.overridden
            stats["charset_detected"] += dec.source == "detected"
            if dec.source == "detected" or dec.errors:  # the risky decisions; a declared charset that read cleanly is not checked (cost)
                stats["mojibake_docs"] += hx.has_mojibake(got.text)

        keep = pa.array([r is None for r in reason], pa.bool_())
        out = table.drop_columns([c for c in ("html", "text", "title", "timestamp") if c in table.column_names])  # the raw bytes stop here
        out = out.append_column("text", pa.array(texts, pa.string())).append_column("title", pa.array(titles, pa.string()))
        out = out.append_column("timestamp", pa.array(timestamps, pa.string())).append_column("charset", pa.array(charsets, pa.string()))
        kept = _conform(out.filter(keep))
        dropped_idx = [i for i, r in enumerate(reason) if r is not None]
        ledger_src = table.drop_columns(["html"]).take(pa.array(dropped_idx, pa.int64()))
        # The ledger keeps no raw bytes: its text is WET text where there was some, else empty.
        removed = removed_rows(ledger_src, self.node, [reason[i] for i in dropped_idx], [signals[i] for i in dropped_idx])
        return kept, removed, {"html_extract": stats}


def _column(table: pa.Table, name: str, n: int, typ: pa.DataType = pa.string()) -> pa.Array:
    if name in table.column_names:
        col = table[name].combine_chunks()
        return col if col.type == typ else col.cast(typ)
    return pa.nulls(n, typ)


def _conform(table: pa.Table) -> pa.Table:
    """Exactly OUT_SCHEMA's columns, in its order (missing ones null)."""
    n = table.num_rows
    cols = [_column(table, f.name, n, f.type) for f in OUT_SCHEMA]
    return pa.Table.from_arrays(cols, schema=OUT_SCHEMA)
