"""What a finished run keeps on disk (``retain:`` in the manifest).

``retain: all`` (the default) keeps every node's parts: changing a parameter later re-runs only
that node and the nodes after it. ``retain: outputs`` releases the parts of every node once the
run has finished (every consumer complete, ``data/`` and the published artifacts written):
``out/`` then holds little more than ``data/``, ``tokens/``, the ledgers and the statistics.
Each released node keeps

* ``removed/`` (the ledger), ``stats.json``, ``_record.json``, ``_COMPLETE``: the audit trail;
* ``summary/``: its parts without the text (every other column, the text's length in
  ``text_chars``) and the text of a few documents per source, so that cards, the report and
  ``pipeline inspect`` are the same as before;
* ``_RELEASED``: what was freed.

A later run that must re-run a node whose input was released re-runs that input first (and so on
upstream, from the download cache): the price of a small ``out/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipeline.common import storage
from pipeline.core.dag import Dag
from pipeline.core.stage import RELEASED, SUMMARY_DIR

SUMMARY_TEXTS = 20  # documents per source whose text the summary keeps (the report's samples)


def needs_parts(dag: Dag, out_dir: Path, run_nodes: set[str], export_stale: bool) -> set[str]:
    """The nodes to run: ``run_nodes`` (not complete) plus every released node whose parts one of
    them (or a stale ``data/`` export) needs, upstream until parts exist."""
    todo = set(run_nodes)
    queue = list(run_nodes) + ([dag.output] if export_stale and is_released(out_dir, dag.output) else [])
    todo.update(queue)
    while queue:
        name = queue.pop()
        for inp in dag.nodes[name].inputs:
            if inp not in todo and is_released(out_dir, inp):
                todo.add(inp)
                queue.append(inp)
    return todo


def is_released(out_dir: Path, node: str) -> bool:
    return (out_dir / "stages" / node / RELEASED).exists()


def release_all(out_dir: Path, dag: Dag, console) -> dict:
    """Release the parts of every node of a finished run. Returns bytes freed per node."""
    freed = {}
    for name in dag.order:
        n = release(out_dir / "stages" / name)
        if n:
            freed[name] = n
    if freed:
        console.log(f"retain: outputs: released the parts of {len(freed)} node(s), {sum(freed.values()) / 1e6:,.1f} MB freed (ledgers, statistics and summaries kept)")
    return freed


def release(node_dir: Path) -> int:
    """Summarize then delete one node's parts; returns the bytes freed (0: nothing to release)."""
    parts = sorted(node_dir.glob("part-*.parquet"))
    if not parts:
        return 0
    summary = node_dir / SUMMARY_DIR
    storage.remove_tree(summary)
    keep = _texts_to_keep(parts)
    for part in parts:
        storage.write_parquet(_summarize(part, keep), summary / part.name)
    freed = sum(p.stat().st_size for p in parts)
    storage.atomic_write_json(node_dir / RELEASED, {"parts": len(parts), "bytes": freed, "released_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for part in parts:  # the marker first: a half-released node is never taken for a whole one
        part.unlink()
    return freed


def _texts_to_keep(parts: list[Path]) -> set[str]:
    """Ids of SUMMARY_TEXTS documents per source, spread over the sorted ids (deterministic)."""
    cols = pq.read_schema(parts[0]).names
    if "id" not in cols:
        return set()
    keys = ["source"] if "source" in cols else []
    ids = pl.scan_parquet(parts).select(*keys, "id")
    rank = pl.int_range(pl.len()).over(keys) if keys else pl.int_range(pl.len())
    count = pl.len().over(keys) if keys else pl.len()
    k = SUMMARY_TEXTS
    picked = ids.sort([*keys, "id"]).filter(((rank + 1) * k) // count != (rank * k) // count).collect()
    return set(picked["id"].to_list())


def _summarize(part: Path, keep: set[str]):
    table = pl.read_parquet(part)
    if "text" not in table.columns:
        return table.to_arrow()
    chars = pl.col("text").str.len_chars().cast(pl.Int64).alias("text_chars")
    text = pl.when(pl.col("id").is_in(list(keep))).then(pl.col("text")).otherwise(None).alias("text") if "id" in table.columns else pl.lit(None, pl.String).alias("text")
    return table.with_columns(chars, text).to_arrow()
