"""The contract between the runner and a stage.

A stage is a small class with a ``Params`` model and a ``run(ctx)`` method. Most stages
are ``MapStage``s: they only implement ``process(table) -> (kept, removed)`` over one
Arrow table (one partition) and the base class fans partitions out over the executor.
Sources are ``SourceStage``s: ``resolve()`` pins what will be read (dump date, URLs,
checksums) cheaply, before anything is downloaded, and ``run()`` fetches and reads.

Stages never talk to the executor's internals: they call ``ctx.run_tasks(fn, tasks)``
with a module-level function, so the same stage runs on the local process pool or on
a Dask cluster.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from pipeline.common import storage
from pipeline.exec.tasks import task_entry

if TYPE_CHECKING:
    from pipeline.exec.executors import Executor


# Columns every document table carries from extraction on; later stages add columns.
DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("license", pa.string()),
        ("title", pa.string()),
        ("url", pa.string()),
        ("timestamp", pa.string()),
        ("revision_id", pa.int64()),
        ("text", pa.string()),
    ]
)

# Web records, as web sources (commoncrawl, local WARC/WET files) yield them: the document columns
# (``text`` empty for a WARC response, the extracted text for a WET conversion record; ``timestamp``
# the WARC-Date) plus the raw payload and the headers that decide how to read it. ``html_extract``
# turns them into documents. Ids: ``cc/<crawl>/<record uuid>`` (Common Crawl), ``<source>/<record
# uuid>`` (local files).
WEB_RECORD_SCHEMA = pa.schema(
    [
        *DOC_SCHEMA,
        ("html", pa.binary()),  # the HTTP body (null for WET text)
        ("content_type", pa.string()),  # the HTTP Content-Type header, as sent
        ("http_status", pa.int32()),
        ("warc_type", pa.string()),
        ("warc_record_id", pa.string()),
        ("warc_date", pa.string()),
        ("payload_digest", pa.string()),
        ("warc_filename", pa.string()),
        ("crawl", pa.string()),
    ]
)

def append_web_record(cols: dict[str, list], rec, *, doc_id: str, source: str, license: str, filename: str, crawl: str | None) -> None:
    """Append one WARC/WET document record (``pipeline.io.formats.warc.WarcRecord``) to column
    lists of ``WEB_RECORD_SCHEMA``: what every web source yields."""
    wet = rec.warc_type == "conversion"
    cols["id"].append(doc_id)
    cols["source"].append(source)
    cols["license"].append(license)
    cols["title"].append(None)
    cols["url"].append(rec.url)
    cols["timestamp"].append(rec.date)
    cols["revision_id"].append(None)
    # WET text is UTF-8 by the format; a bad byte becomes U+FFFD rather than losing the record
    cols["text"].append((rec.payload or b"").decode("utf-8", "replace") if wet else "")
    cols["html"].append(None if wet else (rec.payload or b""))
    cols["content_type"].append(rec.content_type)
    cols["http_status"].append(rec.http_status)
    cols["warc_type"].append(rec.warc_type)
    cols["warc_record_id"].append(rec.record_id)
    cols["warc_date"].append(rec.date)
    cols["payload_digest"].append(rec.payload_digest)
    cols["warc_filename"].append(filename)
    cols["crawl"].append(crawl)


# The removal ledger: what was dropped, by which node, why, and the signals that decided it.
REMOVED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("title", pa.string()),
        ("node", pa.string()),
        ("reason", pa.string()),
        ("signals", pa.string()),  # JSON object of the deciding values
        ("text", pa.string()),
    ]
)


# With ``retain: outputs`` a finished run releases node parts (pipeline/run/retention.py): the
# parts go, a summary of them stays (every column but the text, the text's length, a few texts),
# and the marker says so. Readers that only need those use ``readable_parts``.
RELEASED = "_RELEASED"
SUMMARY_DIR = "summary"


def readable_parts(node_dir: Path) -> list[Path]:
    """A node's parts, or the summary of them when they were released."""
    parts = sorted(Path(node_dir).glob("part-*.parquet"))
    return parts or sorted((Path(node_dir) / SUMMARY_DIR).glob("part-*.parquet"))


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class NodeOutput:
    """A completed node's materialized output, as its consumers see it."""

    name: str
    dir: Path
    fingerprint: str
    stats: dict

    @property
    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    @property
    def removed_parts(self) -> list[Path]:
        return sorted((self.dir / "removed").glob("part-*.parquet"))


@dataclass
class RunContext:
    """What a whole run shares: where things go, and how to talk to the user."""

    out_dir: Path
    cache_dir: Path
    console: Any  # rich.console.Console
    manifest: Any
    progress: bool = True


@dataclass
class NodeContext:
    name: str
    dir: Path
    inputs: list[NodeOutput]
    executor: "Executor"
    run: RunContext
    resolved: dict | None = None  # for sources: what resolve() pinned
    provenance: dict = field(default_factory=dict)  # stage-specific facts for provenance.json

    def part_path(self, index: int) -> Path:
        return self.dir / storage.part_name(index)

    def removed_path(self, index: int) -> Path:
        return self.dir / "removed" / storage.part_name(index)

    def run_tasks(self, fn: Callable[..., dict], tasks: list[tuple], desc: str, phase: str | None = None) -> list[dict]:
        """Run ``fn(*args)`` for each task, in parallel, resuming: a task whose stats file
        exists (written only after its parts) is not run again. Task ``i`` writes part ``i``.
        Returns each task's stats dict, in task order.

        Multi-phase stages (dedup, tokenizer training) name their intermediate phases:
        ``phase="signatures"`` keeps its own resume markers, and only the unnamed (final)
        phase's stats become the node's document counts."""
        results: list[dict | None] = [None] * len(tasks)
        prefix = f"{phase}-" if phase else ""
        self._check_layout(tasks, prefix)
        todo = []
        for i, args in enumerate(tasks):
            marker = self.dir / "_tasks" / f"{prefix}part-{i:05d}.json"
            if marker.exists():
                results[i] = storage.read_json(marker)
            else:
                todo.append((i, args))
        if len(todo) < len(tasks):
            self.run.console.log(f"\\[{self.name}] {desc}: resuming, {len(tasks) - len(todo)} of {len(tasks)} tasks already done")
        calls = [(task_entry, (fn, str(self.dir), i, args, prefix)) for i, args in todo]
        for i, stats in self.executor.map(calls, desc=f"{self.name}: {desc}", progress=self.run.progress):
            results[todo[i][0]] = stats
        return results  # type: ignore[return-value]


    def _check_layout(self, tasks: list[tuple], prefix: str) -> None:
        """Markers vouch for task ``i`` of one list of tasks. If an interrupted run is resumed with
        other tasks under the same fingerprint (e.g. another ``streams_per_partition``), its
        markers and parts describe other partitions: drop them and run the phase again."""
        digest = _layout_digest(tasks, {str(self.run.out_dir): "<out>", str(self.run.cache_dir): "<cache>"})
        path = self.dir / "_tasks" / f"{prefix}layout"
        recorded = path.read_text().strip() if path.exists() else None
        if recorded is not None and recorded != digest:
            self.run.console.log(f"\\[{self.name}] the {prefix.rstrip('-') or 'final'} tasks differ from the interrupted run's (other partitioning?): starting them over")
            for marker in (self.dir / "_tasks").glob(f"{prefix}part-*.json"):
                marker.unlink()
            if not prefix:  # the final phase's parts: a shorter list of tasks must not leave old parts behind
                for part in [*self.dir.glob("part-*.parquet"), *(self.dir / "removed").glob("part-*.parquet")]:
                    part.unlink()
        if recorded != digest:
            storage.atomic_write_text(path, digest + "\n")


def _layout_digest(tasks: list[tuple], roots: dict[str, str]) -> str:
    """A hash of the task list, with the run's folders written as placeholders and other absolute
    paths (input files) reduced to their names: a run resumed on another machine, whose working
    copy and inputs are elsewhere (the fingerprint pins their content), keeps its finished tasks.
    The task function is left out: its code is in the fingerprint already."""

    def norm(value):
        if isinstance(value, (str, Path)):
            text = str(value)
            for root, name in roots.items():
                if text == root or text.startswith(root + "/"):
                    return name + text[len(root) :]
            return "<abs>/" + os.path.basename(text) if os.path.isabs(text) else text
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {str(k): norm(v) for k, v in value.items()}
        if callable(value):
            return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
        return value if isinstance(value, (int, float, bool)) or value is None else repr(value)

    doc = json.dumps(norm(tasks), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()


def merge_stats(items: list[dict]) -> dict:
    """Sum numeric leaves of per-task stats dicts (nested dicts merge key by key)."""
    out: dict = {}
    for item in items:
        for key, value in item.items():
            if isinstance(value, bool):
                out[key] = value
            elif isinstance(value, (int, float)):
                out[key] = out.get(key, 0) + value
            elif isinstance(value, dict):
                out[key] = merge_stats([out.get(key, {}), value])
            else:
                out.setdefault(key, value)
    return out


def code_fingerprint(cls: type) -> str:
    """Hash of the source of the stage's module and of the modules it declares in ``code_deps``:
    editing a stage's code invalidates its outputs."""
    h = hashlib.sha256()
    h.update(getattr(cls, "version", "1").encode())
    modules = [cls.__module__, *getattr(cls, "code_deps", ())]
    for mod in modules:
        source_file = inspect.getsourcefile(importlib.import_module(mod))
        h.update(mod.encode())
        h.update(Path(source_file).read_bytes())
    return h.hexdigest()


class Stage:
    """Base class of every stage. Subclasses set ``name``, ``Params`` and implement ``run``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = NoParams
    code_deps: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # Artifact folders the stage writes inside its node dir, published to the run's output dir:
    # {"tokens": "tokens"} makes <out>/tokens a copy of <out>/stages/<node>/tokens.
    publishes: ClassVar[dict[str, str]] = {}

    def __init__(self, params: BaseModel, node: str):
        self.params = params
        self.node = node

    def run(self, ctx: NodeContext) -> dict:  # returns extra node-level stats
        raise NotImplementedError


class SourceStage(Stage):
    """A source: ``Config`` (a SourceConfig subclass) replaces ``Params``."""

    Config: ClassVar[type[BaseModel]]
    # Config fields whose concrete value resolve() pins in its identity (date: latest -> 20240601):
    # left out of the fingerprint, so "latest" and the date it resolved to share finished work.
    pinned_by_resolve: ClassVar[tuple[str, ...]] = ()

    def resolve(self, rctx: RunContext) -> dict:
        """Pin what will be read, cheaply (metadata requests only). Goes into the fingerprint and lock."""
        raise NotImplementedError


class MapStage(Stage):
    """A stage that maps each input partition to one output partition independently."""

    def process(self, table: pa.Table) -> tuple:
        """Return (kept rows, removed rows in REMOVED_SCHEMA or None[, extra stats dict])."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """Facts for provenance.json (models used and their licenses, configs). Override as needed."""
        return {}

    def run(self, ctx: NodeContext) -> dict:
        ctx.provenance.update(self.provenance())
        tasks = []
        for inp in ctx.inputs:
            for part in inp.parts:
                tasks.append((class_path(type(self)), self.params.model_dump(mode="json"), self.node, str(part), str(ctx.part_path(len(tasks))), str(ctx.removed_path(len(tasks)))))
        ctx.run_tasks(_map_task, tasks, desc=type(self).name)
        return {}


def class_path(cls: type) -> str:
    """``module:Class``, how a task names its stage class: workers import it by that name."""
    return f"{cls.__module__}:{cls.__qualname__}"


@functools.lru_cache(maxsize=8)
def _stage_instance(stage_class: str, params_json: str, node: str) -> "MapStage":
    """One stage object per worker process and configuration, so models load once, not per partition."""
    module, name = stage_class.split(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(cls.Params.model_validate(json.loads(params_json)), node)


def _map_task(stage_class: str, params: dict, node: str, in_path: str, out_path: str, removed_path: str) -> dict:
    stage = _stage_instance(stage_class, json.dumps(params, sort_keys=True), node)
    table = storage.read_parquet(Path(in_path))
    result = stage.process(table)
    kept, removed = result[0], result[1]
    extra = result[2] if len(result) > 2 else {}  # stage-specific counters, summed over partitions
    if removed is None:
        removed = REMOVED_SCHEMA.empty_table()
    storage.write_parquet(kept, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    return {**extra, **doc_stats(table.num_rows, kept, removed)}


def doc_stats(n_in: int, kept: pa.Table, removed: pa.Table) -> dict:
    stats: dict[str, Any] = {"in": n_in, "out": kept.num_rows, "removed": removed.num_rows}
    if "text" in kept.column_names:
        import pyarrow.compute as pc

        stats["chars_out"] = int(pc.sum(pc.utf8_length(kept["text"])).as_py() or 0)
    reasons: dict[str, int] = {}
    if removed.num_rows:
        for row in removed.group_by("reason").aggregate([("reason", "count")]).to_pylist():
            reasons[row["reason"]] = row["reason_count"]
    stats["removed_by_reason"] = reasons
    return stats


def removed_rows(table: pa.Table, node: str, reasons: list[str], signals: list[dict] | None = None) -> pa.Table:
    """Build ledger rows for the rows of ``table`` (already filtered to the removed ones)."""
    n = table.num_rows

    def col(name: str) -> pa.Array:
        if name in table.column_names:
            return table[name].cast(pa.string())
        return pa.nulls(n, pa.string())

    return pa.table(
        {
            "id": col("id"),
            "source": col("source"),
            "title": col("title"),
            "node": pa.array([node] * n, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "signals": pa.array([json.dumps(s, ensure_ascii=False, sort_keys=True) for s in (signals or [{}] * n)], pa.string()),
            "text": col("text"),
        },
        schema=REMOVED_SCHEMA,
    )
