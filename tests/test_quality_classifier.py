"""Stage quality_classifier and pipeline/text/classifier.py: features, training, scoring, the keep
rules, the saved model and its reuse, bad input, and runs through the runner."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from rich.console import Console

from pipeline.common.errors import ManifestError, StageError
from pipeline.core.stage import DOC_SCHEMA, NodeContext, NodeOutput, RunContext
from pipeline.exec.executors import LocalExecutor
from pipeline.text import classifier as clf
from stages import quality_classifier as qc

GOOD_ZH = "研究 历史 发展 科学 理论 方法 结构 系统 地区 人口 经济 文化 政府 时期 学者 提出 组成 主要 影响 形成".split()
BAD_ZH = "包邮 优惠 点击 下载 免费 注册 抢购 秒杀 客服 全场 热卖 链接 好评 亲 赶紧 返现 特价 手机 登录 广告".split()
GOOD_EN = "the history of science theory method structure system region population economy culture government period scholars proposed".split()
BAD_EN = "click here buy now free download best price sale discount win prize subscribe login cheap deals offer limited".split()
COMMON_ZH = "的 是 在 和 了 有 这 我们".split()


def doc(seed: int, good: bool, lang: str = "zh", n: int = 40) -> str:
    rng = random.Random(seed)
    words = (GOOD_ZH if good else BAD_ZH) if lang == "zh" else (GOOD_EN if good else BAD_EN)
    pool = words + (COMMON_ZH if lang == "zh" else ["and", "of", "a", "is", "to"])
    sep = "" if lang == "zh" else " "
    return sep.join(rng.choice(pool) for _ in range(n)) + ("。" if lang == "zh" else ".")


def jsonl(path: Path, texts: list[str], prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"doc": f"{prefix}{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)), encoding="utf-8")


# ------------------------------------------------------------------------------------ the model
def test_features_are_per_document_and_deterministic():
    cfg = clf.FeatureConfig(dim_bits=16)
    a = clf.featurize(["今天天气很好 ok", "Hello world, hello!"], cfg)
    b = clf.featurize(["something else", "今天天气很好 ok", None, ""], cfg)
    assert (a[0] != b[1]).nnz == 0  # a document's row does not depend on its batch
    assert b[2].nnz == 0 and b[3].nnz == 0
    assert clf.featurize(["Hello world, hello!"], cfg).getnnz() == 4  # hello, world, "hello world", "world hello"
    assert clf.featurize(["今天天气很好"], cfg).getnnz() <= 15  # char 1..3-grams
    jb = clf.featurize(["今天天气很好，我们去公园"], clf.FeatureConfig(zh="jieba", dim_bits=16))
    assert jb.nnz > 0
    assert np.allclose(np.asarray(a.multiply(a).sum(axis=1)).ravel(), 1.0)


def test_train_score_save_load_roundtrip(tmp_path):
    texts = [doc(i, i % 2 == 0, "zh" if i % 3 else "en") for i in range(400)]
    y = np.array([i % 2 == 0 for i in range(400)], np.int8)
    cfg = clf.FeatureConfig(dim_bits=16)
    x = clf.featurize(texts[:300], cfg)
    model = clf.train(x, y[:300], cfg)
    p = model.predict_proba(texts[300:])
    m = clf.metrics(y[300:], p)
    assert m["accuracy"] > 0.9 and m["auc"] > 0.95
    model.save(tmp_path / "m")
    again = clf.load(tmp_path / "m")
    assert again.sha256() == model.sha256()
    assert np.allclose(again.predict_proba(texts[300:]), p)
    with pytest.raises(ValueError):
        clf.train(x, np.ones(300), cfg)
    # a tampered weights file is refused
    with np.load(tmp_path / "m" / clf.WEIGHTS) as z:
        w, b = z["w"].copy(), z["b"].copy()
    w[0] += 1
    np.savez(tmp_path / "m" / clf.WEIGHTS, w=w, b=b)
    with pytest.raises(clf.ModelFileError):
        clf.load(tmp_path / "m")


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert abs(clf.roc_auc(y, s) - pairwise) < 1e-12
    assert clf.roc_auc(np.ones(3), np.arange(3)) is None


def test_real_chinese_text_wiki_vs_reviews(shared_dir):
    """zhwiki paragraphs against product reviews, held out by article/review block."""
    wiki = []
    for f in sorted((shared_dir / "corpora/zhwiki-articles").glob("*.txt"))[:30]:
        wiki += [(f.stem, ln) for ln in f.read_text(encoding="utf-8").splitlines()[1:] if len(ln) > 60]
    reviews = [ln for ln in (shared_dir / "corpora/zh-sentiment/neg.txt").read_text(encoding="utf-8").splitlines() if len(ln) > 60][:800]
    wiki = wiki[:800]
    texts = [t for _, t in wiki] + reviews
    y = np.array([1] * len(wiki) + [0] * len(reviews))
    group = [a for a, _ in wiki] + [str(i // 50) for i in range(len(reviews))]
    test = np.array([sum(map(ord, g)) % 5 == 0 for g in group])  # held out by article / block of 50 reviews
    cfg = clf.FeatureConfig(dim_bits=16)
    x = clf.featurize(texts, cfg)
    model = clf.train(x[~test], y[~test], cfg)
    m = clf.metrics(y[test], clf.sigmoid(model.decision(x[test])))
    assert m["accuracy"] > 0.85 and m["auc"] > 0.9, m


# ------------------------------------------------------------------------------------ params
def test_params_refuse_bad_combinations():
    with pytest.raises(ValidationError, match="positives and negatives"):
        qc.Params(positives=["a"])
    with pytest.raises(ValidationError, match="not both"):
        qc.Params(positives=["a"], negatives=["b"], model="m")
    with pytest.raises(ValidationError, match="both as positives and negatives"):
        qc.Params(positives=["a"], negatives=["a"])
    with pytest.raises(ValidationError, match="needs action: drop"):
        qc.Params(model="m", top_fraction=0.5, action="score")
    p = qc.Params(positives=["wiki", {"path": "good.txt"}], negatives=["raw"])
    assert p.input_problems(["wiki", "raw", "web"]) == []
    assert p.input_problems(["wiki", "web"])[0].startswith("negatives: 'raw' is not one of the stage's inputs")
    assert "every input is training data" in p.input_problems(["wiki", "raw"])[0]


# ------------------------------------------------------------------------------------ direct stage runs
def write_node(folder: Path, texts: list[str], license: str = "CC-BY-SA-4.0", parts: int = 1) -> NodeOutput:
    folder.mkdir(parents=True, exist_ok=True)
    per = max(1, -(-len(texts) // parts))
    for i in range(parts):
        chunk = texts[i * per : (i + 1) * per]
        n = len(chunk)
        pq.write_table(
            pa.table(
                {
                    "id": [f"{folder.name}/{i}-{j}" for j in range(n)],
                    "source": [folder.name] * n,
                    "license": [license] * n,
                    "title": [None] * n,
                    "url": [None] * n,
                    "timestamp": [None] * n,
                    "revision_id": [None] * n,
                    "text": chunk,
                },
                schema=DOC_SCHEMA,
            ),
            folder / f"part-{i:05d}.parquet",
        )
    return NodeOutput(name=folder.name, dir=folder, fingerprint=folder.name, stats={})


def run_stage(node_dir: Path, inputs: list[NodeOutput], **params) -> dict:
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        ctx = NodeContext(name="clf", dir=node_dir, inputs=inputs, executor=ex, run=RunContext(out_dir=node_dir.parent, cache_dir=node_dir.parent, console=console, manifest=None, progress=False))
        extra = qc.QualityClassifier(qc.Params(**params), "clf").run(ctx)
    kept = pa.concat_tables([pq.read_table(p) for p in sorted(node_dir.glob("part-*.parquet"))])
    removed = pa.concat_tables([pq.read_table(p) for p in sorted((node_dir / "removed").glob("part-*.parquet"))])
    tasks = [json.loads(p.read_text()) for p in sorted((node_dir / "_tasks").glob("part-*.json"))]
    return {"kept": kept, "removed": removed, "extra": extra, "tasks": tasks}


@pytest.fixture
def nodes(tmp_path):
    pos = write_node(tmp_path / "wiki", [doc(i, True) for i in range(120)])
    neg = write_node(tmp_path / "raw", [doc(1000 + i, False) for i in range(120)], license="LicenseRef-web")
    web = write_node(tmp_path / "web", [doc(2000 + i, i % 4 == 0) for i in range(80)], parts=3)
    return pos, neg, web


def test_one_class_only_is_a_clear_error(tmp_path, nodes):
    pos, _, web = nodes
    empty = write_node(tmp_path / "empty", ["", "  "])
    with pytest.raises(StageError) as err:
        run_stage(tmp_path / "clf", [pos, empty, web], positives=["wiki"], negatives=["empty"], dim_bits=14)
    assert "negatives side has no documents" in err.value.what and "clf" in err.value.where


def test_missing_training_node_is_a_manifest_error(tmp_path, nodes):
    pos, _, web = nodes
    with pytest.raises(ManifestError) as err:
        run_stage(tmp_path / "clf", [pos, web], positives=["wiki"], negatives=["raw"], dim_bits=14)
    assert "'raw' is not one of the stage's inputs" in err.value.what and "clf" in err.value.where


def test_threshold_top_fraction_and_score_only(tmp_path, nodes):
    pos, neg, web = nodes
    res = run_stage(tmp_path / "a", [pos, neg, web], positives=["wiki"], negatives=["raw"], dim_bits=14, holdout=0.2)
    stats = res["extra"]["classifier"]
    assert stats["metrics"]["heldout"]["accuracy"] > 0.8 and stats["metrics"]["heldout"]["docs"] == 48
    assert stats["scored_inputs"] == ["web"] and stats["scored_documents"] == 80
    n_in = sum(t["in"] for t in res["tasks"])
    assert n_in == 80 == res["kept"].num_rows + res["removed"].num_rows  # training inputs are not passed through
    assert set(res["removed"]["reason"].to_pylist()) == {"quality:classifier<0.5000"}
    assert (np.array(res["kept"]["q_classifier"].to_pylist()) >= 0.5).all()
    sig = json.loads(res["removed"]["signals"][0].as_py())
    assert sig["q_classifier"] < 0.5 and sig["threshold"] == 0.5 and sig["mode"] == "threshold"
    kept_ids = set(res["kept"]["id"].to_pylist())
    assert 15 <= len(kept_ids) <= 25  # a quarter of the scored documents are "good"
    card = res["extra"]["card"]
    assert card["title"] == "Quality classifier" and any("LicenseRef-web" in n for n in card["notes"])
    model_dir = tmp_path / "a" / "model"
    assert {p.name for p in model_dir.iterdir()} >= {"weights.npz", "model_card.json", "README.md"}
    mc = json.loads((model_dir / "model_card.json").read_text())
    assert mc["training"]["licenses"]["negatives"] == {"LicenseRef-web": 120} and mc["sha256"] == stats["model_sha256"]
    assert not (tmp_path / "a" / "work").exists()

    top = run_stage(tmp_path / "b", [pos, neg, web], positives=["wiki"], negatives=["raw"], dim_bits=14, holdout=0.2, top_fraction=0.1)
    assert top["kept"].num_rows == 8 and top["removed"].num_rows == 72
    cut = top["extra"]["classifier"]["threshold"]
    assert min(top["kept"]["q_classifier"].to_pylist()) == pytest.approx(cut)
    assert top["removed"]["reason"][0].as_py() == f"quality:classifier<{cut:.4f}"

    score = run_stage(tmp_path / "c", [pos, neg, web], positives=["wiki"], negatives=["raw"], dim_bits=14, holdout=0.2, action="score")
    assert score["kept"].num_rows == 80 and score["removed"].num_rows == 0
    assert np.allclose(sorted(score["kept"]["q_classifier"].to_pylist()), sorted(top["kept"]["q_classifier"].to_pylist() + json_scores(top["removed"])), atol=1e-6)

    # reuse: the saved model, every input scored, nothing trained, the same scores
    reuse = run_stage(tmp_path / "d", [web], model=str(model_dir), action="score")
    assert reuse["extra"]["classifier"]["model_sha256"] == stats["model_sha256"] and "training" in reuse["extra"]["classifier"]
    assert np.allclose(sorted(reuse["kept"]["q_classifier"].to_pylist()), sorted(score["kept"]["q_classifier"].to_pylist()))


def json_scores(removed: pa.Table) -> list[float]:
    return [json.loads(s)["q_classifier"] for s in removed["signals"].to_pylist()]


def test_training_from_a_file_of_hand_picked_documents(tmp_path, nodes):
    _, neg, web = nodes
    good = tmp_path / "good.txt"
    good.write_text("\n".join(doc(i, True) for i in range(100)) + "\n", encoding="utf-8")
    res = run_stage(tmp_path / "f", [neg, web], positives=[{"path": str(good), "license": "CC0-1.0"}], negatives=["raw"], dim_bits=14)
    tr = res["extra"]["classifier"]["training"]
    assert tr["documents"]["positives"] == 100 and tr["licenses"]["positives"] == {"CC0-1.0": 100}
    assert tr["positives"][0]["file"] == str(good) and len(tr["positives"][0]["sha256"]) == 64


def test_sampling_is_bounded_and_seeded(tmp_path, nodes):
    pos, neg, web = nodes
    a = run_stage(tmp_path / "s1", [pos, neg, web], positives=["wiki"], negatives=["raw"], dim_bits=14, max_train_docs=50)
    b = run_stage(tmp_path / "s2", [pos, neg, web], positives=["wiki"], negatives=["raw"], dim_bits=14, max_train_docs=50)
    assert a["extra"]["classifier"]["training"]["documents"]["positives"] == 50
    assert a["extra"]["classifier"]["model_sha256"] == b["extra"]["classifier"]["model_sha256"]


# ------------------------------------------------------------------------------------ through the runner
MANIFEST = """
name: clf-test
sources:
  - {name: wiki, kind: local, paths: ["data/wiki.jsonl"], license: CC-BY-SA-4.0, id_field: doc}
  - {name: raw, kind: local, paths: ["data/raw.jsonl"], license: CC-BY-4.0, id_field: doc}
  - {name: web, kind: local, paths: ["data/web.jsonl"], license: CC-BY-4.0, id_field: doc}
stages:
  - {name: clf, stage: quality_classifier, inputs: [wiki, raw, web], params: {positives: [wiki], negatives: [raw], dim_bits: 14, holdout: 0.2}}
output: clf
"""


def test_through_the_runner_and_reuse_from_a_second_manifest(tmp_path, cache_env):
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest

    jsonl(tmp_path / "data/wiki.jsonl", [doc(i, True, "zh" if i % 2 else "en") for i in range(100)], "w")
    jsonl(tmp_path / "data/raw.jsonl", [doc(500 + i, False, "zh" if i % 2 else "en") for i in range(100)], "r")
    jsonl(tmp_path / "data/web.jsonl", [doc(900 + i, i % 2 == 0, "zh" if i % 3 else "en") for i in range(60)], "x")
    (tmp_path / "m.yaml").write_text(MANIFEST, encoding="utf-8")
    out = tmp_path / "out"
    console = Console(quiet=True)
    with LocalExecutor(workers=2, console=console) as ex:
        res = run_manifest(load_manifest(tmp_path / "m.yaml"), out, ex, console, progress=False)
    assert res.nodes_run == ["wiki", "raw", "web", "clf"]
    stats = json.loads((out / "stages/clf/stats.json").read_text())
    assert stats["in"] == 60 == stats["out"] + stats["removed"]
    assert 20 <= stats["out"] <= 40 and list(stats["removed_by_reason"]) == ["quality:classifier<0.5000"]
    assert stats["classifier"]["metrics"]["heldout"]["accuracy"] > 0.8 and stats["card"]["title"] == "Quality classifier"
    import datasets

    ds = datasets.load_from_disk(str(out / "data"))
    assert ds.num_rows == stats["out"] and "q_classifier" in ds.column_names
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "Quality classifier" in readme and "held-out accuracy / AUC" in readme  # stats["card"] on the dataset card
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["nodes"]["clf"]["provenance"]["quality_classifier"]["model_sha256"] == stats["classifier"]["model_sha256"]

    # the same manifest again: nothing runs
    with LocalExecutor(workers=2, console=console) as ex:
        again = run_manifest(load_manifest(tmp_path / "m.yaml"), out, ex, console, progress=False)
    assert "clf" in again.nodes_skipped

    # a second manifest reuses the saved model (path relative to its folder), scores only
    other = tmp_path / "other"
    other.mkdir()
    (other / "m2.yaml").write_text(
        """
name: clf-reuse
sources:
  - {name: web, kind: local, paths: ["../data/web.jsonl"], license: CC-BY-4.0, id_field: doc}
stages:
  - {name: scored, stage: quality_classifier, params: {model: ../out/stages/clf/model, action: score}}
""",
        encoding="utf-8",
    )
    with LocalExecutor(workers=2, console=console) as ex:
        run_manifest(load_manifest(other / "m2.yaml"), tmp_path / "out2", ex, console, progress=False)
    s2 = json.loads((tmp_path / "out2/stages/scored/stats.json").read_text())
    assert s2["in"] == s2["out"] == 60 and s2["classifier"]["model_sha256"] == stats["classifier"]["model_sha256"]
    scores = pq.read_table(tmp_path / "out2/stages/scored/part-00000.parquet")["q_classifier"].to_numpy()
    assert int((scores >= 0.5).sum()) == stats["out"]
    with LocalExecutor(workers=1, console=console) as ex:
        assert "scored" in run_manifest(load_manifest(other / "m2.yaml"), tmp_path / "out2", ex, console, progress=False).nodes_skipped
    # the first manifest retrains (another seed) into the same folder: the reusing node's fingerprint
    # holds the model's sha256 (resolve()), so it runs again
    with LocalExecutor(workers=1, console=console) as ex:
        run_manifest(load_manifest(tmp_path / "m.yaml", ["stages.clf.params.seed=7"]), out, ex, console, progress=False)
    with LocalExecutor(workers=1, console=console) as ex:
        rerun = run_manifest(load_manifest(other / "m2.yaml"), tmp_path / "out2", ex, console, progress=False)
    assert "scored" in rerun.nodes_run
    assert json.loads((tmp_path / "out2/stages/scored/stats.json").read_text())["classifier"]["model_sha256"] != stats["classifier"]["model_sha256"]

    # a training node that is not an input: refused when the manifest is loaded (pipeline validate), naming the stage
    bad = MANIFEST.replace("inputs: [wiki, raw, web]", "inputs: [wiki, web]")
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(ManifestError, match=r"stages\[0\]\.params\.negatives: 'raw' is not one of the stage's inputs.*stage 'clf'"):
        load_manifest(tmp_path / "bad.yaml")
    only_training = MANIFEST.replace("inputs: [wiki, raw, web]", "inputs: [wiki, raw]")
    (tmp_path / "bad2.yaml").write_text(only_training, encoding="utf-8")
    with pytest.raises(ManifestError, match="every input is training data"):
        load_manifest(tmp_path / "bad2.yaml")


def test_resolve_pins_the_saved_model_and_training_files(tmp_path, nodes):
    """``resolve()`` is what the fingerprint holds beyond the params: another model or an edited
    training file under the same path must not reuse finished work."""
    from types import SimpleNamespace

    pos, neg, web = nodes
    run_stage(tmp_path / "a", [pos, neg, web], positives=["wiki"], negatives=["raw"], dim_bits=14)
    (tmp_path / "good.txt").write_text("一篇好文章。\n", encoding="utf-8")
    rctx = SimpleNamespace(manifest=SimpleNamespace(path=tmp_path / "m.yaml"))
    reuse = qc.QualityClassifier(qc.Params(model="a/model"), "clf").resolve(rctx)["identity"]
    sha = json.loads((tmp_path / "a/model/model_card.json").read_text())["sha256"]
    assert reuse == {"model_sha256": sha}
    files = qc.QualityClassifier(qc.Params(positives=[{"path": "good.txt"}], negatives=["raw"]), "clf").resolve(rctx)["identity"]
    assert len(files["files"]["good.txt"]) == 64
    with pytest.raises(ManifestError, match="no saved classifier model"):
        qc.QualityClassifier(qc.Params(model="nowhere"), "clf").resolve(rctx)
