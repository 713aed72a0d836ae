"""The tokenize stage: SentencePiece training, the Hugging Face twin, packing, DatasetDict token
shards, lineage, splits, stats, determinism, resume, existing tokenizers.

Everything runs through the real runner on a small corpus: 100 real zhwiki articles from
``../shared/corpora/zhwiki-articles`` (synthetic Chinese-like text when absent) plus English and
mixed documents with paragraph breaks, runs of spaces, emoji, rare CJK characters and literal
special-token text.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece as spm
from rich.console import Console

from pipeline.common.errors import PipelineError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from tests.conftest import SHARED

SEQ_LEN = 128
VOCAB = 8000

MIXED = [
    "Hello  world.\n\nA second paragraph,   with a run of spaces.\n\n\nAnd three newlines before this one.",
    " leading space and trailing space ",
    "tabs\tand\r\ncarriage returns\x0bvertical tab",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇨🇳🇫🇷 and rare CJK 𠀀𪚥𫠠龘 ext-B",
    "literal special text: <s> </s> <unk> <0x41> <pad> should stay text",
    "日本語のテキストと한국어 텍스트, Ελληνικά, русский, العربية.",
    "Ａ全角 ﬁ ligature e\u0301 combining, NBSP\u00a0here, ideographic\u3000space",
    "\n",
    "   ",
    "x",
    "数字 1234567890 3.14159 ２０２０年 and code `def f(x):\n    return x  # two spaces`\n",
    "中文和English混排的句子。第二句有  两个空格。\n\n第三段。",
]


def corpus() -> tuple[list[dict], bool]:
    """Documents (id, text) and whether they are the real zhwiki articles."""
    articles = SHARED / "corpora" / "zhwiki-articles"
    docs = []
    real = articles.is_dir()
    if real:
        for path in sorted(articles.glob("*.txt"), key=lambda p: int(p.stem)):
            docs.append({"id": f"zh-{path.stem}", "text": path.read_text(encoding="utf-8")})
    else:  # synthetic Chinese-like text: frequent characters drawn from a Zipf-like distribution
        rng = random.Random(7)
        chars = [chr(0x4E00 + i) for i in range(3000)]
        weights = [1 / (i + 1) for i in range(len(chars))]
        for d in range(100):
            paras = ["".join(rng.choices(chars, weights, k=rng.randint(50, 400))) + "。" for _ in range(rng.randint(2, 8))]
            docs.append({"id": f"zh-{d}", "text": f"标题{d}\n\n" + "\n".join(paras)})
    docs += [{"id": f"mix-{i}", "text": t} for i, t in enumerate(MIXED)]
    return docs, real


EMPTY_ID, LOSSY_ID = "mix-empty", "mix-lossy"


def write_inputs(root: Path, docs: list[dict]) -> None:
    """Three jsonl partitions (documents interleaved) plus an empty and a lossy document."""
    root.mkdir(parents=True, exist_ok=True)
    extra = [{"id": EMPTY_ID, "text": ""}, {"id": LOSSY_ID, "text": "a sparkline ▁▂▃▅▇ uses U+2581"}]
    files = [[], [], []]
    for i, doc in enumerate(docs + extra):
        files[i % 3].append(doc)
    for k, rows in enumerate(files):
        (root / f"docs-{k}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def manifest(root: Path, **params) -> Path:
    params = {"vocab_size": VOCAB, "seq_len": SEQ_LEN, "validation_fraction": 0.05, "test_fraction": 0.05, **params}
    path = root / "m.yaml"
    path.write_text(
        "name: tok-test\n"
        "sources:\n"
        "  - {name: docs, kind: local, paths: ['in/*.jsonl'], license: CC-BY-SA-3.0, id_field: id}\n"
        "stages:\n"
        f"  - {{name: tok, stage: tokenize, inputs: [docs], params: {json.dumps(params)}}}\n",
        encoding="utf-8",
    )
    return path


def run(m: Path, out: Path, workers: int = 1):
    console = Console(quiet=True)
    with LocalExecutor(workers=workers, console=console) as ex:
        return run_manifest(load_manifest(m), out, ex, console, progress=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".grist")}


def doc_id(raw: str) -> str:
    return f"docs/{raw}"  # the local source prefixes ids with its name


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    docs, real = corpus()
    write_inputs(root / "in", docs)
    m = manifest(root)
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the function-scoped monkeypatch is not available
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        run(m, root / "out", workers=1)
    return {"root": root, "out": root / "out", "docs": {doc_id(d["id"]): d["text"] for d in docs}, "real": real, "manifest": m}


def split_stream(out: Path, split: str) -> tuple[np.ndarray, list[str], pa.Table]:
    """The split's tokens concatenated (read straight from the shards) and its documents in order."""
    table = datasets.load_from_disk(str(out / "tokens"))[split].data.table
    ids = table.column("input_ids").combine_chunks().flatten().to_numpy()
    order: list[str] = []
    for row in table.column("doc_ids").to_pylist():
        for d in row:
            if not order or order[-1] != d:
                order.append(d)
    return ids, order, table


# ------------------------------------------------------------------------------------ tests
def test_dataset_dict_layout_dtype_and_index(built):
    out = built["out"]
    dd = datasets.load_from_disk(str(out / "tokens"))
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "validation", "test"}
    assert dd["train"].num_rows > 0 and dd["validation"].num_rows > 0 and dd["test"].num_rows > 0
    index = json.loads((out / "tokens" / "index.json").read_text())
    assert index["seq_len"] == SEQ_LEN and index["dtype"] == "uint16"
    assert set(index["documents"]) == {"train", "validation", "test"} and index["test_fraction"] == 0.05
    for split in ("train", "validation", "test"):
        ds = dd[split]
        assert isinstance(ds.data, datasets.table.MemoryMappedTable)  # read through memory maps, not copied
        assert ds.features["input_ids"].feature.dtype == "uint16"
        assert ds.data.table.schema.field("input_ids").type == pa.list_(pa.uint16())
        lengths = [len(x) for x in ds.data.table.column("input_ids").to_pylist()]
        assert all(n == SEQ_LEN for n in lengths[:-1]) and 0 < lengths[-1] <= SEQ_LEN  # no padding; only the last is partial
        info = index["splits"][split]
        assert info["sequences"] == ds.num_rows == sum(s["sequences"] for s in info["shards"])
        assert info["tokens"] == sum(lengths) == sum(s["tokens"] for s in info["shards"])
        state = json.loads((out / "tokens" / split / "state.json").read_text())
        assert [f["filename"] for f in state["_data_files"]] == [Path(s["file"]).name for s in info["shards"]]
        for shard in info["shards"]:
            assert (out / "tokens" / shard["file"]).stat().st_size == shard["bytes"]
    # the tokenizer hash in the index is the published tokenizer's
    meta = json.loads((out / "tokenizer" / "grist_tokenizer.json").read_text())
    assert index["tokenizer"]["sha256"] == meta["sha256"]
    files = {n: hashlib.sha256((out / "tokenizer" / n).read_bytes()).hexdigest() for n in meta["files"]}
    assert files == meta["files"] == index["tokenizer"]["files"]
    assert index["eos_id"] == spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "tokenizer.model")).eos_id()


def test_decode_split_on_eos_gives_back_every_document(built):
    out, docs = built["out"], built["docs"]
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "tokenizer.model"))
    eos = sp.eos_id()
    seen: dict[str, str] = {}
    for split in ("train", "validation", "test"):
        ids, order, _ = split_stream(out, split)
        chunks = np.split(ids, np.flatnonzero(ids == eos) + 1)
        assert len(chunks[-1]) == 0 and len(chunks) - 1 == len(order)
        for did, chunk in zip(order, chunks[:-1]):
            assert sp.decode(chunk[:-1].tolist()) == docs[did], did
            assert did not in seen, f"{did} in two places"
            seen[did] = split
    # every document but the empty and the lossy one is there, exactly once
    assert set(seen) == set(docs)
    assert doc_id(EMPTY_ID) not in seen and doc_id(LOSSY_ID) not in seen
    # the ledger says why, and in = out + removed
    ledger = {r["id"]: r["reason"] for p in sorted((out / "stages" / "tok" / "removed").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}
    assert ledger == {doc_id(EMPTY_ID): "tokenize:empty", doc_id(LOSSY_ID): "tokenize:lossy"}
    stats = json.loads((out / "stages" / "tok" / "stats.json").read_text())
    assert stats["in"] == len(docs) + 2 and stats["out"] == len(seen) and stats["removed"] == 2
    # the node's kept parts (-> data/) carry the split, consistent with the shards
    data = datasets.load_from_disk(str(out / "data"))
    assert dict(zip(data["id"], data["split"])) == seen
    assert set(data["text"]) == {docs[d] for d in seen}


def test_lineage_offsets_point_at_document_starts(built):
    out = built["out"]
    eos = json.loads((out / "tokens" / "index.json").read_text())["eos_id"]
    for split in ("train", "validation", "test"):
        _, _, table = split_stream(out, split)
        open_doc, last_doc = None, None  # the document cut at the end of the previous row
        for row_ids, doc_ids, starts in zip(*(table.column(c).to_pylist() for c in ("input_ids", "doc_ids", "doc_starts"))):
            assert len(doc_ids) == len(starts) >= 1 and starts == sorted(starts) and starts[0] == 0
            if open_doc is not None:
                assert doc_ids[0] == open_doc  # continued from the previous row
            else:
                assert doc_ids[0] != last_doc  # a new document, starting at 0
            for k in range(1, len(starts)):
                assert row_ids[starts[k] - 1] == eos  # the document before it ended with EOS
            assert len(set(doc_ids)) == len(doc_ids)
            open_doc = doc_ids[-1] if row_ids[-1] != eos else None
            last_doc = doc_ids[-1]


def test_no_document_in_both_splits_and_split_is_a_function_of_the_id(built):
    out = built["out"]
    train = set(split_stream(out, "train")[1])
    val = set(split_stream(out, "validation")[1])
    test = set(split_stream(out, "test")[1])
    assert train and val and test and not (train & val) and not (train & test) and not (val & test)
    from stages.tokenize import split_hash

    threshold = int(0.05 * 2**64)
    top = 2**64 - int(0.05 * 2**64)
    assert all(split_hash(d, 0) < threshold for d in val)  # the id as the documents carry it
    assert all(split_hash(d, 0) >= top for d in test)  # test: the top of the hash range
    assert all(threshold <= split_hash(d, 0) < top for d in train)
    # the tokenizer's training sample never saw a held-out document
    meta = json.loads((out / "tokenizer" / "grist_tokenizer.json").read_text())
    assert meta["sample"]["documents"] <= len(train) + 1  # + the lossy document: sampled, then dropped by encode


def test_adding_a_test_split_leaves_validation_unchanged():
    from stages.tokenize import split_hash, split_of_hash, split_thresholds

    ids = [f"docs/d{i}" for i in range(20000)]
    before = [split_of_hash(split_hash(d, 0), *split_thresholds(0.1, 0.0)) for d in ids]
    after = [split_of_hash(split_hash(d, 0), *split_thresholds(0.1, 0.05)) for d in ids]
    old_rule = ["validation" if split_hash(d, 0) < int(0.1 * 2**64) else "train" for d in ids]  # the rule before test existed
    assert before == old_rule
    assert [d for d, s in zip(ids, after) if s == "validation"] == [d for d, s in zip(ids, old_rule) if s == "validation"]
    assert {b for a, b in zip(after, before) if a == "test"} == {"train"}  # test comes out of train only
    assert 0.04 < after.count("test") / len(ids) < 0.06
    with pytest.raises(ValueError, match="sum < 1"):
        from stages.tokenize import Params

        Params(validation_fraction=0.5, test_fraction=0.5)


def test_autotokenizer_agrees_with_sentencepiece_on_every_document(built):
    from transformers import AutoTokenizer

    out, docs = built["out"], built["docs"]
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "tokenizer.model"))
    auto = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert auto.eos_token_id == sp.eos_id() and len(auto) == sp.get_piece_size()
    texts = list(docs.values()) + ["a </s> b <s> c", "▁ literal mark"]
    for text in texts:
        ids = sp.encode(text)
        assert auto(text, add_special_tokens=False)["input_ids"] == ids, text[:40]
        if "▁" not in text:
            assert auto.decode(ids) == text
    stats = json.loads((out / "stages" / "tok" / "stats.json").read_text())
    agreement = stats["tokenize"]["tokenizer"]["hf_agreement"]
    assert agreement["documents"] > 50 and agreement["mismatches"] == 0


def test_byte_fallback_rate_is_reported_and_low_for_chinese(built):
    out, docs = built["out"], built["docs"]
    stats = json.loads((out / "stages" / "tok" / "stats.json").read_text())["tokenize"]
    assert set(stats["splits"]) == {"train", "validation", "test"}
    for key in ("tokens", "tokens_per_char", "byte_fallback_rate", "sequences"):
        assert stats[key] is not None
    assert stats["sequences"] == sum(s["sequences"] for s in stats["splits"].values())
    assert stats["tokens"] == sum(s["tokens"] for s in stats["splits"].values())
    assert stats["sources"]["docs"]["tokens"]["train"] == stats["splits"]["train"]["tokens"]
    assert stats["byte_fallback_rate"] < 0.01
    # the common Chinese characters of the corpus are pieces, never bytes
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "tokenizer.model"))
    counts = collections.Counter(c for d, t in docs.items() if d.startswith("docs/zh-") for c in t if "\u4e00" <= c <= "\u9fff")
    common = [c for c, _ in counts.most_common(1500)]
    assert all(not any(sp.is_byte(i) for i in sp.encode(c)) for c in common)
    zh_ids = [i for d, t in docs.items() if d.startswith("docs/zh-") for i in sp.encode(t)]
    assert sum(sp.is_byte(i) for i in zh_ids) / len(zh_ids) < 0.005


def test_same_bytes_for_any_worker_count_and_on_rerun(built, tmp_path, cache_env):
    root = built["root"]
    res = run(built["manifest"], tmp_path / "out2", workers=2)
    assert "tok" in res.nodes_run
    for sub in ("tokens", "tokenizer"):
        assert tree_bytes(tmp_path / "out2" / sub) == tree_bytes(root / "out" / sub)
    for part in sorted((root / "out" / "stages" / "tok").glob("part-*.parquet")):
        assert part.read_bytes() == (tmp_path / "out2" / "stages" / "tok" / part.name).read_bytes()
    again = run(built["manifest"], tmp_path / "out2", workers=2)
    assert again.nodes_run == []
    assert not (root / "out" / "stages" / "tok" / "work").exists()  # work files removed once packed


def test_resume_after_a_killed_encode_phase(built, tmp_path, cache_env, monkeypatch):
    import stages.tokenize as tok_stage

    root = tmp_path / "r"
    docs, _ = corpus()
    write_inputs(root / "in", docs)
    m = manifest(root)
    real = tok_stage._encode_task
    calls: list[int] = []

    def dies_on_second(part, index, *args):
        if index == 1:
            raise KeyboardInterrupt("killed")
        calls.append(index)
        return real(part, index, *args)

    monkeypatch.setattr(tok_stage, "_encode_task", dies_on_second)
    with pytest.raises((KeyboardInterrupt, PipelineError)):
        run(m, root / "out", workers=1)
    node = root / "out" / "stages" / "tok"
    assert not (node / "_COMPLETE").exists() and (node / "_tasks" / "part-00000.json").exists()
    assert not (node / "tokens").exists()

    def counting(part, index, *args):
        calls.append(index)
        return real(part, index, *args)

    calls.clear()
    monkeypatch.setattr(tok_stage, "_encode_task", counting)
    res = run(m, root / "out", workers=1)
    assert "tok" in res.nodes_run and calls == [1, 2]  # part 0 was not encoded again
    for sub in ("tokens", "tokenizer"):
        assert tree_bytes(root / "out" / sub) == tree_bytes(built["out"] / sub)


def test_existing_tokenizer_model_folder_and_hf_only(built, tmp_path, cache_env):
    ref = built["out"]
    ref_rows = {s: split_stream(ref, s)[0] for s in ("train", "validation", "test")}
    hf_only = tmp_path / "hf-only"
    hf_only.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (hf_only / name).write_bytes((ref / "tokenizer" / name).read_bytes())
    model = ref / "tokenizer" / "tokenizer.model"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    for k, (path, extra) in enumerate([(str(model), {"tokenizer_sha256": digest}), (str(ref / "tokenizer"), {}), (str(hf_only), {})]):
        root = tmp_path / f"e{k}"
        docs, _ = corpus()
        write_inputs(root / "in", docs)
        out = root / "out"
        run(manifest(root, tokenizer_path=path, **extra), out)
        for split in ("train", "validation", "test"):
            assert np.array_equal(split_stream(out, split)[0], ref_rows[split])
        meta = json.loads((out / "tokenizer" / "grist_tokenizer.json").read_text())
        assert meta["trained"] is False
        if k < 2:
            assert (out / "tokenizer" / "tokenizer.model").read_bytes() == model.read_bytes()
            assert (out / "tokenizer" / "tokenizer.json").read_bytes() == (ref / "tokenizer" / "tokenizer.json").read_bytes()
        else:
            assert meta["kind"] == "hf" and not (out / "tokenizer" / "tokenizer.model").exists()
    # a wrong pin is refused
    root = tmp_path / "pin"
    write_inputs(root / "in", corpus()[0][:5])
    with pytest.raises(PipelineError, match="sha256"):
        run(manifest(root, tokenizer_path=str(model), tokenizer_sha256="0" * 64), root / "out")


def test_bos_and_forced_validation_on_a_tiny_corpus(built, tmp_path, cache_env):
    root = tmp_path / "tiny"
    docs = [{"id": "a", "text": "第一篇文章。\n\n第二段。"}, {"id": "b", "text": "Second  document."}, {"id": "c", "text": "第三篇。"}]
    write_inputs(root / "in", docs)
    run(manifest(root, tokenizer_path=str(built["out"] / "tokenizer"), validation_fraction=1e-12, test_fraction=0, bos=True, seq_len=4), root / "out")
    sp = spm.SentencePieceProcessor(model_file=str(built["out"] / "tokenizer" / "tokenizer.model"))
    index = json.loads((root / "out" / "tokens" / "index.json").read_text())
    assert len(index["forced_validation"]) == 1 and index["documents"] == {"train": 2, "validation": 1, "test": 0}
    got = {}
    for split in ("train", "validation"):
        ids, order, table = split_stream(root / "out", split)
        assert all(len(r) == 4 for r in table.column("input_ids").to_pylist()[:-1])
        chunks = np.split(ids, np.flatnonzero(ids == sp.eos_id()) + 1)[:-1]
        for did, chunk in zip(order, chunks):
            assert chunk[0] == sp.bos_id()
            got[did] = sp.decode(chunk[1:-1].tolist())
    assert got == {doc_id(d["id"]): d["text"] for d in docs}
    assert index["forced_validation"][0] in split_stream(root / "out", "validation")[1]


def test_a_one_document_corpus_trains_and_round_trips(tmp_path, cache_env):
    root = tmp_path / "one"
    text = "只有一篇文章。\n\nOnly one document, with  two spaces."
    write_inputs(root / "in", [{"id": "only", "text": text}])
    run(manifest(root, vocab_size=300, validation_fraction=0.5), root / "out")
    sp = spm.SentencePieceProcessor(model_file=str(root / "out" / "tokenizer" / "tokenizer.model"))
    index = json.loads((root / "out" / "tokens" / "index.json").read_text())
    assert sum(index["documents"].values()) == 1 and index["forced_validation"] == []
    split = next(s for s, n in index["documents"].items() if n)
    ids, order, _ = split_stream(root / "out", split)
    assert order == [doc_id("only")] and ids[-1] == sp.eos_id() and sp.decode(ids[:-1].tolist()) == text


def test_hf_twin_of_a_unigram_model_gives_the_same_ids(built):
    """Unigram is exact per paragraph. Over a whole long document SentencePiece accumulates the
    Viterbi path score in float32 and can settle a near-tie differently from ``tokenizers``
    (float64, per word): documented, and reported by the stage's ``hf_agreement``."""
    from tokenizers import Tokenizer

    from pipeline.text.tokenizer import hf_tokenizer_from_sentencepiece, train_sentencepiece

    docs = built["docs"]
    texts = [t for d, t in sorted(docs.items())][:25] + MIXED
    model = train_sentencepiece(texts, model_type="unigram", vocab_size=3000, character_coverage=0.98)
    sp = spm.SentencePieceProcessor(model_proto=model)
    hf = Tokenizer.from_str(hf_tokenizer_from_sentencepiece(model).to_str())
    hf.encode_special_tokens = True
    for text in docs.values():
        if "<s>" in text:  # control pieces are in the unigram lattice: see docs/tokenization.md
            continue
        for para in text.split("\n"):
            ids = sp.encode(para)
            assert hf.encode(para, add_special_tokens=False).ids == ids
            if "▁" not in para:
                assert sp.decode(ids) == para and hf.decode(ids) == para


def test_training_is_independent_of_thread_count_for_bpe(built):
    from pipeline.text.tokenizer import train_sentencepiece

    texts = list(built["docs"].values())[:40]
    assert train_sentencepiece(texts, vocab_size=5000, num_threads=1) == train_sentencepiece(texts, vocab_size=5000, num_threads=2)


def test_packing_of_tiny_work_files(tmp_path):
    from pipeline.text import packing

    work = tmp_path / "work"
    streams = {"train": [([5, 6, 7, 2], "d0"), ([8, 2], "d1")], "validation": [], "test": []}
    for split, docs in streams.items():
        w = packing.WorkWriter(work, split, 0, np.uint16)
        for toks, doc_id in docs:
            w.write(np.array(toks), [doc_id], np.array([len(toks)]))
        w.close()
    w = packing.WorkWriter(work, "train", 1, np.uint16)
    w.write(np.array([9, 9, 9, 2, 4, 2]), ["d2", "d3"], np.array([4, 2]))
    w.close()
    for split in ("validation", "test"):
        packing.WorkWriter(work, split, 1, np.uint16).close()
    index = packing.write_token_dataset(work, 2, tmp_path / "tokens", seq_len=3, dtype=np.dtype(np.uint16), fingerprint="f" * 64, index_extra={})
    dd = datasets.load_from_disk(str(tmp_path / "tokens"))
    rows = dd["train"].to_list()
    assert [r["input_ids"] for r in rows] == [[5, 6, 7], [2, 8, 2], [9, 9, 9], [2, 4, 2]]
    assert [r["doc_ids"] for r in rows] == [["d0"], ["d0", "d1"], ["d2"], ["d2", "d3"]]
    assert [r["doc_starts"] for r in rows] == [[0], [0, 1], [0], [0, 1]]
    assert dd["validation"].num_rows == 0 and index["splits"]["validation"]["sequences"] == 0
    assert [list(r) for r in packing.iter_split_tokens(tmp_path / "tokens", "train")] == [r["input_ids"] for r in rows]


def test_training_warns_when_the_sample_needs_more_memory_than_there_is(tmp_path, cache_env, monkeypatch):
    import stages.tokenize as stage

    write_inputs(tmp_path / "in", [{"id": f"d{i}", "text": "中文文本，用来训练分词器。" * 20} for i in range(30)])
    m = manifest(tmp_path)
    monkeypatch.setattr(stage, "_available_memory", lambda: 1000)
    console = Console(record=True, width=300)
    with LocalExecutor(workers=1, console=console) as ex:
        run_manifest(load_manifest(m), tmp_path / "out", ex, console, progress=False)
    log = console.export_text()
    assert "SentencePiece needs about" in log and "lower sample_bytes" in log
    monkeypatch.setattr(stage, "_available_memory", lambda: 10**12)
    console = Console(record=True, width=300)
    with LocalExecutor(workers=1, console=console) as ex:
        run_manifest(load_manifest(m), tmp_path / "out2", ex, console, progress=False)
    assert "SentencePiece needs about" not in console.export_text()
