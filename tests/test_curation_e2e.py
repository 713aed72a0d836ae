"""The whole wiki-zh manifest on a zhwiki-shaped mirror with English and Japanese pages,
Traditional-script copies and near-duplicate copies: the curation stages must remove exactly
those, keep every original article, and account for every removal in the ledger."""

from __future__ import annotations

import json

import datasets
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, SHARED, run_cli
from tests.support.mirror import MirrorServer
from tests.support.wikidump import build_curation_pages, build_mirror, build_pages

MANIFEST = REPO / "manifests" / "wiki-zh.yaml"


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    pages, expected = build_pages(SHARED / "corpora" / "zhwiki-articles")
    pages, roles = build_curation_pages(pages, expected, SHARED if SHARED.is_dir() else None)
    root = tmp_path_factory.mktemp("curation")
    build_mirror(root / "mirror", pages)
    out = root / "out"
    with MirrorServer(root / "mirror") as server:
        proc = run_cli("run", str(MANIFEST), "--out", str(out), "--no-progress", "--set", f"sources.zhwiki.mirror={server.url}", env={"GRIST_CACHE": str(root / "cache")}, timeout=900)
    assert proc.returncode == 0, proc.stderr
    ledger = {}
    for node_dir in (out / "stages").iterdir():
        if (node_dir / "removed").is_dir():
            for row in pq.read_table(node_dir / "removed").to_pylist():
                ledger[row["id"]] = row
    return out, pages, expected, roles, ledger


def test_foreign_pages_removed_by_language(curated):
    out, _, _, roles, ledger = curated
    kept = set(datasets.load_from_disk(str(out / "data"))["id"])
    for page_id, lang in roles["foreign"].items():
        doc = f"zhwiki/{page_id}"
        assert doc not in kept
        assert ledger[doc]["reason"].startswith("lang:") and ledger[doc]["node"] == "lang", ledger[doc]["reason"]


def test_each_copy_collapses_with_its_original(curated):
    out, _, _, roles, ledger = curated
    kept = set(datasets.load_from_disk(str(out / "data"))["id"])
    for kind in ("traditional", "near_dup"):
        for orig, copy in roles[kind]:
            a, b = f"zhwiki/{orig}", f"zhwiki/{copy}"
            assert (a in kept) != (b in kept), f"{kind}: exactly one of {a}, {b} kept"
            dropped = b if a in kept else a
            assert ledger[dropped]["node"] == "dedup" and "dup of" in ledger[dropped]["reason"], ledger[dropped]


def test_no_original_article_lost(curated):
    out, _, expected, _, ledger = curated
    kept = set(datasets.load_from_disk(str(out / "data"))["id"])
    lost = [e["title"] for e in expected if f"zhwiki/{e['page_id']}" not in kept]
    assert not lost, {t: ledger.get(f"zhwiki/{e['page_id']}", {}).get("reason") for e in expected for t in lost if t == e["title"]}


def test_every_node_accounts_for_every_document(curated):
    out, pages, _, _, _ = curated
    order = ["zhwiki", "extract", "clean", "lang", "quality", "dedup"]
    previous_out = None
    for node in order:
        stats = json.loads((out / "stages" / node / "stats.json").read_text())
        assert stats["in"] == stats["out"] + stats["removed"]
        ledger_rows = pq.read_table(out / "stages" / node / "removed").num_rows
        assert ledger_rows == stats["removed"]
        if previous_out is not None:
            assert stats["in"] == previous_out
        previous_out = stats["out"]
    assert json.loads((out / "stages" / "zhwiki" / "stats.json").read_text())["out"] == len(pages)
    data = datasets.load_from_disk(str(out / "data"))
    assert data.num_rows == previous_out
    assert {"lang", "lang_score", "dup_cluster_id", "dup_cluster_size"} <= set(data.column_names)


def test_output_is_simplified_chinese(curated):
    import opencc

    out, *_ = curated
    t2s = opencc.OpenCC("t2s.json")
    data = datasets.load_from_disk(str(out / "data"))
    converted = sum(t2s.convert(t) != t for t in data["text"])
    assert converted / data.num_rows < 0.05
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["nodes"]["clean"]["provenance"]["opencc"]["config"] == "t2s"
    assert prov["nodes"]["lang"]["provenance"]


# ---- issue 4: tokenizer and token shards from the same run ---------------------------------


def test_token_shards_round_trip_to_the_curated_documents(curated):
    import numpy as np
    import sentencepiece as spm

    out, *_ = curated
    docs = {r["id"]: r["text"] for r in datasets.load_from_disk(str(out / "data"))}
    tokens = datasets.load_from_disk(str(out / "tokens"))
    assert set(tokens.keys()) == {"train", "validation", "test"} and tokens["validation"].num_rows > 0
    index = json.loads((out / "tokens" / "index.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "tokenizer.model"))
    eos = sp.eos_id()
    seen: dict[str, str] = {}
    for split in ("train", "validation", "test"):
        ds = tokens[split]
        assert ds.features["input_ids"].feature.dtype == "uint16"
        ids = np.concatenate([np.asarray(r, dtype=np.int64) for r in ds["input_ids"]])
        assert index["splits"][split]["tokens"] == ids.size and index["splits"][split]["sequences"] == ds.num_rows
        assert index["documents"][split] == len({d for r in ds["doc_ids"] for d in r})
        rows = [len(r) for r in ds["input_ids"]]
        assert all(n == index["seq_len"] for n in rows[:-1])
        doc_order = [d for r in ds["doc_ids"] for d in r]
        doc_order = list(dict.fromkeys(doc_order))
        cuts = np.flatnonzero(ids == eos)
        pieces = np.split(ids, cuts + 1)[: len(cuts)]
        assert len(pieces) == len(doc_order)
        for doc_id, piece in zip(doc_order, pieces):
            assert doc_id not in seen, f"{doc_id} in two splits"
            seen[doc_id] = split
            assert sp.decode(piece[:-1].tolist()) == docs[doc_id]
    assert set(seen) == set(docs)


def test_autotokenizer_agrees_with_sentencepiece(curated):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    out, *_ = curated
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "tokenizer.model"))
    hf = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    for text in datasets.load_from_disk(str(out / "data"))["text"]:
        assert hf(text, add_special_tokens=False)["input_ids"] == sp.encode(text)
