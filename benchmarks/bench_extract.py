"""Extraction benchmark: our MediaWiki reader + wikitext converter vs the naive baseline.

Side by side, one process, same pages:
  * ours:     pipeline.io.formats.mediawiki_xml (streaming page reader) + wikitext_to_text
  * baseline: mwparserfromhell.parse(text).strip_code() -- what most scripts do
Reports pages/s and MB/s (UTF-8 wikitext) per core, the ratio, and the fraction of outputs
with markup leftovers ({{ [[ -{ <ref ''' {| Category: thumb|).

    python benchmarks/bench_extract.py [--shared ../shared] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mwparserfromhell  # noqa: E402

from pipeline.io.formats import mediawiki_xml as mx  # noqa: E402
from pipeline.io.formats.wikitext import wikitext_to_text  # noqa: E402

LEFTOVERS = ("{{", "[[", "-{", "<ref", "'''", "{|", "Category:", "thumb|")
FILES = ("enwiki-sample-multistream.xml.bz2", "jawiki-truncated-100k.xml.xz", "enwiki-table-markup.xml.bz2")


def load(path: Path) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    texts = [p["text"] for kind, p in mx.iter_pages(mx.iter_text(mx.iter_compressed(path))) if kind == "page" and p["ns"] == 0 and p["redirect"] is None]
    return texts, time.perf_counter() - t0


def timed(fn, texts, repeat):
    best, outs = float("inf"), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        outs = [fn(t) for t in texts]
        best = min(best, time.perf_counter() - t0)
    return best, outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    dumps = Path(args.shared) / "corpora" / "wikidumps"
    if not dumps.is_dir():
        sys.exit(f"shared corpora not found at {dumps}")
    rows = []
    for name in FILES:
        texts, read_s = load(dumps / name)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        ours_s, ours = timed(wikitext_to_text, texts, args.repeat)
        base_s, base = timed(lambda t: mwparserfromhell.parse(t).strip_code(), texts, args.repeat)
        dirty = lambda outs: sum(any(m in o for m in LEFTOVERS) for o in outs) / max(1, len(outs))
        rows.append((name, len(texts), mb, read_s, ours_s, base_s, dirty(ours), dirty(base)))
    print("| file | pages | MB | read+parse XML MB/s | ours pages/s | ours MB/s | baseline pages/s | baseline MB/s | ours/baseline speed | leftovers ours | leftovers baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, mb, read_s, ours_s, base_s, d_ours, d_base in rows:
        print(f"| {name} | {n} | {mb:.2f} | {mb / read_s:.1f} | {n / ours_s:.0f} | {mb / ours_s:.2f} | {n / base_s:.0f} | {mb / base_s:.2f} | {base_s / ours_s:.2f}x | {d_ours:.1%} | {d_base:.1%} |")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; one process (one core); best of {args.repeat}")


if __name__ == "__main__":
    main()
