"""pipeline/io/remote.py against a real S3-compatible server (moto, loopback)."""

from __future__ import annotations

import hashlib

import pytest

pytest.importorskip("moto", reason="moto[server] is needed for the S3 tests (pip install 'moto[server]')")
pytest.importorskip("s3fs", reason="s3fs is needed for the S3 tests")

from pipeline.io import remote  # noqa: E402
from tests.support.s3 import S3Server  # noqa: E402


@pytest.fixture
def s3(monkeypatch):
    with S3Server() as server:
        server.apply_env(monkeypatch)
        yield server


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_is_url():
    assert remote.is_url("s3://b/p") and remote.is_url("memory://x")
    assert not remote.is_url("/tmp/x") and not remote.is_url("out/x") and not remote.is_url("file:///tmp/x") and not remote.is_url(None)


def test_push_then_pull_on_another_machine(s3, tmp_path):
    a = remote.RemoteDir("s3://grist/run1", tmp_path / "a")
    _write(a.local / "stages/n/part-00000.parquet", b"p0")
    _write(a.local / "stages/n/_tasks/part-00000.json", b"{}")
    _write(a.local / "stages/n/_COMPLETE", b'{"fingerprint": "f1"}')
    assert a.push("stages/n") == 3
    assert a.push("stages/n") == 0  # nothing changed: nothing uploaded
    fs = s3.filesystem()
    assert fs.cat("grist/run1/stages/n/_COMPLETE") == b'{"fingerprint": "f1"}'

    b = remote.RemoteDir("s3://grist/run1", tmp_path / "b")
    assert b.pull() == 3
    assert (b.local / "stages/n/part-00000.parquet").read_bytes() == b"p0"
    assert b.pull() == 0


def test_push_removes_stale_files_and_rewrites_marker(s3, tmp_path):
    a = remote.RemoteDir("s3://grist/run2", tmp_path / "a")
    _write(a.local / "stages/n/part-00000.parquet", b"old0")
    _write(a.local / "stages/n/part-00001.parquet", b"old1")
    _write(a.local / "stages/n/_COMPLETE", b'{"fingerprint": "aaaa"}')
    a.push("stages/n")
    # the node re-ran with another fingerprint and fewer parts
    (a.local / "stages/n/part-00001.parquet").unlink()
    _write(a.local / "stages/n/part-00000.parquet", b"new0")
    _write(a.local / "stages/n/_COMPLETE", b'{"fingerprint": "bbbb"}')  # same size, other content
    a.push("stages/n")
    fs = s3.filesystem()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find("grist/run2")) == ["_COMPLETE", "part-00000.parquet"]
    assert fs.cat("grist/run2/stages/n/part-00000.parquet") == b"new0"
    assert fs.cat("grist/run2/stages/n/_COMPLETE") == b'{"fingerprint": "bbbb"}'


def test_marker_goes_last_and_is_removed_first(s3, tmp_path, monkeypatch):
    a = remote.RemoteDir("s3://grist/run3", tmp_path / "a")
    _write(a.local / "stages/n/part-00000.parquet", b"x")
    _write(a.local / "stages/n/_COMPLETE", b"{}")
    order = []
    real_put = a.fs.put_file

    def put(lpath, rpath, **kw):
        order.append(rpath.rsplit("/", 1)[1])
        return real_put(lpath, rpath, **kw)

    monkeypatch.setattr(a.fs, "put_file", put)
    a.push("stages/n")
    assert order == ["part-00000.parquet", "_COMPLETE"]

    # an upload that fails midway leaves no marker behind in the store
    _write(a.local / "stages/n/part-00000.parquet", b"changed")
    _write(a.local / "stages/n/_COMPLETE", b'{"f": 2}')

    def failing_put(lpath, rpath, **kw):
        raise OSError("connection reset")

    monkeypatch.setattr(a.fs, "put_file", failing_put)
    with pytest.raises(remote.RemoteError, match="cannot upload"):
        a.push("stages/n")
    assert not s3.filesystem().exists("grist/run3/stages/n/_COMPLETE")


def test_fetch_input_caches_and_pins_content(s3, tmp_path):
    fs = s3.filesystem()
    fs.pipe("grist/in/docs.jsonl", b'{"text": "a"}\n')
    path, sha = remote.fetch_input("s3://grist/in/docs.jsonl", tmp_path / "cache")
    assert path.read_bytes() == b'{"text": "a"}\n' and sha == hashlib.sha256(b'{"text": "a"}\n').hexdigest()
    fs.pipe("grist/in/docs.jsonl", b'{"text": "b"}\n')
    path2, sha2 = remote.fetch_input("s3://grist/in/docs.jsonl", tmp_path / "cache")
    assert path2.read_bytes() == b'{"text": "b"}\n' and sha2 != sha
    with pytest.raises(remote.RemoteError, match="does not exist"):
        remote.fetch_input("s3://grist/in/missing.jsonl", tmp_path / "cache")


def test_expand_inputs_glob(s3):
    fs = s3.filesystem()
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        fs.pipe(f"grist/g/{name}", b"{}")
    assert remote.expand_inputs("s3://grist/g/*.jsonl") == ["s3://grist/g/a.jsonl", "s3://grist/g/b.jsonl"]
    assert remote.expand_inputs("s3://grist/g/none-*.jsonl") == []


def test_missing_bucket_is_a_clear_error(s3, tmp_path):
    d = remote.RemoteDir("s3://no-such-bucket/x", tmp_path / "a")
    _write(d.local / "f", b"1")
    with pytest.raises(remote.RemoteError):
        d.push("f")


# ------------------------------------------------------------------ a whole run against the store
REMOTE_MANIFEST = """
name: remote-test
sources:
  - name: docs
    kind: http
    url: {url}
    sha256: {sha}
    license: CC-BY-4.0
stages:
  - {{name: clean, stage: clean}}
"""


def _docs() -> bytes:
    import json

    lines = [json.dumps({"id": f"d{i}", "text": f"第 {i} 篇文档。这里有一些中文句子，足够长。 Some English too, number {i}."}, ensure_ascii=False) for i in range(40)]
    lines.append(json.dumps({"id": "empty", "text": "   "}))
    return ("\n".join(lines) + "\n").encode()


def _files(fs, root: str) -> dict[str, bytes]:
    return {p[len(root) + 1 :]: fs.cat(p) for p in fs.find(root)}


def test_run_with_out_and_cache_in_s3_resumes_anywhere(s3, tmp_path):
    from tests.conftest import run_cli
    from tests.support.mirror import MirrorServer

    served = tmp_path / "www"
    served.mkdir()
    data = _docs()
    (served / "docs.jsonl").write_bytes(data)
    with MirrorServer(served) as www:
        manifest = tmp_path / "m.yaml"
        manifest.write_text(REMOTE_MANIFEST.format(url=www.url_for("docs.jsonl"), sha=hashlib.sha256(data).hexdigest()), encoding="utf-8")
        env = {**s3.env, "GRIST_CACHE": "s3://grist/cache", "GRIST_STAGING": str(tmp_path / "machine-a")}
        proc = run_cli("run", str(manifest), "--out", "s3://grist/runs/r1", "--no-progress", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "s3://grist/runs/r1" in proc.stderr
        fetched = [r for r in www.requests if r["path"].endswith("docs.jsonl")]
        assert len(fetched) == 1

        fs = s3.filesystem()
        stored = _files(fs, "grist/runs/r1")
        assert "stages/clean/_COMPLETE" in stored and "data/dataset_info.json" in stored and "README.md" in stored
        assert any(k.startswith("cache/http/") and k.endswith("docs.jsonl") for k in _files(fs, "grist")), "the verified download is in the S3 cache"

        # The same manifest locally: the store holds byte-identical data.
        local_env = {"GRIST_CACHE": str(tmp_path / "local-cache")}
        proc = run_cli("run", str(manifest), "--out", str(tmp_path / "local-out"), "--no-progress", env=local_env)
        assert proc.returncode == 0, proc.stderr
        for path in sorted((tmp_path / "local-out" / "data").iterdir()):
            assert stored[f"data/{path.name}"] == path.read_bytes(), path.name

        # Another machine (empty working copy): everything is complete in the store, nothing re-runs.
        www.reset_log()
        env_b = {**env, "GRIST_STAGING": str(tmp_path / "machine-b")}
        proc = run_cli("run", str(manifest), "--out", "s3://grist/runs/r1", "--no-progress", env=env_b)
        assert proc.returncode == 0, proc.stderr
        assert "ran 0 node(s)" in proc.stderr, proc.stderr
        assert not www.requests

        # A new output on a third machine: the verified download comes from the S3 cache, not the origin.
        env_c = {**env, "GRIST_STAGING": str(tmp_path / "machine-c")}
        proc = run_cli("run", str(manifest), "--out", "s3://grist/runs/r2", "--no-progress", env=env_c)
        assert proc.returncode == 0, proc.stderr
        assert not [r for r in www.requests if r["path"].endswith("docs.jsonl")], www.requests
        assert _files(fs, "grist/runs/r2")["data/dataset_info.json"] == stored["data/dataset_info.json"]


def test_unreachable_store_fails_clearly(tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: r\nsources:\n  - {name: a, kind: local, paths: [a.jsonl], license: CC0-1.0}\n", encoding="utf-8")
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1", "GRIST_STAGING": str(tmp_path / "st"), "GRIST_CACHE": str(tmp_path / "c")}
    proc = run_cli("run", str(manifest), "--out", "s3://grist/nowhere", "--no-progress", env=env, timeout=120)
    assert proc.returncode != 0
    assert "error" in proc.stderr and "s3://grist/nowhere" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_local_source_reads_inputs_from_s3(s3, tmp_path):
    from tests.conftest import run_cli

    fs = s3.filesystem()
    local_dir = tmp_path / "in"
    local_dir.mkdir()
    for i in range(2):
        payload = "".join(f'{{"text": "文件 {i} 的第 {j} 行文字。"}}\n' for j in range(5)).encode()
        fs.pipe(f"grist/inputs/part{i}.jsonl", payload)
        (local_dir / f"part{i}.jsonl").write_bytes(payload)
    manifest = tmp_path / "m.yaml"
    template = "name: r\nsources:\n  - {{name: a, kind: local, paths: ['{p}'], license: CC0-1.0}}\n"
    env = {**s3.env, "GRIST_CACHE": str(tmp_path / "cache"), "GRIST_STAGING": str(tmp_path / "st")}
    manifest.write_text(template.format(p="s3://grist/inputs/*.jsonl"), encoding="utf-8")
    proc = run_cli("run", str(manifest), "--out", str(tmp_path / "from-s3"), "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    manifest.write_text(template.format(p=str(local_dir / "*.jsonl")), encoding="utf-8")
    proc = run_cli("run", str(manifest), "--out", str(tmp_path / "from-disk"), "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    for path in sorted((tmp_path / "from-disk" / "data").glob("*.arrow")):
        assert (tmp_path / "from-s3" / "data" / path.name).read_bytes() == path.read_bytes()
    manifest.write_text(template.format(p="s3://grist/inputs/none-*.jsonl"), encoding="utf-8")
    proc = run_cli("run", str(manifest), "--out", str(tmp_path / "none"), "--no-progress", env=env)
    assert proc.returncode == 2 and "no file matches" in proc.stderr


# ------------------------------------------------------- tasks on workers without the runner's files
def _copy_task(src: str, node_dir: str) -> dict:
    """A task as stages write them: reads its input part (and a work file it finds itself), writes
    its output part; ``task_entry`` then writes its marker. Meanwhile "another task" on this
    machine finishes in the same folder: its marker must not be uploaded by this one."""
    from pathlib import Path

    from pipeline.exec.task_sync import ensure_local

    data = Path(src).read_bytes() + ensure_local(Path(node_dir) / "work" / "extra.bin").read_bytes()
    out = Path(node_dir) / "part-00000.parquet"
    out.write_bytes(data.upper())
    (Path(node_dir) / "_tasks").mkdir(exist_ok=True)
    (Path(node_dir) / "_tasks" / "part-00001.json").write_text("{}")  # the neighbour's marker
    return {"wrote": str(out)}


def test_a_worker_that_does_not_see_the_runner_works_through_the_store(s3, tmp_path, monkeypatch):
    from pipeline.exec import task_sync

    runner = remote.RemoteDir("s3://grist/run-t", tmp_path / "runner")
    _write(runner.local / "stages/a/part-00000.parquet", b"input")
    _write(runner.local / "stages/b/work/extra.bin", b"+extra")
    runner.push()
    root = task_sync.StoreRoot(str(runner.local), runner.url, task_sync.TOKEN_PREFIX + "t")
    (runner.local / root.token).write_text("")
    mirror = task_sync.Mirror((root,))
    args = (str(runner.local / "stages/a/part-00000.parquet"), str(runner.local / "stages/b"))

    # a worker on the runner's machine (it sees the token) works in place
    assert _copy_task_in(mirror, args) == {"wrote": str(runner.local / "stages/b/part-00000.parquet")}
    assert (runner.local / "stages/b/part-00000.parquet").read_bytes() == b"INPUT+EXTRA"
    (runner.local / "stages/b/part-00000.parquet").unlink()

    # a worker elsewhere: its own copy, inputs from the store, outputs back, marker last
    monkeypatch.setenv("GRIST_SHARED_FS", "0")
    monkeypatch.setenv("GRIST_STAGING", str(tmp_path / "other-machine"))
    uploads = []
    real_upload = remote.RemoteDir.upload
    monkeypatch.setattr(remote.RemoteDir, "upload", lambda self, rels: (uploads.extend(rels), real_upload(self, rels)))
    result = _copy_task_in(mirror, args)
    assert result == {"wrote": str(runner.local / "stages/b/part-00000.parquet")}  # paths come back in the runner's terms
    assert not (runner.local / "stages/b/part-00000.parquet").exists()  # nothing written in the runner's copy
    # inputs are not sent back, the marker goes last, the neighbour's marker is left to its task
    assert uploads == ["stages/b/part-00000.parquet", "stages/b/_tasks/part-00000.json"]
    fs = s3.filesystem()
    assert fs.cat("grist/run-t/stages/b/part-00000.parquet") == b"INPUT+EXTRA"
    assert not fs.exists("grist/run-t/stages/b/_tasks/part-00001.json")
    assert runner.pull() == 2 and (runner.local / "stages/b/part-00000.parquet").read_bytes() == b"INPUT+EXTRA"

    # a file neither in the store nor shared: a clear error, not a bare FileNotFoundError
    from pipeline.common.errors import StageError

    fs.rm_file("grist/run-t/stages/b/work/extra.bin")
    with pytest.raises(StageError, match="does not share the runner's files") as info:
        _copy_task_in(mirror, args)
    assert "ensure_local" in info.value.hint and "GRIST_CACHE=s3://" in info.value.hint


def _copy_task_in(mirror, args):
    from pipeline.exec import task_sync
    from pipeline.exec.tasks import task_entry

    return task_sync.run_mirrored(mirror, task_entry, (_copy_task, args[1], 0, args, ""))


def test_push_sends_task_markers_after_the_parts_they_vouch_for(s3, tmp_path, monkeypatch):
    d = remote.RemoteDir("s3://grist/run-order", tmp_path / "d")
    for rel in ("stages/n/_tasks/part-00000.json", "stages/n/part-00000.parquet", "stages/n/removed/part-00000.parquet", "stages/n/_COMPLETE"):
        _write(d.local / rel, rel.encode())
    sent = []
    real_put = d.fs.put_file
    monkeypatch.setattr(d.fs, "put_file", lambda src, dst, **kw: (sent.append(dst.split("run-order/", 1)[1]), real_put(src, dst, **kw)))
    d.push()
    assert sent == ["stages/n/part-00000.parquet", "stages/n/removed/part-00000.parquet", "stages/n/_tasks/part-00000.json", "stages/n/_COMPLETE"]


def test_pull_keeps_a_file_rewritten_here_and_folder_fetch_drops_stale_files(s3, tmp_path):
    a = remote.RemoteDir("s3://grist/run-sync", tmp_path / "a")
    _write(a.local / "stages/n/part-00000.parquet", b"old")
    a.push()
    # a task on this machine rewrote the part after the last sync; the store's copy is older
    _write(a.local / "stages/n/part-00000.parquet", b"newer")
    assert a.pull() == 0 and (a.local / "stages/n/part-00000.parquet").read_bytes() == b"newer"
    assert a.push() == 1 and s3.filesystem().cat("grist/run-sync/stages/n/part-00000.parquet") == b"newer"

    # a worker's copy of a folder: an earlier run's tokenizer.model must not stay beside the new files
    w = remote.RemoteDir("s3://grist/run-sync", tmp_path / "w")
    _write(a.local / "stages/t/tokenizer/tokenizer.model", b"sp")
    a.push()
    assert sorted(w.fetch("stages/t/tokenizer")) == ["stages/t/tokenizer/tokenizer.model"]
    (a.local / "stages/t/tokenizer/tokenizer.model").unlink()
    _write(a.local / "stages/t/tokenizer/tokenizer.json", b"{}")
    a.push()
    assert w.fetch("stages/t/tokenizer") == ["stages/t/tokenizer/tokenizer.json"]
    assert sorted(p.name for p in (w.local / "stages/t/tokenizer").iterdir()) == ["tokenizer.json"]


def test_an_input_only_the_runner_has_gets_the_store_hint_on_a_blind_worker(s3, tmp_path, monkeypatch):
    from pipeline.common.errors import StageError
    from pipeline.exec import task_sync
    from stages.source_local import read_records_task

    runner = remote.RemoteDir("s3://grist/run-hint", tmp_path / "runner")
    mirror = task_sync.Mirror((task_sync.StoreRoot(str(runner.local), runner.url, task_sync.TOKEN_PREFIX + "h"),))
    monkeypatch.setenv("GRIST_SHARED_FS", "0")
    monkeypatch.setenv("GRIST_STAGING", str(tmp_path / "elsewhere"))
    node = runner.local / "stages/docs"
    args = (str(tmp_path / "only-on-the-runner.jsonl"), "jsonl", "file", {"text": "text"}, "docs", "CC0-1.0", "docs", str(node / "part-00000.parquet"), str(node / "removed/part-00000.parquet"))
    with pytest.raises(StageError, match="does not share the runner's files") as info:
        task_sync.run_mirrored(mirror, read_records_task, args)
    assert "s3://" in info.value.hint
    with pytest.raises(StageError, match="the file is gone"):  # the same task where files are shared
        read_records_task(*args)
