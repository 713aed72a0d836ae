"""Quality signals (pipeline/quality), presets, the quality_filter stage, and agreement with
datatrove's Gopher filters on a corpus built from the shared corpora (skipped when absent)."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipeline.core.stage import REMOVED_SCHEMA
from pipeline.text import quality
from pipeline.text.quality import PRESETS, compute_signals, corpus, decide, normalize_lang, resolve_preset
from pipeline.text.quality import tokenize as qtok
from stages import get_stage_class

EN = (
    "The cat sat on the mat.\nThe cat sat on the mat.\n\n"
    "A dog, a #tag and... more!\n- item one\n\u2022 item two\u2026"
)
ZH = "我们在北京大学学习自然语言处理。今天是2024年1月1日，天气很好！"
NATURAL = (
    "Anarchism is a political philosophy and movement that is skeptical of all justifications for authority "
    "and seeks to abolish the institutions it claims maintain unnecessary coercion and hierarchy, typically "
    "including the state and capitalism. Anarchism advocates for the replacement of the state with stateless "
    "societies and voluntary free associations. As a historically left-wing movement, this reading of anarchism "
    "is placed on the farthest left of the political spectrum, usually described as the libertarian wing of the "
    "socialist movement."
)


def sig(text: str, lang: str = "en", **kw) -> dict:
    return compute_signals([text], [lang], **kw).row(0, named=True)


def words(text: str) -> list[str]:
    return qtok.english_words(pl.DataFrame({"doc": [0], "text": [text]}, schema={"doc": pl.UInt32, "text": pl.String})).get_column("word").to_list()


# --------------------------------------------------------------------------- tokenization


def test_english_words_follow_spacy_rules():
    assert words("Hello, world! U.S. don't well-known 1,000 3.5 (1990) e.g. http://x.com/a ... end.") == [
        "Hello", ",", "world", "!", "U.S.", "do", "n't", "well", "-", "known", "1,000", "3.5", "(", "1990", ")",
        "e.g.", "http://x.com/a", "...", "end", ".",
    ]
    # capitals before a period, emoticon-like specials, units after numbers, infix periods
    assert words("J. USA. aB. Ab. (8) 5km 100% end.The a)., John's COVID-19 1990-91") == [
        "J.", "USA", ".", "aB.", "Ab", ".", "(", "8)", "5", "km", "100", "%", "end", ".", "The", "a", ")", ".", ",",
        "John", "'s", "COVID-19", "1990", "-", "91",
    ]
    # every whitespace character separates (str.isspace), none is a token
    assert words("a\tb\u3000c\x1fd\u00a0e\r\nf") == ["a", "b", "c", "d", "e", "f"]
    assert words("") == [] and words(" \n ") == []


def test_vectorized_shortcuts_equal_the_reference_algorithm():
    chunks = [
        "word,", "(word", "word)", "(word),", "word).", "\"word\",", "J.", "USA.", "Smith.", "aB.", "(J.", "Mr.", "(Mr.",
        "8)", "(8)", ":D", "cannot,", "well-known", "19-year", "1990-91", "a-0", "COVID-19", "e.g.", "a.", "1990,",
        "\u201cword\u201d", "word\u2019", "it's", "Inc.,", "Jan.", "(1990)", "\u2018a", "x:", "A-B", "a--b", "U.S.,",
    ]
    if corpus.available():
        text = "\n".join(t for t in corpus.english_corpus(n_derived=200, long_doc=False)[:130])
        chunks += sorted({c for c in re.split(r"\s+", text) if c})
    distinct = pl.DataFrame({"piece": sorted(set(chunks))})
    fast = qtok._english_shortcuts(distinct)
    assert fast.height > 0
    for piece, toks in fast.iter_rows():
        assert toks.split(" ") == list(qtok.spacy_chunk_tokens(piece)), piece


def test_reference_tokenizer_equals_spacy():
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    samples = ["(a),", "a).", "O'Brien's", "rock'n'roll", ":-)", "$100", "US$5", "3:30pm", "10a.m.", "hello--world", "A.B.C.", "x...y", "\u00a92020", "km/h", "\u201cQuote.\u201d"]
    if corpus.available():
        samples += sorted({c for s in corpus.english_sentences() for c in s.split()})[:3000]
    for s in samples:
        assert list(qtok.spacy_chunk_tokens(s)) == [t.text for t in nlp(s)], s


def test_chinese_words_are_jieba_words():
    jieba = pytest.importorskip("jieba")
    got = qtok.chinese_words(pl.DataFrame({"doc": [0], "text": [ZH + " hello world"]}, schema={"doc": pl.UInt32, "text": pl.String})).get_column("word").to_list()
    assert got == [w for w in jieba.lcut(ZH + " hello world") if w.strip()]
    assert got[:3] == ["我们", "在", "北京大学"]
    chars = qtok.chinese_words(pl.DataFrame({"doc": [0], "text": [ZH]}, schema={"doc": pl.UInt32, "text": pl.String}), "chars").get_column("word").to_list()
    assert chars[:4] == ["我", "们", "在", "北"] and "2024" in chars


def test_jieba_rs_segments_like_jieba():
    pytest.importorskip("rjieba")
    jieba = pytest.importorskip("jieba")
    blocks = ["1-3常见的凝聚态有固态和液态", "16-bit暂存器", "0-08-016739-X", "3.5%的人", "在语言如C++中", "AT&T贝尔实验室", "----是他们的高尚品德", "140524.shtml学术争鸣是好事"]
    if (corpus.corpora_dir() / "zhwiki-articles").is_dir():
        text = "\n".join(t for _, t in corpus.chinese_articles()[:30])
        blocks += sorted(set(re.findall(r"[\u4e00-\u9fd5a-zA-Z0-9+#&._%\-]+", text)))
    for b in blocks:
        assert list(qtok._rjieba_tokens(b)) == [w for w in jieba.lcut(b) if w.strip()], b


# Blocks where Python jieba's choice hangs on an exact floating-point tie or a near tie (route
# or HMM), ASCII runs split by finalseg.re_skip, dictionary buffers, and a block longer than
# jieba_np.MAX_BLOCK (segmented by Python jieba itself). The first four are segmented
# differently by jieba-rs (its HMM tables differ in the last digits).
TRICKY_BLOCKS = [
    "用国国国制的方入", "常在和人", "共国国国状", "中国后民解放症现在共有两许万名现役常在和人", "关于中华响为共国国国状",
    "1-3常见的凝聚态有固态和液态", "16-bit暂存器", "0-08-016739-X", "3.5%的人", "在语言如C++中", "AT&T贝尔实验室",
    "----是他们的高尚品德", "140524.shtml学术争鸣是好事", "a.5.6", "a.5b.6页", "12.34.56年", "+#&_", "国国国国国国国国", "的的", "1990年10月",
    "我们在北京大学学习自然语言处理" * 40,
]


def _random_blocks(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    han = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好"
    alphabet = list(han) + list("abcXYZ0123456789.%-+#&_") + ["1990", "3.5", "C++", "AT&T", "T恤", "B超"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 40))) for _ in range(n)]


def test_vectorized_jieba_segments_exactly_like_python_jieba():
    pytest.importorskip("jieba")
    from pipeline.text.quality import jieba_np

    blocks = TRICKY_BLOCKS + _random_blocks(3000)
    if (corpus.corpora_dir() / "zhwiki-articles").is_dir():
        text = "\n".join(corpus.chinese_corpus())
        blocks += sorted(set(re.findall(r"[\u4e00-\u9fd5a-zA-Z0-9+#&._%\-]+", text)))
    assert max(map(len, blocks)) > jieba_np.MAX_BLOCK
    got = jieba_np.segment(blocks)
    wrong = [(b, g) for b, g in zip(blocks, got) if g.split(" ") != list(qtok._jieba_tokens(b))]
    assert not wrong, wrong[:5]
    assert jieba_np.segment(["常在和人"]) == ["常 在 和 人"]  # an HMM near tie: jieba-rs says 常在


def test_vectorized_jieba_model_cache_round_trip(tmp_path):
    pytest.importorskip("jieba")
    from pipeline.text.quality import jieba_np

    m = jieba_np.model()
    m.save(str(tmp_path / "model.npz"))
    back = jieba_np.Model.load(str(tmp_path / "model.npz"))
    for name in ("first", "table", "term", "start", "trans", "emit"):
        assert np.array_equal(getattr(m, name), getattr(back, name)), name
    assert (back.prev, back.max_len, back.bits, back.single_term) == (m.prev, m.max_len, m.bits, m.single_term)
    jieba_np.python_jieba()
    assert jieba_np._cache_path() is None  # jieba initialized here: its dictionary may have changed, build from it


def _docs(texts):
    return pl.DataFrame({"doc": list(range(len(texts))), "text": texts}, schema={"doc": pl.UInt32, "text": pl.String})


def test_chinese_code_tokens_are_the_jieba_words():
    pytest.importorskip("jieba")
    texts = [ZH + " hello world", "", "  \n\t", "中文，English mixed。\x00NUL 与 emoji 😀 和\u3000全角空格", "用国国国制的方入\n\n1-3常见的凝聚态", "a", "国"]
    ct = qtok.chinese_code_tokens(_docs(texts))
    ends = np.r_[ct.start[1:], len(ct.codes)]
    got = [(int(d), ct.codes[a:b].astype(np.uint32).tobytes().decode("utf-32-le")) for d, a, b in zip(ct.doc, ct.start, ends)]
    assert got == qtok.chinese_words(_docs(texts), "jieba-py").rows()


def test_char_classes_match_the_regexes():
    """tokenize's code point table equals the polars regex classes the word paths use."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    chars = pl.Series([chr(c) for c in cps], dtype=pl.String)
    cls = qtok._char_classes()[np.asarray(cps)]
    assert np.array_equal(chars.str.contains(f"^[{qtok.WS_CLASS}]$").to_numpy(), cls == 2)
    assert np.array_equal(chars.str.contains(f"^{qtok._JIEBA_BLOCK}$").to_numpy(), cls == 1)


def test_vectorized_jieba_gives_the_same_signals_as_python_jieba():
    pytest.importorskip("jieba")
    texts = [ZH, "", "用国国国制的方入。常在和人！\n\n- 列表 1-3\n- 列表 1-3", "的的的的的的的的的的的的 的的的的的的的的的的的的" * 5, "天气" * 60]
    texts += ["\n".join(TRICKY_BLOCKS[:12]), "。".join(_random_blocks(200, seed=1))]
    if (corpus.corpora_dir() / "zhwiki-articles").is_dir():
        texts += corpus.chinese_corpus()[::5]
    for stop in (None, {"zh": ["天气", "的", "的", "1-3"]}):
        fast = compute_signals(texts, ["zh"] * len(texts), zh_segmenter="jieba", stopwords=stop)
        ref = compute_signals(texts, ["zh"] * len(texts), zh_segmenter="jieba-py", stopwords=stop)
        assert fast.equals(ref)


def test_only_the_requested_signals_are_computed_with_the_same_values():
    texts = [EN, ZH, NATURAL, "", "\n".join(["the same line here again and again"] * 40)]
    langs = ["en", "zh", "en", "en", "en"]
    full = compute_signals(texts, langs)
    for cols in (["q_chars"], ["q_words", "q_dup_5gram_frac"], ["q_c4_sentences", "q_cjk_frac"], quality.rule_signals(resolve_preset("wiki-zh"))):
        part = compute_signals(texts, langs, columns=cols)
        assert part.columns == [c for c in full.columns if c in {"q_lang", *cols}]
        assert part.equals(full.select(part.columns))
    with pytest.raises(ValueError, match="unknown signal"):
        compute_signals(texts, langs, columns=["q_nonsense"])


# --------------------------------------------------------------------------- signals


def test_english_signals_by_hand():
    s = sig(EN)
    assert s["q_lang"] == "en"
    assert s["q_chars"] == len(EN)
    assert s["q_tokens"] == 31  # 6+1 words/punct per sentence x2, "A dog , a # tag and ... more !", "- item one", "• item two …"
    assert s["q_words"] == 23  # minus . . , # ... ! - …  ("•" is not in datatrove's PUNCTUATION)
    assert s["q_stopwords"] == 2  # "the", "and"; "The" does not count (case-sensitive)
    assert s["q_hash_ratio"] == 1 / 31
    assert s["q_ellipsis_ratio"] == 2 / 31
    assert s["q_lines"] == 6
    assert s["q_bullet_lines_frac"] == 2 / 6
    assert s["q_ellipsis_lines_frac"] == 1 / 6
    assert s["q_alpha_words_frac"] == 22 / 31
    ws = [w for w in words(EN) if re.search(r"\w", w) or w == "\u2022"]
    assert s["q_mean_word_len"] == pytest.approx(sum(map(len, ws)) / len(ws))
    # lines split on \n+: 5 lines, one repeated (23 characters)
    assert s["q_dup_line_frac"] == 1 / 5
    assert s["q_dup_line_char_frac"] == 23 / len(EN)
    assert s["q_dup_para_frac"] == 0.0
    # "The cat" x2 (7 chars), "The cat sat" x2 (11), "The cat sat on" x2 (14)
    assert s["q_top_2gram_frac"] == 14 / len(EN)
    assert s["q_top_3gram_frac"] == 22 / len(EN)
    assert s["q_top_4gram_frac"] == 28 / len(EN)
    # the second "The cat sat on the mat ." repeats the first: 5..7-grams count it once
    assert s["q_dup_5gram_frac"] == len("Thecatsatonthe") / len(EN)
    assert s["q_dup_7gram_frac"] == len("Thecatsatonthemat.") / len(EN)
    assert s["q_dup_8gram_frac"] == 0.0
    # FineWeb: 5 non-blank lines, 3 end in . ! (… is not terminal), all short
    assert s["q_nonblank_lines"] == 5
    assert s["q_line_punct_frac"] == 3 / 5
    assert s["q_short_lines_frac"] == 1.0
    assert s["q_fw_dup_line_char_frac"] == 23 / (len(EN) - EN.count("\n"))
    assert s["q_newlines_per_word"] == EN.count("\n") / 31
    assert s["q_cjk_frac"] == 0.0
    assert 0 < s["q_punct_frac"] < 0.2
    # C4: three lines end in terminal punctuation with >= 3 words; "and..." ends no sentence
    assert (s["q_c4_sentences"], s["q_c4_lorem_lines"], s["q_c4_curly_lines"]) == (3, 0, 0)


def test_repetition_signals():
    para = "One two three four five six seven.\nEight nine ten eleven."
    s = sig(f"{para}\n\n{para}\n\nSomething else entirely here.")
    assert s["q_dup_para_frac"] == 1 / 3
    assert s["q_dup_para_char_frac"] == len(para) / len(f"{para}\n\n{para}\n\nSomething else entirely here.")
    assert s["q_dup_line_frac"] == 2 / 5
    # n-gram repetition: a 6-word phrase three times
    text = "alpha beta gamma delta epsilon zeta " * 3 + "omega"
    s = sig(text)
    # datatrove's greedy scan: the 5-gram at word 6 repeats word 0's (26 chars), the scan jumps
    # to word 11, whose 5-gram repeats word 5's (23 chars), and jumps past the end
    assert s["q_dup_5gram_frac"] == (26 + 23) / len(text)
    assert s["q_top_2gram_frac"] == 3 * len("alpha beta") / len(text)
    assert sig("")["q_dup_line_frac"] == 0.0 and sig("")["q_chars"] == 0


def test_c4_signals():
    good = "This is a proper sentence. It has two parts.\n" * 3
    assert sig(good)["q_c4_sentences"] == 6
    s = sig("Lorem ipsum dolor sit amet.\n" + good)
    assert s["q_c4_lorem_lines"] == 1
    s = sig("Some code looks like { this }.\nEnable javascript { please } now.\n" + good)
    assert s["q_c4_curly_lines"] == 1  # the javascript line is removed before the bracket check
    s = sig("no terminal punctuation here\nNor here\n" + good)
    assert s["q_c4_sentences"] == 6 and s["q_c4_all_sentences"] == 7  # "Nor here" has < 3 words


def test_chinese_signals():
    s = sig(ZH, "zh")
    assert s["q_lang"] == "zh"
    assert s["q_tokens"] == 20 and s["q_words"] == 17  # 。，！ are punctuation
    assert s["q_stopwords"] == 5  # 在 是 年 月 日
    assert s["q_cjk_frac"] == pytest.approx(25 / 34)
    assert s["q_line_punct_frac"] == 1.0  # ends with ！
    assert sig(ZH, "en")["q_stopwords"] == 0  # English stop words for an English row
    assert sig(ZH, "zh", stopwords={"zh": ["天气"]})["q_stopwords"] == 1
    assert sig(ZH, "zh", zh_segmenter="chars")["q_mean_word_len"] < s["q_mean_word_len"]


def test_signals_are_columns_in_input_order():
    texts = [EN, None, ZH, NATURAL]
    out = compute_signals(pa.array(texts), ["en", "en", "zh", "en"])
    assert out.height == 4 and all(c.startswith("q_") for c in out.columns)
    assert out.get_column("q_chars").to_list() == [len(EN), 0, len(ZH), len(NATURAL)]
    assert out.get_column("q_lang").to_list() == ["en", "en", "zh", "en"]
    assert compute_signals([]).height == 0


# --------------------------------------------------------------------------- presets


def test_presets_and_overrides():
    assert set(PRESETS) == {"gopher", "c4", "fineweb", "zh", "wiki-zh"}
    g = resolve_preset("gopher")
    assert g["max_dup_line_frac"] == 0.3 and g["min_words"] == 50 and g["max_top_4gram_frac"] == 0.16
    assert resolve_preset("zh")["max_dup_line_frac"] == 0.287 and "max_dup_para_frac" not in resolve_preset("zh")
    r = resolve_preset("gopher", {"max_dup_line_frac": 0.5, "min_stopwords": None, "max_cjk_frac": 0.1})
    assert r["max_dup_line_frac"] == 0.5 and "min_stopwords" not in r and list(r)[-1] == "max_cjk_frac"
    with pytest.raises(ValueError, match="unknown quality rule"):
        resolve_preset("gopher", {"max_nonsense": 1})
    with pytest.raises(ValueError, match="unknown quality preset"):
        resolve_preset("nope")


def test_decide_first_failing_rule_and_values():
    no_stop = re.sub(r"\b(the|be|to|of|and|that|have|with) ", "", NATURAL)
    texts = [NATURAL, "too short", "\n".join(["the same line here again and again"] * 40), no_stop]
    s = compute_signals(texts)
    v = decide(s, "gopher")
    assert v.get_column("keep").to_list() == [True, False, False, False]
    assert v.get_column("reason").to_list() == [None, "quality:words<50", "quality:dup_line_frac>0.3", "quality:stopwords<2"]
    row = v.row(1, named=True)
    assert row["signal"] == "q_words" and row["value"] == 2 and row["threshold"] == 50
    # thresholds change without recomputing signals
    v2 = decide(s, "gopher", {"min_words": 1, "min_stopwords": None})
    # "too short" now passes the quality rules; its only 2-gram is all of its 9 characters
    assert v2.get_column("keep").to_list()[1] is False and v2.get_column("reason")[1] == "quality:top_2gram_frac>0.2"
    assert v2.get_column("keep")[3] is True
    # one preset per row
    v3 = decide(s, ["gopher", "c4", "gopher", "gopher"])
    assert v3.get_column("reason")[1] == "quality:c4_sentences<5"


# --------------------------------------------------------------------------- stage


def _table(texts, langs=None):
    cols = {"id": [f"d{i}" for i in range(len(texts))], "source": ["s"] * len(texts), "title": [f"t{i}" for i in range(len(texts))], "text": texts}
    if langs is not None:
        cols["lang"] = langs
    return pa.table(cols)


def test_stage_ledger_and_kept_columns():
    cls = get_stage_class("quality_filter")
    stage = cls(cls.Params.model_validate({"preset": "gopher"}), "quality")
    table = _table([NATURAL, "too short", "\n".join(["the same line here again and again"] * 40)])
    kept, removed = stage.process(table)
    assert kept.num_rows + removed.num_rows == table.num_rows
    assert kept.column("id").to_pylist() == ["d0"]
    assert "q_dup_line_frac" in kept.column_names and "q_words" in kept.column_names and kept.column("text").type == pa.string()
    assert removed.schema == REMOVED_SCHEMA
    assert removed.column("reason").to_pylist() == ["quality:words<50", "quality:dup_line_frac>0.3"]
    assert set(removed.column("node").to_pylist()) == {"quality"}
    sigs = [json.loads(s) for s in removed.column("signals").to_pylist()]
    assert sigs[0]["q_words"] == 2 and sigs[0]["threshold"] == 50 and sigs[0]["rule"] == "min_words" and sigs[0]["preset"] == "gopher"
    assert sigs[1]["q_dup_line_frac"] == 39 / 40
    # signals off; rerunning on a table that already has q_* columns replaces them
    stage2 = cls(cls.Params.model_validate({"preset": "gopher", "keep_signals": False}), "quality")
    kept2, _ = stage2.process(kept)
    assert not any(c.startswith("q_") for c in kept2.column_names) and kept2.num_rows == 1


def test_stage_signals_rules_same_decisions():
    cls = get_stage_class("quality_filter")
    zh_doc = "北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。" * 3
    table = _table([NATURAL, "too short", zh_doc, "\n".join(["重复的一行文字在这里"] * 30), ZH], ["en", "en", "zh", "zh", "zh"])
    runs = {}
    for signals in ("all", "rules"):
        stage = cls(cls.Params.model_validate({"preset": "auto", "signals": signals}), "quality")
        runs[signals] = stage.process(table)
    (kept_all, removed_all), (kept_rules, removed_rules) = runs["all"], runs["rules"]
    assert removed_all.column("reason").to_pylist() == removed_rules.column("reason").to_pylist()
    assert removed_all.column("signals").to_pylist() == removed_rules.column("signals").to_pylist()
    assert kept_all.column("id").to_pylist() == kept_rules.column("id").to_pylist()
    q_rules = [c for c in kept_rules.column_names if c.startswith("q_")]
    assert "q_c4_sentences" in kept_all.column_names and "q_c4_sentences" not in q_rules
    assert {"q_lang", "q_chars", "q_words", "q_dup_line_frac", "q_stopwords"} <= set(q_rules)
    assert kept_rules.select(q_rules).equals(kept_all.select(q_rules))


def test_stage_languages_and_params():
    cls = get_stage_class("quality_filter")
    with pytest.raises(ValidationError):
        cls.Params.model_validate({"preset": "gopher", "bogus": 1})
    with pytest.raises(ValidationError):
        cls.Params.model_validate({"overrides": {"max_unknown_signal": 1}})
    with pytest.raises(ValidationError):
        cls.Params.model_validate({"preset": "nope"})
    assert cls.Params().preset == "auto"
    zh_doc = ("北京是中华人民共和国的首都，也是全国的政治、文化和国际交往中心。" "这座城市有三千多年的建城史和八百多年的建都史，在历史上曾经是多个朝代的都城。" "今天的北京是一座现代化的国际大都市，人口超过两千万。") * 2
    stage = cls(cls.Params(), "q")
    # auto: lang column decides the tokenizer and (preset auto) the preset
    kept, removed = stage.process(_table([NATURAL, zh_doc], ["en", "zh-Hans"]))
    assert kept.num_rows + removed.num_rows == 2
    langs = dict(zip(kept.column("id").to_pylist(), kept.column("q_lang").to_pylist()))
    ledger = {r["id"]: json.loads(r["signals"]) for r in removed.to_pylist()}
    assert langs.get("d0", ledger.get("d0", {}).get("lang")) == "en"
    assert langs.get("d1", ledger.get("d1", {}).get("lang")) == "zh"
    for sid, s in ledger.items():
        assert s["preset"] == ("zh" if sid == "d1" else "gopher")
    # no lang column: the CJK share decides
    assert stage.languages(_table([NATURAL, zh_doc])) == ["en", "zh"]
    assert stage.languages(_table([NATURAL, zh_doc, zh_doc], ["und", None, "en"])) == ["en", "zh", "en"]
    forced = cls(cls.Params(language="zh"), "q")
    assert forced.languages(_table([NATURAL])) == ["zh"]
    assert [normalize_lang(x) for x in ("zh", "ZH-Hant", "cmn_Hani", "__label__zh", "en", "fr", None, "und")] == ["zh", "zh", "zh", "zh", "en", "en", "en", "en"]
    assert "quality_rules" in stage.provenance()


# --------------------------------------------------------------------------- datatrove oracle


@pytest.fixture(scope="module")
def english_eval():
    if not corpus.available():
        pytest.skip(f"shared corpora not present under {corpus.corpora_dir()}")
    pytest.importorskip("datatrove")
    pytest.importorskip("spacy")
    import os

    from pipeline.text.quality import oracle

    docs = corpus.english_corpus()
    return docs, oracle.datatrove_gopher(docs, workers=min(2, os.cpu_count() or 1))


def test_gopher_preset_agrees_with_datatrove(english_eval):
    docs, ref = english_eval
    assert len(docs) >= 1500
    verdict = decide(compute_signals(docs), "gopher")
    ours = verdict.get_column("keep").to_list()
    theirs = [keep for keep, _ in ref]
    agreement = sum(a == b for a, b in zip(ours, theirs)) / len(docs)
    disagreements = [(i, verdict.get_column("reason")[i], ref[i][1]) for i in range(len(docs)) if ours[i] != theirs[i]]
    assert agreement >= 0.995, disagreements[:20]
    # the corpus exercises every rule: each of datatrove's reasons occurs, and both outcomes do
    reasons = Counter(r for _, rs in ref for r in rs)
    expected = {
        "gopher_short_doc", "gopher_long_doc", "gopher_below_avg_threshold", "gopher_above_avg_threshold",
        "gopher_too_many_hashes", "gopher_too_many_ellipsis", "gopher_too_many_bullets", "gopher_too_many_end_ellipsis",
        "gopher_below_alpha_threshold", "gopher_enough_stop_words", "dup_para_frac", "dup_para_char_frac", "dup_line_frac",
        "dup_line_char_frac", "top_2_gram", "top_3_gram", "top_4_gram", "duplicated_5_n_grams", "duplicated_6_n_grams",
        "duplicated_7_n_grams", "duplicated_8_n_grams", "duplicated_9_n_grams", "duplicated_10_n_grams",
    }
    assert expected <= set(reasons), expected - set(reasons)
    assert 0.2 < sum(theirs) / len(theirs) < 0.8


def test_zh_preset_agrees_with_fineweb2_block():
    if not (corpus.corpora_dir() / "zhwiki-articles").is_dir():
        pytest.skip("shared zhwiki articles not present")
    pytest.importorskip("datatrove")
    pytest.importorskip("spacy")
    from pipeline.text.quality import oracle

    docs = corpus.chinese_corpus()[::8]  # 38 documents: datatrove's jieba path is slow
    ours = decide(compute_signals(docs, ["zh"] * len(docs)), "zh").get_column("keep").to_list()
    theirs = oracle.pipeline_keep(docs, oracle.fineweb2_zh_filters())
    assert sum(a == b for a, b in zip(ours, theirs)) / len(docs) >= 0.98
    assert 0 < sum(theirs) < len(docs)


# --------------------------------------------------------------------------- against the code before the vectorized jieba

BEFORE = "323f97b"  # the commit before quality_filter's vectorized jieba


@pytest.mark.slow
def test_same_signals_and_decisions_as_before(tmp_path):
    """Every signal, hence every decision, equals the implementation of commit 323f97b (Python
    jieba, block by block) on Chinese and English text; skipped without git or that commit."""
    import subprocess
    import sys
    from pathlib import Path

    if not (corpus.corpora_dir() / "zhwiki-articles").is_dir() or not corpus.available():
        pytest.skip("shared corpora not present")
    repo = Path(__file__).resolve().parents[1]
    try:
        archive = subprocess.run(["git", "-C", str(repo), "archive", BEFORE, "pipeline/text/quality"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git or commit {BEFORE} not available")
    old = tmp_path / "old"
    old.mkdir()
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    (old / "pipeline" / "__init__.py").touch()
    (old / "pipeline" / "text" / "__init__.py").touch()
    zh = corpus.chinese_corpus()[::3] + ["。".join(_random_blocks(300, seed=2)), "\n".join(TRICKY_BLOCKS)]
    en = corpus.english_corpus(n_derived=300)
    script = (
        "import pickle, sys; sys.path.insert(0, sys.argv[1]);"
        "from pipeline.text.quality.signals import compute_signals;"
        "texts, langs = pickle.load(open(sys.argv[2], 'rb'));"
        "compute_signals(texts, langs).write_parquet(sys.argv[3])"
    )
    import pickle

    for name, texts, lang in (("zh", zh, "zh"), ("en", en, "en")):
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps((texts, [lang] * len(texts))))
        subprocess.run([sys.executable, "-c", script, str(old), str(path), str(tmp_path / f"{name}.parquet")], check=True, cwd=tmp_path)
        before = pl.read_parquet(tmp_path / f"{name}.parquet")
        now = compute_signals(texts, [lang] * len(texts))
        assert now.equals(before), [c for c in now.columns if not now.get_column(c).equals(before.get_column(c))]
        for preset in (["wiki-zh", "zh"] if lang == "zh" else ["gopher", "fineweb", "c4"]):
            assert decide(now, preset).equals(decide(before, preset))
