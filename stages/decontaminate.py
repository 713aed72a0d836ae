"""Stage ``decontaminate``: drop (or flag) documents that contain items of evaluation sets.

Each evaluation set is a local file (jsonl, json, parquet, arrow, csv, txt: one item per line), a folder
written by ``datasets`` ``save_to_disk``, or a Hugging Face hub id read with ``datasets.load_dataset`` at a
pinned ``revision``; ``field`` (or ``fields``) names its text columns (a list value gives one item per
element: answer options). Items are indexed once (``pipeline/text/decontam.py``: word n-grams for spaced
scripts, character n-grams for Chinese, exact keys of normalized short items), then every partition is
matched in parallel.

A document is contaminated by a set when it shares at least ``min_ngram_matches`` distinct n-grams, or
``min_short_matches`` distinct short items (a whole line or sentence equal to the item), with it.
``action: drop`` removes it to the ledger with reason ``decontam:<set>`` (the first contaminating set in
``sets`` order) and signals ``{set, sets, ngram_matches, short_matches, row, kind, match}`` (``row``: the
item's row in its set; ``match``: the normalized text of the first matching key). ``action: flag`` keeps
every document and adds ``decontam`` (list of set names, empty when clean).

The sets are read in ``resolve()`` (a missing file, a missing text field, an empty set fail there, naming
the set) and their content is hashed into its identity: editing an evaluation file re-runs the node.
Figures and the choice of ``ngram_zh``: docs/decontamination.md.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.common import storage
from pipeline.common.errors import StageError
from pipeline.core.stage import NodeContext, RunContext, Stage, removed_rows
from pipeline.io.formats import records
from pipeline.text import decontam as dc

LOCAL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".arrow", ".feather", ".csv", ".tsv", ".txt", ".gz")


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.lower().endswith(LOCAL_SUFFIXES) or Path(path).expanduser().exists()


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the set's name: ledger reason decontam:<name>, card rows")
    path: str = Field(description="a local file or save_to_disk folder (relative to the manifest), or a hub dataset id")
    field: str | None = Field(None, description="the text field (a list value gives one item per element)")
    fields: list[str] | None = Field(None, description="several text fields (question, options ...): each is an item")
    split: str | None = Field(None, description="datasets split (a folder or hub id); default: test, or the only split")
    config: str | None = Field(None, description="hub dataset config")
    revision: str | None = Field(None, description="hub dataset commit sha or tag: required for a hub id")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", v):
            raise ValueError(f"set name {v!r}: use letters, digits, '_', '.', '-'")
        return v

    @model_validator(mode="after")
    def _check(self):
        if not self.field and not self.fields:
            raise ValueError(f"set {self.name!r}: name its text field ('field: question' or 'fields: [question, choices]')")
        if not _looks_local(self.path) and not self.revision:
            raise ValueError(f"set {self.name!r}: {self.path!r} is read as a hub dataset id and needs 'revision' (a commit sha or tag) so the run can be repeated; a local file needs a suffix or a ./ path")
        return self

    @property
    def text_fields(self) -> list[str]:
        return list(self.fields or []) + ([self.field] if self.field and self.field not in (self.fields or []) else [])


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sets: list[EvalSet] = Field(min_length=1, description="evaluation sets: [{name, path, field | fields, split?, config?, revision?}]")
    action: Literal["drop", "flag"] = Field("drop", description="drop: contaminated documents go to the ledger; flag: kept, with a decontam column")
    ngram_en: int = Field(13, ge=3, le=64, description="word n-gram length (spaced scripts)")
    ngram_zh: int = Field(13, ge=4, le=128, description="character n-gram length (Chinese, Japanese, Korean); measured in docs/decontamination.md")
    min_item_chars: int = Field(8, ge=1, description="short items (no n-gram) of at least this many normalized characters are matched by exact key against lines/sentences")
    min_ngram_matches: int = Field(1, ge=1, description="distinct n-grams shared with one set that make a document contaminated")
    min_short_matches: int = Field(1, ge=1, description="distinct short items of one set, each a whole line/sentence of the document, that make it contaminated")
    max_repeats: int = Field(10, ge=1, description="a key in more items of one set than this is template text (instructions, 'yes'): not indexed")
    t2s: bool = Field(True, description="fold Traditional to Simplified (OpenCC t2s per character) on both sides")

    @model_validator(mode="after")
    def _unique(self):
        names = [s.name for s in self.sets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"evaluation set names must be unique: {', '.join(dup)}")
        if len(names) > dc.MAX_SETS:
            raise ValueError(f"at most {dc.MAX_SETS} evaluation sets per node")
        return self

    def config(self) -> dc.Config:
        return dc.Config(ngram_en=self.ngram_en, ngram_zh=self.ngram_zh, min_item_chars=self.min_item_chars, max_repeats=self.max_repeats, t2s=self.t2s)


# ---------------------------------------------------------------- reading the sets


def _set_error(s: EvalSet, what: str, hint: str) -> StageError:
    return StageError(what, where=f"decontaminate set {s.name!r} ({s.path})", hint=hint)


def _local_path(s: EvalSet, base: Path) -> Path:
    p = Path(s.path).expanduser()
    return p if p.is_absolute() else base / p


def _pick_split(s: EvalSet, dd) -> object:
    splits = list(dd.keys())
    if s.split:
        if s.split not in splits:
            raise _set_error(s, f"no split {s.split!r}; it has: {', '.join(splits)}", "set 'split' to one of them")
        return dd[s.split]
    if "test" in splits:
        return dd["test"]
    if len(splits) == 1:
        return dd[splits[0]]
    raise _set_error(s, f"several splits ({', '.join(splits)}) and no 'split'", "set 'split' on the evaluation set")


def _rows(s: EvalSet, base: Path) -> tuple[list[dict], list[str], dict]:
    """The set's rows, the fields they have, and the identity of what was read."""
    if _looks_local(s.path):
        path = _local_path(s, base)
        if not path.exists():
            raise _set_error(s, f"{path} does not exist", f"paths are relative to {base}; a hub dataset id must not start with ./ or end with a file suffix")
        if path.is_dir():
            import datasets

            try:
                ds = datasets.load_from_disk(str(path))
            except Exception as exc:  # not a save_to_disk folder
                raise _set_error(s, f"{path} is not a datasets folder ({type(exc).__name__}: {exc})", "give a file (jsonl, json, parquet, arrow, csv, txt) or a folder written by save_to_disk") from None
            if isinstance(ds, datasets.DatasetDict):
                ds = _pick_split(s, ds)
            files = sorted(p for p in path.rglob("*") if p.is_file())
            ident = {"folder": path.name, "files": [{"name": str(f.relative_to(path)), "sha256": storage.file_digests(f)["sha256"]} for f in files], "split": s.split}
            return ds.to_list(), list(ds.column_names), ident
        ident = {"file": path.name, "size": path.stat().st_size, "sha256": storage.file_digests(path)["sha256"]}
        name = path.name.lower().removesuffix(".gz")
        if name.endswith((".csv", ".tsv")):
            import pyarrow.csv as pcsv

            try:
                table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter="\t" if name.endswith(".tsv") else ","))
            except pa.ArrowInvalid as exc:
                raise _set_error(s, f"cannot read the CSV: {exc}", "check the file") from None
            return table.to_pylist(), table.column_names, ident
        fmt = records.detect_format(str(path))
        rows, bad = [], 0
        try:
            for status, rec, _ in records.iter_records(path, fmt, txt_mode="line"):
                if status == "ok":
                    rows.append(rec)
                else:
                    bad += 1
        except (ValueError, pa.ArrowInvalid, OSError) as exc:
            raise _set_error(s, f"cannot read the file ({type(exc).__name__}: {exc})", "check the file's format") from None
        if bad and not rows:
            raise _set_error(s, f"none of its {bad} records could be read", "check the file's format")
        fields = sorted({k for r in rows[:1000] for k in r})
        return rows, fields, ident
    import datasets

    try:
        ds = datasets.load_dataset(s.path, s.config, split=s.split or "test", revision=s.revision)
    except Exception as exc:
        raise _set_error(s, f"cannot load the hub dataset ({type(exc).__name__}: {exc})", "check the id, config, split and revision, and network access to the hub") from None
    ident = {"hub": s.path, "config": s.config, "split": s.split or "test", "revision": s.revision, "fingerprint": getattr(ds, "_fingerprint", None)}
    return ds.to_list(), list(ds.column_names), ident


def _texts(value) -> list[str]:
    """The item texts of one field value: a string, or the strings in a list / dict (answer options)."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    return []


def load_set(s: EvalSet, base: Path) -> tuple[list[str], list[int], dict]:
    """(item texts, the row of each, identity) of one evaluation set; errors name the set."""
    rows, fields, ident = _rows(s, base)
    if not rows:
        raise _set_error(s, "the set is empty: no rows", "check the path and split")
    missing = [f for f in s.text_fields if f not in fields]
    if missing:
        raise _set_error(s, f"no field {', '.join(map(repr, missing))}; its fields are: {', '.join(map(str, fields)) or '(none)'}", "set 'field' (or 'fields') to the text fields")
    texts, rownums = [], []
    for i, row in enumerate(rows):
        for f in s.text_fields:
            for t in _texts(row.get(f)):
                texts.append(t)
                rownums.append(i)
    if not texts:
        raise _set_error(s, f"the set is empty: {len(rows)} rows, no text in {', '.join(s.text_fields)}", "check the path, split and field names")
    return texts, rownums, {"name": s.name, "rows": len(rows), "items": len(texts), **ident}


# ---------------------------------------------------------------- the stage


class Decontaminate(Stage):
    name = "decontaminate"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.decontam", "pipeline.text.minhash", "pipeline.io.formats.records")
    description = "benchmark decontamination: drops (or flags) documents sharing n-grams or short items with evaluation sets"

    def __init__(self, params, node):
        super().__init__(params, node)
        self._loaded: list[tuple[str, list[str], list[int]]] | None = None

    def resolve(self, rctx: RunContext) -> dict:
        """Read every set (fails here, naming the set) and pin its content."""
        base = Path(rctx.manifest.path).parent if getattr(rctx, "manifest", None) is not None and getattr(rctx.manifest, "path", None) else Path.cwd()
        loaded, identity = [], []
        for s in self.params.sets:
            texts, rows, ident = load_set(s, base)
            loaded.append((s.name, texts, rows))
            identity.append(ident)
        self._loaded = loaded
        return {"identity": {"sets": identity}}

    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        resolved = ctx.resolved if ctx.resolved and "identity" in ctx.resolved else None
        if self._loaded is None or resolved is None:
            resolved = self.resolve(ctx.run)
        cfg = p.config()
        index = dc.build_index(self._loaded, cfg)
        work = ctx.dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        index_path = work / "index.npz"
        index.save(index_path)
        names = [s.name for s in p.sets]
        ctx.provenance["decontaminate"] = {
            "sets": resolved["identity"]["sets"],
            "normalization": "NFKC, lower(), " + ("OpenCC t2s per character, " if p.t2s else "") + "whitespace/punctuation/symbols/control dropped",
            "keys": f"word {p.ngram_en}-grams, character {p.ngram_zh}-grams (windows at least half CJK), exact keys of short items >= {p.min_item_chars} chars against lines/sentences",
            "index": {s.name: s.as_dict() for s in index.summaries},
        }
        parts = [str(part) for inp in ctx.inputs for part in inp.parts]
        tasks = [(part, str(index_path), names, p.model_dump(mode="json"), self.node, str(ctx.part_path(i)), str(ctx.removed_path(i))) for i, part in enumerate(parts)]
        results = ctx.run_tasks(_match_task, tasks, desc="decontaminate")
        storage.remove_tree(work)
        by_set = {n: {"documents": 0, "first": 0} for n in names}
        for r in results:
            for n, v in r.get("decontam", {}).get("by_set", {}).items():
                for k in by_set[n]:
                    by_set[n][k] += v.get(k, 0)
        total = sum(r.get("decontam", {}).get("documents", 0) for r in results)
        docs_in = sum(r.get("in", 0) for r in results)
        summaries = {s.name: s for s in index.summaries}
        return {"decontam": {"action": p.action, "documents": total, "by_set": by_set, "index": {n: s.as_dict() for n, s in summaries.items()}}, "card": _card(p, by_set, summaries, total, docs_in, resolved["identity"]["sets"])}


def _card(p: Params, by_set: dict, summaries: dict, total: int, docs_in: int, idents: list[dict]) -> dict:
    verb = "dropped" if p.action == "drop" else "flagged"
    rows = [["action", f"{verb} ({total:,} of {docs_in:,} documents)"]]
    for s, ident in zip(p.sets, idents):
        b, sm = by_set[s.name], summaries[s.name]
        pin = f" @ {ident['revision']}" if ident.get("revision") else ""
        rows.append([f"{s.name} ({s.path}{pin})", f"{b['documents']:,} documents {verb}; {sm.items:,} items from {sm.rows:,} rows ({sm.ngram_items:,} by n-gram, {sm.short_items:,} short by exact key, {sm.too_short:,} too short to match)"])
    notes = [
        f"Documents sharing a word {p.ngram_en}-gram or a character {p.ngram_zh}-gram with an evaluation item, or a whole line/sentence equal to a short item (at least {p.min_item_chars} normalized characters), were {verb}.",
        "A document may match several sets; the ledger reason names the first (decontam:<set>). Keys found in more than "
        f"{p.max_repeats} items of one set (instructions, common options) are ignored as template text.",
    ]
    return {"title": "Decontamination", "rows": rows, "notes": notes}


@functools.lru_cache(maxsize=2)
def _index(path: str, names: tuple[str, ...]) -> dc.Index:
    return dc.Index.load(path, list(names))  # once per worker process


def _match_task(part: str, index_path: str, names: list[str], params: dict, node: str, out_path: str, removed_path: str) -> dict:
    p = Params.model_validate(params)
    index = _index(index_path, tuple(names))
    table = storage.read_parquet(Path(part))
    texts = [t or "" for t in table["text"].to_pylist()] if table.num_rows else []
    m = dc.match(index, texts, p.config())
    contaminated = (m.ngram_hits >= p.min_ngram_matches) | (m.short_hits >= p.min_short_matches)  # (docs, sets)
    any_set = contaminated.any(axis=1) if len(texts) else np.zeros(0, bool)
    by_set = {n: {"documents": int(contaminated[:, j].sum()), "first": 0} for j, n in enumerate(names)}
    first_set = np.argmax(contaminated, axis=1) if len(texts) else np.zeros(0, np.int64)
    for j in first_set[any_set].tolist():
        by_set[names[j]]["first"] += 1
    stats_extra = {"decontam": {"documents": int(any_set.sum()), "by_set": by_set}}
    if p.action == "flag":
        flags = [[n for j, n in enumerate(names) if contaminated[i, j]] for i in range(len(texts))]
        col = pa.array(flags, pa.list_(pa.string()))
        idx = table.schema.get_field_index("decontam")
        kept = table.set_column(idx, "decontam", col) if idx >= 0 else table.append_column("decontam", col)
        removed = removed_rows(table.slice(0, 0), node, [])
    else:
        mask = pa.array(~any_set, pa.bool_())
        kept = table.filter(mask)
        rows = np.flatnonzero(any_set).tolist()
        reasons, signals = [], []
        for i in rows:
            sets = [n for j, n in enumerate(names) if contaminated[i, j]]
            j = int(first_set[i])
            first = m.first[i] or {}
            reasons.append(f"decontam:{names[j]}")
            signals.append({"set": names[j], "sets": sets, "ngram_matches": int(m.ngram_hits[i, j]), "short_matches": int(m.short_hits[i, j]), "row": first.get("row"), "kind": first.get("kind"), "match": first.get("match"), "match_set": first.get("set")})
        removed = removed_rows(table.filter(pc.invert(mask)), node, reasons, signals)
    storage.write_parquet(kept, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    from pipeline.core.stage import doc_stats

    return {**stats_extra, **doc_stats(table.num_rows, kept, removed)}
