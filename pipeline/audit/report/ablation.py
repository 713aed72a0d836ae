"""The ablation page: ``DIR/report/index.html`` from ``DIR/ablation.json`` (``pipeline ablate``).

A table (one row per variant: overrides, documents and tokens after curation, tokens trained,
mean ± standard deviation of the eval loss over seeds per eval set, the difference to the base,
wall time), the spread of each eval loss across seeds, training-loss curves (mean over seeds per
variant, and every seed of every variant), then failures, the shared tokenizer and the eval sets.
Only reads files; every value goes through ``html.py``/``svg.py`` escaping."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.audit.report import svg
from pipeline.audit.report.html import Safe, esc, join, kv_table, page, render, section, table
from pipeline.audit.report.training import run_facts
from pipeline.common import storage


def _fmt(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _mean_sd(agg: dict | None, key: str = "loss") -> str:
    if not agg:
        return "-"
    sd = agg.get(f"{key}_std")
    return _fmt(agg[f"{key}_mean"]) + (f" ± {_fmt(sd)}" if sd is not None else "")


def _curves(out: Path, entry: dict) -> dict[int, list[tuple[float, float]]]:
    """seed -> [(tokens, train loss)] from each seed's metrics.jsonl (missing runs: none)."""
    found = {}
    for rec in entry.get("seeds") or []:
        run = out / rec.get("run_dir", "")
        if not rec.get("run_dir") or not (run / "metrics.jsonl").is_file():
            continue
        loss = run_facts(run)["curves"].get("loss") or []
        per_step = (rec.get("tokens") or 0) / max(rec.get("steps") or 1, 1)
        found[rec["seed"]] = [(step * per_step, y) for step, y in loss]
    return found


def _mean_curve(curves: dict[int, list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    if not curves:
        return [], []
    by_x: dict[float, list[float]] = {}
    for pts in curves.values():
        for x, y in pts:
            by_x.setdefault(x, []).append(y)
    xs = sorted(x for x, ys in by_x.items() if len(ys) == len(curves))
    return xs, [sum(by_x[x]) / len(by_x[x]) for x in xs]


def probe_section(doc: dict) -> Safe:
    pr = doc.get("probe")
    if not pr:
        return render('<p class="muted">$t</p>', t="no fine-tuning probe (pipeline ablate --probe MANIFEST)")
    rows = []
    for e in doc.get("variants") or []:
        for s in e.get("seeds") or []:
            if s.get("probe"):
                b = s["probe"].get("baseline") or {}
                rows.append([e["name"], s["seed"], _fmt(s["probe"]["accuracy"]), _fmt(s["probe"]["macro_f1"]), _fmt(b.get("accuracy")), _fmt(b.get("macro_f1")), s["probe"].get("test_examples")])
    return join([kv_table({k: pr.get(k) for k in ("manifest", "labels", "examples", "settings")}), table(["variant", "seed", "test accuracy", "test macro-F1", "majority accuracy", "majority macro-F1", "test examples"], rows, numeric=[1, 6])])


def summary_table(doc: dict) -> Safe:
    sets = [s["name"] for s in doc.get("eval_sets") or []]
    headers = ["variant", "overrides", "status", "documents out", "train tokens (unique)", "tokens trained"]
    for name in sets:
        headers += [f"{name}: loss (mean ± sd)", f"{name}: ppl", f"{name}: Δ loss vs base"]
    probed = bool(doc.get("probe"))
    if probed:
        headers += ["probe accuracy", "probe macro-F1"]
    headers += ["wall s"]
    rows, attrs = [], []
    for e in doc.get("variants") or []:
        cur = e.get("curation") or {}
        row = [
            e["name"],
            join([render("<code>$o</code>", o=o) for o in e["overrides"]], Safe("<br>")) if e["overrides"] else "(base manifest)",
            e["status"],
            cur.get("documents_out"),
            (cur.get("tokens") or {}).get("train"),
            e.get("tokens_trained"),
        ]
        for name in sets:
            agg = (e.get("eval") or {}).get(name)
            delta = (e.get("delta_vs_base") or {}).get(name)
            row += [_mean_sd(agg), _mean_sd(agg, "ppl"), "-" if delta is None else f"{delta:+.4f}"]
        if probed:
            pr = e.get("probe")
            row += [_mean_sd(pr, "accuracy"), _mean_sd(pr, "macro_f1")]
        row.append((e.get("wall_s") or {}).get("total"))
        rows.append(row)
        attrs.append({"data-variant": e["name"], "class": "output" if e.get("base") else ""})
    return table(headers, rows, numeric=[3, 4, 5, len(headers) - 1], row_attrs=attrs, cls="ablation")


def spread_table(doc: dict) -> Safe:
    rows = []
    for e in doc.get("variants") or []:
        for name, agg in (e.get("eval") or {}).items():
            per_seed = ", ".join(f"{s['seed']}: {_fmt(((s.get('eval') or {}).get(name) or {}).get('loss'))}" for s in e.get("seeds") or [] if "eval" in s)
            rows.append([e["name"], name, agg["n"], _fmt(agg["loss_min"]), _fmt(agg["loss_max"]), _fmt(agg["loss_std"]), per_seed])
    return table(["variant", "eval set", "seeds", "min loss", "max loss", "sd", "loss per seed"], rows, numeric=[2])


def curve_plots(out: Path, doc: dict) -> Safe:
    per_variant = {e["name"]: _curves(out, e) for e in doc.get("variants") or []}
    mean = {name: _mean_curve(c) for name, c in per_variant.items() if c}
    plots = [svg.line_chart(mean, title="training loss, mean over seeds", xlabel="tokens trained")] if mean else []
    for name, curves in per_variant.items():
        if len(curves) > 1:
            series = {f"seed {s}": ([x for x, _ in pts], [y for _, y in pts]) for s, pts in sorted(curves.items())}
            plots.append(svg.line_chart(series, title=f"{name}: training loss per seed", xlabel="tokens trained", width=420, height=200))
    if not plots:
        return render('<p class="muted">$t</p>', t="no training curves (no variant finished training)")
    return render('<div class="plots">$p</div>', p=join(Safe(p) for p in plots))


def failures(doc: dict) -> Safe:
    bad = [e for e in doc.get("variants") or [] if e["status"] == "failed"]
    if not bad:
        return render('<p class="muted">$t</p>', t="every variant finished")
    return table(["variant", "phase", "error"], [[e["name"], e["error"]["phase"], render('<pre class="text">$m</pre>', m=e["error"]["message"])] for e in bad], row_attrs=[{"data-variant": e["name"]} for e in bad])


def render_page(out: Path, doc: dict) -> str:
    setup = {k: doc.get(k) for k in ("base", "preset", "max_tokens", "seeds", "device", "train_flags")}
    body = join(
        [
            section("summary", "Variants", summary_table(doc), note="Eval loss: mean over seeds ± sample standard deviation; Δ: mean loss minus the base variant's (negative is better). The base variant's row is highlighted."),
            section("spread", "Spread across seeds", spread_table(doc)),
            section("curves", "Training loss", curve_plots(out, doc), note="Training loss on each variant's own data (not comparable across variants as a quality measure: the eval table is)."),
            section("probe", "Fine-tuning probe", probe_section(doc), note="Classification fine-tuned from each model (same examples, same settings, the model's seed); scores on the probe's test split, beside the majority-label baseline."),
            section("failures", "Failures", failures(doc)),
            section("tokenizer", "Shared tokenizer", kv_table(doc.get("tokenizer") or {})),
            section("eval-sets", "Eval sets", join([render("<p>$n</p>", n=doc.get("eval_note") or ""), table(["name", "kind", "tokens", "documents", "path", "note"], [[s["name"], s["kind"], s["tokens"], s["documents"], s["path"], s["note"]] for s in doc.get("eval_sets") or []], numeric=[2, 3])])),
            section("setup", "Setup", kv_table(setup)),
        ]
    )
    return page(f"Ablation: {Path(str(doc.get('base') or 'manifest')).name}", [("index.html", "Ablation")], "index.html", body, generated=f"Generated by grist {doc.get('grist', '')} from ablation.json; static files, no scripts, no network.")


def write_ablation_report(out: Path) -> Path:
    """Write ``<out>/report/index.html`` from ``<out>/ablation.json``; returns its path."""
    out = Path(out)
    doc = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    dest = out / "report"
    tmp = out / f".report.tmp-{os.getpid()}"
    storage.remove_tree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "index.html").write_text(render_page(out, doc), encoding="utf-8")
    storage.remove_tree(dest)
    os.replace(tmp, dest)
    return dest / "index.html"


__all__ = ["write_ablation_report", "render_page", "esc"]
