"""Fine-tuning a published Llama-family model (tiny, random, built offline): classification and
SFT (with the tokenizer's chat template), full or LoRA (peft, merged before saving), early
stopping on validation (``patience``), gradient checkpointing, and the tokenizer check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

pytest.importorskip("transformers")
pytest.importorskip("peft")

from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from pipeline.train import TrainError
from pipeline.train.finetune import FinetuneConfig, finetune, load_classifier
from tests.support.hfmodel import published_model

GOOD = ["服务很好", "房间干净", "早餐不错", "非常满意", "下次还来", "价格实惠"]
BAD = ["非常失望", "电池太差", "房间很脏", "服务糟糕", "不会再来", "价格太贵"]


def _run(manifest: Path, out: Path):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(manifest), out, ex, console, progress=False)


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftpub")
    model = published_model(root / "tiny-qwen2")
    rows = []
    for i in range(240):
        words = GOOD if i % 2 else BAD
        rows.append({"id": f"r{i}", "text": f"{words[i % 6]}，{words[(i // 6) % 6]}。第{i}条", "label": "pos" if i % 2 else "neg"})
    _write(root / "reviews.jsonl", rows)
    pairs = [{"id": f"s{i}", "instruction": f"把这句话重复一遍：{GOOD[i % 6]}{BAD[(i // 6) % 6]}", "response": f"{GOOD[i % 6]}{BAD[(i // 6) % 6]}"} for i in range(160)]
    _write(root / "sft.jsonl", pairs)
    (root / "m.yaml").write_text(
        "name: ftpub\n"
        "sources:\n"
        "  - {name: reviews, kind: local, paths: [reviews.jsonl], id_field: id, task: classification, label_field: label, license: MIT}\n"
        "  - {name: pairs, kind: local, paths: [sft.jsonl], id_field: id, task: sft, instruction_field: instruction, response_field: response, license: MIT}\n"
        "stages:\n"
        f"  - {{name: clf, stage: finetune_data, inputs: [reviews], params: {{task: classification, max_len: 48, tokenizer_path: {json.dumps(str(model))}, test_fraction: 0.2, validation_fraction: 0.15}}}}\n"
        f"  - {{name: sft, stage: finetune_data, inputs: [pairs], params: {{task: sft, max_len: 96, tokenizer_path: {json.dumps(str(model))}, test_fraction: 0.15, validation_fraction: 0.15}}}}\n",
        encoding="utf-8",
    )
    _run(root / "m.yaml", root / "out")
    return {"root": root, "model": model, "clf": root / "out" / "stages" / "clf", "sft": root / "out" / "stages" / "sft"}


def _cfg(data, which: str, out: str, **kw) -> FinetuneConfig:
    base = dict(data=str(data[which]), init_from=str(data["model"]), out_dir=str(data["root"] / out), epochs=3, batch_size=16, lr=3e-3, device="cpu", seed=0)
    return FinetuneConfig(**{**base, **kw})


def test_classification_full_and_lora_from_a_published_model(data):
    full = finetune(_cfg(data, "clf", "full"))
    assert full["test"]["accuracy"] > 0.9, full["test"]
    assert full["parameters"]["trainable"] > 0.9 * full["parameters"]["total"] and full["base"]["published"]

    lora = finetune(_cfg(data, "clf", "lora", lora=True, lr=1e-2, gradient_checkpointing=True))
    assert lora["test"]["accuracy"] > 0.9, lora["test"]
    assert lora["parameters"]["trainable"] < 0.5 * lora["parameters"]["total"] and lora["parameters"]["lora"]["r"] == 8
    # merged: the saved transformer has the checkpoint's names (no adapters) and weights that moved
    from safetensors.torch import load_file

    from pipeline.train.hf_import import load_model

    saved = load_file(str(data["root"] / "lora" / "finetune" / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in saved)
    base, _ = load_model(data["model"])
    moved = (saved["layers.0.self_attn.q_proj.weight"] - base.state_dict()["layers.0.self_attn.q_proj.weight"]).abs().max()
    assert moved > 1e-4
    assert torch.equal(saved["embed_tokens.weight"], base.state_dict()["embed_tokens.weight"])  # not a LoRA target: frozen
    clf, state = load_classifier(data["root"] / "lora")
    assert state["init_from"]["model_type"] == "qwen2"


def test_patience_stops_early_and_keeps_the_best(data):
    res = finetune(_cfg(data, "clf", "patience", lr=1e-7, eval_every=2, patience=2, epochs=5))
    assert res["stopped"].startswith("early stopping") and res["steps"] == 6  # evaluations at 2 (best), 4, 6
    assert res["selected_step"] == 2


def test_sft_with_chat_template_and_lora(data):
    index = json.loads((data["sft"] / "finetune" / "index.json").read_text())
    assert index.get("chat_template") is True
    full = finetune(_cfg(data, "sft", "sft", task="sft", gradient_checkpointing=True, epochs=3))
    assert full["after"]["test"]["loss"] < full["before"]["test"]["loss"] - 0.5, (full["before"], full["after"])
    lora = finetune(_cfg(data, "sft", "sft-lora", task="sft", lora=True, lr=3e-2, epochs=3))  # adapters on a random base: slower
    assert lora["after"]["test"]["loss"] < lora["before"]["test"]["loss"] - 0.1, (lora["before"], lora["after"])


def test_examples_of_another_tokenizer_are_refused(data, tmp_path):
    from tests.support.hfmodel import tokenizer

    # the same model with a different tokenizer.json (here: one more special token)
    model2 = published_model(tmp_path / "m2")
    tok = tokenizer()
    tok.add_special_tokens(["<|other|>"])
    tok.save(str(model2 / "tokenizer.json"))
    with pytest.raises(TrainError, match="another tokenizer"):
        finetune(FinetuneConfig(data=str(data["clf"]), init_from=str(model2), out_dir=str(tmp_path / "o"), device="cpu"))


def test_cli_lora_finetune_of_a_published_model(data):
    from tests.conftest import run_cli

    out = data["root"] / "cli-lora"
    proc = run_cli("train", "--finetune", "classification", "--shards", str(data["clf"]), "--init-from", str(data["model"]), "--out", str(out),
                   "--lora", "--patience", "1", "--gradient-checkpointing", "--epochs", "1", "--batch-size", "16", "--device", "cpu", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "finetune" / "metrics.json").read_text())
    assert summary["parameters"]["lora"] and summary["parameters"]["gradient_checkpointing"] and summary["base_model"]["license"] == "apache-2.0"
    # pretraining does not take fine-tuning options
    proc = run_cli("train", "--shards", str(data["root"] / "nowhere"), "--lora")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
