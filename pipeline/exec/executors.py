"""Executors run a stage's tasks; stages never see which one.

An executor takes a list of ``(function, args)`` calls (module-level functions, so they
pickle) and yields ``(index, result)`` as calls finish. The local executor uses a process
pool sized to the machine; ``workers=1`` runs in-process (handy for debugging). The Dask
executor (``pipeline.exec.dask_executor``) runs them on a ``distributed`` cluster;
``pipeline.exec.factory.make_executor`` picks one by name.

Besides ``map``, an executor offers ``shuffle``: range-partition the rows of Parquet files by an
integer column. Global phases (dedup's bucketing) call it instead of hand-made exchange files;
the local executor implements it as tasks that read each input's slice, the Dask executor as a
``dask.dataframe`` shuffle. Both write the same bytes.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Call = tuple[Callable[..., Any], tuple]
# rows of Executor.components' outputs: a node, its component's smallest node, the component's size
COMPONENT_SCHEMA = pa.schema([("node", pa.int64()), ("label", pa.int64()), ("size", pa.int64())])


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*args)


def make_progress(console=None, transient: bool = False, show: bool = True) -> Progress:
    """A progress bar; ``show=False`` (``--no-progress``) prints nothing at all (an idle live
    display would still print an empty line when it stops)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not show,
    )


class Executor:
    name = "base"
    workers = 1

    def map(self, calls: list[Call], desc: str = "", progress: bool = True) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def attach_stores(self, out, cache=None) -> None:
        """The run's output (and download cache) live in object stores (``RemoteDir``s): executors
        whose workers may not see the runner's files exchange them through the stores. The local
        executor's workers are on this machine: nothing to do."""

    def detach_stores(self) -> None:
        pass

    def shuffle(self, inputs: list[str], key: str, bounds: list[int], dest: str, sort_by: list[str] | None = None, desc: str = "shuffle", progress: bool = True) -> list[str]:
        """Range-partition the rows of the Parquet files ``inputs`` on the integer column ``key``.

        Output ``s`` (``dest/shard-s.parquet``) holds every input row with ``bounds[s] <= key <
        bounds[s + 1]``, sorted by ``sort_by`` (default ``[key]``; rows equal on every sort column
        must be identical for the bytes to be reproducible), in the first input's schema. Files are
        written atomically and an existing one is reused (resume). Inputs sorted by ``key`` make
        the local version read only the row groups it needs. Returns the output paths."""
        outs, todo = _shuffle_outputs(dest, len(bounds) - 1)
        if todo:
            calls = [(_range_shard, (inputs, key, bounds[s], bounds[s + 1], sort_by or [key], outs[s])) for s in todo]
            for _ in self.map(calls, desc=desc, progress=progress):
                pass
        return outs

    def components(self, edges: list[str], bounds: list[int], dest: str, desc: str = "components", progress: bool = True) -> tuple[list[str], dict]:
        """Connected components of the graph whose edges are the (u, v) int64 rows of the Parquet
        files ``edges``, over the nodes ``bounds[0] .. bounds[-1] - 1``.

        Output ``s`` (``dest/shard-s.parquet``, ``COMPONENT_SCHEMA``) lists every node in
        ``[bounds[s], bounds[s + 1])`` that is in a component of 2 or more nodes, sorted by node,
        with its component's smallest node (``label``) and size; the other nodes are alone. Returns
        the output paths and a few statistics. Here: a streamed union-find in this process, with
        one label per node (``pipeline.text.minhash.connected_components``)."""
        from pipeline.text import minhash as mh

        n = bounds[-1]

        def chunks():
            for path in edges:
                t = pq.read_table(path, columns=["u", "v"])
                yield t["u"].to_numpy(), t["v"].to_numpy()

        labels, passes, hooks = mh.connected_components(n, chunks)
        sizes = np.bincount(labels, minlength=n).astype(np.int32)
        outs = []
        for s in range(len(bounds) - 1):
            lo, hi = bounds[s], bounds[s + 1]
            size = sizes[labels[lo:hi]]
            nodes = np.flatnonzero(size > 1)
            table = pa.table({"node": nodes + lo, "label": labels[lo:hi][nodes].astype(np.int64), "size": size[nodes].astype(np.int64)}, schema=COMPONENT_SCHEMA)
            outs.append(str(Path(dest) / f"shard-{s:05d}.parquet"))
            write_sorted_shard(table, ["node"], outs[-1], COMPONENT_SCHEMA)
        return outs, {"union_find_passes": passes, "union_find_hooks": hooks, "union_find_array_mb": round((labels.nbytes + sizes.nbytes) / 1e6, 1)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int | None = None, console=None):
        self.workers = max(1, workers or available_cores())
        self.console = console
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: workers do not inherit the parent's threads (progress refresh, HTTP pools).
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def map(self, calls: list[Call], desc: str = "", progress: bool = True) -> Iterator[tuple[int, Any]]:
        if not calls:
            return
        with make_progress(self.console, transient=False, show=progress) as bar:
            task = bar.add_task(desc, total=len(calls), visible=progress)
            if self.workers == 1 or len(calls) == 1:
                for i, (fn, args) in enumerate(calls):
                    result = fn(*args)
                    bar.advance(task)
                    yield i, result
                return
            pool = self._get_pool()
            futures = {pool.submit(_call, fn, args): i for i, (fn, args) in enumerate(calls)}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        exc = fut.exception()
                        if exc is not None:
                            raise exc
                        bar.advance(task)
                        yield futures[fut], fut.result()
            finally:
                for fut in pending:
                    fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _shuffle_outputs(dest: str, n: int) -> tuple[list[str], list[int]]:
    outs = [str(Path(dest) / f"shard-{s:05d}.parquet") for s in range(n)]
    return outs, [s for s in range(n) if not Path(outs[s]).exists()]


def _range_shard(inputs: list[str], key: str, lo: int, hi: int, sort_by: list[str], out: str) -> int:
    """One output of the local shuffle: the rows of every input with lo <= key < hi."""
    import pyarrow.compute as pc

    schema = pq.read_schema(inputs[0])
    typ = schema.field(key).type
    top = np.iinfo(typ.to_pandas_dtype()).max
    cond = pc.field(key) >= pa.scalar(lo, typ)
    if hi <= top:
        cond = cond & (pc.field(key) < pa.scalar(hi, typ))
    pieces = []
    for path in inputs:
        table = pq.read_table(path, filters=cond)  # row-group statistics skip what is out of range
        if table.num_rows:
            pieces.append(table)
    table = pa.concat_tables(pieces) if pieces else schema.empty_table()
    write_sorted_shard(table, sort_by, out, schema)
    return table.num_rows


def write_sorted_shard(table: pa.Table, sort_by: list[str], out: str, schema: pa.Schema) -> None:
    """Sort (stable, lexicographic on ``sort_by``) and write atomically: both executors end here."""
    from pipeline.common import storage

    table = table.select(schema.names).cast(schema)
    if table.num_rows:
        order = np.lexsort([table[c].to_numpy() for c in reversed(sort_by)])
        table = table.take(pa.array(order))
    storage.write_parquet(table, Path(out))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
