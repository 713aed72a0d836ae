from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Tests never wait long for flaky networks: they only talk to their own loopback servers.
os.environ.setdefault("GRIST_HTTP_RETRIES", "3")
os.environ.setdefault("GRIST_HTTP_BACKOFF", "0.05")


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared corpora not present at {SHARED}")
    return SHARED


@pytest.fixture(scope="module")
def one_torch_thread():
    """Training tests on one thread: the same numbers on every machine, and no oversubscription
    beside other test processes. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRIST_CACHE", str(cache))
    return cache


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real `pipeline` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )

# Loopback servers must never be reached through a proxy configured in the environment.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var, ""), "127.0.0.1", "localhost"]))
