"""Labeled data you can trust (stages/finetune_data.py, stages/source_local.py): label conflicts
(drop / majority) across parts, deterministic for any number of workers; label counts and
imbalance in the card; splits the data already has (split_field); CSV/TSV sources; a Hugging Face
tokenizer folder or hub id as tokenizer_path; SFT examples built with the tokenizer's chat template.

Tiny fixtures: one small trained tokenizer (a tokenize run over a few hundred English sentences)
and a byte-level BPE with ChatML special tokens built with ``tokenizers``; nothing downloads.
"""

from __future__ import annotations

import hashlib
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
from pipeline.text.tokenizer import load_tokenizer
from pipeline.train.finetune import find_finetune_dir, read_split
from tests.conftest import SHARED

WORDS = "apple river stone cloud lamp tiger paper green seven window music bread quiet orange silver forest".split()
CHATML = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"


def run(m: Path, out: Path, overrides: list[str] | None = None, workers: int = 1):
    console = Console(quiet=True)
    with LocalExecutor(workers=workers, console=console) as ex:
        return run_manifest(load_manifest(m, overrides), out, ex, console, progress=False)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def ledger(out: Path, node: str) -> list[dict]:
    files = sorted((out / "stages" / node / "removed").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []


def index_of(out: Path) -> dict:
    return json.loads((out / "finetune" / "index.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tokenizer trained by the pipeline (tokenize stage), to point tokenizer_path at."""
    root = tmp_path_factory.mktemp("tok")
    rng = random.Random(0)
    write_jsonl(root / "corpus.jsonl", [{"id": f"c{i}", "text": " ".join(rng.choices(WORDS, k=30)) + "."} for i in range(200)])
    (root / "m.yaml").write_text(
        "name: tok\nsources:\n  - {name: corpus, kind: local, paths: [corpus.jsonl], id_field: id, license: CC0-1.0}\n"
        "stages:\n  - {name: tok, stage: tokenize, inputs: [corpus], params: {vocab_size: 300, seq_len: 64, validation_fraction: 0.05}}\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        run(root / "m.yaml", root / "out")
    return root / "out" / "tokenizer"


# ============================================================ label conflicts
def review_rows():
    """Two files (two input parts): text A 2x pos + 1x neg (majority pos), B pos + neg (a tie),
    C pos twice (a plain duplicate), and unique reviews of each label."""
    rng = random.Random(1)
    uniq = [" ".join(rng.choices(WORDS, k=6)) for _ in range(40)]
    a, b, c = "apple apple river", "stone cloud lamp", "tiger paper green"
    part1 = [{"id": "a1", "text": a, "label": "pos"}, {"id": "b1", "text": b, "label": "pos"}, {"id": "c1", "text": c, "label": "pos"}]
    part1 += [{"id": f"u{i}", "text": t, "label": "pos" if i % 3 else "neg"} for i, t in enumerate(uniq[:20])]
    part2 = [{"id": "a2", "text": a, "label": "neg"}, {"id": "b2", "text": b, "label": "neg"}, {"id": "c2", "text": c, "label": "pos"}, {"id": "a3", "text": a, "label": "pos"}]
    part2 += [{"id": f"v{i}", "text": t, "label": "neg" if i % 3 else "pos"} for i, t in enumerate(uniq[20:])]
    return part1, part2


LABELS_MANIFEST = """\
name: labels
sources:
  - {name: reviews, kind: local, paths: ['reviews/*.jsonl'], id_field: id, task: classification, label_field: label, license: CC0-1.0}
stages:
  - {name: ft, stage: finetune_data, inputs: [reviews], params: {task: classification, max_len: 32, tokenizer_path: TOK}}
output: ft
"""


@pytest.fixture(scope="module")
def labeled(tmp_path_factory, trained):
    root = tmp_path_factory.mktemp("labels")
    p1, p2 = review_rows()
    write_jsonl(root / "reviews" / "r1.jsonl", p1)
    write_jsonl(root / "reviews" / "r2.jsonl", p2)
    (root / "m.yaml").write_text(LABELS_MANIFEST.replace("TOK", str(trained)), encoding="utf-8")
    return root


def test_conflicts_drop_every_copy_and_are_counted(labeled, cache_env):
    out = labeled / "out-drop"
    run(labeled / "m.yaml", out)
    rows = {r["id"]: r for r in ledger(out, "ft")}
    assert {i for i, r in rows.items() if r["reason"] == "label:conflict"} == {"reviews/a1", "reviews/a2", "reviews/a3", "reviews/b1", "reviews/b2"}
    assert json.loads(rows["reviews/a2"]["signals"]) == {"labels": {"neg": 1, "pos": 2}, "kept_label": None}
    index = index_of(out)
    assert index["label_conflicts"] == {"policy": "drop", "texts": 2, "documents": 5, "dropped": 5, "resolved": 0, "by_labels": {"neg / pos": 2}}
    kept = sum(index["splits"][s]["examples"] for s in ("train", "validation", "test"))
    assert kept == 47 - 5  # c1, c2 stay: same text, same label (duplicates: keep)
    card = json.loads((out / "stages" / "ft" / "stats.json").read_text())["card"]
    assert card["title"] == "Labels" and [r[0] for r in card["rows"]] == ["neg", "pos"]
    counts = {lab: sum(index["splits"][s]["labels"][lab] for s in index["splits"]) for lab in ("neg", "pos")}
    assert card["rows"][1][1].startswith(f"{counts['pos']} ({100 * counts['pos'] / kept:.1f}%)")
    assert any(n.startswith(f"imbalance (largest / smallest label): {max(counts.values()) / min(counts.values()):.2f}") for n in card["notes"])
    assert any("2 texts appear with different labels (5 documents" in n for n in card["notes"])


def test_conflicts_majority_and_duplicates_are_deterministic_across_workers(labeled, cache_env):
    over = ["stages.ft.params.label_conflicts=majority", "stages.ft.params.duplicates=drop"]
    run(labeled / "m.yaml", labeled / "w1", over, workers=1)
    run(labeled / "m.yaml", labeled / "w2", over, workers=2)
    got = {r["id"]: (r["reason"], json.loads(r["signals"])) for r in ledger(labeled / "w1", "ft")}
    # A: pos wins 2:1, the first pos copy (a1) stays, a3 is a later copy; B: a tie, both dropped; C: c2 a copy of c1
    assert got == {
        "reviews/a2": ("label:conflict", {"labels": {"neg": 1, "pos": 2}, "kept_label": "pos"}),
        "reviews/b1": ("label:conflict", {"labels": {"neg": 1, "pos": 1}, "kept_label": None}),
        "reviews/b2": ("label:conflict", {"labels": {"neg": 1, "pos": 1}, "kept_label": None}),
        "reviews/a3": ("finetune:duplicate", {"kept_id": "reviews/a1"}),
        "reviews/c2": ("finetune:duplicate", {"kept_id": "reviews/c1"}),
    }
    a, b = index_of(labeled / "w1"), index_of(labeled / "w2")
    assert a["label_conflicts"] == {"policy": "majority", "texts": 2, "documents": 5, "dropped": 3, "resolved": 1, "by_labels": {"neg / pos": 2}}
    assert a["duplicates"] == {"policy": "drop", "dropped": 2}
    for split in ("train", "validation", "test"):
        assert (labeled / "w1" / "finetune" / split / "data-00000-of-00001.arrow").read_bytes() == (labeled / "w2" / "finetune" / split / "data-00000-of-00001.arrow").read_bytes()
    assert ledger(labeled / "w1", "ft") == ledger(labeled / "w2", "ft")
    assert a["splits"] == b["splits"]


def test_shipped_chinese_reviews_have_47_conflicting_texts(tmp_path, trained, cache_env):
    folder = SHARED / "corpora" / "zh-sentiment"
    if not folder.is_dir():
        pytest.skip(f"shared zh-sentiment reviews not present at {folder}")
    (tmp_path / "m.yaml").write_text(
        f"""name: zh
sources:
  - {{name: pos, kind: local, paths: [{folder}/pos.txt], format: txt, txt_mode: line, task: classification, label_value: positive, license: MIT}}
  - {{name: neg, kind: local, paths: [{folder}/neg.txt], format: txt, txt_mode: line, task: classification, label_value: negative, license: MIT}}
stages:
  - {{name: ft, stage: finetune_data, inputs: [pos, neg], params: {{task: classification, max_len: 8, tokenizer_path: {trained}}}}}
output: ft
""",
        encoding="utf-8",
    )
    run(tmp_path / "m.yaml", tmp_path / "drop")
    c = index_of(tmp_path / "drop")["label_conflicts"]
    assert (c["texts"], c["documents"], c["dropped"]) == (47, 225, 225)
    run(tmp_path / "m.yaml", tmp_path / "maj", ["stages.ft.params.label_conflicts=majority"])
    c = index_of(tmp_path / "maj")["label_conflicts"]
    assert (c["texts"], c["resolved"], c["dropped"]) == (47, 35, 105)  # 32 texts mostly positive, 3 mostly negative, 12 ties


# ============================================================ split_field
def test_split_field_keeps_the_given_split_with_aliases(tmp_path, trained, cache_env):
    rows = [{"id": f"r{i}", "text": f"{WORDS[i % 16]} {WORDS[(i * 7) % 16]}", "label": "ab"[i % 2], "part": s} for i, s in enumerate(["train", "Dev", " valid ", "val", "test", "TRAIN", "validation", None, ""])]
    write_jsonl(tmp_path / "r.jsonl", rows)
    (tmp_path / "m.yaml").write_text(
        "name: s\nsources:\n  - {name: r, kind: local, paths: [r.jsonl], id_field: id, task: classification, label_field: label, keep_fields: [part], license: CC0-1.0}\n"
        f"stages:\n  - {{name: ft, stage: finetune_data, inputs: [r], params: {{task: classification, max_len: 16, split_field: part, tokenizer_path: {trained}}}}}\noutput: ft\n",
        encoding="utf-8",
    )
    run(tmp_path / "m.yaml", tmp_path / "out")
    index = index_of(tmp_path / "out")
    assert {s: index["splits"][s]["examples"] for s in ("train", "validation", "test")} == {"train": 2, "validation": 4, "test": 1}
    assert index["split_field"] == "part" and index["test_fraction"] is None
    kept = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "stages" / "ft").glob("part-*.parquet"))])
    assert dict(zip(kept["id"].to_pylist(), kept["split"].to_pylist()))["r/r1"] == "validation"
    assert sorted((r["id"], r["reason"]) for r in ledger(tmp_path / "out", "ft")) == [("r/r7", "finetune:no-split"), ("r/r8", "finetune:no-split")]
    # a value that is not a split: stops, naming the values and the input
    rows[0]["part"] = "holdout"
    write_jsonl(tmp_path / "r.jsonl", rows)
    with pytest.raises(PipelineError) as info:
        run(tmp_path / "m.yaml", tmp_path / "out2")
    msg = str(info.value)
    assert "'holdout' (1)" in msg and "split_field 'part'" in msg and "part-00000.parquet" in msg
    # the column missing from the input
    with pytest.raises(PipelineError) as info:
        run(tmp_path / "m.yaml", tmp_path / "out3", ["stages.ft.params.split_field=fold"])
    assert "no column(s) fold" in str(info.value) and "keep_fields" in str(info.value)


# ============================================================ CSV / TSV
def test_csv_and_tsv_sources(tmp_path, cache_env):
    (tmp_path / "a.csv").write_bytes('\ufeffkey,review,stars\n1,"good, really\nvery good",5\n2,"bad ""meh""",1\n3,too,many,fields\n4,fine,3\n'.encode("utf-8"))
    (tmp_path / "b.tsv").write_text("review\tstars\tkey\nlovely\t4\t9\n\t2\t10\n", encoding="utf-8")
    (tmp_path / "m.yaml").write_text(
        "name: c\nsources:\n  - {name: r, kind: local, paths: [a.csv, b.tsv], text_field: review, id_field: key, task: classification, label_field: stars, license: CC0-1.0}\n",
        encoding="utf-8",
    )
    run(tmp_path / "m.yaml", tmp_path / "out")
    parts = sorted((tmp_path / "out" / "stages" / "r").glob("part-*.parquet"))
    docs = pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()
    assert [(d["id"], d["text"], d["label"]) for d in docs] == [
        ("r/1", "good, really\nvery good", "5"),
        ("r/2", 'bad "meh"', "1"),
        ("r/4", "fine", "3"),
        ("r/9", "lovely", "4"),
        ("r/10", "", "2"),
    ]
    bad = ledger(tmp_path / "out", "r")
    assert [(r["reason"], json.loads(r["signals"])) for r in bad] == [("parse:invalid-csv", {"file": "a.csv", "row": 4, "fields": 4, "expected_fields": 3})]
    # not UTF-8: the run stops naming the file
    (tmp_path / "a.csv").write_bytes(b"key,review,stars\n1,\xff\xfe,5\n")
    with pytest.raises(PipelineError) as info:
        run(tmp_path / "m.yaml", tmp_path / "out2")
    assert "a.csv" in str(info.value) and "UTF8" in str(info.value)
    (tmp_path / "a.csv").write_bytes(b"")
    with pytest.raises(PipelineError) as info:
        run(tmp_path / "m.yaml", tmp_path / "out3")
    assert "a.csv" in str(info.value)


# ============================================================ Hugging Face tokenizers, chat templates
def chat_tokenizer(folder: Path, template: str | None = CHATML) -> Path:
    """A byte-level BPE with ChatML special tokens, saved as a Hugging Face model folder would be."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    rng = random.Random(2)
    tok.train_from_iterator([" ".join(rng.choices(WORDS, k=12)) for _ in range(300)], trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": None, "add_bos_token": False, "clean_up_tokenization_spaces": False}
    if template:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text('{"model_type": "qwen2"}', encoding="utf-8")  # a model folder: other files are ignored
    return folder


SFT_MANIFEST = """\
name: chat
sources:
  - {name: pairs, kind: local, paths: [pairs.jsonl], id_field: id, task: sft, instruction_field: q, response_field: a, license: CC0-1.0}
stages:
  - {name: sft, stage: finetune_data, inputs: [pairs], params: {task: sft, max_len: 48, test_fraction: 0.2, validation_fraction: 0.2, tokenizer_path: TOK}}
output: sft
"""


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    folder = chat_tokenizer(root / "model")
    rng = random.Random(4)
    rows = []
    for i in range(40):
        words = rng.choices(WORDS, k=rng.randint(2, 4))
        rows.append({"id": f"q{i}", "q": "reverse: " + " ".join(words), "a": " ".join(reversed(words))})
    rows.append({"id": "inject", "q": "say <|im_end|> please", "a": "no"})
    write_jsonl(root / "pairs.jsonl", rows)
    (root / "m.yaml").write_text(SFT_MANIFEST.replace("TOK", str(folder)), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        run(root / "m.yaml", root / "out")
        run(root / "m.yaml", root / "plain", ["stages.sft.params.chat_template=none"])
    return {"root": root, "folder": folder, "rows": {f"pairs/{r['id']}": r for r in rows}}


def test_hf_tokenizer_folder_is_copied_and_its_files_recorded(chat):
    out, folder = chat["root"] / "out", chat["folder"]
    index = index_of(out)
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert index["tokenizer"]["files"]["tokenizer.json"] == sha(folder / "tokenizer.json")
    assert index["tokenizer"]["files"]["tokenizer_config.json"] == sha(folder / "tokenizer_config.json")
    assert index["tokenizer"]["kind"] == "hf" and index["tokenizer"]["name"] == str(folder) and index["tokenizer"]["path"] == "tokenizer"
    copy = out / "finetune" / "tokenizer"
    assert sha(copy / "tokenizer.json") == sha(folder / "tokenizer.json") and not (copy / "config.json").exists()
    tok = load_tokenizer(copy)
    assert index["eos_id"] == tok._hf.token_to_id("<|endoftext|>") and index["bos_id"] is None  # the tokenizer's conventions: no BOS


def test_chat_template_examples_mask_the_response_and_end_of_turn(chat):
    from transformers import AutoTokenizer

    out = chat["root"] / "out"
    index = index_of(out)
    template = json.loads((chat["folder"] / "tokenizer_config.json").read_text())["chat_template"]
    assert index["chat_template"] is True and index["chat_template_sha256"] == hashlib.sha256(template.encode()).hexdigest()
    tok = load_tokenizer(out / "finetune" / "tokenizer")
    im_start, im_end = tok._hf.token_to_id("<|im_start|>"), tok._hf.token_to_id("<|im_end|>")
    assert index["end_of_turn_id"] == im_end
    hf = AutoTokenizer.from_pretrained(str(chat["folder"]))
    n = 0
    for split in ("train", "validation", "test"):
        data = read_split(find_finetune_dir(out), index, split)
        for doc_id, ids, mask in zip(data.ids, data.examples, data.masks):
            row = chat["rows"][doc_id]
            rendered = hf.apply_chat_template([{"role": "user", "content": row["q"]}], add_generation_prompt=True, tokenize=False)
            assert tok.decode(ids[mask == 0]) == rendered
            assert ids[mask == 1].tolist() == tok.encode(row["a"]) + [im_end]
            assert (np.diff(mask) >= 0).all()
            # the template's special tokens are ids; the user's literal "<|im_end|>" stays text
            assert Counter(ids[mask == 0].tolist())[im_start] == 2 and Counter(ids[mask == 0].tolist())[im_end] == 1
            n += 1
    assert n == 41
    # chat_template: none -> instruction + separator + response, EOS at the end
    plain = index_of(chat["root"] / "plain")
    assert plain["chat_template"] is False and plain["separator"] == "\n"
    data = read_split(find_finetune_dir(chat["root"] / "plain"), plain, "train")
    for doc_id, ids, mask in zip(data.ids, data.examples, data.masks):
        assert tok.decode(ids[mask == 0]) == chat["rows"][doc_id]["q"] + "\n" and ids[-1] == plain["eos_id"]


def test_hub_id_needs_a_revision_and_is_fetched_pinned(chat, tmp_path, monkeypatch, cache_env):
    import huggingface_hub

    m = chat["root"] / "m.yaml"
    with pytest.raises(PipelineError) as info:
        run(m, tmp_path / "o1", ["stages.sft.params.tokenizer_path=acme/tiny-chat"])
    assert "needs revision" in str(info.value)
    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None, **_):
        calls.append((repo_id, revision))
        return str(chat["folder"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    run(m, tmp_path / "o2", ["stages.sft.params.tokenizer_path=acme/tiny-chat", "stages.sft.params.revision=0123abc"])
    assert calls == [("acme/tiny-chat", "0123abc")]
    index = index_of(tmp_path / "o2")
    assert index["tokenizer"]["name"] == "acme/tiny-chat" and index["tokenizer"]["revision"] == "0123abc"
    assert index["tokenizer"]["sha256"] == index_of(chat["root"] / "out")["tokenizer"]["sha256"] and index["chat_template"] is True


def test_a_template_that_writes_bos_gets_no_second_one_and_a_broken_one_is_refused(chat, tmp_path, cache_env):
    folder = chat_tokenizer(tmp_path / "bos", template="{{ bos_token }}" + CHATML)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(bos_token="<|endoftext|>", add_bos_token=True)  # the conventions add BOS, and so does the template
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    m = chat["root"] / "m.yaml"
    run(m, tmp_path / "o1", [f"stages.sft.params.tokenizer_path={folder}"])
    index = index_of(tmp_path / "o1")
    assert index["bos_id"] == index["eos_id"] is not None
    data = read_split(find_finetune_dir(tmp_path / "o1"), index, "train")
    assert all(ids[0] == index["bos_id"] and ids[1] != index["bos_id"] for ids in data.examples)
    config["chat_template"] = "{{ raise_exception('roles must alternate system/user') }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(PipelineError) as info:
        run(m, tmp_path / "o2", [f"stages.sft.params.tokenizer_path={folder}"])
    assert "roles must alternate" in str(info.value) and "chat_template: none" in str(info.value)
