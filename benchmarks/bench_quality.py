"""Benchmark: grist's quality signals + decision vs datatrove's equivalent filter blocks.

    python benchmarks/bench_quality.py                 # English (gopher) and Chinese (zh), one core each
    python benchmarks/bench_quality.py --only en --derived 3000 --batch 2000

Same input, same run, one process per measurement (so peak memory is per implementation),
``POLARS_MAX_THREADS=1`` so figures are per core. Prints a markdown table: documents/s and MB/s
(UTF-8 bytes of text) per core, the speed ratio, peak RSS of the measuring process and its
growth during the timed run, and the keep/drop agreement between the two.

* ``en``: ``pipeline.text.quality.corpus.english_corpus()`` (enwiki articles + derived documents);
  grist ``compute_signals`` + ``decide(preset="gopher")`` vs datatrove
  ``GopherRepetitionFilter`` then ``GopherQualityFilter`` (default parameters, ``filter()``
  called directly with the pipeline's short-circuit: the cheapest way to run datatrove).
* ``zh``: ``chinese_corpus()`` (zhwiki articles + review collections); grist ``preset="zh"``
  with ``zh_segmenter="jieba"`` and, when ``rjieba`` is installed, ``"jieba-rs"``, vs
  datatrove's FineWeb-2 ``cmn_Hani`` block (``GopherRepetitionFilter``,
  ``FineWebQualityFilter``, ``GopherQualityFilter`` with the cmn_Hani configuration).

Tokenizer model loading (spaCy blank pipeline, jieba dictionary) happens in an untimed warm-up
on a text outside the corpus, for both sides. grist's per-process chunk/block caches start
empty, so the figures are cold-cache figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WARMUP = {
    "en": "Warm-up text: the tokenizer loads here, and that is not timed.\nIt has two lines.",
    "zh": "热身文本：分词器在这里加载，不计时。\n第二行。",
}

def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_datatrove(texts: list[str], lang: str) -> list[bool]:
    from pipeline.text.quality import oracle

    return oracle.pipeline_keep(texts, oracle.gopher_filters()[::-1] if lang == "en" else oracle.fineweb2_zh_filters())


def run_grist(texts: list[str], lang: str, batch: int, zh_segmenter: str = "jieba") -> list[bool]:
    from pipeline.text.quality import compute_signals, decide

    preset = "gopher" if lang == "en" else "zh"
    keep: list[bool] = []
    for i in range(0, len(texts), batch):
        part = texts[i : i + batch]
        sig = compute_signals(part, [lang] * len(part), zh_segmenter=zh_segmenter)
        keep.extend(decide(sig, preset).get_column("keep").to_list())
    return keep


def worker(args) -> None:
    with open(args.input, "rb") as fh:
        texts = pickle.load(fh)
    seg = "jieba-rs" if args.impl == "grist-rs" else "jieba"
    if args.impl.startswith("grist"):
        run_grist([WARMUP[args.lang]], args.lang, args.batch, seg)
    else:
        run_datatrove([WARMUP[args.lang]], args.lang)
    base = _rss_mb()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    keep = run_grist(texts, args.lang, args.batch, seg) if args.impl.startswith("grist") else run_datatrove(texts, args.lang)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": _rss_mb(), "base_mb": base, "keep": keep}))


def measure(impl: str, lang: str, path: str, batch: int) -> dict:
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", impl, "--lang", lang, "--input", path, "--batch", str(batch)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{impl}/{lang} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_rjieba() -> bool:
    try:
        import rjieba  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["en", "zh"], help="run one corpus only")
    ap.add_argument("--derived", type=int, default=1500, help="derived English documents (default 1500)")
    ap.add_argument("--full-articles", action="store_true", help="English articles uncut (default: cut at 30,000 characters)")
    ap.add_argument("--batch", type=int, default=1000, help="documents per grist batch (a partition; default 1000)")
    ap.add_argument("--worker", choices=["grist", "grist-rs", "datatrove"], help=argparse.SUPPRESS)
    ap.add_argument("--lang", choices=["en", "zh"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.impl = args.worker
        worker(args)
        return

    from pipeline.text.quality import corpus

    if not corpus.available():
        raise SystemExit(f"shared corpora not found under {corpus.corpora_dir()}")
    import jieba
    import polars
    import spacy

    print(f"machine: {machine()}")
    from importlib.metadata import version

    print(f"versions: polars {polars.__version__}, datatrove {version('datatrove')}, spaCy {spacy.__version__}, jieba {jieba.__version__}")
    langs = [args.only] if args.only else ["en", "zh"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lang in langs:
            texts = corpus.english_corpus(n_derived=args.derived, max_article_chars=None if args.full_articles else 30_000) if lang == "en" else corpus.chinese_corpus()
            path = str(Path(tmp) / f"{lang}.pkl")
            with open(path, "wb") as fh:
                pickle.dump(texts, fh)
            mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
            impls = ["datatrove", "grist"] + (["grist-rs"] if lang == "zh" and _has_rjieba() else [])
            res = {impl: measure(impl, lang, path, args.batch) for impl in impls}
            for impl in impls:
                r = res[impl]
                agree = sum(a == b for a, b in zip(r["keep"], res["datatrove"]["keep"])) / len(texts)
                rows.append(
                    {
                        "corpus": lang, "impl": impl, "docs": len(texts), "mb": mb, "wall": r["wall"], "cpu": r["cpu"],
                        "docs_s": len(texts) / r["cpu"], "mb_s": mb / r["cpu"], "peak": r["peak_mb"], "growth": r["peak_mb"] - r["base_mb"],
                        "speedup": res["datatrove"]["cpu"] / r["cpu"], "agree": agree, "kept": sum(r["keep"]),
                    }
                )
    print()
    print("| corpus | implementation | docs | MB | CPU s | wall s | docs/s per core | MB/s per core | speed-up | peak RSS MB | RSS growth MB | kept | agreement |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["impl"] == "datatrove":
            name = {"en": "datatrove Gopher repetition + quality", "zh": "datatrove FineWeb-2 cmn_Hani block"}[r["corpus"]]
        elif r["corpus"] == "en":
            name = "grist quality_filter signals + gopher"
        else:
            name = "grist signals + zh preset, " + ("jieba-rs" if r["impl"] == "grist-rs" else "jieba")
        print(
            f"| {r['corpus']} | {name} | {r['docs']} | {r['mb']:.2f} | {r['cpu']:.2f} | {r['wall']:.2f} | {r['docs_s']:.0f} | {r['mb_s']:.2f} | "
            f"{r['speedup']:.1f}x | {r['peak']:.0f} | {r['growth']:.0f} | {r['kept']} | {r['agree'] * 100:.2f}% |"
        )
    print("\nper core = CPU seconds of the single-threaded measuring process (POLARS_MAX_THREADS=1).")


if __name__ == "__main__":
    main()
