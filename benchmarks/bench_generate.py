"""Generation with the KV cache vs recomputing the whole context for every new token; and
batched generation (``--batch``) vs one prompt at a time.

    python benchmarks/bench_generate.py                       # tiny preset, CPU, 1 thread
    python benchmarks/bench_generate.py --preset 25m --new-tokens 64 256 --device cuda
    python benchmarks/bench_generate.py --batch --prompts 16 --batch-sizes 1 4 16 --new-tokens 64

A randomly initialized model of the preset (weights do not change the cost), a 16-token prompt,
greedy decoding: ``pipeline.train.generate.sample`` (prefill once, then one position per token
through the cache) against the loop it replaced (the windowed context through the model for
every token). Both must give the same tokens; the script checks it. Best of ``--repeat`` runs.

``--batch``: ``--prompts`` prompts of 8 to 64 tokens (seeded), greedy, no stop token (every row
makes all its tokens), through ``generate_batch`` with each of ``--batch-sizes`` prompts per
forward (left-padded); new tokens/s, and whether the tokens equal one-at-a-time generation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import best_time, machine, table  # noqa: E402

from pipeline.train.generate import generate_batch, sample  # noqa: E402
from pipeline.train.model import Transformer, preset  # noqa: E402


def recompute(model: Transformer, context: list[int], n: int, device) -> list[int]:
    idx = list(context)
    with torch.no_grad():
        for _ in range(n):
            window = torch.tensor([idx[-model.cfg.max_seq_len :]], device=device)
            idx.append(int(model(window)[0, -1].argmax()))
    return idx[len(context) :]


def batched(model: Transformer, args) -> int:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 65, (args.prompts,), generator=g).tolist()
    contexts = [torch.randint(1, model.cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]
    n = args.new_tokens[0]

    def run(bs: int) -> list[list[int]]:
        out = []
        for i in range(0, len(contexts), bs):
            out += [row[0].tokens for row in generate_batch(model, contexts[i : i + bs], n, temperature=0)]
        return out

    reference = run(1)
    rows = []
    for bs in args.batch_sizes:
        same = run(bs) == reference
        t = best_time(lambda: run(bs), args.repeat)
        rows.append([bs, f"{t:.2f}", f"{len(contexts) * n / t:,.0f}", "yes" if same else "NO"])
    print(f"{len(contexts)} prompts of {min(lengths)}-{max(lengths)} tokens, {n} new tokens each, greedy\n")
    print(table(["prompts per forward", "seconds", "new tokens/s", "same tokens as 1"], rows))
    return 0 if all(r[-1] == "yes" for r in rows) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch", action="store_true", help="batched vs one prompt at a time (first --new-tokens value)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = Transformer(preset(args.preset, vocab_size=args.vocab)).to(device).eval()
    context = list(range(1, 17))
    print(f"{machine()}; torch {torch.__version__}; device {device}, {args.threads} thread(s)")
    if args.batch:
        print(f"preset {args.preset} ({model.num_params() / 1e6:.1f} M parameters, vocabulary {args.vocab})")
        return batched(model, args)
    print(f"preset {args.preset} ({model.num_params() / 1e6:.1f} M parameters, max_seq_len {model.cfg.max_seq_len}), 16-token prompt, greedy\n")
    rows = []
    for n in args.new_tokens:
        cached = sample(model, context, n, temperature=0)
        same = cached == recompute(model, context, n, device)
        t_cache = best_time(lambda: sample(model, context, n, temperature=0), args.repeat)
        t_full = best_time(lambda: recompute(model, context, n, device), args.repeat)
        rows.append([n, f"{t_cache:.2f}", f"{t_full:.2f}", f"{t_full / t_cache:.1f}x", "yes" if same else "NO"])
        if not same:
            print("the two gave different tokens", file=sys.stderr)
    print(table(["new tokens", "KV cache, s", "recompute, s", "speedup", "same tokens"], rows))
    return 0 if all(r[-1] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
