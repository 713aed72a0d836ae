"""``<out>/ATTRIBUTION.md``: the attribution each source's license asks for.

Per source: the license notice with a link, the source's own attribution line, and a
statement that the text was modified, listing what each node upstream of ``data/`` did to it.
For sources licensed under CC BY / CC BY-SA / GFDL (Wikipedia's per-article method) and for
Wikimedia dumps, every remaining document is credited by its URL: inline when the output is
small, and always in ``ATTRIBUTION-urls.tsv.gz`` (source, id, title, url; data/ order).

Document titles and URLs come from the data: they are escaped for Markdown and HTML, and only
http(s) URLs become links.
"""

from __future__ import annotations

import gzip
import html
import os
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

from pipeline.audit.lineage import RunInfo, data_shards, iter_batches, load_run
from pipeline.common import storage

URLS_FILE = "ATTRIBUTION-urls.tsv.gz"
INLINE_LIMIT = 10_000  # documents listed in ATTRIBUTION.md itself; beyond, only the .tsv.gz
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#|~])")  # "(" and "!" are inert once "[" and "]" are escaped
_PER_DOCUMENT_LICENSE = re.compile(r"^(CC-BY|GFDL)", re.IGNORECASE)  # credit "by URI or hyperlink" to each work


# -------------------------------------------------------------------------------- markdown
def md_escape(text) -> str:
    """Text from the data, safe inline in Markdown and HTML: one line, specials escaped."""
    text = " ".join(str(text if text is not None else "").split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", text), quote=False)


def safe_url(url: str | None) -> str | None:
    """An http(s) URL percent-encoded for a Markdown link target, else None (no javascript: links)."""
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    if scheme not in ("http", "https"):
        return None
    return quote(url, safe=":/?#[]@!$&'*+,;=%~")


def md_link(label, url: str | None) -> str:
    target = safe_url(url)
    if target:
        return f"[{md_escape(label)}]({target})"
    return md_escape(label) + (f" ({md_escape(url)})" if url else "")


def md_code(text) -> str:
    """Inline code for identifiers (node names, SPDX ids): backticks cannot be escaped inside."""
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


# ------------------------------------------------------------------------------ text changes
def _join(items) -> str:
    return ", ".join(str(i) for i in items)


def _clean(p: dict) -> tuple[bool, str]:
    ops = []
    if p.get("fix_unicode"):
        ops.append("mojibake repaired (ftfy)")
    if p.get("normalization"):
        ops.append(f"Unicode {p['normalization']} normalization")
    if p.get("whitespace") and p["whitespace"] != "none":
        ops.append(f"whitespace normalized ({p['whitespace']})")
    if p.get("boilerplate"):
        ops.append("boilerplate lines removed")
    if p.get("opencc"):
        ops.append(f"script converted with OpenCC {p['opencc']}")
    if p.get("pii"):
        ops.append(f"personal data redacted ({_join(p.get('pii_types') or [])})")
    return bool(ops), "; ".join(ops) or "no change to the text"


def _extract(p: dict) -> tuple[bool, str]:
    sections = _join(p["drop_sections"]) if p.get("drop_sections") else "references, see also, external links and the like"
    return True, (
        f"wikitext converted to plain text (templates, references, tables, files and markup removed; "
        f"language-variant markup resolved to {p.get('variant', '?')}); sections dropped: {sections}; "
        f"namespaces kept: {_join(p.get('namespaces') or [])}{'; redirects dropped' if p.get('drop_redirects') else ''}"
    )


TEXT_CHANGES = {
    "wikitext_extract": _extract,
    "clean": _clean,
    "lid_filter": lambda p: (False, f"documents selected by language (keep {_join(p.get('keep'))}, min score {p.get('min_score')}); text unchanged" if p.get("keep") else "documents labelled with their language; none selected; text unchanged"),
    "quality_filter": lambda p: (False, f"documents selected by quality rules (preset {p.get('preset')}); text unchanged"),
    "dedup": lambda p: (False, f"duplicates removed ({'exact' if p.get('exact') else ''}{' and ' if p.get('exact') and p.get('near') else ''}{'near, Jaccard ' + str(p.get('threshold')) if p.get('near') else ''}); text unchanged"),
    "concat": lambda p: (False, "inputs concatenated; text unchanged"),
}


def text_changes(run: RunInfo, source: str | None = None) -> list[dict]:
    """What each stage upstream of data/ did, for one source's documents (``node, impl, modifies, what``).
    An unknown stage is assumed to modify text."""
    out = []
    reach = _downstream_of(run, source) if source else set(run.chain)
    for name in run.chain:
        rec = run.node(name)
        if rec.get("kind") == "source" or name not in reach:
            continue
        impl = rec.get("impl", "?")
        fn = TEXT_CHANGES.get(impl)
        modifies, what = fn(rec.get("params") or {}) if fn else (True, "may have changed the text (no description known for this stage)")
        out.append({"node": name, "impl": impl, "modifies": modifies, "what": what})
    return out


def _downstream_of(run: RunInfo, source: str) -> set[str]:
    reach = {source}
    for name in run.chain:  # topological order: one pass suffices
        if any(i in reach for i in run.node(name).get("inputs") or []):
            reach.add(name)
    return reach


def license_ids(expression: str) -> list[str]:
    """The license ids of an SPDX expression (the manifest's cached licensing: building one costs ~0.1 s)."""
    from pipeline.core.spdx import licensing as _spdx

    try:
        return sorted({str(s.key) for s in _spdx().parse(expression).symbols}) if expression else []
    except Exception:  # rejected at manifest load; keep an old output's cards writable
        return [expression]


def per_document(src: dict) -> bool:
    """Sources credited document by document: Wikimedia dumps, and CC BY(-SA) / GFDL licenses."""
    return src.get("kind") == "wikimedia-dump" or any(_PER_DOCUMENT_LICENSE.match(k) for k in license_ids(src.get("license") or ""))


# ---------------------------------------------------------------------------------- writing
def _stream_urls(run: RunInfo, wanted: set[str], inline_limit: int) -> tuple[dict, dict, Path | None]:
    """One pass over data/: per wanted source, documents with and without URL; writes the
    .tsv.gz (deterministic gzip: no name, mtime 0) and keeps at most ``inline_limit`` entries."""
    counts: dict[str, dict[str, int]] = {s: {"with_url": 0, "without_url": 0} for s in wanted}
    inline: dict[str, list[tuple[str, str]]] | None = {s: [] for s in wanted}
    dest = run.out_dir / URLS_FILE
    if not wanted:
        dest.unlink(missing_ok=True)
        return counts, {}, None
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    total = 0
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(b"source\tid\ttitle\turl\n")
        for shard in data_shards(run.out_dir):
            for batch in iter_batches(shard):
                cols = {c: batch.column(c).to_pylist() if c in batch.schema.names else [None] * batch.num_rows for c in ("source", "id", "title", "url")}
                for src, doc_id, title, url in zip(cols["source"], cols["id"], cols["title"], cols["url"]):
                    if src not in wanted:
                        continue
                    if not url:
                        counts[src]["without_url"] += 1
                        continue
                    counts[src]["with_url"] += 1
                    fields = [" ".join(str(v or "").split()) for v in (src, doc_id, title, url)]  # one line per row: no tabs or newlines
                    gz.write(("\t".join(fields) + "\n").encode("utf-8"))
                    total += 1
                    if inline is not None:
                        if total > inline_limit:
                            inline = None  # too many for the .md: the .tsv.gz alone lists them
                        else:
                            inline[src].append((title or doc_id or url, url))
        raw.flush()
    os.replace(tmp, dest)
    return counts, inline or {}, dest


def write_attribution(out_dir: str | Path, *, inline_limit: int = INLINE_LIMIT) -> Path:
    run = load_run(out_dir)
    lic = run.licenses
    in_output = set(run.chain)
    sources = [s for s in run.sources if s["name"] in in_output]
    wanted = {s["name"] for s in sources if per_document(s)}
    counts, inline, urls_file = _stream_urls(run, wanted, inline_limit)
    name = run.lock.get("name", "dataset")
    lines = [
        f"# Attribution: {md_escape(name)}",
        "",
        f"This dataset is an adaptation of the works below: their texts were selected and modified by grist-pipeline "
        f"{md_escape(run.provenance.get('pipeline_version', ''))} (`README.md` describes how). Each section gives the source's license "
        "with a link to it, the attribution the source asks for, and the changes made.",
        "",
        f"- **License of this dataset**: {md_code(lic.get('output_license') or '?')}",
    ]
    for ob in lic.get("obligations") or []:
        lines.append(f"- **Obligation**: {md_escape(ob)}")
    if urls_file:
        lines.append(f"- **Per-document credits**: `{URLS_FILE}` (gzip, tab-separated `source, id, title, url`, one line per document of `data/`, in its order).")
    lines.append("")
    for src in sources:
        sname = src["name"]
        lines += [f"## {md_escape(sname)}", ""]
        lic_line = md_code(src.get("license"))
        if src.get("license_url"):
            lines.append(f"- **License**: {lic_line}: {md_link(src['license_url'], src['license_url'])}")
        else:
            lines.append(f"- **License**: {lic_line} (https://spdx.org/licenses/)")
        override = src.get("license_override") or {}
        if override:
            lines.append(f"- **License classified by override**: {md_escape(override.get('justification'))}")
        if src.get("attribution"):
            lines.append(f"- **Attribution**: {md_escape(src['attribution'])}")
        if src.get("homepage"):
            lines.append(f"- **Homepage**: {md_link(src['homepage'], src['homepage'])}")
        if src.get("citation"):
            lines.append(f"- **Citation**: {md_escape(src['citation'])}")
        changes = text_changes(run, sname)
        modified = [c for c in changes if c["modifies"]]
        lines.append(f"- **Modified**: {'yes' if modified else 'no (documents selected only)'}. Changes, in order:")
        for c in changes:
            lines.append(f"  - {md_code(c['node'])} ({md_escape(c['impl'])}): {md_escape(c['what'])}")
        if sname in wanted:
            n, missing = counts[sname]["with_url"], counts[sname]["without_url"]
            lines.append(f"- **Documents credited by URL**: {n:,}" + (f" ({missing:,} documents have no URL and are credited by the notice above)" if missing else ""))
            lines.append("")
            if sname in inline:
                lines.append(f"### Documents from {md_escape(sname)} ({n:,})")
                lines.append("")
                lines.append("Each document's text is adapted from the page below; the page's history lists its authors.")
                lines.append("")
                lines += [f"- {md_link(title, url)}" for title, url in inline[sname]]
            else:
                lines.append(f"The {n:,} document URLs are listed in `{URLS_FILE}` (more than {inline_limit:,} documents: too many for this file).")
        lines.append("")
    dest = run.out_dir / "ATTRIBUTION.md"
    storage.atomic_write_text(dest, "\n".join(lines).rstrip() + "\n")
    return dest
