"""Stage decontaminate: planted evaluation items (whole, edited, as short options, Traditional script) are
found in Chinese and English documents, clean documents are not; drop vs flag; bad sets fail early,
naming the set; the card and the report list contamination per set."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from pipeline.common.errors import ManifestError, PipelineError
from pipeline.exec.executors import LocalExecutor
from pipeline.run.load import load_manifest
from pipeline.run.runner import run_manifest
from pipeline.text import decontam as dc

ZH_ITEMS = [
    {"question": "下列关于长江三角洲地区经济发展特点的叙述，哪一项最能体现其产业结构升级的趋势？", "choices": ["以劳动密集型产业为主导", "高新技术产业比重不断上升", "农业人口比例持续增加", "对外贸易依存度逐年下降"]},
    {"question": "宋代著名词人苏轼在被贬黄州期间创作了大量作品，其中最能表现其旷达胸襟的是哪一篇？", "choices": ["念奴娇赤壁怀古", "声声慢寻寻觅觅", "雨霖铃寒蝉凄切", "青玉案元夕"]},
    {"question": "在标准大气压下，纯水的沸点为一百摄氏度，而在高原地区水的沸点会明显降低，其主要原因是什么？", "choices": ["高原地区气压较低", "高原地区温度较低", "高原地区水质较硬", "高原地区空气潮湿"]},
    {"question": "以下哪个选项是正确的？", "choices": ["以上都对", "以上都不对", "无法判断此题", "是"]},
]
EN_ITEMS = [
    {"question": "Which of the following best explains why the boiling point of water decreases at higher altitudes in mountain regions?", "answer": "The atmospheric pressure is lower"},
    {"question": "A farmer plants three rows of apple trees with twelve trees in each row and later adds five more trees; how many trees are there now?", "answer": "forty-one apple trees"},
]

CLEAN_ZH = [
    "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。城市历史悠久，拥有众多名胜古迹。",
    "长江是亚洲第一长河，全长约六千三百公里，流经青海、西藏、四川等多个省份，最终注入东海。",
    "苏轼是北宋时期的文学家、书画家，与其父苏洵、其弟苏辙合称三苏，其诗词风格豪放。\n是\n以上都对",
]
CLEAN_EN = [
    "Water boils at one hundred degrees Celsius at sea level. Mountaineers know that cooking takes longer at altitude.",
    "The orchard had many apple trees, and each autumn the farmer sold the apples at the market in town.",
]


def docs() -> list[dict]:
    q = [r["question"] for r in ZH_ITEMS]
    out = [
        ("zh-whole", "今天整理了一些历史题目。" + q[1] + "答案见下文。"),
        ("zh-edited", "练习：" + q[0].replace("经济", "经贸").replace("趋势", "方向") + "请作答。"),
        ("zh-options", "地理小测验\nA. 高原地区气压较低\nB. 高原地区温度较低\nC. 其他"),
        ("zh-traditional", "題目：在標準大氣壓下，純水的沸點為一百攝氏度，而在高原地區水的沸點會明顯降低。"),
        ("en-whole", "Quiz time! " + EN_ITEMS[0]["question"] + " Think about it."),
        ("en-edited", "a farmer plants 3 rows of apple trees with twelve trees in each row, and later adds five more trees. How many?"),
    ]
    out += [(f"clean-zh-{i}", t) for i, t in enumerate(CLEAN_ZH)]
    out += [(f"clean-en-{i}", t) for i, t in enumerate(CLEAN_EN)]
    return [{"doc": i, "text": t} for i, t in out]


MANIFEST = """
name: decontam-test
sources:
  - name: web
    kind: local
    paths: ["docs.jsonl"]
    license: CC-BY-4.0
    id_field: doc
stages:
  - name: decon
    stage: decontaminate
    inputs: [web]
    params:
      sets:
        - {name: zh-exam, path: sets/zh.jsonl, fields: [question, choices]}
        - {name: en-quiz, path: sets/en.csv, fields: [question, answer]}
      action: drop
allow_empty: true
"""


def write_inputs(root: Path, manifest: str = MANIFEST) -> Path:
    (root / "sets").mkdir(parents=True, exist_ok=True)
    (root / "docs.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs()), encoding="utf-8")
    (root / "sets" / "zh.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ZH_ITEMS), encoding="utf-8")
    lines = ["question,answer"] + [f'"{r["question"]}","{r["answer"]}"' for r in EN_ITEMS]
    (root / "sets" / "en.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = root / "manifest.yaml"
    path.write_text(manifest, encoding="utf-8")
    return path


def run(manifest: Path, out: Path, overrides: list[str] | None = None):
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        return run_manifest(load_manifest(manifest, overrides), out, ex, console, progress=False)


CONTAMINATED = {"zh-whole": "zh-exam", "zh-edited": "zh-exam", "zh-options": "zh-exam", "zh-traditional": "zh-exam", "en-whole": "en-quiz", "en-edited": "en-quiz"}


@pytest.fixture(scope="module")
def dropped(tmp_path_factory):
    root = tmp_path_factory.mktemp("decon")
    manifest = write_inputs(root)
    run(manifest, root / "out")
    return root


def test_drop_planted_items_keep_clean(dropped):
    out = dropped / "out"
    kept = set(datasets.load_from_disk(str(out / "data"))["id"])
    assert kept == {f"web/{d['doc']}" for d in docs() if d["doc"].startswith("clean")}
    ledger = {r["id"]: r for r in pq.read_table(out / "stages" / "decon" / "removed").to_pylist()}
    assert {k.removeprefix("web/"): v["reason"] for k, v in ledger.items()} == {k: f"decontam:{s}" for k, s in CONTAMINATED.items()}
    sig = json.loads(ledger["web/zh-options"]["signals"])
    assert sig["short_matches"] >= 1 and sig["kind"] == "exact" and sig["row"] == 2 and sig["match"] == "高原地区气压较低"
    sig = json.loads(ledger["web/zh-whole"]["signals"])
    assert sig["ngram_matches"] > 10 and sig["row"] == 1 and sig["sets"] == ["zh-exam"]


def test_stats_and_card(dropped):
    stats = json.loads((dropped / "out" / "stages" / "decon" / "stats.json").read_text())
    assert stats["decontam"]["by_set"] == {"zh-exam": {"documents": 4, "first": 4}, "en-quiz": {"documents": 2, "first": 2}}
    card = stats["card"]
    assert card["title"] == "Decontamination" and any("zh-exam" in r[0] and "4 documents dropped" in r[1] for r in card["rows"])
    # template options ("是", "以上都对" is one item only here but too short / too common) never match the clean text
    index = stats["decontam"]["index"]["zh-exam"]
    assert index["too_short"] >= 1 and index["short_items"] >= 8


def test_card_and_report_sections(dropped):
    out = dropped / "out"
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "## Contamination" in readme and "zh-exam" in readme and "decontam:zh-exam" in readme
    assert "### Decontamination" in readme
    html = (out / "report" / "output.html").read_text(encoding="utf-8")
    assert "Contamination" in html and "zh-exam" in html and "Decontamination" in html


def test_stage_cards_are_escaped(dropped, tmp_path):
    """Any node's stats["card"] is rendered in README.md and the report, its text escaped."""
    import shutil

    from pipeline.audit.cards import write_cards
    from pipeline.audit.report import build_report

    out = tmp_path / "out"
    shutil.copytree(dropped / "out", out)
    path = out / "stages" / "decon" / "stats.json"
    stats = json.loads(path.read_text())
    stats["card"] = {"title": "Mix <b>", "rows": [["<script>alert(1)</script>", "a | b"]], "notes": ["**bold** <i>"]}
    path.write_text(json.dumps(stats))
    write_cards(out)
    build_report(out)
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "### Mix &lt;b&gt; (`decon`)" in readme and "&lt;script&gt;" in readme and "a \\| b" in readme and "<script>" not in readme
    html = (out / "report" / "output.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html and "Mix &lt;b&gt;" in html


def test_flag_keeps_everything(tmp_path):
    manifest = write_inputs(tmp_path)
    run(manifest, tmp_path / "out", ["stages.decon.params.action=flag"])
    data = datasets.load_from_disk(str(tmp_path / "out" / "data"))
    flags = {i.removeprefix("web/"): f for i, f in zip(data["id"], data["decontam"])}
    assert {k: v for k, v in flags.items() if v} == {k: [s] for k, s in CONTAMINATED.items()}
    assert pq.read_table(tmp_path / "out" / "stages" / "decon" / "removed").num_rows == 0
    card = json.loads((tmp_path / "out" / "stages" / "decon" / "stats.json").read_text())["card"]
    assert any("flagged" in r[1] for r in card["rows"])


def test_datasets_folder_and_txt_sets(tmp_path):
    manifest = write_inputs(tmp_path)
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ZH_ITEMS)}).save_to_disk(str(tmp_path / "sets" / "zh-ds"))
    (tmp_path / "sets" / "en.txt").write_text(EN_ITEMS[0]["question"] + "\n", encoding="utf-8")
    text = manifest.read_text().replace("path: sets/zh.jsonl", "path: ./sets/zh-ds").replace("{name: en-quiz, path: sets/en.csv, fields: [question, answer]}", "{name: en-quiz, path: sets/en.txt, field: text}")
    manifest.write_text(text)
    run(manifest, tmp_path / "out")
    ledger = {r["id"].removeprefix("web/"): r["reason"] for r in pq.read_table(tmp_path / "out" / "stages" / "decon" / "removed").to_pylist()}
    assert {k for k, v in ledger.items() if v == "decontam:zh-exam"} == {k for k, s in CONTAMINATED.items() if s == "zh-exam"}
    assert ledger["en-whole"] == "decontam:en-quiz" and "en-edited" not in ledger  # only the first question is in the txt set


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda root: (root / "sets" / "zh.jsonl").unlink(), "does not exist"),
        (lambda root: (root / "sets" / "zh.jsonl").write_text('{"prompt": "x", "options": ["a"]}\n'), "no field 'question', 'choices'; its fields are: options, prompt"),
        (lambda root: (root / "sets" / "zh.jsonl").write_text(""), "empty"),
    ],
)
def test_bad_sets_fail_naming_the_set(tmp_path, edit, message):
    manifest = write_inputs(tmp_path)
    edit(tmp_path)
    with pytest.raises(PipelineError) as err:
        run(manifest, tmp_path / "out")
    text = str(err.value)
    assert "zh-exam" in text and message in text, text


def test_hub_id_needs_revision(tmp_path):
    manifest = write_inputs(tmp_path, MANIFEST.replace("path: sets/en.csv", "path: someorg/some-eval"))
    with pytest.raises(ManifestError) as err:
        load_manifest(manifest)
    assert "revision" in str(err.value) and "en-quiz" in str(err.value)


def test_matcher_recall_and_template_keys():
    cfg = dc.Config()
    items = [r["question"] for r in ZH_ITEMS] + [c for r in ZH_ITEMS for c in r["choices"]]
    # a template option in many rows is not evidence
    rows = list(range(len(items)))
    items += ["以上选项都不正确"] * 12
    rows += list(range(100, 112))
    index = dc.build_index([("s", items, rows)], cfg)
    assert index.summaries[0].template_keys == 1
    texts = ["甲\n以上选项都不正确\n乙", "A．高原地区气压较低", "（B）高原地區溫度較低", "无关内容高原地区"]
    m = dc.match(index, texts, cfg)
    assert m.short_hits[:, 0].tolist() == [0, 1, 1, 0]
    assert m.first[1]["kind"] == "exact" and m.first[3] is None


def test_load_set_parquet_and_hub_pinned(tmp_path, monkeypatch):
    import pyarrow as pa

    from stages.decontaminate import EvalSet, load_set

    pq.write_table(pa.table({"q": ["甲乙丙丁戊己庚辛壬癸子丑寅卯", "第二题"], "opts": [["选项一二三四", "选项五六七八"], []]}), tmp_path / "s.parquet")
    texts, rows, ident = load_set(EvalSet(name="pq", path="s.parquet", fields=["q", "opts"]), tmp_path)
    assert texts == ["甲乙丙丁戊己庚辛壬癸子丑寅卯", "选项一二三四", "选项五六七八", "第二题"] and rows == [0, 0, 0, 1]
    assert ident["sha256"] and ident["rows"] == 2
    calls = []

    def fake_load_dataset(path, config=None, split=None, revision=None, **kw):  # nothing is downloaded in tests
        calls.append((path, config, split, revision))
        return datasets.Dataset.from_list([{"question": "一道从网上下载的题目"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    texts, _, ident = load_set(EvalSet(name="hub", path="org/eval", field="question", revision="abc123", config="zh"), tmp_path)
    assert calls == [("org/eval", "zh", "test", "abc123")] and texts == ["一道从网上下载的题目"] and ident["revision"] == "abc123"


def test_identity_pins_set_content(tmp_path):
    """resolve() hashes the sets: an edited evaluation file changes the node's identity (fingerprint)."""
    from types import SimpleNamespace

    from stages.decontaminate import Decontaminate, Params

    manifest = write_inputs(tmp_path)
    params = Params.model_validate({"sets": [{"name": "zh-exam", "path": "sets/zh.jsonl", "fields": ["question", "choices"]}]})
    rctx = SimpleNamespace(manifest=SimpleNamespace(path=manifest))
    first = Decontaminate(params, "decon").resolve(rctx)["identity"]
    assert first == Decontaminate(params, "decon").resolve(rctx)["identity"]
    with open(tmp_path / "sets" / "zh.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"question": "新加的一道题目，用来改变文件内容", "choices": []}, ensure_ascii=False) + "\n")
    second = Decontaminate(params, "decon").resolve(rctx)["identity"]
    assert second != first and second["sets"][0]["rows"] == len(ZH_ITEMS) + 1
