"""``pipeline generate``: batched generation (left-padded prompts with their own positions and a
padding mask) gives the tokens of one-at-a-time generation, top-p, several sequences per prompt
from one prefill, per-row stopping, prompts files, JSONL output and chat templates; and it loads
every kind of model: a published Hugging Face folder (tiny, random, built offline), a run of
``pipeline train --init-from`` and its export, a model pretrained here, a fine-tuning out dir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from pipeline.train import TrainError
from pipeline.train.finetune import FinetuneConfig, finetune
from pipeline.train.generate import (
    GenerateOptions,
    generate_batch,
    generate_texts,
    load_for_generation,
    nucleus,
    prompt_context,
    read_prompts,
    sample,
)
from pipeline.train.loop import TrainConfig, train
from pipeline.train.model import ModelConfig, Transformer
from tests.conftest import run_cli
from tests.support.hfmodel import CORPUS, published_model
from tests.test_tokenize import manifest, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
PROMPTS = ["维基百科", "The quick brown fox jumps over the lazy dog.", "手机", "北京是中华人民共和国的首都，也是全国的", "Tokenizers map"]


def _docs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"d{i}", "text": f"{CORPUS[i % len(CORPUS)]} 第{i}段。"} for i in range(60)]
    (root / "docs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _train(shards: Path, out: Path, **kw) -> Path:
    cfg = TrainConfig(data=str(shards), out_dir=str(out), max_steps=2, batch_size=2, lr=1e-3, warmup_steps=1, eval_every=0, ckpt_every=0,
                      device="cpu", seed=0, tensorboard=False, samples=0, **kw)
    train(cfg)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A published tiny Qwen2 (GQA, untied, chat template), one without a template, a 2-step
    --init-from run of the first with its export, and a 2-step tiny run pretrained here."""
    from pipeline.train.export import export_hf

    root = tmp_path_factory.mktemp("generate")
    pub = published_model(root / "tiny-qwen2")
    plain = published_model(root / "tiny-llama", family="llama", chat=False, num_key_value_heads=4)
    _docs(root / "in")
    run(manifest(root, tokenizer_path=str(pub), seq_len=32, validation_fraction=0.1), root / "shards")
    init = _train(root / "shards", root / "init", init_from=str(pub))
    export_hf(init / "checkpoint", init / "hf")
    own = root / "own"
    _docs(own / "in")
    run(manifest(own, vocab_size=400, seq_len=32, validation_fraction=0.1), own / "shards")
    classic = _train(own / "shards", root / "classic", preset="tiny")
    # an SFT fine-tuning of the published model: examples rendered with its chat template
    sft = root / "sft"
    sft.mkdir()
    pairs = [{"id": f"s{i}", "instruction": f"重复：{CORPUS[i % 6][:8]}", "response": CORPUS[i % 6][:8]} for i in range(24)]
    (sft / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs), encoding="utf-8")
    (sft / "m.yaml").write_text(
        "name: sft\nsources:\n"
        "  - {name: pairs, kind: local, paths: [pairs.jsonl], id_field: id, task: sft, instruction_field: instruction, response_field: response, license: MIT}\n"
        f"stages:\n  - {{name: sft, stage: finetune_data, inputs: [pairs], params: {{task: sft, max_len: 64, tokenizer_path: {json.dumps(str(pub))}, test_fraction: 0.2, validation_fraction: 0.2}}}}\n",
        encoding="utf-8",
    )
    run(sft / "m.yaml", sft / "out")
    finetune(FinetuneConfig(data=str(sft / "out" / "stages" / "sft"), init_from=str(pub), out_dir=str(root / "sft-run"), task="sft", epochs=1, batch_size=8, lr=1e-3, device="cpu"))
    return {"root": root, "pub": pub, "plain": plain, "init": init, "classic": classic, "sft": root / "sft-run", "sft_data": sft / "out" / "stages" / "sft" / "finetune"}


def _lively(model: Transformer, seed: int = 0) -> Transformer:
    """Random weights with enough spread that greedy decoding varies with the context (the
    fixtures' random biases make every row repeat one token)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif not name.endswith("norm.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _one_by_one(model, contexts, n, **kw):
    return [generate_batch(model, [c], n, **kw)[0] for c in contexts]


# ------------------------------------------------------------------------------- batching
def test_batched_greedy_equals_one_by_one_gqa_and_sliding_window(models):
    loaded = load_for_generation(models["pub"], CPU)
    assert loaded.model.cfg.kv_heads == 2 and loaded.model.cfg.n_heads == 4  # grouped-query attention
    model = _lively(loaded.model)
    contexts = [prompt_context(loaded, p) for p in PROMPTS]
    assert len({len(c) for c in contexts}) >= 3  # different lengths: real padding
    kw = dict(temperature=0.0, vocab_limit=loaded.tokenizer.vocab_size)
    batched = generate_batch(model, contexts, 24, **kw)
    single = _one_by_one(model, contexts, 24, **kw)
    assert [g[0].tokens for g in batched] == [g[0].tokens for g in single]
    assert len({tuple(g[0].tokens) for g in batched}) > 1  # the rows differ: the test sees the context

    # a multi-head model with a 16-token window: rows re-prefill their last window as one would alone
    torch.manual_seed(1)
    small = _lively(Transformer(ModelConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_seq_len=16)), 1)
    ctxs = [[5, 17, 3], [42, 8, 9, 11, 2, 60, 7], [1], [33] * 12]
    assert [g[0].tokens for g in generate_batch(small, ctxs, 20, temperature=0)] == [sample(small, c, 20, temperature=0) for c in ctxs]


def test_rows_stop_on_their_own_and_sampling_matches_one_by_one(models):
    loaded = load_for_generation(models["pub"], CPU)
    model = _lively(loaded.model, 2)
    contexts = [prompt_context(loaded, p) for p in PROMPTS]
    free = generate_batch(model, contexts, 12, temperature=0)
    stop = free[1][0].tokens[3]  # row 1's 4th token stops it (and any row that meets it)
    got = generate_batch(model, contexts, 12, temperature=0, stop_ids=[stop])
    assert got[1][0].finish == "eos" and got[1][0].tokens == free[1][0].tokens[: free[1][0].tokens.index(stop) + 1]
    for f, g in zip(free, got):
        cut = f[0].tokens.index(stop) + 1 if stop in f[0].tokens else None
        assert g[0].tokens == f[0].tokens[:cut] and g[0].finish == ("eos" if cut else "length")
    kw = dict(temperature=1.0, top_k=40, top_p=0.9, seed=5, stop_ids=[stop])
    assert [g[0].tokens for g in generate_batch(model, contexts, 12, **kw)] == [g[0].tokens for g in _one_by_one(model, contexts, 12, **kw)]


def test_top_p(models):
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    kept = lambda p: (nucleus(probs, p) > 0).tolist()  # noqa: E731
    assert kept(0.5) == [[True, False, False], [False, False, True]]  # the smallest set reaching P
    assert kept(0.61) == [[True, True, False], [False, True, True]] or kept(0.61) == [[True, True, False], [True, False, True]]
    assert torch.equal(nucleus(probs, 0.5)[0], torch.tensor([0.5, 0.0, 0.0]))
    assert torch.equal(nucleus(probs, 1.0), probs)
    assert nucleus(probs, 1e-9).count_nonzero(-1).tolist() == [1, 1]  # always at least one token
    loaded = load_for_generation(models["pub"], CPU)
    model = _lively(loaded.model, 3)
    contexts = [prompt_context(loaded, p) for p in PROMPTS[:3]]
    greedy = generate_batch(model, contexts, 10, temperature=0)
    tiny_p = generate_batch(model, contexts, 10, temperature=1.0, top_p=1e-6, seed=9)
    assert [g[0].tokens for g in tiny_p] == [g[0].tokens for g in greedy]
    with pytest.raises(TrainError, match="outside"):
        GenerateOptions(top_p=0).check()


def test_num_return_sequences_from_one_prefill_are_seeded_and_reproducible(models):
    loaded = load_for_generation(models["pub"], CPU)
    model = _lively(loaded.model, 4)
    contexts = [prompt_context(loaded, p) for p in PROMPTS[:2]]
    kw = dict(temperature=1.0, seed=3, num_return_sequences=3)
    a = generate_batch(model, contexts, 10, **kw)
    assert [[g.tokens for g in row] for row in a] == [[g.tokens for g in row] for row in generate_batch(model, contexts, 10, **kw)]
    assert all(len({tuple(g.tokens) for g in row}) == 3 for row in a)  # distinct seeds, distinct draws
    # sequence j is the single generation with seed + j
    assert [g.tokens for g in a[1]] == [sample(model, contexts[1], 10, temperature=1.0, seed=3 + j) for j in range(3)]


# ------------------------------------------------------------------------------- loading
def test_published_folder_init_from_run_and_its_export(models):
    pub = load_for_generation(models["pub"], CPU)
    eot = pub.tokenizer._hf.token_to_id("<|im_end|>")
    assert pub.imported and pub.bos_id is None and pub.head == []  # Qwen's convention: no BOS, no EOS before a prompt
    assert pub.stop_ids == [pub.eos_id] and prompt_context(pub, "") == [pub.eos_id]
    run_, export = load_for_generation(models["init"], CPU), load_for_generation(models["init"] / "hf", CPU)
    assert run_.imported and export.imported and run_.head == export.head == []
    assert prompt_context(run_, "手机") == prompt_context(export, "手机") == pub.tokenizer.encode("手机")
    assert json.loads((models["init"] / "hf" / "config.json").read_text())["model_type"] == "qwen2"
    opts = GenerateOptions(max_new_tokens=8, temperature=0, batch_size=2)
    a, b = generate_texts(run_, PROMPTS[:3], opts), generate_texts(export, PROMPTS[:3], opts)
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]
    # a chat model's end of turn also stops it (generation_config.json may list several ids)
    (models["pub"] / "generation_config.json").write_text(json.dumps({"eos_token_id": [pub.eos_id, eot]}))
    try:
        assert load_for_generation(models["pub"], CPU).stop_ids == [pub.eos_id, eot]
    finally:
        (models["pub"] / "generation_config.json").unlink()


def test_hub_id_needs_a_revision_and_is_fetched_once_pinned(models, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, revision=None, **kw: calls.append((repo, revision)) or str(models["pub"]))
    with pytest.raises(TrainError, match="not a folder here; as a Hugging Face hub id it needs a pinned revision"):
        load_for_generation("tiny-org/tiny-qwen2", CPU)
    loaded = load_for_generation("tiny-org/tiny-qwen2", CPU, revision="v1")
    assert calls == [("tiny-org/tiny-qwen2", "v1")] and loaded.imported and loaded.source == models["pub"]


def test_sft_fine_tuning_of_a_chat_model(models):
    loaded = load_for_generation(models["sft"], CPU)
    eot = loaded.tokenizer._hf.token_to_id("<|im_end|>")
    assert loaded.sft and loaded.imported and loaded.head == [] and eot in loaded.stop_ids  # the responses end with <|im_end|>
    assert loaded.folders[0] == (models["sft_data"] / "tokenizer").resolve()  # the examples' own tokenizer copy and template
    from pipeline.train.finetune import read_split

    index = json.loads((models["sft_data"] / "index.json").read_text())
    ex = read_split(models["sft_data"], index, "train")
    ids, mask = ex.examples[0].tolist(), ex.masks[0].tolist()
    prompt = ids[: mask.index(1)]
    text = loaded.tokenizer.decode(prompt)
    instruction = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    from pipeline.train.generate import ChatFormat

    assert ChatFormat(loaded).encode(instruction) == prompt  # --chat builds the prompts the model was fine-tuned on
    recs = generate_texts(loaded, [instruction], GenerateOptions(max_new_tokens=6, temperature=0, chat=True))
    assert recs[0]["finish"] in ("eos", "length") and eot not in recs[0]["tokens"]


def test_model_pretrained_here_and_fine_tuning_out_dir(models, tmp_path):
    classic = load_for_generation(models["classic"], CPU)
    assert not classic.imported and prompt_context(classic, "x")[0] == classic.eos_id  # documents follow an EOS in our shards
    assert classic.stop_ids == [classic.eos_id]
    # a fine-tuning out dir (RUN/finetune: model.safetensors + state.json with the task's EOS/BOS)
    ft = tmp_path / "ft" / "finetune"
    ft.mkdir(parents=True)
    shutil.copy2(models["init"] / "checkpoint" / "model.safetensors", ft / "model.safetensors")
    state = json.loads((models["init"] / "checkpoint" / "state.json").read_text())
    state["finetune"] = {"task": "sft", "eos_id": state["data"]["eos_id"], "bos_id": None}
    (ft / "state.json").write_text(json.dumps(state))
    loaded = load_for_generation(tmp_path / "ft", CPU)
    assert loaded.imported and loaded.source == tmp_path / "ft"
    state["finetune"]["task"] = "classification"
    (ft / "state.json").write_text(json.dumps(state))
    with pytest.raises(TrainError, match="classifier does not generate"):
        load_for_generation(tmp_path / "ft", CPU)


# ------------------------------------------------------------------------------- the command
def _cli(*args):
    from typer.testing import CliRunner

    from pipeline.cli import app

    res = CliRunner().invoke(app, ["generate", *map(str, args)])
    return res, " ".join(res.output.split())


def test_cli_prompts_files_output_and_chat(models, tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("维基百科\n\nThe quick brown fox\n手机\n", encoding="utf-8")
    jl = tmp_path / "p.jsonl"
    jl.write_text("".join(json.dumps({"prompt": p, "id": i}, ensure_ascii=False) + "\n" for i, p in enumerate(["维基百科", "The quick brown fox", "手机"])), encoding="utf-8")
    assert read_prompts(txt) == read_prompts(jl) == ["维基百科", "The quick brown fox", "手机"]
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    res, said = _cli(models["pub"], "--prompts-file", txt, "--num-return-sequences", "2", "--batch-size", "2", "--max-new-tokens", "6", "--output", out_a, "--device", "cpu")
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in out_a.read_text(encoding="utf-8").splitlines()]
    assert [(r["index"], r["sequence"], r["prompt"]) for r in recs] == [(i, j, p) for i, p in enumerate(read_prompts(txt)) for j in range(2)]
    assert all(r["finish"] in ("eos", "length") and isinstance(r["text"], str) and len(r["tokens"]) <= 6 for r in recs)
    res, _ = _cli(models["pub"], "--prompts-file", jl, "--num-return-sequences", "2", "--batch-size", "3", "--max-new-tokens", "6", "--output", out_b, "--device", "cpu")
    assert res.exit_code == 0 and out_b.read_text(encoding="utf-8") == out_a.read_text(encoding="utf-8")  # batching does not change outputs

    # printed: each prompt and its continuation; one prompt prints as before
    res, _ = _cli(models["classic"], "--prompts-file", txt, "--max-new-tokens", "4", "--temperature", "0", "--device", "cpu")
    assert res.exit_code == 0 and res.output.count("--- prompt ") == 3 and "The quick brown fox" in res.output

    # chat: the template wraps the prompt; its end of turn (<|im_end|>) stops the answer
    loaded = load_for_generation(models["pub"], CPU)
    from pipeline.train.generate import ChatFormat

    fmt = ChatFormat(loaded)
    ids = fmt.encode("你好")
    assert fmt.end_of_turn == loaded.tokenizer._hf.token_to_id("<|im_end|>")
    assert loaded.tokenizer.decode(ids) == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    res, _ = _cli(models["pub"], "你好", "--chat", "--max-new-tokens", "5", "--device", "cpu")
    assert res.exit_code == 0 and "<|im_start|>" not in res.output
    res, said = _cli(models["plain"], "hello", "--chat", "--device", "cpu")
    assert res.exit_code == 2 and "has no chat template" in said and isinstance(res.exception, SystemExit)


def test_cli_bad_inputs_are_clear_errors(models, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n', encoding="utf-8")
    cases = [
        ((models["pub"],), "give a prompt or --prompts-file"),
        ((models["pub"], "hi", "--prompts-file", empty), "not both"),
        ((models["pub"], "--prompts-file", tmp_path / "missing.txt"), "prompts file not found"),
        ((models["pub"], "--prompts-file", empty), "has no prompts"),
        ((models["pub"], "--prompts-file", bad_json), "bad.jsonl:2"),
        ((models["pub"], "hi", "--top-p", "0"), "outside (0, 1]"),
        ((models["pub"], "hi", "--top-p", "1.5"), "outside (0, 1]"),
        ((tmp_path / "nowhere", "hi"), "no checkpoint"),
    ]
    for args, needle in cases:
        res, said = _cli(*args, "--device", "cpu")
        assert res.exit_code == 2 and needle in said and isinstance(res.exception, SystemExit), (args, res.output)
    # the real entry point: a published folder, and an error without a traceback
    ok = run_cli("generate", str(models["pub"]), "手机", "--max-new-tokens", "4", "--top-p", "0.9", "--device", "cpu", env={"OMP_NUM_THREADS": "1"})
    assert ok.returncode == 0 and ok.stdout.startswith("手机"), ok.stderr
    bad = run_cli("generate", str(models["pub"]), "hi", "--top-p", "2", env={"OMP_NUM_THREADS": "1"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--top-p" in bad.stderr
