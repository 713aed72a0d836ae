"""Language-identification benchmark: short phrases, sentences and Chinese reviews, held out.

Data (``../shared/corpora``; nothing is copied into the repository):

* ``lid-sentences/<iso>.txt``: 75 languages, ~1,000 sentences each (``zh`` 729, ``ja`` 412;
  lingua-py's test sentences from the Leipzig corpora). Every file is cut in two parts by line
  number: **dev** (even lines) and **test** (odd lines). The routing thresholds of the cascades
  were chosen on dev; test is the held-out figure.
* **short**: from the sentences of a part, ``--short-per-lang`` (200) random windows per
  language, half of 2 words and half of 3 (tokens stripped of edge punctuation; every token
  has a letter and no digit); for Chinese and Japanese, which have no spaces, windows of 2-3
  and of 4-6 characters of Han/kana. Fixed seed (``--seed``, 0): the same windows every run.
  "2 words" is the accuracy on the first half (2 words, 2-3 characters).
* **pairs**: the same number of two-word windows of at least 10 characters per language
  (another seed; zh/ja: 2-3 characters), closer to "two-word phrases" than short function-word
  pairs such as "of the".
* **sentences**: ``--sentences-per-lang`` (200) evenly spaced sentences per language of a part
  (0: the whole part).
* **reviews**: ``zh-sentiment/{pos,neg}.txt``, Chinese product reviews: distinct lines, split
  the same way (even / odd), ``--reviews`` (2,000) drawn per part with the seed; the share
  labelled ``zh``.

Each backend runs in its own fresh process pinned to one CPU core: models are loaded and warmed
up (on each file's third line and three short strings) before the clock starts; then ``predict`` is timed over each set in one call, best of up to 3 passes (while a
pass takes under 5 s). The clock is the process's CPU time (``time.process_time``): on a shared
machine, wall time also counts the time other processes hold the core, CPU time does not.
Items/s is per CPU second of that one core.

Accuracy is the mean over languages of the per-language share of items labelled with the
file's code (every language weighs the same; a language the backend cannot output counts 0).

A backend written ``NAME@REV`` is that backend of ``pipeline/text/lid.py`` (or, for commits
before the layout change, ``pipeline/lid.py``) as of git revision ``REV``, read with ``git show``
into a temporary module: ``--baselines`` (default ``12c0208``, the default before the short-text
work) adds the default backend as of each revision, so old and new are measured in one run, on
the same machine and data.

    python benchmarks/bench_lid.py                        # old default, default cascade and lingua, side by side
    python benchmarks/bench_lid.py --baselines 12c0208 9a40fb4   # the default as of several commits
    python benchmarks/bench_lid.py --backends all         # every backend
    python benchmarks/bench_lid.py --backends cld2 cld2+lingua --errors
    python benchmarks/bench_lid.py --long                 # also documents/s on long zhwiki articles
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.text import lid  # noqa: E402

CORPORA = REPO.parent / "shared" / "corpora"
DEFAULT_SENTENCES = CORPORA / "lid-sentences"
DEFAULT_REVIEWS = CORPORA / "zh-sentiment"
LONG_DOCS = CORPORA / "zhwiki-articles"
PARTS = ("dev", "test")
NO_SPACES = frozenset({"zh", "ja"})  # short windows of characters, not words
PAIRS_MIN_CHARS = 10  # "pairs": two-word phrases of at least this many characters
REPEAT = 3  # timed passes (best one counts) while a pass takes under REPEAT_UNDER_S
REPEAT_UNDER_S = 5
TARGET_SPEED = 20_000  # items per CPU second, the target for the default
OLD_DEFAULT = "12c0208"  # the last commit whose default cascade trusted CLD2 whenever it called itself reliable
LID_PATHS = ("pipeline/text/lid.py", "pipeline/lid.py")  # where lid.py lived at a revision (newest layout first)


# --------------------------------------------------------------------------- data


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def part_of(lines: list, part: str) -> list:
    """``dev``: the even lines, ``test``: the odd ones."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    return lines[PARTS.index(part) :: 2]


def load_sentences(folder: Path, per_lang: int = 0, offset: int = 0, part: str | None = None) -> list[tuple[str, str]]:
    """(iso, sentence) for each language file (of one ``part``, or all lines); ``per_lang`` > 0
    takes that many evenly spaced lines (deterministic), starting at ``offset`` within each
    stride."""
    out = []
    for path in sorted(folder.glob("*.txt")):
        lines = _lines(path)
        if part is not None:
            lines = part_of(lines, part)
        if per_lang and len(lines) > per_lang:
            step = len(lines) / per_lang
            lines = [lines[int(i * step + offset) % len(lines)] for i in range(per_lang)]
        out.extend((path.stem, line) for line in lines)
    return out


def _token(tok: str) -> str | None:
    """A word of a short window: edge punctuation and symbols stripped; None unless it has a
    letter and no digit."""
    i, j = 0, len(tok)
    while i < j and unicodedata.category(tok[i])[0] in "PS":
        i += 1
    while j > i and unicodedata.category(tok[j - 1])[0] in "PS":
        j -= 1
    tok = tok[i:j]
    cats = [unicodedata.category(c) for c in tok]
    if not any(c[0] == "L" for c in cats) or "Nd" in cats:
        return None
    return tok


def short_window(lang: str, sentence: str, size: int, rng: random.Random) -> str | None:
    """A random window of ``size`` words of ``sentence`` (for zh/ja: ``size`` Han/kana
    characters), or None when the sentence has none."""
    if lang in NO_SPACES:
        ok = [unicodedata.category(c) in ("Lo", "Lm") for c in sentence]
        starts = [s for s in range(len(sentence) - size + 1) if all(ok[s : s + size])]
        if not starts:
            return None
        s = rng.choice(starts)
        return sentence[s : s + size]
    toks = [_token(t) for t in sentence.split()]
    starts = [s for s in range(len(toks) - size + 1) if all(toks[s : s + size])]
    if not starts:
        return None
    s = rng.choice(starts)
    return " ".join(toks[s : s + size])  # type: ignore[arg-type]


def load_short(folder: Path, part: str, per_lang: int = 200, seed: int = 0, pairs_min_chars: int = 0) -> list[tuple[str, str, int]]:
    """(iso, window, words) per language: ``per_lang // 2`` windows of 2 words then
    ``per_lang - per_lang // 2`` of 3 words, at most one per sentence of the ``part``, sentences
    in a seeded random order. For zh/ja: 2-3 characters, then 4-6 (``words`` is then 2 or 3 all
    the same, for the "2 words" figure). ``pairs_min_chars`` > 0: ``per_lang`` windows of 2
    words of at least that many characters instead (zh/ja: 2-3 characters)."""
    out = []
    for path in sorted(folder.glob("*.txt")):
        lang = path.stem
        rng = random.Random(f"{seed}:{lang}:{part}" + (f":pairs{pairs_min_chars}" if pairs_min_chars else ""))
        lines = part_of(_lines(path), part)
        rng.shuffle(lines)
        plan = [2] * per_lang if pairs_min_chars else [2] * (per_lang // 2) + [3] * (per_lang - per_lang // 2)
        it = iter(lines)
        for words in plan:
            for line in it:
                size = (rng.randint(2, 3) if words == 2 else rng.randint(4, 6)) if lang in NO_SPACES else words
                for _ in range(5 if pairs_min_chars else 1):  # a few tries for a long enough pair
                    window = short_window(lang, line, size, rng)
                    if window and (lang in NO_SPACES or len(window) >= pairs_min_chars):
                        break
                else:
                    continue
                out.append((lang, window, words))
                break
    return out


def load_reviews(folder: Path, part: str, n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` distinct Chinese reviews of a ``part`` (seeded draw)."""
    lines = sorted({line for name in ("pos.txt", "neg.txt") if (folder / name).is_file() for line in _lines(folder / name)})
    lines = part_of(lines, part)
    random.Random(f"{seed}:reviews:{part}").shuffle(lines)
    return lines[:n] if n else lines


# --------------------------------------------------------------------------- scoring


def score(gold: list[str], pred: list[str], supported: frozenset[str]) -> dict:
    per: dict[str, list[int]] = {}
    for g, p in zip(gold, pred):
        hit_n = per.setdefault(g, [0, 0])
        hit_n[0] += g == p
        hit_n[1] += 1
    acc = {g: h / n for g, (h, n) in per.items()}
    sup = [g for g in acc if g in supported]
    return {
        "acc_all": sum(acc.values()) / len(acc),
        "acc_supported": sum(acc[g] for g in sup) / max(1, len(sup)),
        "n_supported": len(sup),
        "zh": acc.get("zh", float("nan")),
        "by_lang": acc,
    }


def pin_one_core() -> int | None:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return core
    return None


def build_sets(args) -> dict[str, list[tuple[str, str, int]]]:
    """name -> [(gold, text, words)]; words 0 for sentences and reviews."""
    sets = {}
    for part in PARTS:
        sets[f"short-{part}"] = load_short(args.sentences, part, args.short_per_lang, args.seed)
    for part in PARTS:
        sets[f"pairs-{part}"] = load_short(args.sentences, part, args.short_per_lang, args.seed, pairs_min_chars=PAIRS_MIN_CHARS)
    for part in PARTS:
        sets[f"sentences-{part}"] = [(g, s, 0) for g, s in load_sentences(args.sentences, args.sentences_per_lang, part=part)]
    if args.reviews_dir.is_dir():
        for part in PARTS:
            sets[f"reviews-{part}"] = [("zh", s, 0) for s in load_reviews(args.reviews_dir, part, args.reviews, args.seed)]
    return sets


def lid_at(rev: str):
    """``pipeline/text/lid.py`` (or ``pipeline/lid.py``) as of git revision ``rev``, imported as a
    module of its own from a temporary file (the working tree and the index are not touched)."""
    import importlib.util
    import tempfile

    for path in LID_PATHS:
        proc = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True)
        if proc.returncode == 0:
            break
    else:
        raise RuntimeError(f"no lid.py at revision {rev!r} ({' or '.join(LID_PATHS)}): {proc.stderr.strip()}")
    stem = "".join(c if c.isalnum() else "_" for c in rev)
    with tempfile.TemporaryDirectory(prefix="bench_lid_") as folder:
        file = Path(folder) / f"lid_{stem}.py"
        file.write_text(proc.stdout, encoding="utf-8")
        name = f"bench_lid_at_{stem}"
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def get_backend(spec: str):
    """``NAME`` (this checkout) or ``NAME@REV`` (``lid.py`` as of a git revision)."""
    name, _, rev = spec.partition("@")
    return (lid_at(rev) if rev else lid).get_backend(name)


def timed(backend: lid.Backend, texts: list[str]) -> tuple[list[str], float, dict | None]:
    if hasattr(backend, "stats"):
        backend.stats = dict.fromkeys(backend.stats, 0)
    secs, route = float("inf"), None
    for attempt in range(REPEAT):  # best of up to REPEAT passes, while a pass is short
        t0 = time.process_time()
        pred, _ = backend.predict(texts)
        secs = min(secs, time.process_time() - t0)
        if attempt == 0 and hasattr(backend, "stats"):
            route = dict(backend.stats)
        if secs > REPEAT_UNDER_S:
            break
    return pred, secs, route


def run_one(name: str, args) -> dict:
    """In a child process: load, warm up, then time and score one backend on every set."""
    core = pin_one_core()
    load_avg = _load()
    backend = get_backend(name)
    sets = build_sets(args)
    # warm-up: each file's third line (a dev line that the dev sample skips for all but the
    # smallest files), plus a few short strings
    warm = [s for _, s in load_sentences(args.sentences, 1, offset=2)] + ["hello world", "一二", "と"]
    t0 = time.process_time()
    backend.load()
    backend.predict(warm)
    load_s = time.process_time() - t0
    out = {"backend": name, "core": core, "load_avg_start": load_avg, "load_s": load_s, "packages": backend.packages, "license": backend.license, "sets": {}}
    supported = backend.supported_languages
    for set_name, items in sets.items():
        gold, texts = [g for g, _, _ in items], [t for _, t, _ in items]
        pred, secs, route = timed(backend, texts)
        res = score(gold, pred, supported)
        res.update(n=len(texts), per_s=len(texts) / secs, secs=secs)
        if route is not None:
            res["route"] = route
        if set_name.startswith(("short", "pairs")):
            two = [(g, p) for (g, _, w), p in zip(items, pred) if w == 2]
            res["two_words"] = score([g for g, _ in two], [p for _, p in two], supported)["acc_all"]
        if args.errors:
            res["confusions"] = Counter(f"{g}->{p}" for g, p in zip(gold, pred) if g != p).most_common(25)
        out["sets"][set_name] = res
    out["load_avg_end"] = _load()
    return out


def run_long(name: str, folder: Path) -> list[dict]:
    """In a child process: documents/s and share labelled zh on long Chinese articles, with the
    default sample size and on the whole text."""
    pin_one_core()
    docs = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))]
    rows = []
    bname, _, rev = name.partition("@")
    module = lid_at(rev) if rev else lid
    for chars in (lid.DEFAULT_CHARS, 0):
        backend = module.get_backend(bname, chars).load()
        backend.predict([d[:200] for d in docs[:5]])
        secs = float("inf")
        for _ in range(REPEAT):
            t0 = time.process_time()
            pred, _ = backend.predict(docs)
            secs = min(secs, time.process_time() - t0)
        rows.append({"backend": name, "chars": chars, "docs": len(docs), "mean_chars": sum(map(len, docs)) / len(docs), "docs_per_s": len(docs) / secs, "zh": sum(p == "zh" for p in pred) / len(docs)})
    return rows


# --------------------------------------------------------------------------- report


def _fmt_route(route: dict | None) -> str:
    if not route:
        return ""
    n = sum(route.values()) or 1
    return ", ".join(f"{k} {v / n:.1%}" for k, v in route.items() if v)


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _label(name: str) -> str:
    bname, _, rev = name.partition("@")
    if rev:
        return f"*{bname} as of {rev}*" + (" (old default)" if rev == OLD_DEFAULT else "")
    return f"**{bname}** (default)" if bname == lid.DEFAULT_BACKEND else bname


ACC_KEYS = ("short-dev", "short-test", "pairs-dev", "pairs-test", "sentences-dev", "sentences-test")
SPEED_KEYS = ("short-test", "pairs-test", "sentences-test")


def report(results: list[dict], args, load_start: str) -> None:
    have_reviews = any("reviews-test" in r["sets"] for r in results)
    head = ["backend", "short dev", "short test", "2 words test", "pairs dev", "pairs test", "sentences dev", "sentences test"]
    if have_reviews:
        head += ["reviews zh dev", "reviews zh test"]
    head += ["short/s", "pairs/s", "sentences/s"] + (["reviews/s"] if have_reviews else [])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        s = r["sets"]
        cells = [_label(r["backend"])] + [f"{s['short-dev']['acc_all']:.3f}", f"{s['short-test']['acc_all']:.3f}", f"{s['short-test']['two_words']:.3f}"]
        cells += [f"{s[k]['acc_all']:.3f}" for k in ("pairs-dev", "pairs-test", "sentences-dev", "sentences-test")]
        if have_reviews:
            cells += [f"{s['reviews-dev']['zh']:.3f}", f"{s['reviews-test']['zh']:.3f}"]
        cells += [f"{s[k]['per_s']:,.0f}" for k in SPEED_KEYS]
        if have_reviews:
            cells.append(f"{s['reviews-test']['per_s']:,.0f}")
        print("| " + " | ".join(cells) + " |")
    print()
    sizes = {k: v["n"] for k, v in results[0]["sets"].items()} if results else {}
    print("Items: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + ". Items/s: test parts, per CPU second of one core.")
    by_name = {r["backend"]: r for r in results}
    ref = by_name.get("lingua")
    for r in results:
        s = r["sets"]
        print(f"\n- {r['backend']}: {', '.join(f'{p} {v}' for p, v in r['packages'].items())}; model license {r['license']}; load+warm-up {r['load_s']:.1f} s; "
              f"load average {r.get('load_avg_start', '?')} at its start, {r.get('load_avg_end', '?')} at its end")
        mix_n = sum(s[k]["n"] for k in ("short-test", "sentences-test"))
        mix_s = sum(s[k]["secs"] for k in ("short-test", "sentences-test"))
        print(f"  short-test + sentences-test together: {mix_n / mix_s:,.0f} items/s")
        for k in ("short-test", "pairs-test", "sentences-test"):
            if s[k].get("route"):
                print(f"  routed ({k}): {_fmt_route(s[k]['route'])}")
        if r["backend"] == lid.DEFAULT_BACKEND:
            if ref is not None:
                checks = [f"{k} {s[k]['acc_all'] - ref['sets'][k]['acc_all']:+.3f}" for k in ACC_KEYS]
                checks.append(f"2 words test {s['short-test']['two_words'] - ref['sets']['short-test']['two_words']:+.3f}")
                speed = [f"{k} {'ok' if s[k]['per_s'] >= TARGET_SPEED else 'BELOW'}" for k in ("short-test", "sentences-test")]
                print(f"  vs lingua: {', '.join(checks)}; >= {TARGET_SPEED:,}/s: {', '.join(speed)}")
            for other, o in by_name.items():
                if other.startswith(lid.DEFAULT_BACKEND + "@"):
                    acc = ", ".join(f"{k} {s[k]['acc_all'] - o['sets'][k]['acc_all']:+.3f}" for k in ACC_KEYS)
                    speed = ", ".join(f"{k} {s[k]['per_s'] / o['sets'][k]['per_s']:.2f}x" for k in SPEED_KEYS)
                    print(f"  vs {other}: {acc}; speed {speed}")
        weak = sorted((a, g) for g, a in s["short-test"]["by_lang"].items() if a < 0.7)
        if weak:
            print(f"  short test below 0.70: {' '.join(f'{g} {a:.2f}' for a, g in weak)}")
        weak = sorted((a, g) for g, a in s["sentences-test"]["by_lang"].items() if a < 0.9)
        if weak:
            print(f"  sentences test below 0.90: {' '.join(f'{g} {a:.2f}' for a, g in weak)}")
        if args.errors:
            for k in ("short-test", "sentences-test"):
                print(f"  confusions ({k}): {' '.join(f'{c} {n}' for c, n in s[k]['confusions'])}")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    print(f"\n{cpu}; {os.cpu_count()} cores; load average (1/5/15 min) {load_start} at the start, {_load()} at the end; Python {platform.python_version()}; "
          "each backend in its own process pinned to one core, timed by its CPU time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=Path, default=DEFAULT_SENTENCES)
    ap.add_argument("--reviews-dir", type=Path, default=DEFAULT_REVIEWS)
    ap.add_argument("--backends", nargs="+", default=[lid.DEFAULT_BACKEND, "lingua"], metavar="NAME[@REV]",
                    help=f"backends to measure: {', '.join(lid.backend_names())}, or all; NAME@REV: as of a git revision")
    ap.add_argument("--baselines", nargs="*", default=[OLD_DEFAULT], metavar="REV",
                    help=f"also the default backend as of these git revisions (default: {OLD_DEFAULT}, the old default; none: --baselines)")
    ap.add_argument("--short-per-lang", type=int, default=200, help="short windows per language and part")
    ap.add_argument("--sentences-per-lang", type=int, default=200, help="sentences per language and part (0 = the whole part)")
    ap.add_argument("--reviews", type=int, default=2000, help="reviews per part (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--errors", action="store_true", help="print the most frequent confusions")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--long", action="store_true", help="also the documents/s table on long zhwiki articles")
    ap.add_argument("--long-docs", type=Path, default=LONG_DOCS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--long-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.sentences.is_dir():
        sys.exit(f"sentences not found at {args.sentences}")

    if args.child:
        print(json.dumps(run_one(args.child, args)))
        return
    if args.long_child:
        print(json.dumps(run_long(args.long_child, args.long_docs)))
        return

    names = lid.backend_names() if "all" in args.backends else list(args.backends)
    for name in names:
        if name.partition("@")[0] not in lid.backend_names():
            ap.error(f"unknown backend {name!r}; choose from {', '.join(lid.backend_names())}")
    names = list(dict.fromkeys([f"{lid.DEFAULT_BACKEND}@{rev}" for rev in args.baselines] + names))
    passthrough = ["--sentences", str(args.sentences), "--reviews-dir", str(args.reviews_dir), "--short-per-lang", str(args.short_per_lang),
                   "--sentences-per-lang", str(args.sentences_per_lang), "--reviews", str(args.reviews), "--seed", str(args.seed)]
    load_start = _load()
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, *passthrough] + (["--errors"] if args.errors else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        s = res["sets"]
        print(f"  {name}: short test {s['short-test']['acc_all']:.4f}, sentences test {s['sentences-test']['acc_all']:.4f}", file=sys.stderr)
    report(results, args, load_start)

    long_rows = []
    if args.long and args.long_docs.is_dir():
        for name in names:
            proc = subprocess.run([sys.executable, __file__, "--long-child", name, "--long-docs", str(args.long_docs)], capture_output=True, text=True, check=True)
            long_rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"\nLong documents: {long_rows[0]['docs']} zhwiki articles, {long_rows[0]['mean_chars']:,.0f} characters on average")
        print("\n| backend | sample (chars) | documents/s (1 core) | labelled zh |")
        print("|---|---|---|---|")
        for r in long_rows:
            print(f"| {r['backend']} | {r['chars'] or 'whole text'} | {r['docs_per_s']:,.0f} | {r['zh']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "long_documents": long_rows}, indent=1))


if __name__ == "__main__":
    main()
