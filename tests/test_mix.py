"""Stage ``mix``: shares by documents and by tokens, deterministic down-sampling whatever the
partitioning, up-sampling by repetition with a cap, ledger and accounting, card facts."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from pipeline.common.errors import PipelineError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from stages.mix import estimate_tokens
from tests.conftest import run_cli

HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"

MANIFEST = """
name: mix-test
sources:
  - {{name: wiki, kind: local, paths: [{wiki}], license: CC-BY-SA-4.0, id_field: doc{wiki_extra}}}
  - {{name: web, kind: local, paths: [{web}], license: CC-BY-4.0, id_field: doc{web_extra}}}
stages:
  - {{name: mix, stage: mix, inputs: [wiki, web], params: {params}}}
"""


def zh(seed: int, lo: int, hi: int) -> str:
    r = random.Random(seed)
    return "".join(r.choice(HAN) for _ in range(r.randint(lo, hi))) + "。"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")


def make(root: Path, params: str, *, web_files: int = 3, web_partition_bytes: int | None = None) -> Path:
    """60 long wiki documents in 2 files, 200 short web documents (Chinese with some English) in ``web_files`` files."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    wiki = [{"doc": f"w{i}", "text": zh(i, 80, 300)} for i in range(60)]
    web = [{"doc": f"p{i}", "text": zh(1000 + i, 20, 90) + (" read more at example dot com" if i % 3 == 0 else "")} for i in range(200)]
    wiki_paths = []
    for f in range(2):
        write_jsonl(root / "data" / f"wiki{f}.jsonl", wiki[f::2])
        wiki_paths.append(f'"data/wiki{f}.jsonl"')
    web_paths = []
    for f in range(web_files):
        write_jsonl(root / "data" / f"web{f}.jsonl", web[f::web_files])
        web_paths.append(f'"data/web{f}.jsonl"')
    m = root / "m.yaml"
    web_extra = f", partition_bytes: {web_partition_bytes}" if web_partition_bytes else ""
    m.write_text(MANIFEST.format(wiki=", ".join(wiki_paths), web=", ".join(web_paths), wiki_extra="", web_extra=web_extra, params=params), encoding="utf-8")
    return m


def run(manifest: Path, out: Path, workers: int = 1, overrides: list[str] | None = None):
    console = Console(quiet=True)
    with LocalExecutor(workers=workers, console=console) as ex:
        return run_manifest(load_manifest(manifest, overrides), out, ex, console, progress=False)


def node_stats(out: Path) -> dict:
    return json.loads((out / "stages" / "mix" / "stats.json").read_text())


def kept(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "stages" / "mix").glob("part-*.parquet"))], promote_options="default")


def ledger(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "stages" / "mix" / "removed").glob("part-*.parquet"))])


def test_documents_null_total_keeps_the_limiting_input_whole(tmp_path, cache_env):
    out = tmp_path / "out"
    run(make(tmp_path, "{weights: {wiki: 1, web: 1}, by: documents}"), out)
    st = node_stats(out)
    m = st["mix"]["inputs"]
    assert m["wiki"]["docs_out"] == 60 and m["web"]["docs_out"] == 60  # wiki limits: kept whole, web sampled to match
    assert st["in"] == 260 and st["out"] == 120 and st["removed"] == 140 and st["added"] == 0
    assert st["in"] + st["added"] == st["out"] + st["removed"]
    assert st["removed_by_reason"] == {"mix:downsampled:web": 140}
    led = ledger(out)
    assert led.num_rows == 140 and set(led["reason"].to_pylist()) == {"mix:downsampled:web"} and set(led["node"].to_pylist()) == {"mix"}
    t = kept(out)
    assert set(t["mix_repeat"].to_pylist()) == {0} and Counter(t["mix_input"].to_pylist()) == {"wiki": 60, "web": 60}
    # nothing lost: kept + ledger are exactly the inputs
    assert sorted(t["id"].to_pylist() + led["id"].to_pylist()) == sorted([f"wiki/w{i}" for i in range(60)] + [f"web/p{i}" for i in range(200)])
    assert m["wiki"]["achieved_share"] == 0.5 and m["wiki"]["repeat_factor"] == 1.0


def test_token_shares_are_met(tmp_path, cache_env):
    out = tmp_path / "out"
    run(make(tmp_path, "{weights: {wiki: 3, web: 7}, by: tokens, total: 8000, seed: 7}"), out)
    st = node_stats(out)
    m = st["mix"]
    assert m["tokens_from"] == "estimate" and m["by"] == "tokens"
    t = kept(out)
    # the recorded counts are the estimate of what was written
    toks = dict(zip(t["mix_input"].to_pylist(), [0, 0]))
    for name, n in zip(t["mix_input"].to_pylist(), estimate_tokens(t["text"]).tolist()):
        toks[name] = toks.get(name, 0) + n
    assert toks == {"wiki": m["inputs"]["wiki"]["tokens_out"], "web": m["inputs"]["web"]["tokens_out"]}
    total = sum(toks.values())
    assert abs(total - 8000) <= 300  # within a document or so per input
    assert abs(toks["wiki"] / total - 0.3) < 0.02 and abs(m["inputs"]["wiki"]["achieved_share"] - 0.3) < 0.02
    assert m["inputs"]["web"]["target_share"] == 0.7
    assert st["removed"] > 0 and st["added"] == 0


def test_estimate_counts_cjk_characters_words_and_marks():
    assert estimate_tokens(pa.array(["中文，hello world。", "ひらがな 한국어 abc", "", None])).tolist() == [2 + 2 + 2, 4 + 3 + 1, 0, 0]


def test_downsampling_is_the_same_whatever_the_partitioning_and_workers(tmp_path, cache_env):
    params = "{weights: {wiki: 1, web: 2}, by: tokens, total: 6000, seed: 3}"
    a = tmp_path / "a"
    run(make(a, params, web_files=3), a / "out", workers=1)
    b = tmp_path / "b"
    run(make(b, params, web_files=1, web_partition_bytes=4096), b / "out", workers=2)
    assert node_stats(b / "out")["partitions"] > node_stats(a / "out")["partitions"]  # really partitioned otherwise
    assert sorted(kept(a / "out")["id"].to_pylist()) == sorted(kept(b / "out")["id"].to_pylist())
    assert sorted(ledger(a / "out")["id"].to_pylist()) == sorted(ledger(b / "out")["id"].to_pylist())
    # another seed, another sample
    c = tmp_path / "c"
    run(make(c, params.replace("seed: 3", "seed: 4")), c / "out")
    assert sorted(kept(c / "out")["id"].to_pylist()) != sorted(kept(a / "out")["id"].to_pylist())


def test_upsampling_repeats_with_distinct_ids_up_to_the_cap(tmp_path, cache_env):
    out = tmp_path / "out"
    # wiki: 0.5 * 300 = 150 documents from 60: every document twice, half of them three times
    run(make(tmp_path, "{weights: {wiki: 1, web: 1}, by: documents, total: 300, max_repeat: 3}"), out)
    st = node_stats(out)
    w = st["mix"]["inputs"]["wiki"]
    assert w["docs_out"] == 150 and w["copies_added"] == 90 and w["max_copies"] == 3 and w["repeat_factor"] == 2.5
    assert st["added"] == 90 and st["in"] + st["added"] == st["out"] + st["removed"] == 260 + 90
    t = kept(out)
    wiki = t.filter(pa.compute.equal(t["mix_input"], "wiki"))
    ids = wiki["id"].to_pylist()
    assert len(set(ids)) == len(ids) == 150
    assert Counter(wiki["mix_repeat"].to_pylist()) == {0: 60, 1: 60, 2: 30}
    assert "wiki/w0#r1" in ids and all(i.split("#")[0].startswith("wiki/w") for i in ids)
    texts = dict(zip(wiki["id"].to_pylist(), wiki["text"].to_pylist()))
    assert all(texts[i] == texts[i.split("#")[0]] for i in ids)
    import datasets

    ds = datasets.load_from_disk(str(out / "data"))
    assert ds.num_rows == 300 and {"mix_repeat", "mix_input"} <= set(ds.column_names)


def test_total_beyond_the_cap_errors_or_shrinks(tmp_path, cache_env):
    m = make(tmp_path, "{weights: {wiki: 4, web: 1}, by: documents, total: 400, max_repeat: 4}")
    with pytest.raises(PipelineError) as exc:  # wiki: 320 from 60 documents = 5.33 times
        run(m, tmp_path / "out")
    msg = str(exc.value)
    assert "'wiki'" in msg and "max_repeat 4" in msg and "300" in msg and "node 'mix'" in msg
    out = tmp_path / "out2"
    run(m, out, overrides=["stages.mix.params.over_cap=shrink"])
    st = node_stats(out)
    assert st["out"] == 300 and st["mix"]["inputs"]["wiki"]["docs_out"] == 240 and st["mix"]["inputs"]["wiki"]["max_copies"] == 4
    assert st["mix"]["warnings"] and any("shrunk" in n for n in st["card"]["notes"])


def test_bad_weight_key_names_the_stage_and_the_key(tmp_path, cache_env):
    m = make(tmp_path, "{weights: {wiki: 1, webb: 1}}")
    with pytest.raises(PipelineError) as exc:
        run(m, tmp_path / "out")
    msg = str(exc.value)
    # caught when the manifest loads (pipeline validate too), naming the stage
    assert "webb" in msg and "stage 'mix'" in msg and "'web' has no weight" in msg
    assert not (tmp_path / "out" / "stages" / "mix" / "_COMPLETE").exists()
    res = run_cli("run", str(m), "--out", str(tmp_path / "out3"), "--no-progress", env={"GRIST_CACHE": str(cache_env)})
    assert res.returncode != 0 and "webb" in res.stderr + res.stdout and "Traceback" not in res.stderr


def test_card_provenance_and_lock_record_the_mix(tmp_path, cache_env):
    out = tmp_path / "out"
    run(make(tmp_path, "{weights: {wiki: 1, web: 3}, by: documents, total: 160}"), out)
    card = node_stats(out)["card"]
    assert card["title"] == "Data mix"
    labels = [r[0] for r in card["rows"]]
    assert labels == ["unit", "total", "wiki", "web"] and all(isinstance(v, str) for r in card["rows"] for v in r)
    assert "target 25.0%, achieved 25.0%" in dict(card["rows"])["wiki"]
    prov = json.loads((out / "provenance.json").read_text())
    rec = prov["nodes"]["mix"]["provenance"]["mix"]
    assert rec["inputs"]["web"]["docs_out"] == 120 and rec["inputs"]["web"]["achieved_share"] == 0.75
    assert "weights:" in (out / "manifest.lock.yaml").read_text()
    # a second run is skipped; the work files are gone
    again = run(make(tmp_path, "{weights: {wiki: 1, web: 3}, by: documents, total: 160}"), out)
    assert "mix" in again.nodes_skipped and not (out / "stages" / "mix" / "work").exists()


def test_weight_zero_drops_an_input(tmp_path, cache_env):
    out = tmp_path / "out"
    run(make(tmp_path, "{weights: {wiki: 1, web: 0}, by: documents}"), out)
    st = node_stats(out)
    assert st["out"] == 60 and st["removed_by_reason"] == {"mix:downsampled:web": 200}


def test_token_column_is_used_only_when_every_input_has_it(tmp_path):
    from stages.mix import _token_column

    with_col = tmp_path / "a.parquet"
    without = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ["x"], "text": ["t"], "q_tokens": pa.array([3], pa.int64())}), with_col)
    pq.write_table(pa.table({"id": ["y"], "text": ["t"]}), without)
    assert _token_column("auto", [str(with_col)], "mix") == "q_tokens"
    assert _token_column("auto", [str(with_col), str(without)], "mix") is None  # one unit for all inputs
    assert _token_column("estimate", [str(with_col)], "mix") is None
    with pytest.raises(PipelineError, match="n_tok"):
        _token_column("n_tok", [str(with_col)], "mix")


def test_selection_passes_over_a_long_document_that_would_overshoot():
    from stages.mix import select

    units = np.array([100, 5000, 10, 20, 30, 7])
    assert select(units, 150).tolist() == [True, False, True, True, True, False]  # 160: closer than 100 or 5100
    assert select(np.ones(10, np.int64), 3.4).sum() == 3 and select(np.ones(10, np.int64), 3.6).sum() == 4
    assert select(units, 0).sum() == 0 and select(units, 10**9).all()
