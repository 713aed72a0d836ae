"""Remote storage through fsspec: ``--out``, the download cache and input files may be URLs
(``s3://bucket/prefix``, ``gs://…``, ``memory://…``; anything fsspec knows).

Stages keep working on local paths (memory maps, atomic renames); a ``RemoteDir`` is the local
working copy of a remote directory and the object store is the durable, shared copy:

* ``pull()`` brings the remote tree down before a run (what changed only), so a run resumed on
  another machine skips the nodes that are complete in the store;
* ``push(prefix)`` mirrors one node directory (or ``data/``) up: files that changed are uploaded,
  files that no longer exist locally are deleted remotely, and the completion markers
  (``_COMPLETE``) go last and are deleted first, so the store never says complete for a node
  whose files are not all there.

Credentials come from the usual places of each backend (environment, config files, instance
roles); they are never written to provenance or logs: URLs are recorded with ``redact_url``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pipeline.common.errors import PipelineError
from pipeline.io.urls import redact_url

# Written last on upload and removed first: a remote node is complete only when all its files are there.
LAST = ("_COMPLETE",)
STATE_FILE = ".grist-remote.json"


def marker_rank(rel: str) -> int:
    """Upload order: data (0), then per-task markers ``_tasks/…`` (1), then ``_COMPLETE`` (2).
    Deletion goes the other way: a marker never outlives (or precedes) what it vouches for."""
    parts = rel.split("/")
    if parts[-1] in LAST:
        return 2
    return 1 if "_tasks" in parts[:-1] else 0


class RemoteError(PipelineError):
    """A remote store could not be read or written."""


def is_url(value: str | os.PathLike | None) -> bool:
    """True for fsspec URLs other than plain local paths (``file://`` counts as local)."""
    if value is None:
        return False
    text = str(value)
    if "://" not in text:
        return False
    return not text.startswith("file://")


def url_fs(url: str):
    """(filesystem, path inside it) for ``url``; a clear error when the protocol's package is missing."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except ImportError as exc:  # e.g. s3fs not installed
        raise RemoteError(f"cannot open {redact_url(url)}: {exc}", hint="install the fsspec backend, e.g. pip install 'grist-pipeline[dask]' (includes s3fs)") from None
    except ValueError as exc:
        raise RemoteError(f"cannot open {redact_url(url)}: {exc}", hint="use a URL such as s3://bucket/prefix") from None


def staging_root() -> Path:
    env = os.environ.get("GRIST_STAGING")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grist" / "staging"


def default_local_copy(url: str) -> Path:
    """Where the working copy of ``url`` lives: one folder per URL under the staging root."""
    key = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return staging_root() / key


class RemoteDir:
    """A local working copy of a remote directory, synchronized on demand."""

    def __init__(self, url: str, local: Path | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = url_fs(self.url)
        self.root = self.root.rstrip("/")
        self.local = Path(local) if local is not None else default_local_copy(self.url)
        self.local.mkdir(parents=True, exist_ok=True)
        self._state_path = self.local / STATE_FILE
        # rel path -> {"remote": remote etag/size tag, "local": [size, mtime_ns]} as of the last sync
        self._state: dict[str, dict] = json.loads(self._state_path.read_text()) if self._state_path.exists() else {}

    # --------------------------------------------------------------------------- helpers
    def _remote_files(self, prefix: str = "") -> dict[str, str]:
        base = f"{self.root}/{prefix}".rstrip("/")
        try:
            self.fs.invalidate_cache(base)  # other machines (Dask workers) write here too: no stale listing
            if not self.fs.exists(base):
                return {}
            found = self.fs.find(base, detail=True)
        except Exception as exc:  # noqa: BLE001 - backend errors vary; name the URL
            raise RemoteError(f"cannot list {redact_url(self.url)}/{prefix}: {type(exc).__name__}: {exc}", hint="check the URL, the credentials and that the bucket exists") from None
        out = {}
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            rel = path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path
            out[rel] = _remote_tag(info)
        return out

    def _local_files(self, prefix: str = "") -> dict[str, list[int]]:
        base = self.local / prefix if prefix else self.local
        if base.is_file():
            files = [base]
        elif base.is_dir():
            files = [p for p in base.rglob("*") if p.is_file()]
        else:
            files = []
        out = {}
        for p in files:
            rel = p.relative_to(self.local).as_posix()
            if p.name.startswith(".grist-") or p.name.startswith(".") and ".tmp-" in p.name:
                continue
            st = p.stat()
            out[rel] = [st.st_size, st.st_mtime_ns]
        return out

    def _save_state(self) -> None:
        tmp = self._state_path.with_name(f"{self._state_path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self._state, sort_keys=True))
        os.replace(tmp, self._state_path)

    # ------------------------------------------------------------------------------ sync
    def pull(self, prefix: str = "") -> int:
        """Download remote files that changed since the last sync (or are missing locally).
        Returns the number of files fetched."""
        return self._pull_listing(self._remote_files(prefix))

    def _pull_listing(self, remote: dict[str, str]) -> int:
        fetched = 0
        for rel, tag in sorted(remote.items()):
            dest = self.local / rel
            known = self._state.get(rel, {})
            # in sync, or changed here since the last sync while the store's copy did not change:
            # ours is newer (a task on this machine rewrote it) and the next push sends it
            if dest.exists() and known.get("remote") == tag:
                continue
            self._download(rel, dest)
            self._state[rel] = {"remote": tag, "local": _stat(dest)}
            fetched += 1
        self._save_state()
        return fetched

    def synced(self, files: dict[str, list[int]]) -> set[str]:
        """Which of these local files (rel -> [size, mtime_ns]) are the store's copy as of a sync
        by one of this copy's processes (worker processes on one machine share a copy; the
        others' syncs are read from its state file)."""
        try:
            disk = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            disk = {}
        return {rel for rel, st in files.items() if st in (self._state.get(rel, {}).get("local"), disk.get(rel, {}).get("local"))}

    def push(self, prefix: str = "", delete: bool = True) -> int:
        """Mirror the local ``prefix`` (a folder or file, relative to the working copy) to the
        store: delete what is gone, upload what changed, completion markers last.
        Only files this copy has seen (pulled or pushed) are deleted: a file another machine
        uploaded meanwhile (a Dask worker's finished partition) stays.
        Returns the number of files uploaded."""
        local = self._local_files(prefix)
        remote = self._remote_files(prefix)
        stale = [rel for rel in remote if rel not in local and rel in self._state] if delete else []
        # Markers first, so a reader never sees a complete node (or task) with missing or stale files.
        stale.sort(key=lambda rel: (-marker_rank(rel), rel))
        for rel in stale:
            self._rm(rel)
            self._state.pop(rel, None)
        changed = [rel for rel, st in local.items() if self._state.get(rel, {}).get("local") != st or rel not in remote]
        # A marker that must be rewritten is removed before its node's other files change.
        for rel in changed:
            if Path(rel).name in LAST and rel in remote:
                self._rm(rel)
        changed.sort(key=lambda rel: (marker_rank(rel), rel))
        for rel in changed:
            try:
                self.fs.put_file(str(self.local / rel), f"{self.root}/{rel}")
                info = self.fs.info(f"{self.root}/{rel}")
            except Exception as exc:  # noqa: BLE001
                self._save_state()
                raise RemoteError(f"cannot upload {rel} to {redact_url(self.url)}: {type(exc).__name__}: {exc}", hint="check credentials and free space; re-running resumes the upload") from None
            self._state[rel] = {"remote": _remote_tag(info), "local": local[rel]}
        self._save_state()
        return len(changed)

    def fetch(self, rel: str, folders: bool = True) -> list[str]:
        """Make the local copy of ``rel`` (a file, or with ``folders`` a folder) current; returns
        the files it holds (empty when the store has nothing there; a stale local file is then
        removed)."""
        path = f"{self.root}/{rel}"
        try:
            self.fs.invalidate_cache(path)
            info = self.fs.info(path)
        except FileNotFoundError:
            info = None
        except Exception as exc:  # noqa: BLE001
            raise RemoteError(f"cannot read {redact_url(self.url)}/{rel}: {type(exc).__name__}: {exc}") from None
        if info is None or info.get("type") == "directory":
            if info is not None:
                if not folders:
                    return []
                # a folder becomes an exact copy of the store's: a file left by an earlier run
                # (another tokenizer's model) must not be read beside the current ones
                remote = self._remote_files(rel)
                self._pull_listing(remote)
                for extra in set(self._local_files(rel)) - set(remote):
                    (self.local / extra).unlink(missing_ok=True)
                    self._state.pop(extra, None)
                return sorted(remote)
            dest = self.local / rel
            if dest.is_file():
                dest.unlink()  # left by an earlier run; the store is the truth
            return []
        dest = self.local / rel
        tag = _remote_tag(info)
        known = self._state.get(rel, {})
        if not (dest.exists() and known.get("remote") == tag and known.get("local") == _stat(dest)):
            self._download(rel, dest)
            self._state[rel] = {"remote": tag, "local": _stat(dest)}
            self._save_state()
        return [rel]

    def upload(self, rels: list[str]) -> None:
        """Upload these files of the local copy, in the given order (no deletion, no listing)."""
        for rel in rels:
            try:
                self.fs.put_file(str(self.local / rel), f"{self.root}/{rel}")
                info = self.fs.info(f"{self.root}/{rel}")
            except Exception as exc:  # noqa: BLE001
                raise RemoteError(f"cannot upload {rel} to {redact_url(self.url)}: {type(exc).__name__}: {exc}", hint="check credentials and free space") from None
            self._state[rel] = {"remote": _remote_tag(info), "local": _stat(self.local / rel)}
        self._save_state()

    def _download(self, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            self.fs.get_file(f"{self.root}/{rel}", str(tmp))
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise RemoteError(f"cannot download {redact_url(self.url)}/{rel}: {type(exc).__name__}: {exc}") from None
        os.replace(tmp, dest)

    def _rm(self, rel: str) -> None:
        try:
            self.fs.rm_file(f"{self.root}/{rel}")
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise RemoteError(f"cannot delete {redact_url(self.url)}/{rel}: {type(exc).__name__}: {exc}") from None


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _remote_tag(info: dict) -> str:
    """What identifies a remote file's content cheaply: ETag (S3/GCS) or size + mtime."""
    for key in ("ETag", "etag", "md5Hash", "checksum"):
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}:{info.get('size')}"
    return f"size:{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('created')}"


def fetch_input(url: str, cache_dir: Path) -> tuple[Path, str]:
    """A local copy of the remote input file ``url`` in the cache, and its sha256.

    The copy is keyed by the URL and re-fetched when the remote tag (ETag/size) changes; the
    sha256 is computed from the bytes actually read, so it pins the content."""
    fs, path = url_fs(url)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise RemoteError(f"input {redact_url(url)} does not exist", hint="check the URL (globs: s3://bucket/dir/*.jsonl)") from None
    except Exception as exc:  # noqa: BLE001
        raise RemoteError(f"cannot read {redact_url(url)}: {type(exc).__name__}: {exc}", hint="check the URL and credentials") from None
    tag = _remote_tag(info)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    dest = Path(cache_dir) / "remote" / key / Path(path).name
    meta = dest.with_name(dest.name + ".meta.json")
    if dest.exists() and meta.exists():
        recorded = json.loads(meta.read_text())
        if recorded.get("tag") == tag:
            return dest, recorded["sha256"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    h = hashlib.sha256()
    with fs.open(path, "rb") as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    os.replace(tmp, dest)
    meta.write_text(json.dumps({"url": redact_url(url), "tag": tag, "sha256": h.hexdigest()}))
    return dest, h.hexdigest()


def expand_inputs(pattern: str) -> list[str]:
    """The URLs a remote path or glob names, sorted (``s3://b/dir/*.jsonl``)."""
    fs, path = url_fs(pattern)
    protocol = pattern.split("://", 1)[0]
    try:
        matched = sorted(fs.glob(path)) if any(c in path for c in "*?[") else ([path] if fs.exists(path) else [])
    except Exception as exc:  # noqa: BLE001
        raise RemoteError(f"cannot list {redact_url(pattern)}: {type(exc).__name__}: {exc}") from None
    return [f"{protocol}://{m}" for m in matched if fs.isfile(m)]


# ------------------------------------------------------------------------------ remote cache
# A download cache given as a URL: downloads land in a local working copy and are mirrored to
# the store, so another machine (or a fresh container) reuses verified files instead of
# fetching them from the origin again. Registered per local root by the runner.
_CACHE_MIRRORS: dict[str, RemoteDir] = {}


def use_remote_cache(url: str) -> Path:
    """Register ``url`` as the download cache; returns the local working copy to use as cache root."""
    mirror = RemoteDir(url)
    _CACHE_MIRRORS[str(mirror.local.resolve())] = mirror
    return mirror.local


def cache_mirror_for(path: Path) -> tuple[RemoteDir, str] | None:
    """The remote cache that ``path`` (a file in a local cache copy) belongs to, and its relative name."""
    resolved = Path(path).resolve()
    for root, mirror in _CACHE_MIRRORS.items():
        try:
            return mirror, resolved.relative_to(root).as_posix()
        except ValueError:
            continue
    return None
