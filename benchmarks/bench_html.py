"""HTML extraction benchmark: main-content extractors and charset handling, side by side, one run.

On the real pages of ../shared/corpora/web (21 Chinese, 13 of them GB2312/GBK bytes, 64 English,
with hand-made ground truth), every page decoded by the shipped ``decode_html`` first:

1. Extraction quality and speed per extractor: bag-of-characters F1 (zh), bag-of-words F1 (en),
   precision, recall, over all pages and over the held-out half (``held``: pages whose sha256(id)
   is odd; the shipped extractor's options were chosen looking at the other half only), pages/s
   per core (extraction only, from decoded text) and the speed ratio to trafilatura with
   datatrove's settings; plus the stage as shipped (``HtmlExtract.process`` on the raw bytes:
   sniffing, charset, extraction, date, output table).
2. Charset: share of pages with mojibake and of pages decoded with the right codec, per strategy,
   on the Chinese pages as served, with their declarations removed, with lying declarations
   (GBK bytes labelled UTF-8, UTF-8 bytes labelled GB2312), and on Big5 pages made from the
   Traditional-script conversion of the ground truth; per detector, with its speed.
3. Page dates: share found, agreement with htmldate, time per page.
4. Tuning of resiliparse-ld (``--only tuning``): F1 per language on the dev and held-out halves
   for each of its rules turned off in turn and for its link-density limits swept.
5. The extraction step against datatrove's (``WarcReader -> Trafilatura``) on one Common
   Crawl-shaped WARC file of the same pages plus filler pages: records/s per core.

    nice python benchmarks/bench_html.py [--web ../shared/corpora/web] [--only extract|charset|date|tuning|datatrove] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, machine, table  # noqa: E402
from pipeline.text import extract as ex  # noqa: E402
from pipeline.text import html as hx  # noqa: E402

warnings.filterwarnings("ignore")


def load(web: Path) -> list[dict]:
    if not (web / "index.jsonl").exists():
        sys.exit(f"{web} not found: this benchmark needs ../shared/corpora/web")
    pages = []
    for line in (web / "index.jsonl").read_text().splitlines():
        r = json.loads(line)
        r["raw"] = (web / "pages" / f"{r['id']}.html").read_bytes()
        r["truth"] = (web / "truth" / f"{r['id']}.txt").read_text(encoding="utf-8")
        r["split"] = "held" if int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 2 else "dev"
        r["html"] = hx.decode_html(r["raw"]).text
        pages.append(r)
    return pages


# ------------------------------------------------------------------------------------------
# Candidate extractors: decoded HTML (str) -> text


def _trafilatura(**kw):
    import trafilatura

    return lambda h: trafilatura.extract(h, **kw) or ""


def _resiliparse(**kw):
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return lambda h: extract_plain_text(HTMLTree.parse(h), main_content=True, **kw)


def _justext(stoplist: str):
    import justext

    def run(h: str) -> str:
        # jusText needs a stop-word list; none ships for Chinese, and it counts stop *words* split on
        # spaces, so a Chinese list cannot help: a whole Chinese sentence is one "word".
        words = justext.get_stoplist("English") if stoplist == "English" else frozenset("的 了 是 在 和 有 我 不 这 也 就 人 都 一 上 中 们 为 以 到".split()) if stoplist == "zh-chars" else frozenset()
        return "\n".join(p.text for p in justext.justext(h.encode("utf-8"), words, encoding="utf-8") if not p.is_boilerplate)

    return run


def _readability(then: str = "resiliparse"):
    from readability import Document
    from resiliparse.extract.html2text import extract_plain_text

    def run(h: str) -> str:
        summary = Document(h).summary(html_partial=then != "trafilatura")
        if then == "trafilatura":
            import trafilatura

            return trafilatura.extract(summary) or ""
        return extract_plain_text(summary)

    return run


def _fallback(first, second, min_chars: int = 200):
    """``first``, then ``second`` when ``first`` returns too little."""
    return lambda h: (lambda t: t if len(t.strip()) >= min_chars else second(h))(first(h))


def _shipped(h: str) -> str:
    return ex.extract(h, date="none").text


_OLD_SPACE_RE = re.compile(r"\s+")


def _before(h: str) -> str:
    """resiliparse-ld as it was before the boilerplate-line rules: one link-density limit (0.5)
    counted over all visible characters, and only a first line equal to the title dropped."""
    import html as _html

    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    def visible(fragment: str) -> int:
        return len(_OLD_SPACE_RE.sub("", _html.unescape(ex._TAG_RE.sub("", fragment))))

    tree = HTMLTree.parse(h)
    out = []
    for line in extract_plain_text(tree, preserve_formatting="minimal_html", links=True, **ex._RESILIPARSE_OPTS).split("\n"):
        if "<a" in line:
            n = visible(line)
            if n and sum(visible(m) for m in ex._LINK_RE.findall(line)) > 0.5 * n:
                continue
        out.append(_html.unescape(ex._TAG_RE.sub("", line)).strip())
    return ex._drop_title_line(ex._BLANKS_RE.sub("\n\n", "\n".join(out)).strip(), (tree.title or "").strip() or None)


def candidates() -> dict[str, object]:
    traf_dt = _trafilatura(favor_precision=True, include_comments=False, deduplicate=True)
    return {
        "trafilatura (defaults)": _trafilatura(),
        "trafilatura favor_precision (datatrove's settings)": traf_dt,
        "trafilatura favor_recall": _trafilatura(favor_recall=True),
        "trafilatura include_tables=False": _trafilatura(include_tables=False),
        "resiliparse main_content (defaults)": _resiliparse(),
        "resiliparse main_content, no comments/alt/meta": _resiliparse(comments=False, alt_texts=False, post_meta=False),
        "resiliparse-ld before the boilerplate-line rules (link density 0.5 over all characters)": _before,
        "resiliparse-ld (shipped: above + skip [class*=caption] + link-density lines + boilerplate lines)": _shipped,
        "jusText, English stoplist": _justext("English"),
        "jusText, 20 common Chinese characters as stoplist": _justext("zh-chars"),
        "jusText, empty stoplist": _justext("none"),
        "readability-lxml -> resiliparse text": _readability(),
        "readability-lxml -> trafilatura": _readability("trafilatura"),
        "trafilatura, resiliparse-ld when < 200 chars": _fallback(traf_dt, _shipped),
        "resiliparse-ld, trafilatura when < 200 chars": _fallback(_shipped, traf_dt),
    }


def _run_all(fn, pages: list[dict], key: str) -> tuple[list[str], float]:
    # trafilatura's deduplicate=True remembers paragraphs across calls (an LRU in the process): a
    # second pass over the same pages would drop them as repeats. Every pass starts from a clean one.
    from trafilatura.deduplication import LRU_TEST

    LRU_TEST.clear()
    outs = []
    t0 = time.perf_counter()
    for p in pages:
        try:
            outs.append(fn(p[key]) or "")
        except Exception:  # an extractor that fails on a page scores 0 there
            outs.append("")
    return outs, time.perf_counter() - t0


def _quality(pages: list[dict], outs: list[str]) -> list[str]:
    cells = []
    for lang in ("zh", "en"):
        scores = [(p["split"], *hx.bag_f1(o, p["truth"], lang)) for p, o in zip(pages, outs) if p["lang"] == lang]
        held = [s for s in scores if s[0] == "held"]
        cells += [f"{sum(s[3] for s in scores) / len(scores):.3f}", f"{sum(s[3] for s in held) / len(held):.3f}",
                  f"{sum(s[1] for s in scores) / len(scores):.2f}/{sum(s[2] for s in scores) / len(scores):.2f}"]
    cells.append(f"{sum(hx.has_mojibake(o) for o in outs) / len(outs):.1%}")
    return cells


def bench_extract(pages: list[dict], repeat: int) -> None:
    import pyarrow as pa

    from pipeline.core.stage import WEB_RECORD_SCHEMA
    from stages.html_extract import HtmlExtract, Params

    cands = [(name, fn, "html") for name, fn in candidates().items()]
    cands.insert(2, ("trafilatura favor_precision on the raw bytes (its own decoding)", _trafilatura(favor_precision=True, include_comments=False, deduplicate=True), "raw"))
    cands[0][1](pages[0]["html"])  # warm-up: the first call loads trafilatura's data
    rows, base_speed = [], None
    for name, fn, key in cands:
        outs, best = _run_all(fn, pages, key)
        for _ in range(repeat - 1):
            best = min(best, _run_all(fn, pages, key)[1])
        speed = len(pages) / best
        if name.startswith("trafilatura favor_precision (datatrove"):
            base_speed = speed
        rows.append([name, *_quality(pages, outs), speed])
    # The stage as shipped: raw bytes in, documents out (sniffing, charset, extraction, date, output table).
    tbl = pa.Table.from_pylist([{"id": p["id"], "html": p["raw"], "content_type": "text/html", "http_status": 200} for p in pages], schema=WEB_RECORD_SCHEMA)
    stage = HtmlExtract(Params(), "html_extract")
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        kept, _, _ = stage.process(tbl)
        best = min(best, time.perf_counter() - t0)
    got = dict(zip(kept["id"].to_pylist(), kept["text"].to_pylist()))
    rows.append(["**stage html_extract as shipped (bytes in: sniff + charset + extract + date + table)**", *_quality(pages, [got.get(p["id"]) or "" for p in pages]), len(pages) / best])
    out = [[r[0], *r[1:-1], f"{r[-1]:.0f}", f"{r[-1] / base_speed:.1f}x"] for r in rows]
    n = {(lang, split): sum(p["lang"] == lang and split in (None, p["split"]) for p in pages) for lang in ("zh", "en") for split in (None, "held")}
    print(f"\n## Main-content extraction ({n['zh', None]} zh pages, {n['zh', 'held']} held out; {n['en', None]} en pages, {n['en', 'held']} held out; best of {repeat} timings)\n")
    print(table(["extractor", "zh F1", "zh F1 held", "zh P/R", "en F1", "en F1 held", "en P/R", "mojibake", "pages/s per core", "speed vs trafilatura (datatrove)"], out))


# ------------------------------------------------------------------------------------------
# Charset


_DECL_RE = re.compile(rb"""(<meta[^>]{0,400}?charset\s*=\s*["']?\s*)([a-zA-Z0-9_.:\-]{2,40})""", re.I)


def _strip_decl(raw: bytes) -> bytes:
    return _DECL_RE.sub(lambda m: m.group(1) + b"x-none", raw)


def _set_decl(raw: bytes, label: str) -> bytes:
    return _DECL_RE.sub(lambda m: m.group(1) + label.encode(), raw) if _DECL_RE.search(raw) else raw


def _naive(raw: bytes, content_type: str | None) -> str:
    """What many scripts do: the declared charset (header, then meta) as is, else UTF-8, errors replaced."""
    label = hx.parse_content_type(content_type)[1] or hx.meta_charset(raw) or "utf-8"
    try:
        return raw.decode(label, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def _big5_pages(pages: list[dict]) -> list[tuple[bytes, str]]:
    import opencc

    conv = opencc.OpenCC("s2t.json")
    out = []
    for p in pages:
        if p["lang"] != "zh":
            continue
        text = conv.convert(p["truth"]).encode("big5", errors="ignore").decode("big5")
        body = "".join(f"<p>{line}</p>" for line in text.splitlines() if line.strip())
        out.append((f"<html><head><title>{text[:20]}</title></head><body>{body}</body></html>".encode("big5"), text))
    return out


def bench_charset(pages: list[dict]) -> None:
    zh = [p for p in pages if p["lang"] == "zh"]
    truth_codec = {p["id"]: "utf-8" if p["charset_bytes"] == "utf-8" else "gb18030" for p in zh}
    scenarios: dict[str, list[tuple[bytes, str | None, str]]] = {
        "zh pages as served": [(p["raw"], None, truth_codec[p["id"]]) for p in zh],
        "zh, declarations removed": [(_strip_decl(p["raw"]), None, truth_codec[p["id"]]) for p in zh],
        "zh, lying header (GBK bytes: utf-8; UTF-8 bytes: gb2312)": [
            (p["raw"], "text/html; charset=" + ("gb2312" if truth_codec[p["id"]] == "utf-8" else "utf-8"), truth_codec[p["id"]]) for p in zh],
        "zh, lying meta (UTF-8 bytes: gb2312)": [(_set_decl(p["raw"], "gb2312"), None, "utf-8") for p in zh if truth_codec[p["id"]] == "utf-8"],
        "Big5 pages (s2t of the zh truth), undeclared": [(raw, None, "big5hkscs") for raw, _ in _big5_pages(pages)],
    }
    rows = []
    for scen, items in scenarios.items():
        strategies: dict[str, object] = {"naive (declared label as is, else UTF-8)": lambda raw, ct: (_naive(raw, ct), None)}
        for det in hx.DETECTORS:
            strategies[f"decode_html, detector {det}" + (" (shipped)" if det == "resiliparse" else "")] = (
                lambda det: lambda raw, ct: (lambda d: (d.text, d.charset))(hx.decode_html(raw, ct, detector=det)))(det)
        for strat, fn in strategies.items():
            moj = right = 0
            dt = 0.0
            for raw, ct, want in items:
                t0 = time.perf_counter()
                try:
                    text, codec = fn(raw, ct)
                except hx.DecodeFailure:
                    text, codec = "", None
                dt += time.perf_counter() - t0
                moj += hx.has_mojibake(text)
                right += codec == want
            rows.append([scen, strat, len(items), f"{moj / len(items):.1%}", "" if strat.startswith("naive") else f"{right}/{len(items)}", f"{1000 * dt / len(items):.2f}"])
    # trafilatura given the raw bytes (it decodes them itself), as pipelines that skip decoding do
    import trafilatura

    for scen in ("zh pages as served",):
        items = scenarios[scen]
        moj = sum(hx.has_mojibake(trafilatura.extract(raw) or "") for raw, _, _ in items)
        rows.append([scen, "trafilatura on raw bytes (its own decoding), extracted text", len(items), f"{moj / len(items):.1%}", "", ""])
    print("\n## Charset: mojibake share and right codec, per strategy\n")
    print(table(["pages", "strategy", "n", "mojibake", "right codec", "ms/page"], rows))


# ------------------------------------------------------------------------------------------
# Dates


def bench_date(pages: list[dict]) -> None:

    t0 = time.perf_counter()
    ours = [ex.page_date(p["html"]) for p in pages]
    t_ours = time.perf_counter() - t0
    try:
        from htmldate import find_date
    except ImportError:
        print("\nhtmldate not installed: date comparison skipped")
        return
    t0 = time.perf_counter()
    theirs = [find_date(p["html"], extensive_search=False, original_date=True) for p in pages]
    t_theirs = time.perf_counter() - t0
    t0 = time.perf_counter()
    chained = [ex._date(p["html"], "htmldate") for p in pages]
    t_chained = time.perf_counter() - t0
    both = [(a, b) for a, b in zip(ours, theirs) if a and b]
    agree = sum(a[:10] == b[:10] for a, b in both)
    print("\n## Page dates\n")
    print(table(["method", "found", "ms/page"], [["page_date (meta / JSON-LD / microdata / <time>)", f"{sum(map(bool, ours))}/{len(pages)}", f"{1000 * t_ours / len(pages):.2f}"],
                                             ["htmldate find_date(extensive_search=False, original_date=True)", f"{sum(map(bool, theirs))}/{len(pages)}", f"{1000 * t_theirs / len(pages):.2f}"],
                                             ["page_date, then htmldate when it finds none (page_date: htmldate)", f"{sum(map(bool, chained))}/{len(pages)}", f"{1000 * t_chained / len(pages):.2f}"]]))
    print(f"\nsame day where both found one: {agree}/{len(both)}")


# ------------------------------------------------------------------------------------------
# Tuning of resiliparse-ld: each rule off in turn, link-density limits swept, on both halves


def bench_tuning(pages: list[dict]) -> None:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    parsed = []
    for p in pages:
        tree = HTMLTree.parse(p["html"])
        parsed.append((extract_plain_text(tree, preserve_formatting="minimal_html", links=True, **ex._RESILIPARSE_OPTS), (tree.title or "").strip() or None))
    ld, cjk = ex.DEFAULT_LINK_DENSITY, ex.DEFAULT_LINK_DENSITY_CJK

    def variant(other: float = ld, cjk_: float = cjk, trim: bool = True, **rules):
        def run(minimal: str, title: str | None) -> str:
            text = ex.filter_link_lines(minimal, other, cjk_)
            return ex.trim_boilerplate(text, title, **rules) if trim else ex._drop_title_line(text, title)
        return run

    variants = {
        "before: link density 0.5 over all characters, title line only": None,
        f"link density in letters, {cjk} CJK / {ld} other lines, title line only": variant(trim=False),
        "+ headline cut": variant(anywhere=False, edges=False),
        "+ headline cut + copyright/cookie/ad lines": variant(edges=False),
        "**+ headline cut + copyright/cookie/ad lines + short/date lines at the ends (shipped)**": variant(),
        "shipped without the headline cut": variant(headline=False),
        "shipped without copyright/cookie/ad lines": variant(anywhere=False),
        "shipped without the short/date lines at the ends": variant(edges=False),
        **{f"other-script lines' limit {x}" + (" (shipped)" if x == ld else ""): variant(other=x) for x in (0.5, 0.6, 0.75, 0.9, 1.0)},
        **{f"CJK lines' limit {x}" + (" (shipped)" if x == cjk else ""): variant(cjk_=x) for x in (0.1, 0.2, 0.3, 0.4, 0.5)},
        "one limit for all lines, 0.5 (letters)": variant(0.5, 0.5),
    }
    rows = []
    for name, fn in variants.items():
        outs = [_before(p["html"]) for p in pages] if fn is None else [fn(m, t) for m, t in parsed]
        cells = []
        for lang in ("zh", "en"):
            for split in ("dev", "held"):
                f = [hx.bag_f1(o, p["truth"], lang)[2] for p, o in zip(pages, outs) if p["lang"] == lang and p["split"] == split]
                cells.append(f"{sum(f) / len(f):.3f}")
        rows.append([name, *cells])
    print("\n## resiliparse-ld tuning: F1 per half (rules and limits chosen on dev, checked on held)\n")
    print(table(["variant", "zh dev", "zh held", "en dev", "en held"], rows))


# ------------------------------------------------------------------------------------------
# Against datatrove's extraction step, on one WARC file


def bench_datatrove(web: Path, repeat: int) -> None:
    """datatrove ``WarcReader -> Trafilatura`` (its defaults: favour_precision, per-document timeout
    sandbox) vs fastwarc -> a WEB_RECORD table -> ``HtmlExtract.process``, on a Common Crawl-shaped
    WARC file of the real pages plus filler pages (tests/support/ccmirror.py), one process each."""
    import logging
    import random
    import tempfile
    from datetime import datetime, timezone

    import pyarrow as pa
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from loguru import logger

    from pipeline.core.stage import WEB_RECORD_SCHEMA
    from stages.html_extract import HtmlExtract, Params
    from tests.support import ccmirror as cm

    logger.remove()
    logging.disable(logging.WARNING)
    pages = cm.build_pages(web, filler=100)
    raw = cm.write_warc_file(pages, "CC-MAIN-bench-00000.warc.gz", cm.CRAWL, random.Random(0), datetime(2024, 8, 2, tzinfo=timezone.utc))[0]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench.warc.gz").write_bytes(raw)

        def theirs():
            from trafilatura.deduplication import LRU_TEST

            LRU_TEST.clear()
            docs = list(WarcReader(tmp, glob_pattern="*.warc.gz").run(None, 0, 1))
            t0 = time.perf_counter()
            out = list(Trafilatura(favour_precision=True).run(iter(docs), 0, 1))
            return len(docs), len(out), time.perf_counter() - t0

        def ours():
            rows = []
            with open(Path(tmp) / "bench.warc.gz", "rb") as f:
                for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                    rows.append({"id": rec.record_id, "html": rec.reader.read(), "content_type": rec.http_headers.get("Content-Type"),
                                 "http_status": rec.http_headers.status_code, "url": rec.headers.get("WARC-Target-URI"), "warc_date": rec.headers.get("WARC-Date")})
            tbl = pa.Table.from_pylist(rows, schema=WEB_RECORD_SCHEMA)
            t0 = time.perf_counter()
            kept, _, _ = HtmlExtract(Params(), "html_extract").process(tbl)
            return tbl.num_rows, kept.num_rows, time.perf_counter() - t0

        def best(fn):
            runs = [fn() for _ in range(repeat)]
            return min(runs, key=lambda r: r[2])

        d_in, d_out, d_t = best(theirs)
        o_in, o_out, o_t = best(ours)
    print(f"\n## Extraction step vs datatrove ({len(pages)} captures in one WARC file, {len(raw) / 1e6:.1f} MB; best of {repeat})\n")
    print(table(["pipeline step", "records in", "documents out", "records/s per core", "ratio"],
                [["datatrove Trafilatura(favour_precision=True) after WarcReader", d_in, d_out, f"{d_in / d_t:.0f}", "1.0x"],
                 ["html_extract (shipped) after fastwarc", o_in, o_out, f"{o_in / o_t:.0f}", f"{(o_in / o_t) / (d_in / d_t):.1f}x"]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--web", type=Path, default=SHARED / "corpora" / "web")
    ap.add_argument("--only", choices=["extract", "charset", "date", "tuning", "datatrove"])
    ap.add_argument("--repeat", type=int, default=3, help="timings: best of this many passes")
    args = ap.parse_args()
    pages = load(args.web)
    print(f"# bench_html: {machine()}")
    if args.only in (None, "extract"):
        bench_extract(pages, args.repeat)
    if args.only in (None, "charset"):
        bench_charset(pages)
    if args.only in (None, "date"):
        bench_date(pages)
    if args.only in (None, "tuning"):
        bench_tuning(pages)
    if args.only in (None, "datatrove"):
        bench_datatrove(args.web, args.repeat)


if __name__ == "__main__":
    main()
