"""A deterministic evaluation corpus for the quality filter, built from the shared corpora.

Used by ``tests/test_quality.py`` (agreement with datatrove) and ``benchmarks/bench_quality.py``
(speed). Nothing is copied into the repository: the texts are read from ``<repo>/../shared``
(``shared_dir()``) at run time.

``english_corpus()`` = the English Wikipedia articles of ``enwiki-sample-multistream.xml.bz2``
(converted by ``pipeline.io.formats.wikitext``) plus documents derived from them and from
``lid-sentences/en.txt`` so that every Gopher rule has documents on both sides of its threshold:
paragraph windows and word-truncations (the 50-word minimum), sentence collections with and
without stop words, repeated lines / paragraphs / phrases, bullet lists, ellipses, hashtags,
number tables, very short and very long words, and one document over 100,000 words.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]  # pipeline/text/quality/corpus.py -> the checkout


def shared_dir() -> Path:
    return REPO_ROOT.parent / "shared"


def corpora_dir() -> Path:
    return shared_dir() / "corpora"


def available() -> bool:
    c = corpora_dir()
    return (c / "wikidumps" / "enwiki-sample-multistream.xml.bz2").is_file() and (c / "lid-sentences" / "en.txt").is_file()


@lru_cache(maxsize=2)
def english_articles() -> tuple[tuple[str, str], ...]:
    """(title, plain text) of the articles (ns 0, not redirects) of the enwiki sample dump."""
    from pipeline.io.formats import mediawiki_xml as mx
    from pipeline.io.formats.wikitext import wikitext_to_text

    path = corpora_dir() / "wikidumps" / "enwiki-sample-multistream.xml.bz2"
    out = []
    for kind, page in mx.iter_pages(mx.iter_text(mx.iter_compressed(path))):
        if kind != "page" or page["ns"] != 0 or page["redirect"] is not None:
            continue
        text = wikitext_to_text(page["text"], variant="zh-hans")
        if text:
            out.append((page["title"], text))
    return tuple(out)


@lru_cache(maxsize=2)
def english_sentences() -> tuple[str, ...]:
    lines = (corpora_dir() / "lid-sentences" / "en.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def chinese_articles() -> list[tuple[str, str]]:
    """(title, text) of the zhwiki plain-text articles (line 1 is the title)."""
    out = []
    for path in sorted((corpora_dir() / "zhwiki-articles").glob("*.txt"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
        text = path.read_text(encoding="utf-8")
        title, _, body = text.partition("\n")
        out.append((title.strip(), body.strip()))
    return out


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if p.strip()]


def _cap(text: str, max_chars: int) -> str:
    """The text cut after the last paragraph that ends within ``max_chars``."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n\n", 0, max_chars)
    return text[: cut if cut > 0 else max_chars]


def english_corpus(n_derived: int = 1500, seed: int = 1234, max_article_chars: int | None = 30_000, long_doc: bool = True) -> list[str]:
    """The articles (each cut at a paragraph boundary to at most ``max_article_chars``, which keeps
    the datatrove oracle affordable in tests) followed by ``n_derived`` derived documents,
    deterministic for a seed."""
    rng = random.Random(seed)
    articles = [t if max_article_chars is None else _cap(t, max_article_chars) for _, t in english_articles()]
    sents = list(english_sentences())
    paras = [p for t in articles for p in _paragraphs(t)]
    lines = [ln for t in articles for ln in t.splitlines() if ln.strip()]
    words = [w for t in articles[:20] for w in t.split()]
    stop = {"the", "be", "to", "of", "and", "that", "have", "with"}

    def sentence_doc(k: int, sep: str = " ") -> str:
        return sep.join(rng.choice(sents) for _ in range(k))

    def window() -> str:
        art = _paragraphs(rng.choice(articles))
        k = rng.randint(1, 6)
        i = rng.randrange(max(1, len(art) - k + 1))
        return "\n\n".join(art[i : i + k])

    def repeat_lines(text: str, frac: float) -> str:
        ls = [ln for ln in text.split("\n") if ln.strip()] or [text]
        out = list(ls)
        for _ in range(max(1, int(len(ls) * frac))):
            out.insert(rng.randrange(len(out) + 1), rng.choice(ls))
        return "\n".join(out)

    def decorate_lines(text: str, frac: float, prefix: str = "", suffix: str = "") -> str:
        ls = text.split("\n")
        return "\n".join((prefix + ln + suffix) if ln.strip() and rng.random() < frac else ln for ln in ls)

    makers = []

    def maker(weight: int):
        def deco(fn):
            makers.extend([fn] * weight)
            return fn

        return deco

    @maker(4)
    def _window():
        return window()

    @maker(3)
    def _truncation():
        t = rng.choice(articles).split(" ")
        i = rng.randrange(max(1, len(t) - 200))
        return " ".join(t[i : i + rng.randint(20, 140)])

    @maker(3)
    def _sentences():
        return sentence_doc(rng.randint(2, 14), rng.choice([" ", "\n", "\n\n"]))

    @maker(2)
    def _no_stopwords():
        doc = sentence_doc(rng.randint(4, 12))
        keep = rng.choice([0, 0, 1, 2, 3])
        seen: set[str] = set()
        out = []
        for w in doc.split(" "):
            if w in stop:
                if w in seen or len(seen) >= keep:
                    continue
                seen.add(w)
            out.append(w)
        return " ".join(out)

    @maker(3)
    def _repeated_lines():
        return repeat_lines(rng.choice([window, lambda: sentence_doc(rng.randint(6, 16), "\n")])(), rng.uniform(0.05, 0.9))

    @maker(2)
    def _repeated_paragraphs():
        ps = _paragraphs(window()) or [window()]
        out = list(ps)
        for _ in range(rng.randint(0, max(1, len(ps)))):
            out.insert(rng.randrange(len(out) + 1), rng.choice(ps))
        return "\n\n".join(out)

    @maker(2)
    def _repeated_phrase():
        base = sentence_doc(rng.randint(3, 10)).split(" ")
        phrase = rng.choice(paras).split(" ")[: rng.randint(2, 10)]
        for _ in range(rng.randint(1, 12)):
            i = rng.randrange(len(base) + 1)
            base[i:i] = phrase
        return " ".join(base)

    @maker(2)
    def _bullets():
        doc = sentence_doc(rng.randint(3, 15), "\n")
        return decorate_lines(doc, rng.uniform(0.6, 1.0), prefix=rng.choice(["- ", "• ", "  - ", "-"]))

    @maker(2)
    def _ellipsis_lines():
        doc = sentence_doc(rng.randint(3, 15), "\n")
        return decorate_lines(doc, rng.uniform(0.0, 0.7), suffix=rng.choice(["...", "…", " ...", "... "]))

    @maker(2)
    def _symbols():
        ws = sentence_doc(rng.randint(3, 10)).split(" ")
        rate = rng.uniform(0.0, 0.25)
        sym = rng.choice(["#", "#tag", "...", "…", "wait...", "##"])
        return " ".join(w if rng.random() > rate else w + " " + sym for w in ws)

    @maker(2)
    def _numbers():
        rows = []
        for _ in range(rng.randint(5, 25)):
            cells = [rng.choice([str(rng.randint(1, 9999)), f"{rng.uniform(0, 100):.1f}%", rng.choice(words), "–", "(" + str(rng.randint(1900, 2020)) + ")"]) for _ in range(rng.randint(2, 7))]
            rows.append(" ".join(cells) + rng.choice(["", ".", ";"]))
        text = "\n".join(rows)
        return text + ("\n" + sentence_doc(rng.randint(0, 6)) if rng.random() < 0.7 else "")

    @maker(1)
    def _short_words():
        ws = sentence_doc(rng.randint(3, 8)).split(" ")
        return " ".join(w if len(w) <= 3 or rng.random() < 0.3 else w[:2] for w in ws)

    @maker(2)
    def _long_words():
        ws = sentence_doc(rng.randint(3, 8)).split(" ")
        glue = rng.uniform(0.3, 1.0)
        out, i = [], 0
        while i < len(ws):
            k = rng.choice([1, 2, 3, 4])
            out.append("".join(ws[i : i + k]) if rng.random() < glue else " ".join(ws[i : i + k]))
            i += k
        return " ".join(out)

    @maker(1)
    def _line_list():
        return "\n".join(rng.choice(lines)[: rng.randint(10, 80)] for _ in range(rng.randint(5, 40)))

    docs = list(articles)
    for _ in range(n_derived):
        docs.append(rng.choice(makers)())
    docs.append("")
    docs.append("\n\n")
    if long_doc:
        # just over Gopher's 100,000-word maximum (short words keep it cheap for the oracle)
        short = sorted({w for s in sents for w in s.split(" ") if w.isalpha() and len(w) <= 4})
        docs.append(" ".join(short[i % len(short)] for i in range(100_050)))
    return docs


def chinese_corpus() -> list[str]:
    """zhwiki articles plus documents of product reviews (many exact duplicate lines)."""
    docs = [t for _, t in chinese_articles()]
    rng = random.Random(7)
    c = corpora_dir() / "zh-sentiment"
    reviews = [ln.strip() for ln in (c / "pos.txt").read_text(encoding="utf-8").splitlines()[:4000] if ln.strip()]
    for _ in range(200):
        docs.append("\n".join(rng.choice(reviews) for _ in range(rng.randint(1, 30))))
    return docs
