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

from pipeline.common.errors import ManifestError, PipelineError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
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


# ------------------------------------------------------------------ large files in pieces
def _jsonl_with_everything(path: Path, n: int = 400) -> None:
    """Records of varied length (Chinese and English), blank lines, broken lines, CRLF endings."""
    lines = []
    for i in range(n):
        text = ("第%d篇。" % i) * (1 + i % 7) + " some English words " * (i % 3)
        lines.append(json.dumps({"id": f"r{i}", "text": text}, ensure_ascii=False))
        if i % 37 == 0:
            lines.append("   ")  # blank: not a record
        if i % 53 == 0:
            lines.append("{not json")  # an error record: counts as a record for the ids
        if i % 41 == 0:
            lines.append(json.dumps({"other": i}))  # no text field
    path.write_bytes(("\r\n".join(lines[: n // 2]) + "\r\n" + "\n".join(lines[n // 2 :]) + "\n").encode("utf-8"))


def _source_tables(out: Path) -> tuple[pa.Table, pa.Table, int]:
    node = out / "stages" / "docs"
    kept = pa.concat_tables([pq.read_table(p) for p in sorted(node.glob("part-*.parquet"))])
    removed = pa.concat_tables([pq.read_table(p) for p in sorted((node / "removed").glob("part-*.parquet"))])
    return kept, removed, len(list(node.glob("part-*.parquet")))


@pytest.mark.parametrize("fmt", ["jsonl", "txt", "parquet"])
def test_large_files_are_read_in_pieces_with_the_same_documents(tmp_path, cache_env, fmt):
    src = tmp_path / "in"
    src.mkdir()
    _jsonl_with_everything(src / "a.jsonl")
    (src / "b.jsonl").write_text(json.dumps({"text": "一个小文件"}, ensure_ascii=False) + "\n", encoding="utf-8")  # small: whole
    if fmt == "txt":
        for name in ("a", "b"):
            rows = [json.loads(l)["text"] for l in (src / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if l.strip().startswith('{"id"') or l.startswith('{"text"')]
            (src / f"{name}.txt").write_text("\n\n".join(rows) + "\n", encoding="utf-8")
    if fmt == "parquet":
        for name in ("a", "b"):
            rows = [json.loads(l) for l in (src / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if l.strip().startswith("{\"")]
            pq.write_table(pa.Table.from_pylist([{"id": r.get("id"), "text": r.get("text")} for r in rows]), src / f"{name}.parquet", row_group_size=16)
    extra = "    txt_mode: line\n" if fmt == "txt" else ""
    results = {}
    for label, size in (("whole", 1 << 30), ("pieces", 4096)):
        manifest = tmp_path / f"{label}.yaml"
        manifest.write_text(
            f"name: pieces\nsources:\n  - name: docs\n    kind: local\n    paths: ['in/*.{fmt}']\n    license: CC0-1.0\n{extra}    partition_bytes: {size}\n",
            encoding="utf-8",
        )
        run(manifest, tmp_path / label)
        results[label] = _source_tables(tmp_path / label)
    (kept_w, removed_w, parts_w), (kept_p, removed_p, parts_p) = results["whole"], results["pieces"]
    assert parts_w == 2 and parts_p > 4, (parts_w, parts_p)
    assert kept_p.equals(kept_w)  # same documents, same ids, same order
    assert removed_p.equals(removed_w)
    assert kept_w.num_rows > 300
    if fmt == "jsonl":
        assert removed_w.num_rows > 10 and len(set(kept_w["id"].to_pylist())) == kept_w.num_rows
        assert not any(t.endswith("\r") for t in kept_w["text"].to_pylist())


def test_pieces_split_at_line_ends(tmp_path):
    from pipeline.io.formats import records as rf

    path = tmp_path / "x.jsonl"
    _jsonl_with_everything(path, 200)
    spans = rf.line_spans(path, 1000)
    data = path.read_bytes()
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(data[s - 1 : s] == b"\n" for _, s in spans[:-1])
    whole = list(rf.iter_records(path, "jsonl"))
    pieces, first_line = [], 1
    for s in spans:
        pieces += list(rf.iter_records(path, "jsonl", span=s, first_line=first_line))
        first_line += rf.count_records(path, "jsonl", *s)[1]
    assert pieces == whole  # records, reasons and line numbers alike
    assert sum(rf.count_records(path, "jsonl", *s)[0] for s in spans) == len(whole)
    assert first_line - 1 == data.count(b"\n") + (not data.endswith(b"\n"))


def test_a_file_listed_twice_gets_the_same_ids_in_pieces(tmp_path, cache_env):
    src = tmp_path / "in"
    src.mkdir()
    _jsonl_with_everything(src / "a.jsonl", 200)
    ids = {}
    for label, size in (("whole", 1 << 30), ("pieces", 4096)):
        manifest = tmp_path / f"{label}.yaml"
        manifest.write_text(f"name: twice\nsources:\n  - name: docs\n    kind: local\n    paths: ['in/*.jsonl', 'in/a.jsonl']\n    license: CC0-1.0\n    partition_bytes: {size}\n", encoding="utf-8")
        run(manifest, tmp_path / label)
        ids[label] = _source_tables(tmp_path / label)[0]["id"].to_pylist()
    assert ids["pieces"] == ids["whole"]
    assert ids["whole"][: len(ids["whole"]) // 2] == ids["whole"][len(ids["whole"]) // 2 :]


def test_layout_digest_ignores_where_the_run_and_its_inputs_live():
    from pipeline.core.stage import _layout_digest

    def tasks(root: str, inputs: str) -> list[tuple]:
        return [(f"{inputs}/a.jsonl", "jsonl", {"span": [0, 10]}, f"{root}/stages/docs/part-00000.parquet")]

    here = _layout_digest(tasks("/m1/out", "/m1/data"), {"/m1/out": "<out>"})
    there = _layout_digest(tasks("/m2/x/out", "/elsewhere/data"), {"/m2/x/out": "<out>"})
    assert here == there
    assert _layout_digest(tasks("/m1/out", "/m1/data") * 2, {"/m1/out": "<out>"}) != here
