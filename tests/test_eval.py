"""``pipeline eval`` (pipeline/train/evaluate.py): loss/perplexity on a run's test split and on a
text file, the refusal of another tokenizer, generation metrics of an SFT run (ROUGE-L on CJK
characters, chrF, BLEU, exact match; hand-checked on known strings), a classifier scored on
another labeled set with its labels mapped by name, and the report's eval tables (escaped).

One small world, built once: English synthetic documents tokenized (vocab 400, seq_len 64, 10 %
validation, 10 % test) with "reverse the words" SFT pairs, a 2-layer 64-wide model pretrained for
100 steps, an SFT fine-tuning of it and a 3-label classifier; everything on CPU with one thread.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from pipeline.train import TrainError
from pipeline.train.evaluate import EvalRequest, evaluate
from pipeline.train.finetune import FinetuneConfig, finetune
from pipeline.train.loop import TrainConfig, train
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = {"dim": 64, "n_layers": 2, "n_heads": 4, "ffn_dim": 176}
WORDS = "apple river stone cloud tiger paper lamp bread glass horse music green silver orange window garden".split()
MOODS = {"pos": "happy glad bright".split(), "neg": "sad dark angry".split(), "mid": "plain calm grey".split()}

MANIFEST = """\
name: eval-test
sources:
  - {name: corpus, kind: local, paths: [corpus.jsonl], id_field: id, license: CC0-1.0}
  - {name: pairs, kind: local, paths: [pairs.jsonl], id_field: id, task: sft, instruction_field: prompt, response_field: answer, license: CC0-1.0}
stages:
  - {name: tok, stage: tokenize, inputs: [corpus], params: {vocab_size: 400, seq_len: 64, validation_fraction: 0.1, test_fraction: 0.1}}
  - {name: sft, stage: finetune_data, inputs: [pairs, tok], params: {task: sft, max_len: 32, test_fraction: 0.1, validation_fraction: 0.1}}
"""

LABELED = """\
name: labeled-{name}
sources:
  - {{name: reviews, kind: local, paths: [{file}], id_field: id, task: classification, label_field: label, license: CC0-1.0}}
stages:
  - {{name: cls, stage: finetune_data, inputs: [reviews], params: {{task: classification, max_len: 32, test_fraction: 0.3, validation_fraction: 0.1, tokenizer_path: {tok}}}}}
"""


def run(m: Path, out: Path):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(m), out, ex, console, progress=False)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def labeled_rows(n: int, seed: int, labels: list[str]) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(WORDS, k=rng.randint(2, 5)) + [rng.choice(MOODS[label])]
        rng.shuffle(words)
        rows.append({"id": f"r{seed}-{i}", "text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    rng = random.Random(5)
    write_jsonl(root / "corpus.jsonl", [{"id": f"c{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(20, 60))) + "."} for i in range(400)])
    pairs = []
    for i in range(300):
        words = rng.choices(WORDS, k=rng.randint(2, 4))
        pairs.append({"id": f"q{i}", "prompt": "reverse: " + " ".join(words), "answer": " ".join(reversed(words))})
    write_jsonl(root / "pairs.jsonl", pairs)
    (root / "m.yaml").write_text(MANIFEST, encoding="utf-8")
    write_jsonl(root / "a.jsonl", labeled_rows(300, 1, ["pos", "neg", "mid"]))
    write_jsonl(root / "b.jsonl", labeled_rows(60, 2, ["neg", "pos"]))  # another set: two of the three labels
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        run(root / "m.yaml", root / "out")
        for name in ("a", "b"):
            (root / f"{name}.yaml").write_text(LABELED.format(name=name, file=f"{name}.jsonl", tok=root / "out" / "tokenizer"), encoding="utf-8")
            run(root / f"{name}.yaml", root / f"out-{name}")
    base = root / "base"
    train(TrainConfig(data=str(root / "out"), out_dir=str(base), preset="tiny", model=MICRO, batch_size=8, lr=3e-3, warmup_steps=5, max_steps=100, eval_every=0, eval_tokens=4096, ckpt_every=0, device="cpu", seed=1, tensorboard=False, samples=0))
    finetune(FinetuneConfig(data=str(root / "out"), init_from=str(base), out_dir=str(root / "sft-run"), task="sft", epochs=25, batch_size=16, lr=3e-3, device="cpu"))
    finetune(FinetuneConfig(data=str(root / "out-a"), init_from=str(base), out_dir=str(root / "cls-run"), task="classification", epochs=10, batch_size=16, lr=3e-3, device="cpu"))
    return {"root": root, "out": root / "out", "base": base, "pairs": {f"pairs/{p['id']}": p for p in pairs}}


# ------------------------------------------------------------------------------ loss / perplexity
def test_loss_on_the_test_split_and_on_a_text_file(world):
    root, base = world["root"], world["base"]
    index = json.loads((world["out"] / "tokens" / "index.json").read_text())
    assert index["splits"]["test"]["tokens"] > 64 and index["documents"]["test"] > 0
    res = evaluate(EvalRequest(run=str(base), data=str(world["out"]), device="cpu"))
    assert res["task"] == "lm" and res["split"] == "test" and res["name"] == "out-test"
    assert res["tokens"] == (index["splits"]["test"]["tokens"] - 1) // 64 * 64 and res["complete"]
    assert math.isclose(res["ppl"], math.exp(res["loss"])) and 0 < res["loss"] < math.log(400)  # learned something
    assert res["bits_per_byte"] == pytest.approx(res["loss"] * res["tokens"] / math.log(2) / res["bytes"])
    # the trainer's own validation loss on the same windows
    val = evaluate(EvalRequest(run=str(base), data=str(world["out"] / "tokens"), split="validation", max_tokens=4096, device="cpu"))
    assert val["loss"] == pytest.approx(json.loads((base / "metrics.json").read_text())["val_loss"], rel=1e-5)
    # a text file, encoded with the run's tokenizer; results land in eval/ and metrics.json
    rng = random.Random(9)
    write_jsonl(root / "held.jsonl", [{"text": " ".join(rng.choices(WORDS, k=40)) + "."} for _ in range(20)])
    txt = evaluate(EvalRequest(run=str(base), data=str(root / "held.jsonl"), device="cpu", name="held"))
    assert txt["data_kind"] == "text" and txt["documents"] == 20 and txt["split"] is None
    assert 0 < txt["bytes"] <= sum(len(json.loads(l)["text"].encode()) for l in (root / "held.jsonl").read_text().splitlines())
    metrics = json.loads((base / "metrics.json").read_text())
    assert {"out-test", "out-validation", "held"} <= set(metrics["eval"]) and "val_loss" in metrics  # merged, nothing lost
    assert json.loads((base / "eval" / "held.json").read_text())["loss"] == txt["loss"]
    # the Hugging Face export of the run: the same tokenizer (by its files' hashes), the same losses
    from pipeline.train.export import export_hf

    export_hf(base, root / "hf")
    hf = evaluate(EvalRequest(run=str(root / "hf"), data=str(world["out"]), device="cpu"))
    assert hf["run_kind"] == "hf" and hf["loss"] == pytest.approx(res["loss"], rel=1e-5) and hf["tokens"] == res["tokens"]
    assert "out-test" in json.loads((root / "hf" / "metrics.json").read_text())["eval"]


def test_shards_of_another_tokenizer_are_refused(world, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(world["out"] / "tokens", other / "tokens")
    index = json.loads((other / "tokens" / "index.json").read_text())
    index["tokenizer"]["sha256"] = "0" * 64  # another tokenizer: another hash, other files
    index["tokenizer"]["files"] = {n: "0" * 64 for n in index["tokenizer"]["files"]}
    (other / "tokens" / "index.json").write_text(json.dumps(index))
    with pytest.raises(TrainError, match="another tokenizer"):
        evaluate(EvalRequest(run=str(world["base"]), data=str(other), device="cpu"))
    proc = run_cli("eval", str(world["base"]), "--data", str(other), "--device", "cpu", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "another tokenizer" in proc.stderr and "Traceback" not in proc.stderr


def test_shards_without_a_test_split_fall_back_to_validation(world, tmp_path):
    old = tmp_path / "old"  # shards made before the test split existed: train and validation only
    shutil.copytree(world["out"] / "tokens", old / "tokens")
    index = json.loads((old / "tokens" / "index.json").read_text())
    del index["splits"]["test"]
    (old / "tokens" / "index.json").write_text(json.dumps(index))
    res = evaluate(EvalRequest(run=str(world["base"]), data=str(old), device="cpu"))
    assert res["split"] == "validation" and "no test split" in res["note"] and res["name"] == "old-validation"
    with pytest.raises(TrainError, match="split 'test' has no tokens"):
        evaluate(EvalRequest(run=str(world["base"]), data=str(old), split="test", device="cpu"))


def test_a_published_model_folder_on_shards_of_its_own_tokenizer(tmp_path, cache_env):
    """A Qwen2-style folder (byte-level BPE, no BOS): its folder holds more files than the
    tokenizer/ the tokenize stage writes, so the tokenizer is matched by its tokenizer.json."""
    from tests.support.hfmodel import CORPUS, published_model
    from tests.test_tokenize import manifest
    from tests.test_tokenize import run as run_tokenize

    model = published_model(tmp_path / "tiny-qwen2")
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "docs.jsonl", [{"id": f"d{i}", "text": f"{CORPUS[i % len(CORPUS)]} 第{i}段。"} for i in range(80)])
    run_tokenize(manifest(tmp_path, tokenizer_path=str(model), seq_len=32, validation_fraction=0.1, test_fraction=0.2), tmp_path / "out")
    res = evaluate(EvalRequest(run=str(model), data=str(tmp_path / "out"), device="cpu"))
    assert res["run_kind"] == "hf" and res["split"] == "test" and res["tokens"] > 0
    assert abs(res["loss"] - math.log(700)) < 1.5  # random weights: about the log of the vocabulary
    write_jsonl(tmp_path / "held.jsonl", [{"text": t} for t in CORPUS[:6]])
    txt = evaluate(EvalRequest(run=str(model), data=str(tmp_path / "held.jsonl"), device="cpu"))
    assert txt["bytes"] > 0 and txt["bits_per_byte"] > 0 and (model / "eval" / "held.json").is_file()


# ------------------------------------------------------------------------------ text metrics
def test_text_metrics_on_known_strings():
    from pipeline.train.metrics_text import CJKTokenizer, cjk_share, rouge_l, text_scores

    assert CJKTokenizer().tokenize("我喜欢Python 3和NLP！") == ["我", "喜", "欢", "python", "3", "和", "nlp"]
    # by hand: LCS(我喜欢狗, 我喜欢猫) = 3 characters of 4 -> P = R = F = 0.75; rouge-score's own
    # tokenizer drops non-ASCII and would give 0
    assert rouge_l(["我喜欢狗"], ["我喜欢猫"]) == [pytest.approx(0.75)]
    # LCS 3, P = 3/4, R = 3/3 -> F = 2 * 0.75 / 1.75
    assert rouge_l(["The cat sat down"], ["the cat sat"]) == [pytest.approx(2 * 0.75 / 1.75)]
    en = text_scores(["the cat sat down", " exact "], ["the cat sat", "exact"])
    assert en["bleu_tokenize"] == "13a" and en["exact_match"] == 0.5
    one = text_scores(["the cat sat down"], ["the cat sat"])
    # BLEU by hand: precisions 3/4, 2/3, 1/2 and 0/1 (exp smoothing: 1/2), brevity penalty 1
    assert one["bleu"] == pytest.approx(100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25)
    zh = text_scores(["今天天气很好", "我喜欢狗"], ["今天天气很好", "我喜欢猫"])
    assert zh["bleu_tokenize"] == "zh" and zh["cjk_share"] == 1.0 and zh["exact_match"] == 0.5
    assert zh["rouge_l"] == pytest.approx((1 + 0.75) / 2) and 0 < zh["chrf"] < 100 and zh["bleu"] > 0
    assert text_scores(["完全一样"], ["完全一样"])["chrf"] == pytest.approx(100)
    assert cjk_share(["abc 中文"]) == pytest.approx(2 / 5)


# ------------------------------------------------------------------------------ SFT
def test_sft_generation_metrics_end_to_end(world):
    run_dir = world["root"] / "sft-run"
    res = evaluate(EvalRequest(run=str(run_dir), device="cpu", max_examples=12))  # default data: its own finetune/, test split
    assert res["task"] == "sft" and res["split"] == "test" and res["run_kind"] == "sft"
    g = res["generation"]
    assert res["generated"] == g["examples"] == 12 and res["examples"] >= 12
    assert {"rouge_l", "chrf", "bleu", "exact_match"} <= set(g) and g["bleu_tokenize"] == "13a" and g["decoding"] == "greedy"
    assert 0 <= g["rouge_l"] <= 1 and 0 <= g["exact_match"] <= 1 and res["loss"] > 0 and res["tokens"] > 0
    assert g["rouge_l"] > 0 and any(s["prediction"] for s in res["samples"])  # measured 0.19: the words, not yet their order
    # prompt = the instruction + separator, reference = the response without its EOS
    texts = {(p["prompt"] + "\n", p["answer"]) for p in world["pairs"].values()}
    assert res["samples"] and all((s["prompt"], s["reference"]) in texts for s in res["samples"])
    metrics = json.loads((run_dir / "finetune" / "metrics.json").read_text())
    assert metrics["task"] == "sft" and res["name"] in metrics["eval"]  # the fine-tuning's scores kept
    assert (run_dir / "finetune" / "eval" / f"{res['name']}.json").is_file()


# ------------------------------------------------------------------------------ classifier
def test_classifier_on_another_labeled_set(world, tmp_path):
    root = world["root"]
    res = evaluate(EvalRequest(run=str(root / "cls-run"), data=str(root / "out-b"), device="cpu", name="b"))
    b_index = json.loads((root / "out-b" / "finetune" / "index.json").read_text())
    assert res["task"] == "classification" and res["split"] == "test" and res["examples"] == b_index["splits"]["test"]["examples"]
    assert res["label_map"] == {"neg": "neg", "pos": "pos"}
    s = res["scores"]
    assert s["confusion_matrix"]["labels"] == ["mid", "neg", "pos"] and sum(map(sum, s["confusion_matrix"]["matrix"])) == res["examples"]
    assert s["confusion_matrix"]["matrix"][0][0] == 0  # no "mid" example in the other set
    assert res["accuracy"] == s["accuracy"] > 0.7 and "b" in json.loads((root / "cls-run" / "finetune" / "metrics.json").read_text())["eval"]  # measured 0.94
    # labels the classifier does not know, and another tokenizer, are refused
    bad = tmp_path / "bad"
    shutil.copytree(root / "out-b" / "finetune", bad / "finetune")
    index = json.loads((bad / "finetune" / "index.json").read_text())
    (bad / "finetune" / "index.json").write_text(json.dumps({**index, "labels": ["neg", "furious"]}))
    with pytest.raises(TrainError, match="does not know: 'furious'"):
        evaluate(EvalRequest(run=str(root / "cls-run"), data=str(bad), device="cpu"))
    index["tokenizer"] = {**index["tokenizer"], "sha256": "1" * 64, "files": {"tokenizer.model": "1" * 64}}
    (bad / "finetune" / "index.json").write_text(json.dumps(index))
    with pytest.raises(TrainError, match="tokenizer mismatch"):
        evaluate(EvalRequest(run=str(root / "cls-run"), data=str(bad), device="cpu"))
    with pytest.raises(TrainError, match="a classifier is needed"):
        evaluate(EvalRequest(run=str(world["base"]), data=str(root / "out-b"), device="cpu"))


# ------------------------------------------------------------------------------ report
def test_report_shows_the_eval_tables_escaped(world):
    from pipeline.audit.report import build_report
    from pipeline.audit.report.training import eval_section, gather_runs

    run_dir = world["root"] / "sft-run"
    res = evaluate(EvalRequest(run=str(run_dir), device="cpu", max_examples=3, name="xss"))
    path = run_dir / "finetune" / "eval" / "xss.json"
    rec = json.loads(path.read_text())
    rec["samples"][0]["prediction"] = "<script>alert(1)</script>"
    path.write_text(json.dumps(rec))
    runs = gather_runs([run_dir])
    ft = next(r for r in runs if r["name"].endswith("/finetune"))
    assert "xss" in {e["name"] for e in ft["eval"]}
    html = str(eval_section(ft))
    assert 'class="eval-loss"' in html and 'class="eval-generation"' in html and "ROUGE-L" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    index = build_report(world["out"], [run_dir], samples=1)
    page = (index.parent / "training.html").read_text(encoding="utf-8")
    assert "xss" in page and "<script>alert" not in page and res["name"] == "xss"
