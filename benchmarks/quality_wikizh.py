"""The whole wiki-zh run before and after the vectorized jieba, wall and CPU time, side by side.

    python benchmarks/quality_wikizh.py --pages 3200 --repeat 2

Like ``bench_wikizh.py --compare REF`` (same synthetic zhwiki mirror, same CLI run, same
per-node durations and data/ and tokens/ digests), with two differences that matter on a shared
machine and a shared working tree:

* the two configurations are REF (default 323f97b) and **REF with this checkout's quality
  filter** (``pipeline/text/quality/`` and ``stages/quality_filter.py`` copied over it), both
  extracted with ``git archive`` into a temporary directory: other files changed in this
  checkout do not enter the comparison;
* besides wall time it reports the **CPU time of the whole run** (runner, forkserver and
  workers, polled from ``/proc``: see :class:`TreeCPU`), which other jobs on the machine inflate
  far less than wall time.

Runs alternate between the configurations ``--repeat`` times; the table shows each one's run
with the lowest CPU time, and every run is printed as it ends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, machine, table

QUALITY_FILES = ["pipeline/text/quality", "stages/quality_filter.py"]


def extract(ref: str, dest: Path, overlay: bool) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    if overlay:
        for rel in QUALITY_FILES:
            src, dst = REPO / rel, dest / rel
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst)
    return dest


class TreeCPU:
    """CPU seconds of all descendants of this process while it runs, polled from /proc (Linux):
    the pipeline's workers are children of a forkserver that is not waited for, so
    ``RUSAGE_CHILDREN`` misses them. A process's last sample before it exits counts (the
    workers idle at the end of a run), so the figure is a lower bound by at most one interval."""

    def __init__(self, interval: float = 0.2):
        import threading

        self.interval, self.seen, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        me = os.getpid()
        parent, cpu = {}, {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            parent[pid] = int(fields[1])
            cpu[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime; key: pid + start time
        for (pid, start), seconds in cpu.items():
            p, hops = parent.get(pid), 0
            while p and p != me and hops < 64:
                p, hops = parent.get(p), hops + 1
            if p == me:
                self.seen[(pid, start)] = max(self.seen.get((pid, start), 0.0), seconds)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeCPU":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=3200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ref", default="323f97b", help="the commit before (default 323f97b)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--substitute", type=float, default=0.3)
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_scaling import synthetic_articles
    from bench_wikizh import NODES, run_checkout

    from tests.support.mirror import MirrorServer
    from tests.support.wikidump import build_mirror, build_pages

    tmp = Path(tempfile.mkdtemp(prefix="quality-wikizh-"))
    try:
        names = [args.ref, f"{args.ref} + this quality filter"]
        checkouts = {names[0]: extract(args.ref, tmp / "before", False), names[1]: extract(args.ref, tmp / "after", True)}
        chars = synthetic_articles(tmp / "articles", args.pages, substitute=args.substitute)
        pages, _ = build_pages(tmp / "articles")
        build_mirror(tmp / "mirror", pages)
        print(f"{machine()}; load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{len(pages)} pages, {chars / 1e6:.1f} M characters of page text, --workers {args.workers}\n", flush=True)
        best: dict[str, dict] = {}
        with MirrorServer(tmp / "mirror") as server:
            for rep in range(args.repeat):
                for name, checkout in checkouts.items():
                    out = tmp / f"out-{rep}-{len(best)}"
                    with TreeCPU() as cpu:
                        res = run_checkout(checkout, server.url, out, tmp / "cache", args.workers, [])
                    res["cpu"] = cpu.seconds
                    print(f"{name} run {rep + 1}: wall {res['wall']:.1f} s, CPU {res['cpu']:.1f} s, quality node {res['nodes'].get('quality', 0):.1f} s; "
                          f"data {res['data'][:16]}, tokens {res['tokens'][:16]}; load {os.getloadavg()[0]:.2f}", flush=True)
                    if name not in best or res["cpu"] < best[name]["cpu"]:
                        best[name] = res
                    shutil.rmtree(out)
        a, b = (best[n] for n in names)
        rows = [[n, f"{a['nodes'].get(n, 0):.1f}", f"{b['nodes'].get(n, 0):.1f}", f"{a['nodes'][n] / b['nodes'][n]:.2f}x" if a["nodes"].get(n) and b["nodes"].get(n) else "-"] for n in NODES]
        rows.append(["**whole run, wall**", f"**{a['wall']:.1f}**", f"**{b['wall']:.1f}**", f"**{a['wall'] / b['wall']:.2f}x**"])
        rows.append(["**whole run, CPU (all processes)**", f"**{a['cpu']:.1f}**", f"**{b['cpu']:.1f}**", f"**{a['cpu'] / b['cpu']:.2f}x**"])
        print("\nNode durations (s), the run with the lowest CPU time of each:\n")
        print(table(["node", names[0], names[1], "speed-up"], rows))
        same = all(a[k] == b[k] for k in ("data", "tokens"))
        print(f"\ndata/ and tokens/ identical between the two: {'yes' if same else 'NO'}")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
