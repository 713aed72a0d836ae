"""Issue 14's experiment: what each curation choice buys, at an equal token budget, 3 seeds.

    python benchmarks/ablate_zh.py                        # raw vs curated vs curated + classifier
    python benchmarks/ablate_zh.py --max-tokens 1000000 --seeds 3 --keep /tmp/abl

Data: the loopback test mirrors of the two flagship manifests (a zhwiki-shaped dump of the
articles in ../shared/corpora/zhwiki-articles, and a Common Crawl-shaped mirror of the real pages
in ../shared/corpora/web plus filler pages in other languages, a PDF, an image, a redirect and a
404), as `tests/` build them. Held out from both mirrors and used only for evaluation: every fifth
zhwiki article (20 of 100) and every third Chinese web page's hand-made main text.

Base manifest: `manifests/wiki-web-zh.yaml` (each source curated by its own recipe, joined,
deduplicated, tokenized), plus two nodes the variants route the tokenizer to:

* ``raw``: ``concat`` of the two extraction nodes (text as extracted, nothing filtered);
* ``classified``: ``quality_classifier`` trained on the curated Wikipedia branch (positives)
  against the raw extracted web pages (negatives), scoring the deduplicated output (DCLM's recipe,
  on our data) and keeping what scores >= 0.5.

Variants (``pipeline ablate``; the tokenizer is trained once, on the base variant, and shared):
``raw-crawl`` (the crawl's files read whole, no selection on the URL index: every page extracted,
whatever its language; tokenize ← raw), ``raw`` (the zh-selected records, extracted, nothing
filtered), ``curated`` (the base: tokenize ← dedup) and ``curated+classifier`` (tokenize ←
classified). Each trains the tiny preset on the same number of tokens with seeds
0..K-1, then is scored on the two held-out sets. Prints the table that docs/ablations.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, machine, require_shared, table

CRAWL = "CC-MAIN-2026-01"


def build_data(work: Path) -> dict:
    from tests.support.ccmirror import build_ccmirror, build_pages
    from tests.support.wikidump import build_mirror
    from tests.support.wikidump import build_pages as wiki_pages

    corpora = require_shared()
    articles = sorted((corpora / "zhwiki-articles").glob("*.txt"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    held_wiki = articles[::5]
    train_dir = work / "articles"
    train_dir.mkdir(parents=True, exist_ok=True)
    for p in articles:
        if p not in held_wiki:
            shutil.copy(p, train_dir / p.name)
    pages, _ = wiki_pages(train_dir)
    build_mirror(work / "wikimirror", pages)

    web = build_pages(filler=240, seed=0)
    zh = sorted((p for p in web if p.lang == "zho" and p.text and p.status == 200), key=lambda p: p.key)
    held_web = zh[::3]
    held_keys = {p.key for p in held_web}
    build_ccmirror(work / "ccmirror", [p for p in web if p.key not in held_keys], crawl=CRAWL, n_files=4)

    def jsonl(path: Path, texts: list[str]) -> Path:
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
        return path

    wiki_eval = jsonl(work / "heldout-zhwiki.jsonl", ["\n".join(p.read_text(encoding="utf-8").splitlines()[1:]).strip() for p in held_wiki])
    web_eval = jsonl(work / "heldout-web-zh.jsonl", [p.text.strip() for p in held_web])
    return {"wiki_eval": wiki_eval, "web_eval": web_eval, "held_wiki": len(held_wiki), "held_web": len(held_web)}


def base_manifest(work: Path, vocab: int, seq_len: int) -> Path:
    m = yaml.safe_load((REPO / "manifests" / "wiki-web-zh.yaml").read_text(encoding="utf-8"))
    m["name"] = "ablate-zh"
    stages = m["stages"]
    at = next(i for i, s in enumerate(stages) if s["name"] == "tokenize")
    stages[at:at] = [
        {"name": "raw", "stage": "concat", "inputs": ["wiki_extract", "web_extract"]},
        {"name": "classified", "stage": "quality_classifier", "inputs": ["dedup", "wiki_quality", "web_extract"],
         "params": {"positives": ["wiki_quality"], "negatives": ["web_extract"], "threshold": 0.5}},
    ]
    tok = next(s for s in stages if s["name"] == "tokenize")
    tok["params"].update({"vocab_size": vocab, "seq_len": seq_len, "validation_fraction": 0.05})
    path = work / "ablate-zh.yaml"
    path.write_text(yaml.safe_dump(m, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=600_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.support.ccmirror import CCMirrorServer
    from tests.support.mirror import MirrorServer

    work = args.keep or Path(tempfile.mkdtemp(prefix="ablate-zh-"))
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(work)
    manifest = base_manifest(work, args.vocab, args.seq_len)
    out = work / "ablation"
    env = dict(os.environ, GRIST_CACHE=str(work / "cache"), PYTHONPATH=str(REPO))
    with MirrorServer(work / "wikimirror") as wiki, CCMirrorServer(work / "ccmirror") as cc:
        cmd = [sys.executable, "-m", "pipeline.cli", "ablate", str(manifest),
               "--set", f"sources.zhwiki.mirror={wiki.url}", "--set", f"sources.cc.mirror={cc.url}", "--set", f"sources.cc.crawl={CRAWL}",
               "--variant", "raw-crawl:sources.cc.select=null,stages.tokenize.inputs=[raw],output=raw",
               "--variant", "raw:stages.tokenize.inputs=[raw],output=raw",
               "--variant", "curated",
               "--variant", "curated+classifier:stages.tokenize.inputs=[classified],output=classified",
               "--preset", args.preset, "--max-tokens", str(args.max_tokens), "--seeds", str(args.seeds),
               "--eval-data", str(data["wiki_eval"]), "--eval-data", str(data["web_eval"]), "--out", str(out), "--no-progress"]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        sys.exit(f"pipeline ablate failed ({proc.returncode})")
    result = json.loads((out / "ablation.json").read_text())
    print(machine())
    print(f"held out: {data['held_wiki']} zhwiki articles, {data['held_web']} Chinese web pages; budget {args.max_tokens:,} tokens, "
          f"preset {args.preset}, seeds {args.seeds}; whole command {wall:.0f} s; work folder {work}")
    sets = [e["name"] for e in result["eval_sets"]]
    rows = []
    for v in result["variants"]:
        if v["status"] != "ok":
            rows.append([v["name"], "failed: " + (v.get("error") or {}).get("message", "?")[:80]] + [""] * (3 + 2 * len(sets)))
            continue
        cur = v["curation"]
        cells = [v["name"], cur["documents_out"], f"{cur['tokens']['train']:,}", f"{v['tokens_trained']:,}"]
        for name in sets:
            e = v["eval"][name]
            sd = f" ± {e['loss_std']:.3f}" if e.get("loss_std") is not None else ""
            cells += [f"{e['loss_mean']:.3f}{sd}", f"{e['ppl_mean']:.0f}"]
        cells.append(f"{v['wall_s']['total']:.0f}")
        rows.append(cells)
    heads = ["variant", "docs after curation", "train tokens available", "tokens trained"]
    for name in sets:
        heads += [f"{name} loss (mean ± sd)", f"{name} ppl"]
    print(table(heads + ["wall s"], rows))
    print("eval sets:", json.dumps(result["eval_sets"], ensure_ascii=False))
    print("tokenizer:", json.dumps(result["tokenizer"], ensure_ascii=False))

if __name__ == "__main__":
    main()
