"""The report's pages, from the facts dict: index, the output card, one card per source, training."""

from __future__ import annotations

import hashlib
import json
import re

from pipeline.audit.report import svg
from pipeline.audit.report.html import Safe, esc, join, kv_table, link, num, page, render, section, table, value
from pipeline.audit.report.training import eval_section

OUTPUT_PAGE = "output.html"
TRAINING_PAGE = "training.html"


def source_page(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if slug != name:  # two names mapping to one slug must not overwrite each other
        slug += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"source-{slug}.html"


def nav(facts: dict, has_training: bool) -> list[tuple[str, str]]:
    items = [("index.html", "Run"), (OUTPUT_PAGE, "Output")]
    items += [(source_page(s["name"]), f"Source: {s['name']}") for s in facts["sources"]]
    if has_training:
        items.append((TRAINING_PAGE, "Training"))
    return items


# ----------------------------------------------------------------------------- sections
def funnel_section(scope: dict, output_node: str) -> Safe:
    rows, attrs = [], []
    for r in scope["funnel"]:
        rows.append([r["node"], r["impl"], r["docs_in"], r["docs_out"], r["docs_removed"], r["chars_out"], r["chars_removed"]])
        attrs.append({"data-node": r["node"], "class": "output" if r["node"] == output_node else ""})
    keys = ["node", "stage", "docs_in", "docs_out", "docs_removed", "chars_out", "chars_removed"]
    tbl = table(["node", "stage", "documents in", "documents out", "removed", "characters out", "characters removed"], rows, numeric=range(2, 7), row_attrs=attrs, cls="funnel", keys=keys)
    labels = [r["node"] for r in scope["funnel"]]
    docs = svg.bar_chart(labels, {"kept": [r["docs_out"] for r in scope["funnel"]], "removed": [r["docs_removed"] for r in scope["funnel"]]}, title="documents per node (kept + removed = in)")
    chars = svg.bar_chart(labels, {"kept": [r["chars_out"] for r in scope["funnel"]], "removed": [r["chars_removed"] for r in scope["funnel"]]}, title="characters kept + removed per node")
    bad = [r["node"] for r in scope["funnel"] if r.get("consistent") is False]
    warn = render('<p class="warn">Counts in the parts differ from stats.json for: $n</p>', n=", ".join(bad)) if bad else Safe("")
    note = "The highlighted row is the output node, exported to data/. Documents in = out + removed. Characters removed are counted as the text entered the node; stages rewrite text (a Wikimedia source node holds raw wikitext)."
    return section("funnel", "Funnel", join([warn, tbl, render('<div class="plots">$a$b</div>', a=Safe(docs), b=Safe(chars))]), note=note)


def removals_section(scope: dict) -> Safe:
    rows = [[r["node"], Safe(render('<span class="reason">$r</span>', r=r["reason"])), r["docs"], r["chars"]] for r in scope["removals"]]
    if not rows:
        return section("removals", "Removals by reason", esc("Nothing was removed."))
    tbl = table(["node", "reason", "documents", "characters"], rows, numeric=(2, 3), row_attrs=[{"data-node": r["node"], "data-reason": r["reason"]} for r in scope["removals"]], cls="removals", keys=["node", "reason", "docs", "chars"])
    chart = svg.bar_chart([f"{r['node']}: {r['reason']}" for r in scope["removals"]], {"documents": [r["docs"] for r in scope["removals"]]}, title="documents removed by reason", label_width=260)
    return section("removals", "Removals by reason", join([tbl, Safe(chart)]))


def _signals(raw) -> Safe:
    if not raw:
        return Safe("")
    try:
        obj = json.loads(raw)
    except (TypeError, ValueError):
        return render('<dl class="signals"><dt>signals</dt><dd>$v</dd></dl>', v=raw)
    if not isinstance(obj, dict):
        return render('<dl class="signals"><dt>signals</dt><dd>$v</dd></dl>', v=json.dumps(obj, ensure_ascii=False))
    items = join(render("<dt>$k</dt><dd>$v</dd>", k=k, v=v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in obj.items())
    return render('<dl class="signals">$i</dl>', i=items)


def _doc(d: dict, kind: str) -> Safe:
    more = "…" if (d.get("chars") or 0) > len(d.get("text") or "") else ""
    return render(
        '<article class="doc $kind" data-id="$id"$reason_attr><header><b class="title">$title</b> <code>$id</code> $reason <span class="muted">$chars chars</span></header>$signals<pre class="text">$text$more</pre></article>',
        kind=kind,
        id=d.get("id"),
        reason_attr=render(' data-reason="$r"', r=d["reason"]) if kind == "removed" else Safe(""),
        title=d.get("title") or "(no title)",
        reason=render('<span class="reason">$r</span>', r=d["reason"]) if kind == "removed" else Safe(""),
        chars=num(d.get("chars")),
        signals=_signals(d.get("signals")) if kind == "removed" else Safe(""),
        text=d.get("text") or "",
        more=more,
    )


def samples_section(scope: dict, k: int) -> Safe:
    if not scope["samples"]:
        return section("samples", "Removed and kept documents", esc("No node removed documents."))
    parts = []
    for node, s in scope["samples"].items():
        removed = join(
            render('<div class="reason-samples" data-node="$n" data-reason="$r"><h4>$r</h4>$docs</div>', n=node, r=reason, docs=join(_doc(d, "removed") for d in docs[:k]))
            for reason, docs in s["removed"].items()
        )
        kept = join(_doc(d, "kept") for d in s["kept"][:k]) if s["kept"] else esc("nothing kept")
        parts.append(render('<h3>node $n</h3><div class="pair" data-node="$n"><div class="removed-col"><h4 class="muted">removed</h4>$r</div><div class="kept-col"><h4 class="muted">kept by $n</h4>$k</div></div>', n=node, r=removed, k=kept))
    note = f"Up to {k} documents per reason, spread evenly over the ids; text cut to the first characters. Text is shown as text: markup in documents never renders."
    return section("samples", "Removed and kept documents", join(parts), note=note)


def lengths_section(scope: dict) -> Safe:
    h = scope["lengths"]
    if not h["edges"]:
        return section("lengths", "Document length", esc("No documents."))
    plot = svg.histogram(h["edges"], {"documents": h["counts"]}, title="characters per output document", width=640, height=200)
    return section("lengths", "Document length", Safe(plot))


def quality_section(scope: dict) -> Safe:
    if not scope["quality"]:
        return Safe("")
    parts = []
    for q in scope["quality"]:
        plots = join(
            Safe(svg.histogram(s["edges"], {"kept": s["kept"], "removed": s["removed"]}, title=s["signal"], thresholds=[tuple(t) for t in s["thresholds"]]))
            for s in q["signals"]
        )
        presets = ", ".join(q["presets"])
        parts.append(render('<h3>node $n <span class="muted">(preset $p)</span></h3><div class="plots">$plots</div>', n=q["node"], p=presets, plots=plots))
    note = "Kept: the node's output. Removed: the value the ledger recorded (the deciding signal, plus characters and words). Dashed red lines: the preset's thresholds; thresholds beyond the data are listed at the top right."
    return section("quality", "Quality signals", join(parts), note=note)


def languages_section(scope: dict) -> Safe:
    if not scope["languages"]:
        return Safe("")
    parts = []
    for lf in scope["languages"]:
        langs = lf["langs"][:30]
        bars = svg.bar_chart([l["lang"] for l in langs], {"kept": [l["kept"] for l in langs], "removed": [l["removed"] for l in langs]}, title="documents per language")
        thr = [(float(lf["min_score"]), "min_score")] if lf.get("min_score") is not None else []
        score = svg.histogram(lf["score"]["edges"], {"kept": lf["score"]["kept"], "removed": lf["score"]["removed"]}, title="lang_score", thresholds=thr, width=400) if lf["score"]["edges"] else ""
        parts.append(render('<h3>node $n <span class="muted">(keep: $k)</span></h3><div class="plots">$b$s</div>', n=lf["node"], k=", ".join(lf.get("keep") or []) or "all", b=Safe(bars), s=Safe(score)))
    return section("languages", "Languages", join(parts))


def dedup_section(scope: dict) -> Safe:
    if not scope["dedup"]:
        return Safe("")
    parts = []
    for d in scope["dedup"]:
        sizes = d["cluster_sizes"]
        chart = svg.bar_chart([f"size {s['size']}" for s in sizes], {"clusters": [s["clusters"] for s in sizes]}, title="clusters by size (1 = unique document)") if sizes else ""
        rows = [[k, v] for k, v in d["removed_by_reason"].items()]
        parts.append(render("<h3>node $n</h3>$p$t$c", n=d["node"], p=kv_table(d["params"]), t=table(["reason", "documents"], rows, numeric=(1,)), c=Safe(chart)))
    return section("dedup", "Duplicate clusters", join(parts))


def tokens_section(scope: dict) -> Safe:
    if not scope["tokens"] and not scope.get("finetune"):
        return Safe("")
    parts = []
    for t in scope["tokens"]:
        splits = t["splits"]
        cols = sorted({c for s in splits.values() for c in s})
        rows = [[name, *[s.get(c) for c in cols]] for name, s in splits.items()]
        chart = svg.bar_chart(list(splits), {"tokens": [s.get("tokens") or 0 for s in splits.values()]}, title="tokens per split")
        tok = t.get("tokenizer") or {}
        meta = {"seq_len": t.get("seq_len"), "dtype": t.get("dtype"), **{k: tok.get(k) for k in ("kind", "model_type", "vocab_size", "sha256") if k in tok}}
        parts.append(render("<h3>node $n</h3>$m$t$c", n=t["node"], m=kv_table(meta), t=table(["split", *cols], rows, numeric=range(1, len(cols) + 1), cls="tokens"), c=Safe(chart)))
    for f in scope.get("finetune") or []:
        rows = [[name, s.get("examples"), s.get("tokens"), s.get("truncated")] for name, s in f["splits"].items()]
        labels = sorted({label for counts in f["labels"].values() for label in counts})
        label_rows = [[name, *[f["labels"].get(name, {}).get(label, 0) for label in labels]] for name in f["splits"]]
        parts.append(
            render(
                '<h3>node $n <span class="muted">(fine-tuning examples, $t, max_len $m)</span></h3>$a$b',
                n=f["node"],
                t=f.get("task") or "",
                m=f.get("max_len") or "-",
                a=table(["split", "examples", "tokens", "truncated"], rows, numeric=(1, 2, 3), cls="finetune"),
                b=table(["split", *labels], label_rows, numeric=range(1, len(labels) + 1)) if labels else Safe(""),
            )
        )
    return section("tokens", "Tokens per split", join(parts))


def contamination_section(scope: dict) -> Safe:
    """Per decontaminate node: documents dropped or flagged per evaluation set."""
    if not scope.get("contamination"):
        return Safe("")
    parts = []
    for c in scope["contamination"]:
        verb = "dropped" if c["action"] == "drop" else "flagged"
        rows = [[s["set"], s["path"] + (f" @ {s['revision']}" if s.get("revision") else ""), s["documents"], s.get("reason") or "-"] for s in c["sets"]]
        chart = svg.bar_chart([s["set"] for s in c["sets"]], {verb: [s["documents"] for s in c["sets"]]}, title=f"documents {verb} per evaluation set") if c["sets"] else ""
        parts.append(
            render(
                '<h3>node $n <span class="muted">($a: $d of $i documents)</span></h3>$t$c',
                n=c["node"], a=verb, d=c["documents"], i=c.get("docs_in") if c.get("docs_in") is not None else "?",
                t=table(["evaluation set", "path", f"documents {verb}", "ledger reason"], rows, numeric=(2,), cls="contamination", keys=["set", "path", "docs", "reason"]),
                c=Safe(chart),
            )
        )
    note = "Documents sharing a long n-gram, or a whole line equal to a short item, with an evaluation set. A document matching several sets counts for each; the ledger names the first."
    return section("contamination", "Contamination", join(parts), note=note)


def stage_cards_section(scope: dict) -> Safe:
    """Facts stages recorded for the card (stats["card"]): a table and notes per node."""
    if not scope.get("stage_cards"):
        return Safe("")
    parts = []
    for c in scope["stage_cards"]:
        notes = render("<ul>$l</ul>", l=join(render("<li>$x</li>", x=x) for x in c["notes"])) if c["notes"] else Safe("")
        parts.append(render('<h3>$t <span class="muted">(node $n)</span></h3>$r$o', t=c["title"], n=c["node"], r=table(["", ""], c["rows"], cls="kv") if c["rows"] else Safe(""), o=notes))
    return section("stage-facts", "Stage facts", join(parts))


LICENSE_SHOWN = ("from", "assessed", "output_license", "share_alike", "use", "intended_use", "obligations", "conflicts", "sources", "attribution")


def license_section(facts: dict, source: str | None = None) -> Safe:
    """The output license and its obligations (or one source's license), from licenses.json when
    the run wrote it; keys not known here are shown as they are."""
    lic = facts["licenses"]
    assessed = lic.get("from") == "licenses.json"
    parts = []
    if lic.get("conflicts"):
        parts.append(render('<p class="warn">License conflicts: $c</p>', c=value(lic["conflicts"])))
    head = {k: lic.get(k) for k in ("output_license", "share_alike", "use", "intended_use") if lic.get(k) is not None}
    if source is None:
        parts.append(kv_table(head))
        if lic.get("obligations"):
            parts.append(render('<h3>Obligations</h3><ul class="obligations">$l</ul>', l=join(render("<li>$o</li>", o=o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)) for o in lic["obligations"])))
    srcs = lic.get("sources") or {}
    rows = []
    for name, info in srcs.items():
        if source is not None and name != source:
            continue
        info = info if isinstance(info, dict) else {"license": info}
        rows.append([name, info.get("license"), info.get("chosen", info.get("license")), info.get("choice") or ""])
    if rows:
        parts.append(render("<h3>Per source</h3>$t", t=table(["source", "declared", "used as", "choice"], rows)))
    notices = [a for a in lic.get("attribution") or [] if isinstance(a, dict) and (source is None or a.get("source") == source)]
    if notices:
        parts.append(render('<h3>Attribution</h3><ul>$l</ul>', l=join(render("<li>$n</li>", n=a.get("notice") or json.dumps(a, ensure_ascii=False)) for a in notices)))
    rest = {k: v for k, v in lic.items() if k not in LICENSE_SHOWN and v not in (None, [], {})}
    if rest and source is None:
        parts.append(kv_table(rest))
    note = "From the license assessment (licenses.json)." if assessed else "licenses.json not written: the licenses the manifest declares."
    return section("license", "License and obligations", join(parts), note=note)


def scope_body(facts: dict, scope: dict, k: int) -> Safe:
    return join(
        [
            funnel_section(scope, facts["output_node"]),
            removals_section(scope),
            samples_section(scope, k),
            lengths_section(scope),
            quality_section(scope),
            languages_section(scope),
            dedup_section(scope),
            tokens_section(scope),
            contamination_section(scope),
            stage_cards_section(scope),
        ]
    )


def _totals(scope: dict) -> Safe:
    t = scope["totals"]
    return kv_table({"documents in data/": t["documents"], "characters": t["chars"], "documents removed": t["removed"], "tokens": t["tokens"]})


# ----------------------------------------------------------------------------- pages
def index_page(facts: dict, has_training: bool, generated: str) -> str:
    run = facts["run"]
    src_rows = [
        [link(source_page(s["name"]), s["name"]), s["kind"], s.get("license"), s.get("date") or "-", link(s["homepage"], s["homepage"]) if s.get("homepage") else "-"]
        for s in facts["sources"]
    ]
    stage_rows = [[n["name"], n["impl"], ", ".join(n["inputs"]) or "-", "output → data/" if n["name"] == facts["output_node"] else ""] for n in facts["nodes"]]
    manifest = {"name": run["name"], "description": run["description"], "manifest": run["manifest"], "pipeline version": run["pipeline_version"], "python": run["python"], "output node": facts["output_node"]}
    cards = [link(OUTPUT_PAGE, "Output card")] + [link(source_page(s["name"]), f"Source card: {s['name']}") for s in facts["sources"]]
    if has_training:
        cards.append(link(TRAINING_PAGE, "Training runs"))
    files = facts["cards"]["files"]
    body = join(
        [
            section("manifest", "Run", kv_table(manifest)),
            section("sources", "Sources and dump dates", table(["source", "kind", "license", "dump date", "homepage"], src_rows, cls="sources")),
            section("totals", "Totals", _totals(facts["scopes"]["output"])),
            license_section(facts),
            section("nodes", "Nodes", table(["node", "stage", "inputs", ""], stage_rows)),
            funnel_section(facts["scopes"]["output"], facts["output_node"]),
            section("cards", "Cards", join([render("<ul>$l</ul>", l=join(render("<li>$x</li>", x=c) for c in cards)), render("<p>Files beside the data: $f</p>", f=join([link("../" + f, f) for f in files], ", ")) if files else Safe("")])),
        ]
    )
    return page(f"Run report: {run['name']}", nav(facts, has_training), "index.html", body, generated=generated)


def output_page(facts: dict, has_training: bool, generated: str) -> str:
    scope = facts["scopes"]["output"]
    summary = {"documents (data/ rows)": facts["data"]["rows"], "bytes": facts["data"]["bytes"], "shards": facts["data"]["shards"], "columns": facts["data"]["features"], "output node": facts["output_node"]}
    # the card's YAML header, without the long schema blocks the data summary above already covers
    front = {k: v for k, v in facts["cards"]["readme_front_matter"].items() if k not in ("dataset_info", "configs")}
    body = join(
        [
            section("summary", "Summary", join([kv_table(summary), _totals(scope)]), note="data/ rows, then totals over the run."),
            license_section(facts),
            section("card-metadata", "Dataset card metadata", kv_table(front), note="Front matter of README.md (dataset_info and configs: see the file).") if front else Safe(""),
            scope_body(facts, scope, facts["samples_per_group"]),
        ]
    )
    return page(f"Output card: {facts['run']['name']}", nav(facts, has_training), OUTPUT_PAGE, body, generated=generated)


def source_card(facts: dict, src: dict, has_training: bool, generated: str) -> str:
    scope = facts["scopes"][src["name"]]
    info = {k: src.get(k) for k in ("kind", "license", "license_url", "homepage", "attribution", "citation", "description", "languages", "date")}
    body = join(
        [
            section("summary", "Source", join([kv_table(info), _totals(scope)])),
            license_section(facts, src["name"]),
            section("pin", "Pinned as", kv_table(src.get("pin") or {}), note="What resolve() pinned: dump date, file names, sizes and checksums, or file hashes."),
            scope_body(facts, scope, facts["samples_per_group"]),
        ]
    )
    return page(f"Source card: {src['name']}", nav(facts, has_training), source_page(src["name"]), body, generated=generated)


def training_page(facts: dict, runs: list[dict], generated: str) -> str:
    parts = []
    for run in runs:
        curves = run["curves"]
        plots = []
        loss = {k: tuple(zip(*curves[k])) for k in ("loss", "val_loss") if k in curves}
        if loss:
            plots.append(svg.line_chart(loss, title="loss", xlabel="step"))
        for key in sorted(curves):
            if key in ("loss", "val_loss", "step"):
                continue
            plots.append(svg.line_chart({key: tuple(zip(*curves[key]))}, title=key, xlabel="step", width=400, height=180))
        summary = run["summary"]
        scalars = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        nested = {k: v for k, v in summary.items() if isinstance(v, (dict, list)) and k != "eval"}  # eval: its own tables
        parts.append(
            section(
                "run-" + re.sub(r"[^A-Za-z0-9_-]", "_", run["name"]),
                f"Run {run['name']}",
                render(
                    '<p class="muted">$path ($n records logged)</p><h3>Scores and summary</h3><div class="scores">$s</div>$nested$eval<h3>Curves</h3><div class="plots">$p</div>$gen',
                    path=run["path"],
                    n=run["steps_logged"],
                    s=kv_table(scalars) if scalars else esc("no metrics.json"),
                    nested=join(render("<h4>$k</h4>$v", k=k, v=value(v)) for k, v in nested.items()),
                    eval=eval_section(run),
                    p=join(Safe(p) for p in plots) if plots else esc("no metrics.jsonl"),
                    gen=render("<h3>Generated samples</h3>$t", t=table(["step", "prompt", "generated"], [[s["step"], s["prompt"], s["text"]] for s in run["samples"]], cls="samples")) if run.get("samples") else Safe(""),
                ),
            )
        )
    return page(f"Training: {facts['run']['name']}", nav(facts, True), TRAINING_PAGE, join(parts), generated=generated)
