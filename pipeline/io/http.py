"""HTTP downloads that can be trusted: cached, resumable, retried, verified.

* A descriptive User-Agent on every request (Wikimedia asks for one).
* Retries with exponential backoff on connection errors, timeouts, 429 and 5xx; a 429/503
  with ``Retry-After`` waits at least that long (capped by ``GRIST_HTTP_RETRY_AFTER_MAX``).
* Resume: a partial download lives at ``<file>.part`` and continues with ``Range``.
* Verification: md5/sha1/sha256 computed while downloading; a mismatch moves the file to
  ``<cache>/quarantine/`` and raises -- a bad file is never used.
* Cache: a verified file is not fetched again while its checksums match.
* Ranges: ``fetch_range`` reads bytes [start, end) of a file; ``RangedFile`` is a seekable file
  over ranged GETs (for Parquet readers that fetch only a footer and some column chunks), and
  counts what it moved.
* No secrets: credentials in URLs are redacted before anything is logged or recorded.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import requests

from pipeline import __version__
from pipeline.common import storage
from pipeline.common.errors import ChecksumError, SourceError
from pipeline.common.storage import file_digests
from pipeline.io import remote
from pipeline.io.urls import redact_url

USER_AGENT = f"grist-pipeline/{__version__} (dataset curation for LM pretraining; https://github.com/grist-pipeline/grist) python-requests/{requests.__version__}"
CHUNK = 1 << 20


def _retries() -> int:
    return int(os.environ.get("GRIST_HTTP_RETRIES", "5"))


def _backoff() -> float:
    return float(os.environ.get("GRIST_HTTP_BACKOFF", "1.0"))


def _retry_after_max() -> float:
    return float(os.environ.get("GRIST_HTTP_RETRY_AFTER_MAX", "300"))


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _wait(attempt: int, retry_after: float | None = None) -> float:
    """How long to wait before attempt ``attempt + 1``: exponential backoff, or what the server
    asked for with Retry-After when that is longer (never more than GRIST_HTTP_RETRY_AFTER_MAX)."""
    wait = _backoff() * (2**attempt)
    if retry_after is not None:
        wait = max(wait, min(retry_after, _retry_after_max()))
    return wait


_session: requests.Session | None = None


def session() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
        _session.headers["User-Agent"] = USER_AGENT
    return _session


@dataclass
class DownloadRecord:
    url: str
    path: str
    bytes: int
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> hex, computed locally
    verified: list[str] = field(default_factory=list)  # algorithms checked against published values
    etag: str | None = None
    last_modified: str | None = None
    retrieved_at: str | None = None
    from_cache: bool = False
    byte_range: list[int] | None = None  # [start, end) when only part of the file was fetched

    def to_json(self) -> dict:
        d = asdict(self)
        d["url"] = redact_url(self.url)
        return d


_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HostUnreachable(SourceError):
    """No answer at all from the host (name not resolved, connection refused or timed out, no
    route): this machine is offline or the host is down, as opposed to an HTTP error."""


def _connection_problem(exc: Exception) -> str:
    text = str(exc)
    for needle, plain in (
        ("Failed to resolve", "its name does not resolve (DNS)"), ("Name or service not known", "its name does not resolve (DNS)"),
        ("Temporary failure in name resolution", "its name does not resolve (DNS)"), ("Connection refused", "the connection was refused"),
        ("Network is unreachable", "the network is unreachable"), ("No route to host", "there is no route to it"),
    ):
        if needle in text:
            return plain
    return "the connection timed out" if isinstance(exc, requests.Timeout) else f"the connection failed ({type(exc).__name__})"


def _request(method: str, url: str, *, headers: dict | None = None, stream: bool = False) -> requests.Response:
    """One request with retries for transient failures; raises SourceError with advice otherwise
    (``HostUnreachable`` when the host never answered)."""
    attempts = max(1, _retries())
    last: str = ""
    unreachable: str | None = None
    throttled = 0
    for attempt in range(attempts):
        retry_after = None
        try:
            resp = session().request(method, url, headers=headers or {}, stream=stream, timeout=(10, 60))
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = f"{type(exc).__name__}: {exc}"
            unreachable = _connection_problem(exc)
        else:
            if resp.status_code not in _RETRY_STATUS:
                return resp
            last, unreachable = f"HTTP {resp.status_code}", None
            if resp.status_code in (429, 503):
                throttled += 1
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            resp.close()
        if attempt + 1 < attempts:
            time.sleep(_wait(attempt, retry_after))
    if unreachable is not None:
        host = urlsplit(url).hostname or url
        raise HostUnreachable(
            f"cannot reach {host}: {unreachable} ({attempts} attempts)",
            where=redact_url(url),
            hint="this machine may be offline, or a proxy or firewall blocks the host: use a mirror you can reach (--set sources.NAME.mirror=URL), or a download an earlier run cached (GRIST_CACHE)",
        )
    if throttled == attempts:
        raise SourceError(
            f"the server kept refusing with {last} (throttling) for {attempts} attempts",
            where=redact_url(url),
            hint="the host is throttling this client (Common Crawl answers 503 when overloaded): wait and re-run (finished files are cached and kept), raise GRIST_HTTP_RETRIES / GRIST_HTTP_BACKOFF, or fetch fewer files at once",
        )
    raise SourceError(
        f"request failed after {attempts} attempts ({last})",
        where=redact_url(url),
        hint="the server keeps failing: try again later, or use another mirror (--set sources.NAME.mirror=URL)",
    )


def _raise_for_status(resp: requests.Response, url: str) -> None:
    if resp.status_code == 404:
        raise SourceError("not found (HTTP 404)", where=redact_url(url), hint="check the URL, the dump date and the wiki name")
    if resp.status_code >= 400:
        raise SourceError(f"HTTP {resp.status_code} {resp.reason}", where=redact_url(url), hint="check the URL and your access to it")


def get_bytes(url: str) -> bytes:
    resp = _request("GET", url)
    _raise_for_status(resp, url)
    return resp.content


def get_text(url: str) -> str:
    return get_bytes(url).decode("utf-8", errors="replace")


def get_json(url: str):
    import json

    data = get_bytes(url)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise SourceError(f"response is not valid JSON ({exc})", where=redact_url(url)) from None


def _quarantine(path: Path, cache_root: Path) -> Path:
    qdir = cache_root / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    target = qdir / f"{path.name.removesuffix('.part')}.{time.time_ns()}.bad"
    os.replace(path, target)
    return target


def _verify(path: Path, url: str, expected: dict[str, str], cache_root: Path, digests: dict[str, str]) -> list[str]:
    for algo, want in expected.items():
        got = digests.get(algo)
        if got is None:
            continue
        if got.lower() != want.lower():
            q = _quarantine(path, cache_root)
            raise ChecksumError(
                f"checksum mismatch: {algo} expected {want}, got {got}; the file was moved to {q} and will not be used",
                where=redact_url(url),
                hint="the mirror served a corrupt or changed file; re-run to fetch it again, or use another mirror",
            )
    return sorted(a for a in expected if a in digests)


def download(
    url: str,
    dest: Path,
    *,
    cache_root: Path,
    expected: dict[str, str] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> DownloadRecord:
    """Fetch ``url`` to ``dest`` (resuming, retrying), verify ``expected`` checksums, cache."""
    expected = {k: v for k, v in (expected or {}).items() if v}
    algorithms = tuple(sorted(set(expected) | {"sha256"}))
    meta_path = dest.with_name(dest.name + ".meta.json")
    mirror = remote.cache_mirror_for(dest)
    if mirror is not None and not (dest.exists() and meta_path.exists()):
        # a remote cache may hold it already; it is verified below like any cached copy
        store, rel = mirror
        store.pull(rel + ".meta.json")
        if meta_path.exists():
            store.pull(rel)
    if dest.exists() and meta_path.exists():
        digests = file_digests(dest, algorithms)
        if all(digests[a].lower() == v.lower() for a, v in expected.items()):
            meta = storage.read_json(meta_path)
            meta.update(path=str(dest), checksums=digests, verified=sorted(expected), from_cache=True, bytes=dest.stat().st_size)
            return DownloadRecord(**meta)
        # cached copy no longer matches what the source publishes: fetch again
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    etag = last_modified = None
    for attempt in range(max(1, _retries())):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        resp = _request("GET", url, headers=headers, stream=True)
        if resp.status_code == 416 and have:
            resp.close()
            break  # we already have every byte
        _raise_for_status(resp, url)
        etag = resp.headers.get("ETag", etag)
        last_modified = resp.headers.get("Last-Modified", last_modified)
        if resp.status_code == 206:
            mode = "ab"
            total = _total_from_content_range(resp.headers.get("Content-Range")) or None
        else:
            mode, have = "wb", 0
            total = int(resp.headers["Content-Length"]) if "Content-Length" in resp.headers else None
        try:
            with open(part, mode) as fh:
                for chunk in resp.iter_content(1 << 16):  # small reads: a dropped connection loses little
                    fh.write(chunk)
                    have += len(chunk)
                    if on_progress:
                        on_progress(have, total)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout):
            pass  # dropped mid-body: resume from what we have
        except OSError as exc:
            if storage.is_disk_full(exc):  # the .part file stays: a re-run resumes from it
                raise storage.disk_full(part, (total - have) if total else None, done=have) from None
            raise
        finally:
            resp.close()
        if total is None or have >= total:
            break
        time.sleep(_backoff() * (2**attempt))
    else:
        raise SourceError(
            f"download incomplete after {_retries()} attempts ({part.stat().st_size if part.exists() else 0} bytes)",
            where=redact_url(url),
            hint="re-run to resume the download from where it stopped",
        )

    digests = file_digests(part, algorithms)
    verified = _verify(part, url, expected, cache_root, digests)
    os.replace(part, dest)
    record = DownloadRecord(
        url=url,
        path=str(dest),
        bytes=dest.stat().st_size,
        checksums=digests,
        verified=verified,
        etag=etag,
        last_modified=last_modified,
        retrieved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    storage.atomic_write_json(meta_path, {k: v for k, v in record.to_json().items() if k not in ("path", "from_cache")})
    if mirror is not None:
        store, rel = mirror
        store.push(rel)
        store.push(rel + ".meta.json")  # after the file: a meta file always has its data beside it
    return record


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 0-99/1234"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def fetch_range(url: str, start: int, end: int) -> tuple[bytes, dict]:
    """Bytes [start, end) of ``url`` via a Range request (retried, resumed within the range).
    Works against servers that ignore Range too (reads only what it needs, then closes)."""
    buf = bytearray()
    headers_seen: dict = {}
    for attempt in range(max(1, _retries())):
        pos = start + len(buf)
        if pos >= end:
            break
        resp = _request("GET", url, headers={"Range": f"bytes={pos}-{end - 1}"}, stream=True)
        if resp.status_code == 416:
            resp.close()
            break
        _raise_for_status(resp, url)
        headers_seen = {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}
        if resp.status_code == 206:
            size = _total_from_content_range(resp.headers.get("Content-Range"))
        else:
            size = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length", "").isdigit() else None
        if size is not None:
            headers_seen["size"] = size  # the whole file's size
        skip = pos if resp.status_code == 200 else 0  # server ignored Range: skip up to pos
        try:
            for chunk in resp.iter_content(1 << 16):
                if skip:
                    drop = min(skip, len(chunk))
                    chunk, skip = chunk[drop:], skip - drop
                buf += chunk
                if start + len(buf) >= end:
                    break
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout):
            time.sleep(_backoff() * (2**attempt))
        finally:
            resp.close()
    return bytes(buf[: end - start]), headers_seen


def iter_ranges(url: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Read ``url`` sequentially in ranged chunks, so a caller that stops early transfers little."""
    pos = 0
    while True:
        data, _ = fetch_range(url, pos, pos + chunk_size)
        if not data:
            return
        yield data
        pos += len(data)
        if len(data) < chunk_size:
            return


class RangedFile(io.RawIOBase):
    """A read-only, seekable file over HTTP: each read is a ranged GET (retried, resumed) of at
    least ``min_read`` bytes, the extra kept for the next read. For readers that seek to what they
    need (Parquet footers and column chunks): ``bytes_read`` and ``requests`` count the traffic."""

    def __init__(self, url: str, size: int | None = None, min_read: int = 0):
        super().__init__()
        self.url = url
        self.pos = 0
        self.min_read = min_read
        self.bytes_read = 0
        self.requests = 0
        self._buf_start, self._buf = 0, b""
        self._size = size

    @property
    def size(self) -> int:
        if self._size is None:
            resp = _request("HEAD", self.url)
            if resp.status_code == 404:
                _raise_for_status(resp, self.url)
            length = resp.headers.get("Content-Length") if resp.status_code < 400 else None
            resp.close()
            if length is None or not length.isdigit():  # no HEAD: a one-byte ranged GET tells the size
                data, headers = fetch_range(self.url, 0, 1)
                self.bytes_read += len(data)
                self.requests += 1
                length = headers.get("size")
                if length is None:
                    raise SourceError("the server tells no file size (no Content-Length, no Content-Range)", where=redact_url(self.url))
            self._size = int(length)
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            self.pos = self.size + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        end = min(self.pos + n, self.size)
        if end <= self.pos:
            return b""
        if not (self._buf_start <= self.pos and end <= self._buf_start + len(self._buf)):
            fetch_end = min(self.size, max(end, self.pos + self.min_read))
            data, _ = fetch_range(self.url, self.pos, fetch_end)
            self.bytes_read += len(data)
            self.requests += 1
            if len(data) < fetch_end - self.pos:
                raise SourceError(f"short read: asked for bytes {self.pos}-{fetch_end - 1}, got {len(data)}", where=redact_url(self.url), hint="the connection keeps dropping: re-run")
            self._buf_start, self._buf = self.pos, data
        out = self._buf[self.pos - self._buf_start : end - self._buf_start]
        self.pos = end
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)
