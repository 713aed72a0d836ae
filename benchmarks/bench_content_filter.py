"""Measure ``content_filter``: false positives on Wikipedia, recall on planted documents, speed.

    python benchmarks/bench_content_filter.py                 # the tables of docs/web-filters.md
    python benchmarks/bench_content_filter.py --rules 0:1,0.002:1,0.005:1,0.005:2,0.01:1 --repeat 3

**False positives.** The 100 Chinese Wikipedia articles of ``../shared/corpora/zhwiki-articles``
and the English Wikipedia pages of ``benchmarks.common.en_articles()`` are encyclopedic text:
any document the filter removes there is a false positive. Reported per configuration: documents
with at least one match ("flagged") and documents removed by each rule ``max_ratio:min_matches``
(removed when the matched share is above ``max_ratio`` and there are at least ``min_matches``
matches), with the terms that fired.

**Recall.** Planted documents, built here in code from the lists' own terms (no text copied
from anywhere), deterministic (``--seed``):

* ``spam``: adult-spam pages -- lines of 2-4 listed terms between neutral filler words
  ("免费", "在线观看", "free", "videos" ...), 8-20 lines;
* ``sprinkled``: a real article (zhwiki for zh, enwiki for en) with listed terms inserted until
  they make a target share of its non-space characters (0.5%, 1%, 2%, 5%): how dense a page
  must be before it is removed. English terms go between words; Chinese terms either at any
  character position (``any``: the worst case for segmentation, a term fuses with its
  neighbours, 成人 + 口 ...) or after a punctuation mark or line start (``clause``). The
  ``found`` column is the share of planted occurrences the matcher counts.

Recall = planted documents removed / planted documents. The terms planted are those the matcher
uses (after exclusions), so recall measures the matching, not the list's coverage of the language.

**Configurations.** ``segmented`` (the default: Chinese matches on jieba word boundaries),
``substring`` (every occurrence outside the allow-list), and ``raw`` (substring, no exclusions,
no allow-list: the LDNOOBW lists as C4/datatrove use them, minus single characters).

**Speed.** ``ContentFilter.process`` on the corpora (CPU seconds of this process, best of
``--repeat``), ``POLARS_MAX_THREADS`` as set (1 for per-core figures).

**Web presets and C4 lines**: documents the ``web-zh`` and ``wiki-zh`` presets remove from the
zhwiki articles and the Chinese web pages' main text, and what ``clean`` with ``c4_lines`` removes.

**Side by side with datatrove** (``--datatrove``, on by default when it is installed), in one run
on the same documents, one process, ``POLARS_MAX_THREADS=1`` recommended:

* ``C4BadWordsFilter`` (datatrove 0.10, C4's rule: any match removes the page; for ``zh`` no word
  boundaries, minus its allow-list {性}) fed our vendored LDNOOBW files (it downloads them from
  GitHub otherwise; this run is offline) vs ``content_filter`` with its defaults: documents
  removed on zhwiki, enwiki and the Chinese pages of ``../shared/corpora/web`` (their
  hand-marked main text), docs/s per core and the ratio.
* ``URLFilter`` (datatrove 0.10, UT1 archive + RefinedWeb word lists, tldextract on its bundled
  snapshot) vs ``url_filter`` with its defaults on the same URLs: a deterministic mix of hosts
  taken from the UT1 list and ordinary URLs (``--urls``); removed counts, agreement, docs/s per
  core and the ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import pyarrow as pa  # noqa: E402

from benchmarks.common import SHARED, en_articles, machine, table, zh_articles  # noqa: E402

ZH_FILLER = ["免费", "在线观看", "高清", "视频", "图片", "大全", "最新", "下载", "网站", "直播", "美女", "点击进入", "今日更新", "无码", "合集"]
EN_FILLER = ["free", "videos", "online", "watch", "hot", "best", "new", "pics", "gallery", "live", "click here", "download", "HD", "full", "today"]
DENSITIES = (0.005, 0.01, 0.02, 0.05)

CONFIGS = {
    "segmented": {"zh_mode": "segmented"},
    "substring": {"zh_mode": "substring"},
    "raw": {"zh_mode": "substring", "exclude": [], "allow": []},
}


def _stage(config: dict, max_ratio: float):
    from stages.content_filter import ContentFilter

    return ContentFilter(ContentFilter.Params.model_validate({**config, "max_ratio": max_ratio}), "content")


def _table(texts: list[str], prefix: str) -> pa.Table:
    return pa.table({"id": [f"{prefix}{i}" for i in range(len(texts))], "source": [prefix] * len(texts), "title": [""] * len(texts), "text": texts})


def planted(lang: str, matcher, base: list[str], rng: random.Random, n_spam: int) -> dict[str, tuple[list[str], int]]:
    """kind -> (documents, number of planted term occurrences)."""
    terms = [t for t in (matcher.zh_terms if lang == "zh" else matcher.en_terms) if len(t) >= 2 and t.isprintable()]
    filler = ZH_FILLER if lang == "zh" else EN_FILLER
    sep = "" if lang == "zh" else " "
    end = "。" if lang == "zh" else "."
    spam, k = [], 0
    for _ in range(n_spam):
        lines = []
        for _ in range(rng.randint(8, 20)):
            words = [rng.choice(filler)]
            for _ in range(rng.randint(2, 4)):
                words += [rng.choice(terms), rng.choice(filler)]
                k += 1
            lines.append(sep.join(words) + end)
        spam.append("\n".join(lines))
    out = {"spam": (spam, k)}
    modes = ("any", "clause") if lang == "zh" else ("words",)
    for mode in modes:
        for d in DENSITIES:
            docs, k = [], 0
            for text in base:
                chars = sum(1 for c in text if not c.isspace())
                budget = d * chars
                pieces = list(text) if lang == "zh" else text.split(" ")
                if mode == "clause":
                    slots = [0] + [i + 1 for i, c in enumerate(pieces) if c in "，。；：！？、\n"]
                used = 0
                while used < budget:
                    t = rng.choice(terms)
                    if mode == "clause":
                        at = rng.choice(slots)
                        pieces.insert(at, t)
                        slots = [s + 1 if s > at else s for s in slots]
                    else:
                        pieces.insert(rng.randrange(len(pieces) + 1), t)
                    used += len(t)
                    k += 1
                docs.append(("" if lang == "zh" else " ").join(pieces))
            out[f"sprinkled {d:.1%} ({mode})"] = (docs, k)
    return out


def web_zh_pages() -> list[str]:
    """The hand-marked main text of the Chinese pages of ../shared/corpora/web."""
    import json

    root = SHARED / "corpora" / "web"
    rows = [json.loads(x) for x in (root / "index.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return [(root / "truth" / f"{r['id']}.txt").read_text(encoding="utf-8") for r in rows if r["lang"] == "zh"]


def _cpu(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def datatrove_badwords(corpora: dict[str, tuple[str, list[str]]], repeat: int) -> None:
    """C4BadWordsFilter vs content_filter (defaults) on the same documents."""
    import datatrove.pipeline.filters.c4_filters as c4
    from datatrove.data import Document

    from pipeline.text.blocklists.terms import _data  # noqa: F401 - the vendored files
    from stages.content_filter import ContentFilter

    vendored = REPO / "pipeline" / "text" / "blocklists" / "data" / "ldnoobw"
    c4.cached_asset_path_or_download = lambda url, **kw: str(vendored / ("en.txt" if url.endswith("/en") else url.rsplit("/", 1)[-1] + ".txt"))
    ours = ContentFilter(ContentFilter.Params(), "content")
    ours.process(_table(["预热 warm-up"], "w"))
    rows = []
    for name, (lang, texts) in corpora.items():
        dt = c4.C4BadWordsFilter(default_language=lang)
        dt._get_badwords(lang)  # load outside the timing
        docs = [Document(text=t, id=str(i), metadata={"language": lang}) for i, t in enumerate(texts)]
        dt_removed = sum(1 for d in docs if dt.filter(d) is not True)
        t_dt = _cpu(lambda: [dt.filter(d) for d in docs], repeat)
        tab = _table(texts, name)
        kept, removed, _ = ours.process(tab)
        t_ours = _cpu(lambda: ours.process(tab), repeat)
        rows.append([name, len(texts), dt_removed, removed.num_rows, f"{len(texts) / t_dt:,.0f}", f"{len(texts) / t_ours:,.0f}", f"{t_dt / t_ours:.2f}x"])
        reasons = Counter(r for r in removed["reason"].to_pylist())
        print(f"  {name}: content_filter removed {removed.num_rows} {dict(reasons)} ids {removed['id'].to_pylist()[:10]}")
    print("\n### content_filter vs datatrove C4BadWordsFilter (same documents, CPU s of this process)\n")
    print(table(["corpus", "docs", "removed: C4BadWords", "removed: content_filter", "docs/s C4BadWords", "docs/s content_filter", "speed ratio"], rows))


def bench_urls(n: int, seed: int) -> list[str]:
    """A deterministic mix: 10% hosts of the UT1 list (some as subdomains), 5% with a RefinedWeb
    banned word in the path, the rest ordinary URLs on a few thousand hosts."""
    import tarfile

    from pipeline.text.blocklists.domains import _datatrove_assets

    rng = random.Random(seed)
    with tarfile.open(sorted(_datatrove_assets().glob("url_filterblacklists*.tar.gz"))[-1], "r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("domains"))
        ut1 = [d for d in tar.extractfile(member).read().decode().split("\n")[:200_000:37] if d]
    words = ["news", "blog", "article", "2024", "shop", "cn", "sport", "tech", "life", "travel", "video", "photo", "page", "index", "story", "info"]
    tlds = ["com", "cn", "com.cn", "org", "net", "co.uk", "de", "tw", "hk", "io", "github.io"]
    hosts = [f"{rng.choice(words)}{rng.randint(1, 999)}.{rng.choice(tlds)}" for _ in range(3000)]
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.10:
            host = rng.choice(ut1)
            host = (rng.choice(["www.", "m.", ""]) + host) if rng.random() < 0.5 else host
            out.append(f"http://{host}/{rng.choice(words)}/{i}.html")
        elif r < 0.15:
            out.append(f"https://{rng.choice(hosts)}/{rng.choice(words)}-{rng.choice(['porn', 'xxx', 'sex-cam', 'escort'])}-{i}")
        else:
            out.append(f"https://{rng.choice(['www.', ''])}{rng.choice(hosts)}/{rng.choice(words)}/{rng.choice(words)}-{i}.html?id={rng.randint(1, 10**6)}")
    return out


def datatrove_urls(n: int, seed: int, repeat: int) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.filters.url_filter import URLFilter
    from tldextract import TLDExtract

    from stages.url_filter import UrlFilter

    urls = bench_urls(n, seed)
    dt = URLFilter()
    dt.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)  # offline: the bundled snapshot
    dt.download_data()  # extracts the archive once (local), outside the timing
    docs = [Document(text="", id=str(i), metadata={"url": u}) for i, u in enumerate(urls)]
    dt_keep = [dt.filter(d) is True for d in docs]
    t_dt = _cpu(lambda: [dt.filter(d) for d in docs], repeat)
    ours = UrlFilter(UrlFilter.Params(), "url")
    tab = pa.table({"id": [str(i) for i in range(n)], "source": ["u"] * n, "title": [""] * n, "url": urls, "text": [""] * n})
    c0 = time.process_time()
    kept, removed, _ = ours.process(tab.slice(0, 10))  # lists loaded (UT1 hashes cached in the temp dir after the first run)
    load_s = time.process_time() - c0
    kept, removed, _ = ours.process(tab)
    t_ours = _cpu(lambda: ours.process(tab), repeat)
    our_keep = set(kept["id"].to_pylist())
    ours_k = [str(i) in our_keep for i in range(n)]
    both_drop = sum(1 for a, b in zip(dt_keep, ours_k) if not a and not b)
    only_dt = sum(1 for a, b in zip(dt_keep, ours_k) if not a and b)
    only_ours = sum(1 for a, b in zip(dt_keep, ours_k) if a and not b)
    print(f"\n### url_filter vs datatrove URLFilter ({n:,} URLs, seed {seed}; our list load {load_s:.2f} CPU s, not in the timing)\n")
    print(table(["filter", "removed", "docs/s (CPU)", "speed ratio"], [["datatrove URLFilter", n - sum(dt_keep), f"{n / t_dt:,.0f}", "1.00x"], ["url_filter", removed.num_rows, f"{n / t_ours:,.0f}", f"{t_dt / t_ours:.2f}x"]]))
    print(f"\nremoved by both {both_drop}, only datatrove {only_dt}, only url_filter {only_ours}; url_filter reasons: {dict(Counter(removed['reason'].to_pylist()))}")
    if only_dt or only_ours:
        diff = [(urls[i], dt_keep[i]) for i in range(n) if dt_keep[i] != ours_k[i]][:8]
        print("  differing (url, kept by datatrove):", diff)


def presets_and_c4_lines(corpora: dict[str, list[str]]) -> None:
    """What the web-zh / wiki-zh presets and clean's c4_lines remove from real Chinese text."""
    from pipeline.text.quality import compute_signals, decide
    from stages.clean import Clean

    rows = []
    for name, texts in corpora.items():
        sig = compute_signals(texts, ["zh"] * len(texts))
        cells = []
        for preset in ("web-zh", "wiki-zh"):
            v = decide(sig, preset)
            why = Counter(r for r in v["reason"].to_list() if r)
            cells.append(f"{int((~v['keep']).sum())} {dict(why.most_common())}")
        _, removed, st = Clean(Clean.Params(c4_lines=True), "clean").process(_table(texts, name))
        chars = sum(len(t) for t in texts)
        c = st["clean"]
        cells.append(f"{c['c4_lines_removed']} lines, {c['c4_chars_removed'] / chars:.1%} of characters, {removed.num_rows} emptied")
        rows.append([name, len(texts), *cells])
    print("\n### Web presets and C4 line filters on Chinese text\n")
    print(table(["corpus", "docs", "web-zh removes", "wiki-zh removes", "clean c4_lines removes"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", default="0:1,0.002:1,0.005:1,0.005:2,0.01:1", help="max_ratio:min_matches pairs to report")
    ap.add_argument("--spam", type=int, default=100, help="planted spam pages per language")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--urls", type=int, default=20000, help="URLs for the url_filter comparison")
    ap.add_argument("--only-datatrove", action="store_true", help="only the side-by-side sections")
    ap.add_argument("--no-datatrove", action="store_true")
    args = ap.parse_args()
    rules = [(float(a), int(b)) for a, b in (x.split(":") for x in args.rules.split(","))]
    names = [f"{a:g}:{b}" for a, b in rules]
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f} at start; POLARS_MAX_THREADS={os.environ.get('POLARS_MAX_THREADS', '(unset)')}")
    corpora = {"zh": zh_articles(), "en": en_articles()}
    web_zh = web_zh_pages()
    print(f"corpora: zhwiki {len(corpora['zh'])} articles, enwiki {len(corpora['en'])} pages, web zh {len(web_zh)} pages (main text)")
    if not args.no_datatrove:
        datatrove_badwords({"zhwiki": ("zh", corpora["zh"]), "enwiki": ("en", corpora["en"]), "web-zh": ("zh", web_zh)}, args.repeat)
        datatrove_urls(args.urls, args.seed, args.repeat)
    presets_and_c4_lines({"zhwiki": corpora["zh"], "web-zh": web_zh})
    if args.only_datatrove:
        return

    # ------------------------------------------------------------ false positives
    rows = []
    fired: dict[tuple[str, str], Counter] = {}
    for cname, cfg in CONFIGS.items():
        st = _stage(cfg, 0.0)
        for lang, texts in {"zh": corpora["zh"], "en": corpora["en"], "web-zh": web_zh}.items():
            res = st.matcher.match(texts)
            nonspace = [sum(1 for c in t if not c.isspace()) for t in texts]
            ratio = [c / n if n else 0.0 for c, n in zip(res.chars.tolist(), nonspace)]
            flagged = int((res.count > 0).sum())
            removed = [sum(1 for r, k in zip(ratio, res.count.tolist()) if k >= m and k > 0 and r > t) for t, m in rules]
            fired[(cname, lang)] = Counter(term for d in res.terms for term in d)
            rows.append([cname, lang if lang == "web-zh" else f"{lang}wiki", len(texts), flagged, *removed, f"{max(ratio):.4f}"])
    print("\n### False positives on Wikipedia and on the Chinese web pages' main text (documents)\n")
    print(table(["config", "corpus", "docs", "flagged (>=1 match)", *[f"removed {x}" for x in names], "max ratio seen"], rows))
    print("\nterms that fired (documents):")
    for (cname, lang), c in fired.items():
        print(f"  {cname} {lang}: " + ", ".join(f"{t} {k}" for t, k in c.most_common(25)))

    # ------------------------------------------------------------ recall
    rows = []
    for cname, cfg in CONFIGS.items():
        for lang in ("zh", "en"):
            probe = _stage(cfg, 0.0)
            sets = planted(lang, probe.matcher, corpora[lang], random.Random(args.seed), args.spam)
            base = probe.matcher.match(corpora[lang]).count.sum()  # matches the articles had already
            for kind, (texts, k_planted) in sets.items():
                res = probe.matcher.match(texts)
                nonspace = [sum(1 for c in t if not c.isspace()) for t in texts]
                ratio = [c / n if n else 0.0 for c, n in zip(res.chars.tolist(), nonspace)]
                recall = [sum(1 for r, k in zip(ratio, res.count.tolist()) if k >= m and k > 0 and r > t) / len(texts) for t, m in rules]
                found = (res.count.sum() - (0 if kind == "spam" else base)) / k_planted
                rows.append([cname, lang, kind, len(texts), f"{found:.3f}", *[f"{x:.3f}" for x in recall], f"{sorted(ratio)[len(ratio) // 2]:.4f}"])
    print("\n### Recall on planted documents (share removed)\n")
    print(table(["config", "lang", "planted", "docs", "found", *names, "median ratio"], rows))

    # ------------------------------------------------------------ speed
    rows = []
    for cname, cfg in CONFIGS.items():
        for lang, texts in corpora.items():
            st = _stage(cfg, 0.005)
            t = _table(texts, lang)
            st.process(_table(["预热 warm-up 成人"], "w"))  # lists, OpenCC, jieba model
            best = float("inf")
            for _ in range(args.repeat):
                c0 = time.process_time()
                st.process(t)
                best = min(best, time.process_time() - c0)
            mb = sum(len(x.encode()) for x in texts) / 1e6
            rows.append([cname, f"{lang}wiki", len(texts), f"{mb:.2f}", f"{best:.3f}", f"{len(texts) / best:,.0f}", f"{mb / best:.1f}"])
    print("\n### Speed (ContentFilter.process, CPU seconds of this process, best of %d)\n" % args.repeat)
    print(table(["config", "corpus", "docs", "MB", "CPU s", "docs/s", "MB/s"], rows))
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
