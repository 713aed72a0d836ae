"""The runner: materialized nodes, fingerprints, skipping, partial recompute, ledger accounting, export."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from pipeline.common.errors import PipelineError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest

MANIFEST = """
name: local-test
sources:
  - name: a
    kind: local
    paths: ["a/*.jsonl"]
    license: CC-BY-4.0
    id_field: doc
  - name: b
    kind: local
    paths: ["b/*.txt"]
    license: MIT
stages:
  - {name: ca, stage: concat, inputs: [a]}
  - {name: cb, stage: concat, inputs: [b]}
  - {name: merged, stage: concat, inputs: [ca, cb]}
"""


def make_inputs(root: Path, n_files: int = 3, bad_lines: bool = True) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for f in range(n_files):
        lines = [json.dumps({"doc": f"{f}-{i}", "text": f"文档 {f} 第 {i} 行。"}, ensure_ascii=False) for i in range(5)]
        if bad_lines and f == 0:
            lines.insert(2, "{not json")
            lines.append(json.dumps({"doc": "no-text"}))
        (root / "a" / f"part{f}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for f in range(2):
        (root / "b" / f"doc{f}.txt").write_text(f"plain text file {f}\nsecond line", encoding="utf-8")
    m = root / "m.yaml"
    m.write_text(MANIFEST, encoding="utf-8")
    return m


def run(manifest: Path, out: Path, overrides=None, workers: int = 1):
    console = Console(quiet=True)
    with LocalExecutor(workers=workers, console=console) as ex:
        return run_manifest(load_manifest(manifest, overrides), out, ex, console, progress=False)


def test_run_materializes_nodes_ledger_and_export(tmp_path, cache_env):
    m = make_inputs(tmp_path)
    out = tmp_path / "out"
    res = run(m, out)
    assert res.nodes_run == ["a", "b", "ca", "cb", "merged"]
    a_dir = out / "stages" / "a"
    assert (a_dir / "_COMPLETE").exists() and (a_dir / "stats.json").exists()
    stats = json.loads((a_dir / "stats.json").read_text())
    assert stats["in"] == 17 and stats["out"] == 15 and stats["removed"] == 2
    assert stats["removed_by_reason"] == {"parse:invalid-json": 1, "parse:missing-text-field": 1}
    ledger = pq.read_table(a_dir / "removed" / "part-00000.parquet").to_pylist()
    assert {r["reason"] for r in ledger} == {"parse:invalid-json", "parse:missing-text-field"}
    assert all(r["node"] == "a" and r["id"] for r in ledger)
    ds = datasets.load_from_disk(str(out / "data"))
    assert ds.num_rows == 17
    assert {"id", "text", "title", "url", "source", "license"} <= set(ds.column_names)
    assert "a/0-0" in ds["id"] and "b/doc1.txt" in ds["id"]
    assert set(ds["license"]) == {"CC-BY-4.0", "MIT"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["nodes"]["a"]["documents_in"] == 17 and prov["nodes"]["merged"]["fingerprint"]
    lock = (out / "manifest.lock.yaml").read_text()
    assert "sha256" in lock and "packages" in lock and "pyarrow" in lock


def test_rerun_skips_and_change_recomputes_only_downstream(tmp_path, cache_env):
    m = make_inputs(tmp_path)
    out = tmp_path / "out"
    run(m, out)
    data_before = {p.name: p.read_bytes() for p in (out / "data").iterdir()}
    again = run(m, out)
    assert again.nodes_run == [] and len(again.nodes_skipped) == 5
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == data_before
    # editing one input file re-runs that source and what depends on it, nothing else
    (tmp_path / "b" / "doc0.txt").write_text("changed", encoding="utf-8")
    res = run(m, out)
    assert res.nodes_run == ["b", "cb", "merged"] and set(res.nodes_skipped) == {"a", "ca"}
    # a parameter change does the same
    res = run(m, out, ["sources.b.txt_mode=line"])
    assert res.nodes_run == ["b", "cb", "merged"]
    assert datasets.load_from_disk(str(out / "data")).num_rows == 15 + 3


def test_interrupted_node_resumes_finished_partitions(tmp_path, cache_env):
    m = make_inputs(tmp_path, n_files=4, bad_lines=False)
    out = tmp_path / "out"
    run(m, out)
    reference = {p.name: p.read_bytes() for p in (out / "data").iterdir()}
    a_dir = out / "stages" / "a"
    # simulate a kill after two of four partitions: marker gone, two tasks' outputs gone
    (a_dir / "_COMPLETE").unlink()
    for i in (2, 3):
        (a_dir / "_tasks" / f"part-{i:05d}.json").unlink()
        (a_dir / f"part-{i:05d}.parquet").unlink()
    res = run(m, out, workers=2)
    assert "a" in res.nodes_run
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == reference


def test_missing_input_file_is_clear(tmp_path, cache_env):
    m = make_inputs(tmp_path)
    with pytest.raises(PipelineError) as info:
        run(m, tmp_path / "out", ["sources.a.paths=[nothing/*.jsonl]"])
    assert "no file matches" in str(info.value) and "sources.a.paths" in str(info.value)


def test_parallel_and_serial_runs_are_identical(tmp_path, cache_env):
    m = make_inputs(tmp_path, n_files=5)
    run(m, tmp_path / "o1", workers=1)
    run(m, tmp_path / "o2", workers=2)
    f1 = {p.name: p.read_bytes() for p in (tmp_path / "o1" / "data").iterdir()}
    f2 = {p.name: p.read_bytes() for p in (tmp_path / "o2" / "data").iterdir()}
    assert f1 == f2


def _write_range_task(lo: int, hi: int, out: str) -> dict:
    """Writes rows lo..hi-1 as one part: a source task whose partitioning is a parameter."""
    import pyarrow as pa

    from pipeline.common import storage

    storage.write_parquet(pa.table({"n": list(range(lo, hi))}), Path(out))
    return {"in": hi - lo, "out": hi - lo, "removed": 0}


def test_resume_with_other_partitioning_starts_the_phase_over(tmp_path):
    """An interrupted node resumed with other tasks under the same fingerprint (a source's
    streams_per_partition is not part of it) must not keep markers and parts of the old tasks."""
    from pipeline.core.stage import NodeContext, RunContext

    console = Console(quiet=True)
    node = tmp_path / "stages" / "src"
    ctx = NodeContext(name="src", dir=node, inputs=[], executor=LocalExecutor(workers=1, console=console),
                      run=RunContext(out_dir=tmp_path, cache_dir=tmp_path / "cache", console=console, manifest=None, progress=False))

    def tasks(size: int) -> list[tuple]:
        return [(lo, min(lo + size, 100), str(ctx.part_path(i))) for i, lo in enumerate(range(0, 100, size))]

    ctx.run_tasks(_write_range_task, tasks(25), desc="read")  # 4 parts
    (node / "_tasks" / "part-00003.json").unlink()  # "interrupted" before the last marker
    # same tasks again: the three finished ones are kept
    assert [s["out"] for s in ctx.run_tasks(_write_range_task, tasks(25), desc="read")] == [25] * 4
    (node / "_tasks" / "part-00003.json").unlink()
    # other partitioning: 2 tasks of 50; the old 4 markers and parts must not survive
    stats = ctx.run_tasks(_write_range_task, tasks(50), desc="read")
    assert [s["out"] for s in stats] == [50, 50]
    parts = sorted(node.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    assert sum((pq.read_table(p)["n"].to_pylist() for p in parts), []) == list(range(100))
    assert sorted(p.name for p in (node / "_tasks").glob("part-*.json")) == ["part-00000.json", "part-00001.json"]
