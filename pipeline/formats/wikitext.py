"""MediaWiki wikitext -> clean plain text for LM pretraining.

Public API
----------
``DEFAULT_DROP_SECTIONS``
    Lower-cased heading titles whose whole section (heading plus everything
    up to the next heading of the same or a higher level) is dropped.
``resolve_variants(text, variant="zh-hans")``
    Resolves zhwiki language-conversion markup ``-{ ... }-`` to the text of
    one variant.  mwparserfromhell does not know this syntax, so it is the one
    thing pre-processed before parsing.
``wikitext_to_text(wikitext, *, variant="zh-hans", drop_sections=...)``
    ``resolve_variants`` + ``mwparserfromhell.parse`` + a walk over the node
    tree that emits only reader-visible prose, then whitespace normalisation.

Design
------
* Dropped entirely: templates (except the whitelist below), parser functions,
  magic words (``__TOC__`` and any ``__UPPER__``), comments, template
  arguments ``{{{x}}}``, files/images/media links (English namespaces
  case-insensitively plus 文件/檔案/文檔/图像/圖像/媒体/媒體/ファイル/画像 and a few
  European aliases), category links (Category/分类/分類/カテゴリ/...),
  interlanguage links (``[[xx:Foo]]`` with a language-code prefix and no
  leading colon), wiki tables ``{| |}`` and HTML tables, bare external URLs and
  ``[http://x]`` without a title, horizontal rules.
* Tags whose *content* is dropped (``DROP_TAGS``): ref, references, math, chem,
  ce, gallery, timeline, score, graph, mapframe, maplink, imagemap, hiero,
  inputbox, categorytree, templatedata, templatestyles, includeonly, indicator,
  syntaxhighlight, source, pre, style, script, table/tr/td/th/caption, ...
  Block code (syntaxhighlight/source/pre) is dropped on purpose: it is rare in
  articles and is the main source of leftover ``{{``/``[[`` in the output of
  articles *about* wiki markup or programming languages.  Inline ``<code>``,
  ``<tt>``, ``<kbd>``, ``<var>`` keep their text (they sit inside sentences).
* Tags whose content is kept (everything else, notably b, i, u, s, del, ins,
  span, small, big, sup, sub, font, center, blockquote, poem, div, p, code,
  ruby, abbr, nowiki, onlyinclude, noinclude).  Block tags (div, p,
  blockquote, center, poem, HTML lists and headings) start a new line;
  ``<br>`` becomes a newline.  ``<nowiki>`` content is kept literally (with
  entities decoded).
* Stray, unparsed tags (``</div>`` without opener, unclosed ``<ref name=x>``)
  and unbalanced ``''``/``'''`` left in text nodes are removed.
* Template whitelist (everything else is dropped):
    - ``lang`` -> positional 2; ``lang-xx`` -> positional 1
    - ``le``, ``link-xx`` (link-en, link-ja, ...), ``ill``,
      ``interlanguage link``, ``仮リンク`` -> positional 1 (local name)
    - ``tsl`` / ``translink`` -> positional 3 (local name), else positional 2
    - ``nowrap``, ``nobr``, ``not a typo``, ``not typo``, ``nihongo``
      -> positional 1
* Links: ``[[a|b]]`` -> b, ``[[a]]`` -> a, trails (``[[a]]s``) kept, pipe trick
  ``[[a (b)|]]`` -> a, ``[[:Category:X|y]]`` -> y, ``[[:Category:X]]`` -> X.
* Sections whose stripped, case-folded title is in ``drop_sections`` are
  dropped with all their subsections; headings whose section ends up empty
  are dropped too.
* Output: headings on their own line surrounded by blank lines, paragraphs
  separated by exactly one blank line, list items one per line, runs of
  spaces/tabs/nbsp collapsed to one space, no trailing spaces, empty ``()`` /
  ``（）`` left by removed templates removed.  Nothing is inserted where markup
  is removed, so CJK sentences stay verbatim.
* Never raises: if the parser or the walk fails (deep nesting etc.) a crude
  regex stripper produces best-effort text.

Performance (``python -m pipeline.formats.wikitext --bench``, single core,
ns-0 non-redirect pages of the sample dumps in /work/shared/corpora/wikidumps,
mwparserfromhell 0.7.2 with the C tokenizer):

    BENCH_PLACEHOLDER
"""

from __future__ import annotations

import html
import re
from typing import Callable

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
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
        "进一步阅读", "進一步閱讀", "引用", "文献", "文獻",
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
_LC_VALID_FLAGS = frozenset("ATRDHN-SE")
_LC_CODE_RE = re.compile(rf"{_CODE}\Z")


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
            if len(tok) == 1 or tok == "-":
                if tok in _LC_VALID_FLAGS:
                    flags.add(tok)
            elif _LC_CODE_RE.match(tok.lower()):
                flags.add("variant")
            else:  # multi-letter token such as "AH" is not valid; look at letters
                flags.update(c for c in tok if c in _LC_VALID_FLAGS)
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
    ``{{a}}-{{b}}``) is not an opener, and ``}-{`` outside a block never opens
    one.  Unbalanced ``-{`` stays literal.
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
            if text.startswith("{", s + 2) and not text.startswith("{{", s + 2):
                scan = s + 2
                continue
            buf.append(text[pos:s])
            stack.append((buf, s + 2))
            buf = []
            pos = scan = s + 2
        else:  # "}-"
            if not stack:
                scan = s + 2
                continue
            start = stack[-1][1]
            if text.count("{", start, s) > text.count("}", start, s):
                scan = s + 1  # this "}" closes a brace opened inside the block
                continue
            buf.append(text[pos:s])
            inner = "".join(buf)
            buf = stack.pop()[0]
            buf.append(_convert_rule(inner, order))
            pos = scan = s + 2
    buf.append(text[pos:])
    while stack:  # unbalanced openers stay literal
        outer = stack.pop()[0]
        outer.append("-{")
        outer.extend(buf)
        buf = outer
    return "".join(buf)


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
        "rss", "section", "img", "phonos", "langconvert", "references", "noexport",
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
    __slots__ = ("out", "skip_level", "drop_sections", "dispatch")

    def __init__(self, drop_sections: frozenset[str]):
        self.out: list[str] = []
        self.skip_level: int | None = None
        self.drop_sections = drop_sections
        self.dispatch = {
            Text: self._text,
            Wikilink: self._wikilink,
            Template: _ignore,
            Tag: self._tag,
            Heading: self._heading,
            ExternalLink: self._extlink,
            HTMLEntity: self._entity,
            Comment: _ignore,
            Argument: _ignore,
        }

    # The walk --------------------------------------------------------------
    def walk(self, code) -> None:
        dispatch = self.dispatch
        for node in code.nodes:
            if self.skip_level is not None and type(node) is not Heading:
                continue
            t = type(node)
            if t is Template:
                self._template(node)
            else:
                dispatch.get(t, _ignore)(node)

    def _text(self, node: Text) -> None:
        v = node.value
        if "__" in v:
            v = _MAGIC_WORD.sub("", v)
        if "<" in v:
            v = _STRAY_TAG.sub("", v)
        if "''" in v:
            v = _QUOTES.sub("", v)
        self.out.append(v)

    def _entity(self, node: HTMLEntity) -> None:
        try:
            self.out.append(node.normalize())
        except Exception:  # pragma: no cover - defensive
            self.out.append(str(node))

    def _template(self, node: Template) -> None:
        name = str(node.name)
        if len(name) > 80:
            return
        h = _template_handler(_norm_template_name(name))
        if h is None:
            return
        value = h(node)
        if value is not None:
            self.walk(value)

    def _render(self, code) -> str:
        saved = self.out
        self.out = []
        try:
            self.walk(code)
            return "".join(self.out)
        finally:
            self.out = saved

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
                    return
                ns = pre
            elif _LANG_PREFIX.match(pre) and pre not in _INTERWIKI:
                if not colon:
                    return  # interlanguage link
                ns = pre
            elif key in _INTERWIKI:
                ns = pre
        text = node.text
        if text is not None:
            shown = self._render(text)
            if not shown.strip():  # pipe trick [[a (b)|]] or text fully dropped
                shown = _pipe_trick(html.unescape(title))
        else:
            shown = self._render(node.title)
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

    def _heading(self, node: Heading) -> None:
        level = node.level
        if self.skip_level is not None:
            if level > self.skip_level:
                return
            self.skip_level = None
        saved = self.out
        self.out = []
        try:
            self.walk(node.title)
            title = " ".join("".join(self.out).split())
        finally:
            self.out = saved
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
        if markup is not None:
            if tag in ("li", "dt", "dd"):
                self.out.append(_LIST)
            elif tag in ("b", "i"):
                if node.contents is not None:
                    self.walk(node.contents)
            elif tag == "hr":
                self.out.append("\n")
            # wiki tables ({| |}) and anything else: dropped
            return
        if tag in DROP_TAGS:
            return
        if tag == "br":
            self.out.append("\n")
            return
        if node.self_closing or node.contents is None:
            if tag in BLOCK_TAGS:
                self.out.append("\n")
            return
        if tag == "nowiki":
            self.out.append(html.unescape(str(node.contents)))
            return
        if tag in BLOCK_TAGS:
            self.out.append("\n")
            self.walk(node.contents)
            self.out.append("\n")
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
# cut out of the token list before handing it to the Builder.  The walk below
# would drop those nodes anyway, so the output is identical to walking the
# full tree (a test checks this); only the speed differs.

try:  # semi-internal API, guarded: fall back to mwparserfromhell.parse
    from mwparserfromhell.parser import Parser as _Parser
    from mwparserfromhell.parser import tokens as _T
    from mwparserfromhell.parser.builder import Builder as _Builder

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
    if not _PRUNE_OK:
        return mwparserfromhell.parse(text, skip_style_tags=True)
    parser = _Parser()
    toks = parser._tokenizer.tokenize(text, 0, True)
    return parser._builder.build(_prune(toks))


def _ignore(node) -> None:
    return None


# --------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------

_HSPACE = re.compile(r"[ \t\r\f\v\xa0]+")
_LIST_RUN = re.compile(_LIST + r"[" + _LIST + r" ]*")
_LIST_MIDLINE = re.compile(r"([^\n])" + _LIST)
_EMPTY_PARENS = re.compile(r"（\s*）| *\( *\)(?=[\s,.;:，。；：、]|\Z)")


def _finish(text: str) -> str:
    text = _HSPACE.sub(" ", text)
    if _LIST in text:
        text = _LIST_RUN.sub(_LIST, text)
        text = _LIST_MIDLINE.sub("\\1\n" + _LIST, text)
    if "(" in text or "（" in text:
        text = _EMPTY_PARENS.sub("", text)
    # items: (kind, level, text) kind: 0 = blank, 1 = line, 2 = heading
    items: list[tuple[int, int, str]] = []
    for line in text.split("\n"):
        line = line.strip(" ")
        if not line:
            items.append((0, 0, ""))
        elif line[0] == _LIST:
            line = line[1:].strip(" ")
            if line:
                items.append((1, 0, line))
        elif line[0] == _HEAD and len(line) > 2:
            items.append((2, ord(line[1]) - 48, line[2:]))
        else:
            items.append((1, 0, line.replace(_HEAD, "").replace(_LIST, "")))
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


_CRUDE = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S | re.I), ""),
    (re.compile(r"\{\|.*?\|\}", re.S), ""),
    (re.compile(r"\{\{[^{}]*\}\}"), ""),
    (re.compile(r"\[\[[^\[\]|]*\|([^\[\]]*)\]\]"), r"\1"),
    (re.compile(r"\[\[([^\[\]|]*)\]\]"), r"\1"),
    (re.compile(r"\[(?:https?:)?//[^\s\]]+ ?([^\]]*)\]"), r"\1"),
    (re.compile(r"</?[A-Za-z][^<>]*>"), ""),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"^[*#:;]+ *", re.M), ""),
    (re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.M), r"\n\2\n"),
    (re.compile(r"\{\{|\}\}|\[\[|\]\]"), ""),
]


def _crude(text: str) -> str:
    """Regex fallback used only if the parser/walk fails."""
    for _ in range(4):
        new = _CRUDE[3][0].sub("", text)
        if new == text:
            break
        text = new
    for rx, rep in _CRUDE:
        text = rx.sub(rep, text)
    return _finish(html.unescape(text))


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
        if _HEAD in wikitext or _LIST in wikitext:
            wikitext = wikitext.replace(_HEAD, "").replace(_LIST, "")
        text = resolve_variants(wikitext, variant)
        if drop_sections is DEFAULT_DROP_SECTIONS:
            drop = drop_sections
        else:
            drop = frozenset(s.strip().casefold() for s in drop_sections)
        r = _Renderer(drop)
        r.walk(_parse(text))
        return _finish("".join(r.out))
    except Exception:  # RecursionError, ParserError, anything unexpected
        try:
            return _crude(wikitext)
        except Exception:  # pragma: no cover - last resort
            return ""
