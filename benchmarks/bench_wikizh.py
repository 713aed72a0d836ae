"""The flagship run end to end: `pipeline run manifests/wiki-zh.yaml` on a zhwiki-shaped mirror.

    python benchmarks/bench_wikizh.py --pages 3200                    # this checkout
    python benchmarks/bench_wikizh.py --pages 3200 --compare 12c0208  # side by side with a commit
    python benchmarks/bench_wikizh.py --pages 800 --hashes-only       # sha256 of data/ and tokens/

Pages are synthetic articles built from ../shared's zhwiki articles (bench_scaling's generator),
packed into a multistream dump and served on 127.0.0.1. Each configuration runs the CLI in a
fresh interpreter (`python -m pipeline.cli run`, cwd and PYTHONPATH = the checkout), so
`--compare REF` measures another commit (checked out with `git worktree`) on the same mirror in
the same session. Reported per configuration: wall time, each node's duration, the runner's peak
RSS, the size of `out/`, and sha256 digests of `data/` and `tokens/` (the two must agree
whenever a change claims identical outputs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, SHARED, machine, table

NODES = ["zhwiki", "extract", "clean", "lang", "quality", "dedup", "tokenize"]


def tree_digest(root: Path) -> str:
    """sha256 over (relative path, bytes) of every file under root, in path order. Left out: the
    code fingerprint, which changes with any edit of the code by design (``_fingerprint`` in
    ``state.json`` and the ``.grist_*.json`` publish markers); every data byte is in."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if not p.is_file() or (p.name.startswith(".grist_") and p.suffix == ".json"):
            continue
        data = p.read_bytes()
        if p.name == "state.json":
            state = json.loads(data)
            state.pop("_fingerprint", None)
            data = json.dumps(state, sort_keys=True).encode()
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def tree_size(root: Path) -> int:
    """Bytes of the files under root, a hard-linked file once (published tokens/ link the node's)."""
    seen, total = set(), 0
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def run_checkout(checkout: Path, mirror: str, out: Path, cache: Path, workers: int, extra: list[str]) -> dict:
    env = dict(os.environ, GRIST_CACHE=str(cache), PYTHONPATH=str(checkout))
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "pipeline.cli", "run", str(checkout / "manifests" / "wiki-zh.yaml"),
           "--out", str(out), "--no-progress", "--workers", str(workers), "--set", f"sources.zhwiki.mirror={mirror}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"run in {checkout} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    nodes = {}
    for n in NODES:
        rec = out / "stages" / n / "_record.json"
        if rec.is_file():
            nodes[n] = json.loads(rec.read_text())["duration_s"]
    return {
        "wall": wall,
        "nodes": nodes,
        "runner_peak_mb": peak_kb / 1024,
        "out_mb": tree_size(out) / 1e6,
        "data_mb": tree_size(out / "data") / 1e6,
        "tokens_mb": tree_size(out / "tokens") / 1e6,
        "data": tree_digest(out / "data"),
        "tokens": tree_digest(out / "tokens"),
    }


def worktree(ref: str, dest: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(dest), ref], check=True, capture_output=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=3200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compare", help="a git ref to run side by side with this checkout")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration, alternating (the fastest is kept)")
    ap.add_argument("--substitute", type=float, default=0.3)
    ap.add_argument("--test-mirror", action="store_true", help="the tests' mirror (100 shared articles + curation fixtures) instead of --pages synthetic ones")
    ap.add_argument("--hashes-only", action="store_true", help="print the digests of data/ and tokens/ only")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="extra --set for every run")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_scaling import synthetic_articles

    from tests.support.mirror import MirrorServer
    from tests.support.wikidump import build_curation_pages, build_mirror, build_pages

    tmp = Path(tempfile.mkdtemp(prefix="bench-wikizh-"))
    checkouts = {"this checkout": REPO}
    try:
        if args.compare:
            checkouts = {args.compare: worktree(args.compare, tmp / "baseline"), "this checkout": REPO}
        if args.test_mirror:
            pages, expected = build_pages(SHARED / "corpora" / "zhwiki-articles")
            pages, _ = build_curation_pages(pages, expected, SHARED)
            chars = sum(len(p.text) for p in pages)
        else:
            chars = synthetic_articles(tmp / "articles", args.pages, substitute=args.substitute)
            pages, _ = build_pages(tmp / "articles")
        build_mirror(tmp / "mirror", pages)
        print(f"{machine()}; load average at start {os.getloadavg()[0]:.2f}")
        print(f"{len(pages)} pages, {chars / 1e6:.1f} M characters of page text, --workers {args.workers}\n", flush=True)
        results: dict[str, dict] = {}
        with MirrorServer(tmp / "mirror") as server:
            for rep in range(args.repeat):
                for name, checkout in checkouts.items():
                    out = tmp / f"out-{rep}-{len(results)}"
                    res = run_checkout(checkout, server.url, out, tmp / "cache", args.workers, [a for o in args.overrides for a in ("--set", o)])
                    print(f"{name} run {rep + 1}: {res['wall']:.1f} s; data {res['data'][:16]}, tokens {res['tokens'][:16]}", flush=True)
                    if name not in results or res["wall"] < results[name]["wall"]:
                        results[name] = res
                    if not args.keep:
                        shutil.rmtree(out)
        names = list(checkouts)
        if args.hashes_only:
            for n in names:
                print(json.dumps({"checkout": n, "data": results[n]["data"], "tokens": results[n]["tokens"]}))
            return
        rows = [[n] + [f"{results[c]['nodes'].get(n, 0):.1f}" for c in names] for n in NODES]
        rows.append(["**whole run (wall)**"] + [f"**{results[c]['wall']:.1f}**" for c in names])
        if len(names) == 2:
            for row, n in zip(rows, NODES + ["wall"]):
                a = results[names[0]]["nodes"].get(n) if n != "wall" else results[names[0]]["wall"]
                b = results[names[1]]["nodes"].get(n) if n != "wall" else results[names[1]]["wall"]
                row.append(f"{a / b:.2f}x" if a and b else "-")
        print("\nNode durations (s):\n")
        print(table(["node"] + names + (["speedup"] if len(names) == 2 else []), rows))
        print("\n" + table(["checkout", "runner peak RSS (MB)", "out/ (MB)", "data/ (MB)", "tokens/ (MB)", "data/ sha256", "tokens/ sha256"],
                           [[n, f"{results[n]['runner_peak_mb']:.0f}", f"{results[n]['out_mb']:.1f}", f"{results[n]['data_mb']:.1f}", f"{results[n]['tokens_mb']:.1f}", results[n]["data"][:16], results[n]["tokens"][:16]] for n in names]))
        if len(names) == 2:
            same = all(results[names[0]][k] == results[names[1]][k] for k in ("data", "tokens"))
            print(f"\ndata/ and tokens/ identical between the two checkouts: {'yes' if same else 'NO'}")
    finally:
        if args.compare:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "baseline")], capture_output=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
