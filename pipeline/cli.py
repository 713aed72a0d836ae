"""The ``pipeline`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from pipeline.errors import PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate pretraining data: manifests in, audited Arrow shards out.")
console = Console(stderr=True, log_path=False)
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
def validate(manifest: Path = typer.Argument(..., help="Manifest YAML file."), set_: List[str] = typer.Option([], "--set", help="Override a field: dotted.path=value (repeatable).")) -> None:
    """Check a manifest (schema, stage parameters, DAG) without running anything."""
    from pipeline.dag import build_dag
    from pipeline.manifest import load_manifest

    try:
        m = load_manifest(manifest, set_)
        dag = build_dag(m)
    except PipelineError as exc:
        _fail(exc)
    console.print(f"[green]ok[/] {manifest}: {len(m.sources)} source(s), {len(m.stages)} stage(s); order: {' -> '.join(dag.order)}; output: {dag.output}")


@app.command()
def run(
    manifest: Path = typer.Argument(..., help="Manifest YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default out/<manifest name>)."),
    set_: List[str] = typer.Option([], "--set", help="Override a field: dotted.path=value, e.g. sources.zhwiki.max_pages=100 (repeatable)."),
    executor: str = typer.Option("local", "--executor", help="Where tasks run: local."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel workers (default: all cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Run a manifest's DAG; resumes where an earlier run stopped."""
    from pipeline.executors import make_executor
    from pipeline.manifest import load_manifest
    from pipeline.runner import run_manifest

    try:
        m = load_manifest(manifest, set_)
        out_dir = out or Path("out") / m.name
        with make_executor(executor, workers=workers, console=console) as ex:
            result = run_manifest(m, out_dir, ex, console, progress=not no_progress)
    except PipelineError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished partitions are kept; run the same command again to resume")
        raise typer.Exit(130)
    console.print(
        f"[green]done[/] {result.out_dir}: ran {len(result.nodes_run)} node(s), skipped {len(result.nodes_skipped)}; "
        f"{result.export['rows']:,} documents in {result.out_dir / 'data'}"
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

    from pipeline import inspect as ins

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
    out_console.print(table)
    table = Table(title="removed by reason")
    for col in ("node", "reason", "documents"):
        table.add_column(col, justify="right" if col == "documents" else "left")
    for row in counts.iter_rows(named=True):
        table.add_row(row["node"], _escape(row["reason"]), f"{row['documents']:,}")
    out_console.print(table)
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
    preset: str = typer.Option("tiny", "--preset", help="Model preset: tiny, 25m, 124m."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="Seconds."),
    batch_size: int = typer.Option(16, "--batch-size", help="Micro-batch in sequences."),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Tokens per optimizer step (gradient accumulation)."),
    lr: float = typer.Option(1e-3, "--lr"),
    warmup_steps: int = typer.Option(100, "--warmup-steps"),
    eval_every: int = typer.Option(100, "--eval-every"),
    ckpt_every: int = typer.Option(500, "--ckpt-every"),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, mps."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint with the same data order."),
    export: bool = typer.Option(True, "--export/--no-export", help="Write a Hugging Face export to RUN_DIR/hf at the end."),
) -> None:
    """Pretrain a decoder-only transformer on token shards (CPU works; fast on a GPU)."""
    try:
        from pipeline.train.export import export_hf
        from pipeline.train.loop import TrainConfig
        from pipeline.train.loop import train as run_training
    except ImportError as exc:
        _fail(PipelineError(f"training needs PyTorch ({exc})", hint="pip install torch (e.g. torch==2.13.0 for a CPU build)"))
    run_dir = out or Path("runs") / (shards.resolve().name if shards.name != "tokens" else shards.resolve().parent.name)
    cfg = TrainConfig(
        data=str(shards), out_dir=str(run_dir), preset=preset, max_steps=max_steps, max_tokens=max_tokens, max_time=max_time,
        batch_size=batch_size, batch_tokens=batch_tokens, lr=lr, warmup_steps=warmup_steps, eval_every=eval_every,
        ckpt_every=ckpt_every, device=device, seed=seed, resume=resume,
    )
    try:
        result = run_training(cfg)
        if export:
            export_hf(run_dir / "checkpoint", run_dir / "hf")
    except PipelineError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: a checkpoint was written; add --resume to continue")
        raise typer.Exit(130)
    summary = {k: result.get(k) for k in ("step", "val_loss", "val_ppl", "tokens_per_s", "mfu") if k in result}
    console.print(f"[green]done[/] {run_dir}: {_escape(str(summary))}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
