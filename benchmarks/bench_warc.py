"""Reading WARC files: FastWARC vs warcio, alone and under our framing, per core; peak memory.

    nice python benchmarks/bench_warc.py                      # 2,000 captures, the tables of docs/warc.md
    nice python benchmarks/bench_warc.py --records 500 --repeat 1 --rss 200,800

Input: a WARC file as Common Crawl writes it (one gzip member per record; ``warcinfo``, then
``request`` + ``response`` + ``metadata`` per capture) whose responses are the real pages of
``../shared/corpora/web`` (85 pages, cycled, each capture with its own URL and record id; 1.6 MB
of HTML per 85), or synthetic pages when that folder is absent. Every reader gets the same file
and must hand over, per response: URL, record id, HTTP Content-Type and status, and the payload
bytes (encodings decoded).

Readers, one process, one thread (per-core figures), best of ``--repeat``:

* ``fastwarc``: ``fastwarc.warc.ArchiveIterator`` (its own gzip and parsing, C++), responses only.
* ``warcio``: ``warcio.ArchiveIterator``, responses only, ``content_stream().read()``.
* ``grist+fastwarc`` / ``grist+warcio``: ``pipeline.io.formats.warc.iter_records`` with that
  backend: our framing (gzip member by member, each record checked: complete member, Content-Length
  that ends at CRLF CRLF and the next record) with the library parsing each document record.
* ``local task``: the ``local`` source's task on the file (``read_warc_task``: grist+fastwarc and
  the Parquet part written in batches).

Then **damage**: what each reader does with a file whose last gzip member is cut short, a
record with a Content-Length 300 bytes too long / 200 bytes too short, and junk between records
(responses returned, and whether it said anything). And **memory**: the peak RSS of a fresh
process running the ``local`` task on files of two sizes (``--rss``, in captures).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, table  # noqa: E402
from tests.support.ccmirror import build_pages, gzip_member, warc_record  # noqa: E402


def _capture(i: int, page, date: str) -> list[bytes]:
    body = page.body
    http = f"HTTP/1.1 200 OK\r\nContent-Type: {page.content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    url = f"{page.url}?capture={i}"
    common = [("WARC-Date", date), ("WARC-Target-URI", url)]
    return [
        warc_record("request", [("WARC-Record-ID", f"<urn:uuid:10000000-0000-4000-8000-{i:012d}>"), *common], f"GET /{i} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()),
        warc_record("response", [("WARC-Record-ID", f"<urn:uuid:00000000-0000-4000-8000-{i:012d}>"), *common, ("Content-Type", "application/http; msgtype=response")], http),
        warc_record("metadata", [("WARC-Record-ID", f"<urn:uuid:20000000-0000-4000-8000-{i:012d}>"), *common], b"fetchTimeMs: 120\r\n"),
    ]


def build_file(path: Path, captures: int, pages) -> dict:
    """Write the benchmark WARC a record at a time; returns its sizes."""
    html = 0
    with open(path, "wb") as fh:
        fh.write(gzip_member(warc_record("warcinfo", [("WARC-Record-ID", "<urn:uuid:00000000-0000-4000-8000-ffffffffffff>")], b"isPartOf: CC-MAIN-2024-33\r\n")))
        for i in range(captures):
            page = pages[i % len(pages)]
            html += len(page.body)
            for rec in _capture(i, page, "2024-08-02T23:45:08Z"):
                fh.write(gzip_member(rec))
    return {"captures": captures, "file_bytes": path.stat().st_size, "html_bytes": html}


# ---- readers: each returns the number of responses and payload bytes -----------------------------


def read_fastwarc(path: Path) -> tuple[int, int]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = size = 0
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True, auto_decode="all"):
            _ = (rec.headers.get("WARC-Target-URI"), rec.record_id, rec.http_headers.get("Content-Type"), rec.http_headers.status_code)
            size += len(rec.reader.read())
            n += 1
    return n, size


def read_warcio(path: Path) -> tuple[int, int]:
    from warcio.archiveiterator import ArchiveIterator

    n = size = 0
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh):
            if rec.rec_type != "response":
                continue
            _ = (rec.rec_headers.get_header("WARC-Target-URI"), rec.rec_headers.get_header("WARC-Record-ID"), rec.http_headers.get_header("Content-Type"), rec.http_headers.get_statuscode())
            size += len(rec.content_stream().read())
            n += 1
    return n, size


def read_grist(path: Path, backend: str) -> tuple[int, int]:
    from pipeline.io.formats import warc

    n = size = 0
    for item in warc.iter_records(path, backend=backend):
        if isinstance(item, warc.WarcRecord) and item.warc_type == "response":
            n += 1
            size += len(item.payload or b"")
    return n, size


def read_task(path: Path) -> tuple[int, int]:
    from stages.source_local import read_warc_task

    with tempfile.TemporaryDirectory() as tmp:
        stats = read_warc_task(str(path), "web", "LicenseRef-x", "web", f"{tmp}/p.parquet", f"{tmp}/r.parquet")
        return stats["out"], os.path.getsize(f"{tmp}/p.parquet")


READERS = {
    "fastwarc": read_fastwarc,
    "warcio": read_warcio,
    "grist+fastwarc": lambda p: read_grist(p, "fastwarc"),
    "grist+warcio": lambda p: read_grist(p, "warcio"),
    "local task": read_task,
}


def speed(path: Path, info: dict, repeat: int) -> list[list]:
    rows, base = [], None
    for name, fn in READERS.items():
        best = float("inf")
        for _ in range(repeat):
            t0 = time.process_time()
            n, _ = fn(path)
            best = min(best, time.process_time() - t0)
        base = base or best
        rows.append([name, n, f"{n / best:,.0f}", f"{info['file_bytes'] / best / 1e6:.1f}", f"{info['html_bytes'] / best / 1e6:.1f}", f"{best / base:.2f}"])
    return rows


# ---- damage ---------------------------------------------------------------------------------------


def damaged_files(tmp: Path, pages) -> dict[str, Path]:
    """Five captures each, damaged on the third response."""
    caps = [_capture(i, pages[i % len(pages)], "2024-08-02T23:45:08Z") for i in range(5)]
    members = [[gzip_member(r) for r in cap] for cap in caps]
    flat = lambda ms: b"".join(m for cap in ms for m in cap)  # noqa: E731
    out = {}
    cut = flat(members)
    end_of_3rd_response = len(flat(members[:2])) + len(members[2][0]) + len(members[2][1])
    out["last member cut short"] = cut[: len(flat(members[:2])) + len(members[2][0]) + len(members[2][1]) - 50]
    for label, delta in (("Content-Length 300 too long", 300), ("Content-Length 200 too short", -200)):
        bad = [list(c) for c in members]
        req, resp, meta = caps[2]
        head, _, rest = resp.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        bad[2][1] = gzip_member(head.replace(f"Content-Length: {length}".encode(), f"Content-Length: {length + delta}".encode()) + b"\r\n\r\n" + rest)
        out[label] = flat(bad)
    out["junk between records"] = cut[:end_of_3rd_response] + os.urandom(3000) + cut[end_of_3rd_response:]
    paths = {}
    for i, (label, data) in enumerate(out.items()):
        p = tmp / f"damaged-{i}.warc.gz"
        p.write_bytes(data)
        paths[label] = p
    return paths


def damage(tmp: Path, pages) -> list[list]:
    from pipeline.io.formats import warc

    rows = []
    for label, path in damaged_files(tmp, pages).items():
        row = [label]
        for name in ("fastwarc", "warcio"):
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # warcio prints its warnings there
                    n, _ = READERS[name](path)
                row.append(f"{n} responses, silent")
            except Exception as exc:  # noqa: BLE001 - what the library does is the measurement
                row.append(f"raised {type(exc).__name__}")
        items = list(warc.iter_records(path))
        n = sum(1 for it in items if isinstance(it, warc.WarcRecord) and it.warc_type == "response")
        problems = [it.reason for it in items if isinstance(it, warc.WarcProblem)]
        row.append(f"{n} responses, ledger: {', '.join(problems) or '-'}")
        rows.append(row)
    return rows


# ---- memory ---------------------------------------------------------------------------------------

_RSS_CHILD = """
import sys, tempfile
sys.path.insert(0, sys.argv[2])
from stages.source_local import read_warc_task

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

# the imports' own peak is not the task's: reset the high-water mark to the current RSS (Linux)
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
with tempfile.TemporaryDirectory() as tmp:
    stats = read_warc_task(sys.argv[1], "web", "x", "web", tmp + "/p.parquet", tmp + "/r.parquet")
print(before, status("VmHWM:"), stats["out"])
"""


def memory(tmp: Path, pages, sizes: list[int]) -> list[list]:
    rows = []
    for captures in sizes:
        path = tmp / f"rss-{captures}.warc.gz"
        info = build_file(path, captures, pages)
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), str(REPO)], capture_output=True, text=True, check=True).stdout.split()
        before, peak, n = int(out[0]), int(out[1]), int(out[2])
        rows.append([f"{captures:,}", f"{info['file_bytes'] / 1e6:.1f}", f"{info['html_bytes'] / 1e6:.1f}", n, f"{before / 1024:.0f}", f"{peak / 1024:.0f}"])
        path.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=2000, help="captures (request + response + metadata) in the speed file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rss", default="500,4000", help="captures in the two files whose peak RSS is measured")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    pages = [p for p in build_pages(filler=0) if p.content_type.startswith("text/html")]
    print(f"machine: {machine()}; {len(pages)} distinct pages")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        path = tmp / "bench.warc.gz"
        info = build_file(path, args.records, pages)
        print(f"\nfile: {info['captures']:,} captures ({3 * info['captures'] + 1:,} records), {info['file_bytes'] / 1e6:.1f} MB gzipped per record, {info['html_bytes'] / 1e6:.1f} MB of HTML\n")
        sp = speed(path, info, args.repeat)
        print("speed, one core (CPU seconds of this process, best of %d):\n" % args.repeat)
        print(table(["reader", "responses", "responses/s", "file MB/s", "HTML MB/s", "time vs fastwarc"], sp))
        dm = damage(tmp, pages)
        print("\ndamage (5 captures, the third one damaged):\n")
        print(table(["file", "fastwarc", "warcio", "grist (iter_records)"], dm))
        sizes = [int(x) for x in args.rss.split(",")]
        mem = memory(tmp, pages, sizes)
        print("\npeak RSS of a process running the local task on one file:\n")
        print(table(["captures", "file MB", "HTML MB", "rows", "RSS before the task MB", "peak RSS during it MB"], mem))
    if args.json:
        args.json.write_text(json.dumps({"speed": sp, "damage": dm, "memory": mem}, indent=1))


if __name__ == "__main__":
    main()
