"""``pipeline ablate``: variants of one manifest curated with shared nodes, one tokenizer, the same
training budget and seeds, scored on the same held-out text; ablation.json and the report page;
a failing variant keeps the others; a malformed --variant is a usage error.

One real ablation (CLI, subprocess) on a small synthetic English corpus whose documents vary in
length, so quality thresholds change what each variant keeps; tiny preset, 1,024 tokens."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pipeline.ablate.spec import VariantSpecError, parse_variant, parse_variants, split_overrides
from tests.conftest import run_cli

WORDS = ("cat dog bird fish horse farmer teacher river mountain city garden house child doctor king queen sees finds likes follows helps "
         "watches carries builds paints visits small big red green old young quiet loud happy bright dark market bridge road").split()
STOP = "the and to of that have with".split()


def write_corpus(path: Path, n: int, seed: int) -> None:
    """Documents of 2..20 sentences of random words: no repetition for the quality rules to catch,
    lengths spread so that min_words thresholds keep different documents."""
    rng = random.Random(seed)
    rows = []
    for d in range(n):
        sentences = []
        for _ in range(rng.randint(2, 20)):
            words = [rng.choice(WORDS if rng.random() < 0.7 else STOP) for _ in range(rng.randint(5, 9))]
            sentences.append(" ".join(words).capitalize() + ".")
        rows.append(json.dumps({"id": f"d{seed}-{d}", "text": " ".join(sentences)}) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(rows), encoding="utf-8")


MANIFEST = """name: abl
sources:
  - {name: docs, kind: local, paths: ['in/*.jsonl'], license: CC0-1.0, id_field: id}
stages:
  - {name: quality, stage: quality_filter, inputs: [docs], params: {preset: gopher, signals: rules, overrides: {min_words: 20}}}
  - {name: tok, stage: tokenize, inputs: [quality], params: {vocab_size: 400, seq_len: 64, validation_fraction: 0.1, hf_check_documents: 5}}
output: quality
"""

ANIMALS = "cat dog bird fish horse cow sheep goat mouse lion".split()
PLACES = "river mountain city garden house market bridge road village forest".split()
PROBE = """name: probe
sources:
  - {name: labeled, kind: local, paths: [labeled.jsonl], id_field: id, task: classification, label_field: label, license: CC0-1.0}
stages:
  - {name: ft, stage: finetune_data, inputs: [labeled], params: {task: classification, max_len: 32, test_fraction: 0.25, validation_fraction: 0.1}}
finetune: {epochs: 2, batch_size: 16, lr: 0.003}
"""


def write_probe(root: Path, n: int = 120) -> None:
    """Two labels told apart by their words: animals or places."""
    rng = random.Random(3)
    rows = []
    for d in range(n):
        label = "animal" if d % 2 else "place"
        words = [rng.choice(ANIMALS if label == "animal" else PLACES) for _ in range(rng.randint(4, 10))]
        rows.append(json.dumps({"id": f"p{d}", "text": "the " + " and the ".join(words), "label": label}) + "\n")
    (root / "labeled.jsonl").write_text("".join(rows), encoding="utf-8")
    (root / "probe.yaml").write_text(PROBE, encoding="utf-8")


VARIANTS = [
    "base",
    "loose:stages.quality.params.overrides={min_words: 5, max_top_2gram_frac: null, max_top_3gram_frac: null, max_top_4gram_frac: null}",  # a comma inside braces stays in the value
    "strict<&>:stages.quality.params.overrides.min_words=60,description=strict\\, longer",  # two overrides, an escaped comma
    "same:description=only the description",  # changes no fingerprint but the tokenize node's
    "broken:stages.nope.params.x=1",
]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    write_corpus(root / "in" / "docs.jsonl", 300, 1)
    write_corpus(root / "heldout.jsonl", 30, 2)
    (root / "m.yaml").write_text(MANIFEST, encoding="utf-8")
    write_probe(root)
    args = ["ablate", str(root / "m.yaml"), *(a for v in VARIANTS for a in ("--variant", v)), "--preset", "tiny", "--max-tokens", "1024", "--seeds", "2",
            "--eval-data", str(root / "heldout.jsonl"), "--eval-tokens", "2048", "--device", "cpu", "--workers", "1", "--no-progress", "--out", str(root / "abl"),
            "--set", "stages.tok.params.hf_check_documents=4", "--probe", str(root / "probe.yaml")]
    proc = run_cli(*args, env={"OMP_NUM_THREADS": "1", "GRIST_CACHE": str(root / "cache")}, timeout=240)
    doc = json.loads((root / "abl" / "ablation.json").read_text(encoding="utf-8"))
    return {"root": root, "out": root / "abl", "proc": proc, "doc": doc, "by": {e["name"]: e for e in doc["variants"]}}


def test_failing_variant_is_named_and_the_others_are_kept(ablation):
    proc, by = ablation["proc"], ablation["by"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert by["broken"]["status"] == "failed" and by["broken"]["error"]["phase"] == "curation"
    assert "nope" in by["broken"]["error"]["message"] and "variant broken failed" in proc.stderr
    assert ablation["doc"]["failed"] == ["broken"]
    assert [by[n]["status"] for n in ("base", "loose", "strict<&>", "same")] == ["ok"] * 4
    assert "wall" in proc.stderr and "variant loose: ok; wall" in proc.stderr  # wall time per variant on the console


def test_overrides_change_curation(ablation):
    by = ablation["by"]
    docs = {n: by[n]["curation"]["documents_out"] for n in ("base", "loose", "strict<&>", "same")}
    assert docs["loose"] > docs["base"] > docs["strict<&>"] > 0 and docs["same"] == docs["base"]
    assert by["strict<&>"]["overrides"] == ["stages.quality.params.overrides.min_words=60", "description=strict, longer"]
    assert by["strict<&>"]["dir"] == "strict___"


def test_shared_nodes_are_not_recomputed(ablation):
    out, by = ablation["out"], ablation["by"]
    # the source node is computed once (by base, first) and linked into every other variant
    assert "docs" in by["base"]["curation"]["nodes_run"]
    for name in ("loose", "strict<&>", "same"):
        cur = by[name]["curation"]
        assert "docs" in cur["nodes_from_cache"] and "docs" not in cur["nodes_run"]
    # a variant whose curation fingerprints are the base's reuses the quality node too
    assert "quality" in by["same"]["curation"]["nodes_from_cache"] and by["same"]["curation"]["nodes_run"] == ["tok"]
    part = "stages/docs/part-00000.parquet"
    inodes = {(out / "variants" / by[n]["dir"] / part).stat().st_ino for n in ("base", "loose", "same")}
    assert len(inodes) == 1  # hard links of one file
    assert len(list((out / "nodes").iterdir())) >= 5


def test_one_shared_tokenizer(ablation):
    out, doc, by = ablation["out"], ablation["doc"], ablation["by"]
    sha = doc["tokenizer"]["sha256"]
    assert doc["tokenizer"]["trained_on"] == "base"
    assert json.loads((out / "tokenizer" / "grist_tokenizer.json").read_text())["sha256"] == sha
    for name in ("base", "loose", "strict<&>", "same"):
        index = json.loads((out / "variants" / by[name]["dir"] / "tokens" / "index.json").read_text())
        assert index["tokenizer"]["sha256"] == sha == by[name]["curation"]["tokenizer_sha256"]


def test_ablation_json_structure(ablation):
    doc, by = ablation["doc"], ablation["by"]
    assert [e["name"] for e in doc["variants"]] == ["base", "loose", "strict<&>", "same", "broken"]  # the order given
    assert doc["seeds"] == [0, 1] and doc["preset"] == "tiny" and doc["max_tokens"] == 1024
    assert doc["base_overrides"] == ["stages.tok.params.hf_check_documents=4"]  # --set: every variant
    assert "hf_check_documents: 4" in (ablation["out"] / "variants" / "strict___" / "manifest.lock.yaml").read_text()
    assert [s["name"] for s in doc["eval_sets"]] == ["heldout"] and doc["eval_sets"][0]["documents"] == 30
    for name in ("base", "loose", "strict<&>", "same"):
        e = by[name]
        assert e["tokens_trained"] == 1024 and [s["seed"] for s in e["seeds"]] == [0, 1]
        for s in e["seeds"]:
            assert s["tokens"] == 1024 and 0 < s["eval"]["heldout"]["loss"] < 10 and s["eval"]["heldout"]["tokens"] > 0
        agg = e["eval"]["heldout"]
        assert agg["n"] == 2 and agg["loss_std"] is not None and agg["loss_min"] <= agg["loss_mean"] <= agg["loss_max"]
        assert all(e["wall_s"][k] is not None for k in ("curation", "training", "evaluation", "total"))
        assert e["curation"]["tokens"]["train"] > 0 and e["curation"]["funnel"][0]["node"] == "docs"
    # another seed, another model
    s0, s1 = (s["eval"]["heldout"]["loss"] for s in by["base"]["seeds"])
    assert s0 != s1
    assert by["base"]["delta_vs_base"]["heldout"] == 0.0


def test_fine_tuning_probe(ablation):
    doc, by = ablation["doc"], ablation["by"]
    assert doc["probe"]["labels"] == ["animal", "place"] and doc["probe"]["settings"] == {"epochs": 2, "batch_size": 16, "lr": 0.003}
    index = json.loads((ablation["out"] / "probe" / "finetune" / "index.json").read_text())
    assert index["tokenizer"]["sha256"] == doc["tokenizer"]["sha256"]  # the probe's examples use the shared tokenizer
    for name in ("base", "loose", "strict<&>", "same"):
        e = by[name]
        assert all(0 <= s["probe"]["accuracy"] <= 1 and s["probe"]["test_examples"] > 0 for s in e["seeds"])
        assert e["probe"]["n"] == 2 and 0 <= e["probe"]["macro_f1_mean"] <= 1
        assert (ablation["out"] / "train" / e["dir"] / "seed-0" / "probe" / "finetune" / "metrics.json").is_file()


def test_report_page(ablation):
    page = (ablation["out"] / "report" / "index.html").read_text(encoding="utf-8")
    assert "strict&lt;&amp;&gt;" in page and "strict<&>" not in page
    assert 'data-variant="broken"' in page and "nope" in page
    assert 'data-plot="line"' in page and "training loss per seed" in page
    assert "probe macro-F1" in page and 'id="probe"' in page
    assert "<script" not in page


def test_rerun_reuses_everything(ablation, tmp_path):
    """The same command again: every node comes from the variant folders, every model is reused."""
    root = ablation["root"]
    args = ["ablate", str(root / "m.yaml"), "--variant", "base", "--variant", VARIANTS[1], "--preset", "tiny", "--max-tokens", "1024", "--seeds", "2",
            "--eval-data", str(root / "heldout.jsonl"), "--eval-tokens", "2048", "--device", "cpu", "--workers", "1", "--no-progress", "--out", str(ablation["out"]),
            "--set", "stages.tok.params.hf_check_documents=4", "--probe", str(root / "probe.yaml")]
    proc = run_cli(*args, env={"OMP_NUM_THREADS": "1", "GRIST_CACHE": str(root / "cache")}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((ablation["out"] / "ablation.json").read_text())
    for e in doc["variants"]:
        assert e["curation"]["nodes_run"] == [] and all(s["reused"] and s["probe"]["reused"] for s in e["seeds"])
        assert e["eval"]["heldout"]["loss_mean"] == pytest.approx(ablation["by"][e["name"]]["eval"]["heldout"]["loss_mean"], rel=1e-6)


# ------------------------------------------------------------------------------------ specs
def test_variant_specs():
    assert parse_variant("base").overrides == [] and parse_variant("base:").is_base
    assert split_overrides("a=[1,2],b={x: 1, y: 2},c='p, q',d=e\\,f") == ["a=[1,2]", "b={x: 1, y: 2}", "c='p, q'", "d=e,f"]
    vs = parse_variants(["a b:x=1", "a?b:x=2"])
    assert [v.dir for v in vs] == ["a_b", "a_b-2"]
    for bad in (":x=1", "v:x", "v:=1", "v:x=1,,y=2", "v:a..b=1"):
        with pytest.raises(VariantSpecError):
            parse_variant(bad)
    with pytest.raises(VariantSpecError, match="given twice"):
        parse_variants(["a", "a:x=1"])


@pytest.mark.parametrize("spec", ["v:nokey", ":x=1"])
def test_malformed_variant_is_a_usage_error(tmp_path, spec):
    (tmp_path / "m.yaml").write_text(MANIFEST, encoding="utf-8")
    proc = run_cli("ablate", str(tmp_path / "m.yaml"), "--variant", "base", "--variant", spec, "--max-tokens", "10", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and spec in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_missing_eval_set_is_named(tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST, encoding="utf-8")
    proc = run_cli("ablate", str(tmp_path / "m.yaml"), "--variant", "base", "--max-tokens", "10", "--eval-data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "eval set 'nope.jsonl' does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_sets(ablation, tmp_path):
    """Token shards (hash checked) and text files (encoded with the shared tokenizer) as eval sets."""
    from pipeline.ablate.evalsets import load_eval_sets, score
    from pipeline.ablate.spec import AblateError

    out, doc = ablation["out"], ablation["doc"]
    index = json.loads((out / "variants" / "loose" / "tokens" / "index.json").read_text())
    (tmp_path / "ref.txt").write_text("The cat sees the dog.\n\nThe king builds a bridge near the river.\n", encoding="utf-8")
    sets = load_eval_sets([out / "variants" / "loose", tmp_path / "ref.txt"], out / "tokenizer", doc["tokenizer"]["sha256"], index["eos_id"], index.get("bos_id"))
    assert [(s.name, s.kind, s.documents) for s in sets] == [("loose", "tokens", index["documents"]["validation"]), ("ref", "text", 2)]
    scores = score(out / "train" / "base" / "seed-0", sets, eval_tokens=512, batch_size=2, device="cpu")
    assert scores["loose"]["loss"] > 0 and "error" in scores["ref"]  # two short lines: less than one window of 64
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.json").write_text(json.dumps({**index, "tokenizer": {**index["tokenizer"], "sha256": "0" * 64}}), encoding="utf-8")
    with pytest.raises(AblateError, match="eval set 'other': its tokens were made with another tokenizer"):
        load_eval_sets([other], out / "tokenizer", doc["tokenizer"]["sha256"], index["eos_id"], None)
    (tmp_path / "notext.jsonl").write_text('{"text": "a document"}\n{"title": "no text"}\n', encoding="utf-8")
    with pytest.raises(AblateError, match="eval set 'notext': a record has no 'text' text field") as err:  # not a score over part of the file
        load_eval_sets([tmp_path / "notext.jsonl"], out / "tokenizer", doc["tokenizer"]["sha256"], index["eos_id"], None)
    assert "line 2" in err.value.where
    (tmp_path / "empty.jsonl").write_text('{"text": "  "}\n', encoding="utf-8")
    with pytest.raises(AblateError, match="eval set 'empty' has no documents"):
        load_eval_sets([tmp_path / "empty.jsonl"], out / "tokenizer", doc["tokenizer"]["sha256"], index["eos_id"], None)
