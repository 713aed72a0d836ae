"""WARC/WET files: the reader (pipeline/io/formats/warc.py) and the `local` source's web records.

Every fixture is built here, by hand (``warc_record`` / ``gzip_member``) or with warcio's writer,
so each kind of damage sits exactly where the test says."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tracemalloc
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from pipeline.common.errors import PipelineError, SourceError, StageError
from pipeline.core.stage import WEB_RECORD_SCHEMA
from pipeline.exec.executors import LocalExecutor
from pipeline.io.formats import warc
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from stages.source_local import detect_format, read_warc_task
from tests.support.ccmirror import gzip_member, warc_record

DATE = "2024-08-02T23:45:08Z"
CRAWL = "CC-MAIN-2024-33"


def _digest(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _rec(warc_type: str, rid: str, block: bytes, url: str | None = None, extra: list | None = None, content_length: int | None = None) -> bytes:
    headers = [("WARC-Record-ID", f"<urn:uuid:{rid}>"), ("WARC-Date", DATE)]
    if url:
        headers.append(("WARC-Target-URI", url))
    headers += (extra or []) + [("WARC-Block-Digest", _digest(block))]
    return warc_record(warc_type, headers, block, content_length=content_length)


def warcinfo(crawl: str | None = CRAWL) -> bytes:
    fields = (f"isPartOf: {crawl}\r\n" if crawl else "") + "operator: test\r\nformat: WARC File Format 1.1\r\n"
    return _rec("warcinfo", "ffffffff-0000-0000-0000-000000000000", fields.encode(), extra=[("Content-Type", "application/warc-fields")])


def response(i: int, body: bytes | None = None, ctype: str = "text/html; charset=utf-8", status: int = 200, http_extra: str = "", content_length: int | None = None) -> bytes:
    body = body if body is not None else f"<html><body><p>page {i} 网页 {i}</p></body></html>".encode()
    http = f"HTTP/1.1 {status} OK\r\nContent-Type: {ctype}\r\n{http_extra}Content-Length: {len(body)}\r\n\r\n".encode() + body
    digest = "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode()
    extra = [("Content-Type", "application/http; msgtype=response"), ("WARC-Payload-Digest", digest)]
    return _rec("response", f"00000000-0000-0000-0000-{i:012d}", http, f"http://example.com/{i}", extra, content_length)


def request(i: int) -> bytes:
    http = f"GET /{i} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()
    return _rec("request", f"10000000-0000-0000-0000-{i:012d}", http, f"http://example.com/{i}", [("Content-Type", "application/http; msgtype=request")])


def metadata(i: int) -> bytes:
    return _rec("metadata", f"20000000-0000-0000-0000-{i:012d}", b"fetchTimeMs: 12\r\n", f"http://example.com/{i}", [("Content-Type", "application/warc-fields")])


def conversion(i: int, text: str) -> bytes:
    return _rec("conversion", f"30000000-0000-0000-0000-{i:012d}", text.encode(), f"http://example.com/{i}", [("Content-Type", "text/plain")])


def captures(n: int) -> list[bytes]:
    out = [warcinfo()]
    for i in range(n):
        out += [request(i), response(i), metadata(i)]
    return out


def per_record(records: list[bytes]) -> bytes:
    return b"".join(gzip_member(r) for r in records)


def read(tmp_path: Path, name: str, data: bytes, **kw) -> tuple[list[dict], list[dict], dict]:
    path = tmp_path / name
    path.write_bytes(data)
    out, removed = tmp_path / f"{name}.part.parquet", tmp_path / f"{name}.removed.parquet"
    stats = read_warc_task(str(path), "web", "LicenseRef-test", "web", str(out), str(removed), **kw)
    rows = pq.read_table(out).to_pylist()
    ledger = pq.read_table(removed).to_pylist()
    assert stats["in"] == stats["out"] + stats["removed"] == len(rows) + len(ledger)
    return rows, ledger, stats


def signals(row: dict) -> dict:
    return json.loads(row["signals"])


# ---- what is read ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["per-record.warc.gz", "plain.warc", "whole-file.warc.gz"])
def test_layouts_give_the_same_rows(tmp_path, layout):
    records = captures(3) + [
        _rec("resource", "40000000-0000-0000-0000-000000000001", b"%PDF-1.4 fake", "http://example.com/a.pdf", [("Content-Type", "application/pdf")]),
        _rec("revisit", "50000000-0000-0000-0000-000000000001", b"HTTP/1.1 200 OK\r\n\r\n", "http://example.com/0", [("WARC-Profile", "http://netpreserve.org/warc/1.0/revisit/identical-payload-digest")]),
    ]
    data = {"per-record.warc.gz": per_record(records), "plain.warc": b"".join(records), "whole-file.warc.gz": gzip_member(b"".join(records))}[layout]
    rows, ledger, stats = read(tmp_path, layout, data)
    assert ledger == []
    assert stats["warc_records_by_type"] == {"warcinfo": 1, "request": 3, "response": 3, "metadata": 3, "resource": 1, "revisit": 1}
    assert [r["id"] for r in rows] == [f"web/00000000-0000-0000-0000-{i:012d}" for i in range(3)] + ["web/40000000-0000-0000-0000-000000000001"]
    first = rows[0]
    assert first["html"] == "<html><body><p>page 0 网页 0</p></body></html>".encode()
    assert (first["url"], first["content_type"], first["http_status"], first["text"], first["title"]) == ("http://example.com/0", "text/html; charset=utf-8", 200, "", None)
    assert (first["warc_type"], first["warc_record_id"], first["warc_date"], first["timestamp"]) == ("response", "00000000-0000-0000-0000-000000000000", DATE, DATE)
    assert first["payload_digest"].startswith("sha1:") and first["warc_filename"] == layout and first["crawl"] == CRAWL
    assert (first["source"], first["license"]) == ("web", "LicenseRef-test")
    pdf = rows[-1]
    assert (pdf["warc_type"], pdf["content_type"], pdf["http_status"], pdf["html"]) == ("resource", "application/pdf", None, b"%PDF-1.4 fake")
    assert pq.read_schema(tmp_path / f"{layout}.part.parquet").remove_metadata() == WEB_RECORD_SCHEMA


def test_http_encodings_are_decoded(tmp_path):
    body = "<html><p>压缩的网页</p></html>".encode("gbk")
    gz = gzip.compress(body, mtime=0)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(gz), gz)
    rec = response(7, chunked, ctype="text/html; charset=gbk", http_extra="Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n")
    for backend in ("fastwarc", "warcio"):
        rows, ledger, _ = read(tmp_path, f"enc-{backend}.warc.gz", per_record([warcinfo(None), rec]), backend=backend)
        assert ledger == [] and rows[0]["html"] == body and rows[0]["crawl"] is None, backend


def test_wet_conversion_records(tmp_path):
    texts = ["第一页的文字。\n第二行。", "Second page text.", "bad byte: \udcff"]
    records = [warcinfo()] + [conversion(i, t.encode("utf-8", "surrogateescape").decode("utf-8", "replace")) for i, t in enumerate(texts[:2])]
    records.append(_rec("conversion", "30000000-0000-0000-0000-000000000009", b"bad byte: \xff", "http://example.com/9", [("Content-Type", "text/plain")]))
    rows, ledger, stats = read(tmp_path, "CC-MAIN-x.warc.wet.gz", per_record(records))
    assert ledger == [] and stats["warc_records_by_type"] == {"warcinfo": 1, "conversion": 3}
    assert [r["text"] for r in rows] == [texts[0], texts[1], "bad byte: \ufffd"]
    assert all(r["html"] is None and r["warc_type"] == "conversion" and r["crawl"] == CRAWL for r in rows)


def test_formats_by_name():
    assert [detect_format(n) for n in ("a.warc", "a.warc.gz", "CC-MAIN-1.warc.wet.gz", "a.wet", "A.WARC.GZ", "a.jsonl")] == ["warc", "warc", "wet", "wet", "warc", "jsonl"]


def test_backends_agree(tmp_path):
    data = per_record(captures(5) + [conversion(9, "文字")])
    a, _, _ = read(tmp_path, "a.warc.gz", data, backend="fastwarc")
    b, _, _ = read(tmp_path, "b.warc.gz", data, backend="warcio")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "warc_filename"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


# ---- bad input ---------------------------------------------------------------------------------


def test_truncated_gzip_member_keeps_earlier_records(tmp_path):
    records = captures(3)
    data = per_record(records)
    last = len(per_record(records[:-2]))  # the last response's member starts here
    cut = data[: last + len(gzip_member(records[-2])) - 40]  # the last response cut short
    rows, ledger, _ = read(tmp_path, "cut.warc.gz", cut)
    assert [r["id"] for r in rows] == ["web/00000000-0000-0000-0000-000000000000", "web/00000000-0000-0000-0000-000000000001"]
    assert [(r["reason"], r["id"]) for r in ledger] == [("warc:truncated", "web/00000000-0000-0000-0000-000000000002")]
    sig = signals(ledger[0])
    assert sig["file"] == "cut.warc.gz" and sig["offset"] == last and sig["warc_type"] == "response"


def test_truncated_plain_file(tmp_path):
    rows, ledger, _ = read(tmp_path, "cut.warc", b"".join(captures(2))[:-120])
    assert len(rows) == 2 and [r["reason"] for r in ledger] == ["warc:truncated"]


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("lie", ["long", "short"])
def test_lying_content_length(tmp_path, gz, lie):
    body = b"<html>" + b"x" * 500 + b"</html>"
    http_len = len(f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n\r\n") + len(body)
    bad = response(1, body, ctype="text/html", content_length=http_len + 300 if lie == "long" else http_len - 200)
    records = [warcinfo(), response(0), bad, response(2), response(3)]
    rows, ledger, _ = read(tmp_path, f"lie.warc{'.gz' if gz else ''}", per_record(records) if gz else b"".join(records))
    assert [r["id"][-1] for r in rows] == ["0", "2", "3"]
    assert [(r["reason"], r["id"][-1]) for r in ledger] == [("warc:bad-length", "1")]
    sig = signals(ledger[0])
    assert sig["offset"] == len(per_record(records[:2]) if gz else b"".join(records[:2])) and "Content-Length" in sig["detail"]


@pytest.mark.parametrize("gz", [True, False])
def test_junk_between_records(tmp_path, gz):
    junk = bytes(range(256)) * 8 + b"WARC/1.0 is mentioned here but this is no header\r\n"
    records = [warcinfo(), response(0), response(1)]
    pack = per_record if gz else b"".join
    data = pack(records[:2]) + junk + pack(records[2:]) + junk
    rows, ledger, _ = read(tmp_path, f"junk.warc{'.gz' if gz else ''}", data)
    assert [r["id"][-1] for r in rows] == ["0", "1"]
    assert [r["reason"] for r in ledger] == ["warc:unparsable", "warc:unparsable"]
    assert signals(ledger[0])["offset"] == len(pack(records[:2])) and ledger[0]["id"] == f"web/junk.warc{'.gz' if gz else ''}@{len(pack(records[:2]))}"


def test_junk_before_the_first_record(tmp_path):
    rows, ledger, _ = read(tmp_path, "lead.warc.gz", b"\x00garbage" * 100 + per_record(captures(2)))
    assert len(rows) == 2 and [(r["reason"], signals(r)["offset"]) for r in ledger] == [("warc:unparsable", 0)]


@pytest.mark.parametrize("name,data", [("notes.warc", b"just some text\n" * 1000), ("data.warc.gz", gzip.compress(b'{"text": "a"}\n' * 1000)), ("empty-ish.warc.gz", b"\x1f\x8b\x08garbage")])
def test_not_a_warc_file_is_a_clear_error(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(SourceError) as info:
        read_warc_task(str(tmp_path / name), "web", "MIT", "web", str(tmp_path / "p.parquet"), str(tmp_path / "r.parquet"))
    assert name in str(info.value) and "not a WARC" in str(info.value)
    assert not (tmp_path / "p.parquet").exists() and not list(tmp_path.glob(".p.parquet.tmp-*"))


def _big_warc(path: Path, payload_mb: int) -> None:
    """A per-record gzipped WARC with one response of ``payload_mb`` MB between small ones,
    written a chunk at a time (never whole in memory)."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {payload_mb * 2**20}\r\n\r\n".encode()
    length = len(head) + payload_mb * 2**20
    warc_head = f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:big>\r\nWARC-Target-URI: http://example.com/big\r\nWARC-Date: {DATE}\r\nContent-Length: {length}\r\n\r\n".encode()
    chunk = (b"<p>" + b"big page " * 100 + b"</p>\n") * 1000
    with open(path, "wb") as fh:
        fh.write(per_record([warcinfo(), response(0)]))
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
        fh.write(c.compress(warc_head + head))
        left = payload_mb * 2**20
        while left:
            piece = chunk[: min(left, len(chunk))]
            fh.write(c.compress(piece))
            left -= len(piece)
        fh.write(c.compress(b"\r\n\r\n") + c.flush())
        fh.write(per_record([response(2)]))


def test_a_50_mb_record_is_capped_not_read(tmp_path):
    path = tmp_path / "big.warc.gz"
    _big_warc(path, 50)
    tracemalloc.start()
    try:
        stats = read_warc_task(str(path), "web", "MIT", "web", str(tmp_path / "p.parquet"), str(tmp_path / "r.parquet"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB: the record was held in memory"
    rows, ledger = pq.read_table(tmp_path / "p.parquet").to_pylist(), pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert [r["id"][-1] for r in rows] == ["0", "2"] and stats["removed_by_reason"] == {"warc:too-large": 1}
    assert ledger[0]["id"] == "web/big" and signals(ledger[0])["content_length"] > 50 * 2**20
    # the cap is the source's: raised, the record is read
    stats = read_warc_task(str(path), "web", "MIT", "web", str(tmp_path / "p2.parquet"), str(tmp_path / "r2.parquet"), max_record_bytes=60 * 2**20)
    assert stats["out"] == 3 and stats["removed"] == 0


def test_parts_are_written_in_batches(tmp_path, monkeypatch):
    import stages.source_local as sl

    monkeypatch.setattr(sl, "WEB_BATCH_ROWS", 4)
    rows, _, _ = read(tmp_path, "many.warc.gz", per_record(captures(10)))
    assert len(rows) == 10 and pq.ParquetFile(tmp_path / "many.warc.gz.part.parquet").num_row_groups == 3


# ---- the source, end to end --------------------------------------------------------------------


def run(manifest: Path, out: Path):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(manifest), out, ex, console, progress=False)


def test_local_source_reads_warc_and_wet_files(tmp_path, cache_env):
    data = tmp_path / "data"
    data.mkdir()
    records = captures(3)[:-1]  # ends with a response
    (data / "a.warc.gz").write_bytes(per_record(records)[:-30])  # the last response cut short
    (data / "b.wet.gz").write_bytes(per_record([warcinfo(), conversion(1, "正文。")]))
    (data / "c.dat").write_bytes(b"".join(captures(1)))  # WARC by the format field, not the name
    m = tmp_path / "m.yaml"
    m.write_text("name: w\nsources:\n  - {name: web, kind: local, paths: ['data/*.gz'], license: LicenseRef-CommonCrawl-ToU, max_record_bytes: 100000}\n", encoding="utf-8")
    out = tmp_path / "out"
    run(m, out)
    node = out / "stages" / "web"
    assert (node / "_COMPLETE").exists()
    stats = json.loads((node / "stats.json").read_text())
    rows = [r for part in sorted(node.glob("part-*.parquet")) for r in pq.read_table(part).to_pylist()]
    assert sorted(r["warc_type"] for r in rows) == ["conversion", "response", "response"]
    ledger = pq.read_table(node / "removed").to_pylist()
    assert [(r["reason"], signals(r)["file"]) for r in ledger] == [("warc:truncated", "a.warc.gz")]
    assert stats["in"] == stats["out"] + stats["removed"] == 4
    m.write_text("name: w\nsources:\n  - {name: dat, kind: local, paths: ['data/c.dat'], format: warc, license: LicenseRef-CommonCrawl-ToU}\n", encoding="utf-8")
    run(m, tmp_path / "out2")
    assert [r["id"] for r in pq.read_table(tmp_path / "out2" / "stages" / "dat" / "part-00000.parquet").to_pylist()] == ["dat/00000000-0000-0000-0000-000000000000"]


def test_local_source_refuses_a_non_warc_file_and_mixed_sources(tmp_path, cache_env):
    (tmp_path / "x.warc.gz").write_bytes(gzip.compress(b"not a warc\n" * 50))
    (tmp_path / "y.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    m = tmp_path / "m.yaml"
    m.write_text("name: w\nsources:\n  - {name: web, kind: local, paths: ['x.warc.gz'], license: MIT}\n", encoding="utf-8")
    with pytest.raises(PipelineError) as info:
        run(m, tmp_path / "out")
    assert "x.warc.gz" in str(info.value) and "not a WARC" in str(info.value)
    assert not (tmp_path / "out" / "stages" / "web" / "_COMPLETE").exists()
    m.write_text("name: w\nsources:\n  - {name: web, kind: local, paths: ['x.warc.gz', 'y.jsonl'], license: MIT}\n", encoding="utf-8")
    with pytest.raises(StageError) as info:
        run(m, tmp_path / "out2")
    assert "mixes WARC/WET" in str(info.value)


# ---- the real pages ----------------------------------------------------------------------------


def test_real_pages_round_trip_byte_for_byte(tmp_path, shared_dir):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    web = shared_dir / "corpora" / "web"
    if not (web / "index.jsonl").is_file():
        pytest.skip(f"no real pages at {web}")
    pages = [json.loads(line) for line in (web / "index.jsonl").read_text(encoding="utf-8").splitlines()]
    bodies = {}
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for row in pages:
        body = (web / "pages" / f"{row['id']}.html").read_bytes()
        url = row.get("url") or f"http://example.com/{row['id']}"
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
        rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http)
        writer.write_record(rec)
        bodies[warc.record_uuid(rec.rec_headers.get_header("WARC-Record-ID"))] = body
    rows, ledger, _ = read(tmp_path, "real.warc.gz", buf.getvalue())
    assert ledger == [] and len(rows) == len(pages)
    assert all(r["html"] == bodies[r["warc_record_id"]] for r in rows)


def test_a_changed_block_in_a_plain_file_fails_its_digest(tmp_path):
    data = bytearray(b"".join([warcinfo(), response(0), response(1)]))
    data[data.index(b"page 0") + 2] ^= 0x20  # "page" -> "pAge": same length, framing intact
    rows, ledger, _ = read(tmp_path, "flip.warc", bytes(data))
    assert [r["id"][-1] for r in rows] == ["1"] and [(r["reason"], r["id"][-1]) for r in ledger] == [("warc:digest-mismatch", "0")]


def test_mutated_files_never_crash_and_per_record_gzip_never_yields_a_wrong_record():
    """Seeded random damage (cuts, inserted junk, deletions, duplicated stretches, bit flips):
    the reader ends, raises nothing but NotWarc, and from per-record gzip files (the Common Crawl
    layout: every record under its own CRC) every record it yields is one of the originals,
    byte for byte. (A plain or whole-file gzip cannot protect WARC headers: a changed header
    that still frames is read as written; blocks are checked by their digest.)"""
    import random

    records = captures(4) + [conversion(9, "文字")]
    original = {it.record_id: (it.warc_type, it.url, it.payload) for it in warc.iter_records(io.BytesIO(b"".join(records)))}
    layouts = {"gz": per_record(records), "plain": b"".join(records), "whole": gzip.compress(b"".join(records), mtime=0)}
    rng = random.Random(13)
    for trial in range(600):
        kind = rng.choice(sorted(layouts))
        data = bytearray(layouts[kind])
        for _ in range(rng.randint(1, 3)):
            op, i = rng.choice(["cut", "insert", "delete", "dup", "flip"]), rng.randrange(len(data) or 1)
            if op == "cut":
                del data[i:]
            elif op == "insert":
                data[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
            elif op == "delete":
                del data[i : i + rng.randint(1, 300)]
            elif op == "dup":
                data[i:i] = data[i : i + rng.randint(1, 500)]
            elif data:
                data[i] ^= 1 << rng.randrange(8)
        try:
            items = list(warc.iter_records(io.BytesIO(bytes(data))))
        except warc.NotWarc:
            continue
        assert all(isinstance(it, (warc.WarcRecord, warc.WarcProblem)) for it in items)
        if kind == "gz":
            got = [(it.record_id, (it.warc_type, it.url, it.payload)) for it in items if isinstance(it, warc.WarcRecord)]
            assert all(original.get(rid) == value for rid, value in got), (trial, got)
