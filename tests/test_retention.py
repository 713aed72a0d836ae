"""retain: outputs — a finished run keeps data/, the published artifacts, ledgers, statistics and
summaries of the node parts, and a later change upstream recomputes what it needs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.audit.report import facts
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest

MANIFEST = """
name: keep-little
retain: {retain}
sources:
  - name: docs
    kind: local
    paths: [docs.jsonl]
    license: CC-BY-4.0
stages:
  - {{name: clean, stage: clean, params: {{opencc: t2s}}}}
  - {{name: lang, stage: lid_filter, params: {{keep: [zh]}}}}
  - {{name: dedup, stage: dedup, params: {{threshold: {threshold}}}}}
"""

HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"


def write_docs(root: Path, n: int = 60) -> None:
    rng = random.Random(5)
    rows = []
    for i in range(n):
        text = "".join(rng.choice(HAN) for _ in range(rng.randint(200, 400))) + "。"
        rows.append({"id": f"d{i}", "text": text})
        if i % 10 == 0:  # a near duplicate: a few characters changed
            chars = list(text)
            for k in rng.sample(range(len(chars) - 1), 3):
                chars[k] = rng.choice(HAN)
            rows.append({"id": f"d{i}-copy", "text": "".join(chars)})
    rows.append({"id": "en", "text": "An English document among Chinese ones, long enough for language identification to be sure of it."})
    (root / "docs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def run(root: Path, out: Path, retain: str, threshold: float = 0.7):
    (root / "m.yaml").write_text(MANIFEST.format(retain=retain, threshold=threshold), encoding="utf-8")
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(root / "m.yaml"), out, ex, console, progress=False)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != "state.json" and not p.name.startswith(".grist_")}


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("retain")
    write_docs(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIST_CACHE", str(root / "cache"))
        full = run(root, root / "full", "all")
        small = run(root, root / "small", "outputs")
    return root, full, small


def test_released_run_has_the_same_data_and_audit_trail(runs):
    root, _, _ = runs
    full, small = root / "full", root / "small"
    assert tree(full / "data") == tree(small / "data")
    for node in ("docs", "clean", "lang", "dedup"):
        assert not list((small / "stages" / node).glob("part-*.parquet")), node
        assert (small / "stages" / node / "_RELEASED").is_file()
        assert tree(full / "stages" / node / "removed") == tree(small / "stages" / node / "removed")
        a, b = (json.loads((r / "stages" / node / "stats.json").read_text()) for r in (full, small))
        assert {k: a[k] for k in ("in", "out", "removed", "removed_by_reason")} == {k: b[k] for k in ("in", "out", "removed", "removed_by_reason")}
    parts = sum(f.stat().st_size for f in (full / "stages").glob("*/part-*.parquet"))
    summaries = sum(f.stat().st_size for f in (small / "stages").glob("*/summary/part-*.parquet"))
    assert summaries < parts / 2 and size(small / "stages") < size(full / "stages") - parts / 2
    # the report's facts read the summaries: the funnel is the same, samples still have text
    nodes = facts.run_meta(full)["nodes"]
    assert facts.funnel(full, nodes).sort("node", "source").equals(facts.funnel(small, nodes).sort("node", "source"))
    samples = facts.kept_samples(small, nodes, 3, per_source=False, only={"lang", "dedup"})
    assert samples.height == 6 and samples["text"].null_count() == 0


def test_a_change_upstream_recomputes_released_inputs(runs, monkeypatch):
    root, _, small = runs
    monkeypatch.setenv("GRIST_CACHE", str(root / "cache"))
    again = run(root, root / "small", "outputs")
    assert again.nodes_run == []  # nothing changed: nothing is recomputed, released or not
    changed = run(root, root / "small", "outputs", threshold=0.9)
    assert changed.nodes_run == ["docs", "clean", "lang", "dedup"]  # dedup needs lang's parts, lang needs clean's...
    reference = run(root, root / "full", "all", threshold=0.9)
    assert reference.nodes_run == ["dedup"]
    assert tree(root / "full" / "data") == tree(root / "small" / "data")
