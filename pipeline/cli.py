"""The ``pipeline`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
import typer.core
from rich.console import Console

from pipeline.common.display import make_console, print_table
from pipeline.common.errors import PipelineError

# Typer's rich help shows a value placeholder (<bool>) beside flags, which take no value.
_display_type = getattr(typer.core.TyperOption, "display_type_rich", None)
if _display_type is not None:  # typer versions that have it
    typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate pretraining data: manifests in, audited Arrow shards out.")
console = make_console(stderr=True, log_path=False)
_state = {"debug": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _fail(exc: BaseException) -> None:
    if _state["debug"]:
        console.print_exception()
    console.print(f"[bold red]error:[/] {_escape(str(exc))}", highlight=False)
    raise typer.Exit(2)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def validate(
    manifest: Path = typer.Argument(..., help="Manifest YAML file."),
    set_: List[str] = typer.Option([], "--set", metavar="PATH=VALUE", help="Override a field: dotted.path=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Also print the license assessment as JSON on stdout."),
) -> None:
    """Check a manifest (schema, stage parameters, DAG, licenses) without running anything."""
    import json

    from pipeline.audit.licenses import assess, conflict_error
    from pipeline.core.dag import build_dag
    from pipeline.run.load import load_manifest

    try:
        m = load_manifest(manifest, set_)
        dag = build_dag(m)
        lic = assess(m)
    except PipelineError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps({"manifest": str(manifest), "order": dag.order, "output": dag.output, "license": lic.to_dict()}, ensure_ascii=False, indent=2))
    _print_license(lic)
    if lic.conflicts:
        _fail(conflict_error(lic, str(manifest)))
    console.print(f"[green]ok[/] {manifest}: {len(m.sources)} source(s), {len(m.stages)} stage(s); order: {' -> '.join(dag.order)}; output: {dag.output}")


def _print_license(lic) -> None:
    """What `validate` shows of the license assessment: per-source choice, output terms, obligations."""
    terms = f"{len(lic.conflicts)} conflict(s), below" if lic.conflicts else f"share-alike: {lic.share_alike or 'none'}"
    console.print(
        _escape(f"license: output {lic.output_license}; use: {lic.use}; {terms}")
        + (f"; intended use: {lic.intended_use}" if lic.intended_use else ""),
        highlight=False,
    )
    for name, info in lic.sources.items():
        line = f"  {name}: {info['license']}" + (f" -> {info['chosen']}" if info["chosen"] != info["license"] else "")
        console.print(_escape(line), highlight=False)
        if info["choice"]:
            console.print(_escape(f"    {info['choice']}"), highlight=False)
    if lic.obligations:
        console.print("obligations:", highlight=False)
        for item in lic.obligations:
            console.print(_escape(f"  - {item}"), highlight=False)


@app.command()
def run(
    manifest: Path = typer.Argument(..., help="Manifest YAML file."),
    out: Optional[str] = typer.Option(None, "--out", help="Output directory or fsspec URL such as s3://bucket/prefix (default out/<manifest name>)."),
    set_: List[str] = typer.Option([], "--set", metavar="PATH=VALUE", help="Override a field: dotted.path=value, e.g. sources.zhwiki.max_pages=100 (repeatable)."),
    executor: str = typer.Option("local", "--executor", help="Where tasks run: local (process pool) or dask (a distributed cluster)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel workers (default: all cores); with --executor dask and no --scheduler, the local cluster's worker processes."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="--executor dask: address of a running Dask scheduler, e.g. tcp://HOST:8786 (default: start a local cluster)."),
    worker_memory: Optional[str] = typer.Option(None, "--worker-memory", help="--executor dask, local cluster: memory limit per worker, e.g. 4GB (default: 80% of available memory / workers)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Run a manifest's DAG; resumes where an earlier run stopped."""
    from pipeline.audit.licenses import check as check_licenses
    from pipeline.exec.factory import make_executor
    from pipeline.run.load import load_manifest
    from pipeline.run.runner import run_manifest

    try:
        m = load_manifest(manifest, set_)
        check_licenses(m)  # run_manifest checks too; refusing here also spares starting an executor
        out_dir = out or str(Path("out") / m.name)
        options = {k: v for k, v in (("scheduler", scheduler), ("memory_limit", worker_memory)) if v is not None}
        with make_executor(executor, workers=workers, console=console, **options) as ex:
            result = run_manifest(m, out_dir, ex, console, progress=not no_progress)
    except PipelineError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished partitions are kept; run the same command again to resume")
        raise typer.Exit(130)
    console.print(
        f"[green]done[/] {_escape(result.location or str(result.out_dir))}: ran {len(result.nodes_run)} node(s), skipped {len(result.nodes_skipped)}; "
        f"{result.export['rows']:,} documents in {_escape((result.location or str(result.out_dir)).rstrip('/'))}/data"
    )


@app.command()
def inspect(
    out: Path = typer.Argument(..., help="Output directory of a run."),
    node: Optional[str] = typer.Option(None, "--node", help="Only this node."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Show sampled documents removed for reasons starting with this."),
    samples: int = typer.Option(5, "--samples", help="How many removed documents to show."),
    chars: int = typer.Option(200, "--chars", help="Characters of text shown per sample."),
) -> None:
    """Removal counts by node and reason, and samples of removed documents with their signals."""
    from rich.table import Table

    from pipeline.audit import inspect as ins

    out_console = Console()
    try:
        funnel = ins.funnel(out)
        counts = ins.reason_counts(out, node)
        picked = ins.samples(out, node, reason, samples) if reason else None
    except PipelineError as exc:
        _fail(exc)
    table = Table(title=f"funnel: {out}")
    for col in ("node", "in", "out", "removed"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for row in funnel:
        if node is None or row["node"] == node:
            table.add_row(row["node"], *(f"{row[c]:,}" if isinstance(row[c], int) else "-" for c in ("in", "out", "removed")))
    print_table(out_console, table)
    table = Table(title="removed by reason")
    for col in ("node", "reason", "documents"):
        table.add_column(col, justify="right" if col == "documents" else "left")
    for row in counts.iter_rows(named=True):
        table.add_row(row["node"], _escape(row["reason"]), f"{row['documents']:,}")
    print_table(out_console, table)
    if picked is not None:
        for row in picked.iter_rows(named=True):
            out_console.rule(_escape(f"{row['id']}  {row['title'] or ''}  [{row['node']}] {row['reason']}"))
            out_console.print(_escape(f"signals: {row['signals']}"), highlight=False)
            text = (row["text"] or "").replace("\n", " ")
            out_console.print(_escape(text[:chars] + ("…" if len(text) > chars else "")), highlight=False)


@app.command()
def train(
    shards: Path = typer.Option(..., "--shards", help="A run's output dir (with tokens/) or a tokens dir."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name of the shards' run>)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A manifest whose train: section gives defaults (over the shards' manifest.lock.yaml); flags win."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model preset: tiny (default), 25m, 124m."),
    model_set: List[str] = typer.Option([], "--model", metavar="KEY=VALUE", help="Override a model field: KEY=VALUE, e.g. n_layers=4 (repeatable)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Context length (default: the shards' seq_len)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps (with none of --max-steps/--max-tokens/--max-time, training runs until Ctrl-C, which checkpoints)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Stop after training on this many tokens (all processes together)."),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="Seconds; alone, the LR horizon is estimated from the measured step time."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Micro-batch in sequences, per process (default 16)."),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Tokens per optimizer step over all processes (gradient accumulation)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 1e-3)."),
    min_lr: Optional[float] = typer.Option(None, "--min-lr", help="Final learning rate (default lr/10)."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="Default 100."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Steps between evaluations and samples (default 100; 0: only at the end)."),
    eval_tokens: Optional[int] = typer.Option(None, "--eval-tokens", help="Validation tokens per evaluation (default 65536)."),
    ckpt_every: Optional[int] = typer.Option(None, "--ckpt-every", help="Default 500."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (cuda, then mps, then cpu; default), cpu, cuda, mps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds the initial weights, the data order and the samples (default 0): same seed, same run."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint with the same data order."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model (default: on for CUDA, off elsewhere)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto (bf16 autocast on GPUs that have it, else float32; default), bf16 or fp32."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Write RUN_DIR/tensorboard (default: when tensorboard is installed)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Sample generations at each evaluation from validation prompts (default 2; 0: none)."),
    sample_prompts: List[str] = typer.Option([], "--sample-prompt", metavar="TEXT", help="A prompt to continue at each evaluation instead (repeatable)."),
    sample_tokens: Optional[int] = typer.Option(None, "--sample-tokens", help="New tokens per sample (default 32)."),
    export: bool = typer.Option(True, "--export/--no-export", help="Write a Hugging Face export with a model card to RUN_DIR/hf at the end."),
    finetune: Optional[str] = typer.Option(None, "--finetune", help="classification or sft: fine-tune --init-from on the finetune/ examples of --shards instead of pretraining."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start from a published model: a Hugging Face folder or hub id (Llama 2/3, Qwen2/2.5/3, Mistral): continued pretraining on --shards' tokens, or fine-tuning with --finetune; fine-tuning also takes a pretraining run dir (or its checkpoint/)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="With a hub id for --init-from: the commit or tag to fetch (required: what you train from must not change)."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute each block's activations in the backward pass: less memory, more time."),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="Fine-tuning: train low-rank adapters (peft LoRA) instead of all weights; merged into the saved model."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Fine-tuning: stop after this many evaluations without a better validation score."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Fine-tuning: passes over the training examples (default 3)."),
    ctx: typer.Context = None,  # injected by typer: tells which options were typed (fine-tuning keeps its own defaults)
) -> None:
    """Pretrain a decoder-only transformer on token shards (CPU works; fast on a GPU), or fine-tune one (--finetune)."""
    from pipeline.train.data import find_run  # numpy and pyarrow only: no torch needed yet

    try:
        finetuning = bool(finetune) or (init_from is not None and _init_from_finetunes(shards, config))
        shards, note = find_run(shards, "finetune" if finetuning else "tokens")
    except PipelineError as exc:
        _fail(exc)
    if note:
        console.print(_escape(note), highlight=False)
        ctx.params["shards"] = shards
    if finetuning:
        # fine-tuning: --finetune TASK (or the finetune: section's task) with --init-from (or its init_from)
        from pipeline.train.cli_finetune import finetune_command
        from pipeline.train.config import finetune_section

        try:
            defaults = finetune_section(shards, config)
        except PipelineError as exc:
            _fail(exc)
        finetune_command(ctx, console, _fail, defaults=defaults)
        return
    only_ft = [flag for flag, value in (("--lora", lora), ("--patience", patience)) if value is not None]
    if only_ft:
        _fail(PipelineError(f"{', '.join(only_ft)}: fine-tuning options, and this is pretraining (--shards has token shards, no --finetune)", where="pipeline train", hint="add --finetune classification|sft with fine-tuning examples, or drop them"))
    try:
        from pipeline.train.config import build_config
        from pipeline.train.export import export_hf
        from pipeline.train.loop import train as run_training
    except ImportError as exc:
        _fail(PipelineError(f"training needs PyTorch ({exc})", hint="pip install torch (e.g. torch==2.13.0 for a CPU build)"))
    import os

    main_rank = int(os.environ.get("RANK", "0") or 0) == 0  # under torchrun only rank 0 talks and exports
    run_dir = out or Path("runs") / (shards.resolve().name if shards.name != "tokens" else shards.resolve().parent.name)
    flags = dict(
        preset=preset, seq_len=seq_len, max_steps=max_steps, max_tokens=max_tokens, max_time=max_time, batch_size=batch_size,
        batch_tokens=batch_tokens, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps, eval_every=eval_every, eval_tokens=eval_tokens,
        ckpt_every=ckpt_every, device=device, seed=seed, resume=resume or None, compile=compile_, precision=precision, tensorboard=tensorboard,
        samples=samples, sample_prompts=sample_prompts or None, sample_tokens=sample_tokens,
        init_from=init_from, init_revision=revision, gradient_checkpointing=gradient_checkpointing,
    )
    try:
        cfg, read = build_config(shards, run_dir, config=config, flags=flags, model_flags=model_set)
        if main_rank and read:
            console.print(f"config: {_escape(' < '.join(read))}", highlight=False)
        with _train_progress(cfg, main_rank) as (on_step, on_log):
            result = run_training(cfg, on_step=on_step, on_log=on_log)
        signaled = result.get("stopped") in ("SIGINT", "SIGTERM")
        if export and main_rank and not signaled:
            export_hf(run_dir / "checkpoint", run_dir / "hf")
    except PipelineError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: stopped before a checkpoint could be written; the last checkpoint is kept (add --resume to continue from it)")
        raise typer.Exit(130)
    if signaled:
        if main_rank:
            console.print(f"[yellow]interrupted[/] ({result['stopped']}) at step {result.get('step')}: a checkpoint was written to {_escape(str(run_dir / 'checkpoint'))}; add --resume to continue")
        raise typer.Exit(130 if result["stopped"] == "SIGINT" else 143)
    if main_rank:
        summary = {k: result.get(k) for k in ("step", "stopped", "val_loss", "val_ppl", "tokens_per_s", "mfu") if k in result}
        console.print(f"[green]done[/] {_escape(str(run_dir))}: {_escape(str(summary))}")


def _init_from_finetunes(shards: Path, config: Optional[Path]) -> bool:
    """``--init-from`` without ``--finetune``: fine-tuning when a finetune: section names a task or
    the shards hold fine-tuning examples and no tokens; else continued pretraining."""
    from pipeline.train.config import finetune_section
    from pipeline.train.data import find_run

    def has(kind: str) -> bool:
        try:
            find_run(shards, kind)
            return True
        except PipelineError:
            return False

    if not has("finetune"):
        return False
    return bool(finetune_section(shards, config).get("task")) or not has("tokens")


# Without a terminal (a log file, CI, nohup) there is no progress bar: a line per step for the
# first steps, then one every LOG_EVERY_S seconds.
LOG_FIRST_STEPS = 3
LOG_EVERY_S = 30.0


def _train_progress(cfg, show: bool):
    """(on_step, on_log) callbacks: a progress bar with loss, tokens/s and MFU (CUDA) on a
    terminal, step lines elsewhere, and a line per evaluation and per sample."""
    import contextlib
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextlib.contextmanager
    def ctx():
        if not show:
            yield None, None
            return
        live = console.is_terminal
        bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, disable=not live)
        task = bar.add_task("", total=cfg.max_steps)
        last_line = [time.monotonic()]
        logged: list[int] = []  # steps printed by this process (a resumed run starts past 0)

        def on_step(rec: dict) -> None:
            mfu = f" | mfu {100 * rec['mfu']:.1f}%" if "mfu" in rec else ""
            desc = f"loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | {rec['tokens_per_s']:,.0f} tok/s{mfu}"
            bar.update(task, completed=rec["step"], description=desc)
            now = time.monotonic()
            if not live and (len(logged) < LOG_FIRST_STEPS or now - last_line[0] >= LOG_EVERY_S or rec["step"] == cfg.max_steps):
                logged.append(rec["step"])
                total = f"/{cfg.max_steps}" if cfg.max_steps else ""
                console.print(f"step {rec['step']}{total}: {desc}", highlight=False)
                last_line[0] = now

        def on_log(rec: dict) -> None:
            if rec.get("type") == "eval":
                bar.console.print(f"step {rec['step']}: val_loss {rec['val_loss']:.4f} (ppl {rec['val_ppl']:.2f})", highlight=False)
            elif rec.get("type") == "sample":
                # the sample as it reads: its own line breaks, indented under the header
                text = f"[bold]{_escape(rec['prompt'])}[/]{_escape(rec['text'])}".replace("\n", "\n    ")
                bar.console.print(f"  sample {rec['index']}: {text}", highlight=False)
            elif rec.get("type") == "resume":
                bar.console.print(f"resuming at step {rec['step']} ({rec['tokens']:,} tokens trained) from {_escape(rec['checkpoint'])}", highlight=False)
            elif rec.get("type") == "horizon":
                bar.console.print(f"max_time: the schedule ends at step {rec['horizon']} ({rec['seconds_per_step']:.3f} s/step)", highlight=False)

        with bar:
            yield on_step, on_log

    return ctx()


@app.command()
def ablate(
    manifest: Path = typer.Argument(..., help="Base manifest YAML file (with a tokenize stage)."),
    variants: List[str] = typer.Option([], "--variant", metavar="NAME[:KEY=VALUE,...]", help="A variant: a name and --set overrides of the base, comma-separated (a comma inside a value: \\, or inside [..], {..} or quotes); NAME alone is the base. Repeatable."),
    out: Path = typer.Option(..., "--out", help="Ablation folder: variants/, nodes/ (shared), tokenizer/, train/, ablation.json, report/."),
    set_: List[str] = typer.Option([], "--set", metavar="PATH=VALUE", help="Override a field of the base for every variant (before the variant's own; repeatable)."),
    preset: str = typer.Option("tiny", "--preset", help="Model preset for every variant: tiny, 25m, 124m."),
    max_tokens: int = typer.Option(..., "--max-tokens", min=1, help="Training tokens per model (the same for every variant and seed)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train each variant with seeds 0..K-1; the table shows mean and spread."),
    eval_data: List[Path] = typer.Option([], "--eval-data", metavar="PATH", help="Held-out set: token shards made with the same tokenizer, or a .jsonl/.json/.parquet (text field) or .txt (one document per line) file; repeatable. Default: the base variant's validation split."),
    eval_tokens: int = typer.Option(65536, "--eval-tokens", min=1, help="Tokens scored per eval set (the first ones, in order)."),
    probe: Optional[Path] = typer.Option(None, "--probe", metavar="MANIFEST", help="Fine-tuning probe: a manifest with one finetune_data stage (classification); every model is fine-tuned on it (test accuracy, macro-F1)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Micro-batch in sequences (default: the preset's)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, mps."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel workers for curation (default: all cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Curate variants of a manifest and train the same model on each: what each choice buys (docs/ablations.md)."""
    from pipeline.ablate import parse_variants
    from pipeline.exec.factory import make_executor

    try:
        parsed = parse_variants(variants)
    except PipelineError as exc:
        _fail(exc)
    try:
        from pipeline.ablate.run import run_ablation
    except ImportError as exc:
        _fail(PipelineError(f"ablations train models and need PyTorch ({exc})", hint="pip install torch"))
    try:
        with make_executor("local", workers=workers, console=console) as ex:
            doc = run_ablation(
                manifest, parsed, out, ex, console, preset=preset, max_tokens=max_tokens, seeds=list(range(seeds)), eval_data=eval_data,
                eval_tokens=eval_tokens, device=device, train_flags={"batch_size": batch_size} if batch_size else None, base_overrides=set_, probe=probe, progress=not no_progress,
            )
    except PipelineError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished nodes and training runs are kept; run the same command again to resume")
        raise typer.Exit(130)
    console.print(f"[green]done[/] {_escape(str(out / 'ablation.json'))}, report {_escape(str(out / 'report' / 'index.html'))}")
    if doc["failed"]:
        console.print(f"[bold red]{len(doc['failed'])} variant(s) failed[/]: {_escape(', '.join(doc['failed']))} (errors in ablation.json)", highlight=False)
        raise typer.Exit(1)


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A training run dir (pipeline train --out), a fine-tuning out dir, a checkpoint/, a run's export (RUN/hf) or a published Hugging Face model (Llama, Qwen2/3, Mistral: a folder, or a hub id with --revision)."),
    prompt: Optional[str] = typer.Argument(None, help="Text to continue (placed at the start of a new document). Or give --prompts-file."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts-file", help="Prompts, one per line (.txt) or a \"prompt\" field per line (.jsonl), generated in batches."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="How many tokens to add to the prompt (fewer if the model ends the document)."),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="0: greedy."),
    top_k: Optional[int] = typer.Option(50, "--top-k", min=1, help="Sample among the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling (after temperature and top-k): the smallest set of most likely tokens holding this much probability, in (0, 1]."),
    num_return_sequences: int = typer.Option(1, "--num-return-sequences", min=1, help="Continuations per prompt (sequence j draws with seed + j)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts per forward pass (left-padded); the results do not depend on it."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write one JSON record per prompt and sequence (prompt, text, tokens, finish) to this .jsonl file."),
    chat: bool = typer.Option(False, "--chat", help="Wrap each prompt in the tokenizer's chat template (a user turn, then the assistant's); stops at the end of the turn."),
    seed: int = typer.Option(0, "--seed", help="Seeds the sampling: same seed, same continuation."),
    revision: Optional[str] = typer.Option(None, "--revision", help="RUN_DIR is a Hugging Face hub id: the commit or tag to fetch (required for a hub id)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, mps."),
) -> None:
    """Continue prompts with a trained or published model; prints each prompt and its continuation."""
    try:
        from pipeline.train.generate import GenerateOptions, generate_texts, load_for_generation, read_prompts
        from pipeline.train.loop import pick_device
    except ImportError as exc:
        _fail(PipelineError(f"generation needs PyTorch ({exc})", hint="pip install torch"))
    try:
        if (prompt is None) == (prompts_file is None):
            raise PipelineError("give a prompt or --prompts-file" if prompt is None else "give either a prompt or --prompts-file, not both", hint='pipeline generate RUN "Once upon a time", or pipeline generate RUN --prompts-file prompts.txt')
        opts = GenerateOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                               num_return_sequences=num_return_sequences, batch_size=batch_size, chat=chat).check()
        prompts = read_prompts(prompts_file) if prompts_file is not None else [prompt]
        loaded = load_for_generation(run_dir, pick_device(device), revision=revision)
        records = generate_texts(loaded, prompts, opts)
    except PipelineError as exc:
        _fail(exc)
    if output is not None:
        import json

        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        except OSError as exc:
            _fail(PipelineError(f"cannot write the output ({exc})", where=str(output), hint="check the path and its permissions"))
        console.print(f"[green]done[/] {len(records)} generation(s) written to {_escape(str(output))}")
        return
    single = len(records) == 1
    for r in records:
        if not single:
            print(f"--- prompt {r['index'] + 1}, sequence {r['sequence'] + 1} ({r['finish']}) ---")
        print(r["text"] if chat else r["prompt"] + r["text"])


@app.command("eval")
def eval_(
    run_dir: Path = typer.Argument(..., help="A training run dir (pipeline train --out), a fine-tuning out dir, or a Hugging Face export folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Token shards (a run's out dir or tokens/), a text file (.jsonl/.json/.parquet with text, .txt one document per line), or a finetune_data output. Default: the run's own data."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of shards or examples (default: test; shards without one: validation)."),
    task: str = typer.Option("auto", "--task", help="auto, lm (loss/perplexity), sft (generation metrics) or classification."),
    max_tokens: int = typer.Option(1_000_000, "--max-tokens", min=1, help="lm: score the first N tokens."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Sequences (or examples) per forward pass."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="sft: generation budget (default max(2 x reference tokens, 16))."),
    max_examples: Optional[int] = typer.Option(1000, "--max-examples", min=1, help="sft: generate for the first N examples of the split."),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, mps."),
    name: Optional[str] = typer.Option(None, "--name", help="Result name (RUN/eval/NAME.json, metrics.json eval.NAME); default from --data and the split."),
) -> None:
    """Score a model on held-out data: loss/perplexity, generation metrics (SFT) or classifier scores; results go to metrics.json."""
    try:
        from pipeline.train.evaluate import EvalRequest, evaluate, summary_rows
    except ImportError as exc:
        _fail(PipelineError(f"evaluation needs PyTorch ({exc})", hint="pip install torch"))
    try:
        req = EvalRequest(run=str(run_dir), data=str(data) if data else None, split=split, task=task, name=name, max_tokens=max_tokens, batch_size=batch_size, device=device, max_new_tokens=max_new_tokens, max_examples=max_examples)
        result = evaluate(req)
    except PipelineError as exc:
        _fail(exc)
    except ImportError as exc:
        _fail(PipelineError(f"evaluation needs a package that is not installed ({exc})", hint="pip install sacrebleu rouge-score"))
    from rich.table import Table

    table = Table(title=f"eval {result['name']}", show_header=False)
    for key, value in summary_rows(result):
        table.add_row(_escape(key), _escape(value))
    print_table(Console(), table)


@app.command()
def report(
    out: Path = typer.Argument(..., help="Output directory of a finished run."),
    train_runs: List[Path] = typer.Option([], "--train", metavar="RUN_DIR", help="A training run directory to add (metrics.json / metrics.jsonl); repeatable."),
    samples: int = typer.Option(5, "--samples", min=0, help="Removed documents shown per reason (and kept ones per node)."),
) -> None:
    """Regenerate the cards and the static HTML report (<out>/report/index.html) without re-running stages."""
    from pipeline.audit.report import build_report
    from pipeline.audit.report.facts import check_run

    try:
        check_run(out)
        try:
            from pipeline.audit.cards import write_cards
        except ImportError:  # cards not installed in this build: the report does not need them
            write_cards = None
        if write_cards is not None:
            write_cards(out)
        index = build_report(out, train_runs, samples=samples)
    except PipelineError as exc:
        _fail(exc)
    console.print(f"[green]done[/] {_escape(str(index))} (open it in a browser: file://{_escape(str(index.resolve()))})")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
