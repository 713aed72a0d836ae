"""Stage ``lm_score`` (stages/lm_score.py, pipeline/text/lm.py): a tiny model trained here by
``pipeline train`` on a synthetic English corpus scores held-out text from the same generator
lower than shuffled or random text; buckets are quantiles of the node; drop rules go to the
ledger; a new model changes the fingerprint; bad model paths are clear errors.

The scorer's forward pass is its own (stages may not import pipeline.train), so it is checked
against the training model's logits here."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console

from pipeline.common.errors import ManifestError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from pipeline.text import lm
from pipeline.train.loop import TrainConfig, train
from pipeline.train.model import Transformer, preset
from tests.test_tokenize import manifest as tokenize_manifest
from tests.test_tokenize import run as run_tokenize
from tests.test_train import sentence, write_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> Path:
    """A tiny model trained for a few steps (vocab 512, context 64): ~10 s on one core."""
    root = tmp_path_factory.mktemp("lm")
    write_corpus(root / "in", n_docs=240)
    m = tokenize_manifest(root, vocab_size=512, seq_len=64, validation_fraction=0.1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        run_tokenize(m, root / "out", workers=1)
    out = root / "model"
    cfg = TrainConfig(data=str(root / "out"), out_dir=str(out), preset="tiny", batch_size=8, lr=3e-3, warmup_steps=5, max_steps=80, eval_every=0, ckpt_every=0, device="cpu", seed=3, tensorboard=False)
    train(cfg)
    return out


def docs(n: int = 30) -> list[dict]:
    """In-domain sentences, the same words shuffled, random letters, and one empty document."""
    rng = random.Random(99)
    rows = []
    for i in range(n):
        text = " ".join(sentence(rng) for _ in range(3))
        words = text.split()
        rng.shuffle(words)
        letters = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz      ") for _ in range(len(text)))
        rows += [{"id": f"good{i}", "text": text}, {"id": f"shuf{i}", "text": " ".join(words)}, {"id": f"rand{i}", "text": letters}]
    rows.append({"id": "empty", "text": ""})
    return rows


def write_manifest(root: Path, model: Path, **params) -> Path:
    (root / "in").mkdir(parents=True, exist_ok=True)
    with open(root / "in" / "a.jsonl", "w", encoding="utf-8") as fh:
        for row in docs()[:46]:
            fh.write(json.dumps(row) + "\n")
    with open(root / "in" / "b.jsonl", "w", encoding="utf-8") as fh:  # two parts: quantiles are over the node
        for row in docs()[46:]:
            fh.write(json.dumps(row) + "\n")
    params = {"model": str(model), "batch_size": 8, "device": "cpu", **params}
    path = root / "m.yaml"
    path.write_text(
        "name: lm-test\n"
        "sources:\n"
        "  - {name: docs, kind: local, paths: ['in/*.jsonl'], license: CC0-1.0, id_field: id}\n"
        "stages:\n"
        f"  - {{name: lm, stage: lm_score, inputs: [docs], params: {json.dumps(params)}}}\n",
        encoding="utf-8",
    )
    return path


def run(m: Path, out: Path, overrides: list[str] | None = None, workers: int = 1):
    console = Console(quiet=True)
    with LocalExecutor(workers=workers, console=console) as ex:
        return run_manifest(load_manifest(m, overrides or []), out, ex, console, progress=False)


def node_table(out: Path, sub: str = ""):
    import pyarrow as pa

    parts = sorted((out / "stages" / "lm" / sub).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()


def test_forward_matches_the_training_model():
    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=128, max_seq_len=32, n_layers=2)).eval()
    weights = lm.load_weights(model.state_dict(), dict(vars(model.cfg)), "cpu", torch.float32)
    idx = torch.randint(0, 128, (3, 17))
    with torch.inference_mode():
        assert torch.allclose(lm.logits(weights, idx), model(idx), atol=1e-5, rtol=1e-5)


def test_in_domain_text_scores_lower_and_buckets_are_quantiles(model_run, tmp_path):
    m = write_manifest(tmp_path, model_run)
    run(m, tmp_path / "out")
    rows = {r["id"].split("/")[-1]: r for r in node_table(tmp_path / "out")}
    assert len(rows) == 91  # score only: nothing dropped
    ppl = {k: np.median([r["q_perplexity"] for i, r in rows.items() if i.startswith(k)]) for k in ("good", "shuf", "rand")}
    assert ppl["good"] < ppl["shuf"] < ppl["rand"], ppl
    assert max(r["q_perplexity"] for i, r in rows.items() if i.startswith("good")) < min(r["q_perplexity"] for i, r in rows.items() if i.startswith("rand"))
    assert rows["empty"]["q_perplexity"] is None and rows["empty"]["lm_bucket"] is None

    stats = json.loads((tmp_path / "out" / "stages" / "lm" / "stats.json").read_text())
    c1, c2 = stats["lm_score"]["cut_points"]
    scored = np.array([r["q_perplexity"] for r in rows.values() if r["q_perplexity"] is not None])
    assert np.allclose([c1, c2], np.quantile(scored, [0.33, 0.66]))
    for r in rows.values():
        if r["q_perplexity"] is not None:
            assert r["lm_bucket"] == ("head" if r["q_perplexity"] <= c1 else "middle" if r["q_perplexity"] <= c2 else "tail")
    assert stats["buckets"] == {"head": 30, "middle": 29, "tail": 31, "none": 1}  # numpy's linear quantiles of 90 scores
    assert {r["lm_bucket"] for i, r in rows.items() if i.startswith("good")} == {"head"}  # in-domain = CCNet's head
    assert stats["in"] == stats["out"] == 91 and stats["lm_score"]["tokens_scored"] > 0
    assert stats["card"]["title"] == "LM perplexity (lm_score)" and any(r[0] == "head / middle / tail" for r in stats["card"]["rows"])
    record = json.loads((tmp_path / "out" / "stages" / "lm" / "_record.json").read_text())
    assert record["params"]["model_sha256"] == lm.model_sha256(model_run) and record["provenance"]["lm_score"]["trained_steps"] == 80
    assert not (tmp_path / "out" / "stages" / "lm" / "work").exists()


def test_drop_rules_are_ledgered_and_accounted(model_run, tmp_path):
    m = write_manifest(tmp_path, model_run, keep_buckets=["head", "middle"], empty="drop")
    run(m, tmp_path / "out")
    kept = node_table(tmp_path / "out")
    removed = node_table(tmp_path / "out", "removed")
    assert len(kept) + len(removed) == 91 and {r["lm_bucket"] for r in kept} == {"head", "middle"}
    reasons = {}
    for r in removed:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    assert reasons == {"lm:bucket:tail": 31, "lm:empty": 1}
    sig = json.loads(next(r for r in removed if r["reason"] == "lm:bucket:tail")["signals"])
    assert sig["lm_bucket"] == "tail" and sig["q_perplexity"] > sig["cut_points"][1] and sig["lm_tokens"] > 0
    stats = json.loads((tmp_path / "out" / "stages" / "lm" / "stats.json").read_text())
    assert stats["in"] == stats["out"] + stats["removed"] and stats["removed_by_reason"] == reasons

    # a perplexity ceiling on top (first failing rule wins), changed by --set (a new fingerprint: the node runs again)
    good_max = max(r["q_perplexity"] for r in kept if r["id"].split("/")[-1].startswith("good"))
    run(m, tmp_path / "out", [f"stages.lm.params.max_perplexity={good_max * 1.0001}"])
    removed = node_table(tmp_path / "out", "removed")
    over = [r for r in removed if r["reason"].startswith("lm:perplexity>")]
    assert over and all(json.loads(r["signals"])["q_perplexity"] > good_max for r in over)
    assert not any(r["id"].split("/")[-1].startswith("good") for r in removed)


def test_scores_do_not_depend_on_batching(model_run):
    scorer = lm.LmScorer(model_run, "cpu")
    texts = [d["text"] for d in docs(6)] + [" ".join(sentence(random.Random(5)) for _ in range(40))]  # the last one spans several 64-token windows
    together, count, facts = scorer.score(texts, max_tokens=10_000, batch_size=5)
    alone = [scorer.score([t], max_tokens=10_000, batch_size=1)[0][0] for t in texts]
    assert np.allclose(together, alone, rtol=1e-4, equal_nan=True) and facts["windows"] > len(texts) - 1
    assert count[-1] > 64 and np.isnan(together[texts.index("")])
    cut, ccount, _ = scorer.score(texts[-1:], max_tokens=20, batch_size=4)
    assert ccount[0] == 20  # the first 20 tokens (the closing EOS only when the document is whole)
    # the definition: after an EOS (the previous document's), the mean loss of the first 20 tokens
    ids = [scorer.eos_id] + scorer.tokenizer.encode(texts[-1])[:20]
    with torch.inference_mode():
        loss = torch.nn.functional.cross_entropy(lm.logits(scorer.model, torch.tensor([ids[:-1]]))[0], torch.tensor(ids[1:]))
    assert cut[0] == pytest.approx(float(loss.exp()), rel=1e-5)
    # per byte: the same log-likelihood over the UTF-8 bytes (+1 for the closing EOS)
    per_byte, n, _ = scorer.score(texts[:3], max_tokens=10_000, batch_size=4, per="byte")
    assert np.allclose(np.log(per_byte) * [len(t.encode()) + 1 for t in texts[:3]], np.log(together[:3]) * n, rtol=1e-6)
    cut_byte = scorer.score(texts[-1:], max_tokens=20, batch_size=4, per="byte")[0][0]
    assert np.log(cut_byte) * len(scorer.tokenizer.decode(ids[1:]).encode()) == pytest.approx(float(loss) * 20, rel=1e-5)


def test_a_new_model_changes_the_fingerprint_and_a_pin_must_match(model_run, tmp_path):
    m = write_manifest(tmp_path, model_run)
    first = load_manifest(m).stage_params[0].model_sha256
    other = tmp_path / "other"
    shutil.copytree(model_run / "checkpoint", other / "checkpoint")
    w = other / "checkpoint" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    weights = load_file(str(w))
    weights["norm.weight"] = weights["norm.weight"] * 1.01
    save_file(weights, str(w))
    second = load_manifest(m, [f"stages.lm.params.model={other}"]).stage_params[0].model_sha256
    assert first != second and len(first) == 64
    with pytest.raises(ManifestError, match="model_sha256 pins") as e:
        load_manifest(m, [f"stages.lm.params.model={other}", f"stages.lm.params.model_sha256={first}"])
    assert "stages[0].params" in str(e.value)


def test_bad_model_paths_are_clear_errors(model_run, tmp_path):
    m = write_manifest(tmp_path, model_run)
    with pytest.raises(ManifestError, match="the model path does not exist") as e:
        load_manifest(m, [f"stages.lm.params.model={tmp_path / 'nowhere'}"])
    assert f"stages[0].params.model: Value error, {tmp_path / 'nowhere'}" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="not a trained model: state.json and model.safetensors missing"):
        load_manifest(m, [f"stages.lm.params.model={tmp_path / 'empty'}"])
    lost = tmp_path / "lost"  # a run whose tokenizer is gone
    shutil.copytree(model_run / "checkpoint", lost / "checkpoint")
    state = json.loads((lost / "checkpoint" / "state.json").read_text())
    state["data"].update(tokenizer_dir=str(tmp_path / "gone" / "tokenizer"), tokens_dir=str(tmp_path / "gone" / "tokens"))
    (lost / "checkpoint" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ManifestError, match="tokenizer was not found") as e:
        load_manifest(m, [f"stages.lm.params.model={lost}"])
    assert str(tmp_path / "gone" / "tokenizer") in str(e.value)
    with pytest.raises(ManifestError, match="two increasing cut points"):
        load_manifest(m, ["stages.lm.params.buckets=[0.7, 0.2]"])


def test_a_relative_model_path_is_read_from_the_manifest_folder(model_run, tmp_path, monkeypatch):
    shutil.copytree(model_run, tmp_path / "models" / "run")
    m = write_manifest(tmp_path / "project", Path("../models/run"))
    monkeypatch.chdir(tmp_path / "project" / "in")  # somewhere else: the working directory must not matter
    params = load_manifest(m).stage_params[0]
    assert Path(params.model) == (tmp_path / "models" / "run").resolve()


def test_a_model_with_a_published_layout_is_refused_clearly():
    """lm_score's fast forward implements our presets' layout only: a GQA / untied / biased model
    (one started with --init-from) is named, not scored wrongly."""
    import dataclasses

    from pipeline.text.lm import unsupported_layout
    from pipeline.train.model import ModelConfig

    assert unsupported_layout(dataclasses.asdict(ModelConfig())) == []
    odd = dataclasses.asdict(ModelConfig(n_kv_heads=2, qkv_bias=True, tie_embeddings=False))
    assert unsupported_layout(odd) == ["n_kv_heads=2", "qkv_bias=True", "tie_embeddings=False"]
