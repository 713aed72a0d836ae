"""The runner: resolve sources, walk the DAG, skip what is done, run what is not.

Resumability rests on three rules:
  * a node's fingerprint = hash(stage code, parameters, inputs' fingerprints, and for a
    source what ``resolve()`` pinned); a node is skipped iff its ``_COMPLETE`` marker holds
    the same fingerprint;
  * every file is written atomically and ``_COMPLETE`` is written last, so a killed run
    leaves at worst finished tasks (reused) and temp files (ignored);
  * tasks are deterministic (task i always writes part i with the same bytes), so a resumed
    run ends with exactly the output of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common import storage
from pipeline.common.errors import PipelineError, StageError
from pipeline.core.dag import Dag, build_dag
from pipeline.core.stage import RELEASED, NodeContext, NodeOutput, RunContext, Stage, code_fingerprint, merge_stats
from pipeline.exec.executors import Executor
from pipeline.exec.tasks import check_accounting
from pipeline.io import remote
from pipeline.io.export import export_dataset, publish_dir
from pipeline.io.urls import redact_url
from pipeline.run import retention
from pipeline.run.lock import RunLock
from pipeline.run.provenance import write_lock, write_provenance

# Source fields that describe the source but do not change the data it yields.
NON_DATA_SOURCE_FIELDS = {"mirror", "description", "homepage", "citation", "attribution", "license_url", "license_override", "streams_per_partition", "partition_bytes"}


@dataclass
class RunResult:
    out_dir: Path
    nodes_run: list[str] = field(default_factory=list)
    nodes_skipped: list[str] = field(default_factory=list)
    stats: dict[str, dict] = field(default_factory=dict)
    export: dict | None = None
    location: str | None = None  # where the output lives when it is remote (out_dir is then the working copy)
    nodes_from_cache: list[str] = field(default_factory=list)  # complete nodes linked in from ``node_cache`` (also skipped)


def default_cache_dir(manifest) -> Path:
    """The download cache: manifest ``cache_dir``, else ``$GRIST_CACHE``, else ~/.cache/grist/downloads.
    A URL (``s3://…``) gives a local working copy mirrored to the store (see pipeline/io/remote.py)."""
    configured = manifest.cache_dir or os.environ.get("GRIST_CACHE")
    if remote.is_url(configured):
        return remote.use_remote_cache(configured)
    if manifest.cache_dir:
        path = Path(manifest.cache_dir).expanduser()
        return path if path.is_absolute() else (manifest.path.parent / path).resolve()
    env = os.environ.get("GRIST_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grist" / "downloads"


def instantiate(dag: Dag) -> dict[str, Stage]:
    from stages import get_source_class, get_stage_class

    out = {}
    for name, node in dag.nodes.items():
        cls = get_source_class(node.impl) if node.kind == "source" else get_stage_class(node.impl)
        out[name] = cls(node.config, name)
    return out


def fingerprint(stage: Stage, node_kind: str, inputs: list[str], resolved: dict | None) -> str:
    params = stage.params.model_dump(mode="json")
    if node_kind == "source":
        skip = NON_DATA_SOURCE_FIELDS | set(getattr(stage, "pinned_by_resolve", ()))
        params = {k: v for k, v in params.items() if k not in skip}
    doc = {
        "impl": type(stage).name,
        "code": code_fingerprint(type(stage)),
        "params": params,
        "inputs": inputs,
        "resolved": (resolved or {}).get("identity", resolved),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def run_manifest(manifest, out_dir: Path | str, executor: Executor, console, *, progress: bool = True, node_cache: Path | None = None) -> RunResult:
    """Run ``manifest`` into ``out_dir``: a local folder, or an fsspec URL (``s3://bucket/prefix``),
    in which case a local working copy is synchronized with the store (pipeline/io/remote.py):
    pulled before the run, each node pushed when it completes, everything pushed at the end or
    when the run stops, so a re-run anywhere resumes from the store.

    ``node_cache`` (a local folder, used by ``pipeline ablate``): complete nodes by fingerprint,
    ``<node_cache>/<fingerprint>/``, shared by runs into other folders. A node found there is
    hard-linked in instead of computed; a node this run completes is published there."""
    # 0. Licenses first: a conflict refuses the run before any source is resolved or downloaded.
    from pipeline.audit.licenses import check

    console.log(f"license: output {check(manifest).output_license}")
    if not remote.is_url(out_dir):
        return _run(manifest, Path(out_dir), executor, console, progress=progress, node_cache=node_cache)
    store = remote.RemoteDir(str(out_dir))
    console.log(f"output {redact_url(store.url)}: working copy {store.local}; pulled {store.pull()} changed file(s)")
    try:
        result = _run(manifest, store.local, executor, console, progress=progress, after_node=lambda name: store.push(f"stages/{name}"), store=store, node_cache=node_cache)
    except BaseException:
        # Keep what finished (partial nodes have no _COMPLETE): a re-run elsewhere reuses it.
        # A failing upload here must not hide the error that stopped the run.
        try:
            store.push()
        except remote.RemoteError as exc:
            console.log(f"could not push the partial run to {redact_url(store.url)}: {exc}")
        raise
    console.log(f"pushed {store.push()} changed file(s) to {redact_url(store.url)}")
    result.location = store.url
    return result


def _run(manifest, out_dir: Path, executor: Executor, console, *, progress: bool = True, after_node=None, store=None, node_cache: Path | None = None) -> RunResult:
    make_out_dir(out_dir)
    with RunLock(out_dir) as lock:
        if lock.removed_temps:
            console.log(f"removed {len(lock.removed_temps)} temporary file(s) an interrupted run left in {out_dir}")
        rctx = RunContext(out_dir=out_dir, cache_dir=default_cache_dir(manifest), console=console, manifest=manifest, progress=progress)
        if store is None:
            return _walk(manifest, rctx, executor, console, after_node=after_node, node_cache=node_cache)
        # workers that do not see this machine's files (a cluster without a shared volume) use the stores
        cache = remote.cache_mirror_for(rctx.cache_dir)
        executor.attach_stores(store, cache[0] if cache else None)
        try:
            return _walk(manifest, rctx, executor, console, after_node=after_node, node_cache=node_cache)
        finally:
            executor.detach_stores()


def make_out_dir(out_dir: Path) -> None:
    """Create the output folder, or say clearly why it cannot be one."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PipelineError("--out names an existing file, not a folder", where=str(out_dir), hint="give a folder path (it is created if missing), or move the file away")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
        raise PipelineError(f"cannot create the output folder: {blocker or 'a part of the path'} is a file", where=str(out_dir), hint="give a folder path whose parents are folders") from None
    except PermissionError:
        raise PipelineError("cannot create the output folder: permission denied", where=str(out_dir), hint="choose a folder you can write to (--out)") from None
    except OSError as exc:
        raise PipelineError(f"cannot create the output folder: {exc.strerror or exc}", where=str(out_dir), hint="choose another --out") from None


def _walk(manifest, rctx: RunContext, executor: Executor, console, *, after_node=None, node_cache: Path | None = None) -> RunResult:
    out_dir = rctx.out_dir
    stages_dir = out_dir / "stages"
    dag = build_dag(manifest)
    impls = instantiate(dag)
    result = RunResult(out_dir=out_dir)

    # 1. Pin every source before any download: a bad date or mirror fails fast. Stages with
    #    inputs of their own (evaluation sets, a saved model) pin them too: their content enters
    #    the fingerprint, and a missing file fails before any work.
    resolved: dict[str, dict] = {}
    for name in dag.order:
        if dag.nodes[name].kind == "source":
            console.log(f"\\[{name}] resolving {dag.nodes[name].impl} source")
            resolved[name] = impls[name].resolve(rctx)
        elif callable(getattr(impls[name], "resolve", None)):
            console.log(f"\\[{name}] resolving {dag.nodes[name].impl} inputs")
            resolved[name] = impls[name].resolve(rctx)

    # 2. What must run: nodes not complete for their fingerprint, and released nodes (retain:
    #    outputs) whose parts a node that runs, or a stale data/ export, needs.
    fingerprints: dict[str, str] = {}
    for name in dag.order:
        node = dag.nodes[name]
        fingerprints[name] = fingerprint(impls[name], node.kind, [fingerprints[i] for i in node.inputs], resolved.get(name))
        if node_cache is not None and not _complete(stages_dir / name, fingerprints[name]) and _take_from_cache(Path(node_cache), fingerprints[name], stages_dir / name):
            console.log(f"\\[{name}] taken from the node cache (fingerprint {fingerprints[name][:12]})")
            result.nodes_from_cache.append(name)
    incomplete = {name for name in dag.order if not _complete(stages_dir / name, fingerprints[name])}
    export_marker = out_dir / "data" / ".grist_export.json"
    export_stale = not (export_marker.exists() and storage.read_json(export_marker).get("fingerprint") == fingerprints[dag.output])
    to_run = retention.needs_parts(dag, out_dir, incomplete, export_stale)

    # 3. Walk the DAG.
    outputs: dict[str, NodeOutput] = {}
    node_records: dict[str, dict] = {}
    for name in dag.order:
        node = dag.nodes[name]
        stage = impls[name]
        fp = fingerprints[name]
        node_dir = stages_dir / name
        complete = node_dir / "_COMPLETE"
        started = time.time()
        if name in to_run and name not in incomplete:  # complete, but its parts were released
            console.log(f"\\[{name}] recomputing: its parts were released (retain: outputs) and a node that runs now reads them")
            storage.remove_tree(node_dir)
        if name not in to_run:
            stats = storage.read_json(node_dir / "stats.json")
            record = storage.read_json(node_dir / "_record.json") if (node_dir / "_record.json").exists() else {}
            console.log(f"\\[{name}] up to date (fingerprint {fp[:12]}), skipped")
            result.nodes_skipped.append(name)
            record["skipped"] = True
        else:
            _prepare_dir(node_dir, fp)
            ctx = NodeContext(
                name=name, dir=node_dir, inputs=[outputs[i] for i in node.inputs], executor=executor, run=rctx, resolved=resolved.get(name)
            )
            console.log(f"\\[{name}] running {node.impl} (fingerprint {fp[:12]})")
            try:
                extra = stage.run(ctx) or {}
            except PipelineError:
                raise
            except OSError as exc:
                if storage.is_disk_full(exc):
                    raise storage.disk_full(Path(exc.filename) if exc.filename else node_dir / "part") from None
                raise StageError(f"{type(exc).__name__}: {exc}", where=f"node {name!r} ({node.impl})", hint="run with --debug for the traceback; the node is not marked complete and will re-run") from exc
            except Exception as exc:  # a bug or an unexpected input: name the node, keep the cause
                raise StageError(f"{type(exc).__name__}: {exc}", where=f"node {name!r} ({node.impl})", hint="run with --debug for the traceback; the node is not marked complete and will re-run") from exc
            stats = _node_stats(node_dir, extra)
            check_accounting(stats, f"node {name!r}")
            record = {
                "impl": node.impl,
                "kind": node.kind,
                "inputs": node.inputs,
                "params": stage.params.model_dump(mode="json"),
                "fingerprint": fp,
                "documents_in": stats.get("in"),
                "documents_out": stats.get("out"),
                "documents_removed": stats.get("removed"),
                "duration_s": round(time.time() - started, 3),
                "provenance": ctx.provenance,
            }
            storage.atomic_write_json(node_dir / "stats.json", stats)
            storage.atomic_write_json(node_dir / "_record.json", record)
            storage.atomic_write_json(complete, {"fingerprint": fp})
            result.nodes_run.append(name)
            record["skipped"] = False
            console.log(f"\\[{name}] done: {stats.get('in', '?')} in, {stats.get('out', '?')} out, {stats.get('removed', 0)} removed")
        if node_cache is not None:
            _put_in_cache(Path(node_cache), fp, node_dir)
        for sub, target in type(stage).publishes.items():
            publish_dir(node_dir / sub, out_dir / target, fp)
        if after_node is not None and name in result.nodes_run:
            after_node(name)
        outputs[name] = NodeOutput(name=name, dir=node_dir, fingerprint=fp, stats=stats)
        result.stats[name] = stats
        node_records[name] = record
        if stats.get("out") == 0 and not manifest.allow_empty:
            raise PipelineError(
                f"node {name!r} left no documents; where they went:\n{funnel_text(dag, result.stats)}",
                where=str(manifest.path),
                hint="check the inputs and the filters' thresholds (pipeline inspect OUT --reason ... shows removed samples); set allow_empty: true in the manifest if an empty result is expected",
            )

    # 4. The output node becomes <out>/data; then the lock and provenance.
    out_node = outputs[dag.output]
    export = export_dataset(
        out_node.parts,
        out_dir / "data",
        out_node.fingerprint,
        info={"description": manifest.description, "license": " AND ".join(sorted({s.license for s in manifest.sources}))},
    )
    result.export = {k: v for k, v in export.items()}
    write_lock(out_dir / "manifest.lock.yaml", manifest, resolved)
    write_provenance(out_dir / "provenance.json", manifest, resolved, node_records, result.export)
    console.log(f"wrote {export['rows']:,} documents to {out_dir / 'data'}")
    # 5. What a reader needs: licenses.json, README.md + cards/, ATTRIBUTION.md, croissant.json, report.
    from pipeline.audit.cards import write_run_docs

    write_run_docs(out_dir, manifest, console)
    # 6. retain: outputs: every consumer is complete and everything is published: release parts.
    if manifest.retain == "outputs":
        retention.release_all(out_dir, dag, console)
    return result


def _complete(node_dir: Path, fp: str) -> bool:
    marker = node_dir / "_COMPLETE"
    return marker.exists() and storage.read_json(marker).get("fingerprint") == fp


def _link_tree(src: Path, dest: Path) -> None:
    """``dest`` (absent) becomes a copy of ``src`` made of hard links (copies across devices),
    written as a temporary folder renamed into place. Node files are only ever replaced by
    renames, never edited in place, so the links never change under another run."""
    import shutil

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    storage.remove_tree(tmp)
    shutil.copytree(src, tmp, copy_function=link_or_copy)
    try:
        os.replace(tmp, dest)
    except OSError:  # another run published it first (a non-empty dest): theirs is as good
        storage.remove_tree(tmp)


def _take_from_cache(cache: Path, fp: str, node_dir: Path) -> bool:
    """Link the complete node ``fp`` of the shared cache into ``node_dir``; False when absent."""
    cached = cache / fp
    if not _complete(cached, fp) or (cached / RELEASED).exists():
        return False
    storage.remove_tree(node_dir)
    node_dir.parent.mkdir(parents=True, exist_ok=True)
    _link_tree(cached, node_dir)
    return _complete(node_dir, fp)


def _put_in_cache(cache: Path, fp: str, node_dir: Path) -> None:
    """Publish a complete node (not one whose parts were released) to the shared cache."""
    if (cache / fp).exists() or not _complete(node_dir, fp) or (node_dir / RELEASED).exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    _link_tree(node_dir, cache / fp)


def funnel_text(dag: Dag, stats: dict[str, dict], top: int = 3) -> str:
    """One line per node run so far: documents in and out, and the main removal reasons."""
    lines = []
    for name in dag.order:
        if name not in stats:
            continue
        st = stats[name]
        reasons = sorted((st.get("removed_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        why = ", ".join(f"{r} {n:,}" for r, n in reasons[:top]) + (f", … {len(reasons) - top} more reason(s)" if len(reasons) > top else "")
        count = f"{st.get('in', 0):,} in -> {st.get('out', 0):,} out" if dag.nodes[name].kind == "stage" else f"{st.get('out', 0):,} documents read"
        lines.append(f"  {name} ({dag.nodes[name].impl}): {count}" + (f"; removed: {why}" if why else ""))
    return "\n".join(lines)


def _prepare_dir(node_dir: Path, fp: str) -> None:
    """Keep finished tasks of an interrupted run with the same fingerprint; start over otherwise."""
    marker = node_dir / "_FINGERPRINT"
    if node_dir.exists() and (not marker.exists() or marker.read_text().strip() != fp):
        storage.remove_tree(node_dir)
    (node_dir / "_COMPLETE").unlink(missing_ok=True)
    node_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        storage.atomic_write_text(marker, fp + "\n")


def _node_stats(node_dir: Path, extra: dict) -> dict:
    task_files = sorted((node_dir / "_tasks").glob("part-*.json"))
    stats = merge_stats([storage.read_json(p) for p in task_files])
    stats["partitions"] = len(task_files)
    stats.update(extra)
    return stats
