"""Web text end to end, per core: grist vs datatrove on the same WARC files.

    python benchmarks/bench_web.py                       # 4 files x 600 records, both pipelines
    python benchmarks/bench_web.py --files 8 --records 600 --only grist

Input: WARC files (one gzip member per record, as Common Crawl writes them) of the real pages in
``../shared/corpora/web`` (Chinese in GBK/GB2312/GB18030 and UTF-8, English), each page repeated
with its own URL and record id (so every pipeline sees the same bytes and the dedup step has
real duplicates to find, as in a crawl), plus ``request`` and ``metadata`` records as in a
Common Crawl WARC.

The two pipelines, each on ONE worker (one core), same files:

* **grist**: ``pipeline run`` of a manifest: ``commoncrawl`` (the same files served on 127.0.0.1
  with Common Crawl's layout; ``--source local`` reads them from disk) → ``html_extract`` → ``clean``
  (opencc t2s, PII) → ``lid_filter`` (keep zh) → ``quality_filter`` (zh web preset) → ``dedup``
  (exact + MinHash near-duplicates), ``--workers 1``. Its wall time includes the CLI's start, the
  audit files (cards, report) and the export: everything a user waits for.
* **datatrove** (0.10.1, its FineWeb-2 recipe for ``cmn_Hani``): ``WarcReader`` → ``Trafilatura``
  (``favour_precision=True``, its default 1 s timeout per page, as FineWeb) → language ID (datatrove's ``LanguageFilter`` downloads a
  fastText model from the Hub, which is not possible offline here: a ``LambdaFilter`` over
  py3langid's bundled model, keep zh) → FineWeb-2's cmn_Hani filter block (Gopher repetition +
  Gopher quality + FineWeb quality with its thresholds, ``pipeline.text.quality.oracle``) →
  ``JsonlWriter`` → MinHash dedup (its four steps: signatures, buckets, cluster, filter; its hash
  function wrapped to encode UTF-8, as datatrove 0.10.1 hands xxhash 4 a str), all
  with ``LocalPipelineExecutor(tasks=1, workers=1)``, in one process started for the purpose.

datatrove's side needs what its steps import: ``pip install python-magic orjson`` beside the test
extras (python-magic needs the system's libmagic).

Reported: documents in, documents out, wall seconds, records/s, the ratio datatrove / grist, the
peak RSS of each process tree, and how many output documents contain mojibake.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import REPO, machine, require_shared, table

# --------------------------------------------------------------------------------------------
# Input


def build_warcs(out: Path, files: int, records: int, seed: int = 0) -> list[Path]:
    from tests.support.ccmirror import build_pages, gzip_member, warc_record

    pages = build_pages(filler=0, seed=seed)  # the real pages, a PDF, an image, a redirect, a 404
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    n = 0
    for f in range(files):
        path = out / f"CC-MAIN-bench-{f:05d}.warc.gz"
        with open(path, "wb") as fh:
            fh.write(gzip_member(warc_record("warcinfo", [("WARC-Record-ID", f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>"), ("Content-Type", "application/warc-fields")],
                                             b"isPartOf: CC-MAIN-bench\r\nformat: WARC File Format 1.0\r\n")))
            for _ in range(records):
                page = pages[n % len(pages)]
                n += 1
                url = f"{page.url}{'&' if '?' in page.url else '?'}r={n}"
                rid = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>"
                date = "2026-01-15T10:00:00Z"
                head = f"HTTP/1.1 {page.status} {'OK' if page.status == 200 else 'Other'}\r\nContent-Type: {page.content_type}\r\nContent-Length: {len(page.body)}\r\n\r\n".encode("latin-1")
                fh.write(gzip_member(warc_record("request", [("WARC-Record-ID", f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>"), ("WARC-Target-URI", url), ("WARC-Date", date),
                                                             ("Content-Type", "application/http; msgtype=request")], f"GET {url} HTTP/1.1\r\n\r\n".encode())))
                fh.write(gzip_member(warc_record("response", [("WARC-Record-ID", rid), ("WARC-Target-URI", url), ("WARC-Date", date),
                                                              ("Content-Type", "application/http; msgtype=response"),
                                                              ("WARC-Identified-Payload-Type", "text/html")], head + page.body)))
                fh.write(gzip_member(warc_record("metadata", [("WARC-Record-ID", f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>"), ("WARC-Target-URI", url), ("WARC-Date", date),
                                                              ("Content-Type", "application/warc-fields")], b"fetchTimeMs: 120\r\n")))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# The two pipelines

SOURCES = {
    "local": """\
  - name: cc
    kind: local
    paths: [{glob}]
    license: LicenseRef-CommonCrawl-ToU
""",
    "commoncrawl": """\
  - name: cc
    kind: commoncrawl
    crawl: {crawl}
    mirror: {mirror}
""",
}

MANIFEST = """\
name: bench-web
sources:
{source}stages:
  - {{name: extract, stage: html_extract}}
  - {{name: clean, stage: clean, params: {{opencc: t2s, pii: true}}}}
  - {{name: lang, stage: lid_filter, params: {{keep: [zh]}}}}
  - {{name: quality, stage: quality_filter, params: {{preset: {preset}}}}}
  - {{name: dedup, stage: dedup, params: {{exact: true, near: true, threshold: 0.7}}}}
output: dedup
"""


CRAWL = "CC-MAIN-2026-01"


def run_grist(warc_dir: Path, work: Path, preset: str, source: str) -> dict:
    """``source``: ``commoncrawl`` reads the files from a loopback server with Common Crawl's layout
    (``crawl-data/<crawl>/warc.paths.gz``), so the download, its pins and the cache are timed too;
    ``local`` reads them from disk as datatrove does."""
    manifest = work / "bench-web.yaml"
    if source == "commoncrawl":
        import gzip

        from tests.support.mirror import MirrorServer

        root = work / "mirror"
        rel = [f"crawl-data/{CRAWL}/segments/1/warc/{p.name}" for p in sorted(warc_dir.glob("*.warc.gz"))]
        for r, p in zip(rel, sorted(warc_dir.glob("*.warc.gz"))):
            (root / r).parent.mkdir(parents=True, exist_ok=True)
            os.link(p, root / r)
        (root / "crawl-data" / CRAWL / "warc.paths.gz").write_bytes(gzip.compress("".join(r + "\n" for r in rel).encode()))
        server = MirrorServer(root).start()
        src = SOURCES[source].format(crawl=CRAWL, mirror=server.url)
    else:
        server = None
        src = SOURCES[source].format(glob=json.dumps(str(warc_dir / "*.warc.gz")))
    manifest.write_text(MANIFEST.format(source=src, preset=preset))
    try:
        return _run_grist_cli(manifest, work)
    finally:
        if server is not None:
            server.stop()


def _run_grist_cli(manifest: Path, work: Path) -> dict:
    out = work / "out"
    env = dict(os.environ, GRIST_CACHE=str(work / "cache"), PYTHONPATH=str(REPO))
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out), "--workers", "1"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"grist run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    import datasets

    ds = datasets.load_from_disk(str(out / "data"))
    stats = json.loads((out / "stages" / "cc" / "stats.json").read_text()) if (out / "stages" / "cc" / "stats.json").exists() else {}
    return {"wall": wall, "rss_mb": int(proc.stderr.strip().splitlines()[-1]) / 1024, "out_docs": len(ds), "texts": ds["text"],
            "records": stats.get("docs_out")}


DATATROVE = r'''
import sys, time, json
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import WarcReader, JsonlReader
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup import MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig
sys.path.insert(0, sys.argv[3])
from pipeline.text.quality.oracle import fineweb2_zh_filters
import py3langid

warc_dir, work = sys.argv[1], sys.argv[2]

def is_zh(doc):
    lang, _ = py3langid.classify(doc.text)
    return lang == "zh"

cfg = MinhashConfig()  # datatrove's defaults: 5-grams, 14 buckets x 8 hashes
def run(pipeline, name, tasks=1):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=f"{work}/logs/{name}", skip_completed=False).run()

t0 = time.perf_counter()
run([WarcReader(warc_dir, glob_pattern="*.warc.gz"), Trafilatura(favour_precision=True, deduplicate=sys.argv[4] == "on"), LambdaFilter(is_zh),
     *fineweb2_zh_filters(), JsonlWriter(f"{work}/filtered")], "filter")
import xxhash
sig = MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg, language="zh")
sig._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))  # datatrove 0.10.1 passes str; xxhash 4 refuses it
run([JsonlReader(f"{work}/filtered"), sig], "sigs")
run([MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=cfg)], "buckets", tasks=cfg.num_buckets)  # one task per bucket (datatrove requires it), one worker
run([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=cfg)], "cluster")
run([JsonlReader(f"{work}/filtered"), MinhashDedupFilter(input_folder=f"{work}/remove_ids"), JsonlWriter(f"{work}/deduped")], "filter2")
print(json.dumps({"wall_inner": time.perf_counter() - t0}))
'''


def run_datatrove(warc_dir: Path, work: Path, dedup: str) -> dict:
    script = work / "dt.py"
    script.write_text(DATATROVE)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, str(script), str(warc_dir), str(work), str(REPO), dedup]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"datatrove run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    import gzip

    texts = []
    for p in sorted((work / "deduped").glob("*.jsonl.gz")):
        with gzip.open(p, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return {"wall": wall, "rss_mb": int(proc.stderr.strip().splitlines()[-1]) / 1024, "out_docs": len(texts), "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--records", type=int, default=600, help="response records per file")
    ap.add_argument("--only", choices=["grist", "datatrove"], default=None)
    ap.add_argument("--source", choices=["commoncrawl", "local"], default="commoncrawl",
                    help="grist reads the WARC files from a loopback Common Crawl-shaped mirror (default) or from disk")
    ap.add_argument("--preset", default="web-zh", help="grist's quality preset (default web-zh: FineWeb-2 cmn_Hani thresholds)")
    ap.add_argument("--trafilatura-dedup", choices=["on", "off", "both"], default="both",
                    help="datatrove's Trafilatura(deduplicate=...): on is its default (FineWeb's), which drops text segments seen more than twice "
                    "in the worker's stream: with this input's repeated pages that skips most of the work after extraction, so both are run")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = ap.parse_args()
    require_shared()
    sys.path.insert(0, str(REPO))
    from pipeline.text.html import has_mojibake

    work = Path(tempfile.mkdtemp(prefix="bench-web-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        warcs = build_warcs(work / "warc", args.files, args.records)
        size = sum(p.stat().st_size for p in warcs)
        n_in = args.files * args.records
        print(machine())
        print(f"input: {len(warcs)} WARC files, {n_in} response records, {size / 2**20:.1f} MiB gzipped")
        results = {}
        dt_modes = ["on", "off"] if args.trafilatura_dedup == "both" else [args.trafilatura_dedup]
        for name in [*(f"datatrove (trafilatura dedup {m})" for m in dt_modes), "grist"]:
            if args.only and not name.startswith(args.only):
                continue
            sub = work / name.split()[0] / name.split()[-1].rstrip(")")
            shutil.rmtree(sub, ignore_errors=True)
            sub.mkdir(parents=True)
            results[name] = run_grist(work / "warc", sub, args.preset, args.source) if name == "grist" else run_datatrove(work / "warc", sub, name.split()[-1].rstrip(")"))
        rows = []
        for name, r in results.items():
            moji = sum(has_mojibake(t) for t in r["texts"])
            grist = results.get("grist")
            ratio = f"{r['wall'] / grist['wall']:.2f}x" if grist else "-"
            rows.append([name, n_in, r["out_docs"], f"{r['wall']:.1f}", f"{n_in / r['wall']:.0f}", ratio, f"{r['rss_mb']:.0f}", moji])
        print(table(["pipeline (1 worker)", "records in", "docs out", "wall s", "records/s", "wall / grist's", "peak RSS MB", "mojibake docs"], rows))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
