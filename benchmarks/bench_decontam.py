"""Decontamination benchmark: recall on planted evaluation items and false positives on clean text, per
character n-gram length (Chinese), per short-item length and template rule; matching speed per core.

    nice python benchmarks/bench_decontam.py [--shared ../shared] [--seed 0] [--ngrams 8,13,20,30,50]

The figures in docs/decontamination.md come from ``nice python benchmarks/bench_decontam.py``.

Evaluation sets (built deterministically from ``../shared/corpora``; none of their text is in the clean
documents):
  * ``zh-long``: 600 distinct zh-sentiment reviews of 25-150 characters + 300 lid-sentences/zh.txt
    sentences (questions of a reading test);
  * ``zh-mcq``: 300 rows of 4 options, each a clause (6-20 characters) cut from lid-sentences zh sentences
    not in ``zh-long``, plus options every row repeats (是, 不是, 以上都对, 以上都不对: template text);
  * ``en-long``: 400 lid-sentences/en.txt sentences of at least 15 words;
  * ``zh-short``: every clause of 2-12 characters of the ``zh-long`` reviews (还不错, 质量很好 ...): short
    answers in everyday words, which held-out reviews also say as whole sentences (the hard case for exact
    short keys; nothing is planted from it: all its hits on clean documents are false positives).
Planted documents: a zhwiki article (``zhwiki-articles``; English: a web page's main text) with an item
pasted *inside a paragraph* (not on its own line), as:
  ``whole`` (verbatim), ``edit3`` (3 random characters substituted or inserted), ``edit10pct`` (one edit
  per 10 characters), ``trad`` (OpenCC s2t: Traditional script), ``options`` (a row's 4 non-template
  options as "A. ..." lines, the other 3 pasted as plain lines too).
Clean documents: the 100 zhwiki articles, the 85 web pages' main texts (``web/truth``: 21 zh, 64 en), and
2,000 held-out zh-sentiment reviews (the same domain as ``zh-long``, never equal to an item: the hard case).
A clean document "flagged" is a false positive. Speed: ``decontam.match`` on the zhwiki articles, one
process (one core), best of 3, index of all three sets.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline.text import decontam as dc  # noqa: E402

TEMPLATE_OPTIONS = ["是", "不是", "以上都对", "以上都不对"]


def load(shared: Path, rng: random.Random):
    corp = shared / "corpora"
    wiki = [p.read_text(encoding="utf-8") for p in sorted((corp / "zhwiki-articles").glob("*.txt"), key=lambda p: int(p.stem))]
    web = {p.stem: p.read_text(encoding="utf-8") for p in sorted((corp / "web" / "truth").glob("*.txt"))}
    web_zh = [t for k, t in web.items() if k.startswith("zhce")]
    web_en = [t for k, t in web.items() if k.startswith("sh")]
    reviews = []
    seen = set()
    for name in ("pos.txt", "neg.txt"):
        for line in (corp / "zh-sentiment" / name).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if 25 <= len(line) <= 150 and line not in seen:
                seen.add(line)
                reviews.append(line)
    rng.shuffle(reviews)
    zh_sent = [s.strip() for s in (corp / "lid-sentences" / "zh.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    en_sent = [s.strip() for s in (corp / "lid-sentences" / "en.txt").read_text(encoding="utf-8").splitlines() if len(s.split()) >= 15]
    rng.shuffle(zh_sent)
    rng.shuffle(en_sent)
    zh_long = reviews[:600] + zh_sent[:300]
    held_out = reviews[600:2600]
    clauses = [c for s in zh_sent[300:] for c in re.split(r"[，、。；：！？,;]", s) if 6 <= len(c.strip()) <= 20]
    rng.shuffle(clauses)
    mcq = []
    for i in range(300):
        opts = clauses[4 * i : 4 * i + 4]
        if len(opts) < 4:
            break
        mcq.append(opts + [TEMPLATE_OPTIONS[i % 2], TEMPLATE_OPTIONS[2 + i % 2]])
    en_long = en_sent[:400]
    # short answers in the reviews' own words (还不错, 质量很好 ...): the hard case for exact short keys,
    # since held-out reviews say the same things as whole sentences
    short = [c.strip() for r in reviews[:600] for c in re.split(r"[，。！？,.!?~ ]", r) if 2 <= len(c.strip()) <= 12]
    return wiki, web_zh, web_en, held_out, zh_long, mcq, en_long, short


def edit(text: str, k: int, rng: random.Random, pool: str) -> str:
    chars = list(text)
    for _ in range(k):
        i = rng.randrange(len(chars))
        if rng.random() < 0.5:
            chars[i] = rng.choice(pool)
        else:
            chars.insert(i, rng.choice(pool))
    return "".join(chars)


def paste_inside(doc: str, piece: str, rng: random.Random) -> str:
    """The piece inside a paragraph, between two sentences of it (or at a character position)."""
    paras = [p for p in doc.split("\n")]
    idx = max(range(len(paras)), key=lambda i: len(paras[i])) if len(paras) > 1 else 0
    p = paras[idx]
    cut = rng.randrange(len(p) + 1) if p else 0
    paras[idx] = p[:cut] + piece + p[cut:]
    return "\n".join(paras)


def planted(wiki, web_en, zh_long, mcq, en_long, rng: random.Random):
    import opencc

    s2t = opencc.OpenCC("s2t")
    pool_zh = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理世车"
    pool_en = "abcdefghijklmnopqrstuvwxyz"
    docs = []  # (kind, set, text)
    k = 0

    def base_zh():
        nonlocal k
        k += 1
        return wiki[k % len(wiki)]

    for item in zh_long[:300]:
        docs.append(("whole", "zh-long", paste_inside(base_zh(), item, rng)))
    for item in zh_long[300:600]:
        docs.append(("edit3", "zh-long", paste_inside(base_zh(), edit(item, 3, rng, pool_zh), rng)))
    for item in zh_long[600:900]:
        docs.append(("edit10pct", "zh-long", paste_inside(base_zh(), edit(item, max(1, len(item) // 10), rng, pool_zh), rng)))
    for item in zh_long[:300:2]:
        docs.append(("trad", "zh-long", paste_inside(base_zh(), s2t.convert(item), rng)))
    for row in mcq[:300]:
        labeled = rng.random() < 0.5
        lines = "\n".join((f"{'ABCD'[j]}. " if labeled else "") + o for j, o in enumerate(row[:4]))
        doc = base_zh().split("\n")
        cut = rng.randrange(1, max(2, len(doc)))
        docs.append(("options", "zh-mcq", "\n".join(doc[:cut] + [lines] + doc[cut:])))
    for i, item in enumerate(en_long[:200]):
        docs.append(("whole", "en-long", paste_inside(web_en[i % len(web_en)], item, rng)))
    for i, item in enumerate(en_long[200:400]):
        docs.append(("edit3", "en-long", paste_inside(web_en[i % len(web_en)], edit(item, 3, rng, pool_en), rng)))
    return docs


def run_once(index, docs, cfg, min_short=1):
    m = dc.match(index, docs, cfg)
    return (m.ngram_hits >= 1) | (m.short_hits >= min_short), m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ngrams", default="8,10,13,16,20,30,50")
    args = ap.parse_args()
    shared = Path(args.shared)
    if not (shared / "corpora").is_dir():
        sys.exit(f"no corpora under {shared}")
    rng = random.Random(args.seed)
    wiki, web_zh, web_en, held_out, zh_long, mcq, en_long, short = load(shared, rng)
    plants = planted(wiki, web_en, zh_long, mcq, en_long, rng)
    clean = [("zhwiki", t) for t in wiki] + [("web-zh", t) for t in web_zh] + [("web-en", t) for t in web_en] + [("reviews", t) for t in held_out]
    sets = [
        ("zh-long", zh_long, list(range(len(zh_long)))),
        ("zh-mcq", [o for row in mcq for o in row], [i for i, row in enumerate(mcq) for _ in row]),
        ("en-long", en_long, list(range(len(en_long)))),
        ("zh-short", short, list(range(len(short)))),
    ]
    names = [s[0] for s in sets]
    kinds = ["whole", "edit3", "edit10pct", "trad", "options"]
    print(f"planted documents: {len(plants)} ({', '.join(f'{k} {sum(p[0] == k for p in plants)}' for k in kinds)}); clean: {len(clean)} ({', '.join(f'{g} {sum(c[0] == g for c in clean)}' for g in ('zhwiki', 'web-zh', 'web-en', 'reviews'))})")
    print(f"mean item length (chars): zh-long {np.mean([len(x) for x in zh_long]):.0f}, zh-mcq options {np.mean([len(o) for r in mcq for o in r[:4]]):.1f}, en-long words {np.mean([len(x.split()) for x in en_long]):.0f}")

    def table(cfg: dc.Config, label: str, min_short: int = 1):
        index = dc.build_index(sets, cfg)
        flagged, m = run_once(index, [t for _, _, t in plants], cfg, min_short)
        row = {"config": label}
        for kind in kinds:
            for lang in ("zh", "en"):
                sel = [i for i, p in enumerate(plants) if p[0] == kind and p[1].startswith(lang)]
                if sel:
                    hit = [flagged[i, names.index(plants[i][1])] for i in sel]
                    row[f"{lang}:{kind}"] = f"{np.mean(hit):.3f}"
        cflag, cm = run_once(index, [t for _, t in clean], cfg, min_short)
        for g in ("zhwiki", "web-zh", "web-en", "reviews"):
            sel = [i for i, c in enumerate(clean) if c[0] == g]
            row[f"FP {g}"] = f"{int(cflag[sel].any(axis=1).sum())}/{len(sel)}"
        row["FP by zh-short"] = f"{int(cflag[:, names.index('zh-short')].sum())}"
        row["FP by n-gram/short"] = f"{int((cm.ngram_hits >= 1).any(axis=1).sum())}/{int((cm.short_hits >= min_short).any(axis=1).sum())}"
        return row, index, cflag, cm

    def show(rows):
        cols = list(rows[0])
        widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
        print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for r in rows:
            print(" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
        print()

    print("\n== character n-gram length (ngram_zh), min_item_chars 8, max_repeats 10: recall per planted kind, false positives ==")
    rows, fp_examples = [], {}
    for n in [int(x) for x in args.ngrams.split(",")]:
        row, index, cflag, cm = table(dc.Config(ngram_zh=n), f"ngram_zh={n}")
        rows.append(row)
        if n in (8, 13):
            m = dc.match(index, [t for _, t in clean], dc.Config(ngram_zh=n))
            fp_examples[n] = [(clean[i][0], m.first[i]) for i in np.flatnonzero(cflag.any(axis=1))[:6]]
    show(rows)
    for n, ex in fp_examples.items():
        print(f"false positives with ngram_zh={n} (first 6):")
        for g, f in ex:
            print(f"   {g}: {f}")
    print("\n== short items: min_item_chars, template rule (max_repeats), min_short_matches (ngram_zh=13) ==")
    rows = []
    for mic in (2, 4, 6, 8, 10):
        for rep in (10, 10**9):
            row, *_ = table(dc.Config(ngram_zh=13, min_item_chars=mic, max_repeats=rep), f"min_item_chars={mic} max_repeats={'10' if rep == 10 else 'off'}")
            rows.append({k: v for k, v in row.items() if k in ("config", "zh:options", "FP zhwiki", "FP web-zh", "FP web-en", "FP reviews", "FP by n-gram/short", "FP by zh-short")})
    for ms in (2, 3):
        row, *_ = table(dc.Config(ngram_zh=13, min_item_chars=4), f"min_item_chars=4 min_short_matches={ms}", min_short=ms)
        rows.append({k: v for k, v in row.items() if k in ("config", "zh:options", "FP zhwiki", "FP web-zh", "FP web-en", "FP reviews", "FP by n-gram/short", "FP by zh-short")})
    show(rows)

    print("== word n-gram length (ngram_en), English items ==")
    rows = []
    for n in (8, 10, 13):
        row, *_ = table(dc.Config(ngram_en=n), f"ngram_en={n}")
        rows.append({k: v for k, v in row.items() if k in ("config", "en:whole", "en:edit3", "FP web-en", "FP zhwiki", "FP web-zh")})
    show(rows)

    print("== speed: decontam.match on the 100 zhwiki articles, one process ==")
    cfg = dc.Config()
    t0 = time.process_time()
    index = dc.build_index(sets, cfg)
    build = time.process_time() - t0
    texts = wiki
    chars = sum(map(len, texts))
    best = 1e9
    for _ in range(3):
        t0 = time.process_time()
        dc.match(index, texts, cfg)
        best = min(best, time.process_time() - t0)
    print(f"index: {len(index.key):,} keys from {sum(len(s[1]) for s in sets):,} items, built in {build:.2f} s CPU")
    print(f"match: {len(texts)} documents, {chars / 1e6:.2f} M chars in {best:.3f} s CPU: {len(texts) / best:,.0f} docs/s, {chars / best / 1e6:.2f} M chars/s per core")
    cjk = np.arange(0x4E00, 0x9FA5)
    rand = np.random.default_rng(0).choice(cjk, size=(100_000, 50))
    big = sets + [("big", ["".join(map(chr, r)) for r in rand.tolist()], list(range(100_000)))]
    index = dc.build_index(big, cfg)
    t0 = time.process_time()
    dc.match(index, texts, cfg)
    t = time.process_time() - t0
    print(f"with 100,000 more items of 50 characters ({len(index.key):,} keys): {chars / t / 1e6:.2f} M chars/s per core")


if __name__ == "__main__":
    main()
