"""``pipeline train --finetune classification|sft``: the command-line side of ``finetune.py``.

Only options given on the command line override the fine-tuning defaults (and a manifest's
``finetune:`` section, passed as ``defaults``): the pretraining defaults of shared options such
as ``--lr`` or ``--batch-size`` are not fine-tuning values."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.common.display import print_table
from pipeline.common.errors import PipelineError

# train command option -> FinetuneConfig field
OPTIONS = {
    "shards": "data",
    "out": "out_dir",
    "init_from": "init_from",
    "finetune": "task",
    "epochs": "epochs",
    "max_steps": "max_steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup_steps": "warmup_steps",
    "eval_every": "eval_every",
    "device": "device",
    "seed": "seed",
    "revision": "init_revision",
    "patience": "patience",
    "gradient_checkpointing": "gradient_checkpointing",
    "lora": "lora",
}
IGNORED_OK = {"export"}  # on by default for pretraining; meaningless here


def config_from_cli(ctx: typer.Context, defaults: dict | None = None) -> tuple[dict, list[str]]:
    """(FinetuneConfig fields, options given on the command line that fine-tuning does not use)."""
    sources = {n: ctx.get_parameter_source(n) for n in ctx.params}
    given = {n for n, src in sources.items() if src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")}
    cfg = dict(defaults or {})
    for opt, fld in OPTIONS.items():
        value = ctx.params.get(opt)
        # data, task, out and init_from have no competing default; the rest only when typed
        if value is not None and (opt in given or opt in ("shards", "finetune", "out", "init_from")):
            cfg[fld] = str(value) if isinstance(value, Path) else value
    if not cfg.get("init_from"):
        raise PipelineError("--finetune needs --init-from (or init_from: in the manifest's finetune: section): the pretraining run dir (pipeline train --out) or its checkpoint/", where="pipeline train")
    if not cfg.get("out_dir"):
        data = Path(cfg["data"]).resolve()
        run = data.parent.name if data.name == "finetune" else data.name
        cfg["out_dir"] = str(Path("runs") / f"{run}-{cfg['task']}")
    ignored = sorted(n for n in given if n not in OPTIONS and n not in IGNORED_OK)
    return cfg, ignored


def finetune_command(ctx: typer.Context, console: Console, fail, defaults: dict | None = None) -> dict | None:
    """Run fine-tuning for the ``train`` command and print the scores; errors go to ``fail``."""
    try:
        from pipeline.train.finetune import FinetuneConfig, finetune
    except ImportError as exc:
        fail(PipelineError(f"fine-tuning needs PyTorch ({exc})", hint="pip install torch"))
        return None
    try:
        fields, ignored = config_from_cli(ctx, defaults)
        if ignored:
            console.print(f"[yellow]note[/]: not used by fine-tuning: {', '.join('--' + n.replace('_', '-') for n in ignored)}")
        cfg = FinetuneConfig.from_dict(fields, where="pipeline train --finetune")
        summary = finetune(cfg, progress=console.is_terminal)
    except PipelineError as exc:
        fail(exc)
        return None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: fine-tuning stopped; nothing was saved")
        raise typer.Exit(130)
    print_summary(summary, Console())
    console.print(f"[green]done[/] {escape(str(Path(cfg.out_dir) / 'finetune'))}: metrics.json, model.safetensors, state.json")
    return summary


def print_summary(summary: dict, out: Console) -> None:
    if summary["task"] == "classification":
        test, base = summary["test"], summary["baseline"]
        table = Table(title=f"test split: {test['examples']} examples (model selected at step {summary['selected_step']} of {summary['steps']})")
        for col in ("metric", "fine-tuned", "majority baseline"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key, name in (("accuracy", "accuracy"), ("macro_precision", "macro precision"), ("macro_recall", "macro recall"), ("macro_f1", "macro F1")):
            table.add_row(name, f"{test[key]:.4f}", f"{base[key]:.4f}")
        print_table(out, table)
        cm = test["confusion_matrix"]
        table = Table(title="confusion matrix (rows: true, columns: predicted)")
        table.add_column("true \\ predicted")
        for label in cm["labels"]:
            table.add_column(escape(label), justify="right")
        for label, row in zip(cm["labels"], cm["matrix"]):
            table.add_row(escape(label), *(str(v) for v in row))
        print_table(out, table)
    else:
        table = Table(title="response-token loss (nats) and perplexity")
        for col in ("split", "before", "after", "ppl before", "ppl after", "tokens"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, b in summary["before"].items():
            a = summary["after"][split]
            table.add_row(split, f"{b['loss']:.4f}", f"{a['loss']:.4f}", f"{b['ppl']:.2f}", f"{a['ppl']:.2f}", str(a["tokens"]))
        print_table(out, table)
