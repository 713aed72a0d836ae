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
    and lid-sentences (10 sentences, 75 languages); planted copies with one edit kind each;
    character-typo variants (``make_typos``: 0.5, 1, 2, 3, 4 or 5 % of the letters / CJK characters
    replaced, spread through the document); hard negatives (unrelated documents ending with the same
    boilerplate; splices and overlaps sharing part of their text with another document). Metrics are
    over document pairs (``evaluate``): **a pair is a true near duplicate when the exact Jaccard of
    its shingle sets** (the stage's normalization and shingles, computed here independently as
    Python tuples) **is >= the threshold, or a chain of such pairs links the two documents**; it is
    predicted when the stage puts both in one cluster. A planted copy whose edit brought it below
    the threshold is not a duplicate by this definition (the tables show how many there are). Each
    pair is attributed to the edit kind of its copy (``copy-copy``: two copies of one base document;
    ``splice``, ``overlap``, ``unrelated`` otherwise). The default run compares the new default
    (``verify: exact``) with the previous one (``verify: estimate``) on the same corpus; ``--sweep``
    adds LSH shapes, thresholds, and other settings.
(c) ``--scale N``: the whole stage on N synthetic documents (throughput, work files, memory), with
    ``verify: exact`` and ``verify: estimate`` on the same input.
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


def is_cjk_char(c: str) -> bool:
    return "\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\u0e00" <= c <= "\u0eff"


def make_typos(text: str, rng: random.Random, rate: float) -> str:
    """Character typos spread through the document: ``rate`` of its letters and digits
    (``str.isalnum``; CJK characters count as letters) replaced, at distinct random positions, by a
    different character of the same class drawn from the document (CJK by CJK, other letters by
    letters, digits by digits; drawn by frequency, so common characters are likely)."""
    chars = list(text)
    pos = [i for i, c in enumerate(chars) if c.isalnum()]
    if not pos:
        return text
    pools = {
        "cjk": [c for c in chars if is_cjk_char(c)],
        "alpha": [c for c in chars if c.isalpha() and not is_cjk_char(c)],
        "digit": [c for c in chars if c.isdigit()] + list("0123456789"),
    }
    k = max(1, round(rate * len(pos)))
    for i in sorted(rng.sample(pos, min(k, len(pos)))):
        c = chars[i]
        pool = pools["cjk" if is_cjk_char(c) else "digit" if c.isdigit() else "alpha"]
        for _ in range(20):
            new = rng.choice(pool)
            if new != c:
                chars[i] = new
                break
    return "".join(chars)


TYPO_RATES = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05)


def typo_kind(rate: float) -> str:
    return f"typo {rate * 100:g}%"


TYPO_KINDS = tuple(typo_kind(r) for r in TYPO_RATES)
COPY_KINDS = EDIT_KINDS + TYPO_KINDS


def build_corpus(shared: Path, seed: int = 20240601, plant_share: float = 0.35, negative_share: float = 0.15, splice_share: float = 0.1, typo_share: float = 0.25) -> tuple[list[dict], dict]:
    """Base documents (ids ``b…``), planted copies (``c…``, one edit kind each), character-typo
    variants (``typo/…``, one rate each), hard negatives (base documents that end with a boilerplate
    shared with other, unrelated documents), splices and overlaps. Deterministic."""
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
        t = random.Random(f"{seed}/typo/{bid}")  # its own generator: the other copies stay as they were
        if t.random() < typo_share:
            rate = TYPO_RATES[t.randrange(len(TYPO_RATES))]
            docs.append({"id": f"typo/{bid}", "group": bid, "kind": typo_kind(rate), "text": make_typos(text, t, rate)})
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
        docs.append({"id": f"{kind}{s}/{ida}+{idb}", "group": f"{kind}{s}", "kind": kind, "text": ta[: int(len(ta) * cut)] + tb[int(len(tb) * cut) :], "sources": (ida, idb)})
    rng.shuffle(docs)  # copies land anywhere in input order, before or after their original
    meta = {
        "base": len(unique),
        "docs": len(docs),
        "planted": sum(d["kind"] in EDIT_KINDS for d in docs),
        "typos": sum(d["kind"] in TYPO_KINDS for d in docs),
        "negatives": sum(d["kind"] == "negative" for d in docs),
        "splices": n_splices,
    }
    return docs, meta


def write_parts(docs: list[dict], src: Path, parts: int = 8) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for p in range(parts):
        sub = docs[p * len(docs) // parts : (p + 1) * len(docs) // parts]
        n = len(sub)
        table = pa.table(
            {"id": [d["id"] for d in sub], "source": ["bench"] * n, "license": ["CC-BY-SA-3.0"] * n, "title": [None] * n, "url": [None] * n, "timestamp": [None] * n, "revision_id": [None] * n, "text": [d["text"] for d in sub]},
            schema=DOC_SCHEMA,
        )
        pq.write_table(table, src / f"part-{p:05d}.parquet")


def run_stage(docs: list[dict], workers: int, params: dict, parts: int = 8) -> tuple[dict[str, int], dict, float]:
    """Run the real dedup stage on ``docs``; return doc id -> predicted cluster id, the stage's stats, seconds."""
    from rich.console import Console

    from pipeline.core.stage import NodeContext, NodeOutput, RunContext
    from pipeline.exec.executors import LocalExecutor
    from stages.dedup import Dedup, Params

    with tempfile.TemporaryDirectory(prefix="bench-dedup-q-") as tmp:
        src = Path(tmp) / "src"
        write_parts(docs, src, parts)
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


class ShingleTruth:
    """Exact Jaccard of two documents' shingle sets, computed here independently of the stage's
    hashing: the stage's normalization (``normalize_batch``) and mode (character / word), then the
    n-grams as Python tuples of code points or words (hashed with Python's 64-bit ``hash`` to keep
    memory small; a collision would need two distinct n-grams of one pair with equal 64-bit hashes)."""

    def __init__(self, docs: list[dict], params: dict):
        from stages.dedup import Params

        p = Params(**params)
        self.hasher = mh.MinHasher(mh.MinHashConfig(ngram=p.ngram, char_ngram=p.char_ngram, t2s=p.t2s, char_mode={"auto": "auto", True: "always", False: "never"}[p.cjk_char_ngrams], cjk_min_fraction=p.cjk_min_fraction))
        self.text = {d["id"]: d["text"] for d in docs}
        self.char_mode: dict[str, bool] = {}
        ids = [d["id"] for d in docs]
        for c in range(0, len(ids), 2000):
            res = self.hasher.batch([self.text[i] for i in ids[c : c + 2000]])
            self.char_mode.update(zip(ids[c : c + 2000], res.char_mode.tolist()))
        self.sets: dict[str, np.ndarray] = {}
        self.cache: dict[tuple[str, str], float] = {}

    def shingles(self, doc: str) -> np.ndarray:
        if doc not in self.sets:
            cfg, h = self.hasher.cfg, self.hasher
            cp, _ = h.normalize_batch([self.text[doc]])
            if self.char_mode[doc]:
                units = cp[~h.drop[cp]].tolist()
                n = cfg.char_ngram
            else:
                units = cp.tobytes().decode("utf-32-le").translate({int(c): " " for c in np.unique(cp[h.drop[cp]])}).split()
                n = cfg.ngram
            grams = [tuple(units)] if 0 < len(units) < n else [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
            self.sets[doc] = np.unique(np.fromiter((hash(g) for g in grams), dtype=np.int64, count=len(grams)))
        return self.sets[doc]

    def jaccard(self, a: str, b: str) -> float:
        key = (a, b) if a < b else (b, a)
        if key not in self.cache:
            sa, sb = self.shingles(a), self.shingles(b)
            inter = len(np.intersect1d(sa, sb, assume_unique=True))
            union = len(sa) + len(sb) - inter
            self.cache[key] = inter / union if union else 1.0
        return self.cache[key]


def evaluate(docs: list[dict], pred: dict[str, int], truth: ShingleTruth, threshold: float) -> dict:
    """Pair metrics against the exact-Jaccard ground truth.

    A pair of documents is a **true near duplicate** when the exact Jaccard of their shingle sets is
    >= ``threshold``, or when a chain of such pairs links them (the stage outputs a clustering, and a
    clustering is transitive). Jaccard is computed for every pair that could matter: documents of one
    base document (the original, its copies, its typo variant), each splice / overlap with its two
    sources, and every pair the stage put in one cluster (so an unplanted duplicate it finds counts
    as a true pair when its Jaccard says so). Pairs are attributed to the edit kind of their copy
    (``copy-copy``: two copies of one base; ``splice``, ``overlap``, ``unrelated`` otherwise)."""
    from collections import defaultdict

    kind_of = {d["id"]: d["kind"] for d in docs}
    group_of = {d["id"]: d["group"] for d in docs}
    by_group, by_pred = defaultdict(list), defaultdict(list)
    for d in docs:
        by_group[d["group"]].append(d["id"])
        by_pred[pred[d["id"]]].append(d["id"])
    direct: list[tuple[str, str, str]] = []  # (copy or splice, its source, kind): the planted relations
    measured: set[tuple[str, str]] = set()
    for members in by_group.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                measured.add((members[i], members[j]))
    for d in docs:
        if d["kind"] in COPY_KINDS:
            direct.append((d["id"], d["group"], d["kind"]))
        elif "sources" in d:
            for src, which in zip(d["sources"], ("first", "second")):
                direct.append((d["id"], src, f"{d['kind']} ({which} source)"))
                measured.add((d["id"], src))
    for members in by_pred.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                measured.add((members[i], members[j]))
    parent = {d["id"]: d["id"] for d in docs}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in sorted(measured):
        if truth.jaccard(a, b) >= threshold:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    true_of = {d["id"]: find(d["id"]) for d in docs}
    by_true = defaultdict(list)
    for d in docs:
        by_true[true_of[d["id"]]].append(d["id"])

    def attribute(a: str, b: str) -> str:
        ka, kb = kind_of[a], kind_of[b]
        copies = [k for k in (ka, kb) if k in COPY_KINDS]
        if group_of[a] != group_of[b]:
            for k in ("overlap", "splice"):
                if k in (ka, kb):
                    return k
            return "unrelated"
        if len(copies) == 2:
            return "copy-copy"
        return copies[0] if copies else "unrelated"

    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    for members in by_pred.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = members[i], members[j]
                counts[attribute(a, b)]["tp" if true_of[a] == true_of[b] else "fp"] += 1
    for members in by_true.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = members[i], members[j]
                if pred[a] != pred[b]:
                    counts[attribute(a, b)]["fn"] += 1
    # each planted relation (copy vs its base, splice / overlap vs its sources) by its own Jaccard
    rel = []
    for a, b, kind in direct:
        base_text = truth.text[b]
        rel.append({"kind": kind, "script": "CJK" if is_cjk(base_text) else "other", "jaccard": truth.jaccard(a, b), "merged": pred[a] == pred[b]})
    return {"counts": dict(counts), "relations": rel, "measured_pairs": len(measured)}


def prf(c: dict) -> tuple[float, float, float]:
    p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan")
    r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan")
    f = 2 * p * r / (p + r) if p == p and r == r and p + r else float("nan")
    return p, r, f


def _sum(counts: dict, kinds) -> dict:
    out = {"tp": 0, "fp": 0, "fn": 0}
    for k in kinds:
        for x in out:
            out[x] += counts.get(k, {}).get(x, 0)
    return out


def headline(ev: dict) -> dict:
    counts = ev["counts"]
    p, r, f = prf(_sum(counts, counts))
    typo_p, typo_r, typo_f = prf(_sum(counts, TYPO_KINDS))
    copies = [x for x in ev["relations"] if x["kind"] in COPY_KINDS]
    found = sum(x["merged"] for x in copies) / len(copies) if copies else float("nan")
    return {"f1": f, "precision": p, "recall": r, "typo_recall": typo_r, "typo_precision": typo_p, "copies_found": found}


_fmt = lambda x: "n/a" if x != x else f"{x:.3f}"  # noqa: E731

JACCARD_BINS = (0.0, 0.5, 0.6, 0.65, 0.68, 0.7, 0.72, 0.75, 0.8, 0.9, 1.0 + 1e-9)


def print_quality(meta: dict, ev: dict, extra: dict, elapsed: float, label: str, threshold: float, full: bool) -> dict:
    counts = ev["counts"]
    total = _sum(counts, counts)
    h = headline(ev)
    d = extra.get("dedup", {})
    print(f"\n### {label}\n")
    print(
        f"LSH {d.get('bands')} bands x {d.get('rows')} rows, threshold {d.get('threshold')}; candidate pairs {d.get('candidate_pairs')}, "
        f"compared exactly {d.get('exact_jaccard_pairs')}, rejected by size alone {d.get('size_rejected_pairs')}, rejected in all {d.get('rejected_pairs')}; "
        f"clusters with duplicates {d.get('clusters_with_duplicates')}; stage ran in {elapsed:.1f} s\n"
    )
    print(f"**F1 {_fmt(h['f1'])}, precision {_fmt(h['precision'])}, recall {_fmt(h['recall'])}, typo recall {_fmt(h['typo_recall'])}** (TP {total['tp']}, FP {total['fp']}, FN {total['fn']})\n")
    if not full:
        return h
    print("| pairs attributed to | true pairs | predicted pairs | TP | FP | FN | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = [k for k in COPY_KINDS if k in counts] + [k for k in ("copy-copy", "splice", "overlap", "unrelated") if k in counts]
    for kind in order + ["typo (all rates)", "all"]:
        c = total if kind == "all" else _sum(counts, TYPO_KINDS) if kind.startswith("typo (") else counts[kind]
        p, r, f = prf(c)
        name = f"**{kind}**" if kind in ("all", "typo (all rates)") else kind
        print(f"| {name} | {c['tp'] + c['fn']} | {c['tp'] + c['fp']} | {c['tp']} | {c['fp']} | {c['fn']} | {_fmt(p)} | {_fmt(r)} | {_fmt(f)} |")
    rel = ev["relations"]
    print(f"\nplanted relations (a copy or typo variant vs its base document; a splice / overlap vs each source), by the pair's exact Jaccard J and threshold t = {threshold}:\n")
    print("| kind | script | planted | median J | J >= t | found (J >= t) | recall | J < t | merged anyway (J < t) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in COPY_KINDS + tuple(f"{k} ({w} source)" for k in ("splice", "overlap") for w in ("first", "second")):
        for script in ("CJK", "other"):
            rows = [x for x in rel if x["kind"] == kind and x["script"] == script]
            if not rows:
                continue
            above = [x for x in rows if x["jaccard"] >= threshold]
            below = [x for x in rows if x["jaccard"] < threshold]
            hit = sum(x["merged"] for x in above)
            print(f"| {kind} | {script} | {len(rows)} | {np.median([x['jaccard'] for x in rows]):.3f} | {len(above)} | {hit} | {_fmt(hit / len(above) if above else float('nan'))} | {len(below)} | {sum(x['merged'] for x in below)} |")
    print("\nthe same relations bucketed by exact Jaccard (above the threshold: recall; below it: merged share, which is 0 for a perfect stage unless a chain of true pairs links them):\n")
    print("| exact Jaccard | pairs | merged | share merged |")
    print("|---|---|---|---|")
    for lo, hi in zip(JACCARD_BINS[:-1], JACCARD_BINS[1:]):
        rows = [x for x in rel if lo <= x["jaccard"] < hi]
        if rows:
            m = sum(x["merged"] for x in rows)
            print(f"| [{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'} | {len(rows)} | {m} | {m / len(rows):.3f} |")
    return h


def scale(shared: Path, n_docs: int, workers: int, shards: int | None, configs: list[tuple[str, dict]]) -> list[dict]:
    """Throughput and memory of the whole stage on ``n_docs`` documents of 3-8 random zh reviews each
    (10% of them planted near copies), in parts of 20,000 documents; once per configuration, on the same input."""
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
    out = []
    import shutil

    for label, params in configs:
        console = Console(quiet=True)
        node = tmp / f"node-{len(out)}"
        with LocalExecutor(workers=workers, console=console) as ex:
            ctx = NodeContext(name="dedup", dir=node, inputs=[NodeOutput("src", src, "x", {})], executor=ex, run=RunContext(out_dir=tmp, cache_dir=tmp, console=console, manifest=None, progress=False))
            tracemalloc.start()  # the main process: numpy arrays are traced too
            t0 = time.perf_counter()
            extra = Dedup(Params(shards=shards, keep_work=True, **params), "dedup").run(ctx)
            elapsed = time.perf_counter() - t0
            main_peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
        files = [f for f in (node / "work").rglob("*") if f.is_file()]
        work_mb = sum(f.stat().st_size for f in files) / 1e6
        shingle_mb = sum(f.stat().st_size for f in files if f.parent.name in ("shingles", "shoff")) / 1e6
        removed = sum(pq.ParquetFile(f).metadata.num_rows for f in (node / "removed").glob("part-*.parquet"))
        out.append(
            {
                "label": label,
                "docs": n_docs,
                "parts": part,
                "MB": mb,
                "seconds": elapsed,
                "docs_per_s": n_docs / elapsed,
                "MB_per_s": mb / elapsed,
                "work_MB": work_mb,
                "shingle_MB": shingle_mb,
                "removed": removed,
                "main_peak_MB": main_peak,
                "worker_peak_rss_MB": extra["dedup"]["worker_peak_rss_mb"],
                "dedup": extra["dedup"],
            }
        )
        shutil.rmtree(node, ignore_errors=True)
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
        docs, meta = build_corpus(shared)
        print(
            f"\nplanted corpus: {meta['docs']} documents = {meta['base']} base ({meta['negatives']} of them hard negatives ending with shared boilerplate) "
            f"+ {meta['planted']} planted copies + {meta['typos']} character-typo variants + {meta['splices']} splices and overlaps "
            "(40-60% or 70-75% of one document + the rest of another); pairwise precision / recall / F1, a true pair = exact shingle Jaccard >= threshold (or a chain of such pairs)"
        )
        configs = [("after: defaults (verify: exact)", {}), ("before: verify: estimate (the previous default)", {"verify": "estimate"})]
        if args.sweep:
            configs += [
                ("verify exact, 14 bands x 8 rows", {"bands": 14}),
                ("verify exact, 16 bands x 7 rows", {"bands": 16}),
                ("verify exact, 56 bands x 2 rows", {"bands": 56}),
                ("verify off (14 x 8)", {"verify": "off"}),
                ("verify estimate, num_perm 224", {"verify": "estimate", "num_perm": 224}),
                ("threshold 0.6", {"threshold": 0.6}),
                ("threshold 0.8", {"threshold": 0.8}),
                ("word 5-grams (datatrove's n)", {"ngram": 5}),
            ]
        truths: dict[tuple, ShingleTruth] = {}
        summary = []
        for i, (label, params) in enumerate(configs):
            from stages.dedup import Params

            p = Params(**params)
            tkey = (p.ngram, p.char_ngram, p.t2s, p.cjk_char_ngrams, p.cjk_min_fraction)
            if tkey not in truths:
                truths[tkey] = ShingleTruth(docs, params)
            pred, extra, elapsed = run_stage(docs, args.workers, params)
            ev = evaluate(docs, pred, truths[tkey], p.threshold)
            h = print_quality(meta, ev, extra, elapsed, label, p.threshold, full=i < 2)
            d = extra["dedup"]
            summary.append((label, d, h))
        print(
            "\nall configurations (true pairs defined with each configuration's own threshold and shingles; the last column counts planted copies "
            "and typo variants merged with their base document whatever their Jaccard, which compares shingle choices):\n"
        )
        print("| configuration | bands x rows | candidate pairs | compared exactly | rejected | precision | recall | F1 | typo recall | planted copies found, any J |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, d, h in summary:
            print(
                f"| {label} | {d['bands']} x {d['rows']} | {d['candidate_pairs']:,} | {d.get('exact_jaccard_pairs', 0):,} | {d['rejected_pairs']:,} "
                f"| {_fmt(h['precision'])} | {_fmt(h['recall'])} | **{_fmt(h['f1'])}** | {_fmt(h['typo_recall'])} | {_fmt(h['copies_found'])} |"
            )
    if args.scale and args.only in (None, "scale"):
        runs = scale(shared, args.scale, args.workers, args.scale_shards, [("after: verify exact (default)", {}), ("before: verify estimate", {"verify": "estimate"})])
        print(f"\n## (c) the whole stage at scale ({args.workers} workers)\n")
        print(
            "| verification | docs | parts | MB | shards | bucket records | candidate pairs | compared exactly | edges | removed | duplicate clusters | union-find passes "
            "| seconds | docs/s | MB/s | CPU s: signatures / buckets tasks | work files MB | of which shingle sets MB | main process peak allocations MB (tracemalloc) | largest worker peak RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            d = r["dedup"]
            print(
                f"| {r['label']} | {r['docs']:,} | {r['parts']} | {r['MB']:.0f} | {d['shards']} | {d['bucket_records']:,} | {d['candidate_pairs']:,} | {d.get('exact_jaccard_pairs', 0):,} "
                f"| {d['edges']:,} | {r['removed']:,} | {d['clusters_with_duplicates']:,} | {d['union_find_passes']} "
                f"| {r['seconds']:.1f} | {r['docs_per_s']:,.0f} | {r['MB_per_s']:.1f} | {d['signatures_cpu_s']:.1f} / {d['buckets_cpu_s']:.1f} | {r['work_MB']:.0f} | {r['shingle_MB']:.0f} | {r['main_peak_MB']:.1f} | {r['worker_peak_rss_MB']:.0f} |"
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
