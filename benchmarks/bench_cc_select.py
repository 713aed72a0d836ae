"""Bytes moved by a zh-selected ``commoncrawl`` run vs a whole-file run, on a Common Crawl-shaped mirror.

    nice python benchmarks/bench_cc_select.py                    # the table of docs/web-sources.md
    nice python benchmarks/bench_cc_select.py --scale 4 --files 8 --zh-share 0.05

The mirror (tests/support/ccmirror.py, on loopback) holds the real pages of
``../shared/corpora/web`` (21 Chinese, 64 English; synthetic stand-ins when absent), copied
``--scale`` times under new URLs, plus filler pages in English, German, French, Spanish,
Russian, Japanese and Portuguese so that Chinese is ``--zh-share`` of the captures (Common Crawl:
a few percent), written as per-record-gzipped WARC files with a Parquet URL index (sorted by
SURT key, several row groups per file) like the real one.

Three runs of the source alone, each with an empty cache, side by side:

* ``whole``: every WARC file downloaded (what a reader without the index must do);
* ``select zho``: ``select: {languages: [zho]}``: the index scanned (projected columns, ranged
  reads), then only the selected records fetched by byte range;
* ``select zho, max_gap``: the same with ranges closer than ``--gap`` bytes coalesced.

Bytes are counted by the server (body bytes sent, by kind of file) and by the client (the
source's provenance ``bytes_moved``); both are printed. Records/s is rows the source wrote per
second of wall time (one worker).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from pipeline.exec.executors import LocalExecutor  # noqa: E402
from pipeline.run.load import load_manifest  # noqa: E402
from pipeline.run.runner import run_manifest  # noqa: E402
from tests.support.ccmirror import CRAWL, CCMirrorServer, build_ccmirror, build_pages  # noqa: E402


def mirror_pages(scale: int, zh_share: float, seed: int):
    base = build_pages(filler=0, seed=seed)
    docs = [p for p in base if p.key not in ("pdf", "png", "redirect", "404")]
    extras = [p for p in base if p.key in ("pdf", "png", "redirect", "404")]
    pages = []
    for k in range(scale):
        for p in docs:
            url = p.url if k == 0 else p.url.replace("://", f"://c{k}.", 1)
            pages.append(dataclasses.replace(p, url=url, key=f"{p.key}#{k}"))
    n_zh = sum(p.lang == "zho" for p in pages)
    target = int(n_zh / zh_share)
    filler = max(0, target - len(pages) - len(extras))
    pages += [p for p in build_pages(filler=filler, seed=seed + 1) if p.key.startswith("filler-")]
    pages += extras
    random.Random(seed).shuffle(pages)
    return pages


def run_source(url: str, work: Path, name: str, **fields) -> tuple[dict, float, int]:
    src = {"name": "cc", "kind": "commoncrawl", "mirror": url, "crawl": CRAWL, **fields}
    m = work / f"{name}.yaml"
    m.write_text(json.dumps({"name": "bench", "cache_dir": str(work / f"cache-{name}"), "sources": [src]}), encoding="utf-8")
    console = Console(quiet=True)
    t0 = time.perf_counter()
    with LocalExecutor(workers=1, console=console) as ex:
        run_manifest(load_manifest(m), work / f"out-{name}", ex, console, progress=False)
    dt = time.perf_counter() - t0
    prov = json.loads((work / f"out-{name}" / "provenance.json").read_text())["sources"]["cc"]
    stats = json.loads((work / f"out-{name}" / "stages" / "cc" / "stats.json").read_text())
    return prov, dt, stats["out"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=4, help="copies of the real pages (distinct URLs)")
    ap.add_argument("--zh-share", type=float, default=0.05, help="share of captures in Chinese")
    ap.add_argument("--files", type=int, default=8, help="WARC files in the crawl")
    ap.add_argument("--index-parts", type=int, default=4)
    ap.add_argument("--row-group", type=int, default=256, help="index rows per row group")
    ap.add_argument("--gap", type=int, default=4096, help="max_gap of the coalescing run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_cc_") as tmp:
        work = Path(tmp)
        pages = mirror_pages(args.scale, args.zh_share, args.seed)
        info = build_ccmirror(work / "mirror", pages, n_files=args.files, index_parts=args.index_parts, row_group_rows=args.row_group, seed=args.seed)
        resp = info.responses()
        zh = info.selected(("zho",))
        zh_bytes = sum(r.length for _, r in zh)
        index_bytes = sum(info.index_sizes.values())
        print(f"mirror: {len(info.files)} WARC files, {info.warc_bytes:,} bytes; {len(resp):,} captures, {len(zh):,} selected zho "
              f"({len(zh) / len(resp):.1%} of captures, {zh_bytes / info.warc_bytes:.1%} of WARC bytes); URL index {index_bytes:,} bytes in {len(info.index_paths)} files")
        results = []
        with CCMirrorServer(work / "mirror") as server:
            for name, fields in (("whole", {}), ("select zho", {"select": {"languages": ["zho"]}}), (f"select zho, max_gap {args.gap}", {"select": {"languages": ["zho"], "max_gap": args.gap}})):
                server.reset_log()
                prov, dt, n = run_source(server.url, work, name.split(",")[0].replace(" ", "-") + ("-gap" if "gap" in name else ""), **fields)
                server.wait_idle()
                reqs = server.requests
                warc = sum(r["bytes_sent"] for r in reqs if r["path"].endswith(".warc.gz"))
                index = sum(r["bytes_sent"] for r in reqs if r["path"].endswith(".parquet"))
                total = sum(r["bytes_sent"] for r in reqs)
                results.append((name, n, dt, warc, index, total, prov["bytes_moved"]["total"], len(reqs)))
        print()
        print("| run | records | s | records/s | WARC bytes | index bytes | all bytes (server) | client bytes_moved | requests |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, n, dt, warc, index, total, client, nreq in results:
            print(f"| {name} | {n:,} | {dt:.2f} | {n / dt:,.0f} | {warc:,} | {index:,} | {total:,} | {client:,} | {nreq:,} |")
        whole = results[0][5]
        print()
        for name, n, dt, warc, index, total, client, nreq in results[1:]:
            print(f"{name}: {total / whole:.2%} of the whole-file run's bytes ({whole / total:.1f}x fewer); "
                  f"records {warc / results[0][3]:.2%}, index {index / whole:.2%}; zho records returned {n} of {len(zh)} expected")


if __name__ == "__main__":
    main()
