"""Read a run's removal ledger: counts by node and reason, and sampled removed documents."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pipeline.common.errors import PipelineError


def ledger_frame(out_dir: Path, node: str | None = None) -> pl.LazyFrame:
    stages = Path(out_dir) / "stages"
    if not stages.is_dir():
        raise PipelineError("no stages/ folder: not the output of `pipeline run`", where=str(out_dir), hint="give the --out directory of a run")
    nodes = [node] if node else sorted(p.name for p in stages.iterdir() if p.is_dir())
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
    return ledger_frame(out_dir, node).group_by("node", "reason").agg(pl.len().alias("documents")).sort(["node", "documents", "reason"], descending=[False, True, False]).collect()


def samples(out_dir: Path, node: str | None = None, reason: str | None = None, k: int = 5, seed: int = 0) -> pl.DataFrame:
    frame = ledger_frame(out_dir, node)
    if reason:
        frame = frame.filter(pl.col("reason").str.starts_with(reason))
    df = frame.collect()
    if df.height > k:
        df = df.sample(n=k, seed=seed, shuffle=False).sort("id")
    return df


def funnel(out_dir: Path) -> list[dict]:
    rows = []
    for stats_file in sorted((Path(out_dir) / "stages").glob("*/stats.json")):
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
        rows.append({"node": stats_file.parent.name, "in": stats.get("in"), "out": stats.get("out"), "removed": stats.get("removed")})
    return rows
