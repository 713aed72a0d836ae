"""Executors run a stage's tasks; stages never see which one.

An executor takes a list of ``(function, args)`` calls (module-level functions, so they
pickle) and yields ``(index, result)`` as calls finish. The local executor uses a process
pool sized to the machine; ``workers=1`` runs in-process (handy for debugging).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Call = tuple[Callable[..., Any], tuple]


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*args)


def make_progress(console=None, transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


class Executor:
    name = "base"
    workers = 1

    def map(self, calls: list[Call], desc: str = "", progress: bool = True) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int | None = None, console=None):
        self.workers = max(1, workers or available_cores())
        self.console = console
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: workers do not inherit the parent's threads (progress refresh, HTTP pools).
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def map(self, calls: list[Call], desc: str = "", progress: bool = True) -> Iterator[tuple[int, Any]]:
        if not calls:
            return
        with make_progress(self.console, transient=False) as bar:
            task = bar.add_task(desc, total=len(calls), visible=progress)
            if self.workers == 1 or len(calls) == 1:
                for i, (fn, args) in enumerate(calls):
                    result = fn(*args)
                    bar.advance(task)
                    yield i, result
                return
            pool = self._get_pool()
            futures = {pool.submit(_call, fn, args): i for i, (fn, args) in enumerate(calls)}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        exc = fut.exception()
                        if exc is not None:
                            raise exc
                        bar.advance(task)
                        yield futures[fut], fut.result()
            finally:
                for fut in pending:
                    fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


EXECUTORS = {"local": LocalExecutor}


def make_executor(name: str, workers: int | None = None, console=None, **options) -> Executor:
    if name not in EXECUTORS:
        from pipeline.errors import PipelineError

        raise PipelineError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}", where="--executor")
    return EXECUTORS[name](workers=workers, console=console, **options)
