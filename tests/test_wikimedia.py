"""`pipeline run manifests/wiki-zh.yaml` against a zhwiki-shaped mirror on loopback, as a user would run it.

The dump is generated in the test from real zhwiki article text (../shared when present,
synthetic Chinese otherwise) wrapped in real markup constructs, packed in the multistream
layout, and served with Range support by tests/support/mirror.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, SHARED, run_cli
from tests.support.mirror import MirrorServer
from tests.support.wikidump import Page, build_mirror, build_pages

MANIFEST = REPO / "manifests" / "wiki-zh.yaml"
LEFTOVERS = ("{{", "[[", "-{", "<ref", "'''", "{|", "Category:", "thumb|")


@pytest.fixture(scope="module")
def corpus():
    pages, expected = build_pages(SHARED / "corpora" / "zhwiki-articles")
    return pages, expected


def padded_pages(pages: list[Page], copies: int) -> list[Page]:
    """More pages (renamed copies) so that a 100-page sample is a small part of the dump."""
    out = list(pages)
    next_id = max(p.page_id for p in pages) + 1
    for k in range(copies):
        for p in pages:
            if p.ns == 0 and p.redirect is None:
                out.append(Page(title=f"{p.title} ({k + 2})", ns=0, page_id=next_id, text=p.text, rev_id=next_id * 10))
                next_id += 1
    return out


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, corpus):
    pages, _ = corpus
    root = tmp_path_factory.mktemp("mirror")
    info = build_mirror(root, pages)
    with MirrorServer(root) as server:
        yield server, info


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, mirror):
    server, info = mirror
    tmp = tmp_path_factory.mktemp("run")
    env = {"GRIST_CACHE": str(tmp / "cache")}
    out = tmp / "out"
    server.reset_log()
    proc = run_cli("run", str(MANIFEST), "--out", str(out), "--set", f"sources.zhwiki.mirror={server.url}", "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    return out, env, proc


def test_latest_resolves_to_newest_finished_dump(full_run, mirror):
    out, _, _ = full_run
    _, info = mirror
    lock = (out / "manifest.lock.yaml").read_text(encoding="utf-8")
    assert f"date: '{info.latest_date}'" in lock or f"date: \"{info.latest_date}\"" in lock or f"date: {info.latest_date}" in lock
    assert info.pending_dates[0] not in lock
    prov = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    downloads = prov["sources"]["zhwiki"]["downloads"]
    assert {Path(d["path"]).name for d in downloads} == {info.latest.xml_name, info.latest.index_name}
    for d in downloads:
        assert d["verified"] == ["md5", "sha1"]
        assert d["etag"] and d["last_modified"] and d["retrieved_at"]
        assert d["bytes"] == info.latest.sizes[Path(d["path"]).name]


def test_every_article_extracted_cleanly(full_run, corpus):
    out, _, _ = full_run
    _, expected = corpus
    ds = datasets.load_from_disk(str(out / "data"))
    assert {"id", "text", "title", "url", "source", "license"} <= set(ds.column_names)
    by_id = {row["id"]: row for row in ds}
    assert len(by_id) == len(expected), "exactly the namespace-0 non-redirect articles"
    per_article = []
    for exp in expected:
        row = by_id.get(f"zhwiki/{exp['page_id']}")
        assert row is not None, f"article {exp['title']} missing"
        assert row["title"] == exp["title"]
        assert row["url"] == f"https://zh.wikipedia.org/wiki/{exp['title'].replace(' ', '_')}"
        assert row["source"] == "zhwiki" and "CC-BY-SA" in row["license"]
        found = sum(s in row["text"] for s in exp["sentences"])
        per_article.append(found / len(exp["sentences"]))
    assert min(per_article) >= 0.95, f"worst article keeps {min(per_article):.3f} of its sentences"
    dirty = [r["id"] for r in ds if any(m in r["text"] for m in LEFTOVERS)]
    assert len(dirty) / len(ds) < 0.005, f"markup left in {dirty[:5]}"


def test_ledger_accounts_for_every_page(full_run, corpus):
    out, _, _ = full_run
    pages, expected = corpus
    stats = json.loads((out / "stages" / "extract" / "stats.json").read_text())
    assert stats["in"] == len(pages) and stats["out"] == len(expected)
    ledger = pq.read_table(out / "stages" / "extract" / "removed").to_pylist()
    reasons = {r["id"]: r["reason"] for r in ledger}
    for p in pages:
        pid = f"zhwiki/{p.page_id}"
        if p.redirect is not None:
            assert reasons[pid] == "redirect"
        elif p.ns != 0:
            assert reasons[pid] == f"namespace:{p.ns}"
    redirect_texts = [p.text for p in pages if p.redirect is not None]
    assert any(t.startswith("#重定向") for t in redirect_texts) and any(t.upper().startswith("#REDIRECT") for t in redirect_texts)


def test_rerun_does_no_stage_work(full_run, mirror):
    out, env, _ = full_run
    server, info = mirror
    before = {p.name: p.read_bytes() for p in (out / "data").iterdir()}
    server.reset_log()
    proc = run_cli("run", str(MANIFEST), "--out", str(out), "--set", f"sources.zhwiki.mirror={server.url}", "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "ran 0 node(s), skipped 7" in proc.stderr
    assert not [r for r in server.requests if r["path"].endswith(".bz2")], "no dump bytes fetched again"
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == before


def test_max_pages_fetches_byte_ranges_only(tmp_path, corpus):
    pages, _ = corpus
    articles = sum(p.ns == 0 and p.redirect is None for p in pages)
    big = padded_pages(pages, copies=max(6, -(-700 // articles)))  # at least ~700 pages: 100 is a small sample
    info = build_mirror(tmp_path / "mirror", big)
    with MirrorServer(tmp_path / "mirror") as server:
        env = {"GRIST_CACHE": str(tmp_path / "cache")}
        proc = run_cli(
            "run", str(MANIFEST), "--out", str(tmp_path / "out"), "--no-progress",
            "--set", f"sources.zhwiki.mirror={server.url}", "--set", "sources.zhwiki.max_pages=100", env=env,
        )
        assert proc.returncode == 0, proc.stderr
        dump_requests = [r for r in server.requests if r["path"].endswith(".bz2")]
        assert dump_requests and all(r["range"] for r in dump_requests), dump_requests
        xml_bytes = server.bytes_sent(info.latest.xml_name)
        idx_bytes = server.bytes_sent(info.latest.index_name)
        total = info.latest.sizes[info.latest.xml_name] + info.latest.sizes[info.latest.index_name]
        assert (xml_bytes + idx_bytes) / total < 0.30, (xml_bytes, idx_bytes, total)
    first_100 = big[:100]
    want = {f"zhwiki/{p.page_id}" for p in first_100 if p.ns == 0 and p.redirect is None}
    parts = sorted((tmp_path / "out" / "stages" / "extract").glob("part-*.parquet"))
    extracted = [i for part in parts for i in pq.read_table(part, columns=["id"])["id"].to_pylist()]
    assert set(extracted) == want  # (dedup later removes the renamed copies among them)
    stats = json.loads((tmp_path / "out" / "stages" / "zhwiki" / "stats.json").read_text())
    assert stats["out"] == 100


def test_kill9_then_rerun_gives_identical_data(tmp_path, mirror):
    server, _ = mirror
    args = ["--set", f"sources.zhwiki.mirror={server.url}", "--no-progress", "--set", "sources.zhwiki.streams_per_partition=1"]
    ref = tmp_path / "ref"
    t0 = time.time()
    proc = run_cli("run", str(MANIFEST), "--out", str(ref), *args, env={"GRIST_CACHE": str(tmp_path / "c1")})
    assert proc.returncode == 0, proc.stderr
    duration = time.time() - t0
    rng = random.Random(os.environ.get("KILL_SEED"))
    for attempt in range(2):
        out, cache = tmp_path / f"k{attempt}", tmp_path / f"c-k{attempt}"
        env = {**os.environ, "GRIST_CACHE": str(cache), "COLUMNS": "200"}
        p = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(MANIFEST), "--out", str(out), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.2, duration * 0.9))
        os.killpg(p.pid, signal.SIGKILL)  # the runner and its workers, like a lost machine
        p.wait()
        proc = run_cli("run", str(MANIFEST), "--out", str(out), *args, env={"GRIST_CACHE": str(cache)})
        assert proc.returncode == 0, proc.stderr
        ref_files = {f.name: f.read_bytes() for f in (ref / "data").iterdir()}
        got = {f.name: f.read_bytes() for f in (out / "data").iterdir()}
        assert got == ref_files


# ---- bad input: one clear message, non-zero exit, nothing marked complete ------------------


def assert_failed_cleanly(proc: subprocess.CompletedProcess, out: Path, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not list(out.glob("stages/*/_COMPLETE")) or "zhwiki" not in [p.parent.name for p in out.glob("stages/*/_COMPLETE")]
    assert not (out / "data").exists()


def test_unreachable_mirror(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", str(MANIFEST), "--out", str(out), "--set", "sources.zhwiki.mirror=http://127.0.0.1:9", env={"GRIST_CACHE": str(tmp_path / "c")})
    assert_failed_cleanly(proc, out, "127.0.0.1:9", "cannot reach 127.0.0.1", "mirror")


def test_date_not_done(tmp_path, mirror):
    server, info = mirror
    out = tmp_path / "out"
    proc = run_cli("run", str(MANIFEST), "--out", str(out), "--set", f"sources.zhwiki.mirror={server.url}", "--set", f"sources.zhwiki.date={info.pending_dates[0]}", env={"GRIST_CACHE": str(tmp_path / "c")})
    assert_failed_cleanly(proc, out, "not finished", "in-progress")


def test_checksum_mismatch_quarantines(tmp_path, corpus):
    pages, _ = corpus
    info = build_mirror(tmp_path / "mirror", pages)
    xml = info.latest.xml_path
    data = bytearray(xml.read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupt one byte after the sums were published
    xml.write_bytes(bytes(data))
    out, cache = tmp_path / "out", tmp_path / "cache"
    with MirrorServer(tmp_path / "mirror") as server:
        proc = run_cli("run", str(MANIFEST), "--out", str(out), "--set", f"sources.zhwiki.mirror={server.url}", env={"GRIST_CACHE": str(cache)})
    assert_failed_cleanly(proc, out, "checksum mismatch", "quarantine")
    assert list((cache / "quarantine").iterdir())
    assert not list(cache.rglob(info.latest.xml_name)), "the bad file is not left where it would be used"


def test_transient_errors_and_dropped_connections_recover(tmp_path, corpus):
    pages, expected = corpus
    info = build_mirror(tmp_path / "mirror", pages)
    size = info.latest.sizes[info.latest.xml_name]
    if size < 400_000:
        pytest.skip(f"dump of {size} bytes: too small to cut a connection after the client's first 64 KiB read")
    out, cache = tmp_path / "out", tmp_path / "cache"
    with MirrorServer(tmp_path / "mirror") as server:
        server.fail_next[f"/zhwiki/{info.latest_date}/dumpstatus.json"] = 1
        server.truncate_body[info.latest.urls[info.latest.xml_name]] = info.latest.sizes[info.latest.xml_name] // 3
        proc = run_cli("run", str(MANIFEST), "--out", str(out), "--set", f"sources.zhwiki.mirror={server.url}", "--no-progress", env={"GRIST_CACHE": str(cache)})
        assert proc.returncode == 0, proc.stderr
        xml_requests = [r for r in server.requests if r["path"].endswith(info.latest.xml_name)]
        assert any(r["range"] for r in xml_requests), "the second attempt resumed with Range"
    assert datasets.load_from_disk(str(out / "data")).num_rows == len(expected)


def test_truncated_bz2_is_fatal_and_clear(tmp_path, mirror):
    _, info = mirror
    data = info.latest.xml_path.read_bytes()
    bad = tmp_path / "trunc.xml.bz2"
    bad.write_bytes(data[: len(data) * 2 // 3])
    m = tmp_path / "m.yaml"
    m.write_text(
        f"name: t\nsources:\n  - {{name: w, kind: local, paths: ['{bad}'], license: CC-BY-SA-4.0}}\nstages:\n  - {{name: extract, stage: wikitext_extract}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    proc = run_cli("run", str(m), "--out", str(out), env={"GRIST_CACHE": str(tmp_path / "c")})
    assert proc.returncode != 0 and "truncated bz2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "stages" / "w" / "_COMPLETE").exists() and not (out / "data").exists()


def test_malformed_page_is_recorded_not_lost(tmp_path):
    good = "<page><title>甲</title><ns>0</ns><id>1</id><revision><id>10</id><timestamp>2024-01-01T00:00:00Z</timestamp><text>甲是一个字。</text></revision></page>"
    broken = "<page><title>乙</title><ns>0</ns><id>2</id><revision><id>20</id><text>bad & unescaped <b></text></revision></page>"
    xml = tmp_path / "d.xml"
    xml.write_text(f"<mediawiki><siteinfo><dbname>zhwiki</dbname><base>https://zh.wikipedia.org/wiki/Main</base></siteinfo>{good}{broken}{good.replace('<id>1</id>', '<id>3</id>').replace('甲</title>', '丙</title>')}</mediawiki>", encoding="utf-8")
    m = tmp_path / "m.yaml"
    m.write_text(f"name: t\nsources:\n  - {{name: w, kind: local, paths: ['{xml}'], license: CC-BY-SA-4.0}}\nstages:\n  - {{name: extract, stage: wikitext_extract}}\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli("run", str(m), "--out", str(out), env={"GRIST_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    assert sorted(datasets.load_from_disk(str(out / "data"))["id"]) == ["zhwiki/1", "zhwiki/3"]
    ledger = pq.read_table(out / "stages" / "w" / "removed").to_pylist()
    assert [(r["id"], r["reason"]) for r in ledger] == [("zhwiki/2", "parse:malformed-XML")]
    stats = json.loads((out / "stages" / "w" / "stats.json").read_text())
    assert stats["in"] == 3 and stats["out"] == 2 and stats["removed"] == 1


# ---- the real dump samples in ../shared -------------------------------------------------


def _mirror_from_real_dump(root: Path, shared: Path, date: str = "20240101") -> dict:
    """Serve the real enwiki multistream sample + index under a dumps.wikimedia.org layout."""
    import hashlib
    import shutil

    src = shared / "corpora" / "wikidumps"
    d = root / "enwiki" / date
    d.mkdir(parents=True)
    names = {
        "xml": f"enwiki-{date}-pages-articles-multistream.xml.bz2",
        "index": f"enwiki-{date}-pages-articles-multistream-index.txt.bz2",
    }
    shutil.copy(src / "enwiki-sample-multistream.xml.bz2", d / names["xml"])
    shutil.copy(src / "enwiki-sample-multistream-index.txt.bz2", d / names["index"])
    files, md5s, sha1s = {}, [], []
    for name in names.values():
        data = (d / name).read_bytes()
        md5, sha1 = hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()
        files[name] = {"size": len(data), "url": f"/enwiki/{date}/{name}", "md5": md5, "sha1": sha1}
        md5s.append(f"{md5}  {name}")
        sha1s.append(f"{sha1}  {name}")
    (d / f"enwiki-{date}-md5sums.txt").write_text("\n".join(md5s) + "\n")
    (d / f"enwiki-{date}-sha1sums.txt").write_text("\n".join(sha1s) + "\n")
    (d / "dumpstatus.json").write_text(json.dumps({"jobs": {"articlesmultistreamdump": {"status": "done", "files": files}}, "version": "0.8"}))
    return names


def test_real_enwiki_multistream_sample_and_full(tmp_path, shared_dir):
    names = _mirror_from_real_dump(tmp_path / "mirror", shared_dir)
    with MirrorServer(tmp_path / "mirror") as server:
        common = ["--no-progress", "--set", f"sources.zhwiki.mirror={server.url}", "--set", "sources.zhwiki.wiki=enwiki", "--set", "stages.lang.params.keep=[en]", "--set", "stages.quality.params.preset=auto", "--set", "stages.tokenize.params.vocab_size=4000"]
        env = {"GRIST_CACHE": str(tmp_path / "cache")}
        proc = run_cli("run", str(MANIFEST), "--out", str(tmp_path / "sample"), "--set", "sources.zhwiki.max_pages=50", *common, env=env)
        assert proc.returncode == 0, proc.stderr
        sent = server.bytes_sent(names["xml"])
        assert 0 < sent < (tmp_path / "mirror" / "enwiki" / "20240101" / names["xml"]).stat().st_size * 0.5
        assert all(r["range"] for r in server.requests if r["path"].endswith(".bz2"))
        proc = run_cli("run", str(MANIFEST), "--out", str(tmp_path / "full"), *common, env=env)
        assert proc.returncode == 0, proc.stderr
    sample = datasets.load_from_disk(str(tmp_path / "sample" / "data"))
    full = datasets.load_from_disk(str(tmp_path / "full" / "data"))
    assert 0 < sample.num_rows < full.num_rows
    extracted = json.loads((tmp_path / "full" / "stages" / "extract" / "stats.json").read_text())["out"]
    assert extracted == 106, "all 106 articles of the sample are extracted"
    removed_later = sum(json.loads((tmp_path / "full" / "stages" / n / "stats.json").read_text())["removed"] for n in ("clean", "lang", "quality", "dedup"))
    assert full.num_rows + removed_later == 106 and full.num_rows > 50
    assert set(sample["id"]) <= set(full["id"])
    assert full[0]["url"].startswith("https://en.wikipedia.org/wiki/")
    assert sum(any(m in t for m in LEFTOVERS) for t in full["text"]) / full.num_rows < 0.005


def _local_manifest(tmp_path: Path, path: Path) -> Path:
    m = tmp_path / "m.yaml"
    m.write_text(f"name: t\nsources:\n  - {{name: w, kind: local, paths: ['{path}'], license: CC-BY-SA-4.0}}\nstages:\n  - {{name: extract, stage: wikitext_extract}}\n", encoding="utf-8")
    return m


def test_real_utf16_dump_and_truncated_xml(tmp_path, shared_dir):
    dumps = shared_dir / "corpora" / "wikidumps"
    out = tmp_path / "bg"
    proc = run_cli("run", str(_local_manifest(tmp_path, dumps / "bgwiki-utf16-shortened.xml.bz2")), "--out", str(out), env={"GRIST_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    bg = datasets.load_from_disk(str(out / "data"))
    assert bg.num_rows >= 1 and all(any("\u0400" <= ch <= "\u04ff" for ch in t) for t in bg["text"])
    assert all(i.startswith("bgwiki/") for i in bg["id"])

    out = tmp_path / "ja"
    proc = run_cli("run", str(_local_manifest(tmp_path, dumps / "jawiki-truncated-100k.xml.xz")), "--out", str(out), env={"GRIST_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    ledger = pq.read_table(out / "stages" / "w" / "removed").to_pylist()
    assert [r["reason"] for r in ledger] == ["parse:truncated-page (no </page>)"], "the cut-off last page is recorded"
    ja = datasets.load_from_disk(str(out / "data"))
    assert ja.num_rows > 100 and all(u.startswith("https://ja.wikipedia.org/wiki/") for u in ja["url"])
