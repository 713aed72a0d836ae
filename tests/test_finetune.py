"""Fine-tuning (stages/finetune_data.py, pipeline/train/finetune.py): labeled sources, examples
made with the pretraining tokenizer, a sentiment classifier that beats the majority baseline on
real Chinese reviews, SFT with the loss on the response only, and the failure cases.

Everything runs through the real runner and the real training code on small models (a 2-layer,
64-wide variant of ``tiny``) with one torch thread: on a shared 2-core machine intra-op threads
make these tiny matmuls ~6x slower, not faster.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console

from pipeline.common.errors import ManifestError, PipelineError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from pipeline.text.tokenizer import load_tokenizer
from pipeline.train import TrainError
from pipeline.train.finetune import (
    FinetuneConfig,
    classification_scores,
    collate,
    find_finetune_dir,
    finetune,
    hidden_states,
    load_base,
    load_classifier,
    predict,
    read_split,
)
from pipeline.train.loop import TrainConfig, train
from pipeline.train.model import Transformer, preset
from tests.conftest import REPO, SHARED, run_cli

MICRO = {"dim": 64, "n_layers": 2, "n_heads": 4, "ffn_dim": 176}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(m: Path, out: Path, overrides: list[str] | None = None):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(m, overrides), out, ex, console, progress=False)


def pretrain(data: Path, out: Path, steps: int) -> Path:
    train(TrainConfig(data=str(data), out_dir=str(out), preset="tiny", model=MICRO, batch_size=8, lr=3e-3, warmup_steps=10, max_steps=steps, eval_every=0, eval_tokens=4096, ckpt_every=0, device="cpu", seed=1))
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# ============================================================ classification on real reviews
SENTIMENT_MANIFEST = """\
name: sentiment-test
sources:
  - {name: wiki, kind: local, paths: ['wiki/*.jsonl'], id_field: id, license: CC-BY-SA-3.0}
  - {name: reviews, kind: local, paths: [reviews.jsonl], id_field: id, task: classification, label_field: label, license: MIT}
stages:
  - {name: tok, stage: tokenize, inputs: [wiki], params: {vocab_size: 3000, character_coverage: 0.995, seq_len: 64, validation_fraction: 0.05}}
  - {name: rclean, stage: clean, inputs: [reviews], params: {min_chars: 2}}
  - {name: rdedup, stage: dedup, params: {exact: true, near: false}}
  - {name: sentiment, stage: finetune_data, inputs: [rdedup, tok], params: {task: classification, max_len: 64, test_fraction: 0.2, validation_fraction: 0.1}}
"""
PER_LABEL = 1000


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    if not (SHARED / "corpora" / "zh-sentiment").is_dir():
        pytest.skip(f"shared zh-sentiment reviews not present at {SHARED / 'corpora' / 'zh-sentiment'}")
    root = tmp_path_factory.mktemp("sentiment")
    wiki = [{"id": p.stem, "text": p.read_text(encoding="utf-8")} for p in sorted((SHARED / "corpora" / "zhwiki-articles").glob("*.txt"))]
    write_jsonl(root / "wiki" / "wiki.jsonl", wiki)
    rows = []
    for label in ("pos", "neg"):  # an even sample over each file (reviews repeat: dedup removes copies)
        lines = [l.strip() for l in (SHARED / "corpora" / "zh-sentiment" / f"{label}.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
        step = len(lines) // PER_LABEL
        rows += [{"id": f"{label}{i}", "text": t, "label": label} for i, t in enumerate(lines[::step][:PER_LABEL])]
    rows.append({"id": "nolabel", "text": "这本书还行"})  # no label: the ledger, not silence
    write_jsonl(root / "reviews.jsonl", rows)
    (root / "m.yaml").write_text(SENTIMENT_MANIFEST, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        res = run(root / "m.yaml", root / "out")
    base = pretrain(root / "out", root / "base", steps=100)
    return {"root": root, "out": root / "out", "base": base, "rows": rows, "result": res}


def test_labels_pass_through_cleaning_and_dedup_and_missing_labels_are_in_the_ledger(sentiment):
    out = sentiment["out"]
    want = {f"reviews/{r['id']}": r["label"] for r in sentiment["rows"] if "label" in r}
    kept = pa.concat_tables([pq.read_table(p) for p in sorted((out / "stages" / "rdedup").glob("part-*.parquet"))])
    assert kept.num_rows > 1000
    assert all(want[i] == label for i, label in zip(kept["id"].to_pylist(), kept["label"].to_pylist()))
    ledger = pq.read_table(out / "stages" / "reviews" / "removed" / "part-00000.parquet").to_pylist()
    assert [(r["id"], r["reason"]) for r in ledger] == [("reviews/nolabel", "parse:missing-label")]


def test_finetune_data_accounting_splits_and_tokenizer(sentiment):
    out = sentiment["out"]
    stats = json.loads((out / "stages" / "sentiment" / "stats.json").read_text())
    dedup_out = json.loads((out / "stages" / "rdedup" / "stats.json").read_text())["out"]
    assert stats["in"] == dedup_out == stats["out"] + stats["removed"]  # the tokenize input's rows are not counted
    index = json.loads((out / "finetune" / "index.json").read_text())  # published beside tokens/ and tokenizer/
    tok_index = json.loads((out / "tokens" / "index.json").read_text())
    assert index["tokenizer"]["sha256"] == tok_index["tokenizer"]["sha256"]
    assert index["labels"] == ["neg", "pos"] and index["max_len"] == 64
    assert sum(s["examples"] for s in index["splits"].values()) == stats["out"]
    ft = find_finetune_dir(out)
    tok = load_tokenizer(out / "tokenizer")
    texts = {r["id"]: r["text"] for p in sorted((out / "stages" / "rdedup").glob("part-*.parquet")) for r in pq.read_table(p, columns=["id", "text"]).to_pylist()}
    seen = set()
    for split in ("train", "validation", "test"):
        data = read_split(ft, index, split)
        assert len(data) == index["splits"][split]["examples"] > 0
        counts = np.bincount(data.labels, minlength=2).tolist()
        assert counts == [index["splits"][split]["labels"][name] for name in index["labels"]]
        for doc_id, ids in zip(data.ids[:50], data.examples[:50]):
            assert len(ids) <= 64 and ids[-1] == tok_index["eos_id"]
            full = tok.encode(texts[doc_id])
            assert ids[:-1].tolist() == full[: len(ids) - 1]  # same tokenizer as pretraining, truncated at max_len
        seen |= set(data.ids)
    assert len(seen) == stats["out"]  # every example in exactly one split
    truncated = sum(s["truncated"] for s in index["splits"].values())
    assert 0 < truncated < stats["out"]


def test_classifier_beats_the_majority_baseline(sentiment):
    root = sentiment["root"]
    cfg = FinetuneConfig(data=str(sentiment["out"]), init_from=str(sentiment["base"]), out_dir=str(root / "clf"), epochs=3, lr=1e-3, device="cpu", seed=0)
    res = finetune(cfg)
    test, base = res["test"], res["baseline"]
    print("sentiment:", {k: round(test[k], 3) for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")}, "baseline", {k: round(base[k], 3) for k in ("accuracy", "macro_f1")})
    # measured 0.72 / 0.72 (a sweep over lr 3e-4..3e-3: accuracy 0.68-0.73); baseline 0.46 / 0.31
    assert test["accuracy"] >= base["accuracy"] + 0.10
    assert test["macro_f1"] >= 0.6 and test["macro_f1"] >= base["macro_f1"] + 0.2
    cm = np.array(test["confusion_matrix"]["matrix"])
    assert test["confusion_matrix"]["labels"] == ["neg", "pos"] and cm.sum() == test["examples"] == res["examples"]["test"]
    assert test["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    saved = json.loads((root / "clf" / "finetune" / "metrics.json").read_text())
    assert saved["test"]["macro_f1"] == test["macro_f1"]
    assert [json.loads(l) for l in (root / "clf" / "finetune" / "metrics.jsonl").read_text().splitlines()][0]["step"] == 1
    # the saved classifier gives the same test predictions
    model, state = load_classifier(root / "clf")
    assert state["finetune"]["labels"] == ["neg", "pos"] and state["finetune"]["base_checkpoint"]["sha256"] == res["base"]["sha256"]
    ft = find_finetune_dir(sentiment["out"])
    split = read_split(ft, json.loads((ft / "index.json").read_text()), "test")
    pred = predict(model, split, 64, 2, torch.device("cpu"))
    assert classification_scores(split.labels, pred, ["neg", "pos"])["confusion_matrix"]["matrix"] == cm.tolist()


def test_finetuning_is_deterministic_given_the_seed(sentiment):
    root = sentiment["root"]
    runs = []
    for k in range(2):
        losses = []
        cfg = FinetuneConfig(data=str(sentiment["out"]), init_from=str(sentiment["base"]), out_dir=str(root / f"det{k}"), epochs=1, max_steps=4, lr=1e-3, device="cpu", seed=5)
        res = finetune(cfg, on_step=lambda r: losses.append(r["loss"]))
        runs.append((losses, res["test"]["confusion_matrix"]["matrix"]))
    assert runs[0] == runs[1] and len(runs[0][0]) == 4


# ============================================================ SFT on a synthetic instruction set
WORDS = "apple river stone cloud tiger paper lamp bread glass horse music green silver orange window garden".split()


def sft_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(2, 5))
        rows.append({"id": f"q{i}", "prompt": "reverse: " + " ".join(words), "answer": " ".join(reversed(words))})
    return rows


SFT_MANIFEST = """\
name: sft-test
sources:
  - {name: corpus, kind: local, paths: [corpus.jsonl], id_field: id, license: CC0-1.0}
  - {name: pairs, kind: local, paths: [pairs.jsonl], id_field: id, task: sft, instruction_field: prompt, response_field: answer, license: CC0-1.0}
stages:
  - {name: tok, stage: tokenize, inputs: [corpus], params: {vocab_size: 400, seq_len: 64, validation_fraction: 0.05}}
  - {name: pclean, stage: clean, inputs: [pairs]}
  - {name: sft, stage: finetune_data, inputs: [pclean, tok], params: {task: sft, max_len: 32, test_fraction: 0.1, validation_fraction: 0.1}}
"""


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    rng = random.Random(3)
    corpus = [{"id": f"c{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(20, 60))) + "."} for i in range(300)]
    write_jsonl(root / "corpus.jsonl", corpus)
    rows = sft_rows(600, 4)
    rows += [{"id": "empty", "prompt": "reverse: lamp", "answer": ""}, {"id": "broken", "prompt": "reverse: lamp"}]
    write_jsonl(root / "pairs.jsonl", rows)
    (root / "m.yaml").write_text(SFT_MANIFEST, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        run(root / "m.yaml", root / "out")
        # the same pairs with another tokenizer, and with examples longer than the model's context
        run(root / "m.yaml", root / "out-vocab", ["stages.tok.params.vocab_size=500"])
        run(root / "m.yaml", root / "out-long", ["stages.sft.params.max_len=128"])
    base = pretrain(root / "out", root / "base", steps=40)
    return {"root": root, "out": root / "out", "base": base}


def test_sft_examples_mask_exactly_the_response(sft):
    out = sft["out"]
    index = json.loads((out / "finetune" / "index.json").read_text())
    assert index["task"] == "sft" and index["labels"] == []
    ledger = pq.read_table(out / "stages" / "pairs" / "removed" / "part-00000.parquet").to_pylist()
    assert [(r["id"], r["reason"]) for r in ledger] == [("pairs/broken", "parse:missing-response")]
    sft_ledger = pa.concat_tables([pq.read_table(p) for p in (out / "stages" / "sft" / "removed").glob("*.parquet")]).to_pylist()
    assert [(r["id"], r["reason"]) for r in sft_ledger] == [("pairs/empty", "finetune:no-response")]
    tok = load_tokenizer(out / "tokenizer")
    pairs = {f"pairs/{r['id']}": r for r in sft_rows(600, 4)}
    data = read_split(find_finetune_dir(out), index, "train")
    for doc_id, ids, mask in zip(data.ids, data.examples, data.masks):
        assert ids[-1] == index["eos_id"] and mask[-1] == 1
        assert tok.decode(ids[mask == 0]) == pairs[doc_id]["prompt"] + "\n"
        assert tok.decode(ids[mask == 1][:-1]) == pairs[doc_id]["answer"]
        assert (np.diff(mask) >= 0).all()  # prompt first, then the response


def test_collate_puts_loss_on_response_targets_only():
    a, ma = np.array([5, 6, 7, 8, 9]), np.array([0, 0, 1, 1, 1], np.int8)
    b, mb = np.array([5, 11, 12]), np.array([0, 1, 1], np.int8)
    x, y, w = collate([a, b], pad_id=0, masks=[ma, mb])
    assert x.tolist() == [[5, 6, 7, 8], [5, 11, 12, 0]]
    assert y.tolist() == [[6, 7, 8, 9], [11, 12, 0, 0]]
    # target 6 is an instruction token: no loss; 7, 8, 9 (response + EOS): loss; padding: none
    assert w.tolist() == [[0, 1, 1, 1], [1, 1, 0, 0]]
    ids, lengths = collate([a, b], pad_id=0)
    assert ids.shape == (2, 5) and lengths.tolist() == [5, 3]


def test_sft_lowers_the_response_loss(sft):
    res = finetune(FinetuneConfig(data=str(sft["out"]), init_from=str(sft["base"]), out_dir=str(sft["root"] / "sft-run"), task="sft", epochs=3, batch_size=16, lr=3e-3, device="cpu"))
    before, after = res["before"]["validation"], res["after"]["validation"]
    print("sft validation response loss:", round(before["loss"], 3), "->", round(after["loss"], 3))
    assert after["loss"] < 0.7 * before["loss"]  # measured 4.94 -> 2.60
    assert res["after"]["test"]["loss"] < 0.7 * res["before"]["test"]["loss"]
    assert before["tokens"] == after["tokens"] > 0
    # the SFT checkpoint is a plain native checkpoint: it loads like a pretraining one
    model, state, _ = load_base(sft["root"] / "sft-run" / "finetune")
    assert state["finetune"]["task"] == "sft" and model.cfg.dim == MICRO["dim"]


def test_cli_finetunes_and_prints_the_scores(sft):
    out_dir = sft["root"] / "cli"
    proc = run_cli("train", "--finetune", "sft", "--shards", str(sft["out"]), "--init-from", str(sft["base"]), "--out", str(out_dir), "--epochs", "1", "--batch-size", "32", "--lr", "3e-3", "--device", "cpu", "--preset", "25m", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "response-token loss" in proc.stdout and "validation" in proc.stdout
    assert "not used by fine-tuning: --preset" in proc.stderr
    state = json.loads((out_dir / "finetune" / "state.json").read_text())
    assert state["finetune"]["config"]["lr"] == 3e-3 and state["finetune"]["config"]["batch_size"] == 32  # typed options win
    assert state["finetune"]["config"]["warmup_steps"] is None  # the pretraining default (100) is not used
    proc = run_cli("train", "--finetune", "sft", "--shards", str(sft["out"]), "--out", str(out_dir))
    assert proc.returncode == 2 and "--init-from" in proc.stderr


def test_cli_reads_the_finetune_section_and_flags_win(sft, tmp_path):
    config = tmp_path / "m.yaml"
    config.write_text(f"name: x\nfinetune:\n  task: sft\n  init_from: {sft['base']}\n  epochs: 1\n  batch_size: 16\n  lr: 0.002\n  device: cpu\n", encoding="utf-8")
    out_dir = tmp_path / "from-section"
    proc = run_cli("train", "--shards", str(sft["out"]), "--config", str(config), "--init-from", str(sft["base"]), "--out", str(out_dir), "--batch-size", "32", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((out_dir / "finetune" / "state.json").read_text())["finetune"]["config"]
    assert cfg["task"] == "sft" and cfg["lr"] == 0.002 and cfg["epochs"] == 1  # from the section
    assert cfg["batch_size"] == 32  # the flag wins
    config.write_text("name: x\nfinetune: {task: sft, bogus_key: 1}\n", encoding="utf-8")
    proc = run_cli("train", "--shards", str(sft["out"]), "--config", str(config), "--init-from", str(sft["base"]), "--out", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "bogus_key" in proc.stderr and "Traceback" not in proc.stderr


# ============================================================ bad input
def test_examples_from_another_tokenizer_are_refused(sft):
    with pytest.raises(TrainError) as info:
        finetune(FinetuneConfig(data=str(sft["root"] / "out-vocab"), init_from=str(sft["base"]), out_dir=str(sft["root"] / "bad"), device="cpu"))
    ours = json.loads((sft["out"] / "tokens" / "index.json").read_text())["tokenizer"]["sha256"]
    theirs = json.loads((sft["root"] / "out-vocab" / "finetune" / "index.json").read_text())["tokenizer"]["sha256"]
    assert ours != theirs and "tokenizer mismatch" in str(info.value) and ours in str(info.value) and theirs in str(info.value)


def test_examples_longer_than_the_context_are_refused(sft):
    with pytest.raises(TrainError) as info:
        finetune(FinetuneConfig(data=str(sft["root"] / "out-long"), init_from=str(sft["base"]), out_dir=str(sft["root"] / "bad"), device="cpu"))
    assert "seq_len mismatch" in str(info.value) and "128" in str(info.value) and "64" in str(info.value)


def test_corrupt_checkpoints_are_refused(sft, tmp_path):
    src = sft["base"] / "checkpoint"
    cases = {
        "truncated": lambda d: (d / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000]),
        "state": lambda d: (d / "state.json").write_text("{not json", encoding="utf-8"),
        "foreign": lambda d: (d / "state.json").write_text(json.dumps({**json.loads((src / "state.json").read_text()), "model": {**json.loads((src / "state.json").read_text())["model"], "dim": 128}}), encoding="utf-8"),
        "missing": lambda d: (d / "model.safetensors").unlink(),
    }
    expect = {"truncated": "corrupt checkpoint weights", "state": "corrupt checkpoint state", "foreign": "do not fit the model", "missing": "no checkpoint here"}
    for name, damage in cases.items():
        d = tmp_path / name / "checkpoint"
        shutil.copytree(src, d)
        damage(d)
        with pytest.raises(TrainError) as info:
            finetune(FinetuneConfig(data=str(sft["out"]), init_from=str(d.parent), out_dir=str(tmp_path / "o"), device="cpu"))
        assert expect[name] in str(info.value), name
        assert str(d) in str(info.value)


def test_manifest_errors_for_labeled_sources(tmp_path):
    def manifest(src: str) -> Path:
        (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n', encoding="utf-8")
        m = tmp_path / "m.yaml"
        m.write_text(f"name: t\nsources:\n  - {{name: s, kind: local, paths: [a.jsonl], license: MIT, {src}}}\n", encoding="utf-8")
        return m

    for src, words in (
        ("task: classification", "label_field"),
        ("task: classification, label_field: a, label_value: b", "exactly one"),
        ("task: sft, instruction_field: q", "response_field"),
        ("task: pretrain, label_field: label", "task: classification"),
        ("task: regression", "task"),
    ):
        with pytest.raises(ManifestError) as info:
            load_manifest(manifest(src))
        assert "sources[0]" in str(info.value) and words in str(info.value), src
    load_manifest(manifest("task: classification, label_field: label"))


def test_finetune_data_needs_labels_and_a_tokenizer(sft, tmp_path):
    m = sft["root"] / "m.yaml"
    with pytest.raises(PipelineError) as info:  # documents without the label column
        run(m, tmp_path / "o1", ["stages.sft.inputs=[corpus, tok]"])
    assert "no column(s) instruction, response" in str(info.value) and "task: sft" in str(info.value)
    with pytest.raises(PipelineError) as info:  # no tokenizer
        run(m, tmp_path / "o2", ["stages.sft.inputs=[pclean]"])
    assert "tokenize input" in str(info.value)
    # tokenizer_path instead of a tokenize input: the same examples
    run(m, tmp_path / "o3", ["stages.sft.inputs=[pclean]", f"stages.sft.params.tokenizer_path={sft['out'] / 'tokenizer'}"])
    a = json.loads((sft["out"] / "finetune" / "index.json").read_text())
    b = json.loads((tmp_path / "o3" / "finetune" / "index.json").read_text())
    assert a["tokenizer"]["sha256"] == b["tokenizer"]["sha256"] and a["splits"] == b["splits"]
    with pytest.raises(PipelineError) as info:  # a pin that does not match
        run(m, tmp_path / "o3", ["stages.sft.inputs=[pclean]", f"stages.sft.params.tokenizer_path={sft['out'] / 'tokenizer'}", "stages.sft.params.tokenizer_sha256=" + "f" * 64])
    assert a["tokenizer"]["sha256"] in str(info.value) and "tokenizer_sha256" in str(info.value)


def test_config_from_a_dict_rejects_unknown_keys():
    with pytest.raises(TrainError) as info:
        FinetuneConfig.from_dict({"data": "d", "init_from": "i", "out_dir": "o", "epoch": 3})
    assert "epoch" in str(info.value) and "epochs" in str(info.value)
    with pytest.raises(TrainError):
        FinetuneConfig(data="d", init_from="i", out_dir="o", pooling="max")
    assert FinetuneConfig.from_dict({"data": "d", "init_from": "i", "out_dir": "o", "epochs": 2}).epochs == 2


# ============================================================ units
def test_map_stages_keep_the_label_and_sft_columns():
    from pipeline.core.stage import DOC_SCHEMA
    from stages import get_stage_class

    texts = ["这本书写得很好，我非常喜欢，推荐给大家阅读。内容丰富，文笔流畅。" * 3, "质量太差了，根本不值这个价格，非常失望，不会再买。" * 3, "An English review of a book that I liked a lot."]
    cols = {n: [None] * 3 for n in DOC_SCHEMA.names}
    cols.update(id=["a", "b", "c"], text=texts)
    extra = {"label": ["pos", "neg", "pos"], "instruction": ["q1", "q2", "q3"], "response": ["r1", "r2", "r3"]}
    table = pa.table(cols, schema=DOC_SCHEMA)
    for name, values in extra.items():
        table = table.append_column(name, pa.array(values))
    for name, params in (("clean", {"opencc": "t2s"}), ("lid_filter", {}), ("quality_filter", {"preset": "zh"})):
        cls = get_stage_class(name)
        kept, removed = cls(cls.Params(**params), name).process(table)[:2]
        assert {"label", "instruction", "response"} <= set(kept.column_names), name
        for row in kept.to_pylist():
            k = "abc".index(row["id"])
            assert [row[c] for c in extra] == [extra[c][k] for c in extra], name
        assert kept.num_rows + (removed.num_rows if removed is not None else 0) == 3


def test_scores_match_a_hand_computed_example():
    # true: a a a b b c ; predicted: a a b b c c
    s = classification_scores([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert s["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert s["accuracy"] == pytest.approx(4 / 6)
    p, r = [1, 0.5, 0.5], [2 / 3, 0.5, 1]
    f = [2 * a * b / (a + b) for a, b in zip(p, r)]
    assert s["macro_precision"] == pytest.approx(np.mean(p)) and s["macro_recall"] == pytest.approx(np.mean(r)) and s["macro_f1"] == pytest.approx(np.mean(f))
    assert s["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # a label never predicted: precision 0 (not NaN), and it still counts in the macro average
    s = classification_scores([0, 1], [0, 0], ["a", "b"])
    assert s["macro_precision"] == pytest.approx(0.25) and s["macro_f1"] == pytest.approx((2 / 3) / 2)


def test_hidden_states_are_the_models_own():
    torch.manual_seed(0)
    m = Transformer(preset("tiny", vocab_size=100, max_seq_len=16, **MICRO)).eval()
    x = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        assert torch.allclose(torch.nn.functional.linear(hidden_states(m, x), m.embed_tokens.weight), m(x), atol=1e-5)


def test_example_manifest_validates():
    proc = run_cli("validate", str(REPO / "manifests" / "zh-sentiment-finetune.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "sentiment" in proc.stderr
