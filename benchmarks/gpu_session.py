"""Every training measurement a GPU session needs, in one command, most important first.

    python benchmarks/gpu_prepare.py gpudata                       # on a CPU machine, once
    python benchmarks/gpu_session.py --data gpudata --out results  # on the GPU machine
    python benchmarks/gpu_session.py --data gpudata --out /tmp/r --dry-run   # the same steps on a CPU, tiny

Each step runs in its own process with a time limit, and writes as it goes (so a session cut
short still returns what it measured): ``bench.json`` (the records of benchmarks/bench_train.py:
device, preset, seq_len, micro_batch, compile, tokens_per_s, mfu, peak_mem_gb, torch, ...),
``precision.json`` (the same short ``pipeline train`` on the wiki-zh mirror's tokens in bf16 and
in float32, losses at every step), ``finetune.json`` (fine-tuning throughput), ``env.json`` and
``log.txt``. A step that cannot finish before ``--deadline`` seconds is skipped, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Session:
    def __init__(self, out: Path, deadline: float):
        self.out, self.deadline, self.t0 = out, deadline, time.time()
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "log.txt", "a", encoding="utf-8")

    def log(self, text: str) -> None:
        line = f"[{time.time() - self.t0:6.1f}s] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def left(self) -> float:
        return self.deadline - (time.time() - self.t0)

    def run(self, name: str, cmd: list[str], budget: float, env: dict | None = None) -> subprocess.CompletedProcess | None:
        if self.left() < budget * 0.6:
            self.log(f"SKIP {name}: {self.left():.0f} s left, it needs about {budget:.0f}")
            return None
        self.log(f"RUN {name}: {' '.join(cmd)}")
        t = time.time()
        try:
            path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # carried wheels stay importable
            proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(env or {})}, capture_output=True, text=True, timeout=max(10, min(budget * 2, self.left())))
        except subprocess.TimeoutExpired as exc:
            self.log(f"TIMEOUT {name} after {time.time() - t:.0f} s; output tail:\n{(exc.stdout or '')[-1500:]}{(exc.stderr or '')[-1500:] if isinstance(exc.stderr, str) else ''}")
            return None
        self.log(f"{'OK' if proc.returncode == 0 else 'FAILED'} {name} in {time.time() - t:.0f} s (exit {proc.returncode})")
        if proc.returncode:
            self.log(proc.stdout[-2000:] + proc.stderr[-4000:])
        return proc


def env_info(s: Session) -> None:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0], "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)), memory_gb=p.total_memory / 2**30, sms=p.multi_processor_count)
    (s.out / "env.json").write_text(json.dumps(info, indent=2) + "\n")
    s.log(f"env: {info}")


def bench(s: Session, name: str, args: list[str], budget: float) -> None:
    s.run(name, [sys.executable, "benchmarks/bench_train.py", *args, "--append", str(s.out / "bench.json")], budget)


def precision_pair(s: Session, data: Path, steps: int, preset: str, batch: int, device: str, budget: float) -> None:
    """The same short training run in bf16 and in float32: losses at every step."""
    result = {"preset": preset, "steps": steps, "batch_size": batch, "data": "wiki-zh test mirror tokens"}
    for precision in ("bf16", "fp32"):
        run_dir = Path("/tmp") / f"gpu-session-{precision}"
        proc = s.run(
            f"pipeline train {precision}",
            [sys.executable, "-m", "pipeline.cli", "train", "--shards", str(data / "wiki-zh"), "--preset", preset, "--max-steps", str(steps), "--batch-size", str(batch),
             "--eval-every", str(steps), "--precision", precision, "--seed", "0", "--no-compile", "--no-export", "--samples", "0", "--device", device, "--out", str(run_dir)],
            budget,
        )
        if proc is None or proc.returncode:
            result[precision] = {"error": "did not finish"}
            continue
        recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        summary = json.loads((run_dir / "metrics.json").read_text())
        result[precision] = {
            "losses": [r["loss"] for r in recs if r.get("type") == "train"],
            "val_loss": summary.get("val_loss"),
            "tokens_per_s": summary.get("tokens_per_s"),
            "bf16": summary.get("bf16"),
            "peak_mem_gb": summary.get("peak_mem_gb"),
            "device": summary.get("device"),
        }
        (s.out / "precision.json").write_text(json.dumps(result, indent=2) + "\n")
    a, b = (result.get(k, {}).get("losses") for k in ("bf16", "fp32"))
    if a and b:
        diffs = [abs(x - y) for x, y in zip(a, b)]
        result["max_abs_loss_diff"] = max(diffs)
        result["mean_abs_loss_diff"] = sum(diffs) / len(diffs)
        s.log(f"bf16 vs fp32 over {len(diffs)} steps: max |loss diff| {max(diffs):.4f}, mean {result['mean_abs_loss_diff']:.4f}; final {a[-1]:.4f} vs {b[-1]:.4f}")
    (s.out / "precision.json").write_text(json.dumps(result, indent=2) + "\n")


def finetune_throughput(s: Session, data: Path, device: str, base_steps: int, epochs: int, budget: float) -> None:
    base, run = Path("/tmp/gpu-session-base"), Path("/tmp/gpu-session-ft")
    common = ["--shards", str(data / "zh-sentiment"), "--device", device]
    proc = s.run("pretrain a 25m base", [sys.executable, "-m", "pipeline.cli", "train", *common, "--preset", "25m", "--max-steps", str(base_steps), "--eval-every", "0", "--samples", "0", "--no-export", "--no-compile", "--out", str(base)], budget / 2)
    if proc is None or proc.returncode:
        return
    proc = s.run("fine-tune (classification)", [sys.executable, "-m", "pipeline.cli", "train", *common, "--finetune", "classification", "--init-from", str(base), "--epochs", str(epochs), "--out", str(run)], budget / 2)
    if proc is None or proc.returncode:
        return
    summary = json.loads((run / "finetune" / "metrics.json").read_text())
    keep = {k: summary.get(k) for k in ("device", "bf16", "throughput", "peak_mem_gb", "steps", "seconds", "examples")}
    keep["test"] = {k: summary["test"][k] for k in ("accuracy", "macro_f1")}
    keep["preset"] = "25m"
    (s.out / "finetune.json").write_text(json.dumps(keep, indent=2) + "\n")
    s.log(f"fine-tuning: {keep['throughput']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="made by benchmarks/gpu_prepare.py")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deadline", type=float, default=540, help="seconds for the whole session")
    ap.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU (checks the script)")
    args = ap.parse_args()
    s = Session(args.out, args.deadline)
    env_info(s)
    data = args.data.resolve()
    tiny = ["--tokens", str(data / "random-tiny" / "tokens"), "--preset", "tiny", "--seq-len", "256", "--vocab", "512", "--steps", "20", "--device", "cpu", "--threads", "4"]
    bench(s, "CPU smoke check", [*tiny, "--batch-size", "8"], 60)
    if args.dry_run:
        big = tiny[:-4] + ["--device", "cpu", "--steps", "8", "--skip", "3"]
        device, steps = "cpu", 6
    else:
        big = ["--tokens", str(data / "random-124m" / "tokens"), "--seq-len", "1024", "--vocab", "50304", "--steps", "30", "--skip", "8", "--device", "cuda"]
        device, steps = "cuda", 100
    # most important first: the 124m preset compiled, the precision check, then the sweep
    bench(s, "124m compiled, micro-batch 32", [*big, "--preset", "124m" if not args.dry_run else "tiny", "--batch-size", "32" if not args.dry_run else "8", "--compile"], 150)
    bench(s, "124m eager, micro-batch 32", [*big, "--preset", "124m" if not args.dry_run else "tiny", "--batch-size", "32" if not args.dry_run else "8", "--no-compile"], 60)
    precision_pair(s, data, steps, "124m" if not args.dry_run else "tiny", 16 if not args.dry_run else 4, device, 90)
    for b in (16, 64):
        bench(s, f"124m compiled, micro-batch {b}", [*big, "--preset", "124m" if not args.dry_run else "tiny", "--batch-size", str(b if not args.dry_run else 4), "--compile"], 150)
    for b in (16, 64):
        bench(s, f"124m eager, micro-batch {b}", [*big, "--preset", "124m" if not args.dry_run else "tiny", "--batch-size", str(b if not args.dry_run else 4), "--no-compile"], 60)
    finetune_throughput(s, data, device, 30 if not args.dry_run else 3, 1, 120)
    bench(s, "25m compiled, micro-batch 64", [*big, "--preset", "25m" if not args.dry_run else "tiny", "--batch-size", "64" if not args.dry_run else "8", "--compile"], 120)
    bench(s, "124m compiled, micro-batch 32, unfused projections", [*big, "--preset", "124m" if not args.dry_run else "tiny", "--batch-size", "32" if not args.dry_run else "8", "--compile", "--unfused"], 150)
    s.log(f"done in {time.time() - s.t0:.0f} s")


if __name__ == "__main__":
    main()
