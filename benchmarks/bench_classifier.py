"""Quality classifier benchmark: the shipped hashed-n-gram logistic regression (char n-grams or
jieba words for Chinese) against fastText, side by side, on held-out real text.

Tasks (``../shared/corpora``), both classes cut into chunks of the same length range
(``--min-chars``..``--max-chars`` characters, whole paragraphs/lines), so length alone does not
separate them:

- **zh**: positives = zhwiki articles (``zhwiki-articles/``); negatives = web pages' text as a raw
  extractor gives it (``web/pages`` zh, resiliparse plain text of the whole page: navigation,
  footers and all) and product reviews (``zh-sentiment``, distinct lines, several per chunk).
- **en**: positives = English Wikipedia pages (``wikidumps/enwiki-sample``, wikitext -> text by
  the pipeline's renderer); negatives = English web pages' raw text (``web/pages`` en).

Held-out split **by origin** (article / page / review block; sha256 of its id), so chunks of one
article never sit on both sides. Per model: accuracy, ROC AUC on the held-out chunks, training
and scoring throughput on one core (docs/s, MB/s of UTF-8 text), and ratios to fastText. Then the
stage as shipped (one worker): training on the training chunks and scoring 4 copies of the
held-out chunks, and scoring them again with ``model:`` (CPU seconds of runner + worker).

fastText needs a wheel that can train (``fasttext-predict``, installed, cannot): install it
outside the project, e.g. ``pip install --no-deps --target /tmp/ftsite fasttext-wheel`` and pass
``--fasttext-path /tmp/ftsite``; without it the fastText rows are left out.

    nice python benchmarks/bench_classifier.py [--shared ../shared] [--fasttext-path /tmp/ftsite] [--repeat 3]
    nice python benchmarks/bench_classifier.py --only scale --scale 10000   # training at max_train_docs size
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.text import classifier as clf  # noqa: E402


# ------------------------------------------------------------------------------------ corpora
def _chunks(origin: str, paras: list[str], lo: int, hi: int) -> list[tuple[str, str]]:
    """Consecutive paragraphs grouped into chunks of lo..hi characters (longer ones cut)."""
    out, cur = [], ""
    for p in paras:
        p = p.strip()
        if not p:
            continue
        while len(p) > hi:
            out.append(p[:hi])
            p = p[hi:]
        cur = f"{cur}\n{p}" if cur else p
        if len(cur) >= lo:
            out.append(cur[:hi])
            cur = ""
    if len(cur) >= lo:
        out.append(cur)
    return [(origin, c) for c in out]


def zh_task(shared: Path, lo: int, hi: int) -> tuple[list, list]:
    pos = []
    for f in sorted((shared / "corpora/zhwiki-articles").glob("*.txt")):
        lines = f.read_text(encoding="utf-8").splitlines()[1:]
        lines = [ln for ln in lines if not re.fullmatch(r"\d+(\.\d+)*\s+\S{1,20}", ln.strip())]  # section headings
        pos += _chunks(f"wiki/{f.stem}", lines, lo, hi)
    neg = web_task(shared, "zh", lo, hi)
    reviews = []
    for name in ("pos.txt", "neg.txt"):
        seen = set()
        for ln in (shared / "corpora/zh-sentiment" / name).read_text(encoding="utf-8").splitlines():
            if ln.strip() and ln not in seen:
                seen.add(ln)
                reviews.append(ln.strip())
    for b in range(0, len(reviews), 40):  # blocks of 40 reviews are the unit of the held-out split
        neg += _chunks(f"reviews/{b}", reviews[b : b + 40], lo, hi)
    return pos, neg


def web_task(shared: Path, lang: str, lo: int, hi: int) -> list:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    from pipeline.text.html import decode_html

    out = []
    for line in (shared / "corpora/web/index.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["lang"] != lang:
            continue
        html = decode_html((shared / "corpora/web/pages" / f"{row['id']}.html").read_bytes()).text
        text = extract_plain_text(HTMLTree.parse(html), main_content=False)
        out += _chunks(f"web/{row['id']}", text.splitlines(), lo, hi)
    return out


def en_task(shared: Path, lo: int, hi: int) -> tuple[list, list]:
    from pipeline.io.formats import mediawiki_xml as mx
    from pipeline.io.formats.wikitext import wikitext_to_text

    pos = []
    path = shared / "corpora/wikidumps/enwiki-sample-multistream.xml.bz2"
    for kind, page in mx.iter_pages(mx.iter_text(mx.iter_compressed(path))):
        if kind == "page" and page.get("ns") in (0, "0") and page.get("text") and not page.get("redirect"):
            text = wikitext_to_text(page["text"], variant="en")
            pos += _chunks(f"wiki/{page.get('id') or page.get('title')}", text.splitlines(), lo, hi)
    return pos, web_task(shared, "en", lo, hi)


def split(pos: list, neg: list, holdout: float) -> tuple:
    """(train texts, train y, test texts, test y), held-out by origin."""

    def held(origin: str) -> bool:
        return int(hashlib.sha256(origin.encode()).hexdigest()[:8], 16) / 2**32 < holdout

    tr, ytr, te, yte, kinds = [], [], [], [], []
    for items, label in ((pos, 1), (neg, 0)):
        for origin, text in items:
            (te if held(origin) else tr).append(text)
            (yte if held(origin) else ytr).append(label)
            if held(origin):
                kinds.append(origin.split("/")[0])
    split.kinds = kinds  # held-out chunk kinds (wiki / web / reviews), in te order before balancing
    return tr, np.array(ytr), te, np.array(yte)


def balance(texts: list, y: np.ndarray, seed: int = 0, kinds: list | None = None) -> tuple:
    """At most as many negatives as positives (and the reverse), sampled with a fixed seed."""
    rng = np.random.default_rng(seed)
    idx_p, idx_n = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k = min(len(idx_p), len(idx_n))
    keep = np.sort(np.concatenate([rng.choice(idx_p, k, replace=False), rng.choice(idx_n, k, replace=False)]))
    out = [texts[i] for i in keep], y[keep]
    return out if kinds is None else (*out, [kinds[i] for i in keep])


# ------------------------------------------------------------------------------------ models
class Ours:
    def __init__(self, **feat):
        self.cfg = clf.FeatureConfig(**feat)
        self.name = f"hashed-logreg zh={self.cfg.zh}" + (f" {self.cfg.char_ngrams[0]}-{self.cfg.char_ngrams[1]}" if self.cfg.zh == "chars" else "")

    def fit(self, texts, y):
        self.model = clf.train(clf.featurize(texts, self.cfg), y, self.cfg)

    def score(self, texts):
        return self.model.predict_proba(texts)


class FastText:
    """fastText supervised, DCLM's settings where they apply (word bigrams, 5 epochs, lr 0.1),
    one thread. Chinese is pre-split (characters, or jieba words), as fastText splits on spaces."""

    def __init__(self, ft, zh: str):
        self.ft, self.zh, self.name = ft, zh, f"fastText zh={zh}"

    def prep(self, texts):
        norm = clf.normalize(texts, 10_000)
        zh = clf.cjk_mask(norm, 0.3)
        out = []
        if self.zh == "jieba":
            from pipeline.text.quality import jieba_np

            seg = jieba_np.segment([t for t, z in zip(norm.to_list(), zh) if z])
            it = iter(seg)
        for t, z in zip(norm.to_list(), zh):
            if not z:
                out.append(re.sub(r"[^\w]+", " ", t).strip())
            elif self.zh == "chars":
                out.append(" ".join(ch for ch in t if not ch.isspace()))
            else:
                out.append(next(it))
        return [o.replace("\n", " ") for o in out]

    def fit(self, texts, y):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
            for t, label in zip(self.prep(texts), y):
                fh.write(f"__label__{int(label)} {t}\n")
        self.m = self.ft.train_supervised(fh.name, lr=0.1, epoch=5, wordNgrams=2, dim=100, minCount=1, thread=1, verbose=0, seed=0)
        os.unlink(fh.name)

    def score(self, texts):
        # the wrapper's predict breaks on numpy 2, and multilinePredict's probabilities come back
        # garbled through this wheel's bindings: the per-line binding, as the wrapper calls it
        f = self.m.f
        return np.array([dict((lab, pr) for pr, lab in f.predict(t, 2, 0.0, "strict")).get("__label__1", 0.0) for t in self.prep(texts)])


def measure(model, tr, ytr, te, yte, repeat: int, kinds: list | None = None) -> dict:
    t_fit = []
    for _ in range(repeat):
        t0 = time.process_time()
        model.fit(tr, ytr)
        t_fit.append(time.process_time() - t0)
    t_score = []
    for _ in range(repeat):
        t0 = time.process_time()
        p = model.score(te)
        t_score.append(time.process_time() - t0)
    mb_tr = sum(len(t.encode()) for t in tr) / 1e6
    mb_te = sum(len(t.encode()) for t in te) / 1e6
    m = clf.metrics(yte, p)
    kinds = np.array(kinds or [])
    by_kind = {k: round(float(((p >= 0.5) == yte)[kinds == k].mean()), 3) for k in sorted(set(kinds.tolist()))}
    return {
        "accuracy_by_kind": by_kind,
        "model": model.name,
        "accuracy": m["accuracy"],
        "auc": m["auc"],
        "train_docs_s": len(tr) / min(t_fit),
        "train_mb_s": mb_tr / min(t_fit),
        "score_docs_s": len(te) / min(t_score),
        "score_mb_s": mb_te / min(t_score),
    }


def stage_run(tr, ytr, te, repeat: int) -> dict:
    """The stage as shipped, on one worker: train on ``tr`` (positives/negatives nodes) and score
    ``te`` (a third node, 4 parts), then again with ``model:`` (score only). Process CPU time of
    the runner and its worker (children)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.console import Console

    from pipeline.core.stage import DOC_SCHEMA, NodeContext, NodeOutput, RunContext
    from pipeline.exec.executors import LocalExecutor
    from stages import quality_classifier as qc

    root = Path(tempfile.mkdtemp(prefix="bench-clf-"))

    def node(name: str, texts: list[str], parts: int) -> NodeOutput:
        d = root / name
        d.mkdir()
        per = -(-len(texts) // parts)
        for i in range(parts):
            chunk = texts[i * per : (i + 1) * per]
            n = len(chunk)
            cols = {f.name: [None] * n for f in DOC_SCHEMA}
            cols.update(id=[f"{name}/{i}/{j}" for j in range(n)], source=[name] * n, license=["CC-BY-SA-4.0"] * n, text=chunk)
            pq.write_table(pa.table(cols, schema=DOC_SCHEMA), d / f"part-{i:05d}.parquet")
        return NodeOutput(name=name, dir=d, fingerprint=name, stats={})

    pos = node("pos", [t for t, y in zip(tr, ytr) if y == 1], 1)
    neg = node("neg", [t for t, y in zip(tr, ytr) if y == 0], 1)
    web = node("web", list(te) * 4, 4)
    mb = 4 * sum(len(t.encode()) for t in te) / 1e6

    def cpu() -> float:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    out = {}
    for label, params in (("train + score", {"positives": ["pos"], "negatives": ["neg"]}), ("score (model:)", {"model": str(root / "n-train + score-0" / "model")})):
        best = None
        for r in range(repeat):
            d = root / f"n-{label}-{r}"
            console = Console(quiet=True)
            with LocalExecutor(workers=1, console=console) as ex:
                ctx = NodeContext(name="clf", dir=d, inputs=[pos, neg, web] if "positives" in params else [web], executor=ex, run=RunContext(out_dir=root, cache_dir=root, console=console, manifest=None, progress=False))
                c0 = cpu()
                extra = qc.QualityClassifier(qc.Params(**params), "clf").run(ctx)
            c1 = cpu() - c0  # after the pool closed: its workers' time is in RUSAGE_CHILDREN
            best = min(best or c1, c1)
        out[label] = {"cpu_s": best, "scored_docs": 4 * len(te), "docs_s": 4 * len(te) / best, "mb_s": mb / best, "kept": extra["classifier"]["kept_documents"]}
    return out


def scale(shared: Path, n: int, chars: int = 2000) -> None:
    """Training at the size of ``max_train_docs``: n windows of ``chars`` characters of the zhwiki
    articles vs n of the concatenated reviews; featurize, train, score; peak RSS of this process."""
    import resource

    wiki = "".join(f.read_text(encoding="utf-8") for f in sorted((shared / "corpora/zhwiki-articles").glob("*.txt")))
    rev = "".join((shared / "corpora/zh-sentiment/neg.txt").read_text(encoding="utf-8").splitlines())
    rng = np.random.default_rng(0)
    texts = [src[s : s + chars] for src in (wiki, rev) for s in rng.integers(0, len(src) - chars, n)]
    y = np.r_[np.ones(n), np.zeros(n)]
    cfg = clf.FeatureConfig()
    t0 = time.process_time()
    x = clf.featurize(texts, cfg)
    t_feat = time.process_time() - t0
    t0 = time.process_time()
    model = clf.train(x, y, cfg)
    t_train = time.process_time() - t0
    t0 = time.process_time()
    model.predict_proba(texts[:4000])
    t_score = time.process_time() - t0
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(
        f"\n## scale: {2 * n:,} documents of {chars:,} characters ({mb:.0f} MB): {x.nnz:,} non-zeros; featurize {t_feat:.1f} s + train {t_train:.1f} s "
        f"({model.card['optimizer']['iterations']} steps, {model.card['optimizer']['active_features']:,} buckets used) = {2 * n / (t_feat + t_train):,.0f} docs/s, "
        f"{mb / (t_feat + t_train):.2f} MB/s; score {4000 / t_score:,.0f} docs/s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--fasttext-path", default=None, help="folder holding a training-capable fasttext package (fasttext-wheel)")
    ap.add_argument("--min-chars", type=int, default=200)
    ap.add_argument("--max-chars", type=int, default=1500)
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["zh", "en", "scale"], default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-stage", action="store_true", help="skip the stage-level runs")
    ap.add_argument("--scale", type=int, default=0, metavar="N", help="also train on N + N 2,000-character zh documents (memory and speed at max_train_docs size); alone with --only scale")
    args = ap.parse_args()
    ft = None
    if args.fasttext_path:
        sys.path.insert(0, args.fasttext_path)
        import fasttext as ft

        if not hasattr(ft, "train_supervised"):
            sys.exit(f"the fasttext found first ({ft.__file__}) cannot train; install fasttext-wheel into --fasttext-path")
    results = {}
    for lang in ("zh", "en"):
        if args.only and lang != args.only:
            continue
        pos, neg = (zh_task if lang == "zh" else en_task)(args.shared, args.min_chars, args.max_chars)
        tr, ytr, te, yte = split(pos, neg, args.holdout)
        tr, ytr = balance(tr, ytr)
        te, yte, kinds = balance(te, yte, seed=1, kinds=split.kinds)
        print(f"\n## {lang}: {len(pos)} positive / {len(neg)} negative chunks; train {len(tr)} (balanced), held-out {len(te)} (balanced, by origin)")
        models = [Ours(zh="chars", char_ngrams=(1, 3)), Ours(zh="chars", char_ngrams=(2, 4)), Ours(zh="jieba")] if lang == "zh" else [Ours()]
        if lang == "en":
            models[0].name = "hashed-logreg words 1-2"
        if ft is not None:
            models += [FastText(ft, "chars"), FastText(ft, "jieba")] if lang == "zh" else [FastText(ft, "chars")]
            if lang == "en":
                models[-1].name = "fastText"
        rows = [measure(m, tr, ytr, te, yte, args.repeat, kinds) for m in models]
        base = next((r for r in rows if r["model"].startswith("fastText")), None)
        print(f"{'model':32} {'acc':>6} {'AUC':>6} {'train docs/s':>13} {'MB/s':>6} {'score docs/s':>13} {'MB/s':>6} {'train x fT':>10} {'score x fT':>10}  held-out accuracy by kind")
        for r in rows:
            tr_ratio = f"{r['train_docs_s'] / base['train_docs_s']:.2f}x" if base else "-"
            sc_ratio = f"{r['score_docs_s'] / base['score_docs_s']:.2f}x" if base else "-"
            kinds_txt = ", ".join(f"{k} {v:.3f}" for k, v in r["accuracy_by_kind"].items())
            print(f"{r['model']:32} {r['accuracy']:6.3f} {r['auc']:6.3f} {r['train_docs_s']:13,.0f} {r['train_mb_s']:6.2f} {r['score_docs_s']:13,.0f} {r['score_mb_s']:6.2f} {tr_ratio:>10} {sc_ratio:>10}  {kinds_txt}")
        results[lang] = {"train": len(tr), "heldout": len(te), "rows": rows}
        if not args.no_stage:
            st = stage_run(tr, ytr, te, args.repeat)
            for label, r in st.items():
                print(f"stage {label:16} {r['scored_docs']:,} documents scored: {r['cpu_s']:.2f} CPU s (runner + worker), {r['docs_s']:,.0f} scored docs/s, {r['mb_s']:.2f} MB/s per core")
            results[lang]["stage"] = st
    if args.scale:
        scale(args.shared, args.scale)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
