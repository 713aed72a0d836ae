"""Training on the pipeline's token shards (pipeline/train): the tiny preset learns (validation loss
well below the unigram entropy of the training tokens), an interrupted run resumes onto the exact
loss curve of an uninterrupted one, the Hugging Face export gives the native logits and carries a
model card, configuration layers (lock < --config < flags), torch.compile, TensorBoard, samples,
generation, the max_time schedule, data parallel under torchrun (gloo on CPU), and the failure
cases say what went wrong.

Token shards are built by the real runner (tokenize stage, vocab 512, seq_len 64) on a small
synthetic English corpus with plenty of structure for a tiny model to learn.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.common.errors import PipelineError
from pipeline.train import TrainError
from pipeline.train.checkpoint import load_native
from pipeline.train.config import build_config
from pipeline.train.data import Batches, TokenStream, find_tokens_dir
from pipeline.train.export import export_hf
from pipeline.train.generate import load_for_generation, prompt_context, sample
from pipeline.train.loop import TrainConfig, lr_at, read_metrics, train
from pipeline.train.model import Transformer, preset
from tests.conftest import REPO, run_cli
from tests.test_tokenize import manifest, run

# Subprocesses get one thread each: on a shared 2-core machine OpenMP's spinning threads slow
# small models by an order of magnitude.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

SEQ_LEN = 64
VOCAB = 512

NOUNS = "cat dog bird fish horse farmer teacher river mountain city garden house child doctor king queen".split()
ADJS = "small big red green old young quiet loud happy sad bright dark".split()
VERBS = "sees finds likes follows helps watches carries builds paints visits".split()
PLACES = "in the garden|near the river|under the bridge|on the mountain|at the market|by the sea".split("|")


def sentence(rng: random.Random) -> str:
    a, b = rng.choice(NOUNS), rng.choice(NOUNS)
    return f"The {rng.choice(ADJS)} {a} {rng.choice(VERBS)} the {rng.choice(ADJS)} {b} {rng.choice(PLACES)}."


def write_corpus(root: Path, n_docs: int = 360) -> None:
    rng = random.Random(11)
    root.mkdir(parents=True, exist_ok=True)
    files: list[list[str]] = [[], [], []]
    for d in range(n_docs):
        text = "\n".join(" ".join(sentence(rng) for _ in range(rng.randint(2, 4))) for _ in range(rng.randint(1, 3)))
        files[d % 3].append(json.dumps({"id": f"d{d}", "text": text}) + "\n")
    for k, rows in enumerate(files):
        (root / f"docs-{k}.jsonl").write_text("".join(rows), encoding="utf-8")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    write_corpus(root / "in")
    m = manifest(root, vocab_size=VOCAB, seq_len=SEQ_LEN, validation_fraction=0.1)
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the function-scoped monkeypatch is not available
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        run(m, root / "out", workers=1)
    return root / "out"


def base_config(data: Path, out: Path, **kw) -> TrainConfig:
    kw = {"batch_size": 8, "lr": 3e-3, "warmup_steps": 5, "eval_every": 0, "eval_tokens": 4096, "ckpt_every": 0, "device": "cpu", "seed": 3, "tensorboard": False, **kw}
    return TrainConfig(data=str(data), out_dir=str(out), preset="tiny", **kw)


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r}


# ------------------------------------------------------------------------------------ data
def test_stream_is_memory_mapped_and_batches_are_a_seeded_permutation(shards):
    assert find_tokens_dir(shards) == find_tokens_dir(shards / "tokens") == shards / "tokens"
    stream = TokenStream(shards, "train")
    index = json.loads((shards / "tokens" / "index.json").read_text())
    assert stream.n_tokens == index["splits"]["train"]["tokens"] and stream.seq_len == SEQ_LEN
    assert all(not s.flags.owndata and not s.flags.writeable for s in stream.segments)  # views of the maps
    flat = np.concatenate(stream.segments).astype(np.int64)
    assert np.array_equal(stream.slice(0, stream.n_tokens), flat)
    # one epoch visits every window once; the same seed gives the same order, another seed another
    b1, b2, b3 = (Batches(stream, 4, SEQ_LEN, seed) for seed in (1, 1, 2))
    window = {flat[k * SEQ_LEN : (k + 1) * SEQ_LEN].tobytes(): k for k in range(b1.n)}
    seen, differs = [], False
    for _ in range(b1.steps_per_epoch):
        x1, y1 = b1.next()
        x2, _ = b2.next()
        x3, _ = b3.next()
        assert np.array_equal(x1, x2) and x1.shape == (4, SEQ_LEN)
        assert np.array_equal(x1[:, 1:], y1[:, :-1])
        differs |= not np.array_equal(x1, x3)
        seen += [window[row.tobytes()] for row in x1]
    assert len(seen) == len(set(seen)) == b1.steps_per_epoch * 4 and differs
    assert b1.steps_per_epoch == b1.n // 4 and seen != sorted(seen)  # shuffled, no window twice
    # a position restarts the same batches, across the epoch boundary
    b = Batches(stream, 4, SEQ_LEN, 5)
    for _ in range(b.steps_per_epoch - 2):
        b.next()
    pos = b.position()
    ahead = [b.next()[0] for _ in range(4)]
    again = Batches(stream, 4, SEQ_LEN, 5, **pos)
    assert all(np.array_equal(a, again.next()[0]) for a in ahead) and again.epoch == 1


# ------------------------------------------------------------------------------------ model
def test_presets_and_flops():
    tiny = Transformer(preset("tiny", vocab_size=VOCAB, max_seq_len=SEQ_LEN))
    assert 0.5e6 < tiny.num_params() < 1.5e6
    cfg = tiny.cfg
    assert tiny.flops_per_token(SEQ_LEN) == 6 * tiny.num_params() + 12 * cfg.n_layers * cfg.dim * SEQ_LEN
    big = preset("124m", vocab_size=50257)
    assert (big.n_layers, big.dim, big.n_heads) == (12, 768, 12)
    with torch.device("meta"):
        assert 120e6 < Transformer(big).num_params() < 130e6
        assert 20e6 < Transformer(preset("25m", vocab_size=32000)).num_params() < 30e6
    with pytest.raises(TrainError, match="unknown model preset 'huge'") as e:
        preset("huge")
    assert isinstance(e.value, PipelineError) and "tiny, 25m, 124m" in str(e.value)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(data="x", out_dir="y", lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, cfg, 110) == pytest.approx(0.1) and lr_at(9, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, cfg, 110) == pytest.approx(0.55) and lr_at(110, cfg, 110) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "tiny"
    summary = train(base_config(shards, out, max_steps=150, eval_every=50))
    return out, summary


def test_tiny_learns_below_unigram_entropy(shards, trained):
    out, summary = trained
    stream = TokenStream(shards, "train")
    counts = np.bincount(np.concatenate(stream.segments), minlength=VOCAB).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())  # nats/token: the best loss without context
    first = read_metrics(out)[0]["loss"]
    assert first > unigram  # starts near log(vocab)
    assert summary["step"] == 150 and summary["stopped"] == "max_steps"
    assert summary["val_loss"] < unigram - 1.0, (summary["val_loss"], unigram)
    assert summary["val_ppl"] == pytest.approx(math.exp(summary["val_loss"]))
    print(f"\nunigram entropy {unigram:.3f} nats, first loss {first:.3f}, val loss {summary['val_loss']:.3f} after {summary['step']} steps")
    records = read_metrics(out)
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 151)) and [r["step"] for r in evals] == [50, 100, 150]
    assert evals[0]["val_loss"] > evals[-1]["val_loss"]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 and "mfu" not in r for r in steps)  # no MFU off CUDA
    assert json.loads((out / "metrics.json").read_text()) == summary
    assert {p.name for p in (out / "checkpoint").iterdir()} == {"model.safetensors", "optimizer.pt", "state.json"}
    assert summary["device"] == "cpu" and summary["bf16"] is False


def test_resume_reproduces_the_uninterrupted_loss_curve(shards, tmp_path):
    # 2 micro-batches per step (accumulation), ~19 steps per epoch: the runs cross an epoch boundary
    kw = {"max_steps": 30, "batch_tokens": 2 * 8 * SEQ_LEN, "ckpt_every": 10}
    full = train(base_config(shards, tmp_path / "full", **kw))
    assert full["grad_accum"] == 2 and full["tokens"] == 30 * 2 * 8 * SEQ_LEN
    reference = losses(tmp_path / "full")

    out = tmp_path / "cut"

    def interrupt(rec):  # SIGINT in the middle of the run: checkpoint and return
        if rec["step"] == 17:
            os.kill(os.getpid(), signal.SIGINT)

    part = train(base_config(shards, out, **kw), on_step=interrupt)
    assert part["stopped"] == "SIGINT" and part["step"] == 17
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 17

    class Crash(Exception):
        pass

    def crash(rec):  # a hard crash after step 25: only the step-20 checkpoint survives
        if rec["step"] == 25:
            raise Crash

    with pytest.raises(Crash):
        train(base_config(shards, out, resume=True, **kw), on_step=crash)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 20
    done = train(base_config(shards, out, resume=True, **kw))
    assert done["step"] == 30 and done["stopped"] == "max_steps"
    resumed = losses(out)
    assert list(resumed) == list(range(1, 31))  # steps logged after the checkpoint were dropped
    assert resumed == reference  # exactly: same batches, same weights, same optimizer state


# ------------------------------------------------------------------------------------ export
def test_hf_export_matches_native_logits(shards, trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = trained
    dest = export_hf(out, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer.model"} <= {p.name for p in dest.iterdir()}
    config = json.loads((dest / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    hf = AutoModelForCausalLM.from_pretrained(str(dest), dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    native, _ = load_native(out)
    x, _ = Batches(TokenStream(shards, "validation"), 4, SEQ_LEN, 0).next()
    x = torch.from_numpy(x)
    with torch.no_grad():
        a, b = native(x), hf(x).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=0), (a - b).abs().max()
    tok = AutoTokenizer.from_pretrained(str(dest))
    ids = tok("The small cat sees the dog.", add_special_tokens=False)["input_ids"]
    assert hf(torch.tensor([ids])).logits.shape == (1, len(ids), native.cfg.vocab_size)

    # the model card: HF metadata and the training data with its license, from the shards' run
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(dest / "README.md"))
    licenses = json.loads((shards / "licenses.json").read_text())
    assert card.data.license == licenses["output_license"].lower()  # the license engine's verdict (cc-by-sa-4.0)
    assert card.data.library_name == "transformers" and card.data.datasets == ["docs"] and "grist" in card.data.tags
    assert "| docs | local | `CC-BY-SA-3.0` |" in card.text  # the source's own license, beside the output's
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert f"| tokens seen | {state['tokens']:,} |" in card.text and "| preset | `tiny` |" in card.text
    assert f"{json.loads((out / 'metrics.json').read_text())['val_loss']:.4f} nats/token" in card.text

    # generation from the checkpoint and from the export: the same model, tokenizer and sampler
    a, b = load_for_generation(out, torch.device("cpu")), load_for_generation(dest, torch.device("cpu"))
    ctx = prompt_context(a, "The small cat")
    assert ctx[0] == a.eos_id and ctx == prompt_context(b, "The small cat")  # a prompt starts a new document
    kw = {"temperature": 0.8, "top_k": 20, "seed": 7}
    ids = sample(a.model, ctx, 12, **kw)
    assert ids == sample(b.model, ctx, 12, **kw) and 1 <= len(ids) <= 12
    greedy = sample(a.model, ctx, 12, temperature=0)  # no eos_id: all 12 tokens
    with torch.no_grad():  # greedy = the argmax of one full forward at each position
        full = a.model(torch.tensor([ctx + greedy]))[0]
    assert len(greedy) == 12 and greedy == full[len(ctx) - 1 : -1].argmax(-1).tolist()


def test_generate_refuses_a_foreign_tokenizer(trained, tmp_path):
    out, _ = trained
    run_dir = tmp_path / "run"
    shutil.copytree(out / "checkpoint", run_dir / "checkpoint")
    state_path = run_dir / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    state["data"]["tokenizer_files"] = {name: "0" * 64 for name in state["data"]["tokenizer_files"]}
    state_path.write_text(json.dumps(state))
    with pytest.raises(TrainError, match="differs from the one this run was trained with") as e:
        load_for_generation(run_dir, torch.device("cpu"))
    assert state["data"]["tokenizer_dir"] in str(e.value)
    with pytest.raises(TrainError, match="no checkpoint .* or Hugging Face export"):
        load_for_generation(tmp_path / "nowhere", torch.device("cpu"))


def test_model_card_lists_every_source_and_license(shards, trained, tmp_path, monkeypatch):
    """A run with two sources under different licenses (and no licenses.json: the card asks the
    license engine itself, else joins the licenses with AND)."""
    import yaml
    from huggingface_hub import ModelCard

    from pipeline.train import export as export_module

    out, _ = trained
    data = copy_run(shards, tmp_path / "data")
    lock = yaml.safe_load((shards / "manifest.lock.yaml").read_text())
    web = {**lock["sources"][0], "name": "web", "license": "MIT", "homepage": "https://example.org/<b>web</b>", "languages": ["en"]}
    lock["sources"].append(web)
    lock["stages"][0]["inputs"] = ["docs", "web"]
    (data / "manifest.lock.yaml").write_text(yaml.safe_dump(lock))
    run_dir = tmp_path / "run"
    shutil.copytree(out / "checkpoint", run_dir / "checkpoint")
    state_path = run_dir / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    state["data"]["tokens_dir"] = str(data / "tokens")
    state_path.write_text(json.dumps(state))
    dest = export_hf(run_dir, tmp_path / "hf")
    card = ModelCard.load(str(dest / "README.md"))
    assert card.data.datasets == ["docs", "web"] and card.data.language == ["en"]
    assert "| docs | local | `CC-BY-SA-3.0` |" in card.text and "| web | local | `MIT` |" in card.text
    assert "<b>" not in card.text  # text from the manifest is escaped
    # MIT text may be relicensed under CC-BY-SA: the engine's verdict for the combination
    assert card.data.license == "cc-by-sa-4.0" and "`CC-BY-SA-4.0` (assessed by grist's license engine)" in card.text
    monkeypatch.setattr(export_module, "_assess_lock", lambda lock: None)  # no engine: the plain conjunction
    card = ModelCard.load(str(export_hf(run_dir, tmp_path / "hf2") / "README.md"))
    assert card.data.license == ["cc-by-sa-3.0", "mit"] and "`CC-BY-SA-3.0 AND MIT` (the conjunction" in card.text


# ------------------------------------------------------------------------------------ errors
def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src / "tokens", dest / "tokens")
    shutil.copytree(src / "tokenizer", dest / "tokenizer")
    return dest


def edit_index(data: Path, **changes) -> None:
    path = data / "tokens" / "index.json"
    index = json.loads(path.read_text())
    index.update(changes)
    path.write_text(json.dumps(index))


def test_missing_shards(shards, tmp_path):
    with pytest.raises(TrainError, match="no token shards here"):
        train(base_config(tmp_path / "nowhere", tmp_path / "o", max_steps=1))
    data = copy_run(shards, tmp_path / "data")
    victim = json.loads((data / "tokens" / "index.json").read_text())["splits"]["train"]["shards"][0]["file"]
    (data / "tokens" / victim).unlink()
    with pytest.raises(TrainError, match="token shard missing") as e:
        train(base_config(data, tmp_path / "o", max_steps=1))
    assert victim in str(e.value) and "re-run" in str(e.value)


def test_resume_on_other_data_is_refused(shards, trained, tmp_path):
    out, _ = trained
    run_dir = tmp_path / "run"
    shutil.copytree(out / "checkpoint", run_dir / "checkpoint")
    data = copy_run(shards, tmp_path / "data")
    index = json.loads((data / "tokens" / "index.json").read_text())
    edit_index(data, seq_len=32)
    with pytest.raises(TrainError, match="seq_len mismatch: the checkpoint was trained on seq_len 64, the data has 32"):
        train(base_config(data, run_dir, resume=True, max_steps=200))
    edit_index(data, seq_len=SEQ_LEN, tokenizer={**index["tokenizer"], "sha256": "0" * 64})
    with pytest.raises(TrainError, match="tokenizer mismatch") as e:
        train(base_config(data, run_dir, resume=True, max_steps=200))
    assert "checkpoint" in str(e.value)
    with pytest.raises(TrainError, match="unknown model preset") as e:
        train(TrainConfig(data=str(shards), out_dir=str(tmp_path / "p"), preset="gpt5", device="cpu", max_steps=1))
    assert "tiny, 25m, 124m" in str(e.value)
    # another global batch would read the saved data position in other units
    with pytest.raises(TrainError, match="batches of 8 sequences, this run takes 16") as e:
        train(base_config(shards, run_dir, resume=True, max_steps=200, batch_size=16))
    assert "batch_tokens" in str(e.value)


def test_resume_needs_a_sound_checkpoint(shards, trained, tmp_path):
    with pytest.raises(TrainError, match="no checkpoint to resume from") as e:
        train(base_config(shards, tmp_path / "fresh", resume=True, max_steps=2))
    assert "drop --resume" in str(e.value) and not (tmp_path / "fresh" / "metrics.jsonl").exists()
    out, _ = trained
    for name, garbage, message in (
        ("model.safetensors", b"\x00" * 64, "corrupt checkpoint weights"),
        ("optimizer.pt", b"not a zip", "corrupt optimizer state"),
        ("state.json", b"{\"step\": 3", "corrupt checkpoint state"),
    ):
        run_dir = tmp_path / name
        shutil.copytree(out / "checkpoint", run_dir / "checkpoint")
        (run_dir / "checkpoint" / name).write_bytes(garbage)
        with pytest.raises(TrainError, match=message) as e:
            train(base_config(shards, run_dir, resume=True, max_steps=200))
        assert name in str(e.value) and "restore" in str(e.value)
    (run_dir / "checkpoint" / "state.json").unlink()
    with pytest.raises(TrainError, match="checkpoint incomplete"):
        train(base_config(shards, run_dir, resume=True, max_steps=200))


def test_token_and_time_budgets(shards, tmp_path):
    s = train(base_config(shards, tmp_path / "tok", max_tokens=3 * 8 * SEQ_LEN))
    assert (s["step"], s["tokens"], s["stopped"]) == (3, 3 * 8 * SEQ_LEN, "max_tokens") and "val_loss" in s
    s = train(base_config(shards, tmp_path / "time", max_time=0))
    assert (s["step"], s["stopped"]) == (0, "max_time")


def test_cli_train_exports_and_fails_clearly(shards, tmp_path):
    run_dir = tmp_path / "run"
    config = tmp_path / "m.yaml"  # a manifest's train: section; flags win over it
    config.write_text("name: x\ntrain:\n  batch_size: 4\n  lr: 5e-3\n  warmup_steps: 1\n  model: {n_layer: 2}\n  sample_prompts: [The small cat]\n")
    ok = run_cli(
        "train", "--shards", str(shards), "--config", str(config), "--max-steps", "4", "--eval-every", "2", "--lr", "2e-3",
        "--model", "ffn_dim=256", "--device", "cpu", "--out", str(run_dir), env=ONE_THREAD,
    )
    assert ok.returncode == 0, ok.stderr
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.model"} <= {p.name for p in (run_dir / "hf").iterdir()}
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["step"] == 4 and summary["config"]["lr"] == 2e-3 and summary["config"]["batch_size"] == 4
    assert (summary["model"]["n_layers"], summary["model"]["ffn_dim"]) == (2, 256)
    samples = [r for r in read_metrics(run_dir) if r["type"] == "sample"]
    assert [(r["step"], r["prompt"]) for r in samples] == [(2, "The small cat"), (4, "The small cat")]
    assert "step 2: val_loss" in ok.stderr and "sample 0: The small cat" in ok.stderr
    gen = run_cli("generate", str(run_dir), "The small cat", "--max-new-tokens", "8", "--temperature", "0", "--device", "cpu", env=ONE_THREAD)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("The small cat") and len(gen.stdout.strip()) > len("The small cat")
    bad = run_cli("train", "--shards", str(tmp_path / "nothing"), "--device", "cpu", "--out", str(tmp_path / "r2"), env=ONE_THREAD)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "token shards" in bad.stderr
    unknown = run_cli("train", "--shards", str(shards), "--preset", "huge", "--model", "layers=3", "--device", "cpu", "--out", str(tmp_path / "r3"), env=ONE_THREAD)
    assert unknown.returncode == 2 and "unknown model key 'layers'" in unknown.stderr and "n_layers" in unknown.stderr


def test_cli_first_use_frictions(shards, tmp_path):
    """--shards may name the folder of runs when it holds one; step lines and readable samples
    without a terminal; no stray progress bar from the export; clear device errors."""
    run_dir = tmp_path / "run"
    ok = run_cli("train", "--shards", str(shards.parent), "--max-steps", "5", "--eval-every", "5", "--batch-size", "4", "--sample-prompt", "The small cat\nThe dog", "--device", "cpu", "--out", str(run_dir), env=ONE_THREAD)
    assert ok.returncode == 0, ok.stderr
    err = ok.stderr
    assert f"using {shards}: the only run with tokens shards in {shards.parent}" in " ".join(err.split())
    assert all(f"step {k}/5: loss" in err for k in (1, 2, 3, 5)) and "step 4/5" not in err
    assert "sample 0: The small cat\n    The dog" in err and "\\n" not in err
    assert "Writing model shards" not in err and (run_dir / "hf" / "model.safetensors").is_file()
    two = tmp_path / "runs"
    two.mkdir()
    for name in ("a", "b"):
        (two / name).symlink_to(shards, target_is_directory=True)
    many = run_cli("train", "--shards", str(two), "--device", "cpu", "--out", str(tmp_path / "r2"), env=ONE_THREAD)
    assert many.returncode == 2 and "2 runs with token shards here: a, b" in many.stderr and "Traceback" not in many.stderr
    for device, needle in (("tpu", "unknown device 'tpu'"), ("xla", "the trainer runs on cpu, cuda or mps"), *([] if torch.cuda.is_available() else [("cuda", "no CUDA support")])):
        bad = run_cli("train", "--shards", str(shards), "--device", device, "--max-steps", "1", "--out", str(tmp_path / f"d-{device}"), env=ONE_THREAD)
        assert bad.returncode == 2 and needle in bad.stderr and "devices usable here: " in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        gen = run_cli("generate", str(run_dir), "The", "--device", device, env=ONE_THREAD)
        assert gen.returncode == 2 and needle in gen.stderr and "Traceback" not in gen.stderr, gen.stderr


def test_ctrl_c_checkpoints_then_exits_130(shards, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, **ONE_THREAD, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", "--shards", str(shards), "--max-steps", "100000", "--batch-size", "4", "--eval-every", "0", "--device", "cpu", "--out", str(run_dir)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # the step lines come without a terminal: wait for training to start
        lines.append(line)
        if "step 2/100000" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT)" in err and "add --resume to continue" in err
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["step"] >= 2 and not (run_dir / "hf").exists()
    # resuming says so once, and the step lines start where it resumes
    step = state["step"]
    again = run_cli("train", "--shards", str(shards), "--max-steps", str(step + 2), "--batch-size", "4", "--eval-every", "0", "--device", "cpu", "--out", str(run_dir), "--resume", env=ONE_THREAD)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("resuming at step") == 1 and f"resuming at step {step} " in again.stderr
    assert f"step {step + 1}/{step + 2}: loss" in again.stderr


# ------------------------------------------------------------------------------------ configuration
def test_config_layers_and_their_errors(tmp_path):
    run_out = tmp_path / "out"
    (run_out / "tokens").mkdir(parents=True)
    (run_out / "tokens" / "index.json").write_text("{}")
    lock = run_out / "manifest.lock.yaml"
    lock.write_text("name: r\ntrain:\n  preset: 25m\n  lr: 3e-4\n  max_steps: 7\n  model: {n_layer: 2, dim: 64}\n")
    config = tmp_path / "m.yaml"
    config.write_text("name: r\ntrain:\n  lr: 1.0e-3\n  batch_size: 4\n  compile: true\n  model: {dim: 96}\n")
    # YAML 1.1 reads 3e-4 as a string: pydantic turns it into the float it means
    cfg, read = build_config(run_out / "tokens", tmp_path / "run", flags={"preset": None, "lr": 1e-4})
    assert (cfg.preset, cfg.lr, cfg.max_steps, cfg.model, cfg.batch_size) == ("25m", 1e-4, 7, {"n_layers": 2, "dim": 64}, 16)
    assert read == [str(lock), "command line"]
    cfg, read = build_config(run_out, tmp_path / "run", config=config, flags={"max_steps": 9}, model_flags=["n_heads=2"])
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.compile) == (1e-3, 4, 9, True)
    assert cfg.model == {"n_layers": 2, "dim": 96, "n_heads": 2} and read == [str(lock), str(config), "command line"]
    assert cfg.data == str(run_out) and cfg.out_dir == str(tmp_path / "run")

    def fails(text: str, match: str, **kw):
        config.write_text(text)
        with pytest.raises(TrainError, match=match) as e:
            build_config(run_out, tmp_path / "run", config=config, **kw)
        return str(e.value)

    err = fails("train:\n  learning_rate: 0.1\n", "unknown train key 'learning_rate'")
    assert str(config) in err and "lr" in err and "warmup_steps" in err
    err = fails("train:\n  lr: fast\n", "lr: Input should be a valid number")
    assert f"{config} train.lr" in err
    assert "got 'many'" in fails("train:\n  model: {n_layers: many}\n", "model.n_layers")
    fails("name: x\n", "no train: section")
    fails("train: [1, 2]\n", "must be a mapping")
    fails("train: {}\n", "not KEY=VALUE", model_flags=["n_layers"])
    fails("train: {}\n", "unknown model key 'width'", model_flags=["width=3"])
    with pytest.raises(TrainError, match="cannot read the config"):
        build_config(run_out, tmp_path / "run", config=tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------ loop features
def test_samples_and_tensorboard_leave_the_curve_alone(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kw = {"max_steps": 6, "eval_every": 3, "eval_tokens": 1024}
    plain = train(base_config(shards, tmp_path / "plain", samples=0, **kw))
    seen = []
    full = train(base_config(shards, tmp_path / "full", tensorboard=True, samples=2, sample_tokens=8, **kw), on_log=seen.append)
    assert losses(tmp_path / "plain") == losses(tmp_path / "full") and plain["val_loss"] == full["val_loss"]
    recs = read_metrics(tmp_path / "full")
    assert seen == recs  # on_log sees every record
    samples = [r for r in recs if r["type"] == "sample"]
    assert [(r["step"], r["index"]) for r in samples] == [(3, 0), (3, 1), (6, 0), (6, 1)]
    assert all(r["prompt"] and isinstance(r["text"], str) for r in samples)
    assert samples[0]["prompt"] == samples[2]["prompt"] and samples[0]["prompt"] != samples[1]["prompt"]  # fixed prompts
    assert not any(r["type"] == "sample" for r in read_metrics(tmp_path / "plain"))
    events = list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and not (tmp_path / "plain" / "tensorboard").exists()
    acc = EventAccumulator(str(tmp_path / "full" / "tensorboard")).Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 7))
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([losses(tmp_path / "full")[i] for i in range(1, 7)])
    assert [e.step for e in acc.Scalars("val/loss")] == [3, 6] and "train/lr" in acc.Tags()["scalars"]


def test_compiled_training_saves_plain_names(shards, tmp_path, monkeypatch):
    from safetensors import safe_open

    eager_compile = torch.compile
    # aot_eager traces forward and backward like inductor but skips code generation (seconds, not a minute)
    monkeypatch.setattr(torch, "compile", lambda m, **kw: eager_compile(m, backend="aot_eager"))
    kw = {"max_steps": 3, "batch_size": 4, "eval_every": 0}
    compiled = train(base_config(shards, tmp_path / "c", compile=True, **kw))
    plain = train(base_config(shards, tmp_path / "p", compile=False, **kw))
    assert compiled["compile"] is True and plain["compile"] is False
    with safe_open(str(tmp_path / "c" / "checkpoint" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith(("_orig_mod.", "module.")) for k in keys)
    load_native(tmp_path / "c")  # strict load into a fresh model
    a, b = losses(tmp_path / "c"), losses(tmp_path / "p")
    assert list(a) == [1, 2, 3] and all(abs(a[i] - b[i]) < 1e-4 for i in a)


def test_max_time_alone_estimates_a_horizon_that_resume_keeps(shards, tmp_path):
    out = tmp_path / "timed"
    first = train(base_config(shards, out, max_time=2.0, batch_size=4, warmup_steps=2, min_lr=3e-4))
    horizon = first["horizon"]
    assert isinstance(horizon, int) and horizon > 5, first
    note = [r for r in read_metrics(out) if r["type"] == "horizon"]
    assert len(note) == 1 and note[0]["step"] == 5 and note[0]["horizon"] == horizon  # fixed after 4 timed steps
    assert json.loads((out / "checkpoint" / "state.json").read_text())["horizon"] == horizon
    lrs = [r["lr"] for r in read_metrics(out) if r["type"] == "train"]
    assert lrs[:5] == pytest.approx([1.5e-3, 3e-3, 3e-3, 3e-3, 3e-3])  # warmup, then peak until the horizon is known
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:]))  # then cosine decay
    if first["stopped"] == "max_time" and first["step"] < horizon:  # time ran out first: a resume finishes the schedule
        done = train(base_config(shards, out, max_time=600, batch_size=4, warmup_steps=2, min_lr=3e-4, resume=True))
    else:
        done = first
    assert (done["step"], done["stopped"], done["horizon"]) == (horizon, "max_time", horizon)
    last = [r for r in read_metrics(out) if r["type"] == "train"][-1]
    assert last["step"] == horizon and last["lr"] == pytest.approx(lr_at(horizon - 1, base_config(shards, out, min_lr=3e-4, warmup_steps=2), horizon))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_ddp_under_torchrun_matches_one_process(shards, tmp_path):
    """Two CPU processes (gloo) with the global batch of one process: the same windows per step,
    so the same first loss; only rank 0 writes."""
    args = ["--shards", str(shards), "--max-steps", "3", "--batch-size", "4", "--batch-tokens", str(8 * SEQ_LEN), "--lr", "3e-3",
            "--warmup-steps", "2", "--eval-every", "0", "--eval-tokens", "1024", "--seed", "3", "--device", "cpu", "--no-export", "--no-tensorboard"]
    env = {**os.environ, **ONE_THREAD, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pipeline.cli", "train", *args, "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = read_metrics(tmp_path / "ddp")
    single = train(base_config(shards, tmp_path / "one", max_steps=3, batch_size=4, batch_tokens=8 * SEQ_LEN, warmup_steps=2, eval_tokens=1024))
    one = read_metrics(tmp_path / "one")
    assert [r["step"] for r in ddp if r["type"] == "train"] == [1, 2, 3]  # rank 0 alone logs
    assert abs(ddp[0]["loss"] - one[0]["loss"]) < 1e-5 and ddp[0]["tokens"] == one[0]["tokens"] == 8 * SEQ_LEN
    assert all(abs(a["loss"] - b["loss"]) < 1e-3 for a, b in zip(ddp, one) if a["type"] == "train")
    summary = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["grad_accum"] == 1 and single["grad_accum"] == 2
    assert summary["val_loss"] == pytest.approx(single["val_loss"], abs=1e-4)
    state = json.loads((tmp_path / "ddp" / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and state["data"]["windows_per_step"] == 8
    # the checkpoint resumes in one process: same global batch, same data order
    more = train(base_config(shards, tmp_path / "ddp", max_steps=4, batch_size=8, resume=True, warmup_steps=2, eval_tokens=1024))
    assert more["step"] == 4


def test_tiny_preset_brings_cpu_training_defaults_below_manifest_and_flags(shards, tmp_path):
    cfg, read = build_config(shards, tmp_path / "r", flags={"preset": "tiny"})
    assert (cfg.batch_size, cfg.lr, cfg.warmup_steps) == (2, 3e-3, 20)
    cfg, _ = build_config(shards, tmp_path / "r", flags={"preset": "tiny", "batch_size": 5})
    assert cfg.batch_size == 5 and cfg.lr == 3e-3  # a flag wins over the preset's default
    cfg, _ = build_config(shards, tmp_path / "r", flags={"preset": "25m"})
    assert (cfg.batch_size, cfg.lr, cfg.warmup_steps) == (16, 1e-3, 100)  # other presets: the plain defaults



def _sample_without_cache(model, context, n, window):
    """The reference: the whole (windowed) context through the model for every new token."""
    idx, out, logits_seen = list(context), [], []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([idx[-window:]]))[0, -1].float()
            logits_seen.append(logits)
            nxt = int(logits.argmax())
            out.append(nxt)
            idx.append(nxt)
    return out, logits_seen


def test_kv_cache_generation_matches_recomputing_the_context():
    from pipeline.train.model import KVCache, Transformer, preset

    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=97, max_seq_len=16, n_layers=2)).eval()
    context = [5, 17, 3, 42, 8]
    # 30 new tokens with a 16-token window: the cache fills, then the window slides (re-prefill)
    expected, ref_logits = _sample_without_cache(model, context, 30, 16)
    assert sample(model, context, 30, temperature=0) == expected
    # step by step, the cached logits equal the recomputed ones
    cache = KVCache(len(model.layers))
    with torch.no_grad():
        logits = model(torch.tensor([context]), cache=cache)[0, -1]
        assert torch.allclose(logits, ref_logits[0], atol=1e-5)
        for i, tok in enumerate(expected[:10]):
            logits = model(torch.tensor([[tok]]), cache=cache)[0, -1]
            assert torch.allclose(logits, ref_logits[i + 1], atol=1e-5), i
    assert cache.pos == len(context) + 10
    with torch.no_grad():
        model(torch.tensor([[1]]), cache=cache)  # position 15: the last one
        with pytest.raises(TrainError, match="exceeds the model's max_seq_len"):
            model(torch.tensor([[1]]), cache=cache)
        small = KVCache(len(model.layers))
        model(torch.tensor([[1, 2, 3]]), cache=small)
        with pytest.raises(TrainError, match="one token per step"):
            model(torch.tensor([[4, 5]]), cache=small)


def test_vocabulary_is_padded_to_64_and_sampling_stays_in_the_tokenizer():
    from pipeline.train.model import ModelConfig, padded_vocab

    assert [padded_vocab(n) for n in (512, 513, 31517, 32000)] == [512, 576, 31552, 32000]
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=128, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=32))
    with torch.no_grad():
        model.embed_tokens.weight[100:] *= 50  # the padded rows would win every draw
    free = sample(model, [1, 2, 3], 20, temperature=1.0, seed=1)
    kept = sample(model, [1, 2, 3], 20, temperature=1.0, seed=1, vocab_limit=100)
    assert any(i >= 100 for i in free) and all(i < 100 for i in kept)


def test_precision_flag(shards, tmp_path):
    fp32 = train(base_config(shards, tmp_path / "a", max_steps=3, precision="fp32"))
    bf16 = train(base_config(shards, tmp_path / "b", max_steps=3, precision="bf16"))
    assert fp32["bf16"] is False and bf16["bf16"] is True
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert all(abs(a[k] - b[k]) < 0.05 for k in a)  # bf16 autocast on a CPU: the same curve, rounded
    bad = run_cli("train", "--shards", str(shards), "--precision", "half", "--device", "cpu", "--max-steps", "1", "--out", str(tmp_path / "c"), env=ONE_THREAD)
    assert bad.returncode == 2 and "precision" in bad.stderr and "Traceback" not in bad.stderr
