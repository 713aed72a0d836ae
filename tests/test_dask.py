"""`pipeline run --executor dask`: the wiki-zh manifest on a zhwiki-shaped loopback mirror gives the
same bytes as the local executor, resumes, runs against an external scheduler, and survives (or
fails clearly and then resumes from) a worker killed in the middle of a stage."""

from __future__ import annotations

import operator
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed", reason="the Dask executor needs the [dask] extra")

from distributed import Client, LocalCluster  # noqa: E402

from pipeline.common.errors import PipelineError, StageError  # noqa: E402
from pipeline.exec.executors import LocalExecutor  # noqa: E402
from pipeline.exec.factory import make_executor  # noqa: E402
from tests.conftest import REPO, SHARED, run_cli  # noqa: E402
from tests.support.mirror import MirrorServer  # noqa: E402
from tests.support.wikidump import build_curation_pages, build_mirror, build_pages  # noqa: E402

MANIFEST = REPO / "manifests" / "wiki-zh.yaml"
PAGES_PER_STREAM = 8  # several bz2 streams, one partition each: enough tasks to spread over workers
OTHER_ARTICLES = 20  # articles besides the duplicated ones and their copies (keeps the test short)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_outputs(a: Path, b: Path) -> None:
    for sub in ("data", "tokens"):
        ta, tb = tree(a / sub), tree(b / sub)
        assert ta and sorted(ta) == sorted(tb), f"{sub}: different files"
        different = [name for name in ta if ta[name] != tb[name]]
        assert not different, f"{sub}: different bytes in {different}"
    nodes = sorted(d.name for d in (a / "stages").iterdir())
    assert nodes == sorted(d.name for d in (b / "stages").iterdir())
    for node in nodes:  # the ledgers and kept parts of every node too
        for sub in ("removed", "."):
            ta = {k: v for k, v in tree(a / "stages" / node / sub).items() if k.endswith(".parquet") and (sub != "." or "/" not in k)}
            tb = {k: v for k, v in tree(b / "stages" / node / sub).items() if k.endswith(".parquet") and (sub != "." or "/" not in k)}
            assert ta == tb, f"{node}/{sub}: parquet files differ"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    pages, expected = build_pages(SHARED / "corpora" / "zhwiki-articles")
    pages, roles = build_curation_pages(pages, expected, SHARED if SHARED.is_dir() else None)
    # the originals with their Traditional/near-duplicate copies, foreign pages, redirects and other
    # namespaces, and a few more articles: every stage has work, dedup has clusters
    wanted = set(roles["foreign"]) | {i for pair in roles["traditional"] + roles["near_dup"] for i in pair}
    others = [p.page_id for p in pages if p.ns == 0 and p.redirect is None and p.page_id not in wanted]
    wanted |= set(others[:OTHER_ARTICLES])
    pages = [p for p in pages if p.page_id in wanted or p.ns != 0 or p.redirect is not None]
    root = tmp_path_factory.mktemp("dask-mirror")
    build_mirror(root, pages, pages_per_stream=PAGES_PER_STREAM)
    with MirrorServer(root) as server:
        yield server, len(pages)


@pytest.fixture(scope="module")
def run_args(mirror, tmp_path_factory):
    server, n_pages = mirror
    cache = tmp_path_factory.mktemp("dask-cache")
    args = [
        "--no-progress",
        "--set", f"sources.zhwiki.mirror={server.url}",
        "--set", f"sources.zhwiki.max_pages={n_pages - 2}",  # a max_pages-limited run: ranged fetches
        "--set", "sources.zhwiki.streams_per_partition=1",
    ]
    return args, {"GRIST_CACHE": str(cache)}


@pytest.fixture(scope="module")
def local_ref(run_args, tmp_path_factory):
    args, env = run_args
    out = tmp_path_factory.mktemp("local") / "out"
    proc = run_cli("run", str(MANIFEST), "--out", str(out), "--executor", "local", "--workers", "2", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "stages" / "extract").glob("part-*.parquet"))) >= 6
    return out


@pytest.fixture(scope="module")
def cluster():
    """An external cluster on 127.0.0.1, as `dask scheduler` + `dask worker` would give."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0") as c, Client(c) as client:
        yield c, client


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_dask_run_is_byte_identical_to_local(local_ref, run_args, tmp_path):
    args, env = run_args
    out = tmp_path / "out"
    proc = run_cli("run", str(MANIFEST), "--out", str(out), "--executor", "dask", "--workers", "2", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Dask: 2 worker(s)" in proc.stderr and "dashboard" in proc.stderr and "http://" in proc.stderr
    assert_same_outputs(local_ref, out)
    stats = (out / "stages" / "dedup" / "stats.json").read_text()
    assert '"clusters_with_duplicates": 0' not in stats  # the comparison covers real duplicate clusters
    # fingerprints do not depend on the executor: the local executor finds everything done
    again = run_cli("run", str(MANIFEST), "--out", str(out), "--executor", "local", *args, env=env)
    assert again.returncode == 0, again.stderr
    assert "ran 0 node(s), skipped 7" in again.stdout + again.stderr


def _kill_a_worker_running(client: Client, prefix: str, proc: subprocess.Popen, done: dict) -> None:
    """Wait until a task whose key starts with ``prefix`` is running, then SIGKILL its worker."""
    pids = client.run(os.getpid)
    while proc.poll() is None:
        for addr, keys in client.processing().items():
            if any(str(k).startswith(prefix) for k in keys):
                os.kill(pids[addr], signal.SIGKILL)  # like a lost machine: no clean shutdown
                done["killed"] = (addr, [str(k) for k in keys])
                return
        time.sleep(0.01)


def _run(out: Path, scheduler: str, args: list[str], env: dict, kill: tuple[Client, str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(MANIFEST), "--out", str(out), "--executor", "dask", "--scheduler", scheduler, *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env, "COLUMNS": "200"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done: dict = {}
    if kill:
        killer = threading.Thread(target=_kill_a_worker_running, args=(*kill, proc, done), daemon=True)
        killer.start()
    stdout, stderr = proc.communicate(timeout=300)
    if kill:
        killer.join(timeout=10)
        try:
            kill[0].wait_for_workers(2, timeout=30)  # the nanny restarts the killed worker...
        except TimeoutError:
            # ...unless the cluster closed that nanny first (seen once in CI: SpecCluster retires a
            # nanny whose worker it counts as lost); the rest of the module needs one worker
            kill[0].wait_for_workers(1, timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), done


@pytest.mark.slow
def test_external_scheduler_survives_a_killed_worker_and_resumes(local_ref, run_args, cluster, tmp_path):
    args, env = run_args
    c, client = cluster
    out = tmp_path / "out"
    proc, done = _run(out, c.scheduler_address, args, env, kill=(client, "quality_"))
    assert done.get("killed"), "no quality task was seen running"
    assert proc.returncode == 0, proc.stderr
    assert f"at {c.scheduler_address}" in proc.stderr
    assert_same_outputs(local_ref, out)
    # resume: the same command does no stage work
    again, _ = _run(out, c.scheduler_address, args, env)
    assert again.returncode == 0, again.stderr
    assert "ran 0 node(s), skipped 7" in again.stdout + again.stderr
    assert_same_outputs(local_ref, out)


@pytest.mark.slow
def test_killed_worker_with_no_retries_fails_clearly_then_resumes(local_ref, run_args, cluster, tmp_path):
    args, env = run_args
    c, client = cluster
    out = tmp_path / "out"
    # what `distributed.scheduler.allowed-failures: 0` sets at start: Dask gives up on a task the
    # first time a worker dies running it (set on the running scheduler, to reuse the warm workers)
    saved, c.scheduler.allowed_failures = c.scheduler.allowed_failures, 0
    try:
        proc, done = _run(out, c.scheduler_address, args, env, kill=(client, "quality_"))
    finally:
        c.scheduler.allowed_failures = saved
    assert done.get("killed"), "no quality task was seen running"
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        # Race: the task finished (and its result reached the scheduler) just before the kill, so
        # nothing was lost: the run must then have recovered with the same bytes.
        assert_same_outputs(local_ref, out)
        return
    assert "died" in proc.stderr and "node 'quality'" in proc.stderr and "run the same command again" in proc.stderr, proc.stderr
    assert not (out / "stages" / "quality" / "_COMPLETE").exists() and not (out / "data").exists()
    assert (out / "stages" / "lang" / "_COMPLETE").exists()
    rerun, _ = _run(out, c.scheduler_address, args, env)
    assert rerun.returncode == 0, rerun.stderr
    assert "skipped 4" in rerun.stdout + rerun.stderr  # zhwiki, extract, clean, lang were complete
    assert_same_outputs(local_ref, out)


@pytest.mark.slow
def test_workers_without_the_runners_files_exchange_them_through_s3(local_ref, run_args, tmp_path, monkeypatch):
    """Two "machines": one worker sees the runner's working copy, the other does not (its own
    staging folder, GRIST_SHARED_FS=0), so it fetches its inputs from S3 and uploads its outputs.
    The store ends up with the local executor's bytes, and a re-run does nothing."""
    pytest.importorskip("moto", reason="moto[server] is needed for the S3 tests")
    pytest.importorskip("s3fs", reason="s3fs is needed for the S3 tests")
    from pipeline.io import remote
    from tests.support.s3 import S3Server

    args, _ = run_args
    with S3Server() as s3:
        blind_copy = tmp_path / "worker-machine"
        blind_env = {**s3.env, "GRIST_SHARED_FS": "0", "GRIST_STAGING": str(blind_copy)}
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0", env=blind_env) as c:
            shared = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", c.scheduler_address, "--nthreads", "1", "--no-dashboard", "--name", "shared"],
                cwd=REPO, env={**os.environ, **s3.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                with Client(c) as client:
                    client.wait_for_workers(2, timeout=60)
                env = {**s3.env, "GRIST_CACHE": "s3://grist/cache", "GRIST_STAGING": str(tmp_path / "runner-machine")}
                proc = run_cli("run", str(MANIFEST), "--out", "s3://grist/runs/d", "--executor", "dask", "--scheduler", c.scheduler_address, *args, env=env)
                assert proc.returncode == 0, proc.stderr
                assert "1 of 2 worker(s) do not see this machine's working copy" in proc.stderr, proc.stderr
                again = run_cli("run", str(MANIFEST), "--out", "s3://grist/runs/d", "--executor", "dask", "--scheduler", c.scheduler_address, *args, env=env)
                assert again.returncode == 0, again.stderr
                assert "ran 0 node(s), skipped 7" in again.stdout + again.stderr
            finally:
                shared.terminate()
                shared.wait(timeout=30)
        # the blind worker really worked from its own copy: parts of every map stage went through it
        worked = {p.parent.name for p in blind_copy.glob("workers/*/stages/*/part-*.parquet")}
        assert len(worked) >= 3, worked
        print("stages the blind worker wrote parts of:", sorted(worked))
        # what the store holds is what the local executor wrote
        s3.apply_env(monkeypatch)
        remote.RemoteDir("s3://grist/runs/d", tmp_path / "check").pull()
        assert_same_outputs(local_ref, tmp_path / "check")


# ------------------------------------------------------------------------------------ units
def _record_files(root: Path, rng: np.random.Generator, parts: int = 4, rows: int = 5000) -> list[str]:
    files = []
    for i in range(parts):
        h = rng.integers(0, 2**64 - 1, rows, dtype=np.uint64, endpoint=True)
        h[:50] = h[50:100]  # equal hashes within and across parts
        h[100:110] = [0, 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1, 2**62, 3 * 2**62, 3 * 2**62 - 1]
        k = rng.permutation(np.arange(i * rows, (i + 1) * rows, dtype=np.int64))
        path = root / f"part-{i}.parquet"
        pq.write_table(pa.table({"h": h, "k": k}), path, row_group_size=1000)
        files.append(str(path))
    return files


def test_shuffle_gives_the_same_bytes_on_both_executors(cluster, tmp_path):
    files = _record_files(tmp_path, np.random.default_rng(7))
    shards = 4
    bounds = [(s << 64) // shards for s in range(shards)] + [1 << 64]
    with LocalExecutor(workers=1) as ex:
        local = ex.shuffle(files, "h", bounds, str(tmp_path / "local"), sort_by=["h", "k"], progress=False)
    with make_executor("dask", scheduler=cluster[0].scheduler_address) as ex:
        dist = ex.shuffle(files, "h", bounds, str(tmp_path / "dask"), sort_by=["h", "k"], progress=False)
    everything = pa.concat_tables([pq.read_table(f) for f in files])
    total = 0
    for s in range(shards):
        assert Path(local[s]).read_bytes() == Path(dist[s]).read_bytes()
        t = pq.read_table(local[s])
        h, k = t["h"].to_numpy(), t["k"].to_numpy()
        assert ((h >= bounds[s]) & (h < bounds[s + 1]) if s < shards - 1 else h >= bounds[s]).all()
        assert (np.lexsort((k, h)) == np.arange(len(h))).all()
        total += len(h)
    assert total == everything.num_rows


def test_components_give_the_same_clusters_on_both_executors(cluster, tmp_path):
    rng = np.random.default_rng(3)
    n, files = 3000, []
    for i in range(3):
        u, v = rng.integers(0, n, 500), rng.integers(0, n, 500)
        if i == 0:  # a long chain: many rounds for plain label propagation
            u, v = np.concatenate([u, np.arange(100, 200)]), np.concatenate([v, np.arange(101, 201)])
        keep = u != v
        path = tmp_path / f"edges-{i}.parquet"
        pq.write_table(pa.table({"u": np.maximum(u, v)[keep], "v": np.minimum(u, v)[keep]}), path)
        files.append(str(path))
    bounds = [0, 700, 700, 2000, n - 1, n]  # an empty range and a one-node range too
    with LocalExecutor(workers=1) as ex:
        local, _ = ex.components(files, bounds, str(tmp_path / "local"), progress=False)
    with make_executor("dask", scheduler=cluster[0].scheduler_address) as ex:
        dist, how = ex.components(files, bounds, str(tmp_path / "dask"), progress=False)
    assert 1 < how["label_propagation_rounds"] < 20
    for a, b in zip(local, dist):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    rows = pa.concat_tables([pq.read_table(f) for f in local]).to_pylist()
    # check against a plain BFS: label = smallest node of the component, size = its node count
    adj: dict[int, set] = {}
    for f in files:
        for r in pq.read_table(f).to_pylist():
            adj.setdefault(r["u"], set()).add(r["v"])
            adj.setdefault(r["v"], set()).add(r["u"])
    comp: dict[int, list] = {}
    for start in sorted(adj):
        if start in comp:
            continue
        seen, todo = {start}, [start]
        while todo:
            for y in adj[todo.pop()] - seen:
                seen.add(y)
                todo.append(y)
        for x in seen:
            comp[x] = sorted(seen)
    assert rows == [{"node": x, "label": comp[x][0], "size": len(comp[x])} for x in sorted(comp)]


def test_task_failure_names_the_task_and_cancels(cluster):
    with make_executor("dask", scheduler=cluster[0].scheduler_address, retries=1) as ex:
        with pytest.raises(StageError, match=r"truediv failed after 2 attempt\(s\): ZeroDivisionError") as info:
            list(ex.map([(operator.truediv, (1, 1)), (operator.truediv, (1, 0))], desc="node: phase", progress=False))
        assert info.value.where == "node: phase" and "resume" in info.value.hint
        assert sorted(ex.map([(operator.add, (i, 1)) for i in range(5)], progress=False)) == [(i, i + 1) for i in range(5)]


def test_clear_errors_for_bad_executor_options(monkeypatch):
    with pytest.raises(PipelineError, match="--scheduler only apply to the Dask executor"):
        make_executor("local", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(PipelineError, match="cannot read 'lots' as a memory size"):
        make_executor("dask", workers=1, memory_limit="lots")
    with pytest.raises(PipelineError, match="cannot connect to the Dask scheduler"):
        make_executor("dask", scheduler="tcp://127.0.0.1:9", connect_timeout=1)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the [dask] extra were not installed
    monkeypatch.delitem(sys.modules, "pipeline.exec.dask_executor", raising=False)
    with pytest.raises(PipelineError) as info:
        make_executor("dask")
    assert "pip install 'grist-pipeline[dask]'" in str(info.value)
