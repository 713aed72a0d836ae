"""Run every benchmark, one after the other, each printing its side-by-side table.

    python benchmarks/run_all.py            # the per-stage comparisons
    python benchmarks/run_all.py clean lid  # some
    python benchmarks/run_all.py scaling train generate   # scale-out ([dask]), training and generation ([train])

``scaling``, ``train`` and ``generate`` are not in the default set: they take minutes and measure the machine
(workers, a GPU's MFU) rather than our code against another library's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["extract", "clean", "lid", "quality", "dedup", "tokenize", "warc", "html", "content_filter", "web", "decontam"]
OPTIONAL = ["scaling", "train", "generate", "cc_select", "classifier", "lm_score"]


def main() -> int:
    wanted = sys.argv[1:] or BENCHES
    unknown = [name for name in wanted if name not in BENCHES + OPTIONAL]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(BENCHES + OPTIONAL)}", file=sys.stderr)
        return 2
    failed = []
    for name in wanted:
        print(f"\n## {name}\n", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / f"bench_{name}.py")], cwd=HERE)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
