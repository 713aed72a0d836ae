"""Training throughput and MFU of ``pipeline train`` (the real loop: memory-mapped shards, AdamW,
bf16 autocast on CUDA, optional torch.compile).

    python benchmarks/bench_train.py                                   # 124m, T=1024, batch 16, on the GPU
    python benchmarks/bench_train.py --compile --batch-size 32         # the same, compiled
    python benchmarks/bench_train.py --preset tiny --seq-len 256 --batch-size 8 --vocab 512 --steps 20 --device cpu   # CPU smoke check

Token shards of random ids (vocabulary ``--vocab``, default 50304 = GPT-2's padded to a multiple of
64, so ``124m`` has GPT-2 small's 124 M parameters) are written in the tokenize stage's format
(``pipeline.text.packing``) to a temporary folder; ``train()`` then runs ``--steps`` optimizer steps with
no evaluation or sampling and one checkpoint at the end.  Throughput is taken from the per-step
records of ``metrics.jsonl``, leaving out the first ``--skip`` steps (compilation, allocator and
cuDNN warm-up): tokens/s = tokens / seconds over the rest.  MFU = ``flops_per_token`` (6·N + 12·L·d·T)
× tokens/s / peak, with the dense bf16 peak of the GPU (H100/H200 989, A100 312 TFLOP/s) or
``--peak-tflops``; none on a CPU unless given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_random_shards(dest: Path, tokens: int, vocab: int, seq_len: int, seed: int = 0) -> Path:
    """A tokens/ folder of uniform random ids, train + a small validation split."""
    import numpy as np

    from pipeline.text.packing import WorkWriter, write_token_dataset

    dtype = np.dtype(np.uint16 if vocab <= 1 << 16 else np.uint32)
    rng = np.random.default_rng(seed)
    work = dest / "work"
    from pipeline.text.packing import SPLITS

    for split in SPLITS:  # train, validation (and test where the packer has it)
        n = tokens if split == "train" else 4 * seq_len + 1
        w = WorkWriter(work, split, 0, dtype)
        doc = 64 * seq_len  # long documents: the ids are noise anyway
        for a in range(0, n, doc):
            ids = rng.integers(0, vocab, size=min(doc, n - a), dtype=np.int64)
            w.write(ids, [f"{split}-{a}"], np.array([len(ids)]))
        w.close()
    index_extra = {"vocab_size": vocab, "eos_id": None, "bos_id": None, "tokenizer": {"sha256": "random-ids", "files": {}}}
    write_token_dataset(work, 1, dest / "tokens", seq_len=seq_len, dtype=dtype, fingerprint="bench", index_extra=index_extra)
    return dest / "tokens"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="124m")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=16, help="micro-batch, sequences")
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=5, help="first steps left out of the rate")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile (default: the trainer's: on for CUDA)")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s of the device in TFLOP/s, for MFU where it is not known")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's; 1 on a busy machine)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    ap.add_argument("--append", type=Path, default=None, help="append the result to this JSON list (benchmarks/results/train-<device>.json)")
    ap.add_argument("--tokens", type=Path, default=None, help="token shards to train on (a tokens/ folder, e.g. made by --make-tokens) instead of writing random ones")
    ap.add_argument("--make-tokens", type=Path, default=None, help="only write random shards for --steps at the largest --batch-size to this folder and exit")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--unfused", action="store_true", help="separate q/k/v and gate/up matmuls (the layout before they were joined), for comparison")
    args = ap.parse_args()
    if args.steps <= args.skip:
        ap.error("--steps must be larger than --skip")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from pipeline.train.loop import TrainConfig, read_metrics, train

    step_tokens = args.batch_size * args.seq_len * args.accum
    if args.make_tokens:
        write_random_shards(args.make_tokens, step_tokens * (args.steps + 1) + 1, args.vocab, args.seq_len)
        print(f"wrote {args.make_tokens / 'tokens'}")
        return 0
    if args.unfused:
        unfuse()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        tokens_dir = args.tokens or write_random_shards(tmp, step_tokens * (args.steps + 1) + 1, args.vocab, args.seq_len)
        made = time.time() - t0
        cfg = TrainConfig(
            data=str(tokens_dir), out_dir=str(tmp / "run"), preset=args.preset, model={"vocab_size": args.vocab},
            seq_len=args.seq_len, batch_size=args.batch_size, batch_tokens=step_tokens, max_steps=args.steps,
            warmup_steps=10, eval_every=0, eval_tokens=args.seq_len, ckpt_every=0, device=args.device,
            compile=args.compile, precision=args.precision, tensorboard=False, samples=0,
        )
        summary = train(cfg)
        steps = [r for r in read_metrics(tmp / "run") if r.get("type") == "train"][args.skip :]
    seconds = sum(r["dt"] for r in steps)
    tok_s = len(steps) * step_tokens / seconds
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None and torch.cuda.is_available() and summary["device"] != "cpu":
        from pipeline.train.loop import PEAK_BF16

        peak = next((v for k, v in PEAK_BF16 if k in summary["device"]), None)
    mfu = summary["flops_per_token"] * tok_s / peak if peak else None
    result = {
        "device": summary["device"],
        "torch": torch.__version__,
        "preset": args.preset,
        "params": summary["params"],
        "seq_len": args.seq_len,
        "micro_batch": args.batch_size,
        "batch_size": args.batch_size,
        "fused_projections": not args.unfused,
        "precision": args.precision,
        "peak_mem_gb": summary.get("peak_mem_gb"),
        "accum": args.accum,
        "compile": summary["compile"],
        "bf16": summary["bf16"],
        "steps_timed": len(steps),
        "ms_per_step": 1000 * seconds / len(steps),
        "tokens_per_s": tok_s,
        "flops_per_token": summary["flops_per_token"],
        "peak_flops": peak,
        "mfu": mfu,
        "final_loss": steps[-1]["loss"],
        "shards_seconds": made,
    }
    print("| device | preset | params | T | batch | compile | bf16 | ms/step | tokens/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['device']} | {args.preset} | {result['params'] / 1e6:.1f} M | {args.seq_len} | {args.batch_size}x{args.accum} | "
        f"{result['compile']} | {result['bf16']} | {result['ms_per_step']:.1f} | {tok_s:,.0f} | {f'{100 * mfu:.1f}%' if mfu else 'n/a (peak unknown)'} |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.append:
        records = json.loads(args.append.read_text()) if args.append.is_file() else []
        args.append.parent.mkdir(parents=True, exist_ok=True)
        args.append.write_text(json.dumps(records + [result], indent=2) + "\n", encoding="utf-8")
    return 0


def unfuse() -> None:
    """Separate q/k/v and gate/up matmuls, as the model computed them before they were joined."""
    from pipeline.train import model

    model.FUSED_PROJECTIONS = False


if __name__ == "__main__":
    sys.exit(main())
