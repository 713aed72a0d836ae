"""url_filter, content_filter, the web quality presets and clean's C4 line filters."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.common.errors import StageError
from pipeline.core.stage import class_path
from stages.clean import Clean
from stages.content_filter import ContentFilter
from stages.url_filter import UrlFilter, _domains_task, global_cutoffs
from tests.conftest import run_cli

NO_WORDS = {"words": [], "soft_words": [], "subwords": []}


def docs(texts: list[str], urls: list[str | None] | None = None) -> pa.Table:
    n = len(texts)
    return pa.table({"id": [f"d{i}" for i in range(n)], "source": ["s"] * n, "title": [""] * n, "url": urls or [None] * n, "text": texts})


def content(texts, **params):
    st = ContentFilter(ContentFilter.Params.model_validate(params), "content")
    kept, removed, stats = st.process(docs(texts))
    return kept, removed, stats


# ----------------------------------------------------------------------------- content_filter
@pytest.mark.parametrize("text", ["这台电脑的性能很好。", "男女性别平等。", "他参加了成人教育课程。", "她的性格开朗。", "我们去日本旅游。", "一杯鸡尾酒。", "这会造成人口下降。", "妈妈的手艺很好。", "牛奶和奶茶。", "这是他的处女作。"])
def test_everyday_chinese_words_never_fire(text):
    kept, removed, stats = content([text], max_ratio=0, min_matches=1)
    assert removed.num_rows == 0 and stats["content_filter"]["matches"] == 0, removed.to_pylist()


def test_true_positives_zh_en_with_terms_in_ledger():
    kept, removed, _ = content(["他妈的，操你妈，傻逼。", "fuck this shit", "Essex and Sussex are counties."], max_ratio=0, min_matches=1)
    assert removed["id"].to_pylist() == ["d0", "d1"]
    assert removed["reason"].to_pylist() == ["content:badwords:zh", "content:badwords:en"]
    sig = json.loads(removed["signals"][0].as_py())
    assert set(sig["terms"]) == {"他妈的", "操你妈", "傻逼"} and sig["ratio"] > 0 and sig["threshold"] == 0
    assert set(json.loads(removed["signals"][1].as_py())["terms"]) == {"fuck", "shit"}


def test_traditional_chinese_is_matched():
    _, removed, _ = content(["這部色情片，淫穢內容。"], max_ratio=0, min_matches=1)
    assert removed.num_rows == 1 and set(json.loads(removed["signals"][0].as_py())["terms"]) == {"色情", "淫秽"}
    _, removed, _ = content(["這部色情片，淫穢內容。"], max_ratio=0, min_matches=1, traditional=False)
    assert set(json.loads(removed["signals"][0].as_py())["terms"]) == {"色情"}  # 淫穢 missed without normalization


def test_ratio_threshold_keeps_passing_mentions():
    article = "这是一篇关于法律的文章，讨论了强奸罪的量刑。" + "法院审理了大量案件，判决依据相关法律条文。" * 40
    spam = "色情 淫秽 免费观看 色情 视频 淫荡 " * 5
    kept, removed, _ = content([article, spam])  # defaults: ratio > 0.005 and >= 2 matches
    assert kept["id"].to_pylist() == ["d0"] and removed["id"].to_pylist() == ["d1"]
    _, removed, _ = content([article], max_ratio=0, min_matches=1)
    assert removed.num_rows == 1


def test_score_action_removes_nothing_and_adds_columns():
    kept, removed, _ = content(["他妈的，操你妈，傻逼。", "普通的句子。"], action="score", max_ratio=0, min_matches=1)
    assert removed.num_rows == 0 and kept.num_rows == 2
    assert kept["content_badword_flag"].to_pylist() == [True, False]
    assert kept["content_badword_matches"].to_pylist()[0] == 3


def test_term_list_file_and_missing_file(tmp_path):
    f = tmp_path / "extra.txt"
    f.write_text("# my list\n违禁词语\n", encoding="utf-8")
    _, removed, _ = content(["这里有违禁词语。"], lists=[], files={"zh": [str(f)]}, max_ratio=0, min_matches=1)
    assert removed.num_rows == 1 and "违禁词语" in json.loads(removed["signals"][0].as_py())["terms"]
    with pytest.raises(StageError, match="term list not found"):
        content(["x"], files={"zh": [str(tmp_path / "missing.txt")]})


def test_content_provenance_records_license():
    st = ContentFilter(ContentFilter.Params(), "content")
    prov = st.provenance()["content_filter"]
    assert {lst["license"] for lst in prov["lists"]} == {"CC-BY-4.0"} and all(len(lst["sha256"]) == 64 for lst in prov["lists"])


# ----------------------------------------------------------------------------- url_filter
def url_stage(**params) -> UrlFilter:
    return UrlFilter(UrlFilter.Params.model_validate({**NO_WORDS, **params}), "url")


def test_blocklist_file_subdomains_urls_and_allow(tmp_path):
    f = tmp_path / "block.txt"
    f.write_text("# comment\nbad.example\n0.0.0.0 tracker.test\nexample.org/private/*\nexample.net/one.html\n", encoding="utf-8")
    urls = ["http://bad.example/a", "https://www.sub.bad.example:8080/x", "http://notbad.example/", "http://tracker.test/", "http://example.org/private/p?q=1", "http://example.org/public", "http://example.net/one.html", None, "http://ok.bad.example/"]
    st = url_stage(lists=[str(f)], allow=["ok.bad.example"])
    kept, removed, stats = st.process(docs(["t"] * len(urls), urls))
    assert kept["url"].to_pylist() == ["http://notbad.example/", "http://example.org/public", None, "http://ok.bad.example/"]
    assert set(removed["reason"].to_pylist()) == {"url:blocklist:block"}
    sig = [json.loads(s) for s in removed["signals"].to_pylist()]
    assert [s["kind"] for s in sig] == ["domain", "domain", "domain", "prefix", "url"]
    assert sig[1]["matched"] == "bad.example" and stats["url_filter"]["no_url"] == 1


def test_named_ut1_list_and_url_words():
    pytest.importorskip("datatrove", reason="the UT1 list and URL word lists ship in datatrove")
    st = UrlFilter(UrlFilter.Params(), "url")  # datatrove-ut1 + RefinedWeb word lists
    urls = ["https://www.pornhub.com/v", "http://example.com/free-porn-videos", "http://news.sina.com.cn/a.html"]
    kept, removed, _ = st.process(docs(["t"] * 3, urls))
    assert kept["url"].to_pylist() == ["http://news.sina.com.cn/a.html"]
    assert removed["reason"].to_pylist() == ["url:blocklist:datatrove-ut1", "url:word:datatrove:banned_words"]
    assert json.loads(removed["signals"][1].as_py())["word"] == "porn"
    info = st.provenance()["url_filter"]["lists"][0]
    assert info["license"] == "CC-BY-SA-4.0" and info["domains"] > 1_000_000


def test_missing_list_file_is_a_clear_error(tmp_path):
    st = url_stage(lists=[str(tmp_path / "nope.txt")])
    with pytest.raises(StageError, match="list not found"):
        st.process(docs(["t"], ["http://a.com/"]))


def cap_run(tables: list[pa.Table], tmp_path: Path, cap: int, seed: int = 0) -> set[str]:
    st = url_stage(lists=[], max_per_domain=cap, cap_seed=seed)
    params = st.params.model_dump(mode="json")
    paths = []
    for i, t in enumerate(tables):
        paths.append(str(tmp_path / f"p{len(tables)}-{seed}-{i}.parquet"))
        pq.write_table(t, paths[-1])
    reports = [_domains_task(class_path(UrlFilter), params, "url", p) for p in paths]
    cutoffs = global_cutoffs(reports, cap)
    kept = set()
    for t in tables:
        k, removed, _ = st.process(t, cutoffs)
        kept |= set(k["id"].to_pylist())
        assert set(removed["reason"].to_pylist()) <= {"url:domain-cap"}
    return kept


def test_domain_cap_is_global_and_deterministic(tmp_path):
    pytest.importorskip("tldextract", reason="per-domain caps read registered domains with tldextract")
    urls = [f"http://{h}.example.com/{i}" for i, h in enumerate(["a", "b", "www", "c", "d", "e"])] + [f"http://site.co.uk/{i}" for i in range(3)] + ["http://x.github.io/", "http://y.github.io/", None]
    t = docs(["t"] * len(urls), urls)
    whole = cap_run([t], tmp_path, 2)
    split = cap_run([t.slice(8), t.slice(0, 3), t.slice(3, 5)], tmp_path, 2)
    assert whole == split
    ids = t["id"].to_pylist()
    assert len(whole & set(ids[:6])) == 2 and len(whole & set(ids[6:9])) == 2 and set(ids[9:]) <= whole
    assert cap_run([t], tmp_path, 2) == whole  # the same again


def test_pipeline_run_ledgers_every_removal(tmp_path):
    pytest.importorskip("tldextract", reason="per-domain caps read registered domains with tldextract")
    block = tmp_path / "block.txt"
    block.write_text("spam.test\n", encoding="utf-8")
    rows = [{"text": "正常的网页内容。", "url": f"http://news.example.cn/{i}"} for i in range(4)]
    rows += [{"text": "被屏蔽的网页。", "url": "http://spam.test/x"}, {"text": "他妈的，操你妈，傻逼。", "url": "http://other.cn/a"}]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    m = tmp_path / "m.yaml"
    m.write_text(
        f"name: t\nsources:\n  - {{name: s, kind: local, paths: ['{data}'], url_field: url, license: CC0-1.0}}\n"
        f"stages:\n  - {{name: url, stage: url_filter, params: {{lists: ['{block}'], words: [], soft_words: [], subwords: [], max_per_domain: 3}}}}\n"
        "  - {name: content, stage: content_filter}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    proc = run_cli("run", str(m), "--out", str(out), env={"GRIST_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    url_gone = pq.read_table(out / "stages" / "url" / "removed").to_pylist()
    assert sorted(r["reason"] for r in url_gone) == ["url:blocklist:block", "url:domain-cap"]
    content_gone = pq.read_table(out / "stages" / "content" / "removed").to_pylist()
    assert [r["reason"] for r in content_gone] == ["content:badwords:zh"]
    stats = json.loads((out / "stages" / "url" / "stats.json").read_text())
    assert stats["in"] == 6 and stats["removed_by_reason"] == {"url:blocklist:block": 1, "url:domain-cap": 1}
    assert stats["url_filter"]["capped_domains"] == 1
    prov = json.loads((out / "provenance.json").read_text())
    assert "url_filter" in json.dumps(prov) and "content_filter" in json.dumps(prov)


# ----------------------------------------------------------------------------- presets, clean
def test_web_zh_preset_is_fineweb2_cmn_hani():
    from pipeline.text.quality.presets import resolve_preset

    rules = resolve_preset("web-zh")
    assert rules["max_dup_line_frac"] == 0.287 and rules["min_line_punct_frac"] == 0.106 and rules["max_newlines_per_word"] == 0.178
    assert rules["max_top_2gram_frac"] == 0.256 and rules["max_dup_10gram_frac"] == 0.127 and rules["min_alpha_words_frac"] == 0.735
    assert resolve_preset("web-en") == resolve_preset("fineweb")


def test_clean_c4_lines_opt_in_with_chinese_punctuation():
    text = "Home\nThis is a real sentence here.\nPlease enable JavaScript to continue.\nRead more...\n这是一个完整的句子。\n导航栏\n本网站使用Cookie，请阅读隐私政策。"
    st = Clean(Clean.Params(c4_lines=True), "clean")
    kept, _, stats = st.process(pa.table({"id": ["a"], "text": [text]}))
    assert kept["text"][0].as_py() == "This is a real sentence here.\n这是一个完整的句子。"
    assert stats["clean"]["c4_lines_removed"] == 5
    kept, _, _ = Clean(Clean.Params(), "clean").process(pa.table({"id": ["a"], "text": [text]}))
    assert "导航栏" in kept["text"][0].as_py()  # off by default


def test_web_zh_preset_decides_on_q_signals():
    from pipeline.text.quality import compute_signals, decide

    good = (
        "农业是人类利用土地种植作物和饲养动物的生产活动，在现代有广义和狭义之分。广义上的农业包括种植业、林业、畜牧业和渔业，"
        "而狭义上的农业只指种植业。中国是世界上最早发展农业的地区之一，黄河流域和长江流域都有悠久的耕作历史。\n"
        "古代的农民根据季节安排播种和收获，形成了二十四节气。随着工业革命的到来，机械化和化肥的使用使粮食产量大幅提高，"
        "但也带来了土壤退化和水资源短缺等问题。今天，许多国家正在推广可持续农业，以保护环境并保障粮食安全。\n"
        "农业政策由政府制定，目的是稳定价格、增加农民收入，并鼓励新技术的研究与应用。"
    )
    spam = "\n".join(["点击这里"] * 40)
    verdict = decide(compute_signals([good, spam], ["zh", "zh"]), "web-zh")
    assert verdict["keep"].to_list() == [True, False]
    assert verdict["reason"][1].startswith("quality:")
