"""`manifests/web-zh.yaml` and `manifests/wiki-web-zh.yaml` end to end, through the CLI, on
loopback mirrors with Common Crawl's and dumps.wikimedia.org's layouts (issue 13, item 8).

The Common Crawl mirror holds the real pages of ../shared/corpora/web (Chinese in GBK, GB2312,
GB18030 and UTF-8; English) or synthetic ones without it, filler pages in seven other languages,
a PDF, an image, a redirect and a 404."""

from __future__ import annotations

import json
import re

import datasets
import pyarrow.parquet as pq
import pytest

from pipeline.text.html import bag_f1, has_mojibake
from tests.conftest import REPO, SHARED, run_cli
from tests.support.ccmirror import CCMirrorServer, build_ccmirror, build_pages
from tests.support.mirror import MirrorServer

CRAWL = "CC-MAIN-2026-01"
WEB_NODES = ["cc", "extract", "urls", "clean", "lang", "quality", "content", "dedup"]


def _ledger(out):
    rows = {}
    for node_dir in (out / "stages").iterdir():
        if (node_dir / "removed").is_dir():
            for row in pq.read_table(node_dir / "removed").to_pylist():
                rows[row["id"]] = row
    return rows


@pytest.fixture(scope="module")
def web_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-zh")
    pages = build_pages(filler=240, seed=0)
    info = build_ccmirror(root / "mirror", pages, crawl=CRAWL, n_files=4)
    out = root / "out"
    with CCMirrorServer(root / "mirror") as server:
        # exactly the overrides issue 13 names
        proc = run_cli("run", str(REPO / "manifests" / "web-zh.yaml"), "--out", str(out), "--no-progress",
                       "--set", f"sources.cc.mirror={server.url}", "--set", f"sources.cc.crawl={CRAWL}", "--set", "sources.cc.max_files=2",
                       env={"GRIST_CACHE": str(root / "cache")}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, info


def test_documents_are_clean_simplified_chinese_with_urls(web_run):
    import opencc

    out, _ = web_run
    data = datasets.load_from_disk(str(out / "data"))
    assert data.num_rows > 0
    t2s = opencc.OpenCC("t2s")
    for row in data:
        assert row["id"].startswith(f"cc/{CRAWL}/"), row["id"]
        assert re.match(r"https?://", row["url"] or ""), row["url"]
        assert row["lang"] == "zh"
        assert row["license"] == "LicenseRef-CommonCrawl-ToU"
        assert not has_mojibake(row["text"]), row["url"]
        assert "<" not in row["text"] or not re.search(r"</?(div|p|span|script|a)\b", row["text"]), "markup left in the text"
        assert t2s.convert(row["text"]) == row["text"], "Traditional characters left"


def test_every_node_accounts_and_only_chinese_records_were_fetched(web_run):
    out, info = web_run
    previous = None
    for node in WEB_NODES:
        stats = json.loads((out / "stages" / node / "stats.json").read_text())
        assert stats["in"] == stats["out"] + stats["removed"], node
        assert pq.read_table(out / "stages" / node / "removed").num_rows == stats["removed"], node
        if previous is not None:
            assert stats["in"] == previous, node
        previous = stats["out"]
    # web-zh selects on the URL index: only Chinese HTML captures with status 200 of the first two
    # files (max_files=2) listed in the first index file are fetched
    candidates = {r.url: r for f in info.files[:2] for r in f.responses()}
    fetched = pq.read_table(out / "stages" / "extract" / "removed").num_rows + json.loads((out / "stages" / "extract" / "stats.json").read_text())["out"]
    assert fetched == json.loads((out / "stages" / "cc" / "stats.json").read_text())["out"] > 0
    urls = set(datasets.load_from_disk(str(out / "data"))["url"])
    for url in urls:
        rec = candidates[url]
        assert rec.page.languages.split(",")[0] == "zho" and rec.page.status == 200, url
    provenance = json.loads((out / "provenance.json").read_text())
    assert '"bytes_moved"' in json.dumps(provenance), "provenance records the bytes moved"


def test_chinese_pages_kept_with_their_main_text(web_run):
    out, info = web_run
    data = datasets.load_from_disk(str(out / "data"))
    kept = {row["url"]: row["text"] for row in data}
    zh = [r.page for f in info.files[:2] for r in f.responses() if r.page.lang == "zho" and r.page.status == 200 and r.page.text]
    assert zh, "the mirror's first two files hold Chinese pages"
    found = [p for p in zh if p.url in kept]
    # most Chinese pages survive curation (the others are in the ledger with a reason)
    assert len(found) >= len(zh) // 2, (len(found), len(zh))
    for page in found:
        _, _, f1 = bag_f1(kept[page.url], page.text, "zh")
        assert f1 >= 0.5, (page.url, f1)


def test_card_says_what_the_web_license_means(web_run):
    out, _ = web_run
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "LicenseRef-CommonCrawl-ToU" in card
    assert "copyright" in card.lower()
    # the report shows the web preset's signals (FineWeb's line punctuation share) like the others
    report = "".join(p.read_text(encoding="utf-8") for p in (out / "report").glob("*.html"))
    assert "line_punct_frac" in report


@pytest.mark.skipif(not (SHARED / "corpora" / "zhwiki-articles").is_dir(), reason="needs ../shared/corpora/zhwiki-articles")
def test_wiki_and_web_dedup_across_sources(tmp_path):
    from tests.support.ccmirror import WebPage
    from tests.support.wikidump import build_mirror
    from tests.support.wikidump import build_pages as wiki_pages

    pages, expected = wiki_pages(SHARED / "corpora" / "zhwiki-articles")
    wiki_root = tmp_path / "wikimirror"
    build_mirror(wiki_root, pages)
    # a web page that copies a Wikipedia article (as mirrors of Wikipedia do)
    article = next(p for p in sorted((SHARED / "corpora" / "zhwiki-articles").glob("*.txt")) if len(p.read_text(encoding="utf-8")) > 3000)
    lines = [ln for ln in article.read_text(encoding="utf-8").splitlines() if ln.strip()]
    body = "".join(f"<p>{ln}</p>" for ln in lines[1:])
    html = f"<html><head><meta charset='utf-8'><title>{lines[0]}</title></head><body><nav><a href='/'>首页</a></nav><article><h1>{lines[0]}</h1>{body}</article></body></html>"
    copy = WebPage(url="http://wiki-copy.example.cn/a/1.html", body=html.encode("utf-8"), content_type="text/html; charset=utf-8", languages="zho", charset="UTF-8", key="copy")
    web_pages = [copy, *build_pages(filler=20, seed=1)]
    info = build_ccmirror(tmp_path / "ccmirror", web_pages, crawl=CRAWL, n_files=1)
    out = tmp_path / "out"
    with MirrorServer(wiki_root) as wiki, CCMirrorServer(tmp_path / "ccmirror") as cc:
        proc = run_cli("run", str(REPO / "manifests" / "wiki-web-zh.yaml"), "--out", str(out), "--no-progress",
                       "--set", f"sources.zhwiki.mirror={wiki.url}", "--set", f"sources.cc.mirror={cc.url}", "--set", f"sources.cc.crawl={CRAWL}",
                       "--set", "sources.cc.max_files=1", env={"GRIST_CACHE": str(tmp_path / "cache")}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = datasets.load_from_disk(str(out / "data"))
    sources = set(data["source"])
    assert sources == {"zhwiki", "cc"}, sources
    copy_id = next(f"cc/{CRAWL}/{r.record_id}" for r in info.files[0].responses() if r.page.key == "copy")
    ledger = _ledger(out)
    assert copy_id in ledger and ledger[copy_id]["node"] == "dedup", ledger.get(copy_id)
    assert "zhwiki/" in ledger[copy_id]["reason"] + (ledger[copy_id]["signals"] or ""), ledger[copy_id]
    licenses = json.loads((out / "licenses.json").read_text())
    assert "LicenseRef-CommonCrawl-ToU" in json.dumps(licenses) and "CC-BY-SA-4.0" in json.dumps(licenses)
