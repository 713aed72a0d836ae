"""``make_executor``: an executor by name (``--executor local|dask``), with the flags checked."""

from __future__ import annotations

from typing import Callable

from pipeline.common.errors import PipelineError
from pipeline.exec.executors import Executor, LocalExecutor


def _dask_executor(**options) -> Executor:
    """Imported on demand: dask stays an optional dependency."""
    try:
        from pipeline.exec.dask_executor import DaskExecutor
    except ImportError as exc:
        raise PipelineError(
            f"the Dask executor needs dask and distributed ({exc})",
            where="--executor dask",
            hint="pip install 'grist-pipeline[dask]'",
        ) from exc
    return DaskExecutor(**options)


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "dask": _dask_executor}


def make_executor(name: str, workers: int | None = None, console=None, **options) -> Executor:
    if name not in EXECUTORS:
        raise PipelineError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}", where="--executor")
    if name == "local" and options:
        flags = ", ".join("--" + k.replace("memory_limit", "worker-memory").replace("_", "-") for k in sorted(options))
        raise PipelineError(f"{flags} only apply to the Dask executor", where="--executor local", hint="add --executor dask")
    if workers is not None and workers < 1:
        raise PipelineError(f"--workers must be at least 1, got {workers}", where="--workers")
    return EXECUTORS[name](workers=workers, console=console, **options)
