"""Gather what the report shows from a finished run's directory, with polars (no per-document loops).

Everything comes from files the run wrote: ``provenance.json`` (node order, impls, parameters,
recorded quality rules), ``manifest.lock.yaml`` (sources and stages as run), each node's
``stats.json``, kept parts and removal ledger, ``data/`` (the exported output), and
``licenses.json`` / ``README.md`` when the cards step wrote them.

The result is a plain JSON-able dict (also saved as ``report/facts.json``). Scope ``"output"``
covers all documents; each source gets its own scope, filtered on the ``source`` column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import yaml

from pipeline.audit.inspect import topological
from pipeline.common.errors import PipelineError
from pipeline.core.stage import readable_parts

OUTPUT_SCOPE = "output"
TEXT_EXCERPT = 600  # characters of a sampled document shown
BINS = 30
RANGE_STRETCH = 3.0
# Ledger reasons may carry a document id ("dedup:near dup of zhwiki/12"); stats.json groups them without it.
REASON_GROUP = r"\s+of\s+.+$"


class ReportError(PipelineError):
    """The report cannot be built from this directory."""


# ----------------------------------------------------------------------------- run metadata
def _read_json(path: Path, where: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path.name}: {exc}", where=where, hint="re-run `pipeline run` for this output") from exc


def check_run(out_dir: Path) -> None:
    """A completed run has provenance.json, manifest.lock.yaml and data/ (written after every node)."""
    missing = [name for name in ("provenance.json", "manifest.lock.yaml", "data/state.json") if not (out_dir / name).exists()]
    if not out_dir.is_dir() or missing:
        raise ReportError(
            f"not a completed run (missing: {', '.join(missing) if out_dir.is_dir() else 'the directory itself'})",
            where=str(out_dir),
            hint="give the --out directory of a finished `pipeline run` (run it again to finish an interrupted one)",
        )


def run_meta(out_dir: Path) -> dict:
    prov = _read_json(out_dir / "provenance.json", str(out_dir / "provenance.json"))
    try:
        lock = yaml.safe_load((out_dir / "manifest.lock.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ReportError(f"cannot read manifest.lock.yaml: {exc}", where=str(out_dir), hint="re-run `pipeline run` for this output") from exc
    nodes = []
    for name, rec in (prov.get("nodes") or {}).items():
        nodes.append({"name": name, "impl": rec.get("impl"), "kind": rec.get("kind"), "inputs": rec.get("inputs") or [], "params": rec.get("params") or {}, "provenance": rec.get("provenance") or {}, "fingerprint": rec.get("fingerprint")})
    declared = [s.get("name") for s in lock.get("sources") or []] + [s.get("name") for s in lock.get("stages") or []]
    nodes = topological(nodes, declared)
    if not nodes:
        raise ReportError("provenance.json lists no nodes", where=str(out_dir / "provenance.json"), hint="re-run `pipeline run` for this output")
    out_fp = (prov.get("output") or {}).get("fingerprint")
    output = next((n["name"] for n in nodes if out_fp and n["fingerprint"] == out_fp), None) or lock.get("output") or nodes[-1]["name"]
    sources = []
    for src in lock.get("sources") or []:
        resolved = src.get("resolved") or {}
        identity = resolved.get("identity", resolved) if isinstance(resolved, dict) else {}
        sources.append(
            {
                **{k: src.get(k) for k in ("name", "kind", "license", "license_url", "homepage", "attribution", "citation", "description", "languages")},
                "date": identity.get("date") if isinstance(identity, dict) else None,
                "pin": identity,
            }
        )
    return {
        "run": {
            "name": lock.get("name") or prov.get("manifest_name"),
            "description": lock.get("description"),
            "manifest": prov.get("manifest"),
            "pipeline_version": prov.get("pipeline_version"),
            "python": prov.get("python"),
            "packages": prov.get("packages") or {},
        },
        "sources": sources,
        "stages": [{k: s.get(k) for k in ("name", "stage", "inputs", "params")} for s in lock.get("stages") or []],
        "nodes": nodes,
        "output_node": output,
        "output_export": prov.get("output") or {},
    }


def licenses(out_dir: Path, sources: list[dict]) -> dict:
    """The license assessment written by the cards step, else what the manifest declares."""
    path = out_dir / "licenses.json"
    if path.is_file():
        return {"from": "licenses.json", **_read_json(path, str(path))}
    exprs = sorted({s["license"] for s in sources if s.get("license")})
    return {"from": "manifest.lock.yaml", "output_license": " AND ".join(f"({e})" if " " in e and len(exprs) > 1 else e for e in exprs), "sources": {s["name"]: s.get("license") for s in sources}}


def card_meta(out_dir: Path) -> dict:
    """Front matter of <out>/README.md and which card files exist (shown, never required)."""
    meta: dict = {}
    readme = out_dir / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            head = text[3:].split("\n---", 1)[0]
            try:
                loaded = yaml.safe_load(head)
                meta = loaded if isinstance(loaded, dict) else {}
            except yaml.YAMLError:
                meta = {}
    files = [p for p in ("README.md", "ATTRIBUTION.md", "croissant.json", "licenses.json") if (out_dir / p).is_file()]
    files += sorted(f"cards/{p.name}" for p in (out_dir / "cards").glob("*.md")) if (out_dir / "cards").is_dir() else []
    return {"readme_front_matter": meta, "files": files}


# ----------------------------------------------------------------------------- frames
def _parts(out_dir: Path, node: str) -> list[Path]:
    """The node's parts, or their summary once released (retain: outputs: no text but
    ``text_chars``, and the text of a few documents per source)."""
    return readable_parts(out_dir / "stages" / node)


def _chars(lf: pl.LazyFrame) -> pl.Expr:
    """Characters of the text: counted, or as the summary of released parts recorded them."""
    return pl.col("text_chars") if "text_chars" in _columns(lf) else pl.col("text").str.len_chars()


def _ledger_parts(out_dir: Path, node: str) -> list[Path]:
    return sorted((out_dir / "stages" / node / "removed").glob("part-*.parquet"))


def _scan(files: list[Path]) -> pl.LazyFrame | None:
    return pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore") if files else None


def _columns(lf: pl.LazyFrame) -> set[str]:
    return set(lf.collect_schema().names())


def finetune_facts(node: dict, stats: dict) -> dict | None:
    """Examples, tokens and labels per split of a finetune_data node (whole run only: the node
    records no per-source counts)."""
    ft = stats.get("finetune")
    if not ft:
        return None
    splits = {s: {k: v.get(k) for k in ("examples", "tokens", "truncated")} for s, v in (ft.get("splits") or {}).items()}
    labels = {s: v.get("labels") or {} for s, v in (ft.get("splits") or {}).items() if v.get("labels")}
    return {"node": node["name"], "task": ft.get("task"), "max_len": ft.get("max_len"), "splits": splits, "labels": labels}


def output_docs(out_dir: Path) -> pl.DataFrame:
    """(source, chars) per row of the exported ``data/`` (datasets' Arrow stream shards), read
    batch by batch from memory maps: the text itself is never copied."""
    import pyarrow.compute as pc

    state = _read_json(out_dir / "data" / "state.json", str(out_dir / "data"))
    parts = []
    for f in state.get("_data_files", []):
        with pa.memory_map(str(out_dir / "data" / f["filename"])) as src:
            for batch in pa.ipc.open_stream(src):
                parts.append(pa.table({"source": batch.column("source").cast(pa.string()), "chars": pc.utf8_length(batch.column("text")).cast(pa.int64())}))
    if not parts:
        return pl.DataFrame(schema={"source": pl.String, "chars": pl.Int64})
    return pl.from_arrow(pa.concat_tables(parts))


# ----------------------------------------------------------------------------- funnel
def funnel(out_dir: Path, nodes: list[dict]) -> pl.DataFrame:
    """Per (node, source): documents and characters kept and removed. One scan per node."""
    frames = []
    for n in nodes:
        name = n["name"]
        kept = _scan(_parts(out_dir, name))
        if kept is not None:
            frames.append(
                kept.group_by("source").agg(pl.len().alias("docs_out"), _chars(kept).sum().alias("chars_out")).with_columns(pl.lit(name).alias("node"))
            )
        gone = _scan(_ledger_parts(out_dir, name))
        if gone is not None:
            frames.append(
                gone.group_by("source").agg(pl.len().alias("docs_removed"), pl.col("text").str.len_chars().sum().alias("chars_removed")).with_columns(pl.lit(name).alias("node"))
            )
    schema = {"node": pl.String, "source": pl.String, "docs_out": pl.Int64, "chars_out": pl.Int64, "docs_removed": pl.Int64, "chars_removed": pl.Int64}
    if not frames:
        return pl.DataFrame(schema=schema)
    df = pl.concat([f.collect(engine="streaming") for f in frames], how="diagonal_relaxed")  # streaming: text never all in memory
    for col, typ in schema.items():
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=typ).alias(col))
    return df.group_by("node", "source").agg(pl.col(c).fill_null(0).sum().cast(pl.Int64) for c in ("docs_out", "chars_out", "docs_removed", "chars_removed"))


def funnel_rows(per_source: pl.DataFrame, nodes: list[dict], stats: dict[str, dict], source: str | None) -> list[dict]:
    """Funnel rows in node order for one source (None: all). Documents in = out + removed (the
    runner checks that accounting per node; a node may read inputs whose rows are not its
    documents, as finetune_data reads a tokenizer). Characters: of the kept text, and of the
    removed text as it entered the node (stages rewrite text, so there is no "characters in")."""
    df = per_source if source is None else per_source.filter(pl.col("source") == source)
    agg = {r["node"]: r for r in df.group_by("node").agg(pl.col("docs_out", "chars_out", "docs_removed", "chars_removed").sum()).iter_rows(named=True)}
    rows = []
    for n in nodes:
        a = agg.get(n["name"], {})
        out_d, out_c = int(a.get("docs_out") or 0), int(a.get("chars_out") or 0)
        rem_d, rem_c = int(a.get("docs_removed") or 0), int(a.get("chars_removed") or 0)
        in_d = out_d + rem_d
        if source is not None and n["kind"] == "source" and n["name"] != source and in_d == 0:
            continue  # another source's node: nothing of this source passes there
        st = stats.get(n["name"], {})
        row = {"node": n["name"], "impl": n["impl"], "docs_in": in_d, "docs_out": out_d, "docs_removed": rem_d, "chars_out": out_c, "chars_removed": rem_c}
        if source is None:  # whole-run numbers must agree with what the node recorded
            row["stats"] = {k: st.get(k) for k in ("in", "out", "removed")}
            row["consistent"] = st.get("out") == out_d and st.get("removed") == rem_d and (st.get("in") is None or st.get("in") + st.get("added", 0) == in_d)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- removals + samples
def _ledger(out_dir: Path, nodes: list[dict]) -> pl.LazyFrame | None:
    files = [f for n in nodes for f in _ledger_parts(out_dir, n["name"])]
    return _scan(files)


def removal_counts(ledger: pl.LazyFrame | None) -> pl.DataFrame:
    """Per (source, node, reason group): documents and characters removed."""
    if ledger is None:
        return pl.DataFrame(schema={"source": pl.String, "node": pl.String, "reason": pl.String, "docs": pl.Int64, "chars": pl.Int64})
    return (
        ledger.with_columns(pl.col("reason").str.replace(REASON_GROUP, "").alias("reason"))
        .group_by("source", "node", "reason")
        .agg(pl.len().cast(pl.Int64).alias("docs"), pl.col("text").str.len_chars().sum().cast(pl.Int64).alias("chars"))
        .collect(engine="streaming")
    )


def _spread(lf: pl.LazyFrame, group: list[str], k: int) -> pl.LazyFrame:
    """``k`` rows per group spread evenly over the group's ids in sorted order: deterministic and
    independent of hashing or library versions; every row when a group has at most ``k``."""
    rank = pl.int_range(pl.len()).over(group) if group else pl.int_range(pl.len())
    count = pl.len().over(group) if group else pl.len()
    return lf.sort([*group, "id"]).filter(((rank + 1) * k) // count != (rank * k) // count)


def _excerpt() -> pl.Expr:
    return pl.col("text").str.slice(0, TEXT_EXCERPT).alias("text")


def removed_samples(ledger: pl.LazyFrame | None, k: int, *, per_source: bool) -> pl.DataFrame:
    """``k`` ledger rows per (node, reason group), per source or over all sources."""
    if ledger is None or k <= 0:
        return pl.DataFrame()
    grouped = ledger.with_columns(pl.col("reason").str.replace(REASON_GROUP, "").alias("reason_group"))
    keys = ["source", "node", "reason_group"] if per_source else ["node", "reason_group"]
    picked = _spread(grouped.select(*keys, "id"), keys, k).collect()
    return (
        grouped.join(picked.lazy(), on=[*keys, "id"], how="semi")
        .select("source", "node", "reason_group", "reason", "id", "title", "signals", pl.col("text").str.len_chars().alias("chars"), _excerpt())
        .sort("source", "node", "reason_group", "id")
        .collect(engine="streaming")
    )


def kept_samples(out_dir: Path, nodes: list[dict], k: int, *, per_source: bool, only: set[str]) -> pl.DataFrame:
    """``k`` kept documents per node (and source), for the nodes in ``only`` (those that removed any)."""
    frames = []
    for n in nodes:
        if n["name"] not in only:
            continue
        kept = _scan(_parts(out_dir, n["name"]))
        if kept is None or k <= 0:
            continue
        chars = _chars(kept)
        if "text_chars" in _columns(kept):  # a released node's summary: sample among the texts it kept
            kept = kept.filter(pl.col("text").is_not_null())
        keys = ["source"] if per_source else []
        picked = _spread(kept.select(*keys, "id"), keys, k).collect()
        cols = _columns(kept)
        frames.append(
            kept.join(picked.lazy(), on=[*keys, "id"], how="semi")
            .select("source", "id", pl.col("title") if "title" in cols else pl.lit(None, pl.String).alias("title"), chars.alias("chars"), _excerpt())
            .with_columns(pl.lit(n["name"]).alias("node"))
            .sort("source", "id")
            .collect(engine="streaming")
        )
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


# ----------------------------------------------------------------------------- distributions
def hist(values: np.ndarray, *, bins: int = BINS, extra: list[np.ndarray] = (), marks: list[float] = ()) -> dict:
    """Shared edges for ``values`` and ``extra`` arrays; counts for each. The range stretches to
    include a mark (threshold) lying within RANGE_STRETCH data spans of the data, so the line is
    drawn; farther marks would squash the data into one bin and are left off-scale."""
    arrays = [np.asarray(values, dtype=float), *(np.asarray(e, dtype=float) for e in extra)]
    arrays = [a[np.isfinite(a)] for a in arrays]
    both = np.concatenate(arrays) if arrays else np.array([])
    if both.size == 0:
        return {"edges": [], "counts": [[] for _ in arrays]}
    lo, hi = float(both.min()), float(both.max())
    span = (hi - lo) or max(abs(hi), 1.0)
    for m in marks:
        if lo - RANGE_STRETCH * span <= m < lo:
            lo = float(m)
        elif hi < m <= hi + RANGE_STRETCH * span:
            hi = float(m)
    if hi == lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    return {"edges": edges.tolist(), "counts": [np.histogram(a, bins=edges)[0].astype(int).tolist() for a in arrays]}


def quality_rules(node: dict) -> dict[str, dict[str, float]]:
    """preset -> {rule: threshold}, as the quality node recorded them in its provenance."""
    rules = (node.get("provenance") or {}).get("quality_rules")
    if rules:
        return rules
    from pipeline.text.quality import resolve_preset  # older runs: recompute from the recorded params

    p = node.get("params") or {}
    presets = ["gopher", "zh"] if p.get("preset", "auto") == "auto" else [p["preset"]]
    return {name: resolve_preset(name, p.get("overrides")) for name in presets}


def signal_thresholds(rules: dict[str, dict[str, float]]) -> dict[str, list[tuple[float, str]]]:
    """q_<signal> -> [(threshold, "preset min_rule")] across presets."""
    from pipeline.text.quality import parse_rule

    out: dict[str, list[tuple[float, str]]] = {}
    for preset, rs in rules.items():
        for rule, thr in rs.items():
            signal = "q_" + parse_rule(rule)[1]
            out.setdefault(signal, []).append((float(thr), f"{preset} {rule}" if len(rules) > 1 else rule))
    return out


def _scoped(lf: pl.LazyFrame, source: str | None) -> pl.LazyFrame:
    return lf if source is None else lf.filter(pl.col("source") == source)


def quality_hists(out_dir: Path, node: dict, source: str | None) -> dict:
    """Histograms of every signal a rule uses (plus characters and words): the node's kept rows
    and the values the ledger recorded for removed rows, with the rules' thresholds."""
    rules = quality_rules(node)
    thresholds = signal_thresholds(rules)
    for always in ("q_chars", "q_words"):
        thresholds.setdefault(always, [])
    kept = _scan(_parts(out_dir, node["name"]))
    signals = [s for s in thresholds if kept is not None and s in _columns(kept)]
    kept_df = _scoped(kept, source).select(signals).collect() if kept is not None and signals else pl.DataFrame()
    gone = _scan(_ledger_parts(out_dir, node["name"]))
    gone_df = (
        _scoped(gone, source).select(pl.col("signals").str.json_path_match(f"$.{s}").cast(pl.Float64, strict=False).alias(s) for s in thresholds).collect()
        if gone is not None
        else pl.DataFrame()
    )
    out = []
    for s, thr in thresholds.items():
        k = kept_df.get_column(s).cast(pl.Float64).drop_nulls().to_numpy() if s in kept_df.columns else np.array([])
        r = gone_df.get_column(s).drop_nulls().to_numpy() if s in gone_df.columns else np.array([])
        if k.size == 0 and r.size == 0:
            continue
        h = hist(k, extra=[r], marks=[t for t, _ in thr])
        out.append({"signal": s, "edges": h["edges"], "kept": h["counts"][0], "removed": h["counts"][1], "thresholds": thr})
    return {"node": node["name"], "presets": rules, "signals": out}


def language_facts(out_dir: Path, node: dict, source: str | None) -> dict:
    kept = _scan(_parts(out_dir, node["name"]))
    gone = _scan(_ledger_parts(out_dir, node["name"]))
    k = _scoped(kept, source).select("lang", "lang_score").collect() if kept is not None and {"lang", "lang_score"} <= _columns(kept) else pl.DataFrame(schema={"lang": pl.String, "lang_score": pl.Float64})
    r = (
        _scoped(gone, source)
        .select(
            pl.col("signals").str.json_path_match("$.lang").alias("lang"),
            pl.col("signals").str.json_path_match("$.lang_score").cast(pl.Float64, strict=False).alias("lang_score"),
        )
        .collect()
        if gone is not None
        else pl.DataFrame(schema={"lang": pl.String, "lang_score": pl.Float64})
    )
    counts = (
        pl.concat([k.select(pl.col("lang").fill_null("und"), pl.lit(1).alias("kept"), pl.lit(0).alias("removed")), r.select(pl.col("lang").fill_null("und"), pl.lit(0).alias("kept"), pl.lit(1).alias("removed"))], how="vertical_relaxed")
        .group_by("lang")
        .agg(pl.col("kept").sum(), pl.col("removed").sum())
        .with_columns((pl.col("kept") + pl.col("removed")).alias("total"))
        .sort(["total", "lang"], descending=[True, False])
    )
    p = node.get("params") or {}
    marks = [float(p["min_score"])] if p.get("min_score") is not None else []
    h = hist(k.get_column("lang_score").cast(pl.Float64).drop_nulls().to_numpy(), extra=[r.get_column("lang_score").drop_nulls().to_numpy()], marks=marks)
    return {
        "node": node["name"],
        "keep": p.get("keep"),
        "min_score": p.get("min_score"),
        "langs": counts.select("lang", "kept", "removed").to_dicts(),
        "score": {"edges": h["edges"], "kept": h["counts"][0], "removed": h["counts"][1]},
    }


def dedup_facts(out_dir: Path, node: dict, removals: pl.DataFrame, source: str | None) -> dict:
    kept = _scan(_parts(out_dir, node["name"]))
    sizes = []
    if kept is not None and "dup_cluster_size" in _columns(kept):
        sizes = _scoped(kept, source).group_by("dup_cluster_size").agg(pl.len().alias("clusters")).sort("dup_cluster_size").collect().rename({"dup_cluster_size": "size"}).to_dicts()
    rem = removals.filter(pl.col("node") == node["name"])
    if source is not None:
        rem = rem.filter(pl.col("source") == source)
    by_reason = {r["reason"]: r["docs"] for r in rem.group_by("reason").agg(pl.col("docs").sum()).iter_rows(named=True)}
    return {"node": node["name"], "cluster_sizes": sizes, "removed_by_reason": by_reason, "params": {k: (node.get("params") or {}).get(k) for k in ("exact", "near", "threshold", "num_perm")}}


def token_facts(node: dict, stats: dict, source: str | None) -> dict | None:
    tok = stats.get("tokenize")
    if not tok:
        return None
    if source is None:
        splits = {s: {k: v.get(k) for k in ("documents", "tokens", "tokens_with_special", "sequences", "tokens_per_char", "byte_fallback_rate")} for s, v in (tok.get("splits") or {}).items()}
    else:
        src = (tok.get("sources") or {}).get(source)
        if not src:
            return None
        docs, toks = src.get("documents") or {}, src.get("tokens") or {}
        splits = {s: {"documents": docs.get(s, 0), "tokens": toks.get(s, 0)} for s in sorted(set(docs) | set(toks))}
    return {"node": node["name"], "seq_len": tok.get("seq_len"), "dtype": tok.get("dtype"), "tokenizer": tok.get("tokenizer") or {}, "splits": splits}


# ----------------------------------------------------------------------------- all together
def _records(df: pl.DataFrame) -> list[dict]:
    return df.to_dicts() if df.height else []


def scope_facts(out_dir: Path, meta: dict, stats: dict, per_source: pl.DataFrame, removals: pl.DataFrame, removed: pl.DataFrame, kept: pl.DataFrame, docs: pl.DataFrame, source: str | None) -> dict:
    nodes = meta["nodes"]
    by_impl = lambda impl: [n for n in nodes if n["impl"] == impl]  # noqa: E731

    def only(df: pl.DataFrame) -> pl.DataFrame:
        return df if source is None or df.is_empty() else df.filter(pl.col("source") == source)

    rem = only(removals).group_by("node", "reason").agg(pl.col("docs").sum(), pl.col("chars").sum())
    order = {n["name"]: i for i, n in enumerate(nodes)}
    rem_rows = sorted(_records(rem), key=lambda r: (order.get(r["node"], 1 << 30), -r["docs"], r["reason"]))
    samples: dict[str, dict] = {}
    for r in _records(only(removed).drop("source") if removed.height else removed):
        samples.setdefault(r["node"], {"removed": {}, "kept": []})["removed"].setdefault(r["reason_group"], []).append(r)
    for r in _records(only(kept)):
        samples.setdefault(r["node"], {"removed": {}, "kept": []})["kept"].append(r)
    samples = {n["name"]: samples[n["name"]] for n in nodes if n["name"] in samples and samples[n["name"]]["removed"]}
    d = only(docs)
    lengths = hist(d.get_column("chars").to_numpy()) if d.height else {"edges": [], "counts": [[]]}
    fun = funnel_rows(per_source, nodes, stats, source)
    out_row = next((r for r in fun if r["node"] == meta["output_node"]), None)
    tokens = [t for n in by_impl("tokenize") if (t := token_facts(n, stats.get(n["name"], {}), source))]
    return {
        "source": source,
        "totals": {
            "documents": d.height,
            "chars": int(d.get_column("chars").sum() or 0) if d.height else 0,
            "removed": int(only(removals).get_column("docs").sum() or 0) if removals.height else 0,
            "tokens": sum(int(s.get("tokens") or 0) for t in tokens[:1] for s in t["splits"].values()),
            "output_node_out": out_row["docs_out"] if out_row else None,
        },
        "funnel": fun,
        "removals": rem_rows,
        "samples": samples,
        "lengths": {"edges": lengths["edges"], "counts": lengths["counts"][0]},
        "quality": [quality_hists(out_dir, n, source) for n in by_impl("quality_filter")],
        "languages": [language_facts(out_dir, n, source) for n in by_impl("lid_filter")],
        "dedup": [dedup_facts(out_dir, n, removals, source) for n in by_impl("dedup")],
        "tokens": tokens,
        "finetune": [f for n in by_impl("finetune_data") if (f := finetune_facts(n, stats.get(n["name"], {})))] if source is None else [],
        # counts over all sources (the stages record them per set, not per source)
        "contamination": [contamination_facts(n, stats.get(n["name"], {})) for n in by_impl("decontaminate")] if source is None else [],
        "stage_cards": stage_cards(nodes, stats) if source is None else [],
    }


def contamination_facts(node: dict, stats: dict) -> dict:
    """Per evaluation set of a decontaminate node: documents dropped (or flagged) and the ledger reason."""
    params = node.get("params") or {}
    dec = stats.get("decontam") or {}
    action = dec.get("action") or params.get("action") or "drop"
    by_set = dec.get("by_set") or {}
    sets = [
        {"set": s.get("name"), "path": s.get("path"), "revision": s.get("revision"), "documents": int((by_set.get(s.get("name")) or {}).get("documents", 0)), "reason": f"decontam:{s.get('name')}" if action == "drop" else None}
        for s in params.get("sets") or []
    ]
    return {"node": node["name"], "action": action, "documents": int(dec.get("documents", 0)), "docs_in": stats.get("in"), "sets": sets}


def stage_cards(nodes: list[dict], stats: dict[str, dict]) -> list[dict]:
    """Every node's ``stats["card"]`` ({title, rows: [[label, value]], notes}), in node order, as plain strings."""
    out = []
    for n in nodes:
        card = (stats.get(n["name"]) or {}).get("card")
        if not isinstance(card, dict):
            continue
        rows = [[str(r[0]), str(r[1])] for r in card.get("rows") or [] if isinstance(r, (list, tuple)) and len(r) >= 2]
        out.append({"node": n["name"], "impl": n.get("impl"), "title": str(card.get("title") or n["name"]), "rows": rows, "notes": [str(x) for x in card.get("notes") or []]})
    return out


def gather(out_dir: Path, samples: int = 5) -> dict:
    """All facts of a finished run at ``out_dir``."""
    out_dir = Path(out_dir)
    check_run(out_dir)
    try:
        return _gather(out_dir, samples)
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:  # damaged or foreign files: say where
        raise ReportError(f"cannot read the run's files: {type(exc).__name__}: {exc}", where=str(out_dir), hint="check that the run finished and its files are intact; re-run `pipeline run` to rebuild them") from exc


def _gather(out_dir: Path, samples: int) -> dict:
    meta = run_meta(out_dir)
    nodes = meta["nodes"]
    stats = {}
    for n in nodes:
        path = out_dir / "stages" / n["name"] / "stats.json"
        if not (out_dir / "stages" / n["name"] / "_COMPLETE").exists() or not path.exists():
            raise ReportError(f"node {n['name']!r} is not complete", where=str(path.parent), hint="finish the run with `pipeline run` first")
        stats[n["name"]] = _read_json(path, str(path))
    per_source = funnel(out_dir, nodes)
    ledger = _ledger(out_dir, nodes)
    removals = removal_counts(ledger)
    docs = output_docs(out_dir)
    data_rows = docs.height
    removing = set(removals.get_column("node").to_list()) if removals.height else set()
    removed, kept = removed_samples(ledger, samples, per_source=False), kept_samples(out_dir, nodes, samples, per_source=False, only=removing)
    scopes = {OUTPUT_SCOPE: scope_facts(out_dir, meta, stats, per_source, removals, removed, kept, docs, None)}
    if len(meta["sources"]) > 1:
        removed, kept = removed_samples(ledger, samples, per_source=True), kept_samples(out_dir, nodes, samples, per_source=True, only=removing)
    for src in meta["sources"]:
        scopes[src["name"]] = scope_facts(out_dir, meta, stats, per_source, removals, removed, kept, docs, src["name"])
    info_path = out_dir / "data" / "dataset_info.json"
    info = _read_json(info_path, str(info_path)) if info_path.exists() else {}
    return {
        **meta,
        "out_dir": str(out_dir),
        "data": {"rows": data_rows, "bytes": meta["output_export"].get("bytes"), "shards": meta["output_export"].get("shards"), "features": list((info.get("features") or {}).keys())},
        "licenses": licenses(out_dir, meta["sources"]),
        "cards": card_meta(out_dir),
        "samples_per_group": samples,
        "scopes": scopes,
    }
