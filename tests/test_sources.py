"""The `http` and `hf` sources: pinned, cached, verified, read into documents."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from pipeline.errors import ManifestError, PipelineError
from pipeline.executors import LocalExecutor
from pipeline.manifest import load_manifest
from pipeline.runner import run_manifest
from tests.support.mirror import MirrorServer


def run(manifest: Path, out: Path):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(manifest), out, ex, console, progress=False)


def test_http_source_verifies_and_caches(tmp_path, cache_env):
    served = tmp_path / "www"
    served.mkdir()
    body = "\n".join(json.dumps({"id": i, "text": f"第{i}篇文档。"}, ensure_ascii=False) for i in range(5)) + "\n"
    (served / "docs.jsonl").write_text(body, encoding="utf-8")
    digest = hashlib.sha256(body.encode()).hexdigest()
    with MirrorServer(served) as server:
        m = tmp_path / "m.yaml"
        m.write_text(f"name: h\nsources:\n  - {{name: web, kind: http, url: '{server.url}/docs.jsonl', sha256: {digest}, id_field: id, license: CC0-1.0}}\n", encoding="utf-8")
        res = run(m, tmp_path / "out")
        assert datasets.load_from_disk(str(tmp_path / "out" / "data"))["id"] == [f"web/{i}" for i in range(5)]
        prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
        assert prov["sources"]["web"]["downloads"][0]["verified"] == ["sha256"]
        # a second output dir reuses the cached, verified file: no new request
        server.reset_log()
        run(m, tmp_path / "out2")
        assert not [r for r in server.requests if r["path"].endswith("docs.jsonl")]
        # a wrong digest: refused, quarantined, nothing marked complete
        m.write_text(m.read_text().replace(digest, "f" * 64), encoding="utf-8")
        with pytest.raises(PipelineError) as info:
            run(m, tmp_path / "out3")
        assert "checksum mismatch" in str(info.value)
        assert not (tmp_path / "out3" / "stages" / "web" / "_COMPLETE").exists()
    assert list((cache_env / "quarantine").iterdir())
    assert res.nodes_run == ["web"]


def test_http_source_requires_a_digest(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("name: h\nsources:\n  - {name: web, kind: http, url: 'http://127.0.0.1:9/x.jsonl', license: MIT}\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    assert "sources[0]" in str(info.value) and "sha256" in str(info.value)


def test_hf_source_streams_a_local_dataset(tmp_path, cache_env):
    folder = tmp_path / "ds"
    folder.mkdir()
    pq.write_table(pa.table({"content": [f"样本{i}。" for i in range(7)] + [None], "key": [f"k{i}" for i in range(8)]}), folder / "train.parquet")
    m = tmp_path / "m.yaml"
    m.write_text(
        f"name: hf\nsources:\n  - {{name: hub, kind: hf, dataset: parquet, data_files: ['{folder}/train.parquet'], text_field: content, id_field: key, rows_per_partition: 3, license: CC-BY-4.0}}\n",
        encoding="utf-8",
    )
    run(m, tmp_path / "out")
    ds = datasets.load_from_disk(str(tmp_path / "out" / "data"))
    assert ds["id"] == [f"hub/k{i}" for i in range(7)]
    ledger = pq.read_table(tmp_path / "out" / "stages" / "hub" / "removed").to_pylist()
    assert [r["reason"] for r in ledger] == ["parse:missing-text-field"]


def test_hf_hub_dataset_must_pin_a_revision(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("name: hf\nsources:\n  - {name: hub, kind: hf, dataset: wikimedia/wikipedia, config: 20231101.zh, license: CC-BY-SA-4.0}\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(m)
    assert "revision" in str(info.value)
