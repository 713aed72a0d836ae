"""Starting from a published model, on this machine: continued-pretraining tokens/s of a ~100M
Qwen2-shaped checkpoint loaded with ``--init-from`` vs our ``124m`` preset of the same size, and
peak memory (RSS of each process) of training steps with and without LoRA and gradient
checkpointing.

    nice python benchmarks/bench_init_from.py                    # CPU, batch 4 x 256, 8 steps each
    python benchmarks/bench_init_from.py --device cuda --batch-size 16 --seq-len 1024

The "published" checkpoint is built here (no hub access): random weights from ``Qwen2Config``
(hidden 768, 12 layers, 12 query / 2 key-value heads, SwiGLU 2048, untied 16,384 vocabulary,
q/k/v biases: 98 M parameters) saved with ``save_pretrained``, plus a byte-level BPE tokenizer.
Speed does not depend on the weights' values. The preset ``124m`` gets the same 16,384
vocabulary (tied: 97.5 M parameters). Every configuration runs in its own process, one after the
other, so each peak RSS is that configuration's alone (``os.wait4``); tokens/s leaves out the
first ``--skip`` steps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPE = dict(vocab_size=16384, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
             num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False)


def build(root: Path, steps: int, batch: int, seq_len: int) -> tuple[Path, Path]:
    """The model folder and token shards in its token space (random ids below the tokenizer's size)."""
    import numpy as np

    from pipeline.text.packing import WorkWriter, write_token_dataset
    from pipeline.train.hf_import import make_tiny_checkpoint
    from tests.support.hfmodel import tokenizer

    model = root / "qwen2-98m"
    make_tiny_checkpoint(model, "qwen2", **SHAPE)
    tok = tokenizer()
    tok.save(str(model / "tokenizer.json"))
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "bos_token": None}), encoding="utf-8")
    n_ids = tok.get_vocab_size(with_added_tokens=True)
    sha = hashlib.sha256((model / "tokenizer.json").read_bytes()).hexdigest()
    rng = np.random.default_rng(0)
    work = root / "work"
    from pipeline.text.packing import SPLITS

    for split in SPLITS:  # train, validation (and test where the packer has it)
        n = batch * seq_len * (steps + 2) + 1 if split == "train" else 4 * seq_len + 1
        w = WorkWriter(work, split, 0, np.dtype(np.uint16))
        ids = rng.integers(0, n_ids, size=n, dtype=np.int64)
        w.write(ids, [f"{split}-0"], np.array([n]))
        w.close()
    extra = {"vocab_size": n_ids, "eos_id": None, "bos_id": None, "tokenizer": {"sha256": "bench", "files": {"tokenizer.json": sha}}}
    write_token_dataset(work, 1, root / "tokens", seq_len=seq_len, dtype=np.dtype(np.uint16), fingerprint="bench", index_extra=extra)
    return model, root / "tokens"


def child(args) -> dict:
    """One configuration, in this process."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kind == "pretrain":
        from pipeline.train.loop import TrainConfig, read_metrics, train

        init = args.config != "preset-124m"
        cfg = TrainConfig(
            data=str(args.tokens), out_dir=str(args.out), preset="124m", model={} if init else {"vocab_size": SHAPE["vocab_size"]},
            init_from=str(args.model) if init else None, seq_len=args.seq_len, batch_size=args.batch_size, max_steps=args.steps,
            warmup_steps=2, lr=3e-5, eval_every=0, ckpt_every=0, device=args.device, tensorboard=False, samples=0,
            gradient_checkpointing="gc" in args.config,
        )
        summary = train(cfg)
        steps = [r for r in read_metrics(args.out) if r.get("type") == "train"][args.skip :]
        return {"params_M": round(summary["params"] / 1e6, 1), "tokens_per_s": len(steps) * steps[0]["tokens"] / steps[0]["step"] / sum(r["dt"] for r in steps) if steps else None,
                "final_loss": steps[-1]["loss"] if steps else None}
    # fine-tuning steps: the loaded checkpoint, full or LoRA, with or without checkpointing (LM loss on the batch)
    from pipeline.train import lora
    from pipeline.train.hf_import import load_model

    model, _ = load_model(args.model)
    model.grad_checkpointing = "gc" in args.config
    if "lora" in args.config:
        lora.apply(model)
    model.to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 700, (args.batch_size, args.seq_len + 1), generator=g).to(args.device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    timed = times[args.skip :]
    trainable, total = lora.trainable(model)
    return {"params_M": round(total / 1e6, 1), "trainable_M": round(trainable / 1e6, 2),
            "tokens_per_s": len(timed) * args.batch_size * args.seq_len / sum(timed), "final_loss": loss.item()}


CONFIGS = [
    ("pretrain", "preset-124m"), ("pretrain", "imported-qwen2"), ("pretrain", "imported-qwen2+gc"),
    ("finetune", "full"), ("finetune", "full+gc"), ("finetune", "lora"), ("finetune", "lora+gc"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only", default=None, help="comma-separated configuration names")
    ap.add_argument("--rounds", type=int, default=1, help="run the configurations this many times, interleaved; tokens/s is the best round (a shared machine's load only slows runs down)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tokens", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-init-") as tmp:
        tmp = Path(tmp)
        model, tokens = build(tmp, args.steps, args.batch_size, args.seq_len)
        todo = [(k, n) for k, n in CONFIGS if not args.only or n in args.only.split(",")]
        for kind, name in [c for _ in range(args.rounds) for c in todo]:
            cmd = [sys.executable, __file__, "--child", "--kind", kind, "--config", name, "--model", str(model), "--tokens", str(tokens),
                   "--out", str(tmp / f"run-{name}"), "--device", args.device, "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--skip", str(args.skip)] + (["--threads", str(args.threads)] if args.threads else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            out, err = proc.stdout.read(), proc.stderr.read()
            if status != 0:
                print(f"{name}: failed\n{err[-2000:]}", file=sys.stderr)
                continue
            rec = {"kind": kind, "config": name, **json.loads(out.strip().splitlines()[-1]), "peak_rss_mib": round(usage.ru_maxrss / 1024)}
            results.append(rec)
            print(json.dumps(rec), flush=True)
    best: dict = {}
    for r in results:  # per configuration: the best tokens/s and the largest peak over the rounds
        b = best.setdefault(r["config"], dict(r, rounds=0))
        b.update(tokens_per_s=max(b["tokens_per_s"], r["tokens_per_s"]), peak_rss_mib=max(b["peak_rss_mib"], r["peak_rss_mib"]), rounds=b["rounds"] + 1)
    results = list(best.values())
    print("\n| kind | configuration | params (M) | trainable (M) | tokens/s | peak RSS (MiB) |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['kind']} | {r['config']} | {r['params_M']} | {r.get('trainable_M', r['params_M'])} | {r['tokens_per_s']:,.0f} | {r['peak_rss_mib']:,} |")
    base = next((r for r in results if r["config"] == "preset-124m"), None)
    imp = next((r for r in results if r["config"] == "imported-qwen2"), None)
    if base and imp:
        print(f"\nimported / preset tokens/s: {imp['tokens_per_s'] / base['tokens_per_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
