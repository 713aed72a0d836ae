"""Tests of the test-support code: the loopback mirror and the dump builder."""

from __future__ import annotations

import bz2
import hashlib
import http.client
import json
import random
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

try:
    from tests.support.mirror import MirrorServer
    from tests.support.wikidump import (
        NON_ARTICLE_MARKER,
        Page,
        build_mirror,
        build_pages,
        write_multistream,
    )
except ImportError:  # tests/ itself on sys.path (rootdir-less layouts)
    from support.mirror import MirrorServer
    from support.wikidump import NON_ARTICLE_MARKER, Page, build_mirror, build_pages, write_multistream

ARTICLES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "zhwiki-articles"
MW = "{http://www.mediawiki.org/xml/export-0.10/}"


@pytest.fixture()
def session():
    s = requests.Session()
    s.trust_env = False  # never route 127.0.0.1 through a proxy from the environment
    yield s
    s.close()


@pytest.fixture(scope="module")
def built():
    pages, expected = build_pages(ARTICLES_DIR, seed=0)
    return pages, expected


@pytest.fixture(scope="module")
def mirror_tree(tmp_path_factory, built):
    pages, _ = built
    root = tmp_path_factory.mktemp("mirror")
    info = build_mirror(root, pages, pages_per_stream=7)
    return root, info


@pytest.fixture()
def blob_dir(tmp_path):
    data = random.Random(1234).randbytes(300_000)
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "blob.bin").write_bytes(data)
    (tmp_path / "secret.txt").write_text("do not serve", encoding="utf-8")
    return tmp_path / "pub", data


# ---------------------------------------------------------------------------
# MirrorServer
# ---------------------------------------------------------------------------


def test_binds_loopback_only(blob_dir):
    root, _ = blob_dir
    with MirrorServer(root) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert srv._httpd.server_address[0] == "127.0.0.1"


def test_full_get_and_head_headers(blob_dir, session):
    root, data = blob_dir
    with MirrorServer(root) as srv:
        r = session.get(srv.url + "/blob.bin")
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["Content-Length"] == str(len(data))
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', r.headers["ETag"])
        assert r.headers["Last-Modified"].endswith("GMT")
        assert "Content-Encoding" not in r.headers
        h = session.head(srv.url + "/blob.bin")
        assert h.status_code == 200 and h.content == b""
        assert h.headers["Content-Length"] == str(len(data))
        assert h.headers["ETag"] == r.headers["ETag"]
        assert session.get(srv.url + "/nope.bin").status_code == 404
        srv.wait_idle()
        log = srv.requests
        assert [(e["method"], e["status"]) for e in log] == [("GET", 200), ("HEAD", 200), ("GET", 404)]
        assert log[0]["bytes_sent"] == len(data) and log[1]["bytes_sent"] == 0
        assert log[0]["range"] is None


@pytest.mark.parametrize(
    "header,start,end",
    [
        ("bytes=100-199", 100, 199),
        ("bytes=0-0", 0, 0),
        ("bytes=299990-", 299990, 299999),
        ("bytes=-50", 299950, 299999),
        ("bytes=250000-999999", 250000, 299999),
    ],
)
def test_range_responses_byte_exact(blob_dir, session, header, start, end):
    root, data = blob_dir
    with MirrorServer(root) as srv:
        r = session.get(srv.url + "/blob.bin", headers={"Range": header})
        assert r.status_code == 206
        assert r.content == data[start : end + 1]
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
        assert r.headers["Content-Length"] == str(end - start + 1)
        srv.wait_idle()
        assert srv.requests[-1]["range"] == header
        assert srv.bytes_sent("blob.bin") == end - start + 1


def test_range_unsatisfiable_if_range_and_ignore_range(blob_dir, session):
    root, data = blob_dir
    with MirrorServer(root) as srv:
        url = srv.url + "/blob.bin"
        r = session.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"
        etag = session.head(url).headers["ETag"]
        r = session.get(url, headers={"Range": "bytes=10-19", "If-Range": etag})
        assert r.status_code == 206 and r.content == data[10:20]
        r = session.get(url, headers={"Range": "bytes=10-19", "If-Range": '"stale"'})
        assert r.status_code == 200 and r.content == data
        srv.ignore_range = True
        r = session.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 200 and r.content == data
        assert "Content-Range" not in r.headers


def test_traversal_rejected(blob_dir):
    root, _ = blob_dir
    with MirrorServer(root) as srv:
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/x/../../secret.txt", "/..%2fsecret.txt"):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status in (403, 404), path
            assert b"do not serve" not in body


def test_listing_like_dumps_site(mirror_tree, session):
    root, info = mirror_tree
    with MirrorServer(root) as srv:
        for path in ("/zhwiki/", "/zhwiki"):
            r = session.get(srv.url + path)
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("text/html")
            hrefs = re.findall(r'<a href="([^"]+)">([^<]+)</a>', r.text)
            assert [h for h, _ in hrefs] == ["../", "20240501/", "20240601/", "20240701/", "latest/"]
            assert all(h == t for h, t in hrefs)
        r = session.get(srv.url + "/zhwiki/20240601/")
        names = re.findall(r'<a href="([^"]+)">', r.text)
        assert names == sorted(names)
        assert info.latest.xml_name in names and "dumpstatus.json" in names
        assert "zhwiki-20240601-md5sums.txt" in names and "zhwiki-20240601-sha1sums.txt" in names
        r = session.get(srv.url + "/zhwiki/20240701/")
        assert re.findall(r'<a href="([^"]+)">', r.text) == ["../", "dumpstatus.json"]


def test_request_log_counts_and_reset(blob_dir, session):
    root, data = blob_dir
    with MirrorServer(root) as srv:
        session.get(srv.url + "/blob.bin")
        session.get(srv.url + "/blob.bin", headers={"Range": "bytes=0-999"})
        srv.wait_idle()
        assert srv.bytes_sent() == len(data) + 1000
        assert srv.bytes_sent(".bin") == len(data) + 1000
        assert srv.bytes_sent(".txt") == 0
        assert [e["status"] for e in srv.requests] == [200, 206]
        srv.reset_log()
        assert srv.requests == [] and srv.bytes_sent() == 0


def test_log_counts_early_disconnect(tmp_path):
    size = 32 * 1024 * 1024
    (tmp_path / "big.bin").write_bytes(random.Random(7).randbytes(size))
    with MirrorServer(tmp_path) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = 0
        while got < 200_000:
            chunk = sock.recv(65536)
            assert chunk
            got += len(chunk)
        sock.close()
        assert srv.wait_idle(timeout=10)
        (entry,) = srv.requests
        assert entry["status"] == 200
        # headers are part of what we read but not of bytes_sent
        assert got - 1024 < entry["bytes_sent"] < size
        # the server survived and still answers
        with requests.Session() as s:
            s.trust_env = False
            assert s.get(srv.url + "/big.bin", headers={"Range": "bytes=0-9"}).status_code == 206


def test_fail_next(blob_dir, session):
    root, data = blob_dir
    with MirrorServer(root) as srv:
        srv.fail_next["/blob.bin"] = 2
        assert session.head(srv.url + "/blob.bin").status_code == 200  # HEAD does not consume
        assert session.get(srv.url + "/blob.bin").status_code == 503
        assert session.get(srv.url + "/blob.bin").status_code == 503
        r = session.get(srv.url + "/blob.bin")
        assert r.status_code == 200 and r.content == data
        srv.fail_next["blob.bin"] = 1  # suffix keys work too
        assert session.get(srv.url + "/blob.bin").status_code == 503
        assert srv.fail_next == {}


def test_truncate_body(blob_dir, session):
    root, data = blob_dir
    with MirrorServer(root) as srv:
        url = srv.url + "/blob.bin"
        srv.truncate_body["/blob.bin"] = 1000
        r = session.get(url, stream=True)
        assert r.headers["Content-Length"] == str(len(data))
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
            b"".join(r.iter_content(8192))
        srv.wait_idle()
        assert srv.requests[-1]["bytes_sent"] == 1000
        # one-shot: the next GET is complete, and resuming works
        r = session.get(url, headers={"Range": "bytes=1000-"})
        assert r.status_code == 206 and data[:1000] + r.content == data
        # (k, n): the next n GETs are cut short
        srv.truncate_body["blob.bin"] = (10, 2)
        for _ in range(2):
            conn = http_client_get(srv.port, "/blob.bin")
            with pytest.raises(http.client.IncompleteRead):
                conn.getresponse().read()
            conn.close()
        assert session.get(url).content == data
        srv.wait_idle()
        assert [e["bytes_sent"] for e in srv.requests[-3:]] == [10, 10, len(data)]


def http_client_get(port: int, path: str) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    return conn


# ---------------------------------------------------------------------------
# The dump builder
# ---------------------------------------------------------------------------


def _index_entries(index_path: Path) -> list[tuple[int, int, str]]:
    out = []
    for line in bz2.decompress(index_path.read_bytes()).decode("utf-8").splitlines():
        off, pid, title = line.split(":", 2)
        out.append((int(off), int(pid), title))
    return out


def test_multistream_streams_decompress_independently(mirror_tree):
    _, info = mirror_tree
    dump = info.latest
    raw = dump.xml_path.read_bytes()
    entries = _index_entries(dump.index_path)
    offsets = sorted({off for off, _, _ in entries})
    ms = dump.multistream
    assert offsets == ms.stream_offsets[1:-1]  # header and footer are not indexed
    assert ms.stream_offsets[0] == 0 and ms.xml_size == len(raw)

    texts = []
    for start, end in ms.stream_ranges:
        dec = bz2.BZ2Decompressor()
        texts.append(dec.decompress(raw[start:end]).decode("utf-8"))
        assert dec.eof and dec.unused_data == b""
    assert texts[0].startswith('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"')
    assert 'xml:lang="zh"' in texts[0] and texts[0].rstrip().endswith("</siteinfo>")
    assert texts[-1].strip() == "</mediawiki>"
    assert "".join(texts) == bz2.open(dump.xml_path).read().decode("utf-8")

    by_offset: dict[int, list[tuple[int, str]]] = {}
    for off, pid, title in entries:
        by_offset.setdefault(off, []).append((pid, title))
    for off, members in by_offset.items():
        end = next(e for s, e in ms.stream_ranges if s == off)
        chunk = bz2.BZ2Decompressor().decompress(raw[off:end]).decode("utf-8")
        elems = ET.fromstring("<pages>" + chunk + "</pages>").findall("page")
        assert [(int(p.findtext("id")), p.findtext("title")) for p in elems] == members
        assert len(members) <= 7


def test_full_dump_is_well_formed_xml(mirror_tree, built):
    _, info = mirror_tree
    pages, expected = built
    with bz2.open(info.xml_path) as fh:
        root = ET.fromstring(fh.read())
    assert root.tag == MW + "mediawiki" and root.get("version") == "0.10"
    site = root.find(MW + "siteinfo")
    assert site.findtext(MW + "dbname") == "zhwiki"
    assert site.findtext(MW + "base").startswith("https://zh.wikipedia.org/wiki/")
    keys = {int(ns.get("key")) for ns in site.find(MW + "namespaces")}
    assert {0, 1, 2, 4, 6, 10, 14} <= keys

    xml_pages = root.findall(MW + "page")
    assert len(xml_pages) == len(pages)
    ids = [int(p.findtext(MW + "id")) for p in xml_pages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    nss = {int(p.findtext(MW + "ns")) for p in xml_pages}
    assert {0, 1, 4, 10, 14} <= nss
    redirect_texts = []
    for el, page in zip(xml_pages, pages):
        rev = el.find(MW + "revision")
        text_el = rev.find(MW + "text")
        assert text_el.text == page.text
        assert int(text_el.get("bytes")) == len(page.text.encode("utf-8"))
        assert re.fullmatch(r"[0-9a-z]{31}", rev.findtext(MW + "sha1"))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rev.findtext(MW + "timestamp"))
        assert rev.findtext(MW + "model") == "wikitext" and rev.findtext(MW + "format") == "text/x-wiki"
        red = el.find(MW + "redirect")
        if red is not None:
            redirect_texts.append(text_el.text)
            assert red.get("title") in text_el.text
    assert any(t.startswith("#REDIRECT [[") for t in redirect_texts)
    assert any(t.startswith("#重定向 [[") for t in redirect_texts)
    titles = [p.findtext(MW + "title") for p in xml_pages]
    assert any(t.startswith("Template:") for t in titles) and any(t.startswith("Category:") for t in titles)
    assert len(expected) == sum(1 for p in pages if p.ns == 0 and p.redirect is None)


def test_checksum_files_and_dumpstatus(mirror_tree):
    root, info = mirror_tree
    assert info.latest_date == "20240601" and info.base == root / "zhwiki"
    for date, dump in info.dumps.items():
        for sums_path, algo in ((dump.md5sums_path, "md5"), (dump.sha1sums_path, "sha1")):
            lines = sums_path.read_text(encoding="utf-8").splitlines()
            assert len(lines) == 2
            for line in lines:
                digest, name = line.split("  ")
                assert hashlib.new(algo, (dump.dir / name).read_bytes()).hexdigest() == digest
        status = json.loads(dump.status_path.read_text(encoding="utf-8"))
        assert status["version"] == "0.8"
        job = status["jobs"]["articlesmultistreamdump"]
        assert job["status"] == "done"
        assert set(job["files"]) == {dump.xml_name, dump.index_name}
        for name, meta in job["files"].items():
            path = dump.dir / name
            assert meta["size"] == path.stat().st_size == dump.sizes[name]
            assert meta["url"] == f"/zhwiki/{date}/{name}"
            assert meta["md5"] == hashlib.md5(path.read_bytes()).hexdigest() == dump.md5[name]
            assert meta["sha1"] == hashlib.sha1(path.read_bytes()).hexdigest() == dump.sha1[name]
    # different runs differ in bytes (generator string), not in content
    a, b = info.dumps["20240501"], info.dumps["20240601"]
    assert a.md5[a.xml_name] != b.md5[b.xml_name]

    pending = root / "zhwiki" / "20240701"
    status = json.loads((pending / "dumpstatus.json").read_text(encoding="utf-8"))
    job = status["jobs"]["articlesmultistreamdump"]
    assert job["status"] == "in-progress"
    assert all("md5" not in m and "sha1" not in m for m in job["files"].values())
    assert sorted(p.name for p in pending.iterdir()) == ["dumpstatus.json"]

    rss = ET.fromstring(info.rss_path.read_text(encoding="utf-8"))
    links = [el.text for el in rss.iter("link")]
    assert any(link.rstrip("/").endswith("/zhwiki/20240601") for link in links)
    assert info.rss_path.name == "zhwiki-latest-pages-articles-multistream.xml.bz2-rss.xml"


def test_checksums_served_match(mirror_tree, session):
    root, info = mirror_tree
    dump = info.latest
    with MirrorServer(root) as srv:
        r = session.get(srv.url + dump.urls[dump.index_name])
        assert hashlib.sha1(r.content).hexdigest() == dump.sha1[dump.index_name]
        r = session.get(srv.url + f"/zhwiki/{info.latest_date}/dumpstatus.json")
        assert r.json()["jobs"]["articlesmultistreamdump"]["files"][dump.xml_name]["md5"] == dump.md5[dump.xml_name]


def test_builder_is_deterministic(tmp_path, built):
    pages, expected = built
    pages2, expected2 = build_pages(ARTICLES_DIR, seed=0)
    assert pages2 == pages and expected2 == expected
    syn0, syn1 = build_pages(None, seed=0)[0], build_pages(None, seed=1)[0]
    assert [p.text for p in syn0] != [p.text for p in syn1]

    small = pages[:25]
    a = build_mirror(tmp_path / "a", small, done_dates=("20240601",), pending_dates=())
    b = build_mirror(tmp_path / "b", small, done_dates=("20240601",), pending_dates=())
    for name in a.latest.files:
        assert (a.latest.dir / name).read_bytes() == (b.latest.dir / name).read_bytes()


def _naive_strip(text: str) -> str:
    """Undo exactly the inline markup the builder wraps around original words."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    while True:
        new = re.sub(r"\{\{[^{}]*\}\}", "", text)
        if new == text:
            break
        text = new
    text = re.sub(r"-\{zh-hans:([^;]*);zh-hant:[^;]*;\}-", r"\1", text)
    text = re.sub(r"-\{([^{}]*)\}-", r"\1", text)
    text = re.sub(r"\[\[[^\[\]|]*\|([^\[\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[\[([^\[\]|]*)\]\]", r"\1", text)
    return text.replace("'''", "").replace("''", "")


def test_expected_sentences(built):
    pages, expected = built
    by_id = {p.page_id: p for p in pages}
    assert len(expected) >= 30
    with_variant = with_piped = 0
    for art in expected:
        page = by_id[art["page_id"]]
        assert page.ns == 0 and page.redirect is None and page.title == art["title"]
        assert art["sentences"], art["title"]
        plain = _naive_strip(page.text)
        for s in art["sentences"]:
            assert len(s) >= 5 and s == s.strip()
            assert s in plain, (art["title"], s)
        assert NON_ARTICLE_MARKER not in page.text
        if "-{zh-hans:" in page.text:
            with_variant += 1
        if re.search(r"\[\[[^\]|:]+\|[^\]]+\]\]", page.text):
            with_piped += 1
        if any(page.title in s for s in art["sentences"]):
            assert f"'''{page.title}'''" in page.text
        for absent in art["absent"]:
            assert all(absent not in s for s in art["sentences"])
    # short pages (disambiguation-like) may lack some markup; most must carry it
    assert with_variant >= 0.9 * len(expected) and with_piped >= 0.9 * len(expected)
    if ARTICLES_DIR.is_dir():
        corpus = "\n".join(p.read_text(encoding="utf-8") for p in ARTICLES_DIR.glob("*.txt"))
        for art in expected[:20]:
            for s in art["sentences"]:
                assert s in corpus


def test_synthetic_fallback(tmp_path):
    pages, expected = build_pages(tmp_path / "missing", seed=3)
    assert 25 <= len(expected) <= 35
    assert all(e["sentences"] for e in expected)
    assert any(s.endswith("！") for e in expected for s in e["sentences"])
    assert any(s.endswith("？") for e in expected for s in e["sentences"])
    by_id = {p.page_id: p for p in pages}
    for art in expected:
        plain = _naive_strip(by_id[art["page_id"]].text)
        assert all(s in plain for s in art["sentences"])
        assert not any("参见" in s for s in art["sentences"])
    assert build_pages(None, seed=3) == (pages, expected)


def test_write_multistream_accepts_dicts(tmp_path):
    pages = [
        {"title": "甲", "ns": 0, "page_id": 1, "text": "甲是<b>&amp;\"引号\"。"},
        Page(title="乙", ns=0, page_id=2, text="#REDIRECT [[甲]]", redirect="甲"),
    ]
    info = write_multistream(tmp_path / "x.xml.bz2", tmp_path / "i.txt.bz2", pages, pages_per_stream=1)
    assert len(info.stream_offsets) == 4
    assert _index_entries(info.index_path) == [(info.stream_offsets[1], 1, "甲"), (info.stream_offsets[2], 2, "乙")]
    raw = bz2.open(info.xml_path).read().decode("utf-8")
    assert "&lt;b&gt;&amp;amp;&quot;引号&quot;" in raw
    root = ET.fromstring(raw)
    assert root.find(f"{MW}page/{MW}revision/{MW}text").text == "甲是<b>&amp;\"引号\"。"
