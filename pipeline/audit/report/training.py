"""Facts of training runs for the report: curves from ``metrics.jsonl``, scores from ``metrics.json``.

Pretraining (``pipeline train``) and fine-tuning runs share the layout; whatever scores a run's
``metrics.json`` holds are shown generically: scalars as a table, a list of lists of numbers
(a confusion matrix) as a matrix, nested objects as sub-tables. A run directory whose
sub-directories hold their own ``metrics.json`` (a fine-tuning run inside a pretraining run)
contributes those too.

Evaluations (``pipeline eval``, ``pipeline/train/evaluate.py``) are read from the run's
``eval/*.json`` and ``metrics.json``'s ``eval`` key into ``run["eval"]``; ``eval_section`` renders
them as tables (loss, generation metrics, classifier scores, generated samples), every value
escaped by ``html.table``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.audit.report.facts import ReportError
from pipeline.audit.report.html import Safe, join, render, table

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
        "eval": eval_results(run_dir, summary),
    }


def eval_results(run_dir: Path, summary: dict) -> list[dict]:
    """The run's evaluations, by name: ``eval/<name>.json`` files, then ``metrics.json``'s
    ``eval`` entries they do not already give (a later training run rewrites metrics.json)."""
    found: dict[str, dict] = {}
    folder = Path(run_dir) / "eval"
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue  # a damaged file: the metrics.json copy, if any, is used
            if isinstance(rec, dict):
                found[str(rec.get("name") or path.stem)] = rec
    for name, rec in (summary.get("eval") or {}).items() if isinstance(summary.get("eval"), dict) else ():
        if isinstance(rec, dict):
            found.setdefault(str(name), rec)
    return [{**rec, "name": name} for name, rec in sorted(found.items())]


def _r(v, digits: int = 4):
    return round(v, digits) if isinstance(v, float) else v


def eval_section(run: dict) -> Safe:
    """Tables of a run's evaluations (empty when it has none)."""
    results = run.get("eval") or []
    if not results:
        return Safe("")
    parts = []
    lm = [r for r in results if r.get("task") in ("lm", "sft") and r.get("loss") is not None]
    if lm:
        rows = [[r["name"], r.get("task"), r.get("data"), r.get("split") or "-", _r(r.get("loss")), _r(r.get("ppl"), 2), r.get("tokens"), _r(r.get("bits_per_byte")), r.get("note") or ""] for r in lm]
        parts.append(render("<h4>Loss and perplexity</h4>$t", t=table(["name", "task", "data", "split", "loss (nats/token)", "perplexity", "tokens", "bits/byte", "note"], rows, numeric=(4, 5, 6, 7), cls="eval-loss")))
    gen = [r for r in results if isinstance(r.get("generation"), dict)]
    if gen:
        rows = [[r["name"], r.get("split") or "-", g.get("examples"), _r(g.get("rouge_l")), _r(g.get("chrf"), 2), _r(g.get("bleu"), 2), g.get("bleu_tokenize"), _r(g.get("exact_match"))] for r in gen for g in [r["generation"]]]
        parts.append(render("<h4>Generation (greedy, against the references)</h4>$t", t=table(["name", "split", "examples", "ROUGE-L F1", "chrF", "BLEU", "BLEU tokenizer", "exact match"], rows, numeric=(2, 3, 4, 5, 7), cls="eval-generation")))
    cls = [r for r in results if isinstance(r.get("scores"), dict)]
    if cls:
        rows = [[r["name"], r.get("data"), r.get("split") or "-", s.get("examples"), _r(s.get("accuracy")), _r(s.get("macro_f1")), _r(s.get("macro_precision")), _r(s.get("macro_recall")), ", ".join(f"{a}→{b}" for a, b in (r.get("label_map") or {}).items())] for r in cls for s in [r["scores"]]]
        parts.append(render("<h4>Classifier on other labeled data</h4>$t", t=table(["name", "data", "split", "examples", "accuracy", "macro F1", "macro precision", "macro recall", "labels"], rows, numeric=(3, 4, 5, 6, 7), cls="eval-classification")))
    samples = [[r["name"], s.get("prompt"), s.get("reference"), s.get("prediction")] for r in gen for s in (r.get("samples") or [])]
    if samples:
        parts.append(render("<h4>Generated samples</h4>$t", t=table(["name", "prompt", "reference", "prediction"], samples, cls="samples eval-samples")))
    return render('<div class="eval" data-section="eval"><h3>Evaluations</h3>$p</div>', p=join(parts))


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
