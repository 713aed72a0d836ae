"""MediaWiki wikitext -> clean plain text for LM pretraining.

Public API
----------
``DEFAULT_DROP_SECTIONS``
    Lower-cased heading titles (zh-hans/zh-hant, en, ja, bg) whose whole
    section -- heading plus everything up to the next heading of the same or a
    higher level -- is dropped (references, notes, see also, external links...).
``resolve_variants(text, variant="zh-hans")``
    Resolves zhwiki language-conversion markup ``-{ ... }-`` to the text of one
    variant.  mwparserfromhell does not know this syntax, so it is the only
    thing pre-processed before parsing.
``wikitext_to_text(wikitext, *, variant="zh-hans", drop_sections=...)``
    ``resolve_variants`` + mwparserfromhell (tokenize, prune, build) + a walk
    over the node tree that emits only reader-visible prose + normalisation.

What is dropped / kept
----------------------
* Dropped: templates and parser functions (except the whitelist below),
  template arguments ``{{{x}}}``, comments, magic words (``__TOC__``, any
  ``__UPPER__``, a few CJK aliases), file/image/media links (English namespace
  names case-insensitively, 文件 檔案 档案 文檔 文档 图像 圖像 图片 圖片 媒体 媒體
  ファイル 画像 メディア and a few European aliases) including their captions,
  category links (Category 分类 分類 カテゴリ ...), interlanguage links (a
  language-code prefix such as ``en:``/``ja:``/``zh-yue:`` and no leading
  colon), wiki tables ``{| |}`` (nested too) and HTML tables, bare URLs and
  ``[http://x]`` without a title, horizontal rules, list markers.
* Tags whose whole *content* is dropped (``DROP_TAGS``): ref, references,
  math, chem, ce, gallery, timeline, score, graph, mapframe, maplink,
  imagemap, hiero, inputbox, categorytree, templatedata, templatestyles,
  includeonly, indicator, syntaxhighlight, source, pre, style, script and the
  table tags.  Block code (syntaxhighlight/source/pre) is dropped on purpose:
  it is rare in articles and it is where leftover ``{{``/``[[`` come from in
  articles *about* markup or programming languages.  Inline code (``<code>``,
  ``<tt>``, ``<kbd>``, ``<var>``) keeps its text: it sits inside sentences.
* Every other tag keeps its content (b, i, u, s, del, ins, span, small, big,
  sup, sub, font, center, blockquote, poem, div, p, code, ruby, abbr,
  onlyinclude, noinclude, ...).  Block tags (div, p, blockquote, center,
  poem, HTML lists/headings) start a new line; ``<br>`` becomes a newline;
  ``<nowiki>`` content is kept literally (entities decoded).
* ``'''``/``''`` are removed and their text kept (also when unbalanced);
  stray unparsed tags (``</div>`` without opener, unclosed ``<ref name=x>``)
  are removed.  Entities are decoded; ``&nbsp;`` becomes a plain space.
* Markup mwparserfromhell could not parse stays plain text in its tree (a
  table with a broken attribute, ``{{`` inside a failed construct, a file
  link whose caption spans lines).  ``_scrub`` removes what survives of it
  from the output: wiki-table lines from ``{|`` to ``|}``, balanced
  ``{{...}}`` spans, ``[[...]]`` (rendered like links), lone ``{{ }} [[ ]]``.
  That includes such text inside ``<nowiki>``.
* Template whitelist -- inline templates that carry sentence text (names are
  compared case-insensitively, ``_`` = space, ``Template:``/``模板:`` prefix ok):
    - ``lang`` -> positional 2; ``lang-xx`` (any suffix) -> positional 1
    - ``le``, ``link-xx`` (link-en, link-ja, ...), ``ill``,
      ``interlanguage link``, ``仮リンク`` -> positional 1 (the local name)
    - ``tsl`` / ``translink`` (``{{tsl|en|Foreign|本地}}``) -> positional 3,
      else positional 2
    - ``nowrap``, ``nobr``, ``not a typo``, ``not typo``, ``nihongo``,
      ``読み仮名``, ``読み仮名_ruby不使用`` -> positional 1
  Everything else is dropped.
* Links: ``[[a|b]]`` -> b, ``[[a]]`` -> a, trails (``[[a]]s`` -> as), pipe
  trick ``[[a (b)|]]`` -> a (also used when the display text was all
  dropped markup), ``[[:Category:X|y]]`` -> y, ``[[:Category:X]]`` -> X,
  interwiki ``[[wikt:foo]]`` -> foo.  ``[http://x title]`` -> title.
* Sections whose title (whitespace-collapsed, case-folded) is in
  ``drop_sections`` are dropped with their subsections; a heading whose
  section ends up empty (e.g. only a gallery) is dropped too.

Output format
-------------
Headings on their own line with a blank line before and after, paragraphs
separated by exactly one blank line, list items one per line, no trailing
whitespace, never 3+ newlines, stripped.  Where markup is removed nothing is
inserted (a removal between two spaces leaves one space), so CJK sentences
survive verbatim: ``北京是中国的首都<ref>x</ref>，也是[[直辖市]]。`` ->
``北京是中国的首都，也是直辖市。``.  Spacing of untouched text is kept as is.
Empty ``()``/``（）`` left behind by removed templates are removed.

Never raises: on a parser/walk failure, or on input that would make the
tokenizer slow (see below), a linear regex fallback (``_crude``) is used.

Performance
-----------
Measured with (one process, AMD EPYC, Python 3.11.7, mwparserfromhell 0.7.2
with its C tokenizer; ns-0 non-redirect pages; conversion time only; MB =
UTF-8 bytes of wikitext)::

    D=../shared/corpora/wikidumps
    python -m pipeline.io.formats.wikitext $D/enwiki-sample-multistream.xml.bz2 \\
        $D/enwiki-table-markup.xml.bz2 $D/jawiki-truncated-100k.xml.xz \\
        $D/bgwiki-utf16-shortened.xml.bz2

    enwiki-sample-multistream   106 docs   5.75 MB   83 docs/s   4.5 MB/s
    enwiki-table-markup           5 docs   0.24 MB   85 docs/s   4.0 MB/s
    jawiki-truncated-100k       189 docs   9.34 MB   90 docs/s   4.5 MB/s
    bgwiki-utf16-shortened        1 doc    0.02 MB  367 docs/s   7.6 MB/s
    total                       301 docs  15.34 MB   88 docs/s   4.5 MB/s

The largest page (188 KB of enwiki wikitext) takes ~50 ms, the slowest one (a
170 KB jawiki page) ~130 ms.  Leftover markup (any of ``{{``, ``[[``, ``-{``,
``<ref``, ``'''``, ``{|``, ``Category:``, ``thumb|``) on those 301 pages: 0.
On the zhwiki-shaped pages that ``tests/support/wikidump.build_pages`` makes
from ``shared/corpora/zhwiki-articles`` (100 pages): 214 docs/s, 5.4 MB/s,
and all 13,427 expected body sentences come out verbatim.
Plain ``mwparserfromhell.parse`` + the same walk ran at ~1.2 MB/s; ~85% of
that time is mwparserfromhell's pure-Python Builder, hence the token pruning
described at ``_prune``.

mwparserfromhell's tokenizer retries every unclosed construct, so hundreds of
unclosed ``{{``/``[[``/``<tag>``/``<!--`` make it quadratic (8,000 unclosed
``{{a|`` take ~40 s).  ``_pathological`` spots such input with a few
``str.count`` calls and sends it to ``_crude``; real articles are far from
the limit (largest imbalance on the samples: 9).  ``-{ }-`` nested deeper
than 20 levels is taken literally for the same reason.
"""

from __future__ import annotations

import functools
import html
import re
from typing import Callable

import mwparserfromhell
from mwparserfromhell.nodes import (
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)

__all__ = ["DEFAULT_DROP_SECTIONS", "resolve_variants", "wikitext_to_text"]

DEFAULT_DROP_SECTIONS: frozenset[str] = frozenset(
    s.casefold()
    for s in (
        # zh (simplified + traditional)
        "参考文献", "參考文獻", "参考资料", "參考資料", "参考", "參考", "参考来源", "參考來源",
        "资料来源", "資料來源", "来源", "來源", "注释", "註釋", "注釋", "注解", "註解", "脚注", "腳註",
        "外部链接", "外部連結", "外部鏈接", "外部連接", "外部链结", "参见", "參見", "参看", "參看",
        "相关条目", "相關條目", "相关词条", "相關詞條", "延伸阅读", "延伸閱讀", "扩展阅读", "擴展閱讀",
        "进一步阅读", "進一步閱讀", "引用", "文献", "文獻", "参考书目", "參考書目", "研究书目",
        "研究書目", "外部连结", "外部连接",
        # en
        "references", "reference", "notes", "footnotes", "see also", "external links",
        "external link", "further reading", "sources", "bibliography", "citations",
        "notes and references", "references and notes", "works cited",
        # ja
        "関連項目", "出典", "外部リンク", "注釈", "参考文献", "脚注", "関連文献",
        # bg
        "източници", "бележки", "външни препратки", "вижте също", "литература",
    )
)

# --------------------------------------------------------------------------
# Language variants  -{ ... }-
# --------------------------------------------------------------------------

_ZH_HANS = ("zh-hans", "zh-cn", "zh-sg", "zh-my")
_ZH_HANT = ("zh-hant", "zh-tw", "zh-hk", "zh-mo")
_VARIANT_CODES = (
    "zh-hans|zh-hant|zh-cn|zh-tw|zh-hk|zh-mo|zh-sg|zh-my|zh|"
    "sr-ec|sr-el|kk-cyrl|kk-latn|kk-arab|kk-kz|kk-tr|kk-cn|ku-arab|ku-latn|"
    "tg-cyrl|tg-latn|uz-cyrl|uz-latn|gan-hans|gan-hant|gan|ike-cans|ike-latn|"
    "shi-tfng|shi-latn|crh-cyrl|crh-latn|en-us|en-gb"
)
_CODE = rf"(?:{_VARIANT_CODES})(?![\w-])"
_LC_TOKEN = re.compile(r"-\{|\}-")
_LC_FLAGS = re.compile(r"\s*([A-Za-z;\-\s]*?)\s*\|")
_LC_RULE_SPLIT = re.compile(rf";(?=\s*(?:[^;]*?=>\s*)?{_CODE}\s*:)")
_LC_RULE = re.compile(rf"\s*(?:([^;]*?)=>\s*)?({_CODE})\s*:(.*)\Z", re.S)
_LC_VALID_FLAGS = frozenset("ATRDHN-SE")  # MediaWiki's flags (S and E: no effect here)
_LC_CODE_RE = re.compile(rf"{_CODE}\Z")
_LC_MAX_DEPTH = 20  # deeper -{ are literal text (keeps nested resolution linear)


def _fallback_order(variant: str) -> tuple[str, ...]:
    v = (variant or "zh-hans").strip().lower()
    if v in _ZH_HANT or v == "zh-hant":
        fam = _ZH_HANT + ("zh",) + _ZH_HANS
    elif v in _ZH_HANS or v == "zh":
        fam = _ZH_HANS + ("zh",) + _ZH_HANT
    else:
        return (v,)
    out = [v]
    out.extend(c for c in fam if c != v)
    return tuple(out)


def _convert_rule(inner: str, order: tuple[str, ...]) -> str:
    """Text of one ``-{inner}-`` block for the variant whose fallback is ``order``."""
    body = inner
    flags: set[str] = set()
    m = _LC_FLAGS.match(inner)
    if m:
        body = inner[m.end():]
        for tok in m.group(1).split(";"):
            tok = tok.strip()
            if not tok:
                continue
            if tok in _LC_VALID_FLAGS:
                flags.add(tok)
            elif _LC_CODE_RE.match(tok.lower()):
                flags.add("variant")
            # anything else before the first "|" is ignored, as MediaWiki does
    if "R" in flags:
        return body
    if flags & {"H", "T", "D", "-", "N"}:
        return ""
    chunks = _LC_RULE_SPLIT.split(body)
    rules: dict[str, str] = {}
    first: str | None = None
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):
        rm = _LC_RULE.match(chunk)
        if not rm:
            continue
        text = rm.group(3).strip()
        if i == last and text.endswith(";"):
            text = text[:-1].rstrip()
        code = rm.group(2).lower()
        rules.setdefault(code, text)
        if first is None:
            first = text
    if first is None:  # no rules: -{X}- -> X verbatim
        return body
    for code in order:
        if code in rules:
            return rules[code]
    return first


def resolve_variants(text: str, variant: str = "zh-hans") -> str:
    """Replace every balanced ``-{...}-`` block by the text for ``variant``.

    Nested blocks are resolved innermost first.  A ``}-`` that closes a
    ``{{``/``{`` opened inside the block (``-{zh-hans:{{x}}-y}-``) is not taken
    as the block end.  ``-{`` directly followed by a single ``{`` (as in
    ``{{a}}-{{b}}``) is not an opener.  Unbalanced ``-{`` stays literal.
    """
    if not text or "-{" not in text:
        return text or ""
    order = _fallback_order(variant)
    buf: list[str] = []
    stack: list[tuple[list[str], int]] = []  # (outer buffer, body start)
    pos = 0
    scan = 0
    n = len(text)
    search = _LC_TOKEN.search
    while scan < n:
        m = search(text, scan)
        if m is None:
            break
        s = m.start()
        if m.group() == "-{":
            if (text.startswith("{", s + 2) and not text.startswith("{{", s + 2)) or len(
                stack
            ) >= _LC_MAX_DEPTH:
                scan = s + 2
                continue
            buf.append(text[pos:s])
            stack.append((buf, s + 2))
            buf = []
            pos = scan = s + 2
        else:  # "}-"
            if not stack:
                scan = s + 1
                continue
            start = stack[-1][1]
            if s - start < 4096 and text.count("{", start, s) > text.count("}", start, s):
                scan = s + 1  # this "}" closes a brace opened inside the block
                continue
            buf.append(text[pos:s])
            inner = "".join(buf)
            buf = stack.pop()[0]
            buf.append(_convert_rule(inner, order))
            pos = scan = s + 2
    buf.append(text[pos:])
    if not stack:
        return "".join(buf)
    # unbalanced openers stay literal: level k's buffer, "-{", level k+1's ...
    levels = [entry[0] for entry in stack] + [buf]
    return "-{".join("".join(level) for level in levels)


# --------------------------------------------------------------------------
# Wikitext -> text
# --------------------------------------------------------------------------

_FILE_NS = frozenset(
    s.casefold()
    for s in (
        "file", "image", "media", "文件", "檔案", "档案", "文檔", "文档", "图像", "圖像", "图片",
        "圖片", "媒体", "媒體", "ファイル", "画像", "メディア", "файл", "картинка", "изображение",
        "медия", "datei", "bild", "fichier", "archivo", "imagen", "immagine", "ficheiro",
        "afbeelding", "bestand", "plik", "soubor", "파일", "그림",
    )
)
_CATEGORY_NS = frozenset(
    s.casefold()
    for s in (
        "category", "分类", "分類", "カテゴリ", "категория", "kategorie", "catégorie",
        "categoría", "categoria", "categorie", "kategoria", "kategorie", "분류", "kategori",
    )
)
# Interwiki prefixes that are *not* interlanguage links (link text is kept).
_INTERWIKI = frozenset(
    (
        "w", "wikipedia", "wikt", "wiktionary", "s", "wikisource", "b", "wikibooks",
        "q", "wikiquote", "n", "wikinews", "v", "wikiversity", "voy", "wikivoyage",
        "c", "commons", "m", "meta", "mw", "species", "wikispecies", "d", "wikidata",
        "wmf", "foundation", "incubator", "phab", "outreach",
    )
)
_LANG_PREFIX = re.compile(r"(?:[a-z]{2,3}(?:-[a-z]{2,8}){0,2}|simple)\Z")

# Tags whose whole content is dropped.
DROP_TAGS = frozenset(
    (
        "ref", "references", "math", "chem", "ce", "gallery", "timeline", "score",
        "graph", "mapframe", "maplink", "imagemap", "hiero", "inputbox",
        "categorytree", "templatedata", "templatestyles", "includeonly", "indicator",
        "syntaxhighlight", "source", "pre", "style", "script", "table", "tr", "td",
        "th", "caption", "thead", "tbody", "tfoot", "charinsert", "dynamicpagelist",
        "rss", "section", "img", "phonos", "langconvert", "noexport",
    )
)
# Tags that start a new line (content kept).
BLOCK_TAGS = frozenset(
    (
        "div", "p", "blockquote", "center", "poem", "ul", "ol", "li", "dl", "dt",
        "dd", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "figure", "figcaption",
    )
)
_KNOWN_TAGS = DROP_TAGS | BLOCK_TAGS | frozenset(
    (
        "b", "i", "u", "s", "del", "ins", "span", "small", "big", "sup", "sub", "font",
        "code", "tt", "kbd", "var", "samp", "ruby", "rb", "rt", "rp", "abbr", "em",
        "strong", "cite", "q", "dfn", "mark", "nowiki", "br", "wbr", "strike",
        "onlyinclude", "noinclude", "bdi", "bdo", "data", "time",
    )
)
_STRAY_TAG = re.compile(
    r"</?(?:" + "|".join(sorted(_KNOWN_TAGS, key=len, reverse=True)) + r")\b[^<>\n]*>",
    re.I,
)
_MAGIC_WORD = re.compile(r"__[A-Z][A-Z_]*[A-Z]__|__(?:目录|目錄|无目录|無目錄|强制目录|強制目錄|目次|目次非表示|目次強制|新しい節リンク)__")
_QUOTES = re.compile(r"'{2,}")
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)

_LIST = "\x02"  # sentinel: start of a list item
_HEAD = "\x00"  # sentinel: heading line (followed by a level digit)
_GAP = "\x03"  # sentinel: something was dropped here


def _norm_template_name(name: str) -> str:
    if "<!--" in name:
        name = _COMMENT.sub("", name)
    name = name.strip().replace("_", " ")
    if ":" in name:
        pre, _, rest = name.partition(":")
        if pre.strip().casefold() in ("template", "模板", "样板", "樣板", "テンプレート", "шаблон"):
            name = rest.strip()
    return " ".join(name.split()).casefold()


def _positional(tpl: Template, *idx: int):
    for i in idx:
        key = str(i)
        if tpl.has(key):
            value = tpl.get(key).value
            if str(value).strip():
                return value
    return None


def _tsl(tpl: Template):
    return _positional(tpl, 3, 2)


def _p1(tpl: Template):
    return _positional(tpl, 1)


def _p2(tpl: Template):
    return _positional(tpl, 2)


_TEMPLATES: dict[str, Callable[[Template], object]] = {
    "lang": _p2,
    "le": _p1,
    "ill": _p1,
    "interlanguage link": _p1,
    "仮リンク": _p1,
    "tsl": _tsl,
    "translink": _tsl,
    "nowrap": _p1,
    "nobr": _p1,
    "not a typo": _p1,
    "not typo": _p1,
    "nihongo": _p1,
    "読み仮名": _p1,
    "読み仮名 ruby不使用": _p1,
}


def _template_handler(name: str):
    h = _TEMPLATES.get(name)
    if h is None and (name.startswith("lang-") or name.startswith("link-")):
        h = _p1
    return h


def _pipe_trick(title: str) -> str:
    if ":" in title:
        title = title.split(":", 1)[1]
    title = re.sub(r"\s*[（(][^（）()]*[)）]\s*\Z", "", title)
    title = re.sub(r",.*\Z", "", title)
    return title.strip()


class _Renderer:
    """Walks a mwparserfromhell tree and collects the visible text in ``out``.

    Wherever something is dropped, a ``_GAP`` sentinel is emitted; ``_finish``
    turns a run of gaps into one space if there was whitespace around it and
    into nothing otherwise, so that removing markup never inserts a space into
    a CJK sentence and never glues two English words together, while the
    spacing of the untouched text stays verbatim.
    """

    __slots__ = ("out", "skip_level", "drop_sections", "dispatch")

    def __init__(self, drop_sections: frozenset[str]):
        self.out: list[str] = []
        self.skip_level: int | None = None
        self.drop_sections = drop_sections
        self.dispatch = {
            Text: self._text,
            Wikilink: self._wikilink,
            Template: self._template,
            Tag: self._tag,
            Heading: self._heading,
            ExternalLink: self._extlink,
            HTMLEntity: self._entity,
        }

    def walk(self, code) -> None:
        dispatch = self.dispatch
        for node in code.nodes:
            t = type(node)
            if self.skip_level is not None and t is not Heading:
                continue
            handler = dispatch.get(t)
            if handler is None:  # Comment, Argument, unknown node types
                self.out.append(_GAP)
            else:
                handler(node)

    def _render(self, code) -> str:
        saved = self.out
        self.out = []
        try:
            self.walk(code)
            return "".join(self.out)
        finally:
            self.out = saved

    def _text(self, node: Text) -> None:
        v = node.value
        if "__" in v:
            v = _MAGIC_WORD.sub(_GAP, v)
        if "<" in v:
            v = _STRAY_TAG.sub(_GAP, v)
        if "''" in v:
            v = _QUOTES.sub("", v)
        self.out.append(v)

    def _entity(self, node: HTMLEntity) -> None:
        try:
            ch = node.normalize()
        except Exception:  # pragma: no cover - defensive
            ch = str(node)
        self.out.append(" " if ch == "\xa0" else ch)

    def _template(self, node: Template) -> None:
        name = str(node.name)
        h = None if len(name) > 80 else _template_handler(_norm_template_name(name))
        value = h(node) if h is not None else None
        if value is None:
            self.out.append(_GAP)
        else:
            self.walk(value)

    def _wikilink(self, node: Wikilink) -> None:
        raw = str(node.title)
        if "<!--" in raw:
            raw = _COMMENT.sub("", raw)
        title = raw.strip()
        colon = title.startswith(":")
        if colon:
            title = title[1:].lstrip()
        ns = None  # namespace / interwiki prefix to strip from the display
        if ":" in title:
            pre = title.partition(":")[0].strip()
            key = pre.replace("_", " ").casefold()
            if key in _FILE_NS or key in _CATEGORY_NS:
                if not colon:
                    self.out.append(_GAP)
                    return
                ns = pre
            elif _LANG_PREFIX.match(pre) and pre not in _INTERWIKI:
                if not colon:  # interlanguage link
                    self.out.append(_GAP)
                    return
                ns = pre
            elif key in _INTERWIKI:
                ns = pre
        text = node.text
        if text is not None:
            shown = self._render(text)
            if not shown.replace(_GAP, "").strip():
                # pipe trick [[a (b)|]], or the display text was all dropped
                shown = _pipe_trick(html.unescape(title))
        else:
            shown = self._render(node.title).replace(_GAP, "")
            if ":" in shown and (colon or ns is not None):
                shown = shown.lstrip().lstrip(":")
        if ns is not None and ":" in shown:
            pre, _, rest = shown.partition(":")
            if pre.strip().replace("_", " ").casefold() == ns.replace("_", " ").casefold():
                shown = rest.strip()
        self.out.append(shown)

    def _extlink(self, node: ExternalLink) -> None:
        if node.brackets and node.title is not None:
            self.walk(node.title)
        else:
            self.out.append(_GAP)

    def _heading(self, node: Heading) -> None:
        level = node.level
        if self.skip_level is not None:
            if level > self.skip_level:
                return
            self.skip_level = None
        title = " ".join(self._render(node.title).replace(_GAP, " ").split())
        if title.casefold() in self.drop_sections:
            self.skip_level = level
            return
        if title:
            self.out.append(f"\n{_HEAD}{level}{title}\n")
        else:
            self.out.append("\n")

    def _tag(self, node: Tag) -> None:
        markup = node.wiki_markup
        tag = str(node.tag).strip().lower()
        out = self.out
        if markup is not None:
            if tag in ("li", "dt", "dd"):
                out.append(_LIST)
            elif tag in ("b", "i"):
                if node.contents is not None:
                    self.walk(node.contents)
            elif tag == "hr":
                out.append("\n")
            else:  # wiki tables ({| |}) and anything else
                out.append(_GAP)
            return
        if tag in DROP_TAGS:
            out.append(_GAP)
        elif tag == "br":
            out.append("\n")
        elif node.self_closing or node.contents is None:
            out.append("\n" if tag in BLOCK_TAGS else _GAP)
        elif tag == "nowiki":
            out.append(html.unescape(str(node.contents)))
        elif tag in BLOCK_TAGS:
            out.append("\n")
            self.walk(node.contents)
            out.append("\n")
        else:
            self.walk(node.contents)


# --------------------------------------------------------------------------
# Parsing: tokenize with mwparserfromhell, prune what is dropped anyway, build
# --------------------------------------------------------------------------
#
# mwparserfromhell's C tokenizer is fast; ~85% of ``mwparserfromhell.parse``
# time is its pure-Python Builder turning tokens into node objects, and most of
# those nodes are citation templates and refs that are dropped anyway.  So the
# (balanced) token ranges of non-whitelisted templates, template arguments,
# comments, DROP_TAGS/wiki tables and file/category/interlanguage links are
# cut out of the token list before handing it to the Builder (a ``_GAP`` text
# marks the spot), and plain-text links ``[[a]]``/``[[a|b]]``, list markers,
# ``<br>`` and ``----`` are turned into text right away.  The walk would do
# exactly the same with those nodes, so the output is identical to walking
# the full tree (tests check this on real pages); only the speed differs.

try:  # semi-internal API, guarded: fall back to mwparserfromhell.parse
    from mwparserfromhell.parser import Parser as _Parser
    from mwparserfromhell.parser import tokens as _T
    from mwparserfromhell.parser.builder import Builder as _Builder  # noqa: F401  (import guards the API)

    _PRUNE_OK = True
except Exception:  # pragma: no cover
    _PRUNE_OK = False


def _match(toks: list, i: int, open_t, close_t) -> int:
    """Index of the token closing the ``open_t`` at ``toks[i]`` (or -1)."""
    depth = 0
    n = len(toks)
    while i < n:
        t = type(toks[i])
        if t is open_t:
            depth += 1
        elif t is close_t:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _match_tag(toks: list, i: int) -> int:
    depth = 0
    n = len(toks)
    opn, cc, csc = _T.TagOpenOpen, _T.TagCloseClose, _T.TagCloseSelfclose
    while i < n:
        t = type(toks[i])
        if t is opn:
            depth += 1
        elif t is cc or t is csc:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _leading_text(toks: list, i: int) -> str:
    parts = []
    text_t = _T.Text
    n = len(toks)
    while i < n and type(toks[i]) is text_t:
        parts.append(toks[i].text)
        i += 1
    return "".join(parts)


def _link_dropped(title: str) -> bool:
    title = title.strip()
    if title.startswith(":") or ":" not in title:
        return False
    pre = title.partition(":")[0].strip()
    key = pre.replace("_", " ").casefold()
    if key in _FILE_NS or key in _CATEGORY_NS:
        return True
    return bool(_LANG_PREFIX.match(pre)) and pre not in _INTERWIKI


def _prune(toks: list) -> list:
    T = _T
    text_t = T.Text
    t_open, t_close = T.TemplateOpen, T.TemplateClose
    a_open, a_close = T.ArgumentOpen, T.ArgumentClose
    c_open, c_close = T.CommentStart, T.CommentEnd
    tag_open, tag_sc = T.TagOpenOpen, T.TagCloseSelfclose
    l_open, l_sep, l_close = T.WikilinkOpen, T.WikilinkSeparator, T.WikilinkClose
    out: list = []
    pending: list[str] = []  # consecutive text, merged into one Text token
    i = 0
    n = len(toks)
    while i < n:
        tok = toks[i]
        t = type(tok)
        if t is text_t:
            pending.append(tok.text)
            i += 1
            continue
        j = -2
        if t is t_open:
            name = _leading_text(toks, i + 1)
            if len(name) > 80 or _template_handler(_norm_template_name(name)) is None:
                j = _match(toks, i, t_open, t_close)
        elif t is l_open:
            # [[a]] and [[a|b]] with plain-text parts become text directly
            if i + 2 < n and type(toks[i + 1]) is text_t:
                title = toks[i + 1].text
                t2 = type(toks[i + 2])
                # Text with quotes or tags is left to the Builder: merging it
                # with the neighbouring text could change how quotes pair up.
                if ":" not in title and "'" not in title and "<" not in title:
                    if t2 is l_close:
                        pending.append(title)
                        i += 3
                        continue
                    if (
                        t2 is l_sep
                        and i + 4 < n
                        and type(toks[i + 3]) is text_t
                        and type(toks[i + 4]) is l_close
                        and toks[i + 3].text.strip()
                        and "'" not in toks[i + 3].text
                        and "<" not in toks[i + 3].text
                    ):
                        pending.append(toks[i + 3].text)
                        i += 5
                        continue
                if ":" in title and _link_dropped(_leading_text(toks, i + 1)):
                    j = _match(toks, i, l_open, l_close)
        elif t is tag_open:
            if i + 1 < n and type(toks[i + 1]) is text_t:
                name = toks[i + 1].text.strip().lower()
                markup = getattr(tok, "wiki_markup", None)
                if name in DROP_TAGS or markup == "{|":
                    j = _match_tag(toks, i)
                elif i + 2 < n and type(toks[i + 2]) is tag_sc:
                    if markup is not None and name in ("li", "dt", "dd"):
                        pending.append(_LIST)
                        i += 3
                        continue
                    if name in ("br", "hr"):
                        pending.append("\n")
                        i += 3
                        continue
        elif t is c_open:
            j = _match(toks, i, c_open, c_close)
        elif t is a_open:
            j = _match(toks, i, a_open, a_close)
        if j >= 0:
            pending.append(_GAP)
            i = j + 1
            continue
        if pending:
            out.append(text_t(text="".join(pending)))
            pending = []
        if j == -1:  # unbalanced token stream: keep everything after as is
            out.extend(toks[i:])
            return out
        out.append(tok)
        i += 1
    if pending:
        out.append(text_t(text="".join(pending)))
    return out


def _parse(text: str):
    """The mwparserfromhell tree of ``text``, style tags off: bold/italic quotes
    stay text (removed in ``_text``) since parsing them is slow and an
    unbalanced quote inside a template makes the whole template unparsable."""
    if _PRUNE_OK:
        try:
            parser = _Parser()
            toks = parser._tokenizer.tokenize(text, 0, True)
            return parser._builder.build(_prune(toks))
        except Exception:  # a token layout this pruning does not expect
            pass
    return mwparserfromhell.parse(text, skip_style_tags=True)


# --------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------

_GAP_RUN = re.compile(r"[ \t]*\x03[\x03 \t]*")
_LIST_RUN = re.compile(_LIST + r"[" + _LIST + r" ]*")
_LIST_MIDLINE = re.compile(r"([^\n])" + _LIST)
_EMPTY_PARENS = re.compile(r"（[\s,;、，；]*）| *\([ ,;、，；]*\)(?=[\s,.;:，。；：、]|\Z)")


_BRACES = re.compile(r"\{\{|\}\}")
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_TABLE_LINE = re.compile(r"^[ \t:]*(\{\||\|\})", re.M)


def _scrub_link(m: re.Match) -> str:
    body = m.group(1)
    target, sep, shown = body.partition("|")
    if _link_dropped(target) or "\n\n" in body or _HEAD in body:
        return ""
    if sep:
        return shown.rsplit("|", 1)[-1] if shown.strip() else _pipe_trick(target)
    return target.lstrip(":")


def _scrub(text: str) -> str:
    """Remove raw markup that mwparserfromhell could not parse (it leaves
    malformed constructs as plain text): wiki tables starting at a line start,
    ``{{...}}`` (balanced spans, else the bare tokens) and ``[[...]]``."""
    if "{|" in text and _TABLE_LINE.search(text):
        out, depth = [], 0
        for line in text.split("\n"):
            s = line.lstrip(" \t:")
            if line.startswith(_HEAD):
                depth = 0
            elif s.startswith("{|"):
                depth += 1
                continue
            elif s.startswith("|}"):
                depth = max(depth - 1, 0)
                continue
            if depth == 0:
                out.append(line)
        text = "\n".join(out)
    if "{{" in text or "}}" in text:
        spans, stack = [], []
        for m in _BRACES.finditer(text):
            if m.group() == "{{":
                stack.append(m.start())
            elif stack:
                st = stack.pop()
                if _HEAD in text[st:m.end()]:
                    spans.append((st, st + 2))
                    spans.append((m.start(), m.end()))
                else:
                    spans.append((st, m.end()))
            else:
                spans.append((m.start(), m.end()))
        spans.extend((st, st + 2) for st in stack)
        spans.sort()
        pieces, pos = [], 0
        for st, en in spans:
            if en <= pos:
                continue
            pieces.append(text[pos:max(st, pos)])
            pos = en
        pieces.append(text[pos:])
        text = "".join(pieces)
    if "[[" in text or "]]" in text:
        for _ in range(6):
            new = _INNER_LINK.sub(_scrub_link, text)
            if new == text:
                break
            text = new
        text = text.replace("[[", "").replace("]]", "")
    return text


def _gap_repl(m: re.Match) -> str:
    return " " if len(m.group()) != m.group().count(_GAP) else ""


def _finish(text: str, drop: frozenset = frozenset()) -> str:
    if "{{" in text or "[[" in text or "{|" in text or "}}" in text or "]]" in text:
        text = _scrub(text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _GAP in text:
        text = _GAP_RUN.sub(_gap_repl, text)
    if _LIST in text:
        text = _LIST_RUN.sub(_LIST, text)
        text = _LIST_MIDLINE.sub("\\1\n" + _LIST, text)
    if "(" in text or "（" in text:
        text = _EMPTY_PARENS.sub("", text)
    # items: (kind, level, text) kind: 0 = blank, 1 = line, 2 = heading
    items: list[tuple[int, int, str]] = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            items.append((0, 0, ""))
        elif line[0] == _LIST:
            line = line[1:].strip()
            if line:
                items.append((1, 0, line))
        elif line[0] == _HEAD and len(line) > 2:
            items.append((2, ord(line[1]) - 48, line[2:]))
        else:
            items.append((1, 0, line.replace(_HEAD, "").replace(_LIST, "")))
    if drop:  # only the regex fallback needs this; the walk drops sections itself
        kept, skip = [], None
        for item in items:
            if item[0] == 2:
                if skip is not None and item[1] > skip:
                    continue
                skip = None
                if " ".join(item[2].split()).casefold() in drop:
                    skip = item[1]
                    continue
            if skip is None:
                kept.append(item)
        items = kept
    # A heading is kept only if some content line follows before the next
    # heading of the same or a higher level.
    keep = [True] * len(items)
    has = [False] * 8
    for i in range(len(items) - 1, -1, -1):
        kind, level, _ = items[i]
        if kind == 1:
            has = [True] * 8
        elif kind == 2:
            level = min(max(level, 1), 7)
            keep[i] = has[level]
            for lv in range(level, 8):
                has[lv] = False
    parts: list[str] = []
    pending_blank = False
    for i, (kind, _level, line) in enumerate(items):
        if not keep[i]:
            continue
        if kind == 0:
            pending_blank = True
            continue
        if parts:
            parts.append("\n\n" if (pending_blank or kind == 2) else "\n")
        parts.append(line)
        pending_blank = kind == 2
    return "".join(parts).strip()


_CRUDE_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_CRUDE_EXT = re.compile(r"\[(?:https?:)?//[^\s\[\]]+ ?([^\[\]]*)\]")
_CRUDE_URL = re.compile(r"(?:https?:)?//[^\s\[\]<>]+")
_CRUDE_LIST = re.compile(r"^[*#:;]+ *", re.M)
_CRUDE_HEADING = re.compile(r"^(={1,6})[ \t]*([^=\n][^\n]*?)[ \t]*\1[ \t]*$", re.M)


def _crude(text: str, drop: frozenset = frozenset()) -> str:
    """Linear-time regex fallback, used when the input would make the
    tokenizer slow (hundreds of unclosed constructs) or if parsing fails."""
    parts, pos = [], 0
    while True:  # comments (an unclosed one hides the rest, as in MediaWiki)
        i = text.find("<!--", pos)
        if i < 0:
            parts.append(text[pos:])
            break
        parts.append(text[pos:i])
        j = text.find("-->", i + 4)
        if j < 0:
            break
        pos = j + 3
    text = "".join(parts)
    text = _CRUDE_HEADING.sub(lambda m: f"\n{_HEAD}{len(m.group(1))}{m.group(2)}\n", text)
    text = _scrub(text)
    text = _CRUDE_TAG.sub(_GAP, text)
    text = _CRUDE_EXT.sub(r"\1", text)
    text = _CRUDE_URL.sub(_GAP, text)
    text = _MAGIC_WORD.sub(_GAP, _QUOTES.sub("", text))
    text = _CRUDE_LIST.sub("", text)
    return _finish(html.unescape(text).replace("\xa0", " "), drop)


def _pathological(text: str) -> bool:
    """True if the text holds so many unclosed constructs that the tokenizer,
    which retries every unclosed opener, would be slow (quadratic)."""
    c = text.count
    limit = 200
    if c("{{") - c("}}") > limit or c("[[") - c("]]") > limit or c("{|") - c("|}") > limit:
        return True
    if c("[") - c("]") > limit or c("<!--") - c("-->") > limit:
        return True
    lt = c("<")
    if lt > limit and lt - 2 * c("</") - c("/>") - c("<!--") - c("<br") - c("<BR") > limit:
        return True
    return False


@functools.lru_cache(maxsize=32)
def _norm_drop_cached(drop_sections: frozenset) -> frozenset:
    return frozenset(" ".join(str(s).split()).casefold() for s in drop_sections)


def _norm_drop(drop_sections) -> frozenset:
    if drop_sections is DEFAULT_DROP_SECTIONS:
        return drop_sections
    if not drop_sections:
        return frozenset()
    if not isinstance(drop_sections, frozenset):
        drop_sections = frozenset(drop_sections)
    return _norm_drop_cached(drop_sections)


def wikitext_to_text(
    wikitext: str,
    *,
    variant: str = "zh-hans",
    drop_sections: frozenset[str] = DEFAULT_DROP_SECTIONS,
) -> str:
    """Convert the wikitext of an article into clean plain text (never raises)."""
    if not wikitext:
        return ""
    try:
        if not isinstance(wikitext, str):
            wikitext = str(wikitext)
        if _HEAD in wikitext or _LIST in wikitext or _GAP in wikitext:
            wikitext = wikitext.replace(_HEAD, "").replace(_LIST, "").replace(_GAP, "")
        text = resolve_variants(wikitext, variant)
        if _pathological(text):
            return _crude(text, _norm_drop(drop_sections))
        r = _Renderer(_norm_drop(drop_sections))
        r.walk(_parse(text))
        return _finish("".join(r.out))
    except Exception:  # RecursionError, ParserError, anything unexpected
        try:
            return _crude(resolve_variants(wikitext, variant), _norm_drop(drop_sections))
        except Exception:  # pragma: no cover - last resort
            return ""


# --------------------------------------------------------------------------
# Benchmark:  python -m pipeline.io.formats.wikitext DUMP.xml[.bz2|.xz|.gz] ...
# --------------------------------------------------------------------------


def _bench(paths: list[str]) -> None:  # pragma: no cover - manual tool
    import bz2
    import gzip
    import lzma
    import time

    page_re = re.compile(r"<page>.*?</page>", re.S)
    text_re = re.compile(r"<text\b[^>]*>(.*?)</text>", re.S)
    openers = {".bz2": bz2.open, ".xz": lzma.open, ".gz": gzip.open}
    all_docs = all_bytes = 0
    all_t = 0.0
    for path in paths:
        opener = next((o for ext, o in openers.items() if path.endswith(ext)), open)
        with opener(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            xml = raw.decode("utf-16")
        else:
            xml = raw.decode("utf-8", "replace")
        docs = []
        for chunk in page_re.findall(xml):
            if "<ns>0</ns>" not in chunk or "<redirect" in chunk:
                continue
            m = text_re.search(chunk)
            if m:
                docs.append(html.unescape(m.group(1)))
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        t0 = time.perf_counter()
        for d in docs:
            wikitext_to_text(d)
        dt = time.perf_counter() - t0
        all_docs += len(docs)
        all_bytes += nbytes
        all_t += dt
        print(f"{path}: {len(docs)} docs, {nbytes / 1e6:.2f} MB, {dt:.2f} s, "
              f"{len(docs) / dt:.0f} docs/s, {nbytes / dt / 1e6:.2f} MB/s")
    if all_t:
        print(f"total: {all_docs} docs, {all_bytes / 1e6:.2f} MB, {all_t:.2f} s, "
              f"{all_docs / all_t:.0f} docs/s, {all_bytes / all_t / 1e6:.2f} MB/s")


if __name__ == "__main__":  # pragma: no cover
    import sys

    _bench(sys.argv[1:])
