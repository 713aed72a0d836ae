"""Dedup: exact and near duplicates, CJK shingles, the kept-document rule, accounting, resume, runner."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from rich.console import Console

from pipeline.core.stage import DOC_SCHEMA, NodeContext, NodeOutput, RunContext
from pipeline.exec.executors import LocalExecutor
from pipeline.text import minhash as mh
from stages import dedup as dd

COMMON = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"


# ---------------------------------------------------------------------------------- helpers
def zh_text(seed: int, sentences: int = 30) -> str:
    r = random.Random(seed)
    return "".join("".join(r.choice(COMMON) for _ in range(r.randint(12, 30))) + r.choice("，。；！？") for _ in range(sentences))


def en_text(seed: int, words: int = 200) -> str:
    r = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("pre", "con", "de", "re", "in", "ex", "sub", "trans") for b in ("tion", "ment", "ness", "ly", "ing", "ed", "al", "ive", "ous", "ate")]
    return " ".join(r.choice(vocab) for _ in range(words)) + "."


def edit(text: str, seed: int, n: int, op: str = "substitute") -> str:
    r = random.Random(seed)
    chars = list(text)
    for _ in range(n):
        i = r.randrange(len(chars))
        if op == "substitute":
            chars[i] = r.choice(COMMON)
        elif op == "insert":
            chars.insert(i, r.choice(COMMON))
        else:
            del chars[i]
    return "".join(chars)


def write_parts(folder: Path, parts: list[list[tuple[str, str]]], source: str = "src") -> NodeOutput:
    folder.mkdir(parents=True, exist_ok=True)
    for i, docs in enumerate(parts):
        n = len(docs)
        table = pa.table(
            {
                "id": [d for d, _ in docs],
                "source": [source] * n,
                "license": ["CC-BY-SA-4.0"] * n,
                "title": [None] * n,
                "url": [None] * n,
                "timestamp": [None] * n,
                "revision_id": [None] * n,
                "text": [t for _, t in docs],
            },
            schema=DOC_SCHEMA,
        )
        pq.write_table(table, folder / f"part-{i:05d}.parquet")
    return NodeOutput(name=folder.name, dir=folder, fingerprint=folder.name, stats={})


def run_dedup(node_dir: Path, inputs: list[NodeOutput], workers: int = 1, **params) -> dict:
    console = Console(quiet=True)
    with LocalExecutor(workers=workers, console=console) as ex:
        ctx = NodeContext(
            name="dedup",
            dir=node_dir,
            inputs=inputs,
            executor=ex,
            run=RunContext(out_dir=node_dir.parent, cache_dir=node_dir.parent, console=console, manifest=None, progress=False),
        )
        stage = dd.Dedup(dd.Params(**params), "dedup")
        extra = stage.run(ctx)
    kept = pa.concat_tables([pq.read_table(p) for p in sorted(node_dir.glob("part-*.parquet"))])
    removed = pa.concat_tables([pq.read_table(p) for p in sorted((node_dir / "removed").glob("part-*.parquet"))])
    tasks = [json.loads(p.read_text()) for p in sorted((node_dir / "_tasks").glob("part-*.json"))]
    return {"kept": kept, "removed": removed, "extra": extra, "tasks": tasks, "ctx": ctx}


def clusters(res: dict) -> dict[str, int]:
    out = dict(zip(res["kept"]["id"].to_pylist(), res["kept"]["dup_cluster_id"].to_pylist()))
    for rid, sig in zip(res["removed"]["id"].to_pylist(), res["removed"]["signals"].to_pylist()):
        out[rid] = json.loads(sig)["cluster_id"]
    return out


def reasons(res: dict) -> dict[str, str]:
    return dict(zip(res["removed"]["id"].to_pylist(), res["removed"]["reason"].to_pylist()))


# ---------------------------------------------------------------------------------- minhash unit tests
def test_normalized_key_folds_width_case_punctuation_and_script():
    h = mh.MinHasher(mh.MinHashConfig())
    variants = ["漢字與繁體，ＡＢＣ　１２３！", "汉字与繁体,abc 123!", "汉字与繁体abc123", "  汉字与繁体 —— ABC … 123  "]
    res = h.batch(variants)
    assert len({tuple(k) for k in res.exact.tolist()}) == 1
    assert res.char_mode.all() and not res.empty.any()
    # combining sequences go through unicodedata (NFKC composes them): same key as the precomposed text
    res = h.batch(["Cafe\u0301 ﬁne", "Café fine"])
    assert tuple(res.exact[0]) == tuple(res.exact[1])
    res = h.batch(["", "。。。 ！！", "x"])
    assert res.empty.tolist() == [True, True, False] and res.has_shingles.tolist() == [False, False, True]


def test_table_normalization_equals_unicodedata():
    """The per-code-point NFKC+lower table (with its slow path) gives exactly NFKC(text).lower()."""
    import unicodedata

    h = mh.MinHasher(mh.MinHashConfig(t2s=False))
    rng = random.Random(5)
    pools = [
        "abcXYZ ΣΑΒΓσς İı",
        "ＡＢＣａｂｃ０１２，。！？（）「」　",
        "ｶﾞｷﾞﾊﾟ ﾞﾟ",  # half-width kana and voiced marks (compose under NFKC)
        "\u0301\u0308\u0323e\u0301o\u0308",  # combining marks
        "\u1100\u1161\u11a8\uac00",  # Hangul jamo (compose) and a syllable
        "ﬁﬂ㈠㍻①②Ⅻ…‥",  # ligatures, squared words, enclosed numbers, ellipses
        "漢字国學會発進說東",
        "\u0915\u093e\u0bc6\u0bbe\u0d46\u0d3e",  # Indic vowel signs (some compose)
    ]
    texts = ["".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    cp, seps = h.normalize_batch(texts)
    pieces = np.split(cp, seps)
    assert len(pieces) == len(texts)
    drop = h.tables.drop
    for text, piece in zip(texts, pieces):
        piece = piece[piece != 0]
        ref = np.frombuffer(unicodedata.normalize("NFKC", text).lower().encode("utf-32-le"), dtype=np.uint32)
        assert piece[~drop[piece]].tolist() == ref[~drop[ref]].tolist(), text


def test_script_decides_character_or_word_shingles():
    h = mh.MinHasher(mh.MinHashConfig())
    res = h.batch([zh_text(1), en_text(1), "日本語の文章です。テストとして書きました。", "English text with a 中文 name in it " * 5])
    assert res.char_mode.tolist() == [True, False, True, False]
    always = mh.MinHasher(mh.MinHashConfig(char_mode="always")).batch([en_text(1)])
    assert always.char_mode.all()


def test_signature_estimates_jaccard():
    h = mh.MinHasher(mh.MinHashConfig(num_perm=256, bands=32, rows=8))
    a = zh_text(7, 60)
    b = edit(a, 1, 15)
    res = h.batch([a, b, zh_text(8, 60)])

    def shingles(t):
        s = "".join(c for c in t if c not in "，。；！？")
        return {s[i : i + 5] for i in range(len(s) - 4)}

    true_j = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
    est = mh.estimate_jaccard(res.sig[:1], res.sig[1:2])[0]
    assert abs(est - true_j) < 0.1
    assert mh.estimate_jaccard(res.sig[:1], res.sig[2:3])[0] < 0.05


def test_short_documents_give_one_shingle():
    h = mh.MinHasher(mh.MinHashConfig())
    res = h.batch(["中文", "中文", "two words", "two words"])
    assert res.has_shingles.all()
    assert (res.sig[0] == res.sig[1]).all() and (res.sig[2] == res.sig[3]).all()
    assert not (res.sig[0] == res.sig[2]).all()


def test_batching_does_not_change_signatures():
    h = mh.MinHasher(mh.MinHashConfig(chunk=64))
    texts = [zh_text(i, 5) for i in range(5)] + [en_text(i, 40) for i in range(5)] + ["", "a"]
    together = h.batch(texts)
    for i, t in enumerate(texts):
        alone = h.batch([t])
        assert (alone.sig[0] == together.sig[i]).all() and (alone.exact[0] == together.exact[i]).all()


def char_shingles(text: str, n: int = 5) -> set[str]:
    """Character n-grams of a zh_text/edit document as the stage normalizes it (its punctuation dropped)."""
    s = "".join(c for c in text if c not in "，。；！？")
    return {s[i : i + n] for i in range(len(s) - n + 1)}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = char_shingles(a), char_shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_shingle_sets_and_exact_jaccard_match_python_sets():
    h = mh.MinHasher(mh.MinHashConfig())
    base = [zh_text(40 + i, 20) for i in range(4)]
    texts = base + [edit(t, i, 3 * i + 1) for i, t in enumerate(base)] + [en_text(1, 50), en_text(1, 50).replace("ly", "ed"), "中文", "", "。！"]
    res = h.batch(texts, shingles=True)
    plain = h.batch(texts)
    assert (res.sig == plain.sig).all() and plain.shingles is None  # the sets change nothing else
    offsets = np.concatenate([[0], np.cumsum(res.shingle_counts)])
    assert offsets[-1] == len(res.shingles)
    for d, t in enumerate(texts[:8]):
        seg = res.shingles[offsets[d] : offsets[d + 1]]
        assert (np.diff(seg.astype(np.int64)) > 0).all()  # distinct, ascending
        assert len(seg) == len(char_shingles(t))  # one hash per distinct 5-gram (no collision here)
    assert res.shingle_counts[10] == 1 and res.shingle_counts[11] == 0 and res.shingle_counts[12] == 0  # short: one shingle; empty: none
    a = np.array([0, 1, 2, 3, 8, 0, 10])
    b = np.array([4, 5, 6, 7, 9, 0, 10])
    got = mh.exact_jaccard(res.shingles, offsets, a, b)
    for i in range(4):
        assert got[i] == pytest.approx(true_jaccard(texts[i], texts[i + 4]), abs=1e-12)
    words = [set(zip(*(t.split()[k:] for k in range(3)))) for t in texts[8:10]]
    assert got[4] == pytest.approx(len(words[0] & words[1]) / len(words[0] | words[1]), abs=1e-12)
    assert got[5] == 1.0 and got[6] == 1.0
    # a set shared by many pairs, in any order of the pairs
    pairs = [(3, 0), (0, 1), (0, 4), (0, 2), (7, 3)]
    many = mh.exact_jaccard(res.shingles, offsets, np.array([x for x, _ in pairs]), np.array([y for _, y in pairs]))
    assert many.tolist() == pytest.approx([true_jaccard(texts[x], texts[y]) for x, y in pairs], abs=1e-12)


def _bucket_edges(buckets: list[list[int]], good: set[tuple[int, int]], **kw) -> set[tuple[int, int]]:
    """Run the near-bucket linking on buckets of keys (each ascending) with a check that accepts the pairs in ``good``."""
    k = np.array([x for b in buckets for x in b], np.int64)
    first = np.array([i == 0 for b in buckets for i in range(len(b))], bool)
    calls = []

    def accept(u, v):
        calls.append(len(u))
        return np.array([(min(x, y), max(x, y)) in good for x, y in zip(u.tolist(), v.tolist())], bool)

    u, v, checks, _ = dd._near_edges(k, first, accept, **kw)
    assert checks == sum(calls)
    return {(min(x, y), max(x, y)) for x, y in zip(u.tolist(), v.tolist())}


def test_near_buckets_check_every_pair_or_every_leader():
    # small buckets: every pair. Linking each member to the first document, else the previous one,
    # missed (a benchmark case) [copy1, copy0, base] with base ~ copy1 and base ~ copy0 but copy0 !~ copy1:
    # base was linked to copy1 at once and never compared with copy0, and copy0 only tried copy1 ...
    assert _bucket_edges([[10, 20, 30]], {(10, 30), (20, 30)}) == {(10, 30), (20, 30)}
    # ... and [A, B, C, D] with D ~ B only: D tried A, then C. Leaders alone would miss [copy1, base,
    # copy0] with base ~ copy1 and copy0 ~ base only (another benchmark case): base is no leader
    assert _bucket_edges([[10, 20, 30, 40]], {(20, 40)}) == {(20, 40)}
    assert _bucket_edges([[10, 20, 30]], {(10, 20), (20, 30)}) == {(10, 20), (20, 30)}
    assert _bucket_edges([[1, 2, 3], [5, 6]], {(1, 2), (1, 3), (5, 6)}) == {(1, 2), (1, 3), (5, 6)}
    # large buckets: leaders; every member is checked against every leader before it
    big = list(range(100, 140))
    good = {(100, x) for x in range(101, 120)} | {(120, x) for x in range(121, 140)} | {(105, 125)}
    edges = _bucket_edges([big, [1, 2]], good | {(1, 2)}, all_pairs_max=4, max_leaders=8)
    assert {(100, x) for x in range(101, 120)} | {(120, x) for x in range(121, 140)} | {(1, 2)} <= edges
    # a bucket of 40 copies of one text costs one check per member
    k = np.arange(40, dtype=np.int64)
    first = np.zeros(40, bool)
    first[0] = True
    u, v, checks, rounds = dd._near_edges(k, first, lambda a, b: np.ones(len(a), bool), all_pairs_max=16)
    assert checks == 39 and rounds == 1 and set(v.tolist()) == {0}
    # at most max_leaders checks per member when nothing matches
    u, v, checks, rounds = dd._near_edges(k, first, lambda a, b: np.zeros(len(a), bool), all_pairs_max=16, max_leaders=3)
    assert rounds == 3 and checks == 39 + 38 + 37 and len(u) == 0


def test_signature_gate_is_a_binomial_tail():
    from math import comb

    def below(c: int, k: int, p: float) -> float:  # P(Binomial(k, p) < c)
        return sum(comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(c))

    for k, t, tail in ((112, 0.7, 1e-12), (112, 0.8, 1e-9), (224, 0.7, 1e-12), (16, 0.7, 1e-12)):
        c = mh.signature_gate(k, t, tail)
        assert below(c, k, t) <= tail < below(c + 1, k, t)
    assert mh.signature_gate(112, 0.7, 1e-12) == 42 and mh.signature_gate(16, 0.7, 1e-12) == 0


def test_optimal_bands_rows():
    assert mh.optimal_bands_rows(0.7, 112) == (14, 8)
    b, r = mh.optimal_bands_rows(0.7, 112, 0.2, 0.8)
    assert b * r == 112 and mh.lsh_probability(0.7, b, r) > mh.lsh_probability(0.7, 14, 8)
    assert mh.recall_bands_rows(0.7, 112) == (28, 4) and mh.recall_bands_rows(0.8, 112) == (16, 7)
    assert mh.lsh_probability(0.7, 28, 4) >= 0.95


def test_connected_components_label_is_smallest_member():
    rng = np.random.default_rng(0)
    n = 2000
    u = rng.integers(0, n, 1500)
    v = rng.integers(0, n, 1500)
    labels, passes, _ = mh.connected_components(n, lambda: iter([(u[:700], v[:700]), (u[700:], v[700:])]))
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u.tolist(), v.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    expected = [find(x) for x in range(n)]
    assert labels.tolist() == expected
    assert passes >= 1


def test_params_validation():
    with pytest.raises(ValidationError):
        dd.Params(bands=10, rows=10)
    with pytest.raises(ValidationError):
        dd.Params(exact=False, near=False)
    with pytest.raises(ValidationError):
        dd.Params(bands=5)  # does not divide 112
    assert dd.Params(bands=28).lsh_shape() == (28, 4) and dd.Params(rows=8).lsh_shape() == (14, 8)
    assert dd.Params().lsh_shape() == (28, 4)  # verification on: recall-oriented S-curve
    assert dd.Params(verify=False).lsh_shape() == (14, 8)
    assert dd.Params().verify == dd.Params(verify=True).verify == "exact" and dd.Params(verify=False).verify == "off"
    assert dd.Params(verify="estimate").lsh_shape() == (28, 4) and dd.Params(verify="off").lsh_shape() == (14, 8)
    with pytest.raises(ValidationError):
        dd.Params(verify="signatures")


# ---------------------------------------------------------------------------------- stage tests
def test_exact_duplicates(tmp_path):
    a, b = zh_text(1), en_text(2)
    inp = write_parts(
        tmp_path / "in",
        [
            [("a", a), ("b", b), ("a-ws", a.replace("，", ", ").replace("。", "．") + "\n\n")],
            [("b-case", b.upper()), ("a-again", a), ("c", zh_text(3))],
        ],
    )
    res = run_dedup(tmp_path / "dedup", [inp], near=False)
    assert sorted(res["kept"]["id"].to_pylist()) == ["a", "b", "c"]
    assert reasons(res) == {"a-ws": "dedup:exact dup of a", "b-case": "dedup:exact dup of b", "a-again": "dedup:exact dup of a"}
    sig = json.loads(res["removed"].filter(pa.compute.equal(res["removed"]["id"], "a-again"))["signals"][0].as_py())
    assert sig["match"] == "exact" and sig["jaccard"] == 1.0 and sig["cluster_size"] == 3 and sig["kept_id"] == "a" and sig["cluster_id"] == 0
    assert res["removed"]["node"].to_pylist() == ["dedup"] * 3
    by_reason = {}
    for t in res["tasks"]:
        for k, v in t["removed_by_reason"].items():
            by_reason[k] = by_reason.get(k, 0) + v
    assert by_reason == {"dedup:exact dup": 3}


def test_chinese_near_duplicates_found(tmp_path):
    base = [zh_text(100 + i, 40) for i in range(6)]
    docs = [(f"doc{i}", t) for i, t in enumerate(base)]
    docs += [("doc0-sub", edit(base[0], 1, 8)), ("doc1-ins", edit(base[1], 2, 8, "insert")), ("doc2-del", edit(base[2], 3, 8, "delete"))]
    docs += [("doc3-trunc", base[3][: int(len(base[3]) * 0.9)]), ("doc4-tail", base[4] + "本文来源于网络。")]
    docs += [("doc5-trad", base[5].translate(str.maketrans("国学会发进说东", "國學會發進說東")))]
    inp = write_parts(tmp_path / "in", [docs[:5], docs[5:]])
    res = run_dedup(tmp_path / "dedup", [inp])
    assert sorted(res["kept"]["id"].to_pylist()) == [f"doc{i}" for i in range(6)]
    r = reasons(res)
    assert r["doc0-sub"] == "dedup:near dup of doc0" and r["doc1-ins"] == "dedup:near dup of doc1" and r["doc2-del"] == "dedup:near dup of doc2"
    assert r["doc3-trunc"] == "dedup:near dup of doc3" and r["doc4-tail"] == "dedup:near dup of doc4"
    assert r["doc5-trad"] == "dedup:exact dup of doc5"  # t2s folds Traditional characters into the key
    for s in res["removed"]["signals"].to_pylist():
        s = json.loads(s)
        assert s["jaccard"] >= 0.7 and s["cluster_size"] == 2


def test_real_zhwiki_near_duplicates_and_boilerplate(tmp_path, shared_dir):
    paths = sorted((shared_dir / "corpora" / "zhwiki-articles").glob("*.txt"), key=lambda p: int(p.stem))
    arts = [p.read_text(encoding="utf-8") for p in paths]
    arts = [a[:3000] for a in arts if len(a) >= 1500][:20]
    boiler = "本文来源于维基百科，遵循知识共享署名-相同方式共享3.0协议。转载请注明出处并保留原文链接，图片版权归原作者所有，如有侵权请联系删除。" * 3
    docs = [(f"art{i}", a[:700] + "\n" + boiler) for i, a in enumerate(arts)]  # unrelated articles, ~35% shared boilerplate
    docs += [(f"art{i}-edited", edit(a[:700] + "\n" + boiler, 10 + i, 7)) for i, a in enumerate(arts[:5])]
    inp = write_parts(tmp_path / "in", [docs[:12], docs[12:]])
    res = run_dedup(tmp_path / "dedup", [inp], workers=2)
    assert sorted(reasons(res)) == [f"art{i}-edited" for i in range(5)]
    assert all(r == f"dedup:near dup of {k.removesuffix('-edited')}" for k, r in reasons(res).items())
    assert res["kept"].num_rows == 20 and set(res["kept"]["dup_cluster_size"].to_pylist()) == {1, 2}


def test_unrelated_chinese_articles_sharing_boilerplate_not_merged(tmp_path):
    boiler = "免责声明：本站所有文章仅供参考，不构成任何投资建议，转载请注明出处并保留原文链接。关注我们的微信公众号，获取更多精彩内容。" * 2
    docs = [(f"d{i}", zh_text(500 + i, 12) + boiler) for i in range(30)]  # boilerplate is ~40% of each document
    inp = write_parts(tmp_path / "in", [docs])
    res = run_dedup(tmp_path / "dedup", [inp])
    assert res["removed"].num_rows == 0 and res["kept"].num_rows == 30
    assert res["kept"]["dup_cluster_size"].to_pylist() == [1] * 30
    res = run_dedup(tmp_path / "noverify", [inp], verify=False)
    assert res["removed"].num_rows == 0


@functools.lru_cache(maxsize=1)
def threshold_pairs() -> dict[str, tuple[str, str, float, float]]:
    """Two planted pairs whose 112-permutation estimate falls on the wrong side of 0.7, found by a
    deterministic search over seeds: ``above`` has a true Jaccard in [0.72, 0.8] and an estimate
    below 0.7; ``below`` a true Jaccard in [0.62, 0.69) and an estimate of 0.7 or more. Both share
    an LSH band at the default 28 x 4 shape (they are candidates). Returns (base, copy, true J, estimate)."""
    hasher = mh.MinHasher(mh.MinHashConfig(bands=28, rows=4))  # the stage's defaults (seed 42): same signatures
    found: dict[str, tuple[str, str, float, float]] = {}
    for seed in range(1000, 1400):
        base = zh_text(seed, 40)
        for n in (20, 24, 28, 32, 36):
            copy = edit(base, seed, n)
            j = true_jaccard(base, copy)
            res = hasher.batch([base, copy])
            est = float(mh.estimate_jaccard(res.sig[:1], res.sig[1:])[0])
            bands = hasher.band_hashes(res.sig)
            if not (bands[0] == bands[1]).any():
                continue
            if "above" not in found and 0.72 <= j <= 0.8 and est < 0.7:
                found["above"] = (base, copy, j, est)
            if "below" not in found and 0.62 <= j < 0.69 and est >= 0.7:
                found["below"] = (base, copy, j, est)
        if len(found) == 2:
            return found
    raise AssertionError("no seed found")


def test_pairs_at_the_threshold_are_decided_by_their_exact_jaccard(tmp_path):
    """A true Jaccard above the threshold merges, below it does not, whatever the signatures' estimate
    says (the previous check compared the 112-permutation estimate, sd ~0.045, with the threshold)."""
    pairs = threshold_pairs()
    (a_base, a_copy, a_j, a_est), (b_base, b_copy, b_j, b_est) = pairs["above"], pairs["below"]
    assert a_j >= 0.72 and a_est < 0.7 and b_j < 0.69 and b_est >= 0.7
    others = [(f"o{i}", zh_text(2000 + i, 30)) for i in range(6)]
    inp = write_parts(tmp_path / "in", [[("above", a_base), ("below", b_base)] + others[:3], others[3:] + [("below-copy", b_copy), ("above-copy", a_copy)]])
    res = run_dedup(tmp_path / "dedup", [inp], workers=2)
    assert reasons(res) == {"above-copy": "dedup:near dup of above"}
    (sig,) = [json.loads(x) for x in res["removed"]["signals"].to_pylist()]
    assert sig["jaccard_kind"] == "exact, of the shingle sets" and sig["jaccard"] == pytest.approx(a_j, abs=1e-4)
    assert res["extra"]["dedup"]["bands"] == 28 and res["extra"]["dedup"]["exact_jaccard_pairs"] >= 2
    # the signatures' estimate decides both pairs the other way: what the previous default did
    est = run_dedup(tmp_path / "estimate", [inp], workers=2, verify="estimate")
    assert reasons(est) == {"below-copy": "dedup:near dup of below"}


def test_english_near_duplicates_use_word_shingles(tmp_path):
    a = en_text(5, 300)
    words = a.split()
    words[50] = "completely"
    words[200] = "different"
    docs = [("en", a), ("en-edit", " ".join(words)), ("other", en_text(6, 300))]
    res = run_dedup(tmp_path / "dedup", [write_parts(tmp_path / "in", [docs])])
    assert reasons(res) == {"en-edit": "dedup:near dup of en"}


def _corpus(tmp_path: Path) -> list[NodeOutput]:
    base = [zh_text(200 + i, 25) for i in range(12)]
    rng = random.Random(3)
    a, b = [], []
    for i, t in enumerate(base):
        a.append((f"a{i}", t))
        if i % 3 == 0:
            b.append((f"b{i}-near", edit(t, i, 5)))
        if i % 4 == 0:
            b.append((f"b{i}-exact", t))
    b.append(("b-chain", edit(base[1], 99, 6)))
    rng.shuffle(b)
    # the second input holds duplicates that come *before* some originals in its own order, but
    # input a comes first, so the originals (a*) are always kept
    inp_a = write_parts(tmp_path / "in_a", [a[:5], a[5:]], source="a")
    inp_b = write_parts(tmp_path / "in_b", [b[: len(b) // 2], b[len(b) // 2 :], []], source="b")
    return [inp_a, inp_b]


def test_kept_document_is_first_in_input_order_and_deterministic(tmp_path):
    inputs = _corpus(tmp_path)
    r1 = run_dedup(tmp_path / "w1", inputs, workers=1)
    r2 = run_dedup(tmp_path / "w2", inputs, workers=2, shards=7)
    r3 = run_dedup(tmp_path / "w3", inputs, workers=2)
    for r in (r2, r3):
        assert r["kept"].equals(r1["kept"]) and r["removed"].equals(r1["removed"])
    for i in range(1, 4):  # byte-identical parts
        for name in ("part-00000.parquet", "part-00003.parquet", "removed/part-00002.parquet"):
            assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / f"w{i}" / name).read_bytes()
    assert all(k.startswith("a") for k in r1["kept"]["id"].to_pylist())
    # cluster id = key of the kept document = its position in input order
    keys = {f"a{i}": i for i in range(12)}
    for kid, cid in zip(r1["kept"]["id"].to_pylist(), r1["kept"]["dup_cluster_id"].to_pylist()):
        assert cid == keys[kid]
    for rid, reason in reasons(r1).items():
        src = "a" + rid[1:].split("-")[0] if rid != "b-chain" else "a1"
        assert reason.endswith(f"dup of {src}")


def test_every_document_accounted_and_cluster_columns(tmp_path):
    inputs = _corpus(tmp_path)
    res = run_dedup(tmp_path / "dedup", inputs, workers=2)
    all_ids = [i for inp in inputs for p in inp.parts for i in pq.read_table(p, columns=["id"])["id"].to_pylist()]
    out_ids = res["kept"]["id"].to_pylist() + res["removed"]["id"].to_pylist()
    assert sorted(out_ids) == sorted(all_ids) and len(set(out_ids)) == len(out_ids)
    assert len(res["tasks"]) == 5  # one final task per input part (the empty one too)
    for t in res["tasks"]:
        assert t["in"] == t["out"] + t["removed"]
    assert res["kept"].schema.field("dup_cluster_id").type == pa.int64()
    assert res["kept"].schema.field("dup_cluster_size").type == pa.int32()
    members: dict[int, int] = {}
    for cid in clusters(res).values():
        members[cid] = members.get(cid, 0) + 1
    for cid, size in zip(res["kept"]["dup_cluster_id"].to_pylist(), res["kept"]["dup_cluster_size"].to_pylist()):
        assert members[cid] == size
    assert res["extra"]["dedup"]["documents"] == len(all_ids)
    assert not (tmp_path / "dedup" / "work").exists()  # work files are removed once the node is done


def test_resume_reuses_finished_phases(tmp_path, monkeypatch):
    inputs = _corpus(tmp_path)
    fresh = run_dedup(tmp_path / "fresh", inputs)
    node = tmp_path / "dedup"
    calls = {"sig": 0}
    real_sig, real_bucket = dd._signature_task, dd._bucket_task

    def counting_sig(*args):
        calls["sig"] += 1
        return real_sig(*args)

    def crash(*args):
        raise RuntimeError("killed in the buckets phase")

    monkeypatch.setattr(dd, "_signature_task", counting_sig)
    monkeypatch.setattr(dd, "_bucket_task", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run_dedup(node, inputs)
    assert calls["sig"] == 5
    assert len(list((node / "_tasks").glob("signatures-part-*.json"))) == 5
    assert not list((node / "_tasks").glob("part-*.json"))

    def no_sig(*args):
        raise AssertionError("the signatures phase was done and must not run again")

    monkeypatch.setattr(dd, "_signature_task", no_sig)
    monkeypatch.setattr(dd, "_bucket_task", real_bucket)
    res = run_dedup(node, inputs)
    assert res["kept"].equals(fresh["kept"]) and res["removed"].equals(fresh["removed"])
    assert not list((node / "_tasks").glob("signatures-*"))  # phase markers go with the work files
    # a node whose final phase is complete re-runs nothing, even without its work files
    again = run_dedup(node, inputs)
    assert again["kept"].equals(fresh["kept"])


def test_through_the_runner_with_a_local_jsonl_source(tmp_path, cache_env):
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest

    (tmp_path / "data").mkdir()
    base = [zh_text(300 + i, 20) for i in range(8)]
    lines_a = [{"doc": f"x{i}", "text": t} for i, t in enumerate(base)]
    lines_b = [{"doc": "dup-exact", "text": base[2]}, {"doc": "dup-near", "text": edit(base[5], 1, 4)}, {"doc": "new", "text": zh_text(999, 20)}]
    (tmp_path / "data" / "a.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines_a) + "\n", encoding="utf-8")
    (tmp_path / "data" / "b.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines_b) + "\n", encoding="utf-8")
    (tmp_path / "data" / "c.jsonl").write_text(json.dumps({"doc": "y0", "text": base[0]}, ensure_ascii=False) + "\n", encoding="utf-8")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        """
name: dedup-test
sources:
  - {name: first, kind: local, paths: ["data/a.jsonl", "data/b.jsonl"], license: CC-BY-4.0, id_field: doc}
  - {name: second, kind: local, paths: ["data/c.jsonl"], license: MIT, id_field: doc}
stages:
  - {name: dedup, stage: dedup, inputs: [first, second], params: {threshold: 0.7, shards: 3}}
""",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    console = Console(quiet=True)
    with LocalExecutor(workers=2, console=console) as ex:
        res = run_manifest(load_manifest(manifest), out, ex, console, progress=False)
    assert res.nodes_run == ["first", "second", "dedup"]
    stats = json.loads((out / "stages" / "dedup" / "stats.json").read_text())
    assert stats["in"] == 12 and stats["out"] == 9 and stats["removed"] == 3
    assert stats["removed_by_reason"] == {"dedup:exact dup": 2, "dedup:near dup": 1}
    assert stats["dedup"]["clusters_with_duplicates"] == 3 and stats["dedup"]["shards"] == 3
    ledger = pa.concat_tables([pq.read_table(p) for p in sorted((out / "stages" / "dedup" / "removed").glob("*.parquet"))])
    assert dict(zip(ledger["id"].to_pylist(), ledger["reason"].to_pylist())) == {
        "first/dup-exact": "dedup:exact dup of first/x2",
        "first/dup-near": "dedup:near dup of first/x5",
        "second/y0": "dedup:exact dup of first/x0",  # across sources: the first source comes first
    }
    import datasets

    ds = datasets.load_from_disk(str(out / "data"))
    assert ds.num_rows == 9 and {"dup_cluster_id", "dup_cluster_size"} <= set(ds.column_names)
    sizes = dict(zip(ds["id"], ds["dup_cluster_size"]))
    assert sizes["first/x0"] == 2 and sizes["first/x2"] == 2 and sizes["first/x5"] == 2 and sizes["first/new"] == 1
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["nodes"]["dedup"]["provenance"]["dedup"]["bands"] * prov["nodes"]["dedup"]["provenance"]["dedup"]["rows"] == 112
    with LocalExecutor(workers=2, console=console) as ex:
        again = run_manifest(load_manifest(manifest), out, ex, console, progress=False)
    assert again.nodes_skipped == ["first", "second", "dedup"]
