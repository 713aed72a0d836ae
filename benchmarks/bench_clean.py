"""Clean benchmark: our `clean` stage vs datatrove's FTFYFormatter + PIIFormatter, same input, one core.

    python benchmarks/bench_clean.py [--repeat 3]
"""

from __future__ import annotations

import argparse

import pyarrow as pa  # noqa: E402
from common import best_time, en_articles, machine, peak_rss_mb, table, zh_articles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--copies", type=int, default=5, help="replicate the corpus to this many copies")
    args = ap.parse_args()
    from datatrove.data import Document
    from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter

    from stages.clean import Clean, Params

    rows = []
    for name, texts in (("zhwiki-articles", zh_articles()), ("enwiki-sample", en_articles())):
        texts = texts * args.copies
        mb = sum(len(t.encode()) for t in texts) / 1e6
        tbl = pa.table({"id": [str(i) for i in range(len(texts))], "source": ["s"] * len(texts), "title": [None] * len(texts), "text": texts})
        ours = Clean(Params(pii=True), "clean")
        ours_cc = Clean(Params(pii=True, opencc="t2s"), "clean")
        ftfy_dt, pii_dt = FTFYFormatter(), PIIFormatter()

        def run_dt():
            for i, t in enumerate(texts):
                d = Document(text=t, id=str(i))
                d.text = ftfy_dt.format(d.text)
                d.text = pii_dt.format(d.text)

        t_ours = best_time(lambda: ours.process(tbl), args.repeat)
        t_cc = best_time(lambda: ours_cc.process(tbl), args.repeat)
        t_dt = best_time(run_dt, args.repeat)
        n = len(texts)
        rows.append([name, n, f"{mb:.1f}", f"{n / t_ours:,.0f}", f"{mb / t_ours:.1f}", f"{n / t_cc:,.0f}", f"{mb / t_cc:.1f}", f"{n / t_dt:,.0f}", f"{mb / t_dt:.1f}", f"{t_dt / t_ours:.1f}x"])
    print(table(["corpus", "docs", "MB", "ours docs/s", "ours MB/s", "ours+t2s docs/s", "ours+t2s MB/s", "datatrove FTFY+PII docs/s", "datatrove MB/s", "speedup (ours vs datatrove)"], rows))
    print("\nours = clean(ftfy on suspicious docs, NFC, whitespace, boilerplate lines, PII: email/phone/ip/cn_id); datatrove = FTFYFormatter + PIIFormatter (email, ip)")
    print(f"one process; best of {args.repeat}; peak RSS {peak_rss_mb():.0f} MB; {machine()}")


if __name__ == "__main__":
    main()
