"""Build, on a CPU machine, the data `benchmarks/gpu_session.py` trains on, so that a GPU machine
with no network (and no `datasets` package) needs nothing but the checkout and this folder.

    python benchmarks/gpu_prepare.py gpudata        # then carry gpudata/ to the GPU machine

Writes
* ``random-124m/tokens``: uniform random ids, vocabulary 50,304 (GPT-2's padded to a multiple of
  64), sequences of 1,024, enough for 31 steps of 64 sequences (bench_train.py's shards);
* ``random-tiny/tokens``: the CPU smoke check's (vocabulary 512, sequences of 256);
* ``wiki-zh/``: the wiki-zh manifest run on the tests' zhwiki-shaped mirror (100 articles of
  ../shared plus curation fixtures): ``tokens/``, ``tokenizer/``, ``manifest.lock.yaml``;
* ``zh-sentiment/``: manifests/zh-sentiment-finetune.yaml on the same mirror and ../shared's
  reviews: pretraining tokens (vocabulary 16,000, sequences of 256) and the labeled examples.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, SHARED, require_shared

sys.path.insert(0, str(REPO / "benchmarks"))


def run_manifest(manifest: Path, out: Path, mirror_url: str, cache: Path) -> None:
    env = dict(os.environ, GRIST_CACHE=str(cache), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out), "--no-progress", "--set", f"sources.zhwiki.mirror={mirror_url}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{manifest.name} failed:\n{proc.stderr[-3000:]}")


def keep(src: Path, dest: Path, names: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name)
        else:
            shutil.copy2(src / name, dest / name)


def main() -> None:
    from bench_train import write_random_shards

    from tests.support.mirror import MirrorServer
    from tests.support.wikidump import build_curation_pages, build_mirror, build_pages

    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "gpudata").resolve()
    if dest.exists():
        shutil.rmtree(dest)
    write_random_shards(dest / "random-124m", 64 * 1024 * 31 + 1, 50304, 1024)
    write_random_shards(dest / "random-tiny", 8 * 256 * 21 + 1, 512, 256)
    for d in ("random-124m", "random-tiny"):
        shutil.rmtree(dest / d / "work")
    require_shared()
    with tempfile.TemporaryDirectory(prefix="gpu-prepare-") as tmp:
        tmp = Path(tmp)
        pages, expected = build_pages(SHARED / "corpora" / "zhwiki-articles")
        pages, _ = build_curation_pages(pages, expected, SHARED)
        build_mirror(tmp / "mirror", pages)
        with MirrorServer(tmp / "mirror") as server:
            run_manifest(REPO / "manifests" / "wiki-zh.yaml", tmp / "wiki-zh", server.url, tmp / "cache")
            run_manifest(REPO / "manifests" / "zh-sentiment-finetune.yaml", tmp / "zh-sentiment", server.url, tmp / "cache")
        keep(tmp / "wiki-zh", dest / "wiki-zh", ["tokens", "tokenizer", "manifest.lock.yaml"])
        keep(tmp / "zh-sentiment", dest / "zh-sentiment", ["tokens", "tokenizer", "finetune", "manifest.lock.yaml"])
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
