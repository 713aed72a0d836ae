"""The ``commoncrawl`` source against a Common Crawl-shaped mirror on loopback (tests/support/ccmirror.py):
whole files, heads of N records, selection on the URL index with byte ranges, pins, throttling,
and the bad inputs of issue 13."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from pipeline.common.errors import ManifestError, PipelineError
from pipeline.exec.executors import LocalExecutor
from pipeline.io import http
from pipeline.io.formats import cc_index
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from tests.conftest import run_cli
from tests.support.ccmirror import CRAWL, CCMirrorServer, build_ccmirror, build_pages

WARC_DOC_COLUMNS = {"id", "url", "html", "content_type", "http_status", "warc_record_id", "warc_date", "payload_digest", "warc_filename", "crawl"}


@pytest.fixture(scope="module")
def pages():
    return build_pages(filler=240, seed=0)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, pages):
    root = tmp_path_factory.mktemp("ccmirror")
    info = build_ccmirror(root, pages, n_files=4, index_parts=2, row_group_rows=32)
    with CCMirrorServer(root) as server:
        yield server, info


@pytest.fixture
def own_mirror(tmp_path, mirror):
    """A copy of the mirror this test may damage, with its own server."""
    _, info = mirror
    root = tmp_path / "mirror"
    shutil.copytree(info.root, root)
    with CCMirrorServer(root) as server:
        yield server, info, root


def manifest(tmp_path: Path, server_url: str, **fields) -> Path:
    src = {"name": "cc", "kind": "commoncrawl", "mirror": server_url, "crawl": CRAWL, **fields}
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps({"name": "web", "sources": [src]}), encoding="utf-8")  # JSON is YAML
    return path


def run(path: Path, out: Path):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(path), out, ex, console, progress=False)


def rows(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "stages" / "cc").glob("part-*.parquet"))])


def ledger(out: Path) -> list[dict]:
    parts = sorted((out / "stages" / "cc" / "removed").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist() if parts else []


def warc_bytes(server, info) -> int:
    server.wait_idle()
    return sum(server.bytes_sent(f.path.rsplit("/", 1)[1]) for f in info.files)


def test_whole_files_pinned_and_cached(tmp_path, cache_env, mirror):
    server, info = mirror
    m = manifest(tmp_path, server.url, max_files=2)
    server.reset_log()
    run(m, tmp_path / "out")
    t = rows(tmp_path / "out")
    want = [r for f in info.files[:2] for r in f.responses()]
    assert t.num_rows == len(want)
    assert WARC_DOC_COLUMNS <= set(t.column_names)
    got = {r["id"]: r for r in t.to_pylist()}
    for r in want:
        row = got[f"cc/{CRAWL}/{r.record_id}"]
        assert row["url"] == r.url and row["warc_date"] == r.date and row["payload_digest"] == r.payload_digest
        assert row["html"] == r.http_payload and row["crawl"] == CRAWL and row["license"] == "LicenseRef-CommonCrawl-ToU"
    assert {row["warc_filename"] for row in got.values()} == {f.path for f in info.files[:2]}
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())["sources"]["cc"]
    assert prov["crawl"] == CRAWL and len(prov["downloads"]) == 2
    for d, f in zip(prov["downloads"], info.files[:2]):
        assert d["bytes"] == f.size and len(d["sha256"]) == 64 and d["bytes_moved"] == f.size
    assert prov["bytes_moved"]["total"] == info.files[0].size + info.files[1].size
    # another output folder reuses the pinned files: no WARC bytes move
    server.reset_log()
    run(m, tmp_path / "out2")
    assert warc_bytes(server, info) == 0
    assert rows(tmp_path / "out2").num_rows == len(want)


def test_latest_from_collinfo_then_from_listing(tmp_path, cache_env, own_mirror):
    server, info, root = own_mirror
    m = manifest(tmp_path, server.url, max_files=1, max_records=3)
    m.write_text(m.read_text().replace(CRAWL, "latest"))
    run(m, tmp_path / "out")
    lock = (tmp_path / "out" / "manifest.lock.yaml").read_text()
    assert CRAWL in lock
    (root / "collinfo.json").unlink()  # a mirror without the crawl list: its crawl-data/ listing
    run(m, tmp_path / "out2")
    assert rows(tmp_path / "out2").num_rows == 3


def test_max_records_moves_only_the_bytes_needed(tmp_path, cache_env, mirror):
    server, info = mirror
    server.reset_log()
    run(manifest(tmp_path, server.url, max_files=2, max_records=5), tmp_path / "out")
    t = rows(tmp_path / "out")
    assert t.num_rows == 10
    assert set(t["id"].to_pylist()) == {f"cc/{CRAWL}/{r.record_id}" for f in info.files[:2] for r in f.responses()[:5]}
    moved = warc_bytes(server, info)
    whole = info.files[0].size + info.files[1].size
    assert moved < 0.5 * whole, (moved, whole)  # 256 KiB first chunk of ~1 MB files
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())["sources"]["cc"]
    assert prov["bytes_moved"]["total"] == moved


def test_wet_files(tmp_path, cache_env, mirror):
    server, info = mirror
    run(manifest(tmp_path, server.url, format="wet", files=[info.files[1].wet_path.rsplit("/", 1)[1]]), tmp_path / "out")
    t = rows(tmp_path / "out")
    assert t.num_rows == len([r for r in info.files[1].wet_records if r.warc_type == "conversion"])
    row = t.to_pylist()[0]
    assert row["warc_type"] == "conversion" and row["html"] is None and row["text"]


def test_select_fetches_only_selected_records(tmp_path, cache_env, mirror):
    server, info = mirror
    server.reset_log()
    run(manifest(tmp_path, server.url, select={"languages": ["zho"]}), tmp_path / "out")
    t = rows(tmp_path / "out")
    want = info.selected(("zho",))
    assert sorted(t["id"].to_pylist()) == sorted(f"cc/{CRAWL}/{r.record_id}" for _, r in want)
    assert {r["http_status"] for r in t.to_pylist()} == {200}
    moved = warc_bytes(server, info)
    assert moved == sum(r.length for _, r in want)  # exactly the selected gzip members
    index_moved = sum(server.bytes_sent(p.rsplit("/", 1)[1]) for p in info.index_paths)
    assert index_moved < sum(info.index_sizes.values())  # projection: not whole index files
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())["sources"]["cc"]
    assert prov["index"]["rows_selected"] == len(want)
    assert prov["bytes_moved"]["records"] == moved
    # a re-run in another folder reads its pinned records and selection from the cache
    server.reset_log()
    run(manifest(tmp_path, server.url, select={"languages": ["zho"]}), tmp_path / "out2")
    server.wait_idle()
    assert server.bytes_sent() <= 2000  # only the paths file check? nothing big
    assert rows(tmp_path / "out2").num_rows == len(want)


def test_select_tlds_prunes_row_groups_and_respects_limits(tmp_path, cache_env, mirror):
    server, info = mirror
    server.reset_log()
    run(manifest(tmp_path, server.url, select={"tlds": ["cn", "tw", "hk"], "statuses": [], "mimes": []}, max_records=2, max_files=3, records_per_partition=3), tmp_path / "out")
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())["sources"]["cc"]
    assert prov["index"]["row_groups_read"] < prov["index"]["row_groups"]
    t = rows(tmp_path / "out")
    per_file: dict[str, int] = {}
    for r in t.to_pylist():
        per_file[r["warc_filename"]] = per_file.get(r["warc_filename"], 0) + 1
        assert r["url"].split("/")[2].rsplit(".", 1)[1] in {"cn", "tw", "hk"}
    assert set(per_file) <= {f.path for f in info.files[:3]} and max(per_file.values()) <= 2
    assert len(list((tmp_path / "out" / "stages" / "cc").glob("part-*.parquet"))) == -(-t.num_rows // 3)  # tasks of 3 records, across files
    run(manifest(tmp_path, server.url, select={"tlds": ["cn", "tw", "hk"], "statuses": [], "mimes": [], "limit": 4}), tmp_path / "out2")
    assert rows(tmp_path / "out2").num_rows == 4


def test_files_sample_and_unknown_file(tmp_path, cache_env, mirror):
    server, info = mirror
    from stages.source_commoncrawl import CommonCrawlSource

    m = load_manifest(manifest(tmp_path, server.url, files={"sample": 2, "seed": 7}))
    src = CommonCrawlSource(m.sources[0], "cc")
    from pipeline.core.stage import RunContext

    rctx = RunContext(out_dir=tmp_path, cache_dir=cache_env, console=Console(quiet=True), manifest=m)
    a, b = src.resolve(rctx), src.resolve(rctx)
    assert a["files"] == b["files"] and len(a["files"]) == 2 and set(a["files"]) <= {f.path for f in info.files}
    bad = CommonCrawlSource(load_manifest(manifest(tmp_path, server.url, files=["nope.warc.gz"])).sources[0], "cc")
    with pytest.raises(PipelineError, match="not in the warc paths"):
        bad.resolve(rctx)


def test_throttling_503_then_served(tmp_path, cache_env, mirror, monkeypatch):
    server, info = mirror
    monkeypatch.setenv("GRIST_HTTP_RETRIES", "4")
    name = info.files[0].path.rsplit("/", 1)[1]
    server.throttle[name] = (2, 503, 0)
    server.reset_log()
    run(manifest(tmp_path, server.url, max_files=1, max_records=2), tmp_path / "out")
    server.wait_idle()
    assert [r["status"] for r in server.requests if r["path"].endswith(name)][:3] == [503, 503, 206]
    assert rows(tmp_path / "out").num_rows == 2


def test_retry_after_is_waited_for(tmp_path, cache_env, mirror):
    import time

    server, info = mirror
    server.throttle["warc.paths.gz"] = (1, 503, 1)
    t0 = time.monotonic()
    run(manifest(tmp_path, server.url, max_files=1, max_records=1), tmp_path / "out")
    assert time.monotonic() - t0 >= 1.0  # GRIST_HTTP_BACKOFF is 0.05 s in tests: the wait is the server's


def test_throttling_storm_is_a_clear_error_nothing_complete(tmp_path, cache_env, mirror):
    server, info = mirror
    name = info.files[0].path.rsplit("/", 1)[1]
    server.throttle[name] = (1000, 429, 0)
    try:
        with pytest.raises(PipelineError) as exc:
            run(manifest(tmp_path, server.url, max_files=1), tmp_path / "out")
    finally:
        server.throttle.clear()
    assert "throttling" in str(exc.value) and "429" in str(exc.value)
    assert not (tmp_path / "out" / "stages" / "cc" / "_COMPLETE").exists()


def test_retry_after_is_honoured_and_capped(monkeypatch):
    monkeypatch.setenv("GRIST_HTTP_BACKOFF", "0.5")
    monkeypatch.setenv("GRIST_HTTP_RETRY_AFTER_MAX", "30")
    assert http._retry_after("7") == 7 and http._retry_after("soon") is None
    assert http._wait(0, 7) == 7 and http._wait(0, None) == 0.5 and http._wait(0, 3600) == 30
    assert 2.0e9 < http._retry_after("Fri, 01 Jan 2100 00:00:00 GMT") < 3.0e9  # an HTTP date, seconds from now
    assert http._retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0


def test_truncated_file_on_mirror_goes_to_the_ledger(tmp_path, cache_env, own_mirror):
    server, info, root = own_mirror
    f = info.files[0]
    last = f.records[-2]  # cut the file inside its second-to-last record
    path = root / f.path
    path.write_bytes(path.read_bytes()[: last.offset + last.length // 2])
    run(manifest(tmp_path, server.url, files=[f.path]), tmp_path / "out")
    reasons = [r["reason"] for r in ledger(tmp_path / "out")]
    assert reasons == ["warc:truncated"]
    complete = [r for r in f.responses() if r.offset + r.length <= last.offset]
    assert rows(tmp_path / "out").num_rows == len(complete)


def test_changed_file_vs_pin_is_a_clear_error(tmp_path, cache_env, own_mirror):
    server, info, root = own_mirror
    f = info.files[1]
    m = manifest(tmp_path, server.url, files=[f.path])
    run(m, tmp_path / "out")
    cached = next((cache_env / "commoncrawl" / CRAWL / "files").rglob(f.path.rsplit("/", 1)[1]))
    cached.unlink()  # the cache lost the file; the pin stays
    (root / f.path).write_bytes((root / f.path).read_bytes() + gzip.compress(b"WARC/1.0\r\n"))
    with pytest.raises(PipelineError) as exc:
        run(m, tmp_path / "out2")
    assert "pinned" in str(exc.value) and "never change" in str(exc.value)
    assert not (tmp_path / "out2" / "stages" / "cc" / "_COMPLETE").exists()
    # a damaged cached copy is fetched again (the mirror's copy still matches the pin)
    (root / f.path).write_bytes((root / f.path).read_bytes()[: f.size])
    run(m, tmp_path / "out3")
    cached.write_bytes(b"garbage")
    run(m, tmp_path / "out4")
    assert cached.stat().st_size == f.size


def test_resume_after_dropped_connection(tmp_path, cache_env, mirror):
    server, info = mirror
    name = info.files[2].path.rsplit("/", 1)[1]
    server.truncate_body[name] = 100_000
    server.reset_log()
    run(manifest(tmp_path, server.url, files=[info.files[2].path]), tmp_path / "out")
    server.wait_idle()
    ranges = [r["range"] for r in server.requests if r["path"].endswith(name)]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and 0 < int(ranges[1][6:-1]) <= 100_000  # resumed
    assert rows(tmp_path / "out").num_rows == len(info.files[2].responses())


def test_unknown_crawl_lists_recent_ones(tmp_path, cache_env, mirror):
    server, info = mirror
    m = manifest(tmp_path, server.url)
    m.write_text(m.read_text().replace(CRAWL, "CC-MAIN-2019-04"))
    with pytest.raises(PipelineError) as exc:
        run(m, tmp_path / "out")
    assert "unknown crawl CC-MAIN-2019-04" in str(exc.value) and CRAWL in str(exc.value)


def test_unreachable_mirror_then_offline_from_cache(tmp_path, cache_env, mirror):
    with pytest.raises(PipelineError) as exc:
        run(manifest(tmp_path, "http://127.0.0.1:9", max_files=1), tmp_path / "out")
    assert "cannot reach 127.0.0.1" in str(exc.value) and "mirror" in str(exc.value)
    server, info = mirror
    run(manifest(tmp_path, server.url, max_files=1), tmp_path / "out1")
    run(manifest(tmp_path, "http://127.0.0.1:9", max_files=1), tmp_path / "out2")  # offline: pinned paths + files
    assert rows(tmp_path / "out2").num_rows == len(info.files[0].responses())
    run(manifest(tmp_path, server.url, select={"languages": ["zho"]}), tmp_path / "out3")
    run(manifest(tmp_path, "http://127.0.0.1:9", select={"languages": ["zho"]}), tmp_path / "out4")  # offline: cached selection + records
    assert rows(tmp_path / "out4").num_rows == len(info.selected(("zho",)))
    m = manifest(tmp_path, "http://127.0.0.1:9")
    m.write_text(m.read_text().replace(CRAWL, "latest"))
    with pytest.raises(PipelineError) as exc:
        run(m, tmp_path / "out5")
    assert f"crawl={CRAWL}" in str(exc.value)  # latest needs the mirror: the hint names the cached crawl


def test_select_without_index_is_a_clear_error(tmp_path, cache_env, own_mirror):
    server, info, root = own_mirror
    (root / "crawl-data" / CRAWL / "cc-index-table.paths.gz").unlink()
    with pytest.raises(PipelineError) as exc:
        run(manifest(tmp_path, server.url, select={"languages": ["zho"]}), tmp_path / "out")
    assert "columnar URL index" in str(exc.value) and "drop select" in str(exc.value)


def test_license_is_common_crawl_terms_only(tmp_path):
    m = manifest(tmp_path, "http://127.0.0.1:9", license="CC-BY-4.0")
    with pytest.raises(ManifestError) as exc:
        load_manifest(m)
    assert "LicenseRef-CommonCrawl-ToU" in str(exc.value) and "copyright" in str(exc.value) and "sources[0]" in str(exc.value)
    assert load_manifest(manifest(tmp_path, "http://127.0.0.1:9")).sources[0].license == "LicenseRef-CommonCrawl-ToU"
    with pytest.raises(ManifestError, match="ISO 639-3"):
        load_manifest(manifest(tmp_path, "http://127.0.0.1:9", select={"languages": ["zh"]}))
    with pytest.raises(ManifestError, match="format: warc"):
        load_manifest(manifest(tmp_path, "http://127.0.0.1:9", format="wet", select={"tlds": ["cn"]}))


def test_manifest_overrides_validate(tmp_path):
    m = tmp_path / "web.yaml"
    m.write_text("name: web\nsources:\n  - {name: cc, kind: commoncrawl, crawl: latest, files: {sample: 4, seed: 1}}\n", encoding="utf-8")
    man = load_manifest(m, ["sources.cc.mirror=http://127.0.0.1:8123", "sources.cc.crawl=CC-MAIN-2026-01", "sources.cc.max_files=2"])
    cfg = man.sources[0]
    assert (cfg.mirror, cfg.crawl, cfg.max_files) == ("http://127.0.0.1:8123", "CC-MAIN-2026-01", 2)
    with pytest.raises(ManifestError, match="CC-MAIN"):
        load_manifest(m, ["sources.cc.crawl=2026-01"])
    proc = run_cli("validate", str(m), "--set", "sources.cc.mirror=http://127.0.0.1:8123", "--set", "sources.cc.crawl=CC-MAIN-2026-01", "--set", "sources.cc.max_files=2")
    assert proc.returncode == 0 and "LicenseRef-CommonCrawl-ToU" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_coalesce_adjacent_ranges():
    assert cc_index.coalesce([(0, 10), (10, 5), (40, 5)]) == [(0, 15, [0, 1]), (40, 45, [2])]
    assert cc_index.coalesce([(40, 5), (0, 10), (20, 5)], max_gap=10) == [(0, 25, [1, 2]), (40, 45, [0])]


def test_oversized_records_and_short_files(tmp_path, cache_env, mirror):
    server, info = mirror
    f = info.files[3]
    run(manifest(tmp_path, server.url, files=[f.path], max_records=100_000, max_record_bytes=4096), tmp_path / "out")
    big = [r for r in f.responses() if len(r.http_payload) > 3000]
    assert big and {r["reason"] for r in ledger(tmp_path / "out")} == {"warc:too-large"}
    assert len(ledger(tmp_path / "out")) + rows(tmp_path / "out").num_rows == len(f.responses())  # the whole (short) file was read
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())["sources"]["cc"]
    assert prov["downloads"][0]["complete_file"] and prov["downloads"][0]["bytes"] == f.size


def test_select_on_a_truncated_file_ledgers_the_missing_records(tmp_path, cache_env, own_mirror):
    server, info, root = own_mirror
    f = info.files[0]
    cut = f.size // 2
    (root / f.path).write_bytes((root / f.path).read_bytes()[:cut])
    run(manifest(tmp_path, server.url, select={"languages": ["zho"]}), tmp_path / "out")
    want = info.selected(("zho",))
    lost = {f"cc/{CRAWL}/{f.path.rsplit('/', 1)[1]}@{r.offset}" for g, r in want if g is f and r.offset + r.length > cut}
    assert lost, "the fixture must place a zh record in the second half of file 0"
    led = ledger(tmp_path / "out")
    assert {r["id"] for r in led} == lost and {r["reason"] for r in led} == {"warc:truncated"}
    assert rows(tmp_path / "out").num_rows == len(want) - len(lost)


def test_ranged_file_reads_only_what_is_asked(mirror):
    server, info = mirror
    f = info.files[0]
    data = (info.root / f.path).read_bytes()
    rf = http.RangedFile(server.url_for(f.path))
    assert rf.size == f.size
    rf.seek(1000)
    assert rf.read(500) == data[1000:1500] and rf.tell() == 1500
    rf.seek(-10, 2)
    assert rf.read() == data[-10:]
    assert rf.bytes_read == 510 and rf.requests == 2
    table, st = cc_index.scan(http.RangedFile(server.url_for(info.index_paths[0])), cc_index.Selection(languages=("zho",)))
    local, _ = cc_index.scan(info.root / info.index_paths[0], cc_index.Selection(languages=("zho",)))
    assert table.equals(local) and st.rows_selected == table.num_rows
    server.ignore_range = True  # a server that ignores Range: still the right bytes
    try:
        assert http.RangedFile(server.url_for(f.path), size=f.size).read(100) == data[:100]
    finally:
        server.ignore_range = False


def test_interrupted_run_resumes_per_file(tmp_path, cache_env, mirror):
    server, info = mirror
    m = manifest(tmp_path, server.url, max_files=2, max_records=3)
    second = info.files[1].path.rsplit("/", 1)[1]
    server.throttle[second] = (1000, 503, 0)
    try:
        with pytest.raises(PipelineError):
            run(m, tmp_path / "out")
    finally:
        server.throttle.clear()
    node = tmp_path / "out" / "stages" / "cc"
    assert (node / "_tasks" / "part-00000.json").exists() and not (node / "_COMPLETE").exists()
    server.reset_log()
    run(m, tmp_path / "out")
    server.wait_idle()
    assert {r["path"].rsplit("/", 1)[1] for r in server.requests} == {second}  # the finished file is not read again
    assert rows(tmp_path / "out").num_rows == 6


def test_a_file_that_is_not_warc_is_a_clear_error(tmp_path, cache_env, own_mirror):
    server, info, root = own_mirror
    f = info.files[2]
    (root / f.path).write_bytes(b"<html><body>503 Service Unavailable</body></html>")
    with pytest.raises(PipelineError) as exc:
        run(manifest(tmp_path, server.url, files=[f.path]), tmp_path / "out")
    assert "not a WARC file" in str(exc.value) and "quarantine" in str(exc.value)
    assert not (tmp_path / "out" / "stages" / "cc" / "_COMPLETE").exists()
    assert not list((cache_env / "commoncrawl").rglob("*.pin.json"))[1:]  # only the paths file stays pinned


def test_lying_length_and_junk_go_to_the_ledger(tmp_path, cache_env, own_mirror):
    import re
    import zlib

    from tests.support.ccmirror import gzip_member

    server, info, root = own_mirror
    f = info.files[1]
    data = (root / f.path).read_bytes()
    liar, junk_after = f.responses()[3], f.responses()[6]
    raw = zlib.decompress(data[liar.offset : liar.offset + liar.length], 31)
    raw = re.sub(rb"\r\nContent-Length: (\d+)\r\n\r\n", lambda m: b"\r\nContent-Length: %d\r\n\r\n" % (int(m.group(1)) + 50), raw, count=1)
    end = junk_after.offset + junk_after.length
    damaged = data[: liar.offset] + gzip_member(raw) + data[liar.offset + liar.length : end] + bytes(range(256)) * 8 + data[end:]
    (root / f.path).write_bytes(damaged)
    run(manifest(tmp_path, server.url, files=[f.path]), tmp_path / "out")
    led = ledger(tmp_path / "out")
    reasons = sorted(r["reason"] for r in led)
    assert "warc:bad-length" in reasons and any(r in reasons for r in ("warc:unparsable", "warc:truncated")), reasons
    got = set(rows(tmp_path / "out")["id"].to_pylist())
    assert f"cc/{CRAWL}/{liar.record_id}" not in got
    assert len(got) == len(f.responses()) - 1  # every other response survives
