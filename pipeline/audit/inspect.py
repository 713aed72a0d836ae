"""Read a run's removal ledger: counts by node and reason, and sampled removed documents."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml

from pipeline.common.errors import PipelineError


def topological(nodes: list[dict], declared: list[str]) -> list[dict]:
    """Nodes in DAG order, ties broken by manifest order (provenance.json stores them sorted by name)."""
    rank = {name: i for i, name in enumerate(declared)}
    by_name = {n["name"]: n for n in nodes}
    done: list[dict] = []
    seen: set[str] = set()
    pending = sorted(by_name, key=lambda k: (rank.get(k, len(rank)), k))
    while pending:
        ready = next((k for k in pending if all(i in seen or i not in by_name for i in by_name[k]["inputs"])), pending[0])
        pending.remove(ready)
        seen.add(ready)
        done.append(by_name[ready])
    return done


def node_order(out_dir: Path) -> list[str]:
    """The run's nodes in pipeline order (DAG order, ties in manifest order), from what each
    finished node recorded (``_record.json``: its inputs) and the lock file (manifest order);
    an interrupted run's nodes without a record come last, by name."""
    stages = Path(out_dir) / "stages"
    if not stages.is_dir():
        raise PipelineError("no stages/ folder: not the output of `pipeline run`", where=str(out_dir), hint="give the --out directory of a run")
    declared: list[str] = []
    try:
        lock = yaml.safe_load((Path(out_dir) / "manifest.lock.yaml").read_text(encoding="utf-8")) or {}
        declared = [s.get("name") for s in lock.get("sources") or []] + [s.get("name") for s in lock.get("stages") or []]
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    nodes = []
    for d in sorted(p for p in stages.iterdir() if p.is_dir()):
        try:
            inputs = json.loads((d / "_record.json").read_text(encoding="utf-8")).get("inputs") or []
        except (OSError, ValueError):
            inputs = []
        nodes.append({"name": d.name, "inputs": inputs})
    return [n["name"] for n in topological(nodes, declared)]


def ledger_frame(out_dir: Path, node: str | None = None) -> pl.LazyFrame:
    stages = Path(out_dir) / "stages"
    nodes = [node] if node else node_order(out_dir)
    frames = []
    for name in nodes:
        files = sorted((stages / name / "removed").glob("part-*.parquet"))
        if node and not (stages / name).is_dir():
            raise PipelineError(f"no node named {name!r}", where=str(stages), hint=f"nodes: {', '.join(sorted(p.name for p in stages.iterdir()))}")
        if files:
            frames.append(pl.scan_parquet(files))
    if not frames:
        return pl.LazyFrame(schema={"id": pl.String, "source": pl.String, "title": pl.String, "node": pl.String, "reason": pl.String, "signals": pl.String, "text": pl.String})
    return pl.concat(frames)


def reason_counts(out_dir: Path, node: str | None = None) -> pl.DataFrame:
    """Removed documents per node (pipeline order) and reason (most frequent first)."""
    rank = {name: i for i, name in enumerate(node_order(out_dir))}
    counts = ledger_frame(out_dir, node).group_by("node", "reason").agg(pl.len().alias("documents")).collect()
    return counts.with_columns(pl.col("node").replace_strict(rank, default=len(rank), return_dtype=pl.Int64).alias("_rank")).sort(["_rank", "documents", "reason"], descending=[False, True, False]).drop("_rank")


def samples(out_dir: Path, node: str | None = None, reason: str | None = None, k: int = 5, seed: int = 0) -> pl.DataFrame:
    frame = ledger_frame(out_dir, node)
    if reason:
        frame = frame.filter(pl.col("reason").str.starts_with(reason))
    df = frame.collect()
    if df.height > k:
        df = df.sample(n=k, seed=seed, shuffle=False).sort("id")
    return df


def funnel(out_dir: Path) -> list[dict]:
    """Documents in, out and removed per finished node, in pipeline order."""
    rows = []
    for name in node_order(out_dir):
        stats_file = Path(out_dir) / "stages" / name / "stats.json"
        if stats_file.is_file():
            stats = json.loads(stats_file.read_text(encoding="utf-8"))
            rows.append({"node": name, "in": stats.get("in"), "out": stats.get("out"), "removed": stats.get("removed")})
    return rows
