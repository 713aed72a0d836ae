"""What a new user's trial found: user mistakes and faults get a clear message and a non-zero
exit, never a traceback or silence, and lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

SMALL = """
name: small
sources:
  - name: docs
    kind: local
    paths: [docs.jsonl]
    license: CC-BY-4.0
stages:
  - {name: clean, stage: clean}
"""


def small_manifest(root: Path, lines: list[str] | None = None, text: str = SMALL) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = lines if lines is not None else [json.dumps({"text": f"第 {i} 篇文档：这里有足够的文字。"}, ensure_ascii=False) for i in range(5)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "m.yaml").write_text(text, encoding="utf-8")
    return root / "m.yaml"


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-2000:])


# ---- --out ------------------------------------------------------------------------------------


def test_out_naming_a_file_is_a_clear_error(tmp_path, cache_env):
    m = small_manifest(tmp_path)
    (tmp_path / "afile").write_text("mine")
    proc = run_cli("run", str(m), "--out", str(tmp_path / "afile"), "--no-progress")
    assert_clean_error(proc, "names an existing file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine"
    proc = run_cli("run", str(m), "--out", str(tmp_path / "afile" / "sub"), "--no-progress")
    assert_clean_error(proc, "is a file")


# ---- one run per output folder ------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from pipeline.run.lock import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold_lock(out: Path) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_the_same_out_is_refused_and_names_the_first(tmp_path, cache_env):
    m = small_manifest(tmp_path)
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        proc = run_cli("run", str(m), "--out", str(out), "--no-progress")
        assert_clean_error(proc, "another run is writing this output folder", f"pid {holder.pid}", os.uname().nodename)
        assert not (out / "stages").exists()  # it touched nothing
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing anything by hand: the lock went with it
    proc = run_cli("run", str(m), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr


def test_temporaries_of_a_killed_run_are_removed(tmp_path, cache_env):
    m = small_manifest(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", str(m), "--out", str(out), "--no-progress").returncode == 0
    stray = [out / ".tokens.tmp", out / "stages" / "clean" / ".part-00000.parquet.tmp-4242"]
    stray[0].mkdir()
    (stray[0] / "x.bin").write_bytes(b"partial")
    stray[1].write_bytes(b"partial")
    proc = run_cli("run", str(m), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in stray)
    assert "temporary file(s) an interrupted run left" in proc.stderr


# ---- local paths ------------------------------------------------------------------------------


def test_local_paths_outside_the_manifest_folder_are_read_and_logged(tmp_path, cache_env):
    elsewhere = tmp_path / "elsewhere"
    small_manifest(elsewhere)
    m = small_manifest(tmp_path / "project", text=SMALL.replace("paths: [docs.jsonl]", "paths: [../elsewhere/docs.jsonl]"))
    proc = run_cli("run", str(m), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    log = " ".join(proc.stderr.split())
    assert str((elsewhere / "docs.jsonl").resolve()) in log
    assert "outside the manifest's folder" in log


@pytest.mark.parametrize("target", ["/proc/self/status", "/dev/null", "fifo"])
def test_local_source_refuses_files_that_are_not_data(tmp_path, cache_env, target):
    if target == "fifo":
        target = str(tmp_path / "pipe.jsonl")
        os.mkfifo(target)
    m = small_manifest(tmp_path, text=SMALL.replace("paths: [docs.jsonl]", f"paths: ['{target}']"))
    proc = run_cli("run", str(m), "--out", str(tmp_path / "out"), "--no-progress", timeout=60)
    assert_clean_error(proc, "sources.docs.paths")
    assert "kernel pseudo-filesystem" in proc.stderr or "named pipe" in proc.stderr


# ---- empty results ------------------------------------------------------------------------------


def test_a_run_that_keeps_nothing_fails_with_the_funnel(tmp_path, cache_env):
    text = SMALL + "  - {name: lang, stage: lid_filter, params: {keep: [fr]}}\n  - {name: dedup, stage: dedup}\n"
    m = small_manifest(tmp_path, text=text)
    proc = run_cli("run", str(m), "--out", str(tmp_path / "out"), "--no-progress")
    assert_clean_error(proc, "node 'lang' left no documents", "docs (local): 5 documents read", "clean (clean): 5 in -> 5 out", "lang (lid_filter): 5 in -> 0 out; removed: lang:zh 5", "allow_empty: true")
    assert not (tmp_path / "out" / "data").exists()
    (tmp_path / "m.yaml").write_text(text + "allow_empty: true\n", encoding="utf-8")
    proc = run_cli("run", str(m), "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "0 documents" in proc.stderr


def test_a_source_that_yields_nothing_fails(tmp_path, cache_env):
    m = small_manifest(tmp_path, lines=[])
    (tmp_path / "docs.jsonl").write_text("", encoding="utf-8")
    proc = run_cli("run", str(m), "--out", str(tmp_path / "out"), "--no-progress")
    assert_clean_error(proc, "node 'docs' left no documents", "docs (local): 0 documents read")


# ---- invalid UTF-8 ------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [False, True])
def test_an_invalid_utf8_byte_costs_one_record_with_its_line(tmp_path, cache_env, pieces):
    import pyarrow.parquet as pq

    lines = [json.dumps({"text": f"第 {i} 篇文档：这里有足够的文字。" * 3}, ensure_ascii=False).encode() for i in range(400)]
    lines[2] = lines[2].replace("第".encode(), b"\xe7\xac", 1)  # a truncated 3-byte character
    lines[321] = b'{"text": "caf\xe9 latin-1"}'
    text = SMALL.replace("    license: CC-BY-4.0\n", "    license: CC-BY-4.0\n    partition_bytes: 4096\n") if pieces else SMALL
    m = small_manifest(tmp_path, text=text)
    lines.insert(100, b"")  # a blank line: not a record, but it counts for line numbers
    (tmp_path / "docs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    proc = run_cli("run", str(m), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stages" / "docs" / "stats.json").read_text())
    assert stats["partitions"] > 1 if pieces else stats["partitions"] == 1
    assert stats["in"] == 400 and stats["out"] == 398 and stats["removed_by_reason"] == {"parse:invalid-utf8": 2}
    ledger = pq.read_table(out / "stages" / "docs" / "removed").to_pylist()
    where = sorted((json.loads(r["signals"])["line"], r["id"]) for r in ledger)
    assert where == [(3, "docs/docs.jsonl:2"), (323, "docs/docs.jsonl:321")]
    assert all(json.loads(r["signals"])["file"] == "docs.jsonl" for r in ledger)


def test_invalid_utf8_in_a_text_file_or_json_array_is_ledgered(tmp_path, cache_env):
    import pyarrow.parquet as pq

    (tmp_path / "good.txt").write_text("一篇好文档。", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes("一篇坏文档。".encode() + b"\xff")
    (tmp_path / "arr.json").write_bytes(b'[{"text": "ok one"}, {"text": "bad \xc3("}, {"text": "ok two"}]')
    text = SMALL.replace("paths: [docs.jsonl]", "paths: ['*.txt', arr.json]")
    m = small_manifest(tmp_path, text=text)
    out = tmp_path / "out"
    proc = run_cli("run", str(m), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    ledger = pq.read_table(out / "stages" / "docs" / "removed").to_pylist()
    assert sorted((r["id"], r["reason"]) for r in ledger) == [("docs/arr.json:1", "parse:invalid-utf8"), ("docs/bad.txt", "parse:invalid-utf8")]
    assert json.loads((out / "stages" / "docs" / "stats.json").read_text())["out"] == 3


# ---- damaged local inputs -----------------------------------------------------------------------


def test_a_truncated_local_dump_is_never_to_be_deleted(tmp_path, cache_env, shared_dir):
    data = (shared_dir / "corpora" / "wikidumps" / "enwiki-sample-multistream.xml.bz2").read_bytes()
    (tmp_path / "dump.xml.bz2").write_bytes(data[: len(data) // 3])
    text = SMALL.replace("paths: [docs.jsonl]", "paths: [dump.xml.bz2]").replace("{name: clean, stage: clean}", "{name: extract, stage: wikitext_extract}")
    m = small_manifest(tmp_path, text=text)
    proc = run_cli("run", str(m), "--out", str(tmp_path / "out"), "--no-progress")
    assert_clean_error(proc, "truncated bz2 data", "your own input file")
    assert "delete" not in proc.stderr.lower()
    assert (tmp_path / "dump.xml.bz2").read_bytes() == data[: len(data) // 3]


# ---- max_pages samples are verified -------------------------------------------------------------


def _zhwiki_mirror(root: Path):
    from tests.conftest import SHARED
    from tests.support.wikidump import build_mirror, build_pages

    pages, _ = build_pages(SHARED / "corpora" / "zhwiki-articles")
    return build_mirror(root, pages, done_dates=("20240601",), pending_dates=())


def test_a_corrupt_max_pages_sample_is_quarantined_and_fetched_again(tmp_path):
    from tests.conftest import REPO
    from tests.support.mirror import MirrorServer

    good = _zhwiki_mirror(tmp_path / "good")
    bad = _zhwiki_mirror(tmp_path / "bad")
    start, end = bad.latest.multistream.stream_ranges[1]  # the first stream of pages
    data = bytearray(bad.latest.xml_path.read_bytes())
    data[(start + end) // 2] ^= 0xFF
    bad.latest.xml_path.write_bytes(bytes(data))
    manifest = REPO / "manifests" / "wiki-zh.yaml"
    env = {"GRIST_CACHE": str(tmp_path / "cache")}
    args = ["--no-progress", "--set", "sources.zhwiki.max_pages=40", "--set", "sources.zhwiki.date=20240601"]
    with MirrorServer(bad.root) as server:
        proc = run_cli("run", str(manifest), "--out", str(tmp_path / "out"), "--set", f"sources.zhwiki.mirror={server.url}", *args, env=env)
    assert_clean_error(proc, "corrupt twice in a row", "use another mirror")
    assert len(list((tmp_path / "cache" / "quarantine").iterdir())) == 2
    with MirrorServer(good.root) as server:  # a good mirror: nothing bad was kept to be reused
        proc = run_cli("run", str(manifest), "--out", str(tmp_path / "out"), "--set", f"sources.zhwiki.mirror={server.url}", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    # a cached piece damaged on disk is not trusted either
    piece = next((tmp_path / "cache").rglob("*.bytes-0-*[0-9]"))
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 0xFF
    piece.write_bytes(bytes(data))
    with MirrorServer(good.root) as server:
        proc = run_cli("run", str(manifest), "--out", str(tmp_path / "out2"), "--set", f"sources.zhwiki.mirror={server.url}", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "is not used (its cached copy was never verified or has changed)" in " ".join(proc.stderr.split())


# ---- disk full ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount; skipped elsewhere, the simulated test below still runs)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_cache_disk_names_the_file_and_the_bytes_needed(tmp_path, small_disk):
    from tests.conftest import REPO
    from tests.support.mirror import MirrorServer

    info = _zhwiki_mirror(tmp_path / "mirror")
    size = info.latest.sizes[info.latest.xml_name]
    assert size > 256 * 1024
    with MirrorServer(info.root) as server:
        proc = run_cli("run", str(REPO / "manifests" / "wiki-zh.yaml"), "--out", str(tmp_path / "out"), "--no-progress",
                       "--set", f"sources.zhwiki.mirror={server.url}", env={"GRIST_CACHE": str(small_disk)})
    assert_clean_error(proc, "no space left on the device", str(small_disk), ".part", "it needs")
    assert "Errno 28" not in proc.stderr


def test_disk_full_while_downloading_or_writing_parts_is_explained(tmp_path, monkeypatch, cache_env):
    """The same without a small disk: writes fail with ENOSPC as they would on a full one."""
    import errno

    from rich.console import Console

    from pipeline.common.errors import PipelineError
    from pipeline.exec.executors import LocalExecutor
    from pipeline.io import http
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest
    from tests.support.mirror import MirrorServer

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "big.bin").write_bytes(os.urandom(300_000))
    real_open = open

    class Full:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            if self.written + len(data) > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.fh.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(http, "open", lambda p, mode="r", *a, **k: Full(real_open(p, mode, *a, **k)) if "b" in mode and "w" in mode or "a" in mode else real_open(p, mode, *a, **k), raising=False)
    with MirrorServer(tmp_path / "site") as server:
        with pytest.raises(PipelineError) as err:
            http.download(f"{server.url}/big.bin", tmp_path / "dl" / "big.bin", cache_root=tmp_path / "dl")
    message = str(err.value)
    assert "no space left on the device after 65,536 bytes" in message and "big.bin.part" in message and "it needs 234,464 bytes" in message
    monkeypatch.undo()

    import pyarrow.parquet as pq_mod

    def full_disk(*a, **k):
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    m = small_manifest(tmp_path / "run")
    monkeypatch.setattr(pq_mod, "write_table", full_disk)
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex, pytest.raises(PipelineError) as err:
        run_manifest(load_manifest(m), tmp_path / "out", ex, console, progress=False)
    assert "no space left on the device" in str(err.value) and str(tmp_path / "out") in str(err.value)


# ---- offline ------------------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_says_the_host_is_unreachable_and_uses_a_cached_dump(tmp_path):
    from tests.conftest import REPO
    from tests.support.mirror import MirrorServer

    manifest = str(REPO / "manifests" / "wiki-zh.yaml")
    info = _zhwiki_mirror(tmp_path / "mirror")
    env = {"GRIST_CACHE": str(tmp_path / "cache")}
    sample = ["--no-progress", "--set", "sources.zhwiki.max_pages=30"]
    dead = ["--set", f"sources.zhwiki.mirror=http://127.0.0.1:{_closed_port()}"]
    # nothing cached: the message says the host cannot be reached and what would help
    proc = run_cli("run", manifest, "--out", str(tmp_path / "o0"), *sample, *dead, env=env)
    assert_clean_error(proc, "cannot reach 127.0.0.1: the connection was refused", "cannot reach the mirror", "no earlier run cached")
    with MirrorServer(info.root) as server:
        proc = run_cli("run", manifest, "--out", str(tmp_path / "o1"), *sample, "--set", f"sources.zhwiki.mirror={server.url}", env=env)
    assert proc.returncode == 0, proc.stderr
    # date: latest cannot be resolved offline, but the message names the cached date to use
    proc = run_cli("run", manifest, "--out", str(tmp_path / "o2"), *sample, *dead, env=env)
    assert_clean_error(proc, "cannot reach 127.0.0.1", f"--set sources.zhwiki.date={info.latest_date}")
    # with that date, the run works offline from the cache and gives the same data
    proc = run_cli("run", manifest, "--out", str(tmp_path / "o2"), *sample, *dead, "--set", f"sources.zhwiki.date={info.latest_date}", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "as an earlier run pinned it" in " ".join(proc.stderr.split())
    same = lambda d: sorted((p.name, p.read_bytes()) for p in (tmp_path / d / "data").glob("*.arrow"))  # noqa: E731
    assert same("o1") == same("o2")
    # the date 'latest' resolved to and that date written out are the same data: nothing re-runs
    proc = run_cli("run", manifest, "--out", str(tmp_path / "o1"), *sample, *dead, "--set", f"sources.zhwiki.date={info.latest_date}", env=env)
    assert proc.returncode == 0 and "ran 0 node(s), skipped 7" in proc.stderr, proc.stderr


# ---- small frictions ----------------------------------------------------------------------------


def test_inspect_lists_nodes_in_pipeline_order(tmp_path, cache_env):
    text = SMALL.replace("{name: clean, stage: clean}", "{name: zz_clean, stage: clean}") + "  - {name: aa_lang, stage: lid_filter, params: {keep: [zh]}}\n"
    m = small_manifest(tmp_path, lines=[json.dumps({"text": "第一篇中文文档，内容足够长。"}, ensure_ascii=False), json.dumps({"text": "An English document that is long enough to be identified."})], text=text)
    assert run_cli("run", str(m), "--out", str(tmp_path / "out"), "--no-progress").returncode == 0
    proc = run_cli("inspect", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    order = [line.split("│")[1].strip() for line in proc.stdout.splitlines() if line.startswith("│") and line.split("│")[1].strip() in ("docs", "zz_clean", "aa_lang")]
    assert order[:3] == ["docs", "zz_clean", "aa_lang"]


def test_wide_tables_are_not_cut_in_logs():
    import io

    from rich.console import Console
    from rich.table import Table

    from pipeline.common.display import print_table

    table = Table(title="confusion matrix")
    for i in range(12):
        table.add_column(f"label-number-{i}", justify="right")
    table.add_row(*[str(1000 + i) for i in range(12)])
    buf = io.StringIO()
    print_table(Console(file=buf, width=80), table)
    text = buf.getvalue()
    assert "…" not in text and all(f"label-number-{i}" in text for i in range(12))


def test_help_shows_no_value_placeholder_for_flags():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    for flag in ("--max-steps", "--max-tokens", "--seed"):
        line = next(line for line in proc.stdout.splitlines() if flag + " " in line)
        assert len(line.split("│")[1].split(flag, 1)[1].replace("<int>", "").strip()) > 10, line  # has a help text


def test_validate_reports_every_problem_at_once(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        """name: bad manifest
sources:
  - {name: docs, kind: local, paths: [docs.jsonl], licence: CC-BY-4.0}
  - {name: more, kind: locale}
stages:
  - {name: clean, stage: clean, params: {opencc: t2x}}
  - {name: lang, stage: lid_filter, inputs: [cleen], params: {min_score: 2}}
  - {name: q, stage: qualty}
output: nowhere
""",
        encoding="utf-8",
    )
    proc = run_cli("validate", str(tmp_path / "bad.yaml"))
    err = " ".join(proc.stderr.split())
    assert_clean_error(proc, "invalid manifest (9 problems)")
    for needle in ("name: String should match pattern", "sources[0].license: Field required", "sources[0].licence: unknown field", "sources[1].kind: unknown source kind 'locale'",
                   "stages[0].params.opencc: Value error, unknown OpenCC config 't2x'", "stages[1].params.min_score", "stages[2].stage: unknown stage 'qualty'",
                   "stages[1].inputs: unknown node 'cleen'", "output: unknown node 'nowhere'"):
        assert needle in err, needle
