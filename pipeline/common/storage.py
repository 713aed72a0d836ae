"""Atomic writes and the on-disk layout of a node's output.

Every file is written to a temporary name beside its target and renamed into place,
so a reader (or a resumed run) never sees half a file.

    <out>/stages/<node>/
        _FINGERPRINT          fingerprint the parts below were computed for
        part-00000.parquet    kept rows, one file per task (partition)
        removed/part-00000.parquet   the removal ledger: rows dropped, with reasons
        _tasks/part-00000.json       per-task stats, written after the task's parts
        stats.json            node totals
        _COMPLETE             written last; holds the fingerprint
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.errors import PipelineError

PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path, len(data)) from None
        raise
    os.replace(tmp, path)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, also as Arrow reports it (an OSError whose errno is unset, the code in the text)."""
    return isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc))


def disk_full(path: Path, needed: int | None = None, done: int | None = None) -> PipelineError:
    """The error for ENOSPC: which file, how many bytes it needed, how much the disk has free."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    need = f"; it needs {needed:,} bytes" if needed is not None else ""
    wrote = f" after {done:,} bytes" if done is not None else ""
    return PipelineError(
        f"no space left on the device{wrote} ({free} on the disk holding {folder}){need}",
        where=str(path),
        hint="free space on that disk, or point the output (--out) or the download cache (GRIST_CACHE / cache_dir) at a larger one; running again resumes",
    )


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    pq.write_table(table, tmp, row_group_size=8192, **PARQUET_OPTIONS)
    os.replace(tmp, path)


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns, memory_map=True)


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def confined(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that would escape ``root`` (``..``, absolute paths, links)."""
    root = Path(root).resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"path {relative!r} escapes {root}")
    return target


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def file_digests(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}
