"""Manifest loading: schema errors name the file and field path; overrides; DAG shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.common.errors import ManifestError
from pipeline.core.dag import build_dag
from pipeline.run.load import load_manifest
from tests.conftest import REPO, run_cli

GOOD = """
name: t
sources:
  - name: a
    kind: local
    paths: [a.jsonl]
    license: CC-BY-4.0
stages:
  - name: merge
    stage: concat
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(path: Path, overrides=None) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, overrides)
    return str(info.value)


def test_flagship_manifest_validates():
    m = load_manifest(REPO / "manifests" / "wiki-zh.yaml")
    src = m.source("zhwiki")
    assert src.kind == "wikimedia-dump" and src.date == "latest" and src.languages == ["zh"]
    assert "CC-BY-SA" in src.license and src.license_url and src.attribution
    assert build_dag(m).order == ["zhwiki", "extract", "clean", "lang", "quality", "dedup", "tokenize"]
    assert build_dag(m).output == "dedup"


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "name: t\nsources: [\n  - oops: : :\n")
    msg = error_of(p)
    assert str(p) in msg and "invalid YAML" in msg and (":3:" in msg or ":2:" in msg)


def test_missing_license_names_field_path(tmp_path):
    p = write(tmp_path, GOOD.replace("    license: CC-BY-4.0\n", ""))
    msg = error_of(p)
    assert "sources[0].license" in msg and "Field required" in msg and str(p) in msg


def test_invalid_spdx_is_refused(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("CC-BY-4.0", "Creative Commons maybe")))
    assert "sources[0].license" in msg and "SPDX" in msg


def test_unknown_source_kind_lists_allowed(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("kind: local", "kind: ftp")))
    assert "sources[0].kind" in msg and "'ftp'" in msg and "wikimedia-dump" in msg and "local" in msg


def test_unknown_stage_and_unknown_param(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("stage: concat", "stage: nosuch")))
    assert "stages[0].stage" in msg and "nosuch" in msg and "wikitext_extract" in msg
    msg = error_of(write(tmp_path, GOOD.replace("stage: concat", "stage: wikitext_extract\n    params: {variantt: zh-tw}")))
    assert "stages[0].params.variantt" in msg and "unknown field" in msg


def test_typo_in_source_field(tmp_path):
    msg = error_of(write(tmp_path, GOOD.replace("paths:", "pathz:")))
    assert "sources[0].pathz" in msg


def test_set_override_by_source_name_and_type(tmp_path):
    p = write(tmp_path, GOOD)
    m = load_manifest(p, ["sources.a.paths=[b.jsonl, c.jsonl]", "stages.merge.inputs=[a]", "description=hello world"])
    assert m.source("a").paths == ["b.jsonl", "c.jsonl"] and m.description == "hello world"
    zh = load_manifest(REPO / "manifests/wiki-zh.yaml", ["sources.zhwiki.mirror=http://127.0.0.1:8000", "sources.zhwiki.max_pages=100"])
    assert zh.source("zhwiki").mirror == "http://127.0.0.1:8000" and zh.source("zhwiki").max_pages == 100
    msg = error_of(p, ["sources.nosuch.mirror=x"])
    assert "no entry named 'nosuch'" in msg and "a" in msg
    msg = error_of(REPO / "manifests/wiki-zh.yaml", ["sources.zhwiki.max_pages=-3"])
    assert "sources[0].max_pages" in msg


def test_dag_branch_and_merge(tmp_path):
    text = """
name: t
sources:
  - {name: a, kind: local, paths: [a.jsonl], license: CC0-1.0}
  - {name: b, kind: local, paths: [b.jsonl], license: MIT}
stages:
  - {name: ea, stage: concat, inputs: [a]}
  - {name: eb, stage: concat, inputs: [b]}
  - {name: eb2, stage: concat, inputs: [b]}
  - {name: merged, stage: concat, inputs: [ea, eb, eb2]}
"""
    dag = build_dag(load_manifest(write(tmp_path, text)))
    assert dag.output == "merged"
    assert set(dag.consumers("b")) == {"eb", "eb2"}
    assert dag.order.index("merged") > max(dag.order.index(n) for n in ("ea", "eb", "eb2"))
    assert dag.ancestors("merged") == {"a", "b", "ea", "eb", "eb2"}


def test_dag_errors(tmp_path):
    cyc = GOOD + "  - {name: x, stage: concat, inputs: [y]}\n  - {name: y, stage: concat, inputs: [x]}\n"
    assert "cycle" in error_of(write(tmp_path, cyc))
    bad = GOOD.replace("stage: concat", "stage: concat\n    inputs: [nope]")
    assert "stages[0].inputs: unknown node 'nope'" in error_of(write(tmp_path, bad))
    dup = GOOD.replace("name: merge", "name: a")
    assert "duplicate node name 'a'" in error_of(write(tmp_path, dup))


def test_cli_validate_exit_codes(tmp_path):
    ok = run_cli("validate", str(REPO / "manifests/wiki-zh.yaml"))
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("validate", str(write(tmp_path, GOOD.replace("kind: local", "kind: ftp"))))
    assert bad.returncode == 2 and "unknown source kind" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "not found" in missing.stderr
