"""Training on the pipeline's token shards (pipeline/train): the tiny preset learns (validation loss
well below the unigram entropy of the training tokens), an interrupted run resumes onto the exact
loss curve of an uninterrupted one, the Hugging Face export gives the native logits, and the
failure cases say what went wrong.

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
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.train import TrainError
from pipeline.train.data import Batches, TokenStream, find_tokens_dir
from pipeline.train.export import export_hf, load_native
from pipeline.train.loop import TrainConfig, lr_at, read_metrics, train
from pipeline.train.model import Transformer, preset
from tests.test_tokenize import manifest, run

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
    kw = {"batch_size": 8, "lr": 3e-3, "warmup_steps": 5, "eval_every": 0, "eval_tokens": 4096, "ckpt_every": 0, "device": "cpu", "seed": 3, **kw}
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
    with pytest.raises(TrainError, match="unknown model preset"):
        train(TrainConfig(data=str(shards), out_dir=str(tmp_path / "p"), preset="gpt5", device="cpu", max_steps=1))


def test_token_and_time_budgets(shards, tmp_path):
    s = train(base_config(shards, tmp_path / "tok", max_tokens=3 * 8 * SEQ_LEN))
    assert (s["step"], s["tokens"], s["stopped"]) == (3, 3 * 8 * SEQ_LEN, "max_tokens") and "val_loss" in s
    s = train(base_config(shards, tmp_path / "time", max_time=0))
    assert (s["step"], s["stopped"]) == (0, "max_time")


def test_cli_train_exports_and_fails_clearly(shards, tmp_path):
    from tests.conftest import run_cli

    run_dir = tmp_path / "run"
    ok = run_cli("train", "--shards", str(shards), "--preset", "tiny", "--max-steps", "4", "--eval-every", "2", "--warmup-steps", "1", "--batch-size", "4", "--device", "cpu", "--out", str(run_dir))
    assert ok.returncode == 0, ok.stderr
    assert (run_dir / "hf" / "config.json").is_file() and (run_dir / "hf" / "model.safetensors").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 4
    bad = run_cli("train", "--shards", str(tmp_path / "nothing"), "--device", "cpu", "--out", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "token shards" in bad.stderr
    unknown = run_cli("train", "--shards", str(shards), "--preset", "huge", "--device", "cpu", "--out", str(tmp_path / "r3"))
    assert unknown.returncode == 2 and "huge" in unknown.stderr
