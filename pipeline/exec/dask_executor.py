"""The Dask executor: the same tasks, on a ``distributed`` cluster.

``DaskExecutor(scheduler="tcp://host:8786")`` connects to a running scheduler;
``DaskExecutor(workers=N)`` starts a ``LocalCluster`` of N single-threaded worker processes
(default: one per core) whose memory limits split the memory available at start.

* ``map`` submits one future per call (``pure=False``: every call runs; ``retries``: a task that
  raises is tried again, which is safe because tasks write atomically and deterministically) and
  yields results as they complete, with the local executor's progress bar. A worker that dies is
  replaced by its nanny and its tasks are rescheduled by Dask; a task that keeps killing workers
  or keeps failing cancels the rest and raises a ``StageError`` naming the task. The node is then
  not marked complete, and a re-run resumes from the per-task markers.
* ``shuffle`` is a ``dask.dataframe`` shuffle: ``read_parquet(...).set_index(key,
  divisions=bounds)`` range-partitions the rows (Dask's P2P shuffle on a cluster), and each
  output partition is sorted and written by the same function as in the local executor, so the
  bytes are the same.
* ``components`` (connected components, dedup's clusters) is min-label propagation with
  ``dask.dataframe`` joins and group-bys, range-partitioned like ``shuffle``: no array of one
  label per document in the runner.

* With the output in an object store (``--out s3://…``, ``attach_stores``), workers need not see
  the runner's files: the runner pushes its new files before each phase and pulls after it, and
  tasks run through ``pipeline.exec.task_sync.run_mirrored`` (a worker that sees the runner's working
  copy uses it; one that does not fetches its inputs from the store and uploads its outputs);
  shuffles read their inputs from the store when some worker does not see the runner's files.

Workers must import the ``pipeline`` and ``stages`` packages: install the package where they run
(a ``LocalCluster`` inherits this interpreter's environment; see ``docker/`` for a cluster).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import uuid
from pathlib import Path
from typing import Any, Iterator

import dask
import dask.dataframe as dd
import distributed
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, LocalCluster, as_completed

from pipeline.common.errors import PipelineError, StageError
from pipeline.exec import task_sync
from pipeline.exec.executors import COMPONENT_SCHEMA, Call, Executor, _shuffle_outputs, available_cores, make_progress, write_sorted_shard
from pipeline.io.urls import redact_url

DEFAULT_RETRIES = 2
MEMORY_SHARE = 0.8  # of the memory available at start, split between LocalCluster workers
CONNECT_TIMEOUT_S = 30


class DaskExecutor(Executor):
    name = "dask"

    def __init__(
        self,
        workers: int | None = None,
        console=None,
        scheduler: str | None = None,
        memory_limit: str | int | None = None,
        retries: int = DEFAULT_RETRIES,
        dashboard_address: str = ":8787",
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ):
        self.console = console
        self.retries = retries
        self.cluster: LocalCluster | None = None
        self._mirror: task_sync.Mirror | None = None
        self._stores: list = []  # (RemoteDir, delete on push)
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise PipelineError(
                    f"cannot connect to the Dask scheduler: {exc}",
                    where=f"--scheduler {scheduler}",
                    hint="start one (`dask scheduler`, then `dask worker ADDRESS`) or leave --scheduler out to start a local cluster",
                ) from exc
            try:
                self.client.wait_for_workers(1, timeout=connect_timeout)
            except (OSError, TimeoutError) as exc:
                self.client.close()
                raise PipelineError(
                    f"the Dask scheduler has no workers after {connect_timeout} s",
                    where=f"--scheduler {scheduler}",
                    hint="start workers with `dask worker " + scheduler + "`",
                ) from exc
            self.workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        else:
            # the in-process scheduler logs each P2P shuffle at WARNING: routine here, not a problem
            logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
            self.workers = max(1, workers or available_cores())
            limit = _parse_memory(memory_limit) if memory_limit else local_memory_limit(self.workers)
            self.cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,  # tasks are CPU-bound Python: one process per core
                processes=True,
                memory_limit=limit,
                dashboard_address=dashboard_address,
            )
            self.client = Client(self.cluster)
        dashboard = self.client.dashboard_link
        if self.cluster is not None and importlib.util.find_spec("bokeh") is None:
            dashboard = f"not served (`pip install bokeh` to get it at {dashboard})"
        self._log(f"Dask: {self.workers} worker(s) at {self.client.scheduler.address}; dashboard {dashboard}")

    def _log(self, message: str) -> None:
        if self.console is not None:
            self.console.log(message)

    # --------------------------------------------------------------------- object stores
    def attach_stores(self, out, cache=None) -> None:
        """Let workers that do not see the runner's working copies use the stores instead."""
        token = task_sync.TOKEN_PREFIX + uuid.uuid4().hex
        self._stores = [(out, True)] + ([(cache, False)] if cache is not None else [])  # a shared cache loses nothing on push
        for store, _ in self._stores:
            (store.local / token).write_text("the runner of a grist run: workers that see this file share its working copy\n")
        self._mirror = task_sync.Mirror(tuple(task_sync.StoreRoot(str(store.local), store.url, token) for store, _ in self._stores))
        seen = self.client.run(_sees_roots, self._mirror)
        blind = sorted(w for w, flags in seen.items() if not all(flags))
        where = " and ".join(redact_url(store.url) for store, _ in self._stores)
        if blind:
            self._log(f"Dask: {len(blind)} of {len(seen)} worker(s) do not see this machine's working copy; they exchange files through {where}")
            if cache is None:
                self._log("[yellow]warning:[/] the download cache is a local folder: workers that do not see this machine cannot read the downloads; set GRIST_CACHE (or cache_dir) to a URL such as s3://bucket/grist-cache")
        else:
            self._log(f"Dask: every worker sees the working copy; {where} is synchronized before and after each phase")

    def detach_stores(self) -> None:
        if self._mirror is not None:
            for root in self._mirror.roots:
                (Path(root.runner_path) / root.token).unlink(missing_ok=True)
        self._mirror, self._stores = None, []

    def _sync_up(self) -> None:
        """Before a phase: what the runner wrote (and the parts of workers on this machine) goes up."""
        for store, delete in self._stores:
            store.push(delete=delete)

    def _sync_down(self) -> None:
        """After a phase: what workers uploaded comes down to the runner's copy."""
        if self._stores:
            self._stores[0][0].pull()

    def _wrap(self, fn, args: tuple):
        if self._mirror is None:
            return fn, args
        return task_sync.run_mirrored, (self._mirror, fn, args)

    # ------------------------------------------------------------------------------ map
    def map(self, calls: list[Call], desc: str = "", progress: bool = True) -> Iterator[tuple[int, Any]]:
        if not calls:
            return
        prefix = _key_prefix(desc)
        token = uuid.uuid4().hex[:8]
        self._sync_up()
        with make_progress(self.console, transient=False, show=progress) as bar:
            task = bar.add_task(desc, total=len(calls), visible=progress)
            futures = [
                self.client.submit(wrapped, *wrapped_args, key=f"{prefix}-{token}-{i}", pure=False, retries=self.retries)
                for i, (wrapped, wrapped_args) in enumerate(self._wrap(fn, args) for fn, args in calls)
            ]
            index = {f.key: i for i, f in enumerate(futures)}
            try:
                for fut in as_completed(futures):
                    i = index[fut.key]
                    if fut.status != "finished":
                        raise _task_failure(fut, calls[i], desc, self.retries)
                    result = fut.result()
                    bar.advance(task)
                    yield i, result
            finally:
                self.client.cancel([f for f in futures if not f.done()])
        self._sync_down()

    # -------------------------------------------------------------------------- shuffle
    def shuffle(self, inputs: list[str], key: str, bounds: list[int], dest: str, sort_by: list[str] | None = None, desc: str = "shuffle", progress: bool = True) -> list[str]:
        outs, todo = _shuffle_outputs(dest, len(bounds) - 1)
        if not todo:
            return outs
        schema = pq.read_schema(inputs[0])
        frame = dd.read_parquet(self._sources(inputs)) if sum(pq.ParquetFile(p).metadata.num_rows for p in inputs) else None
        self._write_ranges(frame, key, bounds, outs, todo, schema, sort_by or [key], desc, progress)
        return outs

    def _sources(self, paths: list[str]) -> list[str]:
        """Where workers read shuffle inputs: the runner's files when every worker (asked now:
        workers come and go) sees them, else their copies in the store."""
        if self._mirror is None or all(all(flags) for flags in self.client.run(_sees_roots, self._mirror).values()):
            return paths
        self._sync_up()
        return [self._mirror.url_of(p) for p in paths]

    def _write_ranges(self, frame, key: str, bounds: list[int], outs: list[str], todo: list[int], schema: pa.Schema, sort_by: list[str], desc: str, progress: bool) -> None:
        """Range-partition ``frame`` on ``key`` (``set_index`` with explicit divisions: Dask's shuffle)
        and write output ``s`` for each ``s`` in ``todo``; empty ranges are written without Dask."""
        live = [s for s in range(len(bounds) - 1) if bounds[s] < bounds[s + 1]]
        if frame is None or not live:
            for s in todo:
                write_sorted_shard(schema.empty_table(), sort_by, outs[s], schema)
            return
        # divisions must increase; the last partition is closed on the right: bounds[-1] - 1
        divisions = [bounds[s] for s in live] + [bounds[-1] - 1]
        parts = dict(zip(live, frame.set_index(key, divisions=divisions).to_delayed()))
        writes, shard_of = [], {}
        for s in todo:
            if s not in parts:
                write_sorted_shard(schema.empty_table(), sort_by, outs[s], schema)
                continue
            fn, args = self._wrap(_write_partition, (parts[s], key, sort_by, outs[s], schema))
            writes.append(dask.delayed(fn)(*args, dask_key_name=f"{_key_prefix(desc)}-write-{s}"))
        futures = self.client.compute(writes, retries=self.retries)
        shard_of = {f.key: s for f, s in zip(futures, [s for s in todo if s in parts])}
        with make_progress(self.console, transient=False, show=progress) as bar:
            task = bar.add_task(desc, total=len(futures), visible=progress)
            try:
                for fut in as_completed(futures):
                    if fut.status != "finished":
                        raise _task_failure(fut, (_write_partition, (shard_of[fut.key],)), desc, self.retries)
                    bar.advance(task)
            finally:
                self.client.cancel([f for f in futures if not f.done()])
        self._sync_down()

    # ---------------------------------------------------------------------- components
    def components(self, edges: list[str], bounds: list[int], dest: str, desc: str = "components", progress: bool = True) -> tuple[list[str], dict]:
        """Connected components by min-label propagation on ``dask.dataframe``: each round every
        node takes the smallest label among itself and its neighbours (a join and a group-min),
        then the label of its label (pointer jumping, a join), until no label changes. Labels only
        decrease and stay inside the component, so at the fixed point every node holds its
        component's smallest node: the same answer as the local union-find."""
        outs = [str(Path(dest) / f"shard-{s:05d}.parquet") for s in range(len(bounds) - 1)]
        n_edges = sum(pq.ParquetFile(p).metadata.num_rows for p in edges)
        frame, rounds = None, 0
        if n_edges:
            e = dd.read_parquet(self._sources(edges), columns=["u", "v"])
            both = dd.concat([e.rename(columns={"u": "a", "v": "b"}), e.rename(columns={"v": "a", "u": "b"})[["a", "b"]]]).persist()
            lab = both.groupby("a").b.min().to_frame("l").reset_index()
            lab["l"] = lab.l.where(lab.l < lab.a, lab.a)
            lab = lab.persist()
            while True:
                rounds += 1
                # m(a): smallest label among a's neighbours
                seen = both.merge(lab.rename(columns={"a": "b", "l": "m"}), on="b").groupby("a").m.min().to_frame("m").reset_index()
                seen = seen.merge(lab, on="a")
                # a takes it, and so does a's label node (hooking the root: O(log n) rounds, not O(diameter))
                offers = dd.concat([seen[["a", "m"]], seen[["l", "m"]].rename(columns={"l": "a"})]).groupby("a").m.min().to_frame("m").reset_index()
                step = lab.merge(offers, on="a", how="left")
                step["l"] = step.m.where(step.m < step.l, step.l).astype("int64")
                step = step[["a", "l"]]
                for _ in range(2):  # pointer jumping: the label of the label
                    step = step.merge(step.rename(columns={"a": "l", "l": "j"}), on="l")[["a", "j"]].rename(columns={"j": "l"})
                new = step.persist()
                changed = int(lab.merge(new.rename(columns={"l": "n"}), on="a").pipe(lambda f: (f.l != f.n).sum()).compute())
                lab = new
                if not changed:
                    break
            sizes = lab.groupby("l").size().to_frame("size").reset_index()
            frame = lab.merge(sizes, on="l").rename(columns={"a": "node", "l": "label"})[["node", "label", "size"]]
            frame = frame.astype({"node": "int64", "label": "int64", "size": "int64"})
        self._write_ranges(frame, "node", bounds, outs, list(range(len(bounds) - 1)), COMPONENT_SCHEMA, ["node"], desc, progress)
        return outs, {"label_propagation_rounds": rounds}

    def close(self) -> None:
        self.detach_stores()
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None


def local_memory_limit(workers: int) -> int:
    """Bytes per LocalCluster worker: a share of what is available now (other processes included)."""
    return int(psutil.virtual_memory().available * MEMORY_SHARE / max(1, workers))


def _parse_memory(value: str | int) -> int:
    try:
        limit = dask.utils.parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError) as exc:
        raise PipelineError(f"cannot read {value!r} as a memory size", where="--worker-memory", hint="e.g. 4GB, 512MiB or a number of bytes") from exc
    if limit < 256 * 2**20:
        raise PipelineError(f"{value!r} is less than 256 MiB per worker", where="--worker-memory", hint="a worker holds the interpreter, pyarrow and models: give it at least 1 GB")
    return limit


def _sees_roots(mirror: task_sync.Mirror) -> list[bool]:
    """On a worker: which of the runner's working copies it sees."""
    return [root.shared() for root in mirror.roots]


def _write_partition(frame, key: str, sort_by: list[str], out: str, schema: pa.Schema) -> int:
    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
    write_sorted_shard(table, sort_by, out, schema)
    return table.num_rows


def _key_prefix(desc: str) -> str:
    """Dask task keys group by prefix on the dashboard: one group per node and phase."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", desc).strip("_") or "task"


def _describe(call: Call) -> str:
    from pipeline.exec.tasks import task_entry

    fn, args = call
    if fn is task_entry:  # (fn, node_dir, index, args, phase prefix)
        phase = args[4].rstrip("-") or "final"
        return f"{args[0].__name__} on partition {args[2]} ({phase} phase of node {Path(args[1]).name!r})"
    if fn is _write_partition:
        return f"shuffle output {args[0]}"
    return getattr(fn, "__name__", repr(fn))


def _task_failure(fut, call: Call, desc: str, retries: int) -> PipelineError:
    what = _describe(call)
    exc = fut.exception()
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, distributed.KilledWorker):
        return StageError(
            f"{what}: the worker(s) running it died ({exc})",
            where=desc,
            hint="most often out of memory: give workers more (--worker-memory, `dask worker --memory-limit`) or make partitions smaller; "
            "finished partitions are kept, run the same command again to resume",
        )
    if fut.status == "cancelled":
        return StageError(f"{what}: cancelled by the Dask scheduler", where=desc, hint="the cluster went away? run the same command again to resume")
    return StageError(
        f"{what} failed after {retries + 1} attempt(s): {type(exc).__name__}: {exc}",
        where=desc,
        hint="the node is not marked complete; finished partitions are kept, run the same command again to resume",
    )
