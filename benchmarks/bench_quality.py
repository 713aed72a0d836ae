"""Benchmark the quality filter, two ways.

**Against an older commit** (``--compare REF``): this checkout's ``quality_filter`` stage and the
one of ``REF``, side by side on the same text, per core::

    python benchmarks/bench_quality.py --compare 323f97b                        # wiki-zh on Chinese text
    python benchmarks/bench_quality.py --compare 323f97b --presets wiki-zh,zh,gopher --repeat 3

Both run ``QualityFilter.process`` (signals, decision, ledger rows) on the same Arrow batches
(``--batch`` documents each, like a partition), each in a fresh interpreter with
``POLARS_MAX_THREADS=1`` (the other thread pools too), so "per core" is the CPU time of that
process. ``REF``'s ``pipeline/`` and ``stages/`` are extracted with ``git archive`` into a
temporary directory (the working tree and its git state are not touched) and put first on the
child's ``sys.path``. Runs alternate between the two ``--repeat`` times; the lowest CPU time of
each counts (the machine may be shared: the load average is printed before and after). Model
loading (jieba's dictionary; here also its numpy form) happens in an untimed warm-up on a text
outside the corpus and is printed separately: it is paid once per worker process. Per-process
caches start empty. Chinese text: the 100 zhwiki articles of ``../shared/corpora`` plus
``--synthetic`` articles from ``bench_scaling.synthetic_articles`` (paragraphs of those articles
with 30% of the Han characters substituted, the flagship benchmarks' generator), ``lang`` = zh
as ``lid_filter`` leaves it; English text (``gopher``, ``fineweb``, ``c4``):
``corpus.english_corpus()``. The script checks that both keep and drop the same documents for
the same reasons, with the same ledger signals and the same ``q_*`` columns on the kept rows,
and exits non-zero otherwise.

**Against datatrove** (default): grist's quality signals + decision vs datatrove's equivalent
filter blocks::

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
  with ``zh_segmenter="jieba"`` (jieba vectorized, the default), ``"jieba-py"`` (Python jieba
  block by block, as before) and, when ``rjieba`` is installed, ``"jieba-rs"``, vs datatrove's
  FineWeb-2 ``cmn_Hani`` block (``GopherRepetitionFilter``, ``FineWebQualityFilter``,
  ``GopherQualityFilter`` with the cmn_Hani configuration).

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

from common import REPO, machine, require_shared, table  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

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
    seg = {"grist-rs": "jieba-rs", "grist-py": "jieba-py"}.get(args.impl, "jieba")
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


STAGE_WARMUP = {"zh": "热身文本：分词器在这里加载，不计时。\n第二行。", "en": "Warm-up text: the tokenizer loads here, and that is not timed.\nIt has two lines."}
PRESET_LANG = {"wiki-zh": "zh", "zh": "zh", "gopher": "en", "fineweb": "en", "c4": "en"}


def stage_worker(args) -> None:
    sys.path.insert(0, args.root)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages import get_stage_class

    with open(args.input, "rb") as fh:
        texts = pickle.load(fh)
    lang = PRESET_LANG[args.preset]
    cls = get_stage_class("quality_filter")
    params = {"preset": args.preset, **json.loads(args.params)}
    stage = cls(cls.Params.model_validate(params), "quality")

    def batch(part: list[str], start: int) -> pa.Table:
        return pa.table({"id": [f"d{start + i}" for i in range(len(part))], "text": part, "lang": [lang] * len(part)})

    batches = [batch(texts[i : i + args.batch], i) for i in range(0, len(texts), args.batch)]
    c0 = time.process_time()
    stage.process(batch([STAGE_WARMUP[lang]], -1))
    init = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    outs = [stage.process(b) for b in batches]
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    kept = pa.concat_tables([k for k, _ in outs], promote_options="default")
    removed = pa.concat_tables([r for _, r in outs])
    pq.write_table(kept.drop_columns(["text"]), args.out + ".kept.parquet")
    pq.write_table(removed.select(["id", "reason", "signals"]), args.out + ".removed.parquet")
    print(json.dumps({"cpu": cpu, "wall": wall, "init": init}))


def run_stage(root: Path, impl: str, preset: str, path: Path, batch: int, params: str, out: Path) -> dict:
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, __file__, "--stage-worker", "--root", str(root), "--input", str(path), "--preset", preset, "--batch", str(batch), "--params", params, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    if proc.returncode:
        raise SystemExit(f"{impl} / {preset} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> list[str]:
    """Differences between two runs' outputs (empty: identical decisions, reasons and signals)."""
    import polars as pl

    problems = []
    ka, kb = pl.read_parquet(f"{a}.kept.parquet"), pl.read_parquet(f"{b}.kept.parquet")
    ra, rb = pl.read_parquet(f"{a}.removed.parquet"), pl.read_parquet(f"{b}.removed.parquet")
    if ka.get_column("id").to_list() != kb.get_column("id").to_list():
        problems.append(f"kept documents differ ({ka.height} vs {kb.height})")
    if ra.select("id", "reason").rows() != rb.select("id", "reason").rows():
        problems.append(f"removed documents or reasons differ ({ra.height} vs {rb.height})")
    elif [json.loads(s) for s in ra.get_column("signals")] != [json.loads(s) for s in rb.get_column("signals")]:
        problems.append("ledger signals differ")
    qa, qb = [c for c in ka.columns if c.startswith("q_")], [c for c in kb.columns if c.startswith("q_")]
    if not set(qb) <= set(qa):  # this checkout may compute fewer (signals: rules), never others
        problems.append(f"kept q_* columns differ: {sorted(set(qa) ^ set(qb))}")
    if not problems and not ka.select(qb).equals(kb.select(qb)):
        problems.append("kept q_* values differ")
    return problems


def _columns_note(a: Path, b: Path) -> str:
    import pyarrow.parquet as pq

    qa = [c for c in pq.read_schema(f"{a}.kept.parquet").names if c.startswith("q_")]
    qb = [c for c in pq.read_schema(f"{b}.kept.parquet").names if c.startswith("q_")]
    return "" if len(qa) == len(qb) else f" ({len(qb)} of the {len(qa)} q_* columns)"


def chinese_texts(n_synthetic: int, seed: int) -> list[str]:
    from bench_scaling import synthetic_articles

    real = [p.read_text(encoding="utf-8") for p in sorted((require_shared() / "zhwiki-articles").glob("*.txt"))]
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_articles(Path(tmp), n_synthetic, seed=seed)
        syn = [p.read_text(encoding="utf-8") for p in sorted(Path(tmp).glob("*.txt"))]
    return real + syn



def compare_main(args) -> None:
    import polars

    print(f"machine: {machine()}; polars {polars.__version__}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    presets = args.presets.split(",")
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="bench-quality-zh-") as tmp_s:
        tmp = Path(tmp_s)
        old = tmp / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.compare, "pipeline", "stages"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        impls = {args.compare: (old, "{}"), "this checkout": (REPO, args.params)}
        corpora: dict[str, Path] = {}
        for preset in presets:
            lang = PRESET_LANG[preset]
            if lang not in corpora:
                if lang == "zh":
                    texts = chinese_texts(args.synthetic, args.seed)
                else:
                    from pipeline.text.quality import corpus

                    texts = corpus.english_corpus()
                corpora[lang] = tmp / f"{lang}.pkl"
                with open(corpora[lang], "wb") as fh:
                    pickle.dump(texts, fh)
                mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
                print(f"{lang} corpus: {len(texts)} documents, {mb:.2f} MB", flush=True)
            with open(corpora[lang], "rb") as fh:
                texts = pickle.load(fh)
            mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
            best: dict[str, dict] = {}
            for rep in range(args.repeat):
                for name, (root, params) in impls.items():
                    out = tmp / f"{preset}-{'old' if root == old else 'new'}"
                    r = run_stage(root, name, preset, corpora[lang], args.batch, params, out)
                    print(f"  {preset} {name} run {rep + 1}: CPU {r['cpu']:.2f} s, wall {r['wall']:.2f} s", flush=True)
                    if name not in best or r["cpu"] < best[name]["cpu"]:
                        best[name] = r
            problems = compare(tmp / f"{preset}-old", tmp / f"{preset}-new")
            failed |= bool(problems)
            base = best[args.compare]["cpu"]
            for name in impls:
                r = best[name]
                rows.append(
                    [
                        preset, lang, name, len(texts), f"{mb:.2f}", f"{r['cpu']:.2f}", f"{r['wall']:.2f}", f"{len(texts) / r['cpu']:.0f}", f"{mb / r['cpu']:.2f}",
                        f"**{base / r['cpu']:.2f}x**" if name != args.compare else "1.00x", f"{r['init']:.2f}",
                        "-" if name == args.compare else ("; ".join(problems) if problems else "identical" + _columns_note(tmp / f"{preset}-old", tmp / f"{preset}-new")),
                    ]
                )
    print()
    print(table(["preset", "text", "implementation", "docs", "MB", "CPU s", "wall s", "docs/s per core", "MB/s per core", "speed-up", "model load CPU s", "decisions, reasons, signals"], rows))
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("per core = CPU seconds of the single-threaded process running the stage (lowest of the runs).")
    if failed:
        raise SystemExit("the two implementations disagree")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["en", "zh"], help="run one corpus only")
    ap.add_argument("--derived", type=int, default=1500, help="derived English documents (default 1500)")
    ap.add_argument("--full-articles", action="store_true", help="English articles uncut (default: cut at 30,000 characters)")
    ap.add_argument("--batch", type=int, default=1000, help="documents per grist batch (a partition; default 1000)")
    ap.add_argument("--compare", metavar="REF", help="measure this checkout's stage against the one of a git ref (e.g. 323f97b)")
    ap.add_argument("--presets", default="wiki-zh", help="with --compare: comma-separated presets (default wiki-zh); gopher/fineweb/c4 run on English text")
    ap.add_argument("--synthetic", type=int, default=2000, help="with --compare: synthetic zhwiki-like articles added to the 100 real ones (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="with --compare: seed of the synthetic articles")
    ap.add_argument("--repeat", type=int, default=2, help="with --compare: alternating runs per implementation, the lowest CPU time counts (default 2)")
    ap.add_argument("--params", default="{}", help='with --compare: extra stage params for this checkout as JSON, e.g. \'{"signals": "rules"}\'')
    ap.add_argument("--worker", choices=["grist", "grist-py", "grist-rs", "datatrove"], help=argparse.SUPPRESS)
    ap.add_argument("--stage-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lang", choices=["en", "zh"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage_worker:
        stage_worker(args)
        return
    if args.worker:
        args.impl = args.worker
        worker(args)
        return
    if args.compare:
        compare_main(args)
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
            impls = ["datatrove", "grist"] + (["grist-py"] if lang == "zh" else []) + (["grist-rs"] if lang == "zh" and _has_rjieba() else [])
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
            name = "grist signals + zh preset, " + {"grist-rs": "jieba-rs", "grist-py": "Python jieba"}.get(r["impl"], "jieba (vectorized)")
        print(
            f"| {r['corpus']} | {name} | {r['docs']} | {r['mb']:.2f} | {r['cpu']:.2f} | {r['wall']:.2f} | {r['docs_s']:.0f} | {r['mb_s']:.2f} | "
            f"{r['speedup']:.1f}x | {r['peak']:.0f} | {r['growth']:.0f} | {r['kept']} | {r['agree'] * 100:.2f}% |"
        )
    print("\nper core = CPU seconds of the single-threaded measuring process (POLARS_MAX_THREADS=1).")


if __name__ == "__main__":
    main()
