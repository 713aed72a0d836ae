"""One run per output folder at a time.

``RunLock(out_dir)`` takes an exclusive ``flock`` on ``out_dir/.grist-run.lock`` for the length of
the run. The kernel releases it when the holder exits in any way (an exception, Ctrl-C,
``kill -9``), so a lock is never left stale by a dead run; on NFS the lock is the server's
(``flock`` maps to POSIX locks there) and lapses with the client's lease. The file records who
holds it (pid, host, start time, command) so that a second run can say whom it is waiting for.

While the lock is held nothing else writes in the folder, so temporary files left by a killed
run (``.NAME.tmp`` / ``.NAME.tmp-N``) are removed when the lock is taken.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from pipeline.common.errors import PipelineError

LOCK_NAME = ".grist-run.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class RunLockedError(PipelineError):
    pass


class RunLock:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"another run is writing this output folder: {holder}",
                    where=str(self.out_dir),
                    hint="wait for it to finish (or stop it), or give this run another --out; the lock is released as soon as that process exits",
                ) from None
        self._fd = fd
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv[:6])}
        os.write(fd, (json.dumps(info) + "\n").encode())
        removed = remove_stale_temps(self.out_dir)
        self.removed_temps = removed
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "a process that has not recorded itself yet"
    return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')} ({info.get('command')})"


def remove_stale_temps(root: Path) -> list[Path]:
    """Remove temporary files and folders (``.NAME.tmp``, ``.NAME.tmp-N``) a stopped run left under
    ``root``. Call only while holding the lock: a live run's temporaries look the same."""
    removed = []
    for path in sorted(root.rglob(".*.tmp*"), key=lambda p: len(p.parts), reverse=True):
        name = path.name
        if not (name.endswith(".tmp") or ".tmp-" in name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
