"""``pipeline train --init-from``: continued pretraining of a published Llama-family checkpoint
(tiny, random, built offline) on token shards made with its own tokenizer; the export loads with
AutoModelForCausalLM in the original format and keeps the original card's license; shards of
another tokenizer are refused; a hub id needs a pinned revision (the download is mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from pipeline.train import TrainError
from tests.conftest import run_cli
from tests.support.hfmodel import CORPUS, published_model
from tests.test_tokenize import manifest, run

ENV = {"OMP_NUM_THREADS": "1"}


def _docs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"d{i}", "text": f"{CORPUS[i % len(CORPUS)]} 第{i}段。"} for i in range(80)]
    (root / "docs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("initfrom")
    model = published_model(root / "tiny-qwen2")
    _docs(root / "in")
    out = root / "out"
    run(manifest(root, tokenizer_path=str(model), seq_len=32, validation_fraction=0.1), out)
    other = root / "other"
    (other / "in").mkdir(parents=True)
    _docs(other / "in")
    run(manifest(other, vocab_size=500, seq_len=32, validation_fraction=0.1), other / "out")  # a tokenizer trained here
    return {"root": root, "model": model, "out": out, "other": other / "out"}


def test_continued_pretraining_trains_exports_and_keeps_the_license(setup):
    run_dir = setup["root"] / "run"
    proc = run_cli("train", "--shards", str(setup["out"]), "--init-from", str(setup["model"]), "--out", str(run_dir), "--max-steps", "12",
                   "--lr", "3e-3", "--warmup-steps", "2", "--batch-size", "4", "--eval-every", "6", "--device", "cpu", "--samples", "1", env=ENV)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["init_from"]["model_type"] == "qwen2" and state["model"]["n_kv_heads"] == 2 and not state["model"]["tie_embeddings"]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if r["type"] == "train"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses  # training lowers the loss

    # the export: the original format (qwen2, untied), loads with AutoModelForCausalLM, same logits as our checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.train.checkpoint import load_native

    hf_dir = run_dir / "hf"
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["tie_word_embeddings"] is False
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    ours, _ = load_native(run_dir)
    idx = torch.randint(0, 600, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (hf(input_ids=idx).logits - ours(idx)).abs().max().item() < 1e-4
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    assert tok.chat_template and tok.eos_token == "<|endoftext|>"
    card = (hf_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and "base_model:" in card and "continued-pretraining" in card and "CC-BY-SA-3.0" in card
    assert (hf_dir / "LICENSE").is_file()

    # resume continues from the checkpoint (the published folder is not read again)
    proc = run_cli("train", "--shards", str(setup["out"]), "--init-from", str(setup["model"]), "--out", str(run_dir), "--max-steps", "14",
                   "--lr", "3e-3", "--warmup-steps", "2", "--batch-size", "4", "--eval-every", "0", "--device", "cpu", "--resume", "--no-export", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"] == 14


def test_shards_of_another_tokenizer_are_refused(setup):
    proc = run_cli("train", "--shards", str(setup["other"]), "--init-from", str(setup["model"]), "--out", str(setup["root"] / "bad"), "--max-steps", "1", "--device", "cpu", env=ENV)
    assert proc.returncode != 0
    assert "another tokenizer" in proc.stderr and "Traceback" not in proc.stderr
    assert not (setup["root"] / "bad" / "checkpoint").exists()


def test_preset_or_model_overrides_conflict_with_init_from(setup):
    proc = run_cli("train", "--shards", str(setup["out"]), "--init-from", str(setup["model"]), "--preset", "25m", "--out", str(setup["root"] / "bad2"), "--max-steps", "1", env=ENV)
    assert proc.returncode != 0 and "fixes the architecture" in proc.stderr


def test_hub_id_needs_a_revision_and_is_fetched_at_it(setup, monkeypatch):
    import huggingface_hub

    from pipeline.train import hf_import

    with pytest.raises(TrainError, match="needs a pinned revision"):
        hf_import.resolve("someorg/tiny-model", None)
    calls = []

    def fake_snapshot(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append((repo_id, revision))
        return str(setup["model"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    folder, origin = hf_import.resolve("someorg/tiny-model", "abc123")
    assert calls == [("someorg/tiny-model", "abc123")] and folder == setup["model"]
    assert origin["revision"] == "abc123" and "tokenizer.json" in origin["files"] and "model.safetensors" in origin["files"]


def test_gradient_checkpointing_gives_the_same_gradients(setup):
    from pipeline.train.hf_import import load_model

    model, _ = load_model(setup["model"])
    x = torch.randint(0, 600, (2, 17), generator=torch.Generator().manual_seed(0))
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.grad_checkpointing = flag
        model.train()
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_damaged_model_folders_are_clear_errors(setup, tmp_path):
    import shutil

    from pipeline.train.hf_import import load_model

    cases = {
        "bad-json": lambda d: (d / "config.json").write_text("{not json"),
        "missing-key": lambda d: (d / "config.json").write_text(json.dumps({k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "num_attention_heads"})),
        "truncated": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
        "wrong-shape": lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()), "hidden_size": 96})),
    }
    for name, damage in cases.items():
        d = tmp_path / name
        shutil.copytree(setup["model"], d)
        damage(d)
        with pytest.raises(TrainError) as err:
            load_model(d)
        assert "download it again" in err.value.hint, name
    proc = run_cli("train", "--shards", str(setup["out"]), "--init-from", str(tmp_path / "truncated"), "--out", str(tmp_path / "r"), "--max-steps", "1", env=ENV)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "cannot read the weights" in proc.stderr


def test_resume_keeps_the_runs_own_settings(setup, tmp_path):
    run_dir = tmp_path / "run"
    base = ["train", "--shards", str(setup["out"]), "--out", str(run_dir), "--eval-every", "0", "--device", "cpu", "--samples", "0", "--no-export"]
    assert run_cli(*base, "--init-from", str(setup["model"]), "--max-steps", "2", "--lr", "1e-4", "--batch-size", "2", env=ENV).returncode == 0
    proc = run_cli(*base, "--resume", "--max-steps", "3", env=ENV)  # no --init-from, --lr, --batch-size: the checkpoint's
    assert proc.returncode == 0, proc.stderr
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["train"]["lr"] == 1e-4 and state["train"]["init_from"] == str(setup["model"]) and state["step"] == 3
    assert run_cli("eval", str(run_dir), "--name", "at3", env=ENV).returncode == 0
    assert run_cli(*base, "--resume", "--max-steps", "4", env=ENV).returncode == 0
    kept = json.loads((run_dir / "metrics.json").read_text())["eval"]["at3"]  # an eval survives the resume, naming its step
    assert kept["model_step"] == 3 and kept["task"] == "lm"
    proc = run_cli(*base, "--resume", "--max-steps", "5", "--init-from", str(tmp_path / "elsewhere"), env=ENV)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_the_whole_loop_curate_continue_finetune_evaluate_report(setup, tmp_path):
    """Issue 15's 'done when', small: curated data tokenized with a published model's tokenizer,
    the model continued on it, fine-tuned for SFT with LoRA from the continued export, evaluated
    with generation metrics, and all of it in the report."""
    root = tmp_path
    pairs = [{"id": f"p{i}", "instruction": f"重复：{CORPUS[i % len(CORPUS)][:12]}", "response": CORPUS[i % len(CORPUS)][:12]} for i in range(60)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs), encoding="utf-8")
    _docs(root / "in")
    model = json.dumps(str(setup["model"]))
    (root / "m.yaml").write_text(
        "name: loop\n"
        "sources:\n"
        "  - {name: docs, kind: local, paths: ['in/*.jsonl'], license: CC-BY-SA-3.0, id_field: id}\n"
        "  - {name: pairs, kind: local, paths: [pairs.jsonl], id_field: id, task: sft, instruction_field: instruction, response_field: response, license: MIT}\n"
        "stages:\n"
        f"  - {{name: tok, stage: tokenize, inputs: [docs], params: {{tokenizer_path: {model}, seq_len: 32, validation_fraction: 0.1, test_fraction: 0.1}}}}\n"
        f"  - {{name: sft, stage: finetune_data, inputs: [pairs], params: {{task: sft, max_len: 64, tokenizer_path: {model}, test_fraction: 0.2, validation_fraction: 0.1}}}}\n",
        encoding="utf-8",
    )
    out = root / "out"
    proc = run_cli("run", str(root / "m.yaml"), "--out", str(out), "--no-progress", "--workers", "1", env=ENV)
    assert proc.returncode == 0, proc.stderr
    common = ["--device", "cpu", "--eval-every", "0"]
    proc = run_cli("train", "--shards", str(out), "--init-from", str(setup["model"]), "--out", str(root / "cont"), "--max-steps", "4", "--samples", "0", *common, env=ENV)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("train", "--finetune", "sft", "--shards", str(out / "stages" / "sft"), "--init-from", str(root / "cont" / "hf"), "--out", str(root / "sft"),
                   "--lora", "--epochs", "1", "--batch-size", "8", "--device", "cpu", env=ENV)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("eval", str(root / "cont"), "--data", str(out), env=ENV)  # loss / perplexity on the test split
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("eval", str(root / "sft"), "--max-new-tokens", "8", env=ENV)  # generation metrics on the SFT test split
    assert proc.returncode == 0, proc.stderr
    sft_metrics = json.loads((root / "sft" / "finetune" / "metrics.json").read_text())
    gen = json.dumps(sft_metrics["eval"])
    assert all(f'"{k}"' in gen for k in ("rouge_l", "chrf", "bleu", "exact_match")), gen[:500]
    proc = run_cli("report", str(out), "--train", str(root / "cont"), "--train", str(root / "sft"), env=ENV)
    assert proc.returncode == 0, proc.stderr
    html = (out / "report" / "training.html").read_text()
    for needle in ("base_model", "tiny-qwen2", "apache-2.0", "rouge", "chrF", "perplexity"):
        assert needle.lower() in html.lower(), needle
