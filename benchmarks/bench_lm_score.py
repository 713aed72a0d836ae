"""``lm_score`` throughput: tokens/s of ``pipeline.text.lm.LmScorer`` (tokenize + padded, length-
sorted batches + per-token loss) for the tiny and 25m presets, on one CPU thread and on all of them
(and on CUDA when there is one), next to the training model's own forward over the same batches.

    nice python benchmarks/bench_lm_score.py                            # tiny + 25m, CPU 1 and all threads
    python benchmarks/bench_lm_score.py --presets 25m 124m --devices cuda --docs 400

Randomly initialized models (weights do not change the cost) with a SentencePiece tokenizer trained
on ../shared's zhwiki articles (vocabulary 16,000 requested), saved as a `pipeline train` run
(checkpoint/state.json + model.safetensors) and loaded by the scorer as the stage does. Documents:
the articles, cut to ``--max-tokens``. Best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine, table, zh_articles  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pipeline.text import lm  # noqa: E402
from pipeline.text import tokenizer as tkz  # noqa: E402
from pipeline.train.model import Transformer, padded_vocab, preset  # noqa: E402


def make_run(root: Path, name: str, tok_dir: Path, vocab: int, seq_len: int) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = Transformer(preset(name, vocab_size=padded_vocab(vocab), max_seq_len=seq_len))
    ckpt = root / name / "checkpoint"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors"))
    files = json.loads((tok_dir / "grist_tokenizer.json").read_text())["files"]
    state = {"step": 0, "model": dataclasses.asdict(model.cfg), "data": {"tokenizer_dir": str(tok_dir), "tokenizer_files": files, "eos_id": 2, "bos_id": None}}
    (ckpt / "state.json").write_text(json.dumps(state))
    return root / name


def native_forward(model: Transformer, scorer: lm.LmScorer, texts: list[str], max_tokens: int, batch: int, device) -> int:
    """The training model over the scorer's windows, the same sorted batches; returns tokens."""
    docs = scorer.tokenizer.encode_batch(texts)
    ins, tgts, _ = scorer.windows(docs, max_tokens)
    order = sorted(range(len(ins)), key=lambda i: -len(ins[i]))
    n = 0
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            rows = order[b : b + batch]
            L = len(ins[rows[0]])
            x = torch.zeros((len(rows), L), dtype=torch.long)
            y = torch.full((len(rows), L), -1, dtype=torch.long)
            for r, i in enumerate(rows):
                x[r, : len(ins[i])] = torch.from_numpy(ins[i])
                y[r, : len(tgts[i])] = torch.from_numpy(tgts[i])
            logits = model(x.to(device))
            torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.to(device).view(-1), ignore_index=-1, reduction="none")
            n += int((y >= 0).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n


def timed(fn, repeat: int) -> tuple[float, float]:
    """Best wall seconds and best process CPU seconds (all threads) of ``repeat`` runs: on a
    shared machine the CPU time is the steadier per-core figure."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu


def separation(args) -> int:
    """What the buckets separate on real text: a tiny model trained here on 80 of ../shared's
    zhwiki articles scores held-out articles, the main text of Chinese web pages, product
    reviews, short Chinese / Japanese / English sentences and character-shuffled articles."""
    import random

    import numpy as np
    from common import require_shared
    from rich.console import Console

    from pipeline.exec.executors import LocalExecutor
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest
    from pipeline.train.loop import TrainConfig, train

    corpora = require_shared()
    articles = zh_articles()
    rng = random.Random(0)
    order = list(range(len(articles)))
    rng.shuffle(order)
    train_ids, held = order[:80], order[80:]
    torch.set_num_threads(args.threads[0])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        with open(root / "in" / "wiki.jsonl", "w", encoding="utf-8") as fh:
            for i in train_ids:
                fh.write(json.dumps({"id": str(i), "text": articles[i]}, ensure_ascii=False) + "\n")
        (root / "m.yaml").write_text(
            "name: lm-bench\nsources:\n  - {name: wiki, kind: local, paths: ['in/*.jsonl'], license: CC-BY-SA-4.0, id_field: id}\n"
            "stages:\n  - {name: tok, stage: tokenize, inputs: [wiki], params: {vocab_size: 8000, seq_len: 256, validation_fraction: 0.05}}\n",
            encoding="utf-8",
        )
        console = Console(quiet=True)
        t0 = time.perf_counter()
        with LocalExecutor(workers=1, console=console) as ex:
            run_manifest(load_manifest(root / "m.yaml"), root / "out", ex, console, progress=False)
        cfg = TrainConfig(data=str(root / "out"), out_dir=str(root / "lm"), preset="tiny", batch_size=8, lr=3e-3, warmup_steps=20, max_steps=args.train_steps, eval_every=0, ckpt_every=0, device="cpu", seed=0, tensorboard=False, samples=0)
        summary = train(cfg)
        print(f"trained tiny on 80 zhwiki articles: {args.train_steps} steps of 8 x 256 tokens, {time.perf_counter() - t0:.0f} s with tokenization; summary: { {k: summary[k] for k in summary if k in ('tokens', 'loss', 'val_loss')} }")
        scorer = lm.LmScorer(root / "lm", "cpu")

        def lines(path: Path, n: int) -> list[str]:
            rows = [x for x in path.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
            return random.Random(1).sample(rows, min(n, len(rows)))

        web = [(corpora / "web" / "truth" / f"{r['id']}.txt").read_text(encoding="utf-8") for r in map(json.loads, (corpora / "web" / "index.jsonl").read_text().splitlines()) if r["lang"] == "zh"]
        shuffled = []
        for i in held:
            chars = list(articles[i][:2000])
            rng.shuffle(chars)
            shuffled.append("".join(chars))
        groups = {
            "zhwiki, held out": [articles[i] for i in held],
            "zh web pages (main text)": web,
            "zh product reviews": lines(corpora / "zh-sentiment" / "pos.txt", 100) + lines(corpora / "zh-sentiment" / "neg.txt", 100),
            "zh sentences (LID set)": lines(corpora / "lid-sentences" / "zh.txt", 200),
            "ja sentences": lines(corpora / "lid-sentences" / "ja.txt", 200),
            "en sentences": lines(corpora / "lid-sentences" / "en.txt", 200),
            "zhwiki, characters shuffled": shuffled,
        }
        for per in ("token", "byte"):
            scores = {g: scorer.score(t, max_tokens=args.max_tokens, batch_size=args.batch_size, per=per)[0] for g, t in groups.items()}
            every = np.concatenate(list(scores.values()))
            c1, c2 = np.quantile(every[~np.isnan(every)], [0.33, 0.66])
            rows = []
            for g, v in scores.items():
                v = v[~np.isnan(v)]
                rows.append([g, len(v), f"{np.median(v):,.1f}", f"{np.mean(v <= c1):.0%}", f"{np.mean((v > c1) & (v <= c2)):.0%}", f"{np.mean(v > c2):.0%}"])
            print(f"\nper {per}: cut points (quantiles 0.33 / 0.66 of all {len(every)} documents): {c1:,.1f} / {c2:,.1f}\n")
            print(table(["documents", "n", f"median perplexity per {per}", "head", "middle", "tail"], rows))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "25m"])
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1024, help="the model's context")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--separation", action="store_true", help="instead: train a tiny model on zhwiki articles and show what its buckets separate")
    ap.add_argument("--train-steps", type=int, default=300, help="--separation: training steps")
    args = ap.parse_args()
    if args.separation:
        return separation(args)

    texts = zh_articles()
    texts = (texts * (1 + args.docs // max(1, len(texts))))[: args.docs]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sp = tkz.train_sentencepiece(zh_articles(), vocab_size=16000, num_threads=os.cpu_count() or 1)
        tkz.write_tokenizer_dir(root / "tokenizer", sp_model=sp)
        tok = tkz.load_tokenizer(root / "tokenizer")
        print(f"{machine()}; torch {torch.__version__}")
        print(f"{len(texts)} zhwiki articles cut to {args.max_tokens} tokens, tokenizer vocabulary {tok.vocab_size}, batch {args.batch_size}, context {args.seq_len}\n")
        rows = []
        for name in args.presets:
            run = make_run(root, name, root / "tokenizer", tok.vocab_size, args.seq_len)
            for dev in args.devices:
                for threads in args.threads if dev == "cpu" else [torch.get_num_threads()]:
                    torch.set_num_threads(threads)
                    scorer = lm.LmScorer(run, dev)
                    model = Transformer(preset(name, vocab_size=padded_vocab(tok.vocab_size), max_seq_len=args.seq_len))
                    model.load_state_dict(load_file(str(run / "checkpoint" / "model.safetensors")))
                    model = model.to(scorer.device).eval()
                    facts = {}

                    def score():
                        facts.update(scorer.score(texts, max_tokens=args.max_tokens, batch_size=args.batch_size)[2])

                    scorer.score(texts[:2], max_tokens=64, batch_size=2)  # warm-up
                    t, cpu = timed(score, args.repeat)
                    ac = torch.autocast("cuda", dtype=torch.bfloat16) if scorer.device.type == "cuda" else torch.autocast("cpu", enabled=False)
                    with ac:
                        t_native, cpu_native = timed(lambda: native_forward(model, scorer, texts, args.max_tokens, args.batch_size, scorer.device), args.repeat)
                    tokens = facts["tokens_scored"]
                    pad = facts["padded_positions"] / max(1, facts["positions"] + facts["padded_positions"])
                    params = model.num_params() / 1e6
                    rows.append(
                        [
                            name,
                            f"{params:.1f}M",
                            dev,
                            threads if dev == "cpu" else "-",
                            f"{tokens:,}",
                            f"{tokens / t:,.0f}",
                            f"{tokens / cpu:,.0f}",
                            f"{facts['tokenize_s'] / (facts['tokenize_s'] + facts['forward_s']):.1%}",
                            f"{pad:.1%}",
                            f"{tokens / cpu_native:,.0f}",
                            f"{cpu_native / cpu:.2f}x",
                        ]
                    )
                    print(
                        table(["preset", "params", "device", "threads", "tokens", "tokens/s (wall)", "tokens per CPU-s", "tokenize share", "padding", "native model, tokens per CPU-s", "scorer vs native (CPU)"], rows[-1:]).splitlines()[-1],
                        flush=True,
                    )
        print()
        print(table(["preset", "params", "device", "threads", "tokens", "tokens/s (wall)", "tokens per CPU-s", "tokenize share", "padding", "native model, tokens per CPU-s", "scorer vs native (CPU)"], rows))
        by = {(r[0], r[2], r[3]): float(r[5].replace(",", "")) for r in rows}  # wall tokens/s
        for name in args.presets:
            ths = sorted(k[2] for k in by if k[0] == name and k[1] == "cpu")
            if len(ths) > 1:
                print(f"{name}: {ths[-1]} threads vs 1 (wall): {by[(name, 'cpu', ths[-1])] / by[(name, 'cpu', ths[0])]:.2f}x")
            if (name, "cuda", "-") in by and ths:
                print(f"{name}: cuda vs 1 CPU thread (wall): {by[(name, 'cuda', '-')] / by[(name, 'cpu', ths[0])]:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
