"""Scale-out: the wiki-zh manifest on a zhwiki-shaped mirror, on 1 and 2 Dask workers.

    python benchmarks/bench_scaling.py                      # 3200 pages, 1 and 2 workers
    python benchmarks/bench_scaling.py --pages 800 --repeat 2 --local

Pages are synthetic articles made of paragraphs drawn from ../shared's zhwiki articles (so
they are not near duplicates of each other), rendered to wikitext and packed into a multistream
dump by tests/support, served on 127.0.0.1. Each configuration runs the whole manifest in this
process with a fresh cluster and output directory (the download cache is shared: the dump is
fetched once), each in its own interpreter. Reported: wall time per node and per CPU-bound phase
(the executor's ``map`` calls), the speedup of 2 workers over 1 on those phases, and each worker's
peak RSS (VmHWM, read in the worker after every phase). The outputs of every run must be
byte-identical; the script checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine, require_shared, table

from pipeline.exec.dask_executor import DaskExecutor
from pipeline.exec.executors import LocalExecutor

MANIFEST = REPO / "manifests" / "wiki-zh.yaml"
NODES = ["zhwiki", "extract", "clean", "lang", "quality", "dedup", "tokenize"]
# the phases whose work is spread over workers (map calls), by the executor's description
CPU_PHASES = {
    "extract": "extract: wikitext_extract",
    "clean": "clean: clean",
    "lid": "lang: lid_filter",
    "quality": "quality: quality_filter",
    "dedup signatures": "dedup: signatures",
    "tokenize encode": "tokenize: tokenize",
}


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec,
    so a spawned worker would report its parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class _Timed:
    """Adds phase timing (and worker peaks, on Dask) around an executor's map and shuffle."""

    def _setup(self) -> None:
        self.phases: dict[str, float] = {}
        self.busy: dict[str, float] = {}  # seconds workers spent computing the phase's tasks (wall)
        self.cpu: dict[str, float] = {}  # CPU seconds of the worker processes during the phase
        self.peaks: dict[str, dict[str, float]] = {}

    def _cpu(self) -> float:
        return sum(self.client.run(time.process_time).values()) if hasattr(self, "client") else 0.0

    def _record(self, desc: str, t0: float, wall0: float, cpu0: float) -> None:
        self.phases[desc] = self.phases.get(desc, 0.0) + time.perf_counter() - t0
        if hasattr(self, "client"):
            self.cpu[desc] = self.cpu.get(desc, 0.0) + self._cpu() - cpu0
            self.peaks[desc] = self.client.run(_peak_rss_mb)
            stream = self.client.get_task_stream(start=wall0)
            self.busy[desc] = self.busy.get(desc, 0.0) + sum(
                ss["stop"] - ss["start"] for t in stream for ss in t.get("startstops", ()) if ss.get("action") == "compute"
            )

    def map(self, calls, desc="", progress=True):
        t0, wall0, cpu0 = time.perf_counter(), time.time(), self._cpu()
        yield from super().map(calls, desc, progress)
        self._record(desc, t0, wall0, cpu0)

    def shuffle(self, *args, **kw):
        t0, wall0, cpu0 = time.perf_counter(), time.time(), self._cpu()
        out = super().shuffle(*args, **kw)
        self._record(kw.get("desc", "shuffle"), t0, wall0, cpu0)
        return out


class TimedDask(_Timed, DaskExecutor):
    def __init__(self, **kw):
        self._setup()
        super().__init__(**kw)


class TimedLocal(_Timed, LocalExecutor):
    def __init__(self, **kw):
        self._setup()
        super().__init__(**kw)


def synthetic_articles(dest: Path, n: int, seed: int = 0, substitute: float = 0.3) -> int:
    """n articles of 6-14 paragraphs drawn at random from the shared zhwiki articles, with a share
    ``substitute`` of their Han characters replaced by others of the corpus: without it, paragraphs
    repeat across articles and per-worker memo caches (jieba pieces in the quality stage) would hit
    far more often than on a real corpus, favouring one worker over two."""
    paragraphs, titles = [], []
    for path in sorted((require_shared() / "zhwiki-articles").glob("*.txt")):
        lines = path.read_text(encoding="utf-8").split("\n")
        titles.append(lines[0].strip())
        paragraphs += [line for line in lines[1:] if len(line) > 80]
    han = [c for c in "".join(paragraphs) if "\u4e00" <= c <= "\u9fff"]
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    chars = 0
    for i in range(n):
        body = []
        for para in rng.sample(paragraphs, rng.randint(6, 14)):
            body.append("".join(rng.choice(han) if "\u4e00" <= c <= "\u9fff" and rng.random() < substitute else c for c in para))
        chars += sum(map(len, body))
        (dest / f"{i:05d}.txt").write_text(f"{rng.choice(titles)}（{i}）\n\n" + "\n".join(body) + "\n", encoding="utf-8")
    return chars


def run_in_child(kind: str, workers: int, mirror_url: str, out: Path, cache: Path, streams_per_partition: int) -> dict:
    """One configuration in a fresh interpreter: clean peaks, no models cached from an earlier run."""
    cmd = [sys.executable, __file__, "--child", json.dumps([kind, workers, mirror_url, str(out), str(cache), streams_per_partition])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{kind} x{workers} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_once(kind: str, workers: int, mirror_url: str, out: Path, cache: Path, streams_per_partition: int) -> dict:
    from rich.console import Console

    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest

    os.environ["GRIST_CACHE"] = str(cache)
    console = Console(quiet=True)
    m = load_manifest(MANIFEST, [f"sources.zhwiki.mirror={mirror_url}", f"sources.zhwiki.streams_per_partition={streams_per_partition}"])
    ex = TimedDask(workers=workers, console=console, dashboard_address=":0") if kind == "dask" else TimedLocal(workers=workers, console=console)
    t0 = time.perf_counter()
    with ex:
        run_manifest(m, out, ex, console, progress=False)
        wall = time.perf_counter() - t0
    nodes = {n: json.loads((out / "stages" / n / "_record.json").read_text())["duration_s"] for n in NODES}
    partitions = json.loads((out / "stages" / "extract" / "stats.json").read_text())["partitions"]
    worker_peaks = {}
    for peaks in ex.peaks.values():
        for addr, mb in peaks.items():
            worker_peaks[addr] = max(worker_peaks.get(addr, 0), mb)
    return {"wall": wall, "nodes": nodes, "phases": dict(ex.phases), "busy": dict(ex.busy), "cpu": dict(ex.cpu), "peaks": ex.peaks, "worker_peaks": sorted(worker_peaks.values()), "partitions": partitions, "main_peak": _peak_rss_mb()}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=3200, help="synthetic articles (3200: 33 partitions, a few per worker and phase)")
    ap.add_argument("--workers", default="1,2", help="comma-separated Dask worker counts")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the fastest is kept)")
    ap.add_argument("--streams-per-partition", type=int, default=1, help="100-page bz2 streams per partition")
    ap.add_argument("--substitute", type=float, default=0.3, help="share of Han characters replaced in the synthetic articles")
    ap.add_argument("--local", action="store_true", help="also run the local executor with the largest worker count")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, workers, url, out, cache, spp = json.loads(args.child)
        print(json.dumps(run_once(kind, workers, url, Path(out), Path(cache), spp)))
        return

    from tests.support.mirror import MirrorServer
    from tests.support.wikidump import build_mirror, build_pages

    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        chars = synthetic_articles(tmp / "articles", args.pages, substitute=args.substitute)
        pages, _ = build_pages(tmp / "articles")
        build_mirror(tmp / "mirror", pages)
        dump = next((tmp / "mirror").rglob("*-pages-articles-multistream.xml.bz2"))
        print(f"{machine()}; load average at start {os.getloadavg()[0]:.2f}")
        print(f"{len(pages)} pages ({args.pages} articles, {chars / 1e6:.1f} M characters of article text, {args.substitute:.0%} of Han characters substituted), dump {dump.stat().st_size / 1e6:.1f} MB bz2\n")
        configs = [("dask", int(w)) for w in args.workers.split(",")]
        if args.local:
            configs.append(("local", max(w for _, w in configs)))
        results: dict[tuple[str, int], dict] = {}
        reference = None
        with MirrorServer(tmp / "mirror") as server:
            for rep in range(args.repeat):
                for kind, workers in configs:
                    out = tmp / f"out-{kind}-{workers}-{rep}"
                    load = os.getloadavg()[0]
                    res = run_in_child(kind, workers, server.url, out, tmp / "cache", args.streams_per_partition)
                    res["load"] = load
                    print(f"{kind} x{workers} run {rep + 1}: {res['wall']:.1f} s (load average before: {load:.2f})", flush=True)
                    got = {sub: tree_bytes(out / sub) for sub in ("data", "tokens")}
                    if reference is None:
                        reference = got
                    elif got != reference:
                        raise SystemExit(f"{out}: data/ or tokens/ differ from the first run")
                    if (kind, workers) not in results or res["wall"] < results[(kind, workers)]["wall"]:
                        results[(kind, workers)] = res
                    shutil.rmtree(out)
        report(results, configs)
        print("\ndata/ and tokens/ byte-identical across all runs: yes")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict, configs: list) -> None:
    names = [f"{k} x{w}" for k, w in configs]
    first = results[configs[0]]
    print(f"\npartitions per stage: {first['partitions']}\n")
    print("Wall time per node (s):\n")
    rows = [[n] + [f"{results[c]['nodes'][n]:.1f}" for c in configs] for n in NODES]
    rows.append(["**whole run**"] + [f"**{results[c]['wall']:.1f}**" for c in configs])
    print(table(["node"] + names, rows))
    print("\nCPU-bound phases (s) and speedup over the first configuration:\n")
    rows = []
    totals = {c: 0.0 for c in configs}
    for label, desc in CPU_PHASES.items():
        row = [label]
        for c in configs:
            t = results[c]["phases"].get(desc, 0.0)
            totals[c] += t
            row.append(f"{t:.1f}")
        for c in configs[1:]:
            base, t = results[configs[0]]["phases"].get(desc, 0.0), results[c]["phases"].get(desc, 0.0)
            row.append(f"{base / t:.2f}x" if t else "-")
        rows.append(row)
    rows.append(["**all CPU-bound phases**"] + [f"**{totals[c]:.1f}**" for c in configs] + [f"**{totals[configs[0]] / totals[c]:.2f}x**" for c in configs[1:]])
    print(table(["phase"] + names + [f"speedup {n}" for n in names[1:]], rows))
    dask_configs = [c for c in configs if c[0] == "dask"]
    print("\nWorkers' time on the CPU-bound phases (s): task time = sum of task durations (Dask task stream, wall clock);")
    print("CPU = CPU time of the worker processes. Task time above CPU time = tasks waiting for a core (a shared machine);")
    print("CPU time growing with the workers = work done again per worker (warm-up, per-process caches).\n")
    rows = []
    for label, desc in [*CPU_PHASES.items(), ("**all**", None)]:
        descs = [desc] if desc else list(CPU_PHASES.values())
        row = [label]
        for c in dask_configs:
            row += [f"{sum(results[c]['busy'].get(d, 0.0) for d in descs):.1f}", f"{sum(results[c]['cpu'].get(d, 0.0) for d in descs):.1f}"]
        rows.append(row)
    print(table(["phase"] + [f"dask x{w} {m}" for _, w in dask_configs for m in ("task time", "CPU")], rows))
    print("\nPeak RSS (MB, VmHWM): each Dask worker over the run, and the runner process (`pipeline run`):\n")
    rows = [[n, ", ".join(f"{mb:.0f}" for mb in results[c]["worker_peaks"]) or "-", f"{results[c]['main_peak']:.0f}", f"{results[c]['load']:.2f}"] for n, c in zip(names, configs)]
    print(table(["configuration", "worker peaks", "runner peak", "load average before"], rows))
    print("\nLargest worker peak after each phase (MB, cumulative), first configuration:\n")
    rows = [[desc, f"{max(p.values()):.0f}"] for desc, p in results[configs[0]]["peaks"].items()]
    print(table(["after phase", "worker peak"], rows))


if __name__ == "__main__":
    main()
