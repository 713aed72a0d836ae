"""Run every benchmark, one after the other, each printing its side-by-side table.

    python benchmarks/run_all.py            # all
    python benchmarks/run_all.py clean lid  # some
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["extract", "clean", "lid", "quality", "dedup", "tokenize"]


def main() -> int:
    wanted = sys.argv[1:] or BENCHES
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
