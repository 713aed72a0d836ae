"""Facts of training runs for the report: curves from ``metrics.jsonl``, scores from ``metrics.json``.

Pretraining (``pipeline train``) and fine-tuning runs share the layout; whatever scores a run's
``metrics.json`` holds are shown generically: scalars as a table, a list of lists of numbers
(a confusion matrix) as a matrix, nested objects as sub-tables. A run directory whose
sub-directories hold their own ``metrics.json`` (a fine-tuning run inside a pretraining run)
contributes those too.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.audit.report.facts import ReportError

MAX_POINTS = 600  # points per curve: long runs are thinned evenly, the last point is kept


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    picked = [points[int(i * step)] for i in range(MAX_POINTS)]
    return picked if picked[-1] == points[-1] else picked + [points[-1]]


NOT_CURVES = {"step", "index", "epoch", "val_tokens"}  # counters and ids, not metrics


def _curves(records: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """metric -> [(step, value)] for every numeric metric logged with a step."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, (int, float)) or rec.get("type") == "sample":
            continue
        for key, value in rec.items():
            if key not in NOT_CURVES and isinstance(value, (int, float)) and not isinstance(value, bool):
                curves.setdefault(key, []).append((float(step), float(value)))
    return {k: _thin(v) for k, v in curves.items()}


def run_facts(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    summary_path, log_path = run_dir / "metrics.json", run_dir / "metrics.jsonl"
    if not summary_path.is_file() and not log_path.is_file():
        raise ReportError("no metrics.json or metrics.jsonl: not a training run", where=str(run_dir), hint="give the --out directory of `pipeline train` (or of a fine-tuning run)")
    summary: dict = {}
    if summary_path.is_file():
        try:
            loaded = json.loads(summary_path.read_text(encoding="utf-8"))
            summary = loaded if isinstance(loaded, dict) else {"value": loaded}
        except ValueError as exc:
            raise ReportError(f"metrics.json is not JSON: {exc}", where=str(summary_path), hint="re-run the training or remove the file") from exc
    records = []
    if log_path.is_file():
        for i, line in enumerate(log_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed run: the rest is still worth plotting
            if isinstance(rec, dict):
                records.append(rec)
    samples = [r for r in records if r.get("type") == "sample"]
    last = max((r.get("step") or 0 for r in samples), default=None)
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "summary": summary,
        "curves": _curves(records),
        "steps_logged": len(records),
        "samples": [{k: r.get(k) for k in ("step", "prompt", "text")} for r in samples if r.get("step") == last],  # the model's last generations
    }


def gather_runs(run_dirs) -> list[dict]:
    runs = []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise ReportError("training run directory not found", where=str(d), hint="pass the --out directory of `pipeline train`")
        nested = sorted(p for p in d.iterdir() if p.is_dir() and ((p / "metrics.json").is_file() or (p / "metrics.jsonl").is_file()))
        if (d / "metrics.json").is_file() or (d / "metrics.jsonl").is_file() or not nested:
            runs.append(run_facts(d))
        for sub in nested:
            f = run_facts(sub)
            f["name"] = f"{d.name}/{sub.name}"
            runs.append(f)
    return runs
