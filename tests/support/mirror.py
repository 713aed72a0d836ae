"""A loopback HTTP mirror for download tests.

``MirrorServer(root)`` serves the directory ``root`` on ``127.0.0.1`` (an
ephemeral port) from a background ``ThreadingHTTPServer``.  It never binds any
other address.  It speaks HTTP/1.1 with keep-alive, answers GET and HEAD, single
byte ranges (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), ``If-Range``, and lists
directories the way dumps.wikimedia.org does (nginx autoindex).

Every request is logged in ``.requests`` as
``{"method", "path", "range", "status", "bytes_sent"}`` where ``bytes_sent``
counts the *body* bytes handed to the socket (headers excluded).  Only file and
listing bodies are ever sent: error answers (403/404/416/503) have empty bodies,
so ``bytes_sent(suffix)`` is exactly the amount of file data served.

Fault injection (keys are URL paths such as
``"/zhwiki/20240601/zhwiki-20240601-pages-articles-multistream.xml.bz2"``; a key
without a leading slash, or any trailing part of the path such as a bare file
name, also matches):

* ``fail_next[path] = n``: the next ``n`` GETs of that path answer 503.
* ``truncate_body[path] = k``: the next GET of that path sends only ``k`` body
  bytes and then closes the connection, while ``Content-Length`` still announces
  the full length.  ``truncate_body[path] = (k, n)`` does so for the next ``n``
  GETs.  The entry is removed once used up.
* ``ignore_range = True``: Range headers are ignored; the full file is sent
  with status 200 (``Accept-Ranges: bytes`` is still advertised, like a
  misbehaving cache would).
"""

from __future__ import annotations

import email.utils
import html
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

__all__ = ["MirrorServer"]

_DISCONNECT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout)

_CONTENT_TYPES = {
    ".bz2": "application/x-bzip2",
    ".gz": "application/gzip",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".html": "text/html; charset=utf-8",
}

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def _content_type(path: Path) -> str:
    # Never derive Content-Encoding from ".bz2": clients would decode the body.
    return _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _parse_range(header: str, size: int):
    """Return (start, end) inclusive, "unsatisfiable", or None (ignore the header)."""
    if "," in header:  # multiple ranges: not supported, answer with the full body
        return None
    m = _RANGE_RE.match(header)
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last != "" else size - 1
    if last != "" and end < start:
        return None  # syntactically invalid: RFC 9110 says ignore it
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, mirror: "MirrorServer"):
        self.mirror = mirror
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address):  # keep stderr quiet
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MirrorServer/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections give up after this

    server: _Server

    # -- quiet ---------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - signature from stdlib
        pass

    def setup(self):
        super().setup()
        self.server.mirror._register_conn(self.connection)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.mirror._unregister_conn(self.connection)

    def send_response(self, code, message=None):
        entry = getattr(self, "_entry", None)
        if entry is not None:
            entry["status"] = code
        super().send_response(code, message)

    # -- dispatch ------------------------------------------------------------
    def do_GET(self):
        self._handle(head=False)

    def do_HEAD(self):
        self._handle(head=True)

    def _handle(self, head: bool):
        mirror = self.server.mirror
        path = urlsplit(self.path).path or "/"
        self._entry = {
            "method": self.command,
            "path": path,
            "range": self.headers.get("Range"),
            "status": None,
            "bytes_sent": 0,
        }
        mirror._begin(self._entry)
        try:
            self._serve(path, head)
        except _DISCONNECT_ERRORS:
            self.close_connection = True
        finally:
            mirror._end()
            self._entry = None

    def _empty(self, code: int, headers: dict[str, str] | None = None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_body(self, data: bytes):
        view = memoryview(data)
        chunk = self.server.mirror.chunk_size
        for i in range(0, len(view), chunk):
            part = view[i : i + chunk]
            self.wfile.write(part)
            self._entry["bytes_sent"] += len(part)

    def _serve(self, path: str, head: bool):
        mirror = self.server.mirror
        target = mirror._resolve(path)
        if target is None:
            self._empty(403)
            return
        if not target.exists():
            self._empty(404)
            return
        if self.command == "GET" and mirror._take_fail(path):
            self._empty(503)
            return
        if target.is_dir():
            self._serve_listing(path, target, head)
        elif target.is_file():
            self._serve_file(path, target, head)
        else:
            self._empty(403)

    def _serve_listing(self, path: str, target: Path, head: bool):
        display = path if path.endswith("/") else path + "/"
        lines = []
        if target != self.server.mirror.root:
            lines.append('<a href="../">../</a>')
        for child in sorted(target.iterdir(), key=lambda p: p.name):
            try:
                st = child.stat()
            except OSError:
                continue
            is_dir = child.is_dir()
            name = child.name + ("/" if is_dir else "")
            stamp = time.strftime("%d-%b-%Y %H:%M", time.gmtime(st.st_mtime))
            size = "-" if is_dir else str(st.st_size)
            link = '<a href="%s">%s</a>' % (quote(name), html.escape(name))
            pad = " " * max(1, 51 - len(name))
            lines.append(f"{link}{pad}{stamp} {size:>19}")
        title = html.escape(display)
        body = (
            f"<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n"
            f"<h1>Index of {title}</h1><hr><pre>" + "\r\n".join(lines) + "\r\n</pre><hr></body>\r\n</html>\r\n"
        ).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self._send_body(body)

    def _serve_file(self, path: str, target: Path, head: bool):
        mirror = self.server.mirror
        st = target.stat()
        size = st.st_size
        etag = '"%x-%x"' % (size, st.st_mtime_ns)
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)

        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header and not mirror.ignore_range:
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range.strip() in (etag, last_modified):
                parsed = _parse_range(range_header, size)
                if parsed == "unsatisfiable":
                    self._empty(
                        416,
                        {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
                    )
                    return
                if parsed is not None:
                    start, end = parsed
                    status = 206
        length = end - start + 1 if size else 0

        self.send_response(status)
        self.send_header("Content-Type", _content_type(target))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head or length == 0:
            return

        limit = length
        truncate = mirror._take_truncate(path)
        if truncate is not None:
            limit = max(0, min(length, truncate))
        chunk = mirror.chunk_size
        with open(target, "rb") as fh:
            fh.seek(start)
            remaining = limit
            while remaining > 0:
                data = fh.read(min(chunk, remaining))
                if not data:
                    break
                self.wfile.write(data)
                self._entry["bytes_sent"] += len(data)
                remaining -= len(data)
        if truncate is not None and limit < length:
            # Simulate a dropped connection: stop short of Content-Length.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class MirrorServer:
    """Serve ``root`` over HTTP on 127.0.0.1; use as a context manager."""

    def __init__(self, root: Path | str, *, chunk_size: int = 64 * 1024):
        self.root = Path(root).resolve()
        self.chunk_size = int(chunk_size)
        self.fail_next: dict[str, int] = {}
        self.truncate_body: dict[str, int | tuple[int, int]] = {}
        self.ignore_range: bool = False
        self._lock = threading.Condition()
        self._log: list[dict] = []
        self._inflight = 0
        self._conns: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "MirrorServer":
        if self._httpd is not None:
            return self
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"MirrorServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wake idle keep-alive handlers
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "MirrorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("MirrorServer is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, relpath: str) -> str:
        """URL of a path relative to the root, e.g. ``url_for("zhwiki/latest/")``."""
        return self.url + "/" + quote(relpath.lstrip("/"))

    # -- request log ---------------------------------------------------------
    @property
    def requests(self) -> list[dict]:
        """A snapshot (copies) of the request log, in arrival order."""
        with self._lock:
            return [dict(e) for e in self._log]

    def bytes_sent(self, path_suffix: str | None = None) -> int:
        """Body bytes sent, over all requests or those whose path ends with the suffix."""
        return sum(
            e["bytes_sent"]
            for e in self.requests
            if path_suffix is None or e["path"].endswith(path_suffix)
        )

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (log entries are final)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    # -- internals used by the handler ---------------------------------------
    def _begin(self, entry: dict) -> None:
        with self._lock:
            self._log.append(entry)
            self._inflight += 1

    def _end(self) -> None:
        with self._lock:
            self._inflight -= 1
            self._lock.notify_all()

    def _register_conn(self, conn) -> None:
        with self._lock:
            self._conns.add(conn)

    def _unregister_conn(self, conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _resolve(self, url_path: str) -> Path | None:
        decoded = unquote(url_path)
        if "\x00" in decoded or "\\" in decoded:
            return None
        parts = [p for p in decoded.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        candidate = self.root.joinpath(*parts)
        try:
            resolved = candidate.resolve()
            resolved.relative_to(self.root)
        except (ValueError, OSError, RuntimeError):
            return None
        return resolved

    @staticmethod
    def _match_key(table: dict, path: str):
        if path in table:
            return path
        for key in table:
            k = "/" + str(key).lstrip("/")
            if path == k or path.endswith(k):
                return key
        return None

    def _take_fail(self, path: str) -> bool:
        with self._lock:
            key = self._match_key(self.fail_next, path)
            if key is None:
                return False
            n = int(self.fail_next[key])
            if n <= 0:
                del self.fail_next[key]
                return False
            if n == 1:
                del self.fail_next[key]
            else:
                self.fail_next[key] = n - 1
            return True

    def _take_truncate(self, path: str) -> int | None:
        with self._lock:
            key = self._match_key(self.truncate_body, path)
            if key is None:
                return None
            value = self.truncate_body[key]
            if isinstance(value, tuple):
                k, n = int(value[0]), int(value[1])
            else:
                k, n = int(value), 1
            if n <= 1:
                del self.truncate_body[key]
            else:
                self.truncate_body[key] = (k, n - 1)
            return k if n >= 1 else None
