"""Dataset cards, attribution, lineage and Croissant for a run's output (pipeline.audit.cards,
pipeline.audit.attribution, pipeline.audit.lineage, pipeline.audit.croissant), on two real runs: local jsonl
sources (one under an overridden LicenseRef license, awkward titles, duplicates, a tokenize
stage) and a zhwiki-shaped mirror run through the wiki-zh manifest."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import re
import warnings
from pathlib import Path
from urllib.parse import unquote

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from pipeline.audit import attribution, cards, lineage
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from tests.conftest import REPO, SHARED

DATASHEET = ["Motivation", "Composition", "Collection process", "Preprocessing", "Uses", "Distribution", "Maintenance"]
JUSTIFICATION = "ACME Corp granted redistribution for any use in writing on 2024-03-01 (ticket ACME-1234); terms at https://acme.example/terms"
TRICKY_TITLES = ["a*b_c [d](javascript:alert(1))", "<script>alert('x')</script>", "pipe | in # title", "back`tick\\slash", "x](https://evil.example/) [y", "_under_ **bold**"]
WORDS = "the of and to in is was for on as with by at from his her an were which this that are be has had not but".split() + [
    "river", "mountain", "history", "city", "music", "science", "village", "language", "school", "church", "station", "forest",
]

LOCAL_MANIFEST = """
name: cards-test
description: Wiki-like and ACME documents for the card tests.
intended_use: commercial
sources:
  - name: wiki
    kind: local
    paths: ["wiki/*.jsonl"]
    license: CC-BY-SA-4.0
    license_url: https://creativecommons.org/licenses/by-sa/4.0/
    attribution: Example wiki contributors (wiki.example.org)
    homepage: https://wiki.example.org/
    languages: [en]
    id_field: id
    title_field: title
    url_field: url
  - name: acme
    kind: local
    paths: ["acme/*.jsonl"]
    license: LicenseRef-acme-corpus
    license_url: https://acme.example/terms
    license_override: {use: commercial, justification: "%s"}
    attribution: ACME Corp
    languages: [en]
    id_field: id
stages:
  - {name: merged, stage: concat, inputs: [wiki, acme]}
  - {name: dedup, stage: dedup, inputs: [merged], params: {exact: true, near: false}}
  - {name: tok, stage: tokenize, inputs: [dedup], params: {vocab_size: 300, seq_len: 64, validation_fraction: 0.2}}
output: dedup
""" % JUSTIFICATION


def _sentence(i: int, k: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 3 + k) % len(WORDS)] for j in range(12)) + "."


def _run(manifest: Path, out: Path):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(manifest), out, ex, console, progress=False)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards-local")
    (root / "wiki").mkdir()
    (root / "acme").mkdir()
    wiki = []
    for i in range(24):
        title = TRICKY_TITLES[i] if i < len(TRICKY_TITLES) else f"Article {i}"
        wiki.append({"id": str(i), "title": title, "url": f"https://wiki.example.org/wiki/Article_({i})", "text": " ".join(_sentence(i, k) for k in range(6))})
    wiki.append({**wiki[5], "id": "dup-of-5", "url": "https://wiki.example.org/wiki/Copy_5"})  # exact duplicate: dedup removes it
    wiki.append({"id": "no-text", "title": "Empty"})  # no text: the source's ledger
    (root / "wiki" / "part0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in wiki), encoding="utf-8")
    acme = [{"id": f"a{i}", "text": " ".join(_sentence(i + 100, k) for k in range(4))} for i in range(8)]
    (root / "acme" / "part0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in acme), encoding="utf-8")
    (root / "m.yaml").write_text(LOCAL_MANIFEST, encoding="utf-8")
    out = root / "out"
    monkey = pytest.MonkeyPatch()
    monkey.setenv("GRIST_CACHE", str(root / "cache"))
    try:
        _run(root / "m.yaml", out)
    finally:
        monkey.undo()
    return out


@pytest.fixture(scope="module")
def wiki_run(tmp_path_factory):
    """wiki-zh without its tokenize stage, on the first 60 pages of a zhwiki-shaped mirror."""
    from tests.support.mirror import MirrorServer
    from tests.support.wikidump import build_mirror, build_pages

    root = tmp_path_factory.mktemp("cards-wiki")
    pages, _ = build_pages(SHARED / "corpora" / "zhwiki-articles")
    build_mirror(root / "mirror", pages)
    raw = yaml.safe_load((REPO / "manifests" / "wiki-zh.yaml").read_text(encoding="utf-8"))
    raw["stages"] = [s for s in raw["stages"] if s["stage"] != "tokenize"]
    raw["sources"][0]["max_pages"] = 60
    out = root / "out"
    monkey = pytest.MonkeyPatch()
    monkey.setenv("GRIST_CACHE", str(root / "cache"))
    try:
        with MirrorServer(root / "mirror") as server:
            raw["sources"][0]["mirror"] = server.url
            (root / "wiki-zh.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
            _run(root / "wiki-zh.yaml", out)
    finally:
        monkey.undo()
    return out


def front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def sections(path: Path) -> dict[str, str]:
    body = path.read_text(encoding="utf-8").split("---\n", 2)[2]
    parts = re.split(r"^## (.+)$", body, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def ledger(out: Path) -> list[dict]:
    rows = []
    for part in sorted((out / "stages").glob("*/removed/part-*.parquet")):
        rows += pq.read_table(part, columns=["id", "source", "node", "reason"]).to_pylist()
    return rows


# ------------------------------------------------------------------------------ the HF card
@pytest.mark.parametrize("run_name", ["local_run", "wiki_run"])
def test_card_metadata_parses_and_matches_the_data(run_name, request, caplog):
    import logging

    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    out = request.getfixturevalue(run_name)
    caplog.clear()
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="huggingface_hub"):
        warnings.simplefilter("error")  # huggingface_hub warns (or logs) on metadata it cannot parse
        card = DatasetCard.load(out / "README.md")
        DatasetCardData(**front_matter(out / "README.md"))
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]
    meta = card.data.to_dict()
    ds = datasets.load_from_disk(str(out / "data"))
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos["default"].splits["train"].num_examples == ds.num_rows
    assert infos["default"].splits["train"].num_bytes == sum(p.stat().st_size for p in lineage.data_shards(out))
    assert infos["default"].features == ds.features
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs["default"]["data_files"] == [{"split": "train", "path": "data/data-*-of-*.arrow"}]
    assert meta["size_categories"] == [cards.size_category(ds.num_rows)] and ds.num_rows < 1000 and meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"] and meta["source_datasets"] == ["original"]
    assert meta["pretty_name"] == yaml.safe_load((out / "manifest.lock.yaml").read_text())["name"]
    if run_name == "wiki_run":
        assert meta["license"] == "cc-by-sa-4.0" and meta["language"] == ["zh"] and meta["language_creators"] == ["crowdsourced"]
    else:  # share-alike makes the whole output CC BY-SA; the overridden LicenseRef source has no Hub id
        assert meta["license"] == "cc-by-sa-4.0" and meta["language"] == ["en"]
        acme = DatasetCard.load(out / "cards" / "acme.md").data.to_dict()
        assert (acme["license"], acme["license_name"], acme["license_link"]) == ("other", "licenseref-acme-corpus", "https://acme.example/terms")
        assert {c["config_name"] for c in meta["configs"]} == {"default", "tokens"}


def test_hub_loader_reads_the_data_through_the_card_configs(local_run, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    ds = datasets.load_dataset(str(local_run), "default", split="train", cache_dir=str(tmp_path / "hf"))
    assert ds["id"] == datasets.load_from_disk(str(local_run / "data"))["id"]
    tokens = datasets.load_dataset(str(local_run), "tokens", cache_dir=str(tmp_path / "hf"))
    ref = datasets.load_from_disk(str(local_run / "tokens"))
    assert {s: tokens[s].num_rows for s in tokens} == {s: ref[s].num_rows for s in ref if ref[s].num_rows}


@pytest.mark.parametrize("run_name", ["local_run", "wiki_run"])
def test_datasheet_sections_hold_measured_facts(run_name, request):
    out = request.getfixturevalue(run_name)
    got = sections(out / "README.md")
    for name in DATASHEET:
        assert got.get(name), f"section {name!r} missing or empty"
    ds = datasets.load_from_disk(str(out / "data"))
    chars = sum(len(t) for t in ds["text"])
    assert f"{ds.num_rows:,} rows" in got["Composition"] and f"{chars:,}" in (out / "README.md").read_text()
    lengths = sorted(len(t) for t in ds["text"])
    assert f"min {lengths[0]:,}" in got["Composition"] and f"max {lengths[-1]:,}" in got["Composition"]
    for node in lineage.load_run(out).chain:
        stats = json.loads((out / "stages" / node / "stats.json").read_text())
        assert re.search(rf"\| `{node}` \| `[^`]+` \| {stats['in']:,} \| {stats['out']:,} \| {stats['removed']:,} \|", got["Preprocessing"]), node
    lic = json.loads((out / "licenses.json").read_text())
    assert f"`{lic['output_license']}`" in got["Distribution"]
    for obligation in lic["obligations"]:
        assert html.escape(obligation.split(":")[0]) in got["Uses"]
    if run_name == "wiki_run":
        lock = yaml.safe_load((out / "manifest.lock.yaml").read_text())
        ident = lock["sources"][0]["resolved"]["identity"]
        assert ident["date"] in got["Collection process"] and "sample: only the first 60 pages" in got["Uses"]
        assert "OpenCC t2s" in got["Preprocessing"] and "not redacted" in got["Composition"]


def test_override_justification_is_on_the_cards(local_run):
    readme = sections(local_run / "README.md")
    assert JUSTIFICATION.split(";")[0] in readme["Distribution"] and "`LicenseRef-acme-corpus`" in readme["Distribution"]
    assert JUSTIFICATION.split(";")[0] in (local_run / "cards" / "acme.md").read_text()
    assert JUSTIFICATION.split(";")[0] in (local_run / "ATTRIBUTION.md").read_text()


# ---------------------------------------------------------------------------- source cards
@pytest.mark.parametrize("run_name", ["local_run", "wiki_run"])
def test_source_cards_account_for_every_document(run_name, request):
    from huggingface_hub import DatasetCard

    out = request.getfixturevalue(run_name)
    ds = datasets.load_from_disk(str(out / "data"))
    removed = ledger(out)
    for src in yaml.safe_load((out / "manifest.lock.yaml").read_text())["sources"]:
        path = out / "cards" / f"{src['name']}.md"
        card = DatasetCard.load(path)
        text = path.read_text()
        kept = sum(1 for s in ds["source"] if s == src["name"])
        read = json.loads((out / "stages" / src["name"] / "stats.json").read_text())["in"]
        gone = [r for r in removed if r["source"] == src["name"] and r["node"] != "tok"]
        assert read == kept + len(gone)
        assert f"**Kept in `data/`**: {kept:,}" in text and f"**Read**: {read:,}" in text and "(read = kept + removed)" in text
        assert card.data.to_dict()["size_categories"] == ["n<1K"]
        for row in gone:
            reason = re.sub(r" of \S+$", "", row["reason"])
            assert f"{row['node']}: {reason}" in text
    if run_name == "wiki_run":
        text = (out / "cards" / "zhwiki.md").read_text()
        lock = yaml.safe_load((out / "manifest.lock.yaml").read_text())
        ident = lock["sources"][0]["resolved"]["identity"]
        assert ident["xml"]["md5"] in text and ident["xml"]["sha1"] in text and ident["date"] in text
        prov = json.loads((out / "provenance.json").read_text())
        download = prov["sources"]["zhwiki"]["downloads"][0]
        assert download["retrieved_at"] in text and download["checksums"]["sha256"] in text


def test_urls_in_cards_lose_credentials():
    assert "secret" not in cards._text("https://user:secret@mirror.example/x?token=secret")
    assert cards._text("https://mirror.example/dump.xml") == "https://mirror.example/dump.xml"


# ---------------------------------------------------------------------------- attribution
def _links(md: str) -> list[tuple[str, str]]:
    return re.findall(r"^- \[(.*)\]\((\S+)\)$", md, flags=re.MULTILINE)


def test_attribution_lists_exactly_the_remaining_wiki_articles(wiki_run):
    ds = datasets.load_from_disk(str(wiki_run / "data"))
    md = (wiki_run / "ATTRIBUTION.md").read_text()
    links = _links(md)
    assert [unquote(u) for _, u in links] == ds["url"]
    assert [html.unescape(t).replace("\\", "") for t, _ in links] == ds["title"]
    removed_titles = {r["id"] for r in ledger(wiki_run)}
    assert removed_titles and not removed_titles & set(ds["id"])
    assert "CC-BY-SA-4.0" in md and "https://creativecommons.org/licenses/by-sa/4.0/" in md
    assert "**Modified**: yes" in md and "wikitext converted to plain text" in md and "OpenCC t2s" in md
    with gzip.open(wiki_run / attribution.URLS_FILE, "rt", encoding="utf-8") as fh:
        rows = [line.rstrip("\n").split("\t") for line in fh]
    assert rows[0] == ["source", "id", "title", "url"] and [r[3] for r in rows[1:]] == ds["url"]


def test_attribution_moves_long_lists_to_the_tsv(local_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(local_run, out, symlinks=True)
    attribution.write_attribution(out, inline_limit=3)
    md = (out / "ATTRIBUTION.md").read_text()
    assert not _links(md) and f"listed in `{attribution.URLS_FILE}`" in md
    with gzip.open(out / attribution.URLS_FILE, "rt", encoding="utf-8") as fh:
        urls = [line.split("\t")[3].strip() for line in fh][1:]
    ds = datasets.load_from_disk(str(out / "data"))
    assert urls == [u for s, u in zip(ds["source"], ds["url"]) if s == "wiki"]
    assert "https://wiki.example.org/wiki/Copy_5" not in urls  # the duplicate dedup removed


def test_titles_are_escaped_for_markdown_and_html(local_run):
    from markdown_it import MarkdownIt

    md = (local_run / "ATTRIBUTION.md").read_text()
    rendered = MarkdownIt().render(md)
    hrefs = re.findall(r'href="([^"]*)"', rendered)
    assert "<script>" not in rendered and not [h for h in hrefs if "javascript:" in h or "evil.example" in h]
    anchors = re.findall(r'<a href="([^"]*)">(.*?)</a>', rendered)
    wiki = [r for r in datasets.load_from_disk(str(local_run / "data")) if r["source"] == "wiki"]
    article_links = [(h, t) for h, t in anchors if "/wiki/Article" in h]
    assert len(article_links) == len(wiki)  # every title stays one link: no bracket broke out
    assert [html.unescape(t) for _, t in article_links] == [r["title"] for r in wiki]
    assert [unquote(html.unescape(h)) for h, _ in article_links] == [r["url"] for r in wiki]
    assert attribution.safe_url("javascript:alert(1)") is None and attribution.md_link("x", "javascript:alert(1)").startswith("x (")


# -------------------------------------------------------------------------------- croissant
@pytest.mark.parametrize("run_name", ["local_run", "wiki_run"])
def test_croissant_validates_and_pins_the_shards(run_name, request):
    pytest.importorskip("mlcroissant")
    from pipeline.audit import croissant

    out = request.getfixturevalue(run_name)
    warned = croissant.validate(out / "croissant.json")
    doc = json.loads((out / "croissant.json").read_text())
    if run_name == "wiki_run":
        assert warned == []
    else:  # local files carry no retrieval time, and no clock is read: no datePublished
        assert "datePublished" not in doc and len(warned) == 1 and "datePublished" in warned[0]
    objects = {d["contentUrl"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    shards = sorted(p.relative_to(out).as_posix() for p in lineage.data_shards(out))
    assert shards and set(shards) <= set(objects) and all(Path(s).match("data/data-*-of-*.arrow") for s in shards)
    for rel in shards:
        assert objects[rel]["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest()
    documents = next(r for r in doc["recordSet"] if r["@id"] == "documents")
    ds = datasets.load_from_disk(str(out / "data"))
    assert [f["name"] for f in documents["field"]] == ds.column_names
    types = {f["name"]: f["dataType"] for f in documents["field"]}
    assert types["text"] == "sc:Text" and types["dup_cluster_size"] == "sc:Integer"
    if run_name == "local_run":
        tok = next(r for r in doc["recordSet"] if r["@id"] == "tokens-train")
        doc_ids = next(f for f in tok["field"] if f["name"] == "doc_ids")
        assert doc_ids["repeated"] is True and doc_ids["references"] == {"field": {"@id": "documents/id"}}
    else:
        assert doc["datePublished"][:4].isdigit() and doc["inLanguage"] == ["zh"]


def test_croissant_rejects_a_broken_file(tmp_path):
    pytest.importorskip("mlcroissant")
    from pipeline.audit import croissant

    bad = tmp_path / "croissant.json"
    bad.write_text(json.dumps({"@context": croissant.CONTEXT, "@type": "sc:Dataset", "conformsTo": croissant.CONFORMS_TO, "name": "x", "recordSet": [{"@type": "cr:RecordSet", "@id": "r", "field": [{"@type": "cr:Field", "@id": "r/a", "dataType": "sc:Text", "source": {"fileSet": {"@id": "missing"}, "extract": {"column": "a"}}}]}]}))
    with pytest.raises(croissant.CroissantError):
        croissant.validate(bad)


# ---------------------------------------------------------------------------------- lineage
def test_every_row_carries_source_and_license(local_run, wiki_run):
    for out in (local_run, wiki_run):
        lock = yaml.safe_load((out / "manifest.lock.yaml").read_text())
        declared = {s["name"]: s["license"] for s in lock["sources"]}
        for shard in lineage.data_shards(out):
            for batch in lineage.iter_batches(shard, ["source", "license"]):
                for src, lic in zip(batch.column("source").to_pylist(), batch.column("license").to_pylist()):
                    assert src in declared and lic == declared[src]


def test_token_rows_trace_back_to_documents(local_run):
    tokens = datasets.load_from_disk(str(local_run / "tokens"))
    docs = {r["id"]: r for r in datasets.load_from_disk(str(local_run / "data"))}
    for split in ("train", "validation"):
        n = tokens[split].num_rows
        for row in sorted({0, n // 2, n - 1}):
            traced = lineage.trace(local_run, split, row)
            rec = tokens[split][row]
            assert [d["id"] for d in traced] == rec["doc_ids"]
            assert traced[0]["token_start"] == 0 and traced[-1]["token_end"] == len(rec["input_ids"])
            assert all(a["token_end"] == b["token_start"] for a, b in zip(traced, traced[1:]))
            for d in traced:
                assert d["found_in"] == "data"
                assert {k: d[k] for k in lineage.DOC_FIELDS} == {k: docs[d["id"]][k] for k in lineage.DOC_FIELDS}
    with pytest.raises(lineage.OutputDirError):
        lineage.trace(local_run, "test", 0)


def test_trace_falls_back_to_the_tokenize_node(local_run, tmp_path):
    """Tokens made upstream of data/'s node hold documents data/ lacks: they are found in the
    tokenize node's parts; a document dropped everywhere is found in a ledger."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(local_run, out, symlinks=True)
    import pyarrow as pa
    import pyarrow.compute as pc

    shard = lineage.data_shards(out)[0]
    table = pa.Table.from_batches(list(lineage.iter_batches(lineage.data_shards(local_run)[0])))
    table = table.filter(pc.not_equal(table["id"], "wiki/7"))
    shard.unlink()  # a hard-linked copy: replace, never write through
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    tokens = datasets.load_from_disk(str(out / "tokens"))
    split, row = next((s, i) for s in tokens for i, r in enumerate(tokens[s]["doc_ids"]) if "wiki/7" in r)
    traced = {d["id"]: d for d in lineage.trace(out, split, row)}
    assert traced["wiki/7"]["found_in"] == "stages/tok" and traced["wiki/7"]["url"] == "https://wiki.example.org/wiki/Article_(7)"
    found = lineage._lookup(["wiki/dup-of-5"], lineage._candidate_tables(out, "tok"))
    assert found["wiki/dup-of-5"]["found_in"] == "ledger:dedup"


# ---------------------------------------------------------------------------- determinism, errors
def test_regenerating_from_out_alone_gives_the_same_bytes(local_run, tmp_path):
    import shutil

    names = ["README.md", "croissant.json", "ATTRIBUTION.md", attribution.URLS_FILE, "cards/wiki.md", "cards/acme.md"]
    before = {n: (local_run / n).read_bytes() for n in names}
    out = tmp_path / "moved"  # another place: nothing may depend on the original manifest or paths
    shutil.copytree(local_run, out, symlinks=True)
    for name in ("README.md", "ATTRIBUTION.md", "croissant.json"):
        (out / name).unlink()
    assert cards.write_cards(out)["written"] == ["ATTRIBUTION.md", "README.md", "cards/wiki.md", "cards/acme.md", "croissant.json"]
    assert {n: (out / n).read_bytes() for n in names} == before


def test_missing_output_is_a_clear_error(tmp_path):
    with pytest.raises(lineage.OutputDirError) as info:
        cards.write_cards(tmp_path)
    assert "data/" in str(info.value) and "pipeline run" in str(info.value)
    (tmp_path / "data").mkdir()
    with pytest.raises(lineage.OutputDirError) as info:
        attribution.write_attribution(tmp_path)
    assert "manifest.lock.yaml" in str(info.value)


def test_license_ids_for_the_hub():
    assert cards.hf_license("CC-BY-SA-4.0", []) == {"license": "cc-by-sa-4.0"}
    assert cards.hf_license("CC-BY-SA-3.0 OR GFDL-1.3-or-later", []) == {"license": ["cc-by-sa-3.0", "gfdl"]}
    assert cards.hf_license("Apache-2.0 AND CC0-1.0 AND ODC-By-1.0", []) == {"license": ["apache-2.0", "cc0-1.0", "odc-by"]}
    other = cards.hf_license("LicenseRef-acme AND MIT", [{"license_url": "https://acme.example/terms"}])
    assert other == {"license": "other", "license_name": "licenseref-acme-and-mit", "license_link": "https://acme.example/terms"}
    assert [cards.size_category(n) for n in (0, 999, 1000, 54_321, 2_000_000_000)] == ["n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1B<n<10B"]
