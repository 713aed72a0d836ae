"""Tests for pipeline.io.formats.wikitext (wikitext -> plain text).

Unit tests cover every rule; the tests at the end run the converter over the
real dump samples in ``<repo>/../shared/corpora/wikidumps`` (skipped when that
folder is absent; the files are read in place, never copied).
"""

from __future__ import annotations

import bz2
import functools
import html
import lzma
import re
from pathlib import Path

import mwparserfromhell
import pytest

from pipeline.io.formats import wikitext as wt
from pipeline.io.formats.wikitext import DEFAULT_DROP_SECTIONS, resolve_variants, wikitext_to_text

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DUMPS = SHARED / "corpora" / "wikidumps"

LEFTOVER_MARKERS = ("{{", "[[", "-{", "<ref", "'''", "{|", "Category:", "thumb|")
STRICT_MARKERS = LEFTOVER_MARKERS + ("}}", "]]", "}-", "|}", "__TOC__", "<", "\x00", "\x02", "\x03")


def conv(text: str, **kw) -> str:
    return wikitext_to_text(text, **kw)


def assert_clean(out: str) -> None:
    for m in STRICT_MARKERS:
        i = out.find(m)
        assert i < 0, f"{m!r} left in ...{out[max(0, i - 60):i + 60]!r}..."


def assert_format(out: str) -> None:
    assert out == out.strip()
    assert "\n\n\n" not in out
    for line in out.split("\n"):
        assert line == line.rstrip(), f"trailing whitespace in {line!r}"


# ---------------------------------------------------------------------------
# Language variants
# ---------------------------------------------------------------------------


class TestResolveVariants:
    def test_two_way_rule(self):
        s = "-{zh-hans:鼠标;zh-hant:滑鼠;}-"
        assert resolve_variants(s) == "鼠标"
        assert resolve_variants(s, "zh-hans") == "鼠标"
        assert resolve_variants(s, "zh-hant") == "滑鼠"

    def test_rule_order_does_not_matter(self):
        assert resolve_variants("-{zh-hant:乙;zh-hans:甲}-") == "甲"
        assert resolve_variants("-{zh-hant:乙;zh-hans:甲}-", "zh-hant") == "乙"

    @pytest.mark.parametrize(
        "markup, variant, expected",
        [
            ("-{zh-cn:大陆;zh-tw:台湾;}-", "zh-hans", "大陆"),
            ("-{zh-tw:台湾;zh-sg:新加坡;}-", "zh-hans", "新加坡"),
            ("-{zh-tw:台湾;zh-my:大马;}-", "zh-hans", "大马"),
            ("-{zh-tw:台湾;zh:通用;}-", "zh-hans", "通用"),
            ("-{zh-hk:香港;zh-tw:台湾;}-", "zh-hans", "台湾"),  # zh-hant before zh-tw before zh-hk
            ("-{zh-hk:香港;zh-mo:澳门;}-", "zh-hans", "香港"),
            ("-{zh-mo:澳门;}-", "zh-hans", "澳门"),
            ("-{zh-cn:大陆;zh-tw:台灣;}-", "zh-hant", "台灣"),
            ("-{zh-cn:大陆;zh-hk:香港;}-", "zh-hant", "香港"),
            ("-{zh-cn:大陆;zh:通用;}-", "zh-hant", "通用"),
            ("-{zh-cn:大陆;zh-sg:新加坡;}-", "zh-hant", "大陆"),
            ("-{sr-el:latinica;sr-ec:ћирилица;}-", "zh-hans", "latinica"),  # first rule
        ],
    )
    def test_fallback_order(self, markup, variant, expected):
        assert resolve_variants(markup, variant) == expected

    def test_semicolon_inside_rule_text(self):
        s = "-{zh-hans:甲;乙;丙;zh-hant:丁;}-"
        assert resolve_variants(s) == "甲;乙;丙"
        assert resolve_variants(s, "zh-hant") == "丁"

    def test_one_way_rules(self):
        s = "-{巴士=>zh-hans:公共汽车;巴士=>zh-hant:公車;}-"
        assert resolve_variants(s) == "公共汽车"
        assert resolve_variants(s, "zh-hant") == "公車"

    def test_no_rules_is_verbatim(self):
        assert resolve_variants("-{帕斯卡}-") == "帕斯卡"
        assert resolve_variants("-{a;b:c}-") == "a;b:c"
        assert resolve_variants("前-{保护}-后") == "前保护后"

    def test_flags(self):
        rules = "zh-hans:鼠标;zh-hant:滑鼠;"
        assert resolve_variants(f"-{{R|{rules}}}-") == rules
        assert resolve_variants(f"-{{A|{rules}}}-") == "鼠标"
        assert resolve_variants(f"-{{A|{rules}}}-", "zh-hant") == "滑鼠"
        for flag in ("H", "T", "D", "-"):
            assert resolve_variants(f"甲-{{{flag}|{rules}}}-乙") == "甲乙", flag

    def test_nesting_links_and_templates(self):
        assert resolve_variants("-{zh-hans:-{内}-外;zh-hant:x;}-") == "内外"
        assert resolve_variants("-{zh-hans:[[甲|乙]];zh-hant:[[丙|丁]];}-") == "[[甲|乙]]"
        # "}-" that closes a template inside the block is not the block end
        assert resolve_variants("-{zh-hans:{{foo}}-bar;zh-hant:q;}-") == "{{foo}}-bar"
        assert resolve_variants("-{{{lang|en|X}}}-") == "{{lang|en|X}}"
        # a template right before a block (templates expand first in MediaWiki)
        assert resolve_variants("{{cn}}-{哲学}-心理学") == "{{cn}}哲学心理学"

    def test_unbalanced_is_literal(self):
        for s in ("a-{b", "-{", "x}-y", "-{zh-hans:a", "a-{b-{c}-d", "}--{"):
            out = resolve_variants(s)
            assert isinstance(out, str)
        assert resolve_variants("a-{b") == "a-{b"
        assert resolve_variants("a-{b-{c}-d") == "a-{bcd"
        assert resolve_variants("x}-y") == "x}-y"

    def test_not_confused_by_template_adjacency(self):
        assert resolve_variants("{{a}}-{{b}}") == "{{a}}-{{b}}"
        assert resolve_variants("1990-{{date|x}}") == "1990-{{date|x}}"

    def test_in_wikitext_to_text(self):
        src = "中国的-{zh-hans:软件;zh-hant:軟體;}-产业。"
        assert conv(src) == "中国的软件产业。"
        assert conv(src, variant="zh-hant") == "中国的軟體产业。"
        assert conv("-{zh-hans:[[计算机|电脑]];zh-hant:[[電腦]];}-很快") == "电脑很快"
        assert conv("-{H|zh-hans:鼠标;zh-hant:滑鼠;}-鼠标") == "鼠标"


# ---------------------------------------------------------------------------
# Dropped markup
# ---------------------------------------------------------------------------


class TestDrop:
    def test_templates_and_infobox(self):
        src = (
            "{{NoteTA\n|G1=IT\n|1=zh-hans:软件; zh-hant:軟體;\n}}\n"
            "{{Infobox country\n| name = {{PAGENAME}}\n| image = [[File:A.jpg|thumb|说明]]\n"
            "| note = {{efn|注{{cn|date=2020}}}}\n}}\n"
            "'''北京'''是首都{{来源请求|date=2020年1月}}。"
        )
        out = conv(src)
        assert out == "北京是首都。"

    def test_refs(self):
        src = (
            '北京是中国的首都<ref name="a">{{cite web|url=http://x|title=t}}</ref>，'
            '也是直辖市<ref name="a" />。<ref group="注">注释</ref>完<REF>x</REF>。\n<references/>'
        )
        assert conv(src) == "北京是中国的首都，也是直辖市。完。"

    def test_comments(self):
        assert conv("甲<!-- 隐藏 -->乙<!--\n多行\n-->丙") == "甲乙丙"

    @pytest.mark.parametrize(
        "ns", ["File", "Image", "Media", "file", "IMAGE", "文件", "檔案", "文檔", "图像", "圖像", "媒体", "ファイル", "画像"]
    )
    def test_files(self, ns):
        src = f"前[[{ns}:Example.jpg|thumb|right|220px|图片说明[[链接]]文字]]后"
        assert conv(src) == "前后"

    @pytest.mark.parametrize("ns", ["Category", "category", "分类", "分類", "カテゴリ"])
    def test_categories(self, ns):
        assert conv(f"正文。\n\n[[{ns}:示例|排序]]\n[[{ns}:其他]]") == "正文。"

    def test_colon_category_link_is_kept(self):
        assert conv("见[[:Category:物理学|物理学分类]]。") == "见物理学分类。"
        assert conv("见[[:Category:物理学]]。") == "见物理学。"
        assert conv("「[[:Category:近江米|Category:近江米]]」") == "「近江米」"

    def test_interlanguage_links(self):
        assert conv("正文[[en:Beijing]][[ja:北京市]][[zh-yue:北京]][[simple:Beijing]]") == "正文"
        assert conv("见[[:en:Beijing|英文条目]]") == "见英文条目"
        assert conv("[[wikt:词|词义]]") == "词义"

    def test_tables(self):
        src = "前文。\n{| class=\"wikitable\"\n|+ 标题\n! 甲 !! 乙\n|-\n| [[单元]] || {{x}}\n|}\n后文。"
        assert conv(src) == "前文。\n\n后文。"

    def test_nested_tables(self):
        src = "前文。\n{|\n|外层\n|\n{|\n|内层\n|}\n|}\n后文。"
        out = conv(src)
        assert out == "前文。\n\n后文。"

    def test_html_table(self):
        assert conv("前<table><tr><td>格</td></tr></table>后") == "前后"

    def test_broken_table_markup(self):
        # unbalanced attribute quote and an unclosed link: mwparserfromhell gives up
        src = '前文。\n{| class="wikitable" style="x;"">\n|-\n| [[a|b\n| c\n|}\n后文。'
        out = conv(src)
        assert "前文。" in out and "后文。" in out
        assert_clean(out)

    @pytest.mark.parametrize("mw", ["__TOC__", "__NOTOC__", "__NOEDITSECTION__", "__FORCETOC__", "__NEW_MAGIC__"])
    def test_magic_words(self, mw):
        assert conv(f"{mw}\n甲{mw}乙") == "甲乙"

    def test_lowercase_dunder_is_text(self):
        assert conv("Python 的 __init__ 方法") == "Python 的 __init__ 方法"

    @pytest.mark.parametrize(
        "tag",
        ["ref", "references", "math", "chem", "gallery", "timeline", "score", "syntaxhighlight", "source", "pre", "ce"],
    )
    def test_tags_with_dropped_content(self, tag):
        assert conv(f"甲<{tag}>内容 x^2</{tag}>乙") == "甲乙"

    def test_horizontal_rule(self):
        assert conv("甲\n----\n乙") == "甲\n\n乙"

    def test_external_links(self):
        assert conv("见[http://example.org 官方网站]。") == "见官方网站。"
        assert conv("见[http://example.org]。") == "见。"
        assert conv("see http://example.org/x now") == "see now"
        assert conv("[//example.org/a 相对协议]") == "相对协议"

    def test_unknown_template_leaves_no_space(self):
        assert conv("甲{{cn}}乙") == "甲乙"
        assert conv("foo {{cn}} bar") == "foo bar"
        assert conv("foo{{cn}} bar") == "foo bar"

    def test_parser_functions_and_arguments(self):
        assert conv("甲{{#if:x|y|z}}{{{1|默认}}}{{DEFAULTSORT:排序}}乙") == "甲乙"


# ---------------------------------------------------------------------------
# Kept text
# ---------------------------------------------------------------------------


class TestKeep:
    def test_link_forms(self):
        assert conv("[[目标|显示]]") == "显示"
        assert conv("[[目标]]") == "目标"
        assert conv("[[apple]]s and [[目标]]们") == "apples and 目标们"
        assert conv("[[北京市 (中国)|]]") == "北京市"
        assert conv("[[Foo#Bar|baz]]") == "baz"

    def test_link_with_dropped_display_falls_back_to_title(self):
        assert conv("[[Insha'Allah|{{transl|ar|in shā' Allāh}}]]") == "Insha'Allah"

    @pytest.mark.parametrize(
        "tag", ["b", "i", "span", "small", "sup", "sub", "u", "s", "font", "big", "code", "abbr", "del", "ins"]
    )
    def test_inline_tags_keep_text(self, tag):
        assert conv(f"甲<{tag} style=\"x\">内</{tag}>乙") == "甲内乙"

    @pytest.mark.parametrize("tag", ["center", "blockquote", "poem", "div", "p"])
    def test_block_tags_keep_text(self, tag):
        out = conv(f"甲<{tag}>内</{tag}>乙")
        assert out.replace("\n", "") == "甲内乙"
        assert "内" in out.split("\n")

    def test_poem_keeps_lines(self):
        assert conv("<poem>床前明月光\n疑是地上霜</poem>") == "床前明月光\n疑是地上霜"

    def test_br(self):
        assert conv("甲<br>乙<br/>丙<br />丁") == "甲\n乙\n丙\n丁"

    def test_bold_italic(self):
        assert conv("'''粗体'''和''斜体''与'''''都有'''''") == "粗体和斜体与都有"
        assert conv("'''未闭合\n下一行") == "未闭合\n下一行"
        assert conv("l'amour") == "l'amour"

    def test_lists(self):
        src = "列表：\n* 甲\n** 乙\n# 丙\n#: 丁\n: 缩进\n; 术语 : 定义\n*\n后文"
        assert conv(src) == "列表：\n甲\n乙\n丙\n丁\n缩进\n术语\n定义\n后文"

    def test_nowiki(self):
        assert conv("<nowiki>*~~~~</nowiki> &lt;") == "*~~~~ <"

    def test_entities(self):
        assert conv("甲&nbsp;乙&amp;丙&lt;丁&gt;&quot;&#65;&#x4E2D;&mdash;") == '甲 乙&丙<丁>"A中—'

    @pytest.mark.parametrize(
        "src, expected",
        [
            ("{{lang|en|Beijing}}", "Beijing"),
            ("{{Lang|ja|北京}}", "北京"),
            ("{{lang-en|Beijing}}", "Beijing"),
            ("{{lang-fr|Pékin}}", "Pékin"),
            ("{{le|北京大学|Peking University}}", "北京大学"),
            ("{{link-en|北京大学|Peking University}}", "北京大学"),
            ("{{link-ja|东京大学|東京大学}}", "东京大学"),
            ("{{link-de|柏林|Berlin}}", "柏林"),
            ("{{tsl|en|Peking University|北京大学}}", "北京大学"),
            ("{{ill|Berlin Wall|de|Berliner Mauer}}", "Berlin Wall"),
            ("{{仮リンク|ベルリン|de|Berlin}}", "ベルリン"),
            ("{{nowrap|不换行文字}}", "不换行文字"),
            ("{{Nowrap|[[链接|显示]]}}", "显示"),
            ("{{nobr|x y}}", "x y"),
            ("{{not a typo|teh}}", "teh"),
            ("{{Template:Lang|de|Berlin}}", "Berlin"),
            ("{{模板:Nowrap|甲}}", "甲"),
        ],
    )
    def test_template_whitelist(self, src, expected):
        assert conv(f"前{src}后") == f"前{expected}后"

    def test_whitelisted_template_in_sentence(self):
        src = "'''北京'''（{{lang-en|Beijing}}），是{{link-en|中华人民共和国|People's Republic of China}}的首都。"
        assert conv(src) == "北京（Beijing），是中华人民共和国的首都。"


# ---------------------------------------------------------------------------
# Sections and output format
# ---------------------------------------------------------------------------


class TestSections:
    REQUIRED = (
        "参考文献 参考资料 參考資料 參考文獻 参考 注释 註釋 注解 脚注 腳註 外部链接 外部連結 外部鏈接 参见 參見 "
        "相关条目 相關條目 延伸阅读 延伸閱讀 扩展阅读 來源 来源 関連項目 出典 外部リンク"
    ).split() + ["references", "notes", "footnotes", "see also", "external links", "further reading", "sources", "bibliography"]

    def test_default_set_contents(self):
        missing = [t for t in self.REQUIRED if t not in DEFAULT_DROP_SECTIONS]
        assert not missing
        assert all(t == t.strip().lower() for t in DEFAULT_DROP_SECTIONS)

    def test_heading_on_own_line(self):
        assert conv("导言。\n== 历史 ==\n正文。") == "导言。\n\n历史\n\n正文。"
        assert conv("==历史==\n正文。") == "历史\n\n正文。"

    def test_drop_section_with_subsections(self):
        src = (
            "导言。\n== 历史 ==\n历史正文。\n== 参见 ==\n* [[甲]]\n=== 子节 ===\n子节内容。\n"
            "== 参考文献 ==\n{{reflist}}\n== 后记 ==\n后记正文。"
        )
        assert conv(src) == "导言。\n\n历史\n\n历史正文。\n\n后记\n\n后记正文。"

    def test_drop_stops_at_higher_level(self):
        src = "=== 外部链接 ===\n链接。\n== 其他 ==\n其他内容。"
        assert conv(src) == "其他\n\n其他内容。"

    @pytest.mark.parametrize("title", ["See also", "SEE ALSO", " External links ", "References", "Further  reading"])
    def test_english_titles_case_insensitive(self, title):
        assert conv(f"Intro.\n=={title}==\n* x\n== Life ==\nText.") == "Intro.\n\nLife\n\nText."

    def test_custom_drop_sections(self):
        src = "导言。\n== 历史 ==\n历史正文。\n== 参见 ==\n参见正文。"
        assert conv(src, drop_sections=frozenset({"历史"})) == "导言。\n\n参见\n\n参见正文。"
        assert conv(src, drop_sections=frozenset()) == "导言。\n\n历史\n\n历史正文。\n\n参见\n\n参见正文。"

    def test_heading_with_markup_and_variant(self):
        src = "导言。\n== -{zh-hans:参考资料;zh-hant:參考資料;}- ==\n资料。\n== '''[[历史]]''' ==\n正文。"
        assert conv(src) == "导言。\n\n历史\n\n正文。"
        assert conv(src, variant="zh-hant") == "导言。\n\n历史\n\n正文。"

    def test_heading_of_emptied_section_is_dropped(self):
        src = "导言。\n== 图集 ==\n<gallery>\nFile:a.jpg|说明\n</gallery>\n== 历史 ==\n正文。"
        assert conv(src) == "导言。\n\n历史\n\n正文。"

    def test_paragraphs_and_blank_lines(self):
        out = conv("段一。\n\n\n\n段二。  \n行二。\t\n\n\n{{x}}\n\n段三。")
        assert out == "段一。\n\n段二。\n行二。\n\n段三。"

    def test_format_invariants_on_rich_article(self):
        out = conv(RICH_ARTICLE)
        assert_format(out)
        assert_clean(out)

    def test_rich_article_text(self):
        out = conv(RICH_ARTICLE)
        assert out.startswith("北京市，简称京，是中华人民共和国的首都，也是直辖市。")
        assert "北京有悠久的历史，是六朝古都之一。" in out
        assert "软件产业很发达。" in out
        assert "外部链接" not in out and "官方网站" not in out and "参考文献" not in out
        assert "Example.jpg" not in out and "图片说明" not in out and "表格单元" not in out


# ---------------------------------------------------------------------------
# CJK sentences stay verbatim
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, expected",
    [
        ("北京是中国的首都<ref>x</ref>，也是[[直辖市]]。", "北京是中国的首都，也是直辖市。"),
        ("北京是中国的首都{{cn|date=2020}}，也是直辖市。", "北京是中国的首都，也是直辖市。"),
        ("北京是<!-- c -->中国的首都<ref name=a/>，也是[[File:x.jpg|thumb|y]]直辖市。", "北京是中国的首都，也是直辖市。"),
        ("北京是中国的首都<math>x</math>，也是[[Category:城市]]直辖市。", "北京是中国的首都，也是直辖市。"),
        ("北京是'''中国'''的''首都''，也是[[直辖|直辖市]]。", "北京是中国的首都，也是直辖市。"),
        ("北京是中国的首都 <ref>x</ref> ，保留原有空格。", "北京是中国的首都 ，保留原有空格。"),
        ("原文  有两个空格。", "原文  有两个空格。"),
    ],
)
def test_cjk_sentence_verbatim(src, expected):
    assert conv(src) == expected


# ---------------------------------------------------------------------------
# Robustness and speed
# ---------------------------------------------------------------------------


WEIRD = [
    "", " ", "\n\n", "{{", "}}", "[[", "]]", "{|", "|}", "-{", "}-", "<ref>", "</ref>", "<ref name=x>unclosed",
    "'''", "''", "<!--", "-->", "[[File:", "[[:Category:", "[[|]]", "[[]]", "{{}}", "{{{", "<>", "</>",
    "== ==", "=", "==", "----", "*", "#", ":", ";", "{{#if:", "[http://", "&#;", "&#0;", "&#xD800;",
    "{{a|b=[[c|d}}", "[[a|{{b]]}}", "<div><span>x</div></span>", "-{zh-hans:a;zh-hant:b", "-{R|",
    "text \x00\x02\x03 text", "{{" * 2000, "[[" * 2000 + "x", "-{" * 3000, "<ref>" * 1000, "{|\n" * 500,
    "{{a|" * 1000, "<!--" * 1000, "[http://x " * 1000, "-{{{" * 5000 + "}-" * 5000, "'''" * 3000,
]


@pytest.mark.parametrize("src", WEIRD, ids=range(len(WEIRD)))
def test_never_raises(src):
    out = conv(src)  # pathological input must not hang: pytest-timeout guards it; speed is benchmarked
    assert isinstance(out, str)
    assert "\x00" not in out and "\x02" not in out and "\x03" not in out
    assert_format(out)


def test_truncated_markup_keeps_text():
    out = conv("开头的句子。\n{{Infobox|a=b\n后面的句子。")
    assert "开头的句子。" in out
    out = conv("开头的句子。[[链接|显示\n后面的句子。")
    assert "开头的句子。" in out and "后面的句子。" in out


def test_pathological_input_uses_fallback_and_keeps_text():
    src = "正文句子。" + "{{a|" * 500 + "\n== 参考文献 ==\n文献。\n== 历史 ==\n历史句子。"
    assert wt._pathological(wt.resolve_variants(src))
    out = conv(src)
    assert "正文句子。" in out and "历史句子。" in out and "文献。" not in out
    assert_format(out)


def test_big_page_converts_cleanly():
    unit = (
        "北京是中国的首都<ref>{{cite web|url=http://x|title=t|date=2020}}</ref>，也是[[直辖市]]。"
        "'''bold''' and ''it'' [[Foo|bar]]s. {{Infobox|a={{b|c}}|d=[[e]]}}\n"
        "== 节 ==\n* 项目 [[x]]\n-{zh-hans:甲;zh-hant:乙;}-\n{|\n|a||b\n|}\n[[File:x.jpg|thumb|说明 [[y]]]]"
        "&nbsp;&amp;<!-- c -->\n\n"
    )
    src = unit * (400_000 // len(unit))
    assert len(src.encode()) > 300_000
    out = conv(src)
    assert_clean(out)
    assert out.count("北京是中国的首都，也是直辖市。") == src.count("北京是中国的首都<ref>")


def test_pruned_parse_matches_full_tree():
    """The token pruning is an optimisation only: same output as walking the
    full mwparserfromhell tree."""
    for src in (RICH_ARTICLE, "'[[Epoch|''epoch'' year]] x", "''<!--c-->' a [[b|c]]'' d"):
        text = resolve_variants(src)
        full = wt._Renderer(DEFAULT_DROP_SECTIONS)
        full.walk(mwparserfromhell.parse(text, skip_style_tags=True))
        pruned = wt._Renderer(DEFAULT_DROP_SECTIONS)
        pruned.walk(wt._parse(text))
        assert wt._finish("".join(pruned.out)) == wt._finish("".join(full.out))


RICH_ARTICLE = """{{NoteTA
|G1=IT
|1=zh-hans:软件; zh-hant:軟體;
}}
{{Otheruses|subject=本条目|other=其他用法}}
{{Infobox 城市
| name = 北京市
| image = Example.jpg
| 注释 = {{efn|信息框注释{{cn|date=2020年1月}}}}
}}
'''北京市'''，简称'''京'''，是[[中华人民共和国]]的[[首都]]<ref name="a">{{cite book |title=书名 |year=2010}}</ref>，也是[[直辖市]]<ref name="a" />。
<!-- 隐藏注释 -->
[[File:Example.jpg|thumb|right|220px|[[北京]]的图片说明]]
__TOC__
== 历史 ==
北京有悠久的历史，是六朝古都之一。{{来源请求|date=2020年1月}}

-{zh-hans:软件;zh-hant:軟體;}-产业很发达。

{| class="wikitable"
|+ 表格标题
! 项目 !! 数值
|-
| 表格单元甲 || {{formatnum:1234}}
|}

=== 行政区划 ===
* [[东城区]]
* [[西城区]]（{{lang-en|Xicheng}}）

== 参见 ==
* [[天津市]]

== 参考文献 ==
{{reflist}}
<references />

== 外部链接 ==
* [http://example.org 官方网站]

{{Authority control}}
{{DEFAULTSORT:Beijing}}
[[Category:北京市]]
[[分类:首都]]
[[en:Beijing]]
"""


# ---------------------------------------------------------------------------
# Real dump samples (../shared/corpora/wikidumps)
# ---------------------------------------------------------------------------

_PAGE_RE = re.compile(r"<page>.*?</page>", re.S)
_NS_RE = re.compile(r"<ns>(-?\d+)</ns>")
_TEXT_RE = re.compile(r"<text\b[^>]*>(.*?)</text>", re.S)
_TITLE_RE = re.compile(r"<title>(.*?)</title>", re.S)

# file name -> minimum number of ns-0 non-redirect articles expected in it
SAMPLES = {
    "enwiki-sample-multistream.xml.bz2": 100,
    "enwiki-table-markup.xml.bz2": 5,
    "jawiki-truncated-100k.xml.xz": 150,
    "bgwiki-utf16-shortened.xml.bz2": 1,
}


@functools.lru_cache(maxsize=None)
def _read_xml(path: Path) -> str:
    if path.suffix == ".xz":
        raw = lzma.open(path).read()
    else:
        raw = bz2.open(path).read()  # reads every stream of a multistream file
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    return raw.decode("utf-8", errors="replace")  # the truncated file may end mid-character


@functools.lru_cache(maxsize=None)
def _articles(name: str) -> tuple[tuple[str, str], ...]:
    """(title, wikitext) of the complete ns-0 non-redirect pages of a sample."""
    path = DUMPS / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    xml = _read_xml(path)
    out = []
    for chunk in _PAGE_RE.findall(xml):  # an unterminated last <page> never matches
        ns = _NS_RE.search(chunk)
        if ns is None or ns.group(1) != "0" or "<redirect" in chunk:
            continue
        m = _TEXT_RE.search(chunk)
        if m is None:
            continue
        title = html.unescape(_TITLE_RE.search(chunk).group(1))
        out.append((title, html.unescape(m.group(1))))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _converted(name: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((t, w, wikitext_to_text(w)) for t, w in _articles(name))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_real_dump_leftover_rate(name):
    docs = _converted(name)
    assert len(docs) >= SAMPLES[name]
    dirty = [t for t, _, out in docs if any(m in out for m in LEFTOVER_MARKERS)]
    assert len(dirty) / len(docs) < 0.005, f"markup left in {dirty[:5]}"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_real_dump_non_empty_and_formatted(name):
    docs = _converted(name)
    empty = [t for t, _, out in docs if not out.strip()]
    assert len(empty) <= 0.02 * len(docs), f"empty output for {empty[:5]}"
    for _, _, out in docs:
        assert_format(out)
        assert "\x00" not in out and "\x02" not in out and "\x03" not in out


def test_real_dump_jawiki_truncated_tail_is_skipped():
    path = DUMPS / "jawiki-truncated-100k.xml.xz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    xml = _read_xml(path)
    assert xml.count("<page>") == xml.count("</page>") + 1  # really cut mid-page
    assert len(_articles("jawiki-truncated-100k.xml.xz")) >= SAMPLES["jawiki-truncated-100k.xml.xz"]


def test_real_dump_content_survives():
    docs = {t: out for t, _, out in _converted("enwiki-sample-multistream.xml.bz2")}
    anarchism = docs["Anarchism"]
    assert anarchism.startswith("Anarchism is a political philosophy")
    assert "\n\nEtymology and terminology\n\n" in anarchism
    assert "See also" not in anarchism.split("\n") and "References" not in anarchism.split("\n")
    ja = {t: out for t, _, out in _converted("jawiki-truncated-100k.xml.xz")}
    assert any("地理学" in out[:50] for t, out in ja.items() if t == "地理学")


def test_real_dump_pruning_equivalence():
    docs = _articles("enwiki-sample-multistream.xml.bz2")
    biggest = max(docs, key=lambda d: len(d[1]))
    assert len(biggest[1]) > 100_000
    assert wikitext_to_text(biggest[1])
    for _, w in docs[:12]:
        text = resolve_variants(w)
        full = wt._Renderer(DEFAULT_DROP_SECTIONS)
        full.walk(mwparserfromhell.parse(text, skip_style_tags=True))
        assert wikitext_to_text(w) == wt._finish("".join(full.out))
