"""Dedup benchmark: (a) MinHash signature speed, ours vs datatrove's ``MinhashDedupSignature``, on the
same texts in one process; (b) near-duplicate precision / recall / F1 on a planted-duplicate corpus
built deterministically from ``../shared/corpora``, run through the real ``dedup`` stage.

    python benchmarks/bench_dedup.py [--shared ../shared] [--repeat 3] [--workers 2] [--only speed|quality|scale] [--sweep] [--scale N]

The figures in docs/dedup.md come from ``python benchmarks/bench_dedup.py --sweep --scale 300000``.

(a) Both sides use 112 permutations = 14 bands x 8 rows and 5-grams. Ours: ``MinHasher.batch`` +
    ``band_hashes`` (what a ``signatures`` task computes). datatrove: ``get_shingles`` +
    ``get_signature`` per document, with three word tokenizers: a character tokenizer (the same
    shingles as ours on CJK text: its fastest configuration), ``str.split``, and the language's
    default (spaCy; jieba for zh) when spaCy is installed. datatrove 0.10.1 passes ``str`` to
    ``xxhash.xxh64_intdigest``, which xxhash 4 refuses, so its hash function is wrapped to encode
    UTF-8 first (what xxhash 3 did inside). Speed is the best CPU time (``time.process_time``) of
    ``--repeat`` runs, ours and datatrove interleaved, one process (one core; numpy does not thread
    these ufuncs); peak memory is ``tracemalloc``'s peak in a separate run (numpy reports its
    buffers to tracemalloc). The full step (datatrove's ``run``
    writing and sorting its bucket files, ours reading a Parquet part and writing its work files)
    is timed too.
(b) See ``build_corpus``: base documents from zhwiki articles (chunks), zh-sentiment reviews (groups)
    and lid-sentences (10 sentences, 75 languages); planted copies with one edit kind each; hard
    negatives (unrelated documents ending with the same boilerplate; splices and overlaps sharing
    part of their text with another document, Jaccard 1/3 and 0.54-0.6). Metrics are over document
    pairs: a pair is a true duplicate when both come from the same base document; it is predicted
    when the stage puts both in one cluster. Each pair is attributed to the edit kind of its
    planted copy (pairs of two copies of one base document: ``copy-copy``; pairs that must not be
    merged: ``splice``, ``overlap``, ``unrelated``).
(c) ``--scale N``: the whole stage on N synthetic documents (throughput, work files, memory).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import sys
import tempfile
import time
import tracemalloc
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.core.stage import DOC_SCHEMA  # noqa: E402
from pipeline.text import minhash as mh  # noqa: E402

NUM_PERM, BANDS, ROWS, NGRAM = 112, 14, 8, 5


# ================================================================================== corpora
def zhwiki_articles(shared: Path) -> list[tuple[str, str]]:
    return [(f"zhwiki/{p.stem}", p.read_text(encoding="utf-8")) for p in sorted((shared / "corpora" / "zhwiki-articles").glob("*.txt"), key=lambda p: int(p.stem))]


def lid_documents(shared: Path, per_doc: int = 10) -> list[tuple[str, str]]:
    out = []
    for path in sorted((shared / "corpora" / "lid-sentences").glob("*.txt")):
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        joiner = "" if path.stem in ("zh", "ja", "th") else " "
        for i in range(0, len(lines) - per_doc + 1, per_doc):
            out.append((f"lid/{path.stem}/{i // per_doc}", joiner.join(lines[i : i + per_doc])))
    return out


def review_lines(shared: Path) -> list[str]:
    seen, out = set(), []
    for name in ("pos.txt", "neg.txt"):
        for ln in (shared / "corpora" / "zh-sentiment" / name).read_text(encoding="utf-8").splitlines():
            ln = ln.strip()
            if ln and ln not in seen:
                seen.add(ln)
                out.append(ln)
    return out


# ================================================================================== (a) speed
class _Tok:
    """datatrove WordTokenizer adapters (imported lazily)."""

    @staticmethod
    def make(kind: str):
        from datatrove.utils.word_tokenizers import WordTokenizer

        class CharTokenizer(WordTokenizer):
            def word_tokenize(self, text):
                return [c for c in text if not c.isspace()]

            def sent_tokenize(self, text):
                return [text]

            def span_tokenize(self, text):
                return [(0, len(text))]

        class SplitTokenizer(CharTokenizer):
            def word_tokenize(self, text):
                return text.split()

        return {"chars": CharTokenizer, "split": SplitTokenizer}[kind]()


def datatrove_step(language, out_dir: str):
    import xxhash
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    step = MinhashDedupSignature(out_dir, config=MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS), language=language)
    step._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))  # xxhash 4 refuses str
    return step


def run_datatrove(step, texts: list[str]) -> None:
    for t in texts:
        sh = step.get_shingles(t)
        if sh.size:
            step.get_signature(sh)


def run_ours(hasher: mh.MinHasher, texts: list[str], batch_chars: int = 1_000_000) -> None:
    start = 0
    while start < len(texts):
        end, size = start, 0
        while end < len(texts) and (end == start or size + len(texts[end]) <= batch_chars):
            size += len(texts[end])
            end += 1
        res = hasher.batch(texts[start:end])
        hasher.band_hashes(res.sig[res.has_shingles])
        start = end


def best_times(fns: list, repeat: int) -> list[float]:
    """Best CPU time (``time.process_time``: this process only, so other jobs on a shared machine
    inflate it much less than wall time) of ``repeat`` runs of each function, interleaved
    (a, b, a, b, ...) so that what load remains hits both sides alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - t0)
    return best


def peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def enwiki_articles(shared: Path) -> list[str]:
    from pipeline.io.formats import mediawiki_xml as mx
    from pipeline.io.formats.wikitext import wikitext_to_text

    path = shared / "corpora" / "wikidumps" / "enwiki-sample-multistream.xml.bz2"
    pages = mx.iter_pages(mx.iter_text(mx.iter_compressed(path)))
    texts = [wikitext_to_text(p["text"]) for kind, p in pages if kind == "page" and p["ns"] == 0 and p["redirect"] is None]
    return [t for t in texts if len(t) >= 200]


SPACE_LESS = ("zh", "ja", "th", "ko", "my", "km", "lo")  # documents that our auto mode shingles by character


def speed(shared: Path, repeat: int) -> tuple[list[dict], dict]:
    import importlib.util

    have_spacy = importlib.util.find_spec("spacy") is not None
    hasher = mh.MinHasher(mh.MinHashConfig(num_perm=NUM_PERM, bands=BANDS, rows=ROWS, ngram=NGRAM, char_ngram=NGRAM))
    run_ours(hasher, ["warm up 预热"])
    # (texts, baselines): the character tokenizer gives datatrove the same shingles as ours on CJK
    # text, str.split the same on space-separated text; the defaults are what datatrove picks for the language
    sets = {
        "zhwiki articles (character 5-grams)": ([t for _, t in zhwiki_articles(shared)], [("chars", "character tokenizer"), ("zh", "default for zh: spaCy + jieba")]),
        "zh reviews, one per document (character 5-grams)": (review_lines(shared)[:8000], [("chars", "character tokenizer"), ("zh", "default for zh: spaCy + jieba")]),
        "enwiki articles (word 5-grams)": (enwiki_articles(shared), [("split", "str.split"), ("en", "default for en: spaCy")]),
        "lid-sentences, 71 space-separated languages (word 5-grams)": (
            [t for i, t in lid_documents(shared) if i.split("/")[1] not in SPACE_LESS],
            [("split", "str.split")],
        ),
    }
    rows = []
    tmp = tempfile.mkdtemp(prefix="bench-dedup-")
    for name, (texts, baselines) in sets.items():
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        ours_mem = peak_mb(lambda: run_ours(hasher, texts))
        for tok, label in baselines:
            if tok in ("zh", "en") and not have_spacy:
                continue
            step = datatrove_step(tok if tok in ("zh", "en") else _Tok.make(tok), tmp)
            run_datatrove(step, texts[:5])  # load models before timing
            reps = 1 if tok in ("zh", "en") else repeat  # the spaCy runs are slow: once
            ours_s, dt_s = best_times([lambda: run_ours(hasher, texts), lambda: run_datatrove(step, texts)], reps)
            dt_mem = peak_mb(lambda: run_datatrove(step, texts[: max(1, len(texts) // 4)]))
            rows.append(
                {
                    "texts": name,
                    "docs": len(texts),
                    "MB": round(mb, 2),
                    "baseline": f"datatrove, {label}",
                    "ours_docs_s": len(texts) / ours_s,
                    "ours_MB_s": mb / ours_s,
                    "dt_docs_s": len(texts) / dt_s,
                    "dt_MB_s": mb / dt_s,
                    "ratio": dt_s / ours_s,
                    "ours_peak_MB": ours_mem,
                    "dt_peak_MB": dt_mem,
                }
            )
    full = full_step(shared, tmp)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return rows, full


def full_step(shared: Path, tmp: str) -> dict:
    """The whole signature step, I/O included: datatrove's run() (writes + sorts its 14 bucket files)
    vs our signatures task (reads a Parquet part, writes signatures, keys, ids, sorted bucket records)."""
    from datatrove.data import Document

    from stages import dedup as dd

    docs = zhwiki_articles(shared)
    texts = [t for _, t in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    part = Path(tmp) / "zh.parquet"
    n = len(docs)
    pq.write_table(
        pa.table({"id": [i for i, _ in docs], "source": ["zhwiki"] * n, "license": ["CC-BY-SA-3.0"] * n, "title": [None] * n, "url": [None] * n, "timestamp": [None] * n, "revision_id": [None] * n, "text": texts}, schema=DOC_SCHEMA),
        part,
    )
    p = dd.Params(num_perm=NUM_PERM, bands=BANDS, ngram=NGRAM, char_ngram=NGRAM)
    cfg = dd._task_config(p, BANDS, ROWS)
    step = datatrove_step(_Tok.make("chars"), str(Path(tmp) / "dt"))
    ours, dt = best_times(
        [
            lambda: dd._signature_task(str(part), 0, 0, cfg, str(Path(tmp) / "work")),
            lambda: step.run(iter(Document(text=t, id=i) for i, t in docs), rank=0, world_size=1),
        ],
        3,
    )
    return {"docs": n, "MB": mb, "ours_s": ours, "dt_s": dt, "ratio": dt / ours}


# ================================================================================== (b) quality
EDIT_KINDS = ("exact", "char_insert", "char_delete", "char_substitute", "punct_width", "truncate", "boilerplate", "shuffle", "mixed")

BOILERPLATE_ZH = [
    "本文来源于网络，版权归原作者所有，如有侵权请联系删除。",
    "免责声明：本站所有文章仅供参考，不构成任何投资建议，转载请注明出处并保留原文链接。",
    "关注我们的微信公众号，获取更多精彩内容。点击阅读原文，查看更多相关资讯和往期回顾。欢迎留言评论，分享给你的朋友。",
    "以上内容由编辑整理发布，图片来自网络。如需转载，请在文章开头注明来源和作者，否则将追究法律责任。联系邮箱：editor@example.com",
]
BOILERPLATE_EN = [
    "All rights reserved. Reproduction without permission is prohibited.",
    "Subscribe to our newsletter to get the latest stories delivered to your inbox every week. Unsubscribe at any time.",
    "This article is provided for information only and does not constitute advice. Share it with your friends and follow us on social media for more updates.",
]
PUNCT_HALF = "!\"#%&'()*+,-./:;<=>?@[\\]^_{|}~"
_SENT_SPLIT = re.compile(r"(?<=[。！？!?.\n])")


def is_cjk(text: str) -> bool:
    return sum("\u3040" <= c <= "\u9fff" for c in text) >= 0.1 * max(1, sum(not c.isspace() for c in text))


def edit_chars(text: str, rng: random.Random, rate: float, op: str) -> str:
    chars = list(text)
    pool = [c for c in text if not c.isspace()] or ["x"]
    k = max(1, round(rate * len(chars)))
    positions = sorted(rng.sample(range(len(chars)), min(k, len(chars))), reverse=True)
    for i in positions:
        if op == "insert":
            chars.insert(i, rng.choice(pool))
        elif op == "delete":
            del chars[i]
        else:
            chars[i] = rng.choice(pool)
    return "".join(chars)


def punct_width(text: str) -> str:
    out = []
    for c in text:
        if c in PUNCT_HALF:
            out.append(chr(ord(c) + 0xFEE0))
        elif "\uff01" <= c <= "\uff5e" and chr(ord(c) - 0xFEE0) in PUNCT_HALF:
            out.append(chr(ord(c) - 0xFEE0))
        elif c == "。":
            out.append("．")
        else:
            out.append(c)
    return "".join(out)


def boilerplate_for(text: str, rng: random.Random, max_share: float = 0.15) -> str:
    pool = BOILERPLATE_ZH if is_cjk(text) else BOILERPLATE_EN
    fits = [b for b in pool if len(b) <= max_share * len(text)] or [min(pool, key=len)]
    return rng.choice(fits)


def make_edit(kind: str, text: str, rng: random.Random) -> str:
    if kind == "exact":
        return text.replace("\n", "\n\n") + " "  # same normalized key
    if kind in ("char_insert", "char_delete", "char_substitute"):
        return edit_chars(text, rng, rng.uniform(0.002, 0.01), kind.split("_")[1])
    if kind == "punct_width":
        return punct_width(text)
    if kind == "truncate":
        return text[: int(len(text) * rng.uniform(0.8, 0.95))]
    if kind == "boilerplate":
        return text.rstrip() + "\n" + boilerplate_for(text, rng)
    if kind == "shuffle":
        sents = [s for s in _SENT_SPLIT.split(text) if s]
        rng.shuffle(sents)
        return "".join(sents)
    if kind == "mixed":
        t = edit_chars(text, rng, rng.uniform(0.001, 0.004), "substitute")
        t = punct_width(t)
        return t.rstrip() + "\n" + boilerplate_for(t, rng, 0.1)
    raise ValueError(kind)


def build_corpus(shared: Path, seed: int = 20240601, plant_share: float = 0.35, negative_share: float = 0.15, splice_share: float = 0.1) -> tuple[list[dict], dict]:
    """Base documents (ids ``b…``), planted copies (``c…``, one edit kind each), hard negatives (base
    documents that end with a boilerplate shared with other, unrelated documents). Deterministic."""
    rng = random.Random(seed)
    base: list[tuple[str, str]] = []
    for aid, text in zhwiki_articles(shared):  # zhwiki: paragraphs grouped into chunks of >= 600 characters
        paras = [p for p in text.split("\n") if p.strip()]
        chunk: list[str] = []
        for para in paras:
            chunk.append(para)
            if sum(map(len, chunk)) >= 600:
                base.append((f"{aid}#{len(base)}", "\n".join(chunk)))
                chunk = []
        if sum(map(len, chunk)) >= 300:
            base.append((f"{aid}#{len(base)}", "\n".join(chunk)))
    reviews = review_lines(shared)
    group: list[str] = []
    for line in reviews[:12000]:  # zh reviews: consecutive unique reviews grouped to >= 300 characters
        group.append(line)
        if sum(map(len, group)) >= 300:
            base.append((f"reviews/{len(base)}", "\n".join(group)))
            group = []
    base.extend(lid_documents(shared))
    # exact repeats inside the shared corpora are not planted duplicates: keep the first
    hasher = mh.MinHasher(mh.MinHashConfig())
    keys = hasher.batch([t for _, t in base]).exact
    seen, unique = set(), []
    for (bid, text), key in zip(base, keys.tolist()):
        if tuple(key) not in seen:
            seen.add(tuple(key))
            unique.append((bid, text))
    docs: list[dict] = []
    for i, (bid, text) in enumerate(unique):
        r = random.Random(f"{seed}/{bid}")
        if r.random() < negative_share:
            text = text.rstrip() + "\n" + boilerplate_for(text, r)
            docs.append({"id": bid, "group": bid, "kind": "negative", "text": text})
        else:
            docs.append({"id": bid, "group": bid, "kind": "base", "text": text})
        if r.random() < plant_share:
            n_copies = 2 if r.random() < 0.2 else 1
            for c in range(n_copies):
                kind = EDIT_KINDS[(i * 7 + c * 3) % len(EDIT_KINDS)]
                docs.append({"id": f"copy{c}/{bid}", "group": bid, "kind": kind, "text": make_edit(kind, text, r)})
    # splices: the first 40-60% of one document + the end of an unrelated one of the same corpus
    # (Jaccard with either source about 1/3), and overlaps: the first 70-75% + the end of another
    # (Jaccard c / (2 - c) = 0.54-0.6 with the first, just under the 0.7 threshold). Not duplicates.
    by_corpus: dict[str, list[tuple[str, str]]] = {}
    for bid, text in unique:
        by_corpus.setdefault(bid.rsplit("/", 1)[0], []).append((bid, text))
    n_splices = int(splice_share * len(unique))
    for s in range(n_splices):
        ida, ta = unique[rng.randrange(len(unique))]
        idb, tb = ida, ta
        while idb == ida:
            idb, tb = rng.choice(by_corpus[ida.rsplit("/", 1)[0]])
        kind = "splice" if s % 2 == 0 else "overlap"
        cut = rng.uniform(0.4, 0.6) if kind == "splice" else rng.uniform(0.7, 0.75)
        docs.append({"id": f"{kind}{s}/{ida}+{idb}", "group": f"{kind}{s}", "kind": kind, "text": ta[: int(len(ta) * cut)] + tb[int(len(tb) * cut) :]})
    rng.shuffle(docs)  # copies land anywhere in input order, before or after their original
    meta = {
        "base": len(unique),
        "docs": len(docs),
        "planted": sum(d["kind"] in EDIT_KINDS for d in docs),
        "negatives": sum(d["kind"] == "negative" for d in docs),
        "splices": n_splices,
    }
    return docs, meta


def run_stage(docs: list[dict], workers: int, params: dict, parts: int = 8) -> dict[str, int]:
    """Run the real dedup stage on ``docs``; return doc id -> predicted cluster id."""
    from rich.console import Console

    from pipeline.core.stage import NodeContext, NodeOutput, RunContext
    from pipeline.exec.executors import LocalExecutor
    from stages.dedup import Dedup, Params

    with tempfile.TemporaryDirectory(prefix="bench-dedup-q-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for p in range(parts):
            sub = docs[p * len(docs) // parts : (p + 1) * len(docs) // parts]
            n = len(sub)
            table = pa.table(
                {"id": [d["id"] for d in sub], "source": ["bench"] * n, "license": ["CC-BY-SA-3.0"] * n, "title": [None] * n, "url": [None] * n, "timestamp": [None] * n, "revision_id": [None] * n, "text": [d["text"] for d in sub]},
                schema=DOC_SCHEMA,
            )
            pq.write_table(table, src / f"part-{p:05d}.parquet")
        console = Console(quiet=True)
        node = Path(tmp) / "node"
        with LocalExecutor(workers=workers, console=console) as ex:
            ctx = NodeContext(name="dedup", dir=node, inputs=[NodeOutput("src", src, "x", {})], executor=ex, run=RunContext(out_dir=Path(tmp), cache_dir=Path(tmp), console=console, manifest=None, progress=False))
            t0 = time.perf_counter()
            extra = Dedup(Params(**params), "dedup").run(ctx)
            elapsed = time.perf_counter() - t0
        pred: dict[str, int] = {}
        for f in sorted(node.glob("part-*.parquet")):
            t = pq.read_table(f, columns=["id", "dup_cluster_id"])
            pred.update(zip(t["id"].to_pylist(), t["dup_cluster_id"].to_pylist()))
        for f in sorted((node / "removed").glob("part-*.parquet")):
            for rid, sig in zip(*pq.read_table(f, columns=["id", "signals"]).to_pydict().values()):
                pred[rid] = json.loads(sig)["cluster_id"]
    assert len(pred) == len(docs), "every document is kept or in the ledger"
    return pred, extra, elapsed


def pair_metrics(docs: list[dict], pred: dict[str, int]) -> dict[str, dict]:
    """Pairwise TP / FP / FN per attributed kind."""
    from collections import defaultdict

    kind_of = {d["id"]: d["kind"] for d in docs}
    group_of = {d["id"]: d["group"] for d in docs}

    def attribute(a: str, b: str) -> str:
        ka, kb = kind_of[a], kind_of[b]
        copies = [k for k in (ka, kb) if k in EDIT_KINDS]
        if group_of[a] != group_of[b]:
            for k in ("overlap", "splice"):
                if k in (ka, kb):
                    return k
            return "unrelated"
        if len(copies) == 2:
            return "copy-copy"
        return copies[0]

    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    by_pred, by_true = defaultdict(list), defaultdict(list)
    for d in docs:
        by_pred[pred[d["id"]]].append(d["id"])
        by_true[d["group"]].append(d["id"])
    for members in by_pred.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = members[i], members[j]
                counts[attribute(a, b)]["tp" if group_of[a] == group_of[b] else "fp"] += 1
    for members in by_true.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = members[i], members[j]
                if pred[a] != pred[b]:
                    counts[attribute(a, b)]["fn"] += 1
    return dict(counts)


def recall_by_script(docs: list[dict], pred: dict[str, int]) -> dict[tuple[str, str], list[int]]:
    """Planted copies found (same predicted cluster as their base document), by edit kind and script."""
    base = {d["id"]: d for d in docs if d["kind"] in ("base", "negative")}
    out: dict[tuple[str, str], list[int]] = {}
    for d in docs:
        if d["kind"] in EDIT_KINDS:
            script = "CJK" if is_cjk(base[d["group"]]["text"]) else "other"
            hit = out.setdefault((d["kind"], script), [0, 0])
            hit[0] += pred[d["id"]] == pred[d["group"]]
            hit[1] += 1
    return out


def true_jaccard(a: str, b: str, hasher: mh.MinHasher) -> float:
    """Exact Jaccard of the two documents' shingle sets, as the stage defines shingles."""
    cfg = hasher.cfg
    res = hasher.batch([a, b])

    def shingles(text: str, char_mode: bool) -> set:
        cp, _ = hasher.normalize_batch([text])
        if char_mode:
            units = cp[~hasher.drop[cp]].tolist()
            n = cfg.char_ngram
        else:
            units = [w for w in cp.tobytes().decode("utf-32-le").translate({int(c): " " for c in np.unique(cp[hasher.drop[cp]])}).split()]
            n = cfg.ngram
        if len(units) < n:
            return {tuple(units)} if units else set()
        return {tuple(units[i : i + n]) for i in range(len(units) - n + 1)}

    sa, sb = shingles(a, bool(res.char_mode[0])), shingles(b, bool(res.char_mode[1]))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def boundary_analysis(docs: list[dict], pred: dict[str, int], params: dict) -> dict:
    """Misses and false merges split by the pair's exact Jaccard: on which side of the threshold they are."""
    from stages.dedup import Params

    p = Params(**params)
    hasher = mh.MinHasher(mh.MinHashConfig(ngram=p.ngram, char_ngram=p.char_ngram, t2s=p.t2s, char_mode={"auto": "auto", True: "always", False: "never"}[p.cjk_char_ngrams], cjk_min_fraction=p.cjk_min_fraction))
    text = {d["id"]: d["text"] for d in docs}
    missed = [true_jaccard(text[d["group"]], d["text"], hasher) for d in docs if d["kind"] in EDIT_KINDS and pred[d["id"]] != pred[d["group"]]]
    false = []
    for d in docs:
        if d["kind"] in ("splice", "overlap"):
            src = d["id"].split("/", 1)[1].split("+")[0]
            if pred[d["id"]] == pred[src]:
                false.append(true_jaccard(text[src], d["text"], hasher))
    return {
        "threshold": p.threshold,
        "missed": len(missed),
        "missed_above": sum(j >= p.threshold for j in missed),
        "missed_max": max(missed, default=float("nan")),
        "false": len(false),
        "false_above": sum(j >= p.threshold for j in false),
        "false_min": min(false, default=float("nan")),
    }


def prf(c: dict) -> tuple[float, float, float]:
    p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan")
    r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan")
    f = 2 * p * r / (p + r) if p == p and r == r and p + r else float("nan")
    return p, r, f


def quality(shared: Path, workers: int, params: dict, boundary: bool = False):
    docs, meta = build_corpus(shared)
    pred, extra, elapsed = run_stage(docs, workers, params)
    bnd = boundary_analysis(docs, pred, params) if boundary else None
    return meta, pair_metrics(docs, pred), extra, elapsed, recall_by_script(docs, pred), bnd


def print_quality(meta, counts, extra, elapsed, label: str, by_script: dict | None = None) -> float:
    total = {"tp": 0, "fp": 0, "fn": 0}
    for c in counts.values():
        for k in total:
            total[k] += c[k]
    print(f"\n### {label}\n")
    print(
        f"corpus: {meta['docs']} documents = {meta['base']} base ({meta['negatives']} of them hard negatives ending with shared boilerplate) "
        f"+ {meta['planted']} planted copies + {meta['splices']} splices and overlaps (40-60% or 70-75% of one document + the rest of another); stage ran in {elapsed:.1f} s"
    )
    d = extra.get("dedup", {})
    print(f"LSH {d.get('bands')} bands x {d.get('rows')} rows, threshold {d.get('threshold')}; candidate pairs {d.get('candidate_pairs')}, rejected by verification {d.get('rejected_pairs')}, clusters with duplicates {d.get('clusters_with_duplicates')}\n")
    print("| pairs attributed to | true pairs | predicted pairs | TP | FP | FN | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = [k for k in EDIT_KINDS if k in counts] + [k for k in ("copy-copy", "splice", "overlap", "unrelated") if k in counts]
    for kind in order + ["all"]:
        c = total if kind == "all" else counts[kind]
        p, r, f = prf(c)
        fmt = lambda x: "n/a" if x != x else f"{x:.3f}"  # noqa: E731
        name = "**all**" if kind == "all" else kind
        print(f"| {name} | {c['tp'] + c['fn']} | {c['tp'] + c['fp']} | {c['tp']} | {c['fp']} | {c['fn']} | {fmt(p)} | {fmt(r)} | {fmt(f)} |")
    if by_script:
        print("\nplanted copies found, by script of the base document (CJK: character shingles; other: word shingles)\n")
        print("| edit kind | CJK found / planted | CJK recall | other found / planted | other recall |")
        print("|---|---|---|---|---|")
        for kind in EDIT_KINDS:
            cells = []
            for script in ("CJK", "other"):
                hit, n = by_script.get((kind, script), [0, 0])
                cells += [f"{hit} / {n}", f"{hit / n:.3f}" if n else "n/a"]
            print(f"| {kind} | " + " | ".join(cells) + " |")
    return prf(total)[2]


def scale(shared: Path, n_docs: int, workers: int, shards: int | None) -> dict:
    """Throughput and memory of the whole stage on ``n_docs`` documents of 3-8 random zh reviews each
    (10% of them planted near copies), in parts of 20,000 documents."""
    from rich.console import Console

    from pipeline.core.stage import NodeContext, NodeOutput, RunContext
    from pipeline.exec.executors import LocalExecutor
    from stages.dedup import Dedup, Params

    lines = review_lines(shared)
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dedup-scale-"))
    src = tmp / "src"
    src.mkdir()
    per_part, made, mb = 20_000, 0, 0.0
    part = 0
    while made < n_docs:
        n = min(per_part, n_docs - made)
        texts = []
        for _ in range(n):
            if texts and rng.random() < 0.1:
                texts.append(edit_chars(rng.choice(texts), rng, 0.01, "substitute"))
            else:
                texts.append("\n".join(rng.sample(lines, rng.randint(3, 8))))
        mb += sum(len(t.encode("utf-8")) for t in texts) / 1e6
        ids = [f"s{made + i}" for i in range(n)]
        pq.write_table(
            pa.table({"id": ids, "source": ["scale"] * n, "license": ["MIT"] * n, "title": [None] * n, "url": [None] * n, "timestamp": [None] * n, "revision_id": [None] * n, "text": texts}, schema=DOC_SCHEMA),
            src / f"part-{part:05d}.parquet",
        )
        made += n
        part += 1
    console = Console(quiet=True)
    node = tmp / "node"
    with LocalExecutor(workers=workers, console=console) as ex:
        ctx = NodeContext(name="dedup", dir=node, inputs=[NodeOutput("src", src, "x", {})], executor=ex, run=RunContext(out_dir=tmp, cache_dir=tmp, console=console, manifest=None, progress=False))
        tracemalloc.start()  # the main process: numpy arrays are traced too
        t0 = time.perf_counter()
        extra = Dedup(Params(shards=shards, keep_work=True), "dedup").run(ctx)
        elapsed = time.perf_counter() - t0
        main_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    work_mb = sum(f.stat().st_size for f in (node / "work").rglob("*") if f.is_file()) / 1e6
    out = {
        "docs": n_docs,
        "parts": part,
        "MB": mb,
        "seconds": elapsed,
        "docs_per_s": n_docs / elapsed,
        "MB_per_s": mb / elapsed,
        "work_MB": work_mb,
        "main_peak_MB": main_peak,
        "worker_peak_rss_MB": extra["dedup"]["worker_peak_rss_mb"],
        "dedup": extra["dedup"],
    }
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out


def estimator_check(trials: int = 400) -> list[tuple[float, float, float, float]]:
    """Our permutations (a*h + b mod 2**32 over 32-bit shingle hashes): bias and spread of the Jaccard
    estimate on random shingle sets of known Jaccard, against the binomial sd sqrt(J(1-J)/num_perm)
    that independent permutations would give."""
    hasher = mh.MinHasher(mh.MinHashConfig(num_perm=NUM_PERM, bands=BANDS, rows=ROWS))
    rng = np.random.default_rng(1)
    out = []
    for target in (0.5, 0.7, 0.8, 0.9):
        errs, js = [], []
        for _ in range(trials):
            common = 400
            unique = int(round(common * (1 - target) / (2 * target)))
            pool = rng.integers(0, 1 << 32, common + 2 * unique, dtype=np.uint64).astype(np.uint32)
            a, b = pool[: common + unique], np.concatenate([pool[:common], pool[common + unique :]])
            true_j = common / (common + 2 * unique)
            sig = np.full((2, NUM_PERM), mh.EMPTY, np.uint32)
            hasher._minhash(np.concatenate([a, b]), np.repeat(np.arange(2, dtype=np.int64), [len(a), len(b)]), sig, np.zeros(2, bool))
            errs.append(mh.estimate_jaccard(sig[:1], sig[1:])[0] - true_j)
            js.append(true_j)
        j = float(np.mean(js))
        out.append((j, float(np.mean(errs)), float(np.std(errs)), float(np.sqrt(j * (1 - j) / NUM_PERM))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(REPO.parent / "shared"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["speed", "quality", "scale"], help="run one part (scale: needs --scale N)")
    ap.add_argument("--sweep", action="store_true", help="also run the quality benchmark with other thresholds / verification off")
    ap.add_argument("--scale", type=int, default=0, help="also run the whole stage on this many synthetic documents (throughput, memory)")
    ap.add_argument("--scale-shards", type=int, default=None)
    args = ap.parse_args()
    shared = Path(args.shared)
    if not (shared / "corpora").is_dir():
        sys.exit(f"shared corpora not found at {shared}")
    print(f"machine: {os.cpu_count()} cores ({_cpu_name()}), Python {sys.version.split()[0]}, numpy {np.__version__}; load average at start {os.getloadavg()[0]:.2f}")
    if args.only in (None, "speed"):
        rows, full = speed(shared, args.repeat)
        print(f"\n## (a) signature speed, one process, {NUM_PERM} permutations ({BANDS} x {ROWS}), 5-grams; datatrove {version('datatrove')}, spaCy {_version('spacy')}\n")
        print("| texts | docs | MB | baseline | ours docs/s | ours MB/s | datatrove docs/s | datatrove MB/s | ours / datatrove | peak MB ours | peak MB datatrove (1/4 of the docs) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['texts']} | {r['docs']} | {r['MB']} | {r['baseline']} | {r['ours_docs_s']:,.0f} | {r['ours_MB_s']:.2f} | {r['dt_docs_s']:,.0f} | {r['dt_MB_s']:.3f} | **{r['ratio']:.1f}x** | {r['ours_peak_MB']:.0f} | {r['dt_peak_MB']:.0f} |"
            )
        print(
            f"\nfull step with I/O, zhwiki articles ({full['docs']} docs, {full['MB']:.2f} MB): ours (Parquet in, work files out) {full['ours_s']:.3f} s "
            f"= {full['MB'] / full['ours_s']:.2f} MB/s; datatrove run() with the character tokenizer (14 bucket files written and sorted) {full['dt_s']:.3f} s "
            f"= {full['MB'] / full['dt_s']:.3f} MB/s; ratio {full['ratio']:.1f}x"
        )
    if args.only in (None, "quality"):
        print(f"\n## (b) near duplicates\n\nJaccard estimate from {NUM_PERM} of our permutations, 400 random set pairs per row:\n")
        print("| true Jaccard | mean error | sd of the error | binomial sd (independent permutations) |")
        print("|---|---|---|---|")
        for j, bias, sd, binom in estimator_check():
            print(f"| {j:.3f} | {bias:+.4f} | {sd:.4f} | {binom:.4f} |")
        print("\nplanted duplicates (pairwise precision / recall / F1):")
        configs = [("defaults (threshold 0.7, verify on)", {})]
        if args.sweep:
            configs += [
                ("verify off", {"verify": False}),
                ("threshold 0.6", {"threshold": 0.6}),
                ("threshold 0.8", {"threshold": 0.8}),
                ("num_perm 224", {"num_perm": 224}),
                ("word 5-grams (datatrove's n)", {"ngram": 5}),
                ("word 5-grams, 14 bands x 8 rows, verify off (datatrove's setting)", {"ngram": 5, "bands": 14, "verify": False}),
            ]
        for label, params in configs:
            meta, counts, extra, elapsed, by_script, bnd = quality(shared, args.workers, params, boundary=not params)
            print_quality(meta, counts, extra, elapsed, label, by_script)
            if bnd:
                print(
                    f"\nexact shingle Jaccard of the errors: {bnd['missed']} planted copies not found, {bnd['missed_above']} of them with Jaccard >= {bnd['threshold']} "
                    f"(largest {bnd['missed_max']:.3f}); {bnd['false']} splices/overlaps merged with their first source, {bnd['false_above']} of them with Jaccard >= {bnd['threshold']} "
                    f"(smallest {bnd['false_min']:.3f})"
                )
    if args.scale and args.only in (None, "scale"):
        r = scale(shared, args.scale, args.workers, args.scale_shards)
        d = r["dedup"]
        print(f"\n## (c) the whole stage at scale ({args.workers} workers)\n")
        print("| docs | parts | MB | shards | bucket records | edges | duplicate clusters | union-find passes | seconds | docs/s | MB/s | work files MB | union-find arrays MB | main process peak allocations MB (tracemalloc) | largest worker peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {r['docs']:,} | {r['parts']} | {r['MB']:.0f} | {d['shards']} | {d['bucket_records']:,} | {d['edges']:,} | {d['clusters_with_duplicates']:,} | {d['union_find_passes']} "
            f"| {r['seconds']:.1f} | {r['docs_per_s']:,.0f} | {r['MB_per_s']:.1f} | {r['work_MB']:.0f} | {d['union_find_array_mb']} | {r['main_peak_MB']:.1f} | {r['worker_peak_rss_MB']:.0f} |"
        )
    print(f"\npeak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load average at end {os.getloadavg()[0]:.2f}")


def _version(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
