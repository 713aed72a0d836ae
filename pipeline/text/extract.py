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
so a line whose letters are mostly link text can be dropped, the rule jusText and boilerpipe use,
without a second parse. It counts letters, not words, so it works the same on Chinese, which has
no spaces; digits, punctuation and spaces do not count (the date and counter after a link-list
item are decoration). Lines in Chinese/Japanese/Korean script have a lower limit (link lists there
are dense) than lines in other scripts (English sentences link whole phrases). Lines without links
are never dropped by it.

Then ``trim_boilerplate`` drops what the ground truth of real pages never counts as main text
and what sits in the same containers as the article: everything up to the headline (the headline
is the ``title`` column; before it come cookie banners, menus, slogans), short non-sentence lines
and date/byline lines at either end of the text, and, anywhere, copyright lines, cookie notices and
advertisement labels. Each rule was chosen on one half of the real pages and checked on the other
(docs/html-extraction.md).
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
# Most of a line's letters may be link text before it is dropped: lines in other scripts (English
# sentences link whole phrases) / lines in CJK script (link lists with dates and counters). Chosen
# on the dev half of the real pages, checked on the held-out half (docs/html-extraction.md).
DEFAULT_LINK_DENSITY = 0.75
DEFAULT_LINK_DENSITY_CJK = 0.3


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


_NOT_LETTER_RE = re.compile(r"[\W\d_]+")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _letters(fragment: str) -> str:
    """The letters of a minimal-HTML fragment a reader sees (tags removed, entities read; no digits,
    punctuation or spaces)."""
    return _NOT_LETTER_RE.sub("", _html.unescape(_TAG_RE.sub("", fragment)))


def filter_link_lines(minimal_html: str, max_link_density: float = DEFAULT_LINK_DENSITY, max_link_density_cjk: float = DEFAULT_LINK_DENSITY_CJK) -> str:
    """Plain text from resiliparse's ``minimal_html`` output, without lines whose letters are more
    than ``max_link_density`` link text (``max_link_density_cjk`` for lines whose letters are at
    least 30% Chinese/Japanese/Korean)."""
    out: list[str] = []
    for line in minimal_html.split("\n"):
        if "<a" in line:
            letters = _letters(line)
            if letters:
                share = sum(len(_letters(m)) for m in _LINK_RE.findall(line)) / len(letters)
                # the script decides only between the two limits (saves counting CJK on most lines)
                if share > max_link_density_cjk or share > max_link_density:
                    if share > max_link_density_cjk and share > max_link_density:
                        continue
                    cjk = len(_CJK_RE.findall(letters)) >= 0.3 * len(letters)
                    if share > (max_link_density_cjk if cjk else max_link_density):
                        continue
        out.append(_html.unescape(_TAG_RE.sub("", line)).strip())
    return _BLANKS_RE.sub("\n\n", "\n".join(out)).strip()


# ------------------------------------------------------------------------------------------
# Boilerplate lines around the article (resiliparse-ld)

_TITLE_SEP_RE = re.compile(r"\s+[|\-–—:·»]\s+|\s*[|｜_]\s*|\s+::\s+")
_WORD_RE = re.compile(r"[^\W\d_]+|\d+")
# a line that ends like a sentence (or a quotation); ':' and ')' do not ("Filed under:", "Comments (3)")
_SENTENCE_END_RE = re.compile(r"[.!?。！？…\"”’»」』]\s*$")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE_RE = re.compile(
    r"\b\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?"
    r"|\b" + _MONTH + r"\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}"
    r"|\b\d{1,2}(?:st|nd|rd|th)?\.?\s+" + _MONTH + r",?\s+\d{4}"
    r"|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b",
    re.I,
)
_CLOCK_RE = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*(?i:[ap]\.?m\.?)?(?:\s*[A-Z]{2,4}\b)?")
# "Copyright law ..." or "(c) the third option" are text: a copyright line has the sign or a year
_COPYRIGHT_RE = re.compile(r"^\W{0,3}(?:©|ⓒ|copyright\s*(?:©|ⓒ|\(c\)|\d{4})|\(c\)\s*\d{4})|all rights reserved|版权所有(?!者)|版權所有(?!者)|무단전재", re.I)
# a cookie notice is the site speaking of itself and consent; "use a cookie cutter" is not
_COOKIE_RE = re.compile(r"\bcookies?\b", re.I)
_COOKIE_VERB_RE = re.compile(r"\b(?:accept\w*|consent\w*|agree\w*|polic(?:y|ies)|settings|privacy|websites?|site|browser|browsing|tracking|opt[- ]out)\b", re.I)
_COOKIE_WHO_RE = re.compile(r"\b(?:we|our|us|this (?:web)?site)\b", re.I)
_ANYWHERE_KEYS = ("cookie", "©", "ⓒ", "(c)", "copyright", "all rights reserved", "版权所有", "版權所有", "무단전재")
_AD_LABEL_RE = re.compile(
    r"^\W*(?:advertisements?|advertising|ad|sponsored(?: content)?"
    r"|(?:continue reading|story continues|article continues|content continues)(?: below)?(?: (?:the )?(?:advertisement|ad))?"
    r"|scroll to continue(?: with content)?|iklan|anzeige|werbung|publicité|publicidad|реклама|广告|廣告|推广)\W*$",
    re.I,
)
_SHORT_UNITS = 8  # a line under 8 words (a CJK character counts half a word) that is not a sentence
_DATE_LINE_UNITS = 7  # a date with at most 7 other words ("Published", a name, a place)
_MAX_EDGE_LINES = 8  # lines peeled off each end at most: a text of short lines (a list, a poem) stays
_HEAD_WINDOW = 1 / 3  # the headline is looked for in the first third of the lines (at least 6) ...
_HEAD_MAX_SHARE = 1 / 3  # ... and cuts at most a third of the text's characters


def _units(line: str) -> float:
    """Length in words; Chinese/Japanese/Korean characters count half a word each."""
    n_cjk = len(_CJK_RE.findall(line))
    return len(_WORD_RE.findall(_CJK_RE.sub(" ", line) if n_cjk else line)) + n_cjk / 2


def _norm(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip().lower()


def _title_parts(title: str) -> set[str]:
    """The title and its runs of parts between separators ("Headline | Site", "站点_栏目_标题"), of
    at least 6 visible characters."""
    parts = [p for p in _TITLE_SEP_RE.split(_norm(title)) if p]
    found = {_norm(title)} | {" ".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}
    return {p for p in found if len(p.replace(" ", "")) >= 6}


def _is_date_line(line: str) -> bool:
    return len(line) <= 160 and bool(_DATE_RE.search(line)) and _units(_CLOCK_RE.sub(" ", _DATE_RE.sub(" ", line))) <= _DATE_LINE_UNITS


def _is_copyright(line: str) -> bool:
    return len(line) < 250 and bool(_COPYRIGHT_RE.search(line))


def _is_cookie_notice(line: str) -> bool:
    return len(line) < 600 and bool(_COOKIE_RE.search(line)) and bool(_COOKIE_VERB_RE.search(line)) and bool(_COOKIE_WHO_RE.search(line))


def trim_boilerplate(text: str, title: str | None, *, headline: bool = True, anywhere: bool = True, edges: bool = True) -> str:
    """``text`` without the boilerplate lines around the article:

    1. the headline and everything before it: the first line, in the first third of the lines,
       that is the page title or a part of it between separators (or a 20+ character start of it),
       unless that would cut more than a third of the text;
    2. anywhere: copyright lines, cookie notices, advertisement labels ("Advertisement",
       "Story continues below");
    3. at each end (up to 8 lines each): lines that are short and not a sentence (menus, "Share",
       "Post comment", credits), date and byline lines ("Published Nov 20, 2019 07:50 GMT"),
       unless these are half the text or more (then the text is a list, a table, a poem).

    The keywords turn each rule off, for the benchmark's ablation.
    """
    lines = text.split("\n")
    total = len(text)
    if title and headline:
        parts, title_n = _title_parts(title), _norm(title)
        longest = 3 * len(title) + 20  # a longer line cannot be the title, even padded with spaces
        window = max(6, int((len(lines) - lines.count("")) * _HEAD_WINDOW))
        seen = chars = 0
        for i, line in enumerate(lines):
            chars += len(line) + 1
            if not line.strip():
                continue
            seen += 1
            if seen > window:
                break
            if len(line) <= longest and ((n := _norm(line)) in parts or (len(n) >= 20 and title_n.startswith(n))):
                if chars <= _HEAD_MAX_SHARE * total:
                    lines, total = lines[i + 1 :], total - chars
                break
    drop: set[int] = set()
    if anywhere:
        # one pass over the whole text finds the few candidate lines; each is then checked alone
        text = "\n".join(lines)
        found = {line.strip() for line in lines if len(line) < 60 and _AD_LABEL_RE.match(line)}
        low = text.lower()  # str.find on the lowered text: 10x faster than a case-insensitive regex scan
        for key in _ANYWHERE_KEYS:
            at = low.find(key)
            while at >= 0:
                end = low.find("\n", at)
                end = len(low) if end < 0 else end
                line = text[low.rfind("\n", 0, at) + 1 : end].strip()
                if _is_copyright(line) or _is_cookie_notice(line):
                    found.add(line)
                at = low.find(key, end)
        if found:
            drop = {i for i, line in enumerate(lines) if line and line.strip() in found}
    peel: set[int] = set()
    for order in (range(len(lines)), range(len(lines) - 1, -1, -1)) if edges else ():
        peeled = 0
        for i in order:
            line = lines[i].strip()
            if not line or i in drop or i in peel:
                continue
            if peeled < _MAX_EDGE_LINES and len(line) <= 200 and ((_units(line) < _SHORT_UNITS and not _SENTENCE_END_RE.search(line)) or _is_date_line(line)):
                peel.add(i)
                peeled += 1
            else:
                break
    # a text made only of short lines (a list, a poem, a table) is what the page has: keep it
    if peel and sum(len(lines[i]) for i in peel) <= 0.5 * (total - sum(len(lines[i]) for i in drop)):
        drop |= peel
    if not drop:
        return "\n".join(lines).strip()
    return _BLANKS_RE.sub("\n\n", "\n".join(line for i, line in enumerate(lines) if i not in drop)).strip()


def _drop_title_line(text: str, title: str | None) -> str:
    """The page title goes to the ``title`` column: drop it when it heads the text verbatim."""
    if title:
        first, _, rest = text.partition("\n")
        if first.strip() == title.strip():
            return rest.strip()
    return text


DateMode = Literal["meta", "htmldate", "none"]


def extract(html: str, extractor: str = DEFAULT_EXTRACTOR, max_link_density: float = DEFAULT_LINK_DENSITY, date: DateMode = "meta",
            max_link_density_cjk: float = DEFAULT_LINK_DENSITY_CJK) -> Extracted:
    """Main text, title and date of one decoded page. Raises on input the parser cannot read.

    ``max_link_density`` / ``max_link_density_cjk``: resiliparse-ld's link-density limits for
    lines in other scripts / in Chinese, Japanese or Korean script.

    ``date``: ``meta`` reads what the page declares about itself (``page_date``); ``htmldate``
    also asks htmldate when that finds nothing (it reads dates out of URLs and visible text too:
    more pages dated, at several times the cost on those pages); ``none`` skips it."""
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    title = (tree.title or "").strip() or None
    if extractor == "resiliparse-ld":
        from resiliparse.extract.html2text import extract_plain_text

        minimal = extract_plain_text(tree, preserve_formatting="minimal_html", links=True, **_RESILIPARSE_OPTS)
        text = trim_boilerplate(filter_link_lines(minimal, max_link_density, max_link_density_cjk), title)
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
    # resiliparse-ld has dropped the headline already; the other extractors are measured as they are
    return Extracted(text if extractor == "resiliparse-ld" else _drop_title_line(text, title), title, _date(html, date))


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
