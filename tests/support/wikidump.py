"""Build zhwiki-shaped "pages-articles-multistream" dumps for tests.

Three entry points:

* :func:`write_multistream` writes a dump + index pair in the exact Wikimedia
  multistream layout (one bz2 stream for the header/siteinfo, one per
  ``pages_per_stream`` pages, one for ``</mediawiki>``; a bz2 index of
  ``offset:page_id:title`` lines).
* :func:`build_pages` turns plain-text articles (``shared/corpora/zhwiki-articles``
  or a built-in synthetic set) into realistic wikitext pages, plus the sentences
  a correct extractor must reproduce verbatim.
* :func:`build_mirror` lays out ``root/<wiki>/<date>/...`` like
  dumps.wikimedia.org (dumps, checksum files, ``dumpstatus.json``, an
  in-progress run and ``latest/``), ready for :class:`tests.support.mirror.MirrorServer`.

Everything is deterministic for a given input and seed (file bytes included).
"""

from __future__ import annotations

import bz2
import hashlib
import html
import json
import random
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping
from xml.sax.saxutils import escape as _xml_escape

__all__ = [
    "Page",
    "MultistreamInfo",
    "DumpFiles",
    "MirrorInfo",
    "NAMESPACES",
    "NAMESPACE_ALIASES",
    "NON_ARTICLE_MARKER",
    "write_multistream",
    "build_pages",
    "build_mirror",
    "build_curation_pages",
    "split_sentences",
    "default_articles_dir",
]

EXPORT_NS = "http://www.mediawiki.org/xml/export-0.10/"

# The namespace names as the real zhwiki dump's <siteinfo> spells them: zhwiki
# keeps the English canonical names ("Category:…", "Template:…") and accepts the
# Chinese ones only as aliases (see NAMESPACE_ALIASES).
NAMESPACES: dict[int, str] = {
    -2: "Media",
    -1: "Special",
    0: "",
    1: "Talk",
    2: "User",
    3: "User talk",
    4: "Wikipedia",
    5: "Wikipedia talk",
    6: "File",
    7: "File talk",
    8: "MediaWiki",
    9: "MediaWiki talk",
    10: "Template",
    11: "Template talk",
    12: "Help",
    13: "Help talk",
    14: "Category",
    15: "Category talk",
    100: "Portal",
    101: "Portal talk",
    102: "WikiProject",
    103: "WikiProject talk",
    118: "Draft",
    119: "Draft talk",
    828: "Module",
    829: "Module talk",
}

# Chinese aliases accepted in wikitext links on zhwiki ([[分类:…]], [[文件:…]]).
NAMESPACE_ALIASES: dict[str, int] = {
    "媒体": -2, "特殊": -1, "讨论": 1, "用户": 2, "用户讨论": 3, "维基百科": 4,
    "文件": 6, "档案": 6, "图像": 6, "模板": 10, "帮助": 12, "分类": 14, "主题": 100, "草稿": 118, "模块": 828,
}

# Appears in every non-article page (other namespaces, talk); never in ns-0 text.
NON_ARTICLE_MARKER = "本句只出现在非条目页面之中，抽取结果里不应出现。"

# Sections that a correct extractor drops (in the source corpus and our output).
DROP_SECTIONS = frozenset(
    """参见 参看 参考文献 参考资料 参考来源 参考书目 参考 来源 引用 注释 注解 脚注 外部链接 外部连结
    外部连接 延伸阅读 扩展阅读 研究书目 相关条目 文献""".split()
)

# Simplified -> Traditional pairs used to make -{zh-hans:…;zh-hant:…;}- markup.
_S2T = dict(
    zip(
        "国语学电东车书长门问时会发经济过对区业农产历华统计论关开进实现动机网络资级设说认识这个们为与后万广义种术军党总员图样确响传质热气点线体龙鸟鱼马应变联数场节报权观两阶湾县乡岛兰亚欧际织组环护边陆岭态艺议选举记录测讯读页钟灵剧乐战运连该达辽宁复杂构铁语尔罗纪贝诺术馆务层让类产单间积极宽纸软硬盘码词汉满维亿阳阴",
        "國語學電東車書長門問時會發經濟過對區業農產歷華統計論關開進實現動機網絡資級設說認識這個們為與後萬廣義種術軍黨總員圖樣確響傳質熱氣點線體龍鳥魚馬應變聯數場節報權觀兩階灣縣鄉島蘭亞歐際織組環護邊陸嶺態藝議選舉記錄測訊讀頁鐘靈劇樂戰運連該達遼寧複雜構鐵語爾羅紀貝諾術館務層讓類產單間積極寬紙軟硬盤碼詞漢滿維億陽陰",
    )
)

_TERMINATORS = "。！？"
_SENTENCE_RE = re.compile(r"[^。！？]*[。！？]+|[^。！？]+$")
_HEADING_RE = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})[ \t\u3000]+(\S.{0,40})$")
_BARE_NUMBER_RE = re.compile(r"^\d{1,2}(?:\.\d{1,2}){0,3}\s*$")
_CJK_RUN_RE = re.compile(r"[\u4e00-\u9fff]{2,}")
_CJK_WORD_RE = re.compile(r"(?<![\u4e00-\u9fff])[\u4e00-\u9fff]{2,4}(?![\u4e00-\u9fff])")
# Lines carrying anything that wikitext would interpret are left out entirely.
_UNSAFE_RE = re.compile(r"[\[\]{}|<>]|''|~~~|__|://|&#|&[A-Za-z][A-Za-z0-9]*;|^-{4}|^[#:;=!]")


def default_articles_dir() -> Path:
    """``<repo>/../shared/corpora/zhwiki-articles`` (may not exist)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "zhwiki-articles"


def split_sentences(line: str) -> list[str]:
    """Split after runs of 。！？; the unterminated tail is a sentence too.

    Pieces are returned unstripped so that ``"".join(pieces) == line``.
    """
    return _SENTENCE_RE.findall(line)


def _expected_sentences(line: str) -> list[str]:
    out = []
    for piece in split_sentences(line):
        s = piece.strip()
        if len(s) >= 5:
            out.append(s)
    return out


# ---------------------------------------------------------------------------
# Pages and the multistream writer
# ---------------------------------------------------------------------------


@dataclass
class Page:
    title: str
    ns: int
    page_id: int
    text: str
    redirect: str | None = None
    rev_id: int = 0
    parent_id: int | None = None
    timestamp: str = "2024-04-01T00:00:00Z"
    contributor: str | None = "Example"
    contributor_id: int | None = 1
    contributor_ip: str | None = None
    comment: str | None = None

    @classmethod
    def coerce(cls, obj: "Page | Mapping[str, Any]") -> "Page":
        if isinstance(obj, Page):
            return obj
        return cls(**dict(obj))


@dataclass(frozen=True)
class MultistreamInfo:
    xml_path: Path
    index_path: Path
    stream_offsets: list[int]  # byte offset of every bz2 stream: header, page streams, footer
    xml_size: int
    index_size: int
    page_offsets: dict[int, int]  # page_id -> offset of the stream holding it
    page_count: int

    @property
    def stream_ranges(self) -> list[tuple[int, int]]:
        """``(start, end_exclusive)`` of every stream, in file order."""
        ends = self.stream_offsets[1:] + [self.xml_size]
        return list(zip(self.stream_offsets, ends))


def _esc_text(s: str) -> str:
    return _xml_escape(s, {'"': "&quot;"})


def _esc_attr(s: str) -> str:
    return _xml_escape(s, {'"': "&quot;"})


def _sha1_base36(data: bytes) -> str:
    n = int(hashlib.sha1(data).hexdigest(), 16)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(31, "0")


def _wiki_lang(dbname: str) -> str:
    return dbname[: -len("wiki")] if dbname.endswith("wiki") and len(dbname) > 4 else "en"


def _siteinfo_xml(dbname: str, siteinfo_extra: Mapping[str, str] | str | None) -> str:
    lang = _wiki_lang(dbname)
    fields = {
        "sitename": "Wikipedia",
        "dbname": dbname,
        "base": (
            "https://zh.wikipedia.org/wiki/Wikipedia:%E9%A6%96%E9%A1%B5"
            if lang == "zh"
            else f"https://{lang}.wikipedia.org/wiki/Main_Page"
        ),
        "generator": "MediaWiki 1.43.0-wmf.8",
        "case": "first-letter",
    }
    raw_extra = ""
    if isinstance(siteinfo_extra, str):
        raw_extra = siteinfo_extra
    elif siteinfo_extra:
        for k, v in siteinfo_extra.items():
            fields[k] = str(v)  # overrides in place, new keys appended
    lines = ["  <siteinfo>"]
    for k, v in fields.items():
        lines.append(f"    <{k}>{_esc_text(v)}</{k}>")
    if raw_extra:
        lines.append(raw_extra.rstrip("\n"))
    lines.append("    <namespaces>")
    for key, name in sorted(NAMESPACES.items()):
        if name:
            lines.append(f'      <namespace key="{key}" case="first-letter">{_esc_text(name)}</namespace>')
        else:
            lines.append(f'      <namespace key="{key}" case="first-letter" />')
    lines.append("    </namespaces>")
    lines.append("  </siteinfo>")
    return "\n".join(lines) + "\n"


def _header_xml(dbname: str, siteinfo_extra) -> str:
    lang = _wiki_lang(dbname)
    return (
        f'<mediawiki xmlns="{EXPORT_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{EXPORT_NS} http://www.mediawiki.org/xml/export-0.10.xsd" '
        f'version="0.10" xml:lang="{lang}">\n' + _siteinfo_xml(dbname, siteinfo_extra)
    )


def page_xml(page: Page) -> str:
    """One ``<page>`` element, indented like the real dumps."""
    p = page
    text_bytes = p.text.encode("utf-8")
    out = [
        "  <page>",
        f"    <title>{_esc_text(p.title)}</title>",
        f"    <ns>{p.ns}</ns>",
        f"    <id>{p.page_id}</id>",
    ]
    if p.redirect is not None:
        out.append(f'    <redirect title="{_esc_attr(p.redirect)}" />')
    out.append("    <revision>")
    out.append(f"      <id>{p.rev_id}</id>")
    if p.parent_id is not None:
        out.append(f"      <parentid>{p.parent_id}</parentid>")
    out.append(f"      <timestamp>{p.timestamp}</timestamp>")
    out.append("      <contributor>")
    if p.contributor_ip is not None:
        out.append(f"        <ip>{_esc_text(p.contributor_ip)}</ip>")
    else:
        out.append(f"        <username>{_esc_text(p.contributor or '')}</username>")
        out.append(f"        <id>{p.contributor_id if p.contributor_id is not None else 0}</id>")
    out.append("      </contributor>")
    if p.comment is not None:
        out.append(f"      <comment>{_esc_text(p.comment)}</comment>")
    out.append("      <model>wikitext</model>")
    out.append("      <format>text/x-wiki</format>")
    out.append(f'      <text bytes="{len(text_bytes)}" xml:space="preserve">{_esc_text(p.text)}</text>')
    out.append(f"      <sha1>{_sha1_base36(text_bytes)}</sha1>")
    out.append("    </revision>")
    out.append("  </page>")
    return "\n".join(out) + "\n"


def write_multistream(
    xml_path: Path | str,
    index_path: Path | str,
    pages: Iterable[Page | Mapping[str, Any]],
    *,
    dbname: str = "zhwiki",
    pages_per_stream: int = 100,
    siteinfo_extra: Mapping[str, str] | str | None = None,
) -> MultistreamInfo:
    """Write ``pages`` (in the given order) as a multistream dump plus its index.

    ``siteinfo_extra``: a mapping of ``<siteinfo>`` child elements (overriding
    sitename/dbname/base/generator/case or adding new ones), or a raw XML string
    inserted before ``<namespaces>``.
    """
    if pages_per_stream < 1:
        raise ValueError("pages_per_stream must be >= 1")
    xml_path, index_path = Path(xml_path), Path(index_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    plist = [Page.coerce(p) for p in pages]

    offsets: list[int] = []
    page_offsets: dict[int, int] = {}
    index_lines: list[str] = []
    pos = 0
    with open(xml_path, "wb") as fh:

        def emit(text: str) -> int:
            nonlocal pos
            data = bz2.compress(text.encode("utf-8"), 9)
            start = pos
            offsets.append(start)
            fh.write(data)
            pos += len(data)
            return start

        emit(_header_xml(dbname, siteinfo_extra))
        for i in range(0, len(plist), pages_per_stream):
            chunk = plist[i : i + pages_per_stream]
            start = emit("".join(page_xml(p) for p in chunk))
            for p in chunk:
                page_offsets[p.page_id] = start
                index_lines.append(f"{start}:{p.page_id}:{p.title}\n")
        emit("</mediawiki>\n")

    index_path.write_bytes(bz2.compress("".join(index_lines).encode("utf-8"), 9))
    return MultistreamInfo(
        xml_path=xml_path,
        index_path=index_path,
        stream_offsets=offsets,
        xml_size=xml_path.stat().st_size,
        index_size=index_path.stat().st_size,
        page_offsets=page_offsets,
        page_count=len(plist),
    )


# ---------------------------------------------------------------------------
# Source articles: the shared corpus, or a synthetic set
# ---------------------------------------------------------------------------


@dataclass
class _Source:
    title: str
    lines: list[str]


def _load_corpus(articles_dir: Path) -> list[_Source]:
    def order(p: Path):
        return (0, int(p.stem), p.name) if p.stem.isdigit() else (1, 0, p.name)

    out = []
    for path in sorted(articles_dir.glob("*.txt"), key=order):
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        lines = text.split("\n")
        if not lines or not lines[0].strip():
            continue
        out.append(_Source(lines[0].strip(), lines[1:]))
    return out


_SYN_PLACES = list("青白临长东松南北西安明金玉清龙凤石云泉溪")
_SYN_PLACES2 = list("石云川宁湖江屏固岭澜月沙泉溪门鸣山阳")
_SYN_KINDS = [
    ("河", "一条河流", "水系"),
    ("山", "一座山峰", "地貌"),
    ("镇", "一个历史城镇", "人口"),
    ("湖", "一个淡水湖泊", "生态"),
    ("寺", "一座古代寺庙", "建筑"),
    ("桥", "一座石拱桥", "结构"),
]
_SYN_REGIONS = ["华北", "江南", "西南", "东北", "岭南", "西北", "华中", "华东"]
_SYN_DYNASTIES = ["汉代", "唐代", "宋代", "元代", "明代", "清代"]
_SYN_CLIMATES = ["亚热带季风", "温带季风", "温带大陆性", "高原山地"]


def _synthetic_sources(seed: int, count: int = 30) -> list[_Source]:
    rng = random.Random(f"synthetic-{seed}")
    names = [a + b for a in _SYN_PLACES for b in _SYN_PLACES2 if a != b]
    rng.shuffle(names)
    out: list[_Source] = []
    for i in range(count):
        kind, desc, topic = _SYN_KINDS[i % len(_SYN_KINDS)]
        title = names[i] + kind
        region = rng.choice(_SYN_REGIONS)
        dyn = rng.choice(_SYN_DYNASTIES)
        dyn2 = rng.choice(_SYN_DYNASTIES)
        climate = rng.choice(_SYN_CLIMATES)
        temp = rng.randint(4, 24)
        length = rng.randint(12, 480)
        other = names[(i + 1) % count] + _SYN_KINDS[(i + 1) % len(_SYN_KINDS)][0]
        lines = [
            "",
            f"{title}是位于中国{region}地区的{desc}，当地居民习惯称之为“老{title[-1]}”。"
            f"它的名称来源于附近的{names[i][0]}姓家族，最早见于{dyn}编纂的地方志。"
            f"{title}全长约{length}公里，是区域经济与文化发展的重要见证。",
            f"关于{title}的记载散见于各类历史文献之中，学术界对其起源仍然存在不同看法。",
            "",
            "1 历史",
            f"{dyn}年间，{title}一带已经有农业聚落活动的记录。"
            f"到了{dyn2}，官府在此设立驿站，往来商旅络绎不绝！"
            f"这一时期的繁荣能否延续至今？学者们至今仍有不同的讨论。",
            f"近代以来，{title}经历了多次修缮与重建工程，相关档案保存于当地的博物馆。",
            "",
            "2 地理",
            f"{title}地处{region}的丘陵与平原交界地带，周边分布着大片农田与村落。",
            f"* 主要支流：{names[(i + 3) % count]}溪",
            f"* 邻近城镇：{names[(i + 5) % count]}镇",
            "2.1 气候",
            f"{title}所在地区属于{climate}气候，年平均气温约为{temp}摄氏度。"
            f"夏季炎热多雨，冬季相对干燥，降水主要集中在六月至八月。",
            "",
            f"3 {topic}",
            f"当地政府在二十一世纪初开始对{title}进行系统的调查与保护工作。",
            "",
            "4 参见",
            f"* {other}",
            "",
            "5 参考文献",
            "* 地方志编纂委员会编，地方志，二〇〇五年出版。",
        ]
        out.append(_Source(title, lines))
    return out


# ---------------------------------------------------------------------------
# Wikitext rendering
# ---------------------------------------------------------------------------


def _parse_source(src: _Source):
    """Blocks: ("para", line) | ("list", [lines]) | ("heading", level, text).

    Lines with wiki-significant characters are left out; sections in
    DROP_SECTIONS (with their subsections) are left out.
    """
    blocks: list[tuple] = []
    drop_level: int | None = None
    for raw in src.lines:
        line = raw.strip()
        if not line or _BARE_NUMBER_RE.match(line):
            continue
        m = _HEADING_RE.match(line)
        if m and "。" not in line:
            level = 2 + m.group(1).count(".")
            text = m.group(2).strip()
            if drop_level is not None and level > drop_level:
                continue
            drop_level = None
            if text in DROP_SECTIONS:
                drop_level = level
                continue
            if _UNSAFE_RE.search(text):
                drop_level = level  # cannot render the heading safely
                continue
            blocks.append(("heading", level, text))
            continue
        if drop_level is not None:
            continue
        if line.startswith("*"):
            item = line.lstrip("*").strip()
            if not item or _UNSAFE_RE.search(item):
                continue
            if blocks and blocks[-1][0] == "list":
                blocks[-1][1].append(item)
            else:
                blocks.append(("list", [item]))
            continue
        if _UNSAFE_RE.search(line) or line.startswith("-"):
            continue
        blocks.append(("para", line))
    # drop headings left without content under them
    cleaned: list[tuple] = []
    for i, b in enumerate(blocks):
        if b[0] == "heading":
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if nxt is None or (nxt[0] == "heading" and nxt[1] <= b[1]):
                continue
        cleaned.append(b)
    return cleaned


class _Renderer:
    """Wraps one article's original lines in wikitext without changing the text
    a correct extractor should produce."""

    REF_FULL = '<ref name="src1">{{cite book |author=张三 |title=引用来源书名 |publisher=示例出版社 |year=2010 |pages=12–15}}</ref>'
    REF_REUSE = '<ref name="src1" />'
    REF_WEB = "<ref>{{cite web |url=https://example.org/page%d |title=引用网页标题 |accessdate=2020-01-01 |language=zh-hans}}</ref>"
    REF_GROUP = '<ref group="注">脚注说明文字。另有补充说明！</ref>'
    CN = "{{来源请求|date=2020年1月}}"
    COMMENT_INLINE = "<!-- 行内隐藏注释内容 -->"

    def __init__(self, rng: random.Random, title: str, titles: list[str], vocab=(), title_re=None):
        self.rng = rng
        self.title = title
        self.titles = [t for t in titles if t != title]
        self.must = ["link", "piped", "variant", "protect"]
        self.refs_done = 0
        self.web_refs = 0
        self.hant_strings: list[str] = []
        self.title_re = title_re
        self.vocab_re = re.compile("|".join(map(re.escape, vocab))) if vocab else None
        self._piece = ""

    # --- inline spans ----------------------------------------------------
    def _free(self, span, reserved) -> bool:
        if not reserved:
            return True
        a, b = span
        # touching spans count as overlapping: two adjacent italics would merge
        return not any(a <= r1 and r0 <= b for r0, r1 in reserved)

    def _candidates(self, piece: str, reserved: list[tuple[int, int]]):
        """Word-like spans, best first: other article titles, short CJK segments
        between punctuation, then arbitrary 2-4 character slices of CJK runs."""
        titles = []
        if self.title_re is not None:
            titles = [
                m.span()
                for m in self.title_re.finditer(piece)
                if m.group() != self.title and self._free(m.span(), reserved)
            ]
        segments = [m.span() for m in _CJK_WORD_RE.finditer(piece) if self._free(m.span(), reserved)]
        if self.vocab_re is not None:
            segments += [m.span() for m in self.vocab_re.finditer(piece) if self._free(m.span(), reserved)]
        runs = [m.span() for m in _CJK_RUN_RE.finditer(piece) if self._free(m.span(), reserved)]
        return titles, segments, runs

    def _pick(self, cands, variant: bool = False):
        titles, segments, runs = cands
        if variant:
            words = [s for s in titles + segments if self._convertible(s)]
            if words and self.rng.random() < 0.7:
                return self.rng.choice(words)
            slices = []
            for a, b in runs:
                for s in range(a, b - 1):
                    for n in (2, 3):
                        if s + n <= b and self._convertible((s, s + n)):
                            slices.append((s, s + n))
            return self.rng.choice(slices) if slices else (self.rng.choice(words) if words else None)
        if titles and self.rng.random() < 0.7:
            return self.rng.choice(titles)
        if segments and self.rng.random() < 0.7:
            return self.rng.choice(segments)
        if not runs:
            return self.rng.choice(segments) if segments else None
        a, b = self.rng.choice(runs)
        n = self.rng.randint(2, min(4, b - a))
        s = self.rng.randint(a, b - n)
        return s, s + n

    def _convertible(self, span) -> bool:
        return any(ch in _S2T for ch in self._piece[span[0] : span[1]])

    def _wrap(self, kind: str, word: str) -> str:
        if kind == "link":
            return f"[[{word}]]"
        if kind == "piped":
            target = self.rng.choice(self.titles) if self.titles and self.rng.random() < 0.7 else f"{word}（概念）"
            return f"[[{target}|{word}]]"
        if kind == "variant":
            hant = "".join(_S2T.get(ch, ch) for ch in word)
            self.hant_strings.append(hant)
            return f"-{{zh-hans:{word};zh-hant:{hant};}}-"
        if kind == "protect":
            return f"-{{{word}}}-"
        if kind == "bold":
            return f"'''{word}'''"
        if kind == "italic":
            return f"''{word}''"
        raise ValueError(kind)

    def piece(self, piece: str, bold_title: bool) -> str:
        reserved: list[tuple[int, int]] = []
        edits: list[tuple[int, int, str]] = []
        if bold_title:
            i = piece.find(self.title)
            j = i + len(self.title)
            if i >= 0 and "'" not in piece[max(0, i - 1) : i] + piece[j : j + 1]:
                reserved.append((i, i + len(self.title)))
                edits.append((i, i + len(self.title), f"'''{self.title}'''"))
        self._piece = piece
        for _ in range(2):
            cands = self._candidates(piece, reserved)
            if not any(cands):
                break
            kind = None
            span = None
            for want in list(self.must):
                span = self._pick(cands, variant=(want == "variant"))
                if span is None:
                    continue
                kind = want
                self.must.remove(want)
                break
            if kind is None:
                r = self.rng.random()
                if r < 0.30:
                    kind = "link"
                elif r < 0.42:
                    kind = "piped"
                elif r < 0.50:
                    kind = "variant"
                elif r < 0.55:
                    kind = "protect"
                elif r < 0.60:
                    kind = "bold"
                elif r < 0.63:
                    kind = "italic"
                else:
                    break
                span = self._pick(cands, variant=(kind == "variant"))
                if span is None:
                    break
            a, b = span
            if kind in ("bold", "italic") and "'" in piece[max(0, a - 1) : a] + piece[b : b + 1]:
                kind = "link"
            reserved.append((a, b))
            edits.append((a, b, self._wrap(kind, piece[a:b])))
        out = piece
        for a, b, rep in sorted(edits, reverse=True):
            out = out[:a] + rep + out[b:]
        # after-sentence furniture
        if piece.rstrip() and piece.rstrip()[-1] in _TERMINATORS:
            if self.refs_done == 0:
                out += self.REF_FULL
                self.refs_done += 1
            elif self.refs_done == 1:
                out += self.REF_REUSE
                self.refs_done += 1
            elif self.refs_done == 2:
                out += self.REF_GROUP
                self.refs_done += 1
            else:
                r = self.rng.random()
                if r < 0.15:
                    self.web_refs += 1
                    out += self.REF_WEB % self.web_refs
                elif r < 0.20:
                    out += self.REF_REUSE
                elif r < 0.23:
                    out += self.CN
                elif r < 0.25:
                    out += self.COMMENT_INLINE
        return out

    def paragraph(self, line: str, bold_title: bool = False) -> str:
        """Render one paragraph; with ``bold_title`` the first sentence holding
        the title gets the title in bold ('''Title''')."""
        out = []
        pending = bold_title
        for p in split_sentences(line):
            bold = pending and self.title in p
            out.append(self.piece(p, bold))
            pending = pending and not bold
        return "".join(out)


_FUNCTION_CHARS = set("的是在了和与及也有为个中一不这其以等被于而之或将对把从到并其所由就都又")


def _article_vocab(lines: list[str], limit: int = 60) -> list[str]:
    """Frequent CJK bigrams/trigrams of an article: a cheap stand-in for words."""
    text = "\n".join(lines)[:4000]  # the opening is plenty, and keeps this cheap
    counts: Counter[str] = Counter(map("".join, zip(text, text[1:])))
    counts.update(map("".join, zip(text, text[1:], text[2:])))
    good = {
        g: c
        for g, c in counts.items()
        if c >= 3 and g[0] not in _FUNCTION_CHARS and g[-1] not in _FUNCTION_CHARS and _CJK_RUN_RE.fullmatch(g)
    }
    ranked = sorted(good, key=lambda g: (-good[g] * len(g), g))
    return sorted(ranked[:limit], key=lambda g: (-len(g), g))


_NOISE_FIXED = [
    "NoteTA", "G1=", "軟體", "Infobox", "信息框图片说明文字", "信息框注释文字", "start date", "Example.jpg",
    "其他用法", "Otheruses", "引用来源书名", "示例出版社", "引用网页标题", "cite book", "cite web", "accessdate",
    "脚注说明文字", "另有补充说明", "来源请求", "date=", "行内隐藏注释内容", "隐藏段落注释内容", "第二行注释", "wikitable",
    "表格标题文字", "表格单元甲", "表格单元乙", "thumb", "缩略图", "的图片说明文字", "另一段图片说明",
    "zh-hans", "zh-hant", "references", "reflist", "__TOC__", "TOC", "官方网站", "example.org", "Category:",
    "分类:", "DEFAULTSORT", "Authority control", "参考文献", "外部链接", "参见",
]


def _titles_regex(titles: list[str]):
    linkable = sorted((x for x in titles if len(x) >= 2 and _CJK_RUN_RE.fullmatch(x)), key=lambda x: (-len(x), x))
    return re.compile("|".join(map(re.escape, linkable))) if linkable else None


def _render_article(
    src: _Source, blocks, rng: random.Random, titles: list[str], title_re=None
) -> tuple[str, list[str]]:
    vocab = _article_vocab([b[1] for b in blocks if b[0] == "para"])
    r = _Renderer(rng, src.title, titles, vocab, title_re)
    t = src.title
    out: list[str] = [
        "{{NoteTA\n|G1=IT\n|G2=Country\n|1=zh-hans:软件; zh-hant:軟體;\n}}",
        "{{Otheruses|subject=本条目的主题|other=其他用法}}",
        "{{Infobox 条目\n"
        "| name          = {{PAGENAME}}\n"
        "| image         = Example.jpg\n"
        "| image_caption = 信息框图片说明文字\n"
        "| 别名          = {{lang|en|Example}}\n"
        "| 创立          = {{start date and age|2001|1|15}}\n"
        "| 网站          = {{URL|https://example.org}}\n"
        "| 注释          = {{efn|信息框注释文字{{cn|date=2020年1月}}}}\n"
        "}}",
    ]
    bold_pending = True  # bold the first occurrence of the title (normally the lead sentence)
    paras_seen = 0
    toc_done = False
    table_done = False
    file2_done = False
    comment_done = False
    in_lead = True
    body: list[str] = []
    for b in blocks:
        if b[0] == "heading":
            if in_lead:
                body.append("__TOC__")
                toc_done = True
            in_lead = False
            eq = "=" * b[1]
            body.append(f"{eq} {b[2]} {eq}")
            continue
        if b[0] == "list":
            body.append("\n".join(f"* {item}" for item in b[1]))
            continue
        # paragraph
        if paras_seen == 1:
            body.append(f"[[File:Example.jpg|thumb|right|220px|[[{t}]]的图片说明文字]]")
        if not in_lead and not file2_done:
            body.append("[[文件:Example2.png|缩略图|左|另一段图片说明]]")
            file2_done = True
        text = r.paragraph(b[1], bold_title=bold_pending)
        bold_pending = bold_pending and f"'''{t}'''" not in text
        body.append(text)
        paras_seen += 1
        if paras_seen == 1 and not comment_done:
            body.append("<!-- 隐藏段落注释内容：请勿删除。\n第二行注释。 -->")
            comment_done = True
        if not in_lead and not table_done:
            body.append(
                '{| class="wikitable sortable"\n|+ 表格标题文字\n! 项目 !! 数值\n|-\n'
                "| 表格单元甲 || {{formatnum:1234}}\n|-\n| 表格单元乙 || 5678<ref>表格脚注说明文字</ref>\n|}"
            )
            table_done = True
    if not toc_done:
        body.append("__TOC__")
    if not table_done:
        body.append(
            '{| class="wikitable"\n|+ 表格标题文字\n! 项目 !! 数值\n|-\n| 表格单元甲 || 1\n|-\n| 表格单元乙 || 2\n|}'
        )
    out.extend(body)
    see_also = [x for x in r.titles[:40]]
    rng.shuffle(see_also)
    see_also = see_also[:2] or ["维基百科"]
    out.append("== 参见 ==\n" + "\n".join(f"* [[{x}]]" for x in see_also) + "\n* {{Portal|中国}}")
    out.append("== 参考文献 ==\n{{reflist|group=注}}\n<references />")
    out.append(
        "== 外部链接 ==\n* [http://example.org 官方网站]\n* [https://example.org/zh/ 官方网站中文版] {{zh-hans}}"
    )
    out.append("{{Authority control}}")
    out.append(f"{{{{DEFAULTSORT:{t}}}}}")
    out.append(f"[[Category:{t}]]\n[[Category:测试条目|{t}]]\n[[分类:示例分类]]")
    wikitext = "\n\n".join(out) + "\n"

    original = src.title + "\n" + "\n".join(
        b[2] if b[0] == "heading" else ("\n".join(b[1]) if b[0] == "list" else b[1]) for b in blocks
    )
    noise = [s for s in _NOISE_FIXED + r.hant_strings if s not in original]
    # keep noise deterministic and unique
    seen: set[str] = set()
    noise = [s for s in noise if not (s in seen or seen.add(s))]
    return wikitext, noise


# ---------------------------------------------------------------------------
# build_pages
# ---------------------------------------------------------------------------


def _timestamp(rng: random.Random) -> str:
    base = datetime(2023, 1, 1)
    dt = base + timedelta(seconds=rng.randint(0, 365 * 86400))
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _contrib(rng: random.Random) -> dict:
    if rng.random() < 0.2:
        return {"contributor": None, "contributor_id": None, "contributor_ip": f"192.0.2.{rng.randint(1, 254)}"}
    name = rng.choice(["Example", "维基用户甲", "Bot示例", "EditorZ", "编辑者乙"])
    return {"contributor": name, "contributor_id": rng.randint(1, 9_999_999), "contributor_ip": None}


def _redirect_title(title: str, existing: set[str]) -> str:
    trad = "".join(_S2T.get(ch, ch) for ch in title)
    cand = trad if trad != title else f"{title}（别称）"
    while cand in existing:
        cand += "之"
    return cand


def build_pages(articles_dir: Path | str | None, *, seed: int = 0) -> tuple[list[Page], list[dict]]:
    """Return ``(pages, expected)``.

    ``pages``: :class:`Page` objects sorted by ``page_id`` (the dump order):
    ns-0 articles, redirects (``#REDIRECT`` and ``#重定向``), and pages in
    namespaces 1, 2, 4, 6, 10 and 14.

    ``expected``: one dict per ns-0 non-redirect article, in dump order:
    ``{"page_id", "title", "sentences", "absent"}``.  ``sentences`` are the
    original plain-text body sentences (split after 。！？, heading lines, list
    items and sentences shorter than 5 characters skipped) that a correct
    extractor reproduces verbatim; ``absent`` are markup/noise strings of that
    page's wikitext (ref and template contents, captions, table cells, the
    zh-hant side of variant markup, dropped sections) which do not occur in the
    original text, so they should not appear in a clean extraction.

    Real articles come from ``articles_dir`` when it is an existing directory
    with ``*.txt`` files; otherwise ~30 synthetic articles are generated.
    """
    rng = random.Random(f"build_pages-{seed}")
    sources: list[_Source] = []
    if articles_dir is not None and Path(articles_dir).is_dir():
        sources = _load_corpus(Path(articles_dir))
    if not sources:
        sources = _synthetic_sources(seed)

    # Parse and filter articles.
    articles: list[tuple[_Source, list]] = []
    seen_titles: set[str] = set()
    for src in sources:
        if src.title in seen_titles or _UNSAFE_RE.search(src.title) or "#" in src.title or ":" in src.title:
            continue
        blocks = _parse_source(src)
        if not any(s for b in blocks if b[0] == "para" for s in _expected_sentences(b[1])):
            continue
        seen_titles.add(src.title)
        articles.append((src, blocks))
    titles = [s.title for s, _ in articles]
    title_re = _titles_regex(titles)

    # Page specs in dump order (ids assigned afterwards, increasing).
    specs: list[dict] = []
    for src, blocks in articles:
        wikitext, noise = _render_article(src, blocks, rng, titles, title_re)
        sentences = [s for b in blocks if b[0] == "para" for s in _expected_sentences(b[1])]
        specs.append(
            {"title": src.title, "ns": 0, "text": wikitext, "expected": {"sentences": sentences, "absent": noise}}
        )

    # Redirects: alternate between the two spellings; insert near their targets.
    all_titles = set(titles)
    n_redirects = min(6, max(2, len(articles) // 8))
    targets = rng.sample(titles, min(n_redirects, len(titles)))
    for k, target in enumerate(targets):
        rtitle = _redirect_title(target, all_titles)
        all_titles.add(rtitle)
        if k % 2 == 0:
            text = f"#REDIRECT [[{target}]]"
        else:
            text = f"#重定向 [[{target}]]\n\n{{{{Redirect from alternative name}}}}"
        pos = next(i for i, s in enumerate(specs) if s["title"] == target) + 1
        specs.insert(pos, {"title": rtitle, "ns": 0, "text": text, "redirect": target})

    first = titles[0]
    marker = NON_ARTICLE_MARKER
    others = [
        {
            "title": "Template:Infobox 条目",
            "ns": 10,
            "text": "{{Infobox\n| above = {{{name|{{PAGENAME}}}}}\n| image = {{{image|}}}\n"
            "| label1 = 别名 | data1 = {{{别名|}}}\n}}<noinclude>\n" + marker + "\n[[Category:信息框模板]]\n</noinclude>",
        },
        {"title": "Template:NoteTA", "ns": 10, "text": "<includeonly>{{#invoke:NoteTA|main}}</includeonly><noinclude>" + marker + "</noinclude>"},
        {"title": "Category:测试条目", "ns": 14, "text": f"本分类收录测试用的条目。{marker}\n\n[[Category:维基百科分类]]"},
        {"title": "Wikipedia:关于", "ns": 4, "text": f"'''维基百科'''是一个自由的多语言百科全书协作计划。{marker}\n\n== 历史 ==\n维基百科于二〇〇一年启动。"},
        {
            "title": f"Talk:{first}",
            "ns": 1,
            "text": f"{{{{WikiProject banner shell}}}}\n\n== 关于本条目的内容 ==\n{marker}"
            "--[[User:Example|Example]]（[[User talk:Example|留言]]） 2024年3月1日 (五) 12:00 (UTC)\n"
            ":同意。--[[User:EditorZ|EditorZ]] 2024年3月2日 (六) 08:00 (UTC)",
        },
        {"title": "User:Example", "ns": 2, "text": f"我是一名维基百科编者。{marker}"},
        {"title": "File:Example.jpg", "ns": 6, "text": f"== 摘要 ==\n示例图片。{marker}\n\n== 许可协议 ==\n{{{{cc-by-sa-4.0}}}}"},
    ]
    for o in others:
        pos = rng.randint(1, len(specs))
        specs.insert(pos, o)

    # Assign ids and revision metadata.
    pages: list[Page] = []
    expected: list[dict] = []
    page_id = rng.randint(10, 20)
    rev_id = 60_000_000 + rng.randint(0, 999_999)
    for s in specs:
        page_id += rng.randint(1, 40)
        rev_id += rng.randint(1, 5000)
        parent = rev_id - rng.randint(1, 5000) if rng.random() < 0.9 else None
        contrib = _contrib(rng)
        comment = rng.choice([None, "修正笔误", "/* 历史 */ 补充内容", "bot: 更新模板"])
        pages.append(
            Page(
                title=s["title"],
                ns=s["ns"],
                page_id=page_id,
                text=s["text"],
                redirect=s.get("redirect"),
                rev_id=rev_id,
                parent_id=parent,
                timestamp=_timestamp(rng),
                comment=comment,
                **contrib,
            )
        )
        if "expected" in s:
            expected.append(
                {
                    "page_id": page_id,
                    "title": s["title"],
                    "sentences": s["expected"]["sentences"],
                    "absent": s["expected"]["absent"],
                }
            )
    return pages, expected


# ---------------------------------------------------------------------------
# build_mirror
# ---------------------------------------------------------------------------


@dataclass
class DumpFiles:
    """One finished dump run (``root/<wiki>/<date>/``)."""

    date: str
    dir: Path
    xml_path: Path
    index_path: Path
    md5sums_path: Path
    sha1sums_path: Path
    status_path: Path
    # per file name: {"path", "size", "md5", "sha1", "url"}
    files: dict[str, dict]
    multistream: MultistreamInfo

    @property
    def xml_name(self) -> str:
        return self.xml_path.name

    @property
    def index_name(self) -> str:
        return self.index_path.name

    @property
    def sizes(self) -> dict[str, int]:
        return {k: v["size"] for k, v in self.files.items()}

    @property
    def md5(self) -> dict[str, str]:
        return {k: v["md5"] for k, v in self.files.items()}

    @property
    def sha1(self) -> dict[str, str]:
        return {k: v["sha1"] for k, v in self.files.items()}

    @property
    def urls(self) -> dict[str, str]:
        """URL paths (``/zhwiki/DATE/NAME``), to append to ``MirrorServer.url``."""
        return {k: v["url"] for k, v in self.files.items()}


@dataclass
class MirrorInfo:
    root: Path  # the served directory
    base: Path  # root / wiki
    wiki: str
    latest_date: str  # newest done date
    done_dates: list[str]
    pending_dates: list[str]
    dumps: dict[str, DumpFiles]  # done date -> files
    rss_path: Path
    latest_dir: Path

    @property
    def latest(self) -> DumpFiles:
        return self.dumps[self.latest_date]

    @property
    def xml_path(self) -> Path:
        return self.latest.xml_path

    @property
    def index_path(self) -> Path:
        return self.latest.index_path

    @property
    def sizes(self) -> dict[str, int]:
        return self.latest.sizes

    @property
    def md5(self) -> dict[str, str]:
        return self.latest.md5

    @property
    def sha1(self) -> dict[str, str]:
        return self.latest.sha1


def _file_digests(path: Path) -> tuple[str, str]:
    md5, sha1 = hashlib.md5(), hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            md5.update(block)
            sha1.update(block)
    return md5.hexdigest(), sha1.hexdigest()


def _updated(date: str) -> str:
    dt = datetime.strptime(date, "%Y%m%d") + timedelta(days=1, hours=10)
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _other_jobs(status: str, date: str) -> dict:
    upd = _updated(date)
    jobs = {}
    for name in ("namespaces", "sitestatstable", "xmlstubsdump", "articlesdump", "metacurrentdump"):
        st = "done" if status == "done" or name in ("namespaces", "sitestatstable") else "waiting"
        jobs[name] = {"status": st, "updated": upd if st == "done" else "", "files": {}}
    return jobs


def build_mirror(
    root: Path | str,
    pages: Iterable[Page | Mapping[str, Any]],
    *,
    wiki: str = "zhwiki",
    done_dates: Iterable[str] = ("20240501", "20240601"),
    pending_dates: Iterable[str] = ("20240701",),
    pages_per_stream: int = 100,
) -> MirrorInfo:
    """Lay out a dumps.wikimedia.org-style mirror under ``root/<wiki>/``.

    Every done date gets the same pages; the files differ between dates only in
    the ``<generator>`` string, so their checksums differ too.
    """
    root = Path(root)
    base = root / wiki
    base.mkdir(parents=True, exist_ok=True)
    plist = [Page.coerce(p) for p in pages]
    done = sorted(done_dates)
    pending = sorted(pending_dates)
    if not done:
        raise ValueError("need at least one done date")

    dumps: dict[str, DumpFiles] = {}
    for n, date in enumerate(done):
        d = base / date
        d.mkdir(parents=True, exist_ok=True)
        xml_name = f"{wiki}-{date}-pages-articles-multistream.xml.bz2"
        idx_name = f"{wiki}-{date}-pages-articles-multistream-index.txt.bz2"
        info = write_multistream(
            d / xml_name,
            d / idx_name,
            plist,
            dbname=wiki,
            pages_per_stream=pages_per_stream,
            siteinfo_extra={"generator": f"MediaWiki 1.43.0-wmf.{8 + n}"},
        )
        files: dict[str, dict] = {}
        for name in (xml_name, idx_name):
            p = d / name
            md5, sha1 = _file_digests(p)
            files[name] = {"path": p, "size": p.stat().st_size, "md5": md5, "sha1": sha1, "url": f"/{wiki}/{date}/{name}"}
        md5_path = d / f"{wiki}-{date}-md5sums.txt"
        sha1_path = d / f"{wiki}-{date}-sha1sums.txt"
        md5_path.write_text("".join(f"{files[k]['md5']}  {k}\n" for k in sorted(files)), encoding="utf-8")
        sha1_path.write_text("".join(f"{files[k]['sha1']}  {k}\n" for k in sorted(files)), encoding="utf-8")
        jobs = _other_jobs("done", date)
        jobs["articlesmultistreamdump"] = {
            "status": "done",
            "updated": _updated(date),
            "files": {
                k: {"size": v["size"], "url": v["url"], "md5": v["md5"], "sha1": v["sha1"]}
                for k, v in sorted(files.items())
            },
        }
        status_path = d / "dumpstatus.json"
        status_path.write_text(json.dumps({"jobs": jobs, "version": "0.8"}, indent=None), encoding="utf-8")
        dumps[date] = DumpFiles(
            date=date,
            dir=d,
            xml_path=d / xml_name,
            index_path=d / idx_name,
            md5sums_path=md5_path,
            sha1sums_path=sha1_path,
            status_path=status_path,
            files=files,
            multistream=info,
        )

    for date in pending:
        d = base / date
        d.mkdir(parents=True, exist_ok=True)
        jobs = _other_jobs("in-progress", date)
        jobs["articlesmultistreamdump"] = {
            "status": "in-progress",
            "updated": _updated(date),
            "files": {
                f"{wiki}-{date}-pages-articles-multistream.xml.bz2": {
                    "url": f"/{wiki}/{date}/{wiki}-{date}-pages-articles-multistream.xml.bz2"
                },
                f"{wiki}-{date}-pages-articles-multistream-index.txt.bz2": {
                    "url": f"/{wiki}/{date}/{wiki}-{date}-pages-articles-multistream-index.txt.bz2"
                },
            },
        }
        (d / "dumpstatus.json").write_text(json.dumps({"jobs": jobs, "version": "0.8"}), encoding="utf-8")

    latest_date = done[-1]
    latest = base / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    newest = dumps[latest_date]
    for src, suffix in (
        (newest.xml_path, "pages-articles-multistream.xml.bz2"),
        (newest.index_path, "pages-articles-multistream-index.txt.bz2"),
    ):
        shutil.copyfile(src, latest / f"{wiki}-latest-{suffix}")
    pub = (datetime.strptime(latest_date, "%Y%m%d") + timedelta(days=1, hours=10)).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    xml_name = newest.xml_name
    rss = (
        '<?xml version="1.0"?>\n'
        '<rss version="2.0">\n'
        "  <channel>\n"
        f"    <title>Wikimedia Downloads</title>\n"
        f"    <link>https://dumps.wikimedia.org/{wiki}/latest/</link>\n"
        f"    <description>{wiki} dump updates</description>\n"
        "    <item>\n"
        f"      <title>{xml_name}</title>\n"
        f"      <link>https://dumps.wikimedia.org/{wiki}/{latest_date}</link>\n"
        f'      <description>&lt;a href="https://dumps.wikimedia.org/{wiki}/{latest_date}/{xml_name}"&gt;{xml_name}&lt;/a&gt;</description>\n'
        f"      <pubDate>{pub}</pubDate>\n"
        "    </item>\n"
        "  </channel>\n"
        "</rss>\n"
    )
    rss_path = latest / f"{wiki}-latest-pages-articles-multistream.xml.bz2-rss.xml"
    rss_path.write_text(rss, encoding="utf-8")

    return MirrorInfo(
        root=root,
        base=base,
        wiki=wiki,
        latest_date=latest_date,
        done_dates=done,
        pending_dates=pending,
        dumps=dumps,
        rss_path=rss_path,
        latest_dir=latest,
    )


# ---- pages for the curation stages: foreign languages, Traditional copies, near-duplicates ----

_SYNTH_EN = [
    "The river flows through the valley and reaches the sea after three hundred kilometres. "
    "Farmers along its banks grow rice and wheat, and the town at its mouth is known for its harbour. "
    "In the nineteenth century a railway was built along the northern bank, which changed the economy of the region.",
    "A library is a collection of books and other materials that people can borrow or read on site. "
    "Public libraries are funded by local governments and are open to everyone. "
    "Many libraries now also lend electronic books and offer free access to the internet.",
]
_SYNTH_JA = [
    "東京は日本の首都であり、世界でも有数の大都市である。江戸時代には江戸と呼ばれ、徳川幕府が置かれた。"
    "明治維新の後に東京と改称され、現在では政治と経済の中心となっている。",
    "富士山は静岡県と山梨県にまたがる活火山で、標高は三千七百七十六メートルである。"
    "日本の最高峰であり、古くから信仰の対象とされてきた。二〇一三年には世界文化遺産に登録された。",
]


def _foreign_texts(shared_root: Path | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(title, wikitext) of real English and Japanese articles when ../shared is present."""
    import bz2
    import lzma
    import re as _re

    en: list[tuple[str, str]] = []
    ja: list[tuple[str, str]] = []
    dumps = Path(shared_root) / "corpora" / "wikidumps" if shared_root else None
    page_re = _re.compile(r"<page>\s*<title>([^<]*)</title>\s*<ns>0</ns>((?:(?!</page>).)*)</page>", _re.S)
    text_re = _re.compile(r"<text[^>]*>(.*?)</text>", _re.S)
    if dumps and (dumps / "enwiki-sample-multistream.xml.bz2").exists():
        raw = bz2.open(dumps / "enwiki-sample-multistream.xml.bz2", "rt", encoding="utf-8").read()
        for m in page_re.finditer(raw):
            t = text_re.search(m.group(2))
            if t and "<redirect" not in m.group(2) and 3000 < len(t.group(1)) < 30000:
                en.append((html.unescape(m.group(1)), html.unescape(t.group(1))))
            if len(en) == 3:
                break
    if dumps and (dumps / "jawiki-truncated-100k.xml.xz").exists():
        raw = lzma.open(dumps / "jawiki-truncated-100k.xml.xz", "rt", encoding="utf-8").read(6_000_000)
        for m in page_re.finditer(raw):
            t = text_re.search(m.group(2))
            if t and "<redirect" not in m.group(2) and 2000 < len(t.group(1)) < 30000:
                ja.append((html.unescape(m.group(1)), html.unescape(t.group(1))))
            if len(ja) == 3:
                break
    if not en:
        en = [(f"English article {i}", text) for i, text in enumerate(_SYNTH_EN)]
    if not ja:
        ja = [(f"日本語の記事{i}", text) for i, text in enumerate(_SYNTH_JA)]
    return en, ja


def _near_dup_edit(text: str, rng: random.Random) -> str:
    """A few character substitutions in prose, one deleted sentence, one appended line."""
    chars = list(text)
    prose = [i for i, ch in enumerate(chars) if "\u4e00" <= ch <= "\u9fff"]
    for i in rng.sample(prose, min(3, len(prose))):
        chars[i] = rng.choice("之其而以于乃")
    out = "".join(chars)
    sentences = [m.end() for m in re.finditer("。", out)]
    if len(sentences) > 30:  # deleting a sentence from a short article would make it a different text
        k = rng.randrange(2, len(sentences) - 2)
        out = out[: sentences[k - 1]] + out[sentences[k] :]
    return out + "\n\n本文内容由网友整理转载。\n"


def build_curation_pages(pages: list[Page], expected: list[dict], shared_root: Path | None, *, seed: int = 0, n_copies: int = 4):
    """Add what the curation stages must remove: English and Japanese articles, Traditional-script
    copies (OpenCC s2t) and near-duplicate copies of Chinese articles, with ids after every original.

    Returns ``(pages, roles)`` with roles = {"foreign": {page_id: lang}, "traditional": [(orig_id, copy_id)],
    "near_dup": [(orig_id, copy_id)]}.
    """
    import opencc

    rng = random.Random(f"curation-{seed}")
    s2t = opencc.OpenCC("s2t.json")
    by_id = {p.page_id: p for p in pages}
    articles = [by_id[e["page_id"]] for e in expected if len(by_id[e["page_id"]].text) > 1500]
    picked = rng.sample(articles, min(2 * n_copies, len(articles)))
    next_id = max(p.page_id for p in pages) + 100
    out = list(pages)
    roles: dict = {"foreign": {}, "traditional": [], "near_dup": []}
    en, ja = _foreign_texts(shared_root)
    for lang, items in (("en", en), ("ja", ja)):
        for title, text in items:
            out.append(Page(title=f"{title} ({lang})", ns=0, page_id=next_id, text=text, rev_id=next_id * 7))
            roles["foreign"][next_id] = lang
            next_id += 1
    for k, orig in enumerate(picked):
        if k < n_copies:
            title = s2t.convert(orig.title)
            title = title if title != orig.title else orig.title + "（繁體）"
            out.append(Page(title=title, ns=0, page_id=next_id, text=s2t.convert(orig.text), rev_id=next_id * 7))
            roles["traditional"].append((orig.page_id, next_id))
        else:
            out.append(Page(title=orig.title + "（转载）", ns=0, page_id=next_id, text=_near_dup_edit(orig.text, rng), rev_id=next_id * 7))
            roles["near_dup"].append((orig.page_id, next_id))
        next_id += 1
    return out, roles
