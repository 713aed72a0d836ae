"""What every task does around a stage's function, on whichever executor runs it: call it,
check its accounting, then write its completion marker (the resume unit) after its parts."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.common import storage
from pipeline.common.errors import StageError


def task_entry(fn: Callable[..., dict], node_dir: str, index: int, args: tuple, prefix: str = "") -> dict:
    stats = fn(*args)
    if not isinstance(stats, dict):
        raise StageError(f"task function {fn.__name__} returned {type(stats).__name__}, expected a stats dict")
    check_accounting(stats, f"{Path(node_dir).name} {prefix}partition {index}")
    storage.atomic_write_json(Path(node_dir) / "_tasks" / f"{prefix}part-{index:05d}.json", stats)
    return stats


def check_accounting(stats: dict, where: str) -> None:
    """Documents in (+ copies a stage adds, ``added``: mix's repeats) = kept + removed, always:
    nothing disappears without a ledger entry."""
    added = stats.get("added", 0)
    if {"in", "out", "removed"} <= stats.keys() and stats["in"] + added != stats["out"] + stats["removed"]:
        raise StageError(
            f"accounting mismatch: {stats['in']} documents in" + (f" + {added} added" if added else "") + f", {stats['out']} kept + {stats['removed']} removed",
            where=where,
            hint="this is a bug in the stage: every dropped document must be written to the removal ledger",
        )
