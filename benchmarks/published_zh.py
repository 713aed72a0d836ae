"""The issue-15 workflow on the shared Chinese data, end to end with the CLI, and its scores:
curate zhwiki articles + zh-sentiment reviews, continue pretraining a Qwen2-shaped checkpoint on
the wiki tokens (``--init-from``), fine-tune it on the reviews (full and LoRA), evaluate, and
compare with our own ``tiny`` preset pretrained from scratch on the same text with the same
schedule.

    OMP_NUM_THREADS=1 nice python benchmarks/published_zh.py --work /tmp/published-zh

The "published" checkpoint is built here, because this machine reaches no model hub: a byte-level
BPE tokenizer (``tokenizers``, 8,000 ids, trained on the same wiki text) and random weights from
``Qwen2Config`` of the ``tiny`` preset's size (4 layers, width 128, 4 query / 2 key-value heads,
SwiGLU 352, untied, q/k/v biases), saved with ``save_pretrained``, with an Apache-2.0 card. So
this measures the path (import, tokenizer check, continued pretraining, fine-tuning, LoRA, export,
eval, report) and the two architectures under one budget — not what a real pretrained model
brings. Every command is printed; results go to ``<work>/results.json``.
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
SHARED = REPO.parent / "shared" / "corpora"
sys.path.insert(0, str(REPO))

MANIFEST = """\
name: {name}
sources:
  - {{name: wiki, kind: local, paths: ['wiki/*.jsonl'], id_field: id, license: CC-BY-SA-3.0}}
  - {{name: reviews, kind: local, paths: [reviews.jsonl], id_field: id, task: classification, label_field: label, license: MIT}}
stages:
  - {{name: tok, stage: tokenize, inputs: [wiki], params: {tok}}}
  - {{name: rclean, stage: clean, inputs: [reviews], params: {{min_chars: 2}}}}
  - {{name: sentiment, stage: finetune_data, inputs: [rclean, tok], params: {{task: classification, max_len: 128, label_conflicts: drop, duplicates: drop}}}}
"""


def sh(cmd: list[str], log: list) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    dt = time.time() - t0
    log.append({"cmd": " ".join(cmd), "seconds": round(dt, 1), "rc": proc.returncode})
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"failed: {' '.join(cmd)}")
    print(proc.stdout[-1500:], flush=True)
    return dt


def published_model(dest: Path, texts: list[str]) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from pipeline.train.hf_import import make_tiny_checkpoint

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    n = tok.get_vocab_size(with_added_tokens=True)
    make_tiny_checkpoint(dest, "qwen2", vocab_size=-(-n // 64) * 64, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
                         eos_token_id=tok.token_to_id("<|endoftext|>"), bos_token_id=None)
    tok.save(str(dest / "tokenizer.json"))
    (dest / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|endoftext|>", "bos_token": None, "pad_token": "<|endoftext|>"}), encoding="utf-8")
    (dest / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [zh]\n---\n\n# qwen2-shaped random checkpoint (benchmark fixture)\n", encoding="utf-8")
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/published-zh"))
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--skip-prep", action="store_true")
    args = ap.parse_args()
    if not (SHARED / "zh-sentiment").is_dir():
        print(f"needs {SHARED}/zh-sentiment and zhwiki-articles")
        return 2
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    log: list = []
    py = [sys.executable, "-m", "pipeline.cli"]
    wiki = [{"id": p.stem, "text": p.read_text(encoding="utf-8")} for p in sorted((SHARED / "zhwiki-articles").glob("*.txt"))]
    if not args.skip_prep:
        for sub in ("own", "imp"):
            (w / sub / "wiki").mkdir(parents=True, exist_ok=True)
            (w / sub / "wiki" / "wiki.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in wiki), encoding="utf-8")
            rows = []
            for label in ("pos", "neg"):
                lines = [line.strip() for line in (SHARED / "zh-sentiment" / f"{label}.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
                rows += [{"id": f"{label}{i}", "text": t, "label": {"pos": "positive", "neg": "negative"}[label]} for i, t in enumerate(lines)]
            (w / sub / "reviews.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        model = published_model(w / "qwen2-tiny-random", [r["text"] for r in wiki])
        (w / "own" / "m.yaml").write_text(MANIFEST.format(name="own", tok="{vocab_size: 8000, character_coverage: 0.9995, seq_len: 128}"), encoding="utf-8")
        (w / "imp" / "m.yaml").write_text(MANIFEST.format(name="imp", tok=json.dumps({"tokenizer_path": str(model), "seq_len": 128})), encoding="utf-8")
        for sub in ("own", "imp"):
            sh(py + ["run", str(w / sub / "m.yaml"), "--out", str(w / sub / "out"), "--no-progress"], log)
    model = w / "qwen2-tiny-random"
    common = ["--max-steps", str(args.pretrain_steps), "--batch-size", "16", "--lr", "3e-3", "--warmup-steps", "30", "--device", "cpu", "--samples", "0", "--eval-every", "0"]
    sh(py + ["train", "--shards", str(w / "own" / "out"), "--out", str(w / "own" / "base"), "--preset", "tiny"] + common, log)
    sh(py + ["train", "--shards", str(w / "imp" / "out"), "--out", str(w / "imp" / "base"), "--init-from", str(model)] + common, log)
    ft = ["--epochs", str(args.epochs), "--lr", "1e-3", "--device", "cpu"]
    runs = {
        "own tiny preset, full": py + ["train", "--finetune", "classification", "--shards", str(w / "own" / "out"), "--init-from", str(w / "own" / "base"), "--out", str(w / "own" / "clf")] + ft,
        "qwen2-shaped import, continued, full": py + ["train", "--finetune", "classification", "--shards", str(w / "imp" / "out"), "--init-from", str(w / "imp" / "base" / "hf"), "--out", str(w / "imp" / "clf")] + ft,
        "qwen2-shaped import, continued, LoRA r8": py + ["train", "--finetune", "classification", "--shards", str(w / "imp" / "out"), "--init-from", str(w / "imp" / "base" / "hf"), "--out", str(w / "imp" / "clf-lora"), "--lora"] + ft,
    }
    results = {}
    for name, cmd in runs.items():
        dt = sh(cmd, log)
        out = Path(cmd[cmd.index("--out") + 1]) / "finetune" / "metrics.json"
        m = json.loads(out.read_text())
        results[name] = {"accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"], "examples": m["test"]["examples"], "seconds": round(dt),
                         "trainable": m.get("parameters", {}).get("trainable"), "params": m.get("parameters", {}).get("total"), "baseline_accuracy": m["baseline"]["accuracy"]}
    for sub in ("own", "imp"):
        base = json.loads((w / sub / "base" / "metrics.json").read_text())
        results[f"pretraining {sub}"] = {"val_loss": base.get("val_loss"), "params": base["params"], "tokens_per_s": base.get("tokens_per_s")}
    (w / "results.json").write_text(json.dumps({"results": results, "commands": log}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\n| run | test accuracy | macro F1 | trainable / all params | time |\n|---|---|---|---|---|")
    for name, r in results.items():
        if "accuracy" in r:
            print(f"| {name} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['trainable']:,} / {r['params']:,} | {r['seconds']} s |")
    for sub in ("own", "imp"):
        r = results[f"pretraining {sub}"]
        print(f"pretraining {sub}: val_loss {r['val_loss']}, params {r['params']:,}, tokens/s {r['tokens_per_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
