"""Lineage of a run's output: which nodes and sources ``<out>/data`` came from, and which
documents a packed token row came from.

Everything here reads ``<out>`` alone (``manifest.lock.yaml``, ``provenance.json``,
``licenses.json``, ``stages/``, ``data/``, ``tokens/``), so cards, attribution and reports can
be regenerated without the original manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from pipeline.common.errors import PipelineError
from pipeline.core.stage import readable_parts

DOC_FIELDS = ("id", "source", "license", "title", "url")
DUP_OF_RE = r" of \S+$"  # "dedup:exact dup of zhwiki/12" counts as "dedup:exact dup"


class OutputDirError(PipelineError):
    """A run's output folder lacks what is needed (not a `pipeline run` output, or incomplete)."""


@dataclass
class RunInfo:
    """What a finished run recorded about itself."""

    out_dir: Path
    lock: dict
    provenance: dict
    licenses: dict  # pipeline.audit.licenses.assess(manifest).to_dict(), or a fallback built from the lock
    output_node: str
    chain: list[str]  # the output node and every node upstream of it, in topological order

    @property
    def sources(self) -> list[dict]:
        return self.lock.get("sources", [])

    def node(self, name: str) -> dict:
        return self.provenance.get("nodes", {}).get(name, {})

    def stats(self, name: str) -> dict:
        path = self.out_dir / "stages" / name / "stats.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read(path: Path, loader):
    if not path.is_file():
        raise OutputDirError(f"{path.name} is missing", where=str(path.parent), hint="give the --out directory of a finished `pipeline run` (re-run it if it was interrupted)")
    try:
        return loader(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as exc:
        raise OutputDirError(f"{path.name} is not readable ({exc})", where=str(path), hint="re-run `pipeline run` to rewrite it") from None


def load_run(out_dir: str | Path) -> RunInfo:
    out_dir = Path(out_dir)
    if not (out_dir / "data").is_dir():
        raise OutputDirError("no data/ folder", where=str(out_dir), hint="give the --out directory of a finished `pipeline run`")
    lock = _read(out_dir / "manifest.lock.yaml", yaml.safe_load)
    prov = _read(out_dir / "provenance.json", json.loads)
    lic_path = out_dir / "licenses.json"
    licenses = _read(lic_path, json.loads) if lic_path.is_file() else fallback_licenses(lock)
    nodes = prov.get("nodes", {})
    output = output_node(lock, prov)
    return RunInfo(out_dir, lock, prov, licenses, output, upstream(nodes, output, _lock_order(lock)))


def fallback_licenses(lock: dict) -> dict:
    """The minimum when ``licenses.json`` was not written (pipeline.audit.licenses unavailable)."""
    sources = {s["name"]: {"license": s.get("license"), "license_url": s.get("license_url")} for s in lock.get("sources", [])}
    return {
        "sources": sources,
        "output_license": " AND ".join(sorted({s["license"] for s in sources.values() if s["license"]})),
        "obligations": [],
        "overrides": [],
        "conflicts": [],
        "attribution": [],
        "assessed": False,
    }


def _lock_order(lock: dict) -> list[str]:
    return [s["name"] for s in lock.get("sources", [])] + [s["name"] for s in lock.get("stages", [])]


def output_node(lock: dict, prov: dict) -> str:
    """The node exported to data/: its fingerprint is the export's (the runner passes it through)."""
    fp = (prov.get("output") or {}).get("fingerprint")
    for name, rec in prov.get("nodes", {}).items():
        if fp and rec.get("fingerprint") == fp:
            return name
    name = lock.get("output") or (lock["stages"][-1]["name"] if lock.get("stages") else lock["sources"][0]["name"])
    if name not in prov.get("nodes", {}):
        raise OutputDirError(f"output node {name!r} has no record in provenance.json", where="provenance.json", hint="re-run `pipeline run`")
    return name


def upstream(nodes: dict, target: str, order: list[str]) -> list[str]:
    """``target`` and its ancestors (by recorded ``inputs``), sources first, then in manifest order
    whenever that respects the edges."""
    seen: set[str] = set()
    stack = [target]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(nodes.get(name, {}).get("inputs") or [])
    rank = {n: i for i, n in enumerate(order)}
    done: list[str] = []
    pending = sorted(seen, key=lambda n: rank.get(n, len(rank)))
    while pending:  # Kahn's algorithm with manifest order as the tie-break
        ready = next(n for n in pending if all(i in done for i in nodes.get(n, {}).get("inputs") or []))
        done.append(ready)
        pending.remove(ready)
    return done


def removals(run: RunInfo) -> dict[str, dict[str, dict[str, int]]]:
    """``{source: {node: {reason: documents}}}`` over the ledgers of the nodes upstream of data/."""
    import polars as pl

    from pipeline.audit.inspect import ledger_frame

    out: dict[str, dict[str, dict[str, int]]] = {}
    present = [n for n in run.chain if (run.out_dir / "stages" / n / "removed").is_dir()]
    if not present:
        return out
    frame = pl.concat([ledger_frame(run.out_dir, n).select("source", "node", "reason") for n in present])
    counts = (
        frame.with_columns(pl.col("reason").str.replace(DUP_OF_RE, "").alias("reason"), pl.col("source").fill_null("unknown"))
        .group_by("source", "node", "reason")
        .agg(pl.len().alias("n"))
        .sort("source", "node", "reason")
        .collect()
    )
    for row in counts.iter_rows(named=True):
        out.setdefault(row["source"], {}).setdefault(row["node"], {})[row["reason"]] = row["n"]
    return out


# ----------------------------------------------------------------------------------- files
def data_shards(out_dir: Path) -> list[Path]:
    """The Arrow shards of ``<out>/data`` in order (``state.json`` lists them)."""
    state = Path(out_dir) / "data" / "state.json"
    if not state.is_file():
        raise OutputDirError("data/state.json is missing", where=str(Path(out_dir) / "data"), hint="re-run `pipeline run` to re-export data/")
    names = [f["filename"] for f in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
    return [Path(out_dir) / "data" / n for n in names]


def iter_batches(path: Path, columns: list[str] | None = None):
    """Record batches of one Arrow IPC stream shard, memory-mapped (nothing is copied)."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        for batch in reader:
            yield batch.select(columns) if columns else batch


def data_schema(out_dir: Path) -> pa.Schema:
    with pa.memory_map(str(data_shards(out_dir)[0])) as source:
        return pa.ipc.open_stream(source).schema


# ------------------------------------------------------------------------------- token rows
def _token_node(out_dir: Path) -> str | None:
    marker = out_dir / "tokens" / ".grist_publish.json"
    if marker.is_file():
        return Path(json.loads(marker.read_text(encoding="utf-8"))["from"]).parent.name
    return None


def _lookup(ids: list[str], tables) -> dict[str, dict]:
    found: dict[str, dict] = {}
    want = pa.array(ids, pa.string())
    for where, table in tables:
        if len(found) == len(ids):
            break
        cols = [c for c in DOC_FIELDS if c in table.schema.names]
        hits = table.select(cols).filter(pc.is_in(table["id"], value_set=want))
        for row in hits.to_pylist():
            found.setdefault(row["id"], {**{k: row.get(k) for k in DOC_FIELDS}, "found_in": where})
    return found


def _candidate_tables(out_dir: Path, node: str | None):
    for shard in data_shards(out_dir):
        for batch in iter_batches(shard):
            yield "data", pa.Table.from_batches([batch])
    if node:  # documents the tokenize node kept (its input may differ from data/'s node)
        for part in readable_parts(out_dir / "stages" / node):
            yield f"stages/{node}", pq.read_table(part, columns=[c for c in DOC_FIELDS if c in pq.read_schema(part).names])
    for ledger in sorted((out_dir / "stages").glob("*/removed/part-*.parquet")):
        yield f"ledger:{ledger.parent.parent.name}", pq.read_table(ledger, columns=["id", "source", "title"])


def trace(out_dir: str | Path, split: str, row: int) -> list[dict]:
    """The documents of token row ``row`` of ``<out>/tokens/<split>``, in stream order:
    ``id, source, license, title, url``, ``token_start``/``token_end`` (the slice of the row
    holding that document's tokens) and ``found_in`` (``data``, ``stages/<node>`` or
    ``ledger:<node>``)."""
    import datasets

    out_dir = Path(out_dir)
    tokens = out_dir / "tokens"
    if not (tokens / "dataset_dict.json").is_file():
        raise OutputDirError("no tokens/ in this output", where=str(out_dir), hint="add a tokenize stage to the manifest and run it")
    dd = datasets.load_from_disk(str(tokens))
    if split not in dd:
        raise OutputDirError(f"no split {split!r}", where=str(tokens), hint=f"splits: {', '.join(dd)}")
    if not 0 <= row < dd[split].num_rows:
        raise OutputDirError(f"row {row} out of range (0..{dd[split].num_rows - 1})", where=f"{tokens}/{split}")
    rec = dd[split][row]
    ids, starts, n = rec["doc_ids"], rec["doc_starts"], len(rec["input_ids"])
    found = _lookup(ids, _candidate_tables(out_dir, _token_node(out_dir)))
    out = []
    for i, doc_id in enumerate(ids):
        doc = found.get(doc_id, {**{k: None for k in DOC_FIELDS}, "id": doc_id, "found_in": None})
        out.append({**doc, "token_start": starts[i], "token_end": starts[i + 1] if i + 1 < len(ids) else n})
    return out
