"""The static report: facts that reconcile with what the run wrote, HTML where document text is
always text, the `pipeline report` command, and the pages opened in headless Chromium."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED, run_cli

SCRIPT = "<script>alert(1)</script><img src=x onerror=alert(2)>"
TITLE_SCRIPT = "<script>alert(3)</script>"

WORDS = (
    "river city garden history music science winter market language village station library mountain ocean teacher "
    "student morning evening journey country summer forest bridge museum harbor castle painter writer farmer doctor "
    "engineer festival theatre island valley desert kingdom railway factory church temple school"
).split()
STOP = "the of and to in that with for is was on by as at from".split()
FRENCH = "Le chat dort sur le canapé pendant que la pluie tombe sur la ville. Nous avons mangé une tarte aux pommes et bu du café chaud avant de partir au marché du samedi matin. "


def _english(rng: random.Random, n: int) -> str:
    words: list[str] = []
    while len(words) < n:
        words += [rng.choice(WORDS) if rng.random() < 0.65 else rng.choice(STOP) for _ in range(rng.randint(8, 16))]
        words[-1] += "."
    return " ".join(words).capitalize()


def build_small_run(root: Path) -> Path:
    """A two-source English run (lid, quality, dedup, tokenize) with one document of each removal
    kind and a short document whose title and text hold markup. Returns the run's --out folder."""
    rng = random.Random(7)
    data = root / "data"
    data.mkdir(parents=True)
    a = [{"id": f"a{i:02d}", "title": f"Article {i}", "text": _english(rng, rng.randint(80, 300))} for i in range(30)]
    a.append({"id": "a-copy", "title": "Copy of Article 3", "text": a[3]["text"]})
    a.append({"id": "a-script", "title": TITLE_SCRIPT + "Scripted", "text": SCRIPT + " Too short to keep."})
    b = [{"id": f"b{i:02d}", "title": f"Note {i}", "text": _english(rng, rng.randint(60, 200))} for i in range(12)]
    b.append({"id": "b-fr", "title": "Français", "text": FRENCH * 3})
    (data / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a), encoding="utf-8")
    (data / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in b), encoding="utf-8")
    (root / "small.yaml").write_text(
        """name: small
description: two small English sources
sources:
  - {name: alpha, kind: local, paths: [data/a.jsonl], license: CC-BY-4.0, id_field: id, title_field: title, homepage: "https://example.org/alpha"}
  - {name: beta, kind: local, paths: [data/b.jsonl], license: CC0-1.0, id_field: id, title_field: title}
stages:
  - {name: lang, stage: lid_filter, params: {keep: [en], backend: langid}}
  - {name: quality, stage: quality_filter, params: {preset: gopher, language: en}}
  - {name: dedup, stage: dedup}
  - {name: tokenize, stage: tokenize, inputs: [dedup], params: {vocab_size: 300, seq_len: 64, validation_fraction: 0.2}}
output: dedup
""",
        encoding="utf-8",
    )
    out = root / "out"
    proc = run_cli("run", str(root / "small.yaml"), "--out", str(out), "--no-progress", "--workers", "1", env={"GRIST_CACHE": str(root / "cache")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return build_small_run(tmp_path_factory.mktemp("small"))


def _stats(out: Path, node: str) -> dict:
    return json.loads((out / "stages" / node / "stats.json").read_text(encoding="utf-8"))


def _data_rows(out: Path) -> int:
    import datasets

    return datasets.load_from_disk(str(out / "data")).num_rows


# ----------------------------------------------------------------------------- facts
def test_funnel_equals_stats_and_data_rows(small_run):
    from pipeline.audit.report.facts import gather

    facts = gather(small_run)
    scope = facts["scopes"]["output"]
    assert [r["node"] for r in scope["funnel"]] == ["alpha", "beta", "lang", "quality", "dedup", "tokenize"]
    for row in scope["funnel"]:
        st = _stats(small_run, row["node"])
        assert (row["docs_in"], row["docs_out"], row["docs_removed"]) == (st["in"], st["out"], st["removed"]), row
        assert row["consistent"]
        if "chars_out" in st:
            assert row["chars_out"] == st["chars_out"]
    out_row = next(r for r in scope["funnel"] if r["node"] == facts["output_node"])
    assert facts["output_node"] == "dedup"
    assert out_row["docs_out"] == facts["data"]["rows"] == scope["totals"]["documents"] == _data_rows(small_run)


def test_source_scopes_add_up_to_the_whole(small_run):
    from pipeline.audit.report.facts import gather

    facts = gather(small_run)
    whole = {r["node"]: r for r in facts["scopes"]["output"]["funnel"]}
    alpha = {r["node"]: r for r in facts["scopes"]["alpha"]["funnel"]}
    beta = {r["node"]: r for r in facts["scopes"]["beta"]["funnel"]}
    assert "beta" not in alpha and "alpha" not in beta  # another source's node is not in a source's funnel
    for node in ("lang", "quality", "dedup", "tokenize"):
        for col in ("docs_in", "docs_out", "docs_removed", "chars_out", "chars_removed"):
            assert alpha[node][col] + beta[node][col] == whole[node][col], (node, col)
    assert facts["scopes"]["beta"]["removals"] == [{"node": "lang", "reason": "lang:fr", "docs": 1, "chars": len(FRENCH * 3)}]
    tok = facts["scopes"]["alpha"]["tokens"][0]["splits"]
    assert sum(s["documents"] for s in tok.values()) == alpha["tokenize"]["docs_out"]


def test_removals_and_samples_follow_the_ledger(small_run):
    import pyarrow.parquet as pq

    from pipeline.audit.report.facts import gather

    facts = gather(small_run, samples=3)
    scope = facts["scopes"]["output"]
    groups = {(r["node"], r["reason"]): r["docs"] for r in scope["removals"]}
    assert groups == {("lang", "lang:fr"): 1, ("quality", "quality:words<50"): 1, ("dedup", "dedup:exact dup"): 1}
    for node in ("lang", "quality", "dedup"):
        assert sum(v for (n, _), v in groups.items() if n == node) == _stats(small_run, node)["removed"]
    dedup = scope["samples"]["dedup"]
    (doc,) = dedup["removed"]["dedup:exact dup"]
    ledger = pq.read_table(small_run / "stages" / "dedup" / "removed").to_pylist()
    assert doc["id"] == ledger[0]["id"] and doc["reason"] == ledger[0]["reason"] and "dup of" in doc["reason"]
    assert json.loads(doc["signals"])["kept_id"]
    assert len(dedup["kept"]) == 3 and {d["source"] for d in dedup["kept"]} <= {"alpha", "beta"}
    scripted = scope["samples"]["quality"]["removed"]["quality:words<50"][0]
    assert scripted["id"] == "alpha/a-script" or scripted["id"].endswith("a-script")
    assert scripted["text"].startswith(SCRIPT)
    assert gather(small_run, samples=3)["scopes"]["output"]["samples"] == scope["samples"]  # deterministic


def test_quality_histograms_carry_the_recorded_thresholds(small_run):
    from pipeline.audit.report.facts import gather
    from pipeline.text.quality import resolve_preset

    facts = gather(small_run)
    (q,) = facts["scopes"]["output"]["quality"]
    assert q["presets"] == {"gopher": resolve_preset("gopher")}
    words = next(s for s in q["signals"] if s["signal"] == "q_words")
    assert (50.0, "min_words") in [tuple(t) for t in words["thresholds"]]
    assert sum(words["removed"]) == 1 and sum(words["kept"]) == _stats(small_run, "quality")["out"]
    removed = json.loads(facts["scopes"]["output"]["samples"]["quality"]["removed"]["quality:words<50"][0]["signals"])
    assert words["edges"][0] <= removed["q_words"] < 50 <= words["edges"][-1]  # the removed document and the threshold are in range
    (lang,) = facts["scopes"]["output"]["languages"]
    assert {"lang": "fr", "kept": 0, "removed": 1} in lang["langs"] and lang["min_score"] == 0.5


# ----------------------------------------------------------------------------- HTML
def test_html_helpers_escape_everything():
    from pipeline.audit.report import svg
    from pipeline.audit.report.html import CSP, Safe, esc, link, page, render, table

    assert esc(SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
    assert render("<p title=\"$t\">$t</p>", t='"><script>') == '<p title="&quot;&gt;&lt;script&gt;">&quot;&gt;&lt;script&gt;</p>'
    assert render("<b>$x</b>", x=Safe("<i>ok</i>")) == "<b><i>ok</i></b>"
    assert "<script" not in table([SCRIPT], [[SCRIPT, 1]], numeric=(1,))
    assert link("javascript:alert(1)", "x") == "x (javascript:alert(1))"
    assert link("https://example.org/?a=1&b=<2>", "home").startswith('<a href="https://example.org/?a=1&amp;b=&lt;2&gt;" rel="noopener noreferrer">')
    plot = svg.histogram([0, 1, 2], {SCRIPT: [1, 2]}, title=SCRIPT, thresholds=[(1.5, SCRIPT)])
    assert "<script" not in plot and "<img" not in plot and 'class="threshold"' in plot
    html = page(SCRIPT, [("index.html", SCRIPT)], "index.html", esc(SCRIPT))
    assert "<script" not in html and f'content="{CSP}"' in html.replace("&#x27;", "'")


def test_report_pages_keep_document_markup_inert(small_run):
    from pipeline.audit.report import build_report

    index = build_report(small_run, samples=3)
    report = index.parent
    names = sorted(p.name for p in report.glob("*.html"))
    assert names == ["index.html", "output.html", "source-alpha.html", "source-beta.html"]
    for name in names:
        html = (report / name).read_text(encoding="utf-8")
        assert '<meta http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;; style-src &#x27;unsafe-inline&#x27;; img-src data:' in html
        assert not re.search(r"<\s*(script|img|iframe|object|embed|link)\b", html, re.I), name
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html.replace('href="https://', "")), name  # no external resource
    output = (report / "output.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in output
    assert "&lt;script&gt;alert(3)&lt;/script&gt;Scripted" in output
    for section in ("funnel", "removals", "samples", "lengths", "quality", "languages", "dedup", "tokens", "license"):
        assert f'data-section="{section}"' in output, section
    assert output.count('class="threshold"') >= 3
    assert re.search(r'<tr data-node="dedup" class="output">.*?data-col="docs_out" data-value="(\d+)"', output).group(1) == str(_data_rows(small_run))
    facts = json.loads((report / "facts.json").read_text(encoding="utf-8"))
    assert facts["data"]["rows"] == _data_rows(small_run)


def test_report_command_regenerates_without_running_stages(small_run, tmp_path):
    marks = {p: p.stat().st_mtime_ns for p in (small_run / "stages").glob("*/_COMPLETE")}
    run = tmp_path / "train-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 5.0 - s / 10, "lr": 1e-3}) + "\n" for s in range(1, 21)) + json.dumps({"type": "eval", "step": 20, "val_loss": 3.2, "val_ppl": 24.5}) + "\n"
        + json.dumps({"type": "sample", "step": 20, "index": 0, "prompt": "The", "text": SCRIPT + "\x00"}) + "\n",
        encoding="utf-8",
    )
    (run / "metrics.json").write_text(json.dumps({"step": 20, "val_loss": 3.2}), encoding="utf-8")
    ft = run / "finetune"
    ft.mkdir()
    scores = {"accuracy": 0.75, "macro_f1": 0.7, "confusion_matrix": {"labels": ["neg", SCRIPT], "rows": "true", "columns": "predicted", "matrix": [[3, 1], [1, 3]]}}
    (ft / "metrics.json").write_text(json.dumps({"task": "classification", "labels": ["neg", SCRIPT], "test": scores}), encoding="utf-8")  # finetune.py's shape
    proc = run_cli("report", str(small_run), "--train", str(run), "--samples", "2")
    assert proc.returncode == 0, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (small_run / "stages").glob("*/_COMPLETE")} == marks
    training = (small_run / "report" / "training.html").read_text(encoding="utf-8")
    assert training.count('data-plot="line"') >= 2 and "0.75" in training and "train-run/finetune" in training
    assert re.search(r'<table class="matrix">.*?<th>neg</th>.*?<td class="num" style="[^"]*">3</td>', training)
    assert "<script" not in training and "&lt;script&gt;" in training and "\x00" not in training
    assert re.search(r'<table class="samples">.*?<td>The</td><td>&lt;script&gt;', training)  # the model's generations, as text
    assert 'href="training.html"' in (small_run / "report" / "index.html").read_text(encoding="utf-8")


def test_report_command_refuses_what_is_not_a_finished_run(tmp_path, small_run):
    from typer.testing import CliRunner

    from pipeline.cli import app

    cli = CliRunner()
    res = cli.invoke(app, ["report", str(tmp_path)])
    said = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2 and "not a completed run" in said and "pipeline run" in said
    before = (small_run / "report" / "index.html").read_bytes()
    res = cli.invoke(app, ["report", str(small_run), "--train", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "training run directory not found" in " ".join(res.output.split())
    assert (small_run / "report" / "index.html").read_bytes() == before  # the old report stays


def test_damaged_run_files_give_a_clear_error(small_run, tmp_path):
    from pipeline.audit.report import ReportError, build_report

    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    (copy / "stages" / "quality" / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportError, match="cannot read the run's files") as err:
        build_report(copy)
    assert err.value.where == str(copy) and err.value.hint
    assert (copy / "report" / "index.html").exists()  # the copied report was not replaced by a broken one


# ----------------------------------------------------------------------------- wiki-zh in Chromium
@pytest.fixture(scope="module")
def wiki_run(tmp_path_factory):
    """The wiki-zh manifest on the zhwiki-shaped mirror, plus one page whose title and text hold a
    script element (kept as text by <nowiki>); short, so the quality node removes it."""
    from tests.support.mirror import MirrorServer
    from tests.support.wikidump import Page, build_curation_pages, build_mirror, build_pages

    pages, expected = build_pages(SHARED / "corpora" / "zhwiki-articles")
    long = {e["page_id"] for e in expected if len(next(p.text for p in pages if p.page_id == e["page_id"])) > 6000}
    pages = [p for p in pages if p.page_id not in long]  # the shorter half of the articles: the same shapes, less CPU
    expected = [e for e in expected if e["page_id"] not in long]
    pages, _ = build_curation_pages(pages, expected, SHARED if SHARED.is_dir() else None)
    page_id = max(p.page_id for p in pages) + 1000
    pages.append(Page(title="脚本" + TITLE_SCRIPT, ns=0, page_id=page_id, text=f"<nowiki>{SCRIPT}</nowiki>这是测试。", rev_id=page_id * 7))
    root = tmp_path_factory.mktemp("wiki-report")
    build_mirror(root / "mirror", pages)
    out = root / "out"
    with MirrorServer(root / "mirror") as server:
        proc = run_cli("run", str(REPO / "manifests" / "wiki-zh.yaml"), "--out", str(out), "--no-progress", "--set", f"sources.zhwiki.mirror={server.url}", env={"GRIST_CACHE": str(root / "cache")}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = run_cli("report", str(out), "--samples", "10")
    assert proc.returncode == 0, proc.stderr
    return out, f"zhwiki/{page_id}"


def _ledger_groups(out: Path) -> dict[tuple[str, str], int]:
    import polars as pl

    from pipeline.audit.report.facts import REASON_GROUP

    ledger = pl.read_parquet(sorted(out.glob("stages/*/removed/*.parquet")))
    grouped = ledger.group_by("node", pl.col("reason").str.replace(REASON_GROUP, "")).len()
    return {(r["node"], r["reason"]): r["len"] for r in grouped.iter_rows(named=True)}


def test_wiki_report_reconciles_and_keeps_the_script_inert(wiki_run):
    import polars as pl

    out, script_id = wiki_run
    ledger = pl.read_parquet(sorted(out.glob("stages/*/removed/*.parquet")))
    row = ledger.filter(pl.col("id") == script_id).to_dicts()
    assert row and row[0]["node"] == "quality", row  # removed, so it is among the samples
    assert _ledger_groups(out)[("quality", row[0]["reason"])] <= 10
    html = (out / "report" / "output.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    found = re.search(r'<tr data-node="dedup" class="output">.*?data-col="docs_out" data-value="(\d+)"', html)
    assert found and int(found.group(1)) == _data_rows(out)


def _artifacts_dir() -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium not installed: `apt-get install chromium` (.ci/run installs it when it can)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed: pip install playwright (drives Debian's chromium; no browser download)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=exe,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


SECTIONS = {
    "index.html": ["manifest", "sources", "totals", "license", "nodes", "funnel", "cards"],
    "output.html": ["summary", "license", "funnel", "removals", "samples", "lengths", "quality", "languages", "dedup", "tokens"],
    "source-zhwiki.html": ["summary", "license", "pin", "funnel", "removals", "samples", "lengths", "quality", "languages", "dedup", "tokens"],
}


def test_report_renders_in_headless_chromium(chromium, wiki_run):
    out, script_id = wiki_run
    report = out / "report"
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors, dialogs, requests = [], [], []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "assert") else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    shots = _artifacts_dir()
    stats = {n: json.loads((out / "stages" / n / "stats.json").read_text()) for n in ("zhwiki", "extract", "clean", "lang", "quality", "dedup", "tokenize")}

    for name, sections in SECTIONS.items():
        page.goto((report / name).as_uri())
        page.wait_for_load_state("load")
        for key in sections:
            assert page.locator(f'[data-section="{key}"]').first.is_visible(), f"{name}: section {key} missing"
        dom = page.evaluate("() => ({scripts: document.scripts.length, imgs: document.images.length, handlers: document.querySelectorAll('[onerror],[onload],[onclick]').length})")
        assert dom == {"scripts": 0, "imgs": 0, "handlers": 0}, (name, dom)
        for node, st in stats.items():  # every funnel row on the page equals what the node recorded
            cells = page.locator(f'section#funnel tr[data-node="{node}"] td[data-value]')
            got = {c.get_attribute("data-col"): int(c.get_attribute("data-value")) for c in cells.all()}
            assert (got["docs_in"], got["docs_out"], got["docs_removed"]) == (st["in"], st["out"], st["removed"]), (name, node, got)
        if name != "index.html":
            assert page.locator("svg.plot").count() >= 10 and page.locator("svg.plot line.threshold").count() >= 1
        page.screenshot(path=str(shots / f"report-{name.removesuffix('.html')}.png"), full_page=True)

    page.goto((report / "output.html").as_uri())
    out_row = page.locator('section#funnel tr[data-node="dedup"].output td[data-col="docs_out"]')
    assert int(out_row.get_attribute("data-value")) == _data_rows(out) and out_row.inner_text().replace(",", "") == str(_data_rows(out))
    # every (node, reason) of the ledger has sampled removed documents with their reason, next to kept ones
    for (node, reason), count in _ledger_groups(out).items():
        box = page.locator(f'section#samples div.reason-samples[data-node="{node}"][data-reason="{reason}"]')
        assert box.count() == 1, (node, reason)
        docs = box.locator("article.doc.removed")
        assert docs.count() == min(count, 10)
        assert docs.first.locator(".reason").inner_text().startswith(reason)
        assert page.locator(f'section#samples div.pair[data-node="{node}"] .kept-col article.doc.kept').count() >= 1
    scripted = page.locator(f'article.doc.removed[data-id="{script_id}"]')
    assert scripted.locator("pre.text").inner_text().startswith(SCRIPT)  # shown as text, not parsed
    assert TITLE_SCRIPT in scripted.locator(".title").inner_text()
    page.click("nav >> text=Run")  # relative links work from file://
    assert page.url.endswith("/report/index.html")

    assert not dialogs, dialogs
    assert not errors, errors
    assert all(u.startswith("file://") for u in requests), [u for u in requests if not u.startswith("file://")]
    print(f"report screenshots in {shots}")
    page.close()
