"""Tasks on workers that do not see the runner's files: the object store carries them.

With ``--out s3://…`` the runner works in a local working copy (``pipeline/io/remote.py``). Dask
workers on the same machine, or on a volume shared with the runner, see that copy and use it
directly. A worker that does not (another machine, no shared volume) keeps its own working copy
of the same store, under ``$GRIST_STAGING/workers/``, and for each task:

1. rewrites the task's paths from the runner's copy to its own (arguments, nested too);
2. downloads the files the task is given when its copy is missing or stale (ETag); a task that
   reads files it was not given (dedup's work arrays, the tokenizer folder) calls
   ``ensure_local(path)`` first, which does the same;
3. runs the task, then uploads what it wrote in its node's folder, completion markers
   (``_tasks/…json``) last: the store never holds a marker without the files it vouches for.

The runner pushes its own new files before each phase and pulls the workers' after it
(``DaskExecutor``). Which roots a worker sees is decided per root by a token file the runner
keeps in its copy; ``GRIST_SHARED_FS=0`` in a worker's environment makes it use the store even
when it could see the files.
"""

from __future__ import annotations

import contextvars
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.common.errors import StageError
from pipeline.io.remote import marker_rank

TOKEN_PREFIX = ".grist-runner-"


@dataclass(frozen=True)
class StoreRoot:
    """One of the runner's working copies (the output, the download cache) and its store."""

    runner_path: str
    url: str
    token: str  # a file in runner_path: whoever sees it shares the runner's filesystem

    def shared(self) -> bool:
        return os.environ.get("GRIST_SHARED_FS", "auto") != "0" and (Path(self.runner_path) / self.token).exists()


@dataclass(frozen=True)
class Mirror:
    roots: tuple[StoreRoot, ...]

    def url_of(self, path: str) -> str:
        """The store URL of a path in one of the runner's copies."""
        for root in self.roots:
            rel = _relative(path, root.runner_path)
            if rel is not None:
                return f"{root.url}/{rel}" if rel else root.url
        raise ValueError(f"{path} is in none of the synchronized folders")


_ACTIVE: contextvars.ContextVar["_TaskSync | None"] = contextvars.ContextVar("grist_task_sync", default=None)
_STORES: dict[tuple[str, str], Any] = {}  # one RemoteDir per store and copy, per worker process


def worker_copy(url: str) -> Path:
    """This worker's working copy of ``url``: never the runner's, even on the same machine."""
    from pipeline.io.remote import default_local_copy, staging_root

    return staging_root() / "workers" / default_local_copy(url).name


def run_mirrored(mirror: Mirror, fn: Callable[..., Any], args: tuple) -> Any:
    """Run ``fn(*args)`` on this worker, through the store for the roots it does not see."""
    remote_roots = [r for r in mirror.roots if not r.shared()]
    if not remote_roots:
        return fn(*args)
    sync = _TaskSync(remote_roots)
    local_args = sync.translate(args)
    sync.fetch_arguments(local_args, output_dir=_output_dir(fn, local_args))
    before = sync.snapshot()
    token = _ACTIVE.set(sync)
    try:
        result = fn(*local_args)
    except FileNotFoundError as exc:
        raise StageError(
            f"a task on worker {socket.gethostname()} could not read {exc.filename}: this worker does not share the runner's files, "
            "and the file is neither in the store nor fetched by the task",
            where=getattr(fn, "__name__", "task"),
            hint="give inputs as URLs (s3://…) and the download cache as a URL (GRIST_CACHE=s3://…), or share the working copy "
            "between machines; a stage that reads files it was not given must call pipeline.exec.task_sync.ensure_local(path)",
        ) from exc
    finally:
        _ACTIVE.reset(token)
    sync.upload_changes(before, own_markers=_own_markers(fn, local_args))
    return sync.untranslate(result)


def _output_dir(fn: Callable[..., Any], args: tuple) -> str | None:
    """The node folder a ``task_entry`` task writes in (its outputs are looked for there only)."""
    from pipeline.exec.tasks import task_entry

    return str(args[1]) if fn is task_entry else None


def _own_markers(fn: Callable[..., Any], args: tuple) -> set[str] | None:
    """The completion marker this task writes (``task_entry``'s), or None when it writes none of
    its own. Another task running beside it on this machine may write markers in the same folder:
    only that task may upload its marker, after its own files."""
    from pipeline.exec.tasks import task_entry

    if fn is task_entry:  # (fn, node_dir, index, args, prefix)
        node_dir, index, prefix = args[1], args[2], args[4]
        return {str(Path(node_dir) / "_tasks" / f"{prefix}part-{index:05d}.json")}
    return None


def in_mirrored_task() -> bool:
    """True inside a task running on a worker that does not see the runner's files."""
    return _ACTIVE.get() is not None


def ensure_local(path: str | os.PathLike) -> Path:
    """Inside a task: make ``path`` (a file or a folder of the run) present and current here.
    A no-op where the worker shares the runner's files."""
    sync = _ACTIVE.get()
    if sync is not None:
        sync.fetch(str(path))
    return Path(path)


class _TaskSync:
    def __init__(self, roots: list[StoreRoot]):
        from pipeline.io.remote import RemoteDir

        self.pairs = []  # (runner path, worker path, RemoteDir)
        for root in roots:
            local = worker_copy(root.url)
            key = (root.url, str(local))
            if key not in _STORES:
                _STORES[key] = RemoteDir(root.url, local)
            self.pairs.append((root.runner_path.rstrip("/"), str(local), _STORES[key]))
        self.fetched: dict[str, tuple[int, int]] = {}  # downloaded for reading: not uploaded unless rewritten
        self.scopes: set[Path] = set()

    # ------------------------------------------------------------------ paths
    def translate(self, value: Any) -> Any:
        return _map_strings(value, lambda s: _swap(s, [(r, w) for r, w, _ in self.pairs]))

    def untranslate(self, value: Any) -> Any:
        return _map_strings(value, lambda s: _swap(s, [(w, r) for r, w, _ in self.pairs]))

    def _locate(self, path: str):
        for _, worker, store in self.pairs:
            rel = _relative(path, worker)
            if rel is not None:
                return store, rel
        return None, None

    # ------------------------------------------------------------------ data
    def fetch_arguments(self, args: Any, output_dir: str | None = None) -> None:
        """Fetch the files among ``args``; note where the task may write: ``output_dir``, or the
        node folders of every path it is given."""
        if output_dir is not None:
            self.scopes.add(Path(output_dir))
        for path in _strings(args):
            store, rel = self._locate(path)
            if store is None or not rel:
                continue
            parts = rel.split("/")
            if output_dir is None and parts[0] == "stages" and len(parts) > 1:
                self.scopes.add(Path(store.local, "stages", parts[1]))
            self.fetch(path, folders=False)  # folders (a node's work/) only on demand: ensure_local

    def fetch(self, path: str, folders: bool = True) -> None:
        store, rel = self._locate(path)
        if store is None or not rel:
            return
        for got in store.fetch(rel, folders=folders):
            local = store.local / got
            if not local.is_file():
                continue
            st = local.stat()
            self.fetched[str(local)] = (st.st_size, st.st_mtime_ns)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        out = {}
        for scope in self.scopes:
            if scope.is_dir():
                for p in scope.rglob("*"):
                    if p.name.startswith(".") and ".tmp-" in p.name:
                        continue
                    try:
                        st = p.stat()
                    except FileNotFoundError:  # a task beside this one replaced or removed it meanwhile
                        continue
                    if p.is_file():
                        out[str(p)] = (st.st_size, st.st_mtime_ns)
        return out

    def upload_changes(self, before: dict[str, tuple[int, int]], own_markers: set[str] | None = None) -> None:
        after = self.snapshot()
        changed = [p for p, st in after.items() if before.get(p) != st and self.fetched.get(p) != st]
        if own_markers is not None:  # another task's marker goes up with (after) that task's files, by that task
            changed = [p for p in changed if not _is_marker(p) or p in own_markers]
        by_store: dict[int, tuple[Any, dict[str, list[int]]]] = {}
        for path in changed:
            store, rel = self._locate(path)
            if store is not None:
                by_store.setdefault(id(store), (store, {}))[1][rel] = list(after[path])
        for store, files in by_store.values():
            # skip what a task beside this one fetched from the store (or already uploaded)
            rels = sorted(set(files) - store.synced(files), key=lambda rel: (marker_rank(rel), rel))
            store.upload(rels)


def _is_marker(path: str) -> bool:
    return marker_rank(path) > 0


def _relative(path: str, root: str) -> str | None:
    root = root.rstrip("/")
    if path == root:
        return ""
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return None


def _swap(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        rel = _relative(text, old)
        if rel is not None:
            return f"{new}/{rel}" if rel else new
    return text


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string (and path) in nested tuples, lists and dicts; leave the rest."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Path):
        return Path(fn(str(value)))
    if isinstance(value, tuple):
        return tuple(_map_strings(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def _strings(value: Any):
    if isinstance(value, (str, Path)):
        yield str(value)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
