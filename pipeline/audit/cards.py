"""Dataset cards for a run's output, written from ``<out>`` alone.

* ``<out>/README.md``: a Hugging Face dataset card. The YAML front matter is built with
  ``huggingface_hub.DatasetCardData`` and the ``datasets`` library's own ``DatasetInfosDict`` /
  ``MetadataConfigs`` serializers (``dataset_info`` features from the Arrow schema, splits with
  measured bytes and counts; ``configs`` with ``data_files`` globs). The body answers the
  Datasheets-for-Datasets groups from the lock, provenance, ledgers and measured statistics.
* ``<out>/cards/<source>.md``: one card per source (its own YAML and its provenance).
* ``<out>/croissant.json``: Croissant 1.0 (``pipeline.audit.croissant``).

Deterministic: the same ``<out>`` gives the same bytes (no clock is read; the only times shown
are the retrieval times that provenance.json recorded). Every file is written atomically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.audit import croissant
from pipeline.audit.attribution import URLS_FILE, license_ids, md_code, md_escape, md_link, text_changes
from pipeline.audit.lineage import RunInfo, data_schema, data_shards, iter_batches, load_run, removals
from pipeline.common import storage
from pipeline.io.urls import redact_url

SPLIT = "train"  # data/ is one Dataset: published as the train split of the default config
# The export's shard names, not *.arrow: `datasets` writes cache-*.arrow files beside a dataset
# loaded from disk when it is filtered or mapped, and those must never be published.
SHARD_GLOB = "data-*-of-*.arrow"
DATA_GLOB = f"data/{SHARD_GLOB}"
SIZE_BUCKETS = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
# Hugging Face license ids (https://huggingface.co/docs/hub/repositories-licenses) that are not just the lower-cased SPDX id.
HF_LICENSE_IDS = {
    "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "cc0-1.0",
    "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0",
    "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2",
    "agpl-3.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "osl-3.0", "postgresql",
    "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "odbl", "odc-by",
}
HF_LICENSE_ALIASES = {"odc-by-1.0": "odc-by", "odbl-1.0": "odbl", "pddl-1.0": "pddl", "c-uda-1.0": "c-uda"}
LANG_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
FIELD_DESCRIPTIONS = {
    "id": "document id: <source>/<id in the source> (unique)",
    "source": "name of the source in the manifest",
    "license": "SPDX license expression of the document's source",
    "title": "title (article title for wiki sources)",
    "url": "URL of the original document (attribution link)",
    "timestamp": "time of the document's revision in its source (ISO 8601)",
    "revision_id": "revision id in the source wiki",
    "text": "plain text of the document",
    "lang": "language detected by the lid_filter stage (ISO 639-1)",
    "lang_score": "confidence of the detected language",
    "dup_cluster_id": "duplicate cluster of the document (dedup stage)",
    "dup_cluster_size": "documents in the duplicate cluster before deduplication (1: no duplicate)",
    "decontam": "evaluation sets whose items the document contains (decontaminate stage with action: flag; empty: none)",
    "label": "label of the document (classification sources)",
    "instruction": "prompt of the example (sft sources)",
    "response": "response of the example (sft sources)",
}


# ---------------------------------------------------------------------------------- measuring
def field_description(name: str) -> str:
    if name in FIELD_DESCRIPTIONS:
        return FIELD_DESCRIPTIONS[name]
    if name.startswith("q_"):
        return "quality signal of the quality_filter stage (docs/quality.md)"
    return ""


def measure(out_dir: Path) -> dict:
    """Statistics of ``<out>/data``, streamed one memory-mapped record batch at a time."""
    import polars as pl

    frames = []
    for shard in data_shards(out_dir):
        for batch in iter_batches(shard):
            n = batch.num_rows
            names = batch.schema.names

            def col(name, typ=pa.string()):
                return batch.column(name) if name in names else pa.nulls(n, typ)

            text = col("text")
            url = col("url")
            frames.append(
                pl.from_arrow(
                    pa.table(
                        {
                            "source": col("source"),
                            "license": col("license"),
                            "lang": col("lang"),
                            "chars": pc.fill_null(pc.utf8_length(text), 0).cast(pa.int64()),
                            "bytes": pc.fill_null(pc.binary_length(text), 0).cast(pa.int64()),
                            "has_url": pc.fill_null(pc.greater(pc.utf8_length(url), 0), False),
                            "dup": pc.fill_null(pc.greater(col("dup_cluster_size", pa.int64()), 1), False),
                        }
                    )
                )
            )
    df = pl.concat(frames) if frames else pl.DataFrame(schema={"source": pl.String, "license": pl.String, "lang": pl.String, "chars": pl.Int64, "bytes": pl.Int64, "has_url": pl.Boolean, "dup": pl.Boolean})
    schema = data_schema(out_dir)
    lengths = df["chars"].to_numpy()

    def counts(column: str) -> dict[str, int]:
        return {r[column]: r["n"] for r in df.drop_nulls(column).group_by(column).agg(pl.len().alias("n")).sort(["n", column], descending=[True, False]).iter_rows(named=True)}

    per_source = {}
    for r in df.group_by("source").agg(pl.len().alias("documents"), pl.col("chars").sum(), pl.col("bytes").sum(), pl.col("has_url").sum().alias("with_url"), pl.col("dup").sum().alias("with_duplicates")).sort("source", nulls_last=True).iter_rows(named=True):
        langs = counts_for(df, "lang", r["source"])
        per_source[r["source"] or "unknown"] = {**{k: int(v) for k, v in r.items() if k != "source"}, "languages": langs}
    shards = [{"file": f"data/{p.name}", "bytes": p.stat().st_size} for p in data_shards(out_dir)]
    return {
        "documents": df.height,
        "chars": int(df["chars"].sum()),
        "bytes_text": int(df["bytes"].sum()),
        "length": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "median": int(np.median(lengths)) if len(lengths) else 0,
            "p90": int(np.percentile(lengths, 90)) if len(lengths) else 0,
            "mean": round(float(lengths.mean()), 1) if len(lengths) else 0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
        "languages": counts("lang") if "lang" in schema.names else {},
        "licenses": counts("license"),
        "sources": per_source,
        "missing": {"source": int(df["source"].null_count()), "license": int(df["license"].null_count())},
        "with_duplicates": int(df["dup"].sum()),
        "shards": shards,
        "bytes": sum(s["bytes"] for s in shards),
        "columns": schema.names,
    }


def counts_for(df, column: str, source) -> dict[str, int]:
    import polars as pl

    sub = df.filter(pl.col("source") == source) if source is not None else df.filter(pl.col("source").is_null())
    return {r[column]: r["n"] for r in sub.drop_nulls(column).group_by(column).agg(pl.len().alias("n")).sort(["n", column], descending=[True, False]).iter_rows(named=True)}


def token_info(out_dir: Path) -> dict | None:
    index = out_dir / "tokens" / "index.json"
    return storage.read_json(index) if index.is_file() else None


# ------------------------------------------------------------------------------ metadata maps
def size_category(n: int) -> str:
    for limit, name in SIZE_BUCKETS:
        if n < limit:
            return name
    return "n>1T"


def hf_license_id(spdx_id: str) -> str | None:
    key = spdx_id.lower()
    if key.startswith("gfdl-"):
        return "gfdl"
    key = re.sub(r"-(only|or-later)$", "", key)
    key = HF_LICENSE_ALIASES.get(key, key)
    return key if key in HF_LICENSE_IDS or key in HF_LICENSE_ALIASES.values() else None


def hf_license(expression: str, sources: list[dict]) -> dict:
    """Card fields for an SPDX expression: ``license`` (an id or a list of ids), or ``other``
    with ``license_name`` / ``license_link`` when a part has no Hugging Face id."""
    keys = license_ids(expression) if expression else []
    ids = [hf_license_id(k) for k in keys]
    if keys and all(ids):
        unique = sorted(set(ids))
        return {"license": unique[0] if len(unique) == 1 else unique}
    links = sorted({s["license_url"] for s in sources if s.get("license_url")})
    name = re.sub(r"[^a-z0-9.]+", "-", (expression or "unknown").lower()).strip("-")
    return {"license": "other", "license_name": name, "license_link": links[0] if len(links) == 1 else "ATTRIBUTION.md"}


def _task(sources: list[dict]) -> tuple[list[str], list[str]]:
    tasks = {s.get("task") or "pretrain" for s in sources}
    cats, ids = set(), set()
    for t in tasks:
        if t == "classification":
            cats.add("text-classification")
        else:
            cats.add("text-generation")
            ids.add("language-modeling")
    return sorted(cats), sorted(ids)


def _source_dataset(src: dict) -> str:
    ds = src.get("dataset") or ""
    if src.get("kind") == "hf" and re.fullmatch(r"[\w.-]+/[\w.-]+", ds) and not Path(ds).exists():
        return f"extended|{ds}"
    return "original"


def _languages(stats: dict, sources: list[dict]) -> list[str]:
    langs = list(stats["languages"]) or sorted({lang for s in sources for lang in s.get("languages") or []})
    return [lang for lang in langs if LANG_CODE.match(lang)]


def card_data(run: RunInfo, stats: dict, sources: list[dict], *, pretty_name: str, expression: str, documents: int, languages: list[str]):
    from huggingface_hub import DatasetCardData

    cats, ids = _task(sources)
    return DatasetCardData(
        pretty_name=pretty_name,
        language=languages or None,
        multilinguality="multilingual" if len(languages) > 1 else "monolingual",
        size_categories=[size_category(documents)],
        source_datasets=sorted({_source_dataset(s) for s in sources}),
        task_categories=cats,
        task_ids=ids or None,
        annotations_creators=["no-annotation"] if all((s.get("task") or "pretrain") == "pretrain" for s in sources) else ["found"],
        language_creators=sorted({"crowdsourced" if s.get("kind") == "wikimedia-dump" else "found" for s in sources}),
        **hf_license(expression, sources),
    )


def add_dataset_info(data, run: RunInfo, stats: dict, tokens: dict | None) -> None:
    """``dataset_info`` and ``configs`` through the ``datasets`` library's own serializers."""
    from datasets import DatasetInfo, Features
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs

    def info(features, splits: dict[str, tuple[int, int]]) -> DatasetInfo:
        size = sum(b for b, _ in splits.values())
        split_dict = SplitDict({name: SplitInfo(name=name, num_bytes=b, num_examples=n) for name, (b, n) in splits.items()})
        return DatasetInfo(features=features, splits=split_dict, download_size=size, dataset_size=size)

    infos = {"default": info(Features.from_arrow_schema(data_schema(run.out_dir)), {SPLIT: (stats["bytes"], stats["documents"])})}
    configs = {"default": {"data_files": [{"split": SPLIT, "path": DATA_GLOB}]}}
    if tokens:
        schema = _arrow_schema(_first_token_shard(run.out_dir, tokens))
        # an empty split (a small corpus's test split) has no files: load_dataset would fail on it
        present = {s: v for s, v in tokens["splits"].items() if v["sequences"]}
        splits = {s: (sum(sh["bytes"] for sh in v["shards"]), v["sequences"]) for s, v in present.items()}
        infos["tokens"] = info(Features.from_arrow_schema(schema), splits)
        configs["tokens"] = {"data_files": [{"split": s, "path": f"tokens/{s}/{SHARD_GLOB}"} for s in present]}
    DatasetInfosDict(infos).to_dataset_card_data(data)
    MetadataConfigs(configs).to_dataset_card_data(data)


def _first_token_shard(out_dir: Path, tokens: dict) -> Path:
    for split in tokens["splits"].values():
        for shard in split["shards"]:
            return out_dir / "tokens" / shard["file"]
    raise FileNotFoundError("tokens/index.json lists no shard")


def _arrow_schema(path: Path) -> pa.Schema:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).schema


# ---------------------------------------------------------------------------------- rendering
def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else md_escape(x)


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def _table(header: list[str], rows: list[list]) -> list[str]:
    """Cells must already be escaped (md_escape escapes ``|``)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def _clean_value(value):
    """URLs lose credentials; nothing else is changed."""
    if isinstance(value, str) and re.match(r"^[a-z][a-z0-9+.-]*://", value, re.IGNORECASE):
        return redact_url(value)
    return value


def _text(value) -> str:
    value = _clean_value(value)
    if isinstance(value, list):
        return ", ".join(md_escape(_clean_value(v)) for v in value)
    return _n(value) if isinstance(value, int) else md_escape(value)


def _pinned(identity: dict) -> tuple[list[tuple[str, object]], list[dict]]:
    """Split a resolved identity into scalar facts and file rows (dicts with a name)."""
    facts, files = [], []
    for key, value in (identity or {}).items():
        if isinstance(value, dict) and "name" in value:
            files.append({"role": key, **value})
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            files += [{"role": key, **v} for v in value]
        elif value is not None and not isinstance(value, dict):
            facts.append((key, value))
    return facts, files


def run_downloads(prov_src: dict) -> list[dict]:
    return [d for d in prov_src.get("downloads") or [] if isinstance(d, dict)]


def _retrieved(run: RunInfo) -> list[str]:
    return sorted({d["retrieved_at"] for s in run.provenance.get("sources", {}).values() for d in run_downloads(s) if d.get("retrieved_at")})


def _source_counts(run: RunInfo, stats: dict, rem: dict, name: str) -> dict:
    node = run.stats(name)
    removed = {f"{node_name}: {reason}": n for node_name, reasons in rem.get(name, {}).items() for reason, n in reasons.items()}
    kept = stats["sources"].get(name, {}).get("documents", 0)
    read = node.get("in")
    return {"read": read, "kept": kept, "removed": removed, "removed_total": sum(removed.values()), "balanced": read is not None and read == kept + sum(removed.values())}


def _overrides(run: RunInfo) -> list[dict]:
    listed = [o for o in run.licenses.get("overrides") or [] if isinstance(o, dict)]
    seen = {o.get("source") for o in listed}
    for s in run.sources:  # the lock keeps each override too (outputs without licenses.json)
        if s.get("license_override") and s["name"] not in seen:
            listed.append({"source": s["name"], "license": s.get("license"), **s["license_override"]})
    return listed


def _describe(item) -> str:
    if isinstance(item, dict):
        return md_escape(item.get("message") or item.get("text") or json.dumps(item, ensure_ascii=False, sort_keys=True))
    return md_escape(item)


def _collection_lines(run: RunInfo, src: dict, counts: dict, *, full: bool) -> list[str]:
    prov = run.provenance.get("sources", {}).get(src["name"], {})
    resolved = src.get("resolved") or prov.get("resolved") or {}
    facts, files = _pinned(resolved.get("identity") or {})
    lines = [f"- **Kind**: {md_code(src.get('kind'))}" + (f"; {md_escape(src['description'])}" if src.get("description") else "")]
    if src.get("homepage"):
        lines.append(f"- **Homepage**: {md_link(src['homepage'], src['homepage'])}")
    for key, value in facts:
        lines.append(f"- **{md_escape(key)}**: {_text(value)}")
    urls = resolved.get("urls") or {}
    for role, url in sorted(urls.items()):
        lines.append(f"- **URL ({md_escape(role)})**: {md_escape(redact_url(url))}")
    downloads = run_downloads(prov)
    times = sorted({d["retrieved_at"] for d in downloads if d.get("retrieved_at")})
    if times:
        lines.append(f"- **Retrieved**: {', '.join(md_escape(t) for t in times)}")
    if files and not full:
        algos = sorted({k for f in files for k in f if k in ("md5", "sha1", "sha256")})
        lines.append(f"- **Files pinned**: {len(files)} ({', '.join(algos) or 'no checksum'}); see `cards/{md_escape(src['name'])}.md`")
    read = "?" if counts["read"] is None else _n(counts["read"])
    lines.append(f"- **Documents read**: {read}; kept in `data/`: {_n(counts['kept'])}; removed: {_n(counts['removed_total'])}")
    if full and files:
        keys = [k for k in ("role", "name", "size", "md5", "sha1", "sha256") if any(k in f for f in files)]
        lines += ["", "Files (as pinned before the run):", ""]
        lines += _table(keys, [[_text(f.get(k, "")) for k in keys] for f in files])
    if full and downloads:
        lines += ["", "Downloads:", ""]
        lines += _table(
            ["url", "bytes", "byte range", "sha256", "verified", "retrieved at", "from cache"],
            [[md_escape(redact_url(d.get("url", ""))), _n(d.get("bytes")), md_escape(d.get("byte_range") or "whole file"), md_code((d.get("checksums") or {}).get("sha256", "")), md_escape(", ".join(d.get("verified") or []) or "-"), md_escape(d.get("retrieved_at") or "-"), md_escape(d.get("from_cache"))] for d in downloads],
        )
    return lines


def _removal_rows(counts: dict) -> list[list]:
    return [[md_escape(k), _n(v)] for k, v in sorted(counts["removed"].items(), key=lambda kv: (-kv[1], kv[0]))]


def render_readme(run: RunInfo, stats: dict, tokens: dict | None, rem: dict, data) -> str:
    lock, lic = run.lock, run.licenses
    in_chain = [s for s in run.sources if s["name"] in run.chain]
    docs = stats["documents"]
    name = lock.get("name", "dataset")
    expression = lic.get("output_license") or ""
    intended = lic.get("intended_use") or lock.get("intended_use")
    L: list[str] = [f"# {md_escape(data.pretty_name)}", ""]
    if lock.get("description"):
        L += [md_escape(lock["description"]), ""]
    L += [
        f"**{_n(docs)} documents**, {_n(stats['chars'])} characters ({_n(stats['bytes_text'])} bytes of UTF-8 text) in "
        f"{len(stats['shards'])} Arrow shard(s) of {_n(stats['bytes'])} bytes, from {len(in_chain)} source(s). "
        f"License: {md_code(expression or '?')}; credits in `ATTRIBUTION.md`.",
        "",
    ]
    # Motivation
    cats, _ = _task(in_chain)
    L += ["## Motivation", ""]
    L.append(f"- **Purpose**: {md_escape(lock.get('description')) or 'not stated in the manifest'}")
    L.append(f"- **Intended use**: {md_escape(intended) if intended else 'not declared in the manifest'}; task categories: {', '.join(cats)}")
    L.append(f"- **Created by**: grist-pipeline {md_escape(run.provenance.get('pipeline_version', '?'))} from manifest {md_code(name)} (resolved in `manifest.lock.yaml`), {len(run.chain)} nodes: {', '.join(md_code(n) for n in run.chain)}")
    L.append("")
    # Composition
    L += ["## Composition", ""]
    L.append(f"- **Instances**: one document per row: {_n(docs)} rows in one split ({md_code(SPLIT)}); text plus source, license and the signals the stages added ({len(stats['columns'])} columns).")
    len_ = stats["length"]
    L.append(f"- **Document length** (characters): min {_n(len_['min'])}, median {_n(len_['median'])}, 90th percentile {_n(len_['p90'])}, mean {len_['mean']:,}, max {_n(len_['max'])}.")
    if "dup_cluster_size" in stats["columns"]:
        L.append(f"- **Duplicates**: {_n(stats['with_duplicates'])} kept documents had duplicates removed (`dup_cluster_size` > 1).")
    L.append(f"- **Missing values**: `source` missing in {_n(stats['missing']['source'])} rows, `license` missing in {_n(stats['missing']['license'])} rows.")
    L += ["", "Sources:", ""]
    L += _table(["source", "kind", "license", "documents", "share", "characters"], [[md_escape(s["name"]), md_code(s.get("kind")), md_code(s.get("license")), _n(stats["sources"].get(s["name"], {}).get("documents", 0)), _pct(stats["sources"].get(s["name"], {}).get("documents", 0), docs), _n(stats["sources"].get(s["name"], {}).get("chars", 0))] for s in in_chain])
    if stats["languages"]:
        L += ["Languages (the `lang` column):", ""]
        L += _table(["language", "documents", "share"], [[md_code(k), _n(v), _pct(v, docs)] for k, v in stats["languages"].items()])
    schema = data_schema(run.out_dir)
    L += ["Fields:", ""]
    fields = [f for f in schema if not f.name.startswith("q_")]
    q_fields = [f for f in schema if f.name.startswith("q_")]
    rows = [[md_code(f.name), md_code(f.type), md_escape(field_description(f.name))] for f in fields]
    if q_fields:  # dozens of signal columns: one row (croissant.json and dataset_info list each)
        rows.append([md_code("q_*") + f" ({len(q_fields)})", ", ".join(sorted({md_code(f.type) for f in q_fields})), md_escape(field_description("q_") + ": " + ", ".join(f.name for f in q_fields))])
    L += _table(["field", "type", "description"], rows)
    if tokens:
        L += [f"Token sequences (config {md_code('tokens')}, `tokens/`): rows of {_n(tokens['seq_len'])} tokens, vocabulary {_n(tokens.get('vocab_size'))}, tokenizer sha256 {md_code((tokens.get('tokenizer') or {}).get('sha256', '?'))}. Each row's `doc_ids` / `doc_starts` name the documents its tokens come from (`pipeline.audit.lineage.trace`).", ""]
        L += _table(["split", "sequences", "tokens", "documents"], [[md_code(s), _n(v["sequences"]), _n(v["tokens"]), _n((tokens.get("documents") or {}).get(s, 0))] for s, v in tokens["splits"].items()])
    L.append(f"- **Personal and sensitive information**: {md_escape(_pii(run))}")
    L.append("")
    # Collection
    L += ["## Collection process", ""]
    for src in in_chain:
        L += [f"### {md_escape(src['name'])}", ""]
        L += _collection_lines(run, src, _source_counts(run, stats, rem, src["name"]), full=False)
        L.append("")
    # Preprocessing
    L += ["## Preprocessing", "", "Nodes upstream of `data/`, in order; every removed document is in the node's ledger (`stages/<node>/removed/`, with its reason):", ""]
    rows = []
    for node in run.chain:
        rec, st = run.node(node), run.stats(node)
        reasons = sorted((st.get("removed_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        rows.append([md_code(node), md_code(rec.get("impl", "?")), _n(st.get("in", "?")), _n(st.get("out", "?")), _n(st.get("removed", 0)), md_escape(", ".join(f"{r} ({n:,})" for r, n in reasons)) or "-"])
    L += _table(["node", "stage", "in", "out", "removed", "main reasons"], rows)
    L += ["Changes to the text:", ""]
    L += [f"- {md_code(c['node'])} ({md_escape(c['impl'])}): {md_escape(c['what'])}" for c in text_changes(run)] + [""]
    L += contamination_lines(run)
    L += stage_fact_lines(run)
    # Uses
    L += ["## Uses", ""]
    L.append(f"- **Intended**: {md_escape(intended) if intended else 'not declared'}; {', '.join(cats)}.")
    for line in _limitations(run, stats, in_chain):
        L.append(f"- **Limitation**: {line}")
    for ob in lic.get("obligations") or []:
        L.append(f"- **Obligation**: {md_escape(ob)}")
    L.append("")
    # Distribution
    L += ["## Distribution", ""]
    L.append(f"- **License of this dataset**: {md_code(expression or '?')}" + (f" (card id: {_text(data.license)})" if data.license else ""))
    for key in ("use", "share_alike"):
        if lic.get(key) not in (None, "", []):
            L.append(f"- **{key.replace('_', '-').capitalize()}**: {_text(lic[key])}")
    if not lic.get("assessed", True) is True:
        L.append("- **License assessment**: not recorded for this output (`licenses.json` missing); the license above is the conjunction of the sources' licenses.")
    for ov in _overrides(run):
        L.append(f"- **License override** for {md_code(ov.get('source'))} ({md_code(ov.get('license') or '')}): {md_escape(ov.get('justification') or 'no justification recorded')}")
    for c in lic.get("conflicts") or []:
        L.append(f"- **Conflict**: {_describe(c)}")
    L += ["", "Sources:", ""]
    L += _table(["source", "license", "license text", "attribution"], [[md_escape(s["name"]), md_code(s.get("license")), md_link(s["license_url"], s["license_url"]) if s.get("license_url") else "-", md_escape(s.get("attribution") or "-")] for s in in_chain])
    L += ["Files:", ""]
    files = [[md_code(s["file"]), _n(s["bytes"]), "documents (Arrow IPC stream)"] for s in stats["shards"]]
    # Sizes only of files written before the cards, so that regenerating gives the same bytes.
    for rel, what in (("manifest.lock.yaml", "resolved manifest and package versions"), ("provenance.json", "downloads, nodes, fingerprints"), ("licenses.json", "license assessment")):
        if (run.out_dir / rel).is_file():
            files.append([md_code(rel), _n((run.out_dir / rel).stat().st_size), what])
    files.append([md_code("ATTRIBUTION.md"), "-", "license notices, changes, per-document credits"])
    if (run.out_dir / URLS_FILE).is_file():
        files.append([md_code(URLS_FILE), "-", "per-document credits (source, id, title, url)"])
    files.append([md_code("croissant.json"), "-", "Croissant 1.0 metadata"])
    files += [[md_code(f"cards/{s['name']}.md"), "-", "card of the source"] for s in in_chain]
    if tokens:
        files.append([md_code("tokens/"), _n(sum(sh["bytes"] for v in tokens["splits"].values() for sh in v["shards"])), "packed token rows (config tokens)"])
    L += _table(["file", "bytes", "content"], files)
    L += ["Loading: `datasets.load_dataset(\"<this repository>\")` (configs `default`" + (" and `tokens`" if tokens else "") + "), or `datasets.load_from_disk(\"data\")` on a local copy.", ""]
    # Maintenance
    pk = run.provenance.get("packages") or {}
    L += ["## Maintenance", ""]
    L.append(f"- **Built with**: grist-pipeline {md_escape(run.provenance.get('pipeline_version', '?'))}, Python {md_escape(run.provenance.get('python', '?'))}; " + ", ".join(f"{md_escape(k)} {md_escape(v)}" for k, v in sorted(pk.items()) if k in ("datasets", "pyarrow", "polars", "sentencepiece", "tokenizers")))
    L.append(f"- **Data fingerprint**: {md_code((run.provenance.get('output') or {}).get('fingerprint', '?'))} (node {md_code(run.output_node)}; a re-run with the same inputs and parameters gives the same bytes)")
    pins = [f"--set sources.{s['name']}.date={(s.get('resolved') or {}).get('identity', {}).get('date')}" for s in in_chain if s.get("kind") == "wikimedia-dump" and (s.get("resolved") or {}).get("identity", {}).get("date")]
    L.append(f"- **Reproduce**: {md_code(('pipeline run MANIFEST ' + ' '.join(pins)).strip())} with the manifest recorded in `manifest.lock.yaml` (pinned dates, checksums, parameters); an update is a re-run on newer source versions.")
    times = _retrieved(run)
    if times:
        L.append(f"- **Sources retrieved**: {md_escape(times[0])}" + (f" to {md_escape(times[-1])}" if len(times) > 1 else ""))
    L.append("- **Regenerate the cards**: `pipeline report OUT`, or `python -c \"from pipeline.audit.cards import write_cards; write_cards('OUT')\"` (reads only this folder).")
    L.append("")
    cites = [s for s in in_chain if s.get("citation")]
    if cites:
        L += ["## Citation", ""] + [f"- {md_escape(s['name'])}: {md_escape(s['citation'])}" for s in cites] + [""]
    return "\n".join(L)


def contamination_lines(run: RunInfo) -> list[str]:
    """## Contamination: per decontaminate node upstream of data/, how many documents each evaluation set dropped or flagged."""
    nodes = [n for n in run.chain if run.node(n).get("impl") == "decontaminate"]
    if not nodes:
        return []
    L = ["## Contamination", ""]
    for node in nodes:
        st, params = run.stats(node), run.node(node).get("params") or {}
        dec = st.get("decontam") or {}
        action = dec.get("action") or params.get("action") or "drop"
        verb = "dropped" if action == "drop" else "flagged (kept, `decontam` column)"
        L += [f"Node {md_code(node)}: documents sharing long n-grams or whole short items with an evaluation set were {verb}; {_n(dec.get('documents', 0))} of {_n(st.get('in', 0))} documents.", ""]
        rows = []
        for spec in params.get("sets") or []:
            name = spec.get("name")
            by = (dec.get("by_set") or {}).get(name, {})
            rows.append([md_escape(name), md_escape(spec.get("path")) + (f" @ {md_code(spec['revision'])}" if spec.get("revision") else ""), _n(by.get("documents", 0)), md_code(f"decontam:{name}") if action == "drop" else "-"])
        L += _table(["evaluation set", "path", "documents " + ("dropped" if action == "drop" else "flagged"), "ledger reason"], rows)
    return L


def stage_fact_lines(run: RunInfo) -> list[str]:
    """## Stage facts: each node's ``stats["card"]`` = {title, rows: [[label, value]], notes: [..]}, rendered as given (escaped)."""
    L: list[str] = []
    for node in run.chain:
        card = run.stats(node).get("card")
        if not isinstance(card, dict):
            continue
        if not L:
            L = ["## Stage facts", ""]
        L += [f"### {md_escape(card.get('title') or node)} ({md_code(node)})", ""]
        rows = [[md_escape(r[0]), md_escape(r[1])] for r in card.get("rows") or [] if isinstance(r, (list, tuple)) and len(r) >= 2]
        if rows:
            L += _table(["fact", "value"], rows)
        L += [f"- {md_escape(n)}" for n in card.get("notes") or []]
        L.append("")
    return L


def _pii(run: RunInfo) -> str:
    cleans = [n for n in run.chain if run.node(n).get("impl") == "clean"]
    if not cleans:
        return "no cleaning stage ran: text is as in the sources"
    p = run.node(cleans[-1]).get("params") or {}
    if p.get("pii"):
        return f"redacted by node {cleans[-1]} ({', '.join(p.get('pii_types') or [])})"
    return f"not redacted (node {cleans[-1]} has pii: false): text may contain names and contact details published in the sources"


def _limitations(run: RunInfo, stats: dict, sources: list[dict]) -> list[str]:
    out = []
    for s in sources:
        for key in ("max_pages", "max_docs"):
            if s.get(key):
                out.append(f"{md_escape(s['name'])} is a sample: only the first {_n(int(s[key]))} {'pages' if key == 'max_pages' else 'records'} were read")
    for node in run.chain:
        rec, st = run.node(node), run.stats(node)
        if rec.get("impl") == "lid_filter":
            keep = (rec.get("params") or {}).get("keep") or []
            if keep:
                out.append(f"only languages {', '.join(md_code(k) for k in keep)} kept by {md_code(node)} ({_n(st.get('removed', 0))} of {_n(st.get('in', 0))} documents removed)")
            else:
                out.append(f"languages labelled by {md_code(node)} (`lang` column); no document removed by language")
        if rec.get("impl") == "quality_filter":
            out.append(f"heuristic quality rules ({md_escape((rec.get('params') or {}).get('preset'))}) removed {_n(st.get('removed', 0))} of {_n(st.get('in', 0))} documents ({_pct(st.get('removed', 0), st.get('in', 0))}): their false positives are lost, their false negatives kept")
    return out


def render_source_card(run: RunInfo, src: dict, stats: dict, rem: dict) -> str:
    counts = _source_counts(run, stats, rem, src["name"])
    s_stats = stats["sources"].get(src["name"], {})
    langs = [lang for lang in (s_stats.get("languages") or {}) if LANG_CODE.match(lang)] or [lang for lang in src.get("languages") or [] if LANG_CODE.match(lang)]
    data = card_data(run, stats, [src], pretty_name=f"{run.lock.get('name', 'dataset')}: {src['name']}", expression=src.get("license") or "", documents=counts["kept"], languages=langs)
    L = [f"# Source {md_escape(src['name'])} of {md_escape(run.lock.get('name', 'dataset'))}", ""]
    if src.get("description"):
        L += [md_escape(src["description"]), ""]
    L += ["## License", ""]
    L.append(f"- **License**: {md_code(src.get('license'))}" + (f": {md_link(src['license_url'], src['license_url'])}" if src.get("license_url") else ""))
    if src.get("license_override"):
        L.append(f"- **Classified by override**: {md_escape(src['license_override'].get('justification'))}")
    for key in ("attribution", "citation"):
        if src.get(key):
            L.append(f"- **{key.capitalize()}**: {md_escape(src[key])}")
    L += ["", "## Provenance", ""]
    L += _collection_lines(run, src, counts, full=True)
    L += ["", "## Documents", ""]
    L.append(f"- **Read**: {_n(counts['read']) if counts['read'] is not None else '?'}")
    L.append(f"- **Kept in `data/`**: {_n(counts['kept'])} ({_n(s_stats.get('chars', 0))} characters; {_n(s_stats.get('with_url', 0))} with a URL)")
    L.append(f"- **Removed**: {_n(counts['removed_total'])}" + (" (read = kept + removed)" if counts["balanced"] else " (read != kept + removed: see the ledgers)"))
    if counts["removed"]:
        L += ["", "Removals by node and reason:", ""]
        L += _table(["node: reason", "documents"], _removal_rows(counts))
    if s_stats.get("languages"):
        L += ["", "Languages of the kept documents:", ""]
        L += _table(["language", "documents"], [[md_code(k), _n(v)] for k, v in s_stats["languages"].items()])
    L += ["", "## Changes to the text", ""]
    L += [f"- {md_code(c['node'])} ({md_escape(c['impl'])}): {md_escape(c['what'])}" for c in text_changes(run, src["name"])]
    return _card_text(data, "\n".join(L))


def _card_text(data, body: str) -> str:
    body = re.sub(r"\n{3,}", "\n\n", body.strip())
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"


# ------------------------------------------------------------------------------------ writing
def croissant_meta(run: RunInfo, stats: dict, languages: list[str], expression: str, url: str | None = None) -> dict:
    in_chain = [s for s in run.sources if s["name"] in run.chain]
    urls = sorted({s["license_url"] for s in in_chain if s.get("license_url")}) or [f"https://spdx.org/licenses/{k}.html" for k in license_ids(expression)]
    dates = _retrieved(run)
    dump_dates = sorted({str((s.get("resolved") or {}).get("identity", {}).get("date")) for s in in_chain if (s.get("resolved") or {}).get("identity", {}).get("date")})
    published = dates[-1][:10] if dates else (f"{dump_dates[-1][:4]}-{dump_dates[-1][4:6]}-{dump_dates[-1][6:8]}" if dump_dates and re.fullmatch(r"\d{8}", dump_dates[-1]) else None)
    fp = (run.provenance.get("output") or {}).get("fingerprint", "")[:12]
    major = dump_dates[-1] if dump_dates and re.fullmatch(r"[1-9]\d*", dump_dates[-1]) else "0"
    derived = sorted({redact_url(u) for s in in_chain for u in ((s.get("resolved") or {}).get("urls") or {}).values()} | {s["homepage"] for s in in_chain if s.get("homepage")})
    return {
        "name": run.lock.get("name", "dataset"),
        "description": (run.lock.get("description") or "") + f" {stats['documents']:,} documents from {', '.join(s['name'] for s in in_chain)}; license {expression}.",
        "license": urls,
        # Where the dataset is published; until then the first source's homepage stands in.
        "url": url or next((s["homepage"] for s in in_chain if s.get("homepage")), "https://spdx.org/licenses/"),
        "creator": [{"@type": "sc:Organization", "name": (s.get("attribution") or s["name"]).split(".")[0], **({"url": s["homepage"]} if s.get("homepage") else {})} for s in in_chain],
        "datePublished": published,
        "version": f"{major}.0.0+{fp}" if fp else None,  # semver: the newest dump date, build = data fingerprint
        "citeAs": " ".join([f"{run.lock.get('name', 'dataset')}, built with grist-pipeline {run.provenance.get('pipeline_version', '?')} (data fingerprint {fp or '?'}) from: {', '.join(s['name'] for s in in_chain)}."] + [s["citation"] for s in in_chain if s.get("citation")]),
        "inLanguage": languages,
        "keywords": ["language-modeling", "pretraining", *(s["name"] for s in in_chain)],
        "wasDerivedFrom": derived,
    }


def write_cards(out_dir: str | Path, *, url: str | None = None, validate: bool = False) -> dict:
    """Write ATTRIBUTION.md (+ its .tsv.gz), README.md, cards/<source>.md and croissant.json from
    ``<out>`` alone; return what was written and measured. ``validate``: also check
    croissant.json with mlcroissant (slow import). ``url``: where the dataset is published
    (croissant.json's ``url``)."""
    from pipeline.audit.attribution import write_attribution

    attribution = write_attribution(out_dir)  # first: the README lists the files it writes
    run = load_run(out_dir)
    out = run.out_dir
    stats = measure(out)
    tokens = token_info(out)
    rem = removals(run)
    in_chain = [s for s in run.sources if s["name"] in run.chain]
    expression = run.licenses.get("output_license") or " AND ".join(sorted({s["license"] for s in in_chain}))
    languages = _languages(stats, in_chain)
    data = card_data(run, stats, in_chain, pretty_name=run.lock.get("name", "dataset"), expression=expression, documents=stats["documents"], languages=languages)
    add_dataset_info(data, run, stats, tokens)
    storage.atomic_write_text(out / "README.md", _card_text(data, render_readme(run, stats, tokens, rem, data)))
    written = [attribution.name, "README.md"]
    cards_dir = out / "cards"
    for src in in_chain:
        storage.atomic_write_text(cards_dir / f"{src['name']}.md", render_source_card(run, src, stats, rem))
        written.append(f"cards/{src['name']}.md")
    for stale in sorted(cards_dir.glob("*.md")) if cards_dir.is_dir() else []:
        if f"cards/{stale.name}" not in written:
            stale.unlink()
    token_files = {}
    if tokens:
        for split, info in tokens["splits"].items():
            files = [out / "tokens" / sh["file"] for sh in info["shards"]]
            token_files[split] = (files, _arrow_schema(files[0]))
    doc = croissant.build(croissant_meta(run, stats, languages, expression, url), out, data_shards(out), data_schema(out), {f: field_description(f) for f in stats["columns"]}, token_files)
    storage.atomic_write_text(out / "croissant.json", croissant.dumps(doc))
    written.append("croissant.json")
    result = {"written": written, "stats": stats, "license": data.license, "croissant_warnings": None}
    if validate:
        result["croissant_warnings"] = croissant.validate(out / "croissant.json")
    return result


def write_licenses(out_dir: Path, manifest) -> bool:
    """``<out>/licenses.json`` = ``pipeline.audit.licenses.assess(manifest).to_dict()``, so cards can be
    regenerated from ``<out>`` alone. False when the licenses module is not available."""
    try:
        from pipeline.audit.licenses import assess
    except ImportError:
        return False
    storage.atomic_write_json(Path(out_dir) / "licenses.json", {**assess(manifest).to_dict(), "assessed": True})
    return True


def write_run_docs(out_dir: Path, manifest, console=None) -> dict:
    """What the runner calls after provenance: licenses.json, the cards, the HTML report."""
    out_dir = Path(out_dir)
    write_licenses(out_dir, manifest)
    result = write_cards(out_dir)
    from pipeline.audit.report import build_report

    result["report"] = str(build_report(out_dir))
    if console is not None:
        console.log(f"wrote {', '.join(result['written'])}" + (" and report/" if "report" in result else "") + f" in {out_dir}")
    return result
