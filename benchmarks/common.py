"""Shared helpers for the benchmarks: corpora from ../shared, timing, peak memory, tables."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))


def require_shared() -> Path:
    if not (SHARED / "corpora").is_dir():
        sys.exit(f"shared corpora not found at {SHARED}: benchmarks need ../shared")
    return SHARED / "corpora"


def zh_articles() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((require_shared() / "zhwiki-articles").glob("*.txt"))]


def en_articles() -> list[str]:
    from pipeline.io.formats import mediawiki_xml as mx
    from pipeline.io.formats.wikitext import wikitext_to_text

    path = require_shared() / "wikidumps" / "enwiki-sample-multistream.xml.bz2"
    return [wikitext_to_text(p["text"]) for kind, p in mx.iter_pages(mx.iter_text(mx.iter_compressed(path))) if kind == "page" and p["ns"] == 0 and p["redirect"] is None]


def best_time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import os
    import platform

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
