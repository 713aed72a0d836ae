"""Decoded HTML -> main text, title and publication date.

The shipped extractor (``resiliparse-ld``, the default) is resiliparse's main-content extraction
followed by a link-density filter on its lines; ``resiliparse``, ``trafilatura`` and
``readability`` are the maintained extractors as they are, for comparison or by choice. The
measurements behind the default (F1 per language, pages/s, on real Chinese and English pages,
with a held-out split) are in docs/html-extraction.md and ``benchmarks/bench_html.py``.

Why the link-density filter: resiliparse's main-content heuristics keep almost all of the article
(recall ~0.99) but also navigation bars, "latest posts" link lists and footers that sit in the
same containers (precision ~0.80 on Chinese portal pages). Asking resiliparse for its reduced
HTML with links (``preserve_formatting="minimal_html"``) keeps the ``<a>`` markup on each line,
so a line whose visible characters are mostly link text can be dropped, the rule jusText and
boilerpipe use, without a second parse. It counts characters, not words, so it works the same on
Chinese, which has no spaces. Lines without links are never dropped by it.
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Extractor = Literal["resiliparse-ld", "resiliparse", "trafilatura", "readability"]
EXTRACTORS: tuple[str, ...] = ("resiliparse-ld", "resiliparse", "trafilatura", "readability")
DEFAULT_EXTRACTOR = "resiliparse-ld"
DEFAULT_LINK_DENSITY = 0.5  # jusText's default is 0.2 on its paragraphs; a line is shorter, 0.5 = "mostly links"


@dataclass
class Extracted:
    text: str
    title: str | None
    date: str | None  # ISO 8601 (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[Z|±HH:MM]) from the page's metadata


# Options for resiliparse shared by both resiliparse flavours: comment sections, image alt texts,
# post metadata and image captions/credits (elements whose class says caption) are not main text
# (measured: each costs precision, see the docs). Class selectors are kept to this one: broader
# ones such as [class*=sidebar] also hit article bodies (measured: -0.03 en F1 on half the pages).
_RESILIPARSE_OPTS = dict(main_content=True, comments=False, alt_texts=False, post_meta=False, skip_elements=['[class*="caption"]'])

_TAG_RE = re.compile(r"<[^>]*>")
_LINK_RE = re.compile(r"<a\b[^>]*>(.*?)</a>", re.S | re.I)
_SPACE_RE = re.compile(r"\s+")
_BLANKS_RE = re.compile(r"\n{3,}")


def _visible(fragment: str) -> int:
    """Characters of a minimal-HTML fragment a reader sees (tags removed, entities read, no spaces)."""
    return len(_SPACE_RE.sub("", _html.unescape(_TAG_RE.sub("", fragment))))


def filter_link_lines(minimal_html: str, max_link_density: float = DEFAULT_LINK_DENSITY) -> str:
    """Plain text from resiliparse's ``minimal_html`` output, without lines whose visible characters
    are more than ``max_link_density`` link text."""
    out: list[str] = []
    for line in minimal_html.split("\n"):
        if "<a" in line:
            n = _visible(line)
            if n and sum(_visible(m) for m in _LINK_RE.findall(line)) > max_link_density * n:
                continue
        out.append(_html.unescape(_TAG_RE.sub("", line)).strip())
    return _BLANKS_RE.sub("\n\n", "\n".join(out)).strip()


def _drop_title_line(text: str, title: str | None) -> str:
    """The page title goes to the ``title`` column: drop it when it heads the text verbatim."""
    if title:
        first, _, rest = text.partition("\n")
        if first.strip() == title.strip():
            return rest.strip()
    return text


DateMode = Literal["meta", "htmldate", "none"]


def extract(html: str, extractor: str = DEFAULT_EXTRACTOR, max_link_density: float = DEFAULT_LINK_DENSITY, date: DateMode = "meta") -> Extracted:
    """Main text, title and date of one decoded page. Raises on input the parser cannot read.

    ``date``: ``meta`` reads what the page declares about itself (``page_date``); ``htmldate``
    also asks htmldate when that finds nothing (it reads dates out of URLs and visible text too:
    more pages dated, at several times the cost on those pages); ``none`` skips it."""
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    title = (tree.title or "").strip() or None
    if extractor == "resiliparse-ld":
        from resiliparse.extract.html2text import extract_plain_text

        text = filter_link_lines(extract_plain_text(tree, preserve_formatting="minimal_html", links=True, **_RESILIPARSE_OPTS), max_link_density)
    elif extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        text = extract_plain_text(tree, **_RESILIPARSE_OPTS).strip()
    elif extractor == "trafilatura":
        import trafilatura

        # datatrove's settings (favor_precision, no comments, deduplicate): the peer baseline
        text = (trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True) or "").strip()
    elif extractor == "readability":
        from readability import Document
        from resiliparse.extract.html2text import extract_plain_text

        text = extract_plain_text(Document(html).summary(html_partial=True)).strip()
    else:
        raise ValueError(f"unknown extractor {extractor!r}; choose one of {', '.join(EXTRACTORS)}")
    return Extracted(_drop_title_line(text, title), title, _date(html, date))


def _date(html: str, mode: str) -> str | None:
    if mode == "none":
        return None
    found = page_date(html)
    if found is None and mode == "htmldate":
        from htmldate import find_date

        found = normalize_date(find_date(html, extensive_search=False, original_date=True))
    return found


# ------------------------------------------------------------------------------------------
# Publication date: what the page declares about itself, in the usual machine-readable places.
# (htmldate searches the text too, at several times the cost of the whole extraction; a date read
# out of free text is also often a comment's or a "related article"'s.)

_DATE_META = {
    "article:published_time", "og:published_time", "article:published", "og:article:published_time", "datepublished",
    "pubdate", "publishdate", "publish_date", "publish-date", "publication_date", "date", "dc.date", "dc.date.issued",
    "dc.date.created", "dcterms.date", "dcterms.issued", "dcterms.created", "sailthru.date", "parsely-pub-date",
    "article.published", "published-date", "citation_publication_date", "citation_date", "originalpublicationdate",
    "weibo:article:create_at", "bytedance:published_time", "mediapub:published_time",
}
_JSONLD_DATE_RE = re.compile(r'"datePublished"\s*:\s*"([^"]{6,40})"')
_ISO_RE = re.compile(
    r"^\s*(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?"
    r"(?:[T ]\s*(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?)?"
)
_COMPACT_RE = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})(?:T?(\d{2})(\d{2})(\d{2})?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$")


@lru_cache(maxsize=4096)
def normalize_date(value: str | None) -> str | None:
    """A date as pages write it in metadata -> ISO 8601, or None when it is not one (years 1991-2100)."""
    if not value:
        return None
    m = _ISO_RE.match(value) or _COMPACT_RE.match(value)
    if not m:
        return None
    year, month, day, hh, mm, ss, tz = m.groups()
    y, mo, d = int(year), int(month), int(day)
    if not (1991 <= y <= 2100 and 1 <= mo <= 12 and 1 <= d <= 31):
        return None
    out = f"{y:04d}-{mo:02d}-{d:02d}"
    if hh is not None and int(hh) < 24 and int(mm) < 60:
        out += f"T{int(hh):02d}:{mm}:{(ss or '00')}"
        if tz:
            out += "Z" if tz == "Z" else f"{tz[:3]}:{tz[-2:]}"
    return out


# only <meta> tags that name a date-like key: most of a page's many <meta> tags are skipped unparsed
_META_TAG_RE = re.compile(r"<meta\b[^>]{0,600}?(?:date|time|pub|create)[^>]{0,600}>", re.I)
_ATTR_RE = re.compile(r"""([a-zA-Z:_.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_ITEMPROP_RE = re.compile(r"""<[a-z]+\b[^>]{0,300}?itemprop\s*=\s*["']?datePublished\b[^>]{0,300}>""", re.I)
_TIME_RE = re.compile(r"<time\b[^>]{0,300}?datetime\s*=\s*[\"']?([^\"'>\s]+)", re.I)


def _attrs(tag: str) -> dict[str, str]:
    return {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3) if m.group(3) is not None else m.group(4)) for m in _ATTR_RE.finditer(tag)}


def page_date(html: str) -> str | None:
    """The publication date a page declares: ``<meta>`` (Open Graph, Dublin Core, news sites'
    names), schema.org ``datePublished`` (JSON-LD or microdata), then the first ``<time datetime>``.
    Regular expressions over the page, not DOM queries: a query builds a Python object per node
    and cost 3x the extraction itself (measured)."""
    for m in _META_TAG_RE.finditer(html):
        attrs = _attrs(m.group(0))
        key = (attrs.get("property") or attrs.get("name") or attrs.get("itemprop") or "").strip().lower()
        if key in _DATE_META:
            found = normalize_date(_html.unescape(attrs.get("content", "")))
            if found:
                return found
    for m in _JSONLD_DATE_RE.finditer(html):
        found = normalize_date(m.group(1))
        if found:
            return found
    for m in _ITEMPROP_RE.finditer(html):
        attrs = _attrs(m.group(0))
        found = normalize_date(attrs.get("datetime") or attrs.get("content") or html[m.end() : m.end() + 40])
        if found:
            return found
    m = _TIME_RE.search(html)
    return normalize_date(m.group(1)) if m else None
