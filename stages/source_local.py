"""Source ``local``: files on this machine (paths or globs of jsonl, json, parquet, arrow, txt,
csv, tsv, MediaWiki XML dumps, or WARC/WET web archives). Globs are relative to the manifest's folder. One partition per file,
except that large uncompressed JSONL / line-text files are cut into byte ranges and Parquet files
into row-group ranges of about ``partition_bytes`` (a partition is what one task holds in memory;
document ids and order do not depend on the cut).

``resolve()`` hashes every file (sha256), so editing an input re-runs what depends on it.

Fine-tuning sources (``task: classification`` or ``sft``) add string columns: ``label`` (from
``label_field``, or ``label_value`` for a whole file), or ``instruction`` + ``response`` (with
``text`` = instruction + "\n" + response, so cleaning and filtering stages still see the text).
A record without them goes to the ledger (``parse:missing-label`` ...), never silently away.
``keep_fields`` carries other record fields as string columns (a split the data already has,
for ``finetune_data``'s ``split_field``).

CSV/TSV files (``.csv``, ``.tsv``/``.tab``, or ``format: csv|tsv``) need a header row; their
columns are the record fields (``text_field``, ``id_field``, ``label_field`` ... name them), all
read as strings by ``pyarrow.csv``; quoted fields may hold newlines; UTF-8 with or without a BOM.
A row with too many or too few fields goes to the ledger (``parse:invalid-csv``, with its row
number); bytes that are not UTF-8 stop the run naming the file.

WARC/WET files (``.warc``, ``.warc.gz``, ``.wet``, ``.wet.gz``, or ``format: warc|wet``) give web
records (``WEB_RECORD_SCHEMA``, what ``html_extract`` reads): one row per ``response`` /
``resource`` record (the HTTP body in ``html``) or WET ``conversion`` record (its text in
``text``), id ``<source>/<record uuid>``. Other records (request, metadata, warcinfo, revisit)
are not documents: counted in the task's stats, not yielded. Damaged stretches (a gzip member cut
short, a lying Content-Length, junk, a record over ``max_record_bytes``) go to the ledger with
the file and offset; a file with no WARC record at all stops the run naming it. One task per
file, streamed: memory does not grow with the file (docs/warc.md).
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from pipeline.common import storage
from pipeline.common.errors import SourceError, StageError
from pipeline.core.manifest import SourceConfig
from pipeline.core.stage import DOC_SCHEMA, WEB_RECORD_SCHEMA, NodeContext, RunContext, SourceStage, append_web_record, removed_rows
from pipeline.exec import task_sync
from pipeline.io import remote
from pipeline.io.formats import records as rec_fmt
from pipeline.io.formats import warc as warc_fmt
from pipeline.io.urls import redact_url

# Columns that rows of a fine-tuning source carry beside DOC_SCHEMA's (all strings).
TASK_COLUMNS = {"pretrain": [], "classification": ["label"], "sft": ["instruction", "response"]}

Format = Literal["auto", "jsonl", "json", "parquet", "arrow", "txt", "csv", "tsv", "mediawiki-xml", "warc", "wet"]
WEB_FORMATS = ("warc", "wet")


class RecordFields(SourceConfig):
    """Fields shared by sources that read record files."""

    format: Format = "auto"
    text_field: str = "text"
    id_field: str | None = None
    title_field: str | None = None
    url_field: str | None = None
    txt_mode: Literal["file", "line"] = Field("file", description="txt: one document per file or per line")
    wiki: str | None = Field(None, description="mediawiki-xml: id prefix (default: the dump's dbname)")
    # Fine-tuning sources: the rows carry `label`, or `instruction` + `response`, beside `text`.
    task: Literal["pretrain", "classification", "sft"] = Field("pretrain", description="pretrain: text only; classification: + label; sft: + instruction, response")
    label_field: str | None = Field(None, description="classification: the record field holding the label (any scalar, kept as a string)")
    label_value: str | None = Field(None, description="classification: one label for every record of this source (files labeled by name, e.g. pos.txt)")
    instruction_field: str | None = Field(None, description="sft: the record field holding the instruction (prompt)")
    response_field: str | None = Field(None, description="sft: the record field holding the response (the only tokens with loss)")
    keep_fields: list[str] = Field(default_factory=list, description="other record fields carried as string columns of the same name (e.g. a split field for finetune_data's split_field); a missing field is null")
    partition_bytes: int = Field(
        32 * 2**20,
        ge=2**12,
        description="cut uncompressed JSONL / line-text files into byte ranges, Parquet files into row-group ranges, of about this size: one partition (task) each",
    )
    max_record_bytes: int = Field(
        warc_fmt.DEFAULT_MAX_PAYLOAD,
        ge=2**10,
        description="warc/wet: a record whose block is larger goes to the ledger (warc:too-large) without being read into memory",
    )

    @model_validator(mode="after")
    def _task_fields(self):
        if self.task == "classification" and (self.label_field is None) == (self.label_value is None):
            raise ValueError("task: classification needs exactly one of label_field (the record field with the label) or label_value (one label for the whole source)")
        if self.task == "sft" and not (self.instruction_field and self.response_field):
            raise ValueError("task: sft needs instruction_field and response_field (the record fields of the prompt and of the response)")
        if self.task != "classification" and (self.label_field or self.label_value):
            raise ValueError(f"label_field / label_value are for task: classification (this source has task: {self.task})")
        if self.task != "sft" and (self.instruction_field or self.response_field):
            raise ValueError(f"instruction_field / response_field are for task: sft (this source has task: {self.task})")
        taken = set(DOC_SCHEMA.names) | set(TASK_COLUMNS[self.task])
        clash = [f for f in self.keep_fields if f in taken]
        if clash or len(set(self.keep_fields)) != len(self.keep_fields):
            raise ValueError(f"keep_fields must not repeat nor name a document column ({', '.join(sorted(taken))}): {clash or self.keep_fields}")
        return self


class LocalConfig(RecordFields):
    kind: Literal["local"]
    paths: list[str] = Field(min_length=1)


class LocalSource(SourceStage):
    name = "local"
    version = "1"
    Config = LocalConfig
    code_deps = ("pipeline.io.formats.records", "pipeline.io.formats.mediawiki_xml", "pipeline.io.formats.warc")

    def _files(self, rctx: RunContext) -> list[Path]:
        base = Path(rctx.manifest.path).parent if rctx.manifest is not None else Path.cwd()
        files: list[Path] = []
        for pattern in self.params.paths:
            if remote.is_url(pattern):  # s3://bucket/dir/*.jsonl: copied into the cache, pinned by sha256
                matches = remote.expand_inputs(pattern)
                if not matches:
                    raise SourceError(f"no file matches {redact_url(pattern)!r}", where=f"sources.{self.params.name}.paths", hint="check the bucket, prefix and credentials")
                files.extend(remote.fetch_input(url, rctx.cache_dir)[0] for url in matches)
                continue
            full = os.path.expanduser(pattern) if Path(os.path.expanduser(pattern)).is_absolute() else str(base / pattern)
            matched = sorted(Path(os.path.abspath(p)) for p in glob.glob(full, recursive=True) if not Path(p).is_dir())
            if not matched:
                raise SourceError(f"no file matches {pattern!r}", where=f"sources.{self.params.name}.paths", hint=f"paths are relative to {base}")
            for path in matched:
                _check_readable(path, f"sources.{self.params.name}.paths: {pattern}")
            files.extend(matched)
        return files

    def resolve(self, rctx: RunContext) -> dict:
        files = self._files(rctx)
        _log_files(rctx, self.params.name, files)
        identity = [{"name": f.name, "size": f.stat().st_size, "sha256": storage.file_digests(f)["sha256"]} for f in files]
        return {"identity": {"files": identity}, "paths": [str(f) for f in files]}

    def run(self, ctx: NodeContext) -> dict:
        paths = [Path(p) for p in ctx.resolved["paths"]]
        read_files(self, ctx, paths)
        return {"files": len(paths)}


# Kernel pseudo-filesystems: their "files" are not data (and /dev holds devices).
SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _check_readable(path: Path, where: str) -> None:
    """Paths are the user's own and may point anywhere, but only at regular files: not devices,
    pipes or sockets (a read could block or never end), not /proc, /sys or /dev."""
    real = Path(os.path.realpath(path))
    system = next((root for root in SYSTEM_ROOTS if real == root or root in real.parents), None)
    if system is not None:
        raise SourceError(f"{path} is under {system}, a kernel pseudo-filesystem, not a data file", where=where, hint="list the data files to read (JSONL, Parquet, text, dumps)")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}", where=where, hint="check that the file exists and that you may read it") from None
    if not stat.S_ISREG(mode):
        kind = "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise SourceError(f"{path} is {kind}, not a regular file", where=where, hint="list regular data files only")
    if not os.access(real, os.R_OK):
        raise SourceError(f"cannot read {path}: permission denied", where=where, hint="check the file's permissions")


def _log_files(rctx: RunContext, source: str, files: list[Path]) -> None:
    """Say which files a run reads, as absolute paths, and which lie outside the manifest's folder
    (allowed: they are the user's own; provenance.json lists every one)."""
    base = Path(rctx.manifest.path).parent.resolve() if rctx.manifest is not None else Path.cwd().resolve()
    shown = [str(Path(os.path.realpath(f))) for f in files]
    more = f" … and {len(shown) - 5} more (all in provenance.json)" if len(shown) > 5 else ""
    rctx.console.log(f"\\[{source}] reading {len(files)} file(s): {', '.join(shown[:5])}{more}", highlight=False)
    outside = [s for s in shown if Path(s) != base and base not in Path(s).parents and not s.startswith(str(rctx.cache_dir))]
    if outside:
        rctx.console.log(f"\\[{source}] {len(outside)} of them outside the manifest's folder {base}: {', '.join(outside[:3])}{' …' if len(outside) > 3 else ''}", highlight=False)


def read_files(stage: SourceStage, ctx: NodeContext, paths: list[Path]) -> None:
    """One task per file, or per piece of a large file: record files become document parts,
    dumps become raw-page parts."""
    from stages.source_wikimedia import parse_dump_task

    cfg = stage.params
    pieces = []  # (file number, path, fmt, span or None): a file listed twice is read twice, numbered alike
    fmts = [cfg.format if cfg.format != "auto" else detect_format(path.name) for path in paths]
    web = [f in WEB_FORMATS for f in fmts]
    if any(web) and not all(web):
        other = paths[web.index(False)].name
        raise StageError(
            "a source mixes WARC/WET files with other files: web records and documents have different columns",
            where=f"sources.{cfg.name}: {other}",
            hint="give the WARC/WET files a source of their own",
        )
    if any(web):
        _read_web_files(stage, ctx, paths, fmts)
        return
    for file_no, (path, fmt) in enumerate(zip(paths, fmts)):
        if fmt == "mediawiki-xml" and cfg.task != "pretrain":
            raise StageError(
                f"task: {cfg.task} needs record files (jsonl, json, parquet, arrow, txt, csv, tsv), not a MediaWiki dump",
                where=f"sources.{cfg.name}: {path.name}",
                hint="extract the dump's text with a pretraining manifest first, then label it",
            )
        pieces.extend((file_no, path, fmt, span) for span in _spans(path, fmt, cfg))
    firsts = _first_records(ctx, pieces)
    tasks = []
    for i, ((_, path, fmt, span), (first, first_line)) in enumerate(zip(pieces, firsts)):
        out, removed = str(ctx.part_path(i)), str(ctx.removed_path(i))
        if fmt == "mediawiki-xml":
            from pipeline.io.formats import mediawiki_xml as mx

            header = mx.read_header(path, None)
            wiki = cfg.wiki or header.get("dbname") or cfg.name
            base = header.get("article_base") or mx.wiki_article_base(wiki)
            tasks.append((parse_dump_task, (str(path), 0, None, wiki, cfg.name, cfg.license, base, None, stage.node, out, removed, True)))
        else:
            fields = {"text": cfg.text_field, "id": cfg.id_field, "title": cfg.title_field, "url": cfg.url_field}
            if cfg.keep_fields:
                fields["keep"] = list(cfg.keep_fields)
            labels = {"task": cfg.task, "label": cfg.label_field, "label_value": cfg.label_value, "instruction": cfg.instruction_field, "response": cfg.response_field}
            piece = {"span": list(span), "first": first, "first_line": first_line} if span else None
            tasks.append((read_records_task, (str(path), fmt, cfg.txt_mode, fields, cfg.name, cfg.license, stage.node, out, removed, labels, piece)))
    ctx.run_tasks(_dispatch, tasks, desc="read files")


def detect_format(name: str) -> str:
    """The format of a file from its name: WARC/WET archives here, the rest by records.py."""
    low = name.lower()
    if low.endswith((".wet", ".wet.gz")):
        return "wet"
    if low.endswith((".warc", ".warc.gz")):
        return "warc"
    return rec_fmt.detect_format(name)


def _spans(path: Path, fmt: str, cfg) -> list[tuple[int, int] | None]:
    """The pieces of one file: [None] (the whole file) unless it is large and can be cut."""
    if fmt == "mediawiki-xml" or not rec_fmt.splittable(path, fmt, cfg.txt_mode) or path.stat().st_size <= cfg.partition_bytes:
        return [None]
    spans = rec_fmt.row_group_spans(path, cfg.partition_bytes) if fmt == "parquet" else rec_fmt.line_spans(path, cfg.partition_bytes)
    return [None] if len(spans) == 1 else list(spans)


def _first_records(ctx: NodeContext, pieces: list[tuple[int, Path, str, tuple[int, int] | None]]) -> list[tuple[int, int]]:
    """For each piece, how many records of its file come before it (ids are ``file:n``) and the
    number of its first line (for the ledger): a counting phase over every piece but the last of
    each file, in parallel."""
    last = {file_no: i for i, (file_no, *_) in enumerate(pieces)}
    todo = [(i, path, fmt, span) for i, (file_no, path, fmt, span) in enumerate(pieces) if span is not None and last[file_no] != i]
    counts: dict[int, dict] = {}
    if todo:
        results = ctx.run_tasks(count_records_task, [(str(path), fmt, span[0], span[1]) for _, path, fmt, span in todo], desc="count records", phase="count")
        counts = {i: r for (i, *_), r in zip(todo, results)}
    firsts, seen = [], {}
    for i, (file_no, _, _, span) in enumerate(pieces):
        records, lines = seen.get(file_no, (0, 0))
        firsts.append((records, lines + 1) if span is not None else (0, 1))
        done = counts.get(i, {})
        seen[file_no] = (records + done.get("records", 0), lines + done.get("lines", 0))
    return firsts


def count_records_task(path: str, fmt: str, start: int, end: int) -> dict:
    records, lines = rec_fmt.count_records(Path(path), fmt, start, end)
    return {"records": records, "lines": lines}


def _dispatch(fn, args) -> dict:
    return fn(*args)


def read_records_task(path: str, fmt: str, txt_mode: str, fields: dict, source: str, license: str, node: str, out_path: str, removed_path: str, labels: dict | None = None, piece: dict | None = None) -> dict:
    """Read one file, or with ``piece`` ({"span": [a, b], "first": n}) one piece of it whose first
    record is the file's record n."""
    p = Path(path)
    span = tuple(piece["span"]) if piece else None
    first = piece["first"] if piece else 0
    first_line = piece.get("first_line", 1) if piece else 1
    labels = labels or {"task": "pretrain"}
    task = labels["task"]
    schema = DOC_SCHEMA
    keep = fields.get("keep") or []
    for name in [*TASK_COLUMNS[task], *keep]:
        schema = schema.append(pa.field(name, pa.string()))
    cols: dict[str, list] = {n: [] for n in schema.names}
    errors: list[tuple[str, str, str, dict]] = []  # id, reason, text, where in the file
    try:
        for n, (status, rec, where) in enumerate(rec_fmt.iter_records(p, fmt, txt_mode, span, first_line), start=first):
            default_id = f"{source}/{p.name}" if (fmt == "txt" and txt_mode == "file") else f"{source}/{p.name}:{n}"
            if status == "error":
                errors.append((default_id, rec, "", where))
                continue
            doc_id = rec.get(fields["id"]) if fields.get("id") else None
            doc_id = f"{source}/{doc_id}" if doc_id is not None else default_id
            if task == "sft":
                instruction, response = rec.get(labels["instruction"]), rec.get(labels["response"])
                bad = "parse:missing-instruction" if not isinstance(instruction, str) else "parse:missing-response" if not isinstance(response, str) else None
                if bad:
                    errors.append((doc_id, bad, str(rec)[:2000], where))
                    continue
                text = instruction + "\n" + response  # the text later stages clean, filter and deduplicate
                cols["instruction"].append(instruction)
                cols["response"].append(response)
            else:
                text = rec.get(fields["text"])
                if not isinstance(text, str):
                    errors.append((default_id, "parse:missing-text-field", str(rec)[:2000], where))
                    continue
                if task == "classification":
                    label = labels["label_value"] if labels.get("label_value") is not None else _label(rec.get(labels["label"]))
                    if label is None:
                        errors.append((doc_id, "parse:missing-label", str(rec)[:2000], where))
                        continue
                    cols["label"].append(label)
            cols["id"].append(doc_id)
            cols["source"].append(source)
            cols["license"].append(license)
            cols["title"].append(_opt_str(rec.get(fields["title"])) if fields.get("title") else (p.stem if fmt == "txt" and txt_mode == "file" else None))
            cols["url"].append(_opt_str(rec.get(fields["url"])) if fields.get("url") else None)
            cols["timestamp"].append(None)
            cols["revision_id"].append(None)
            cols["text"].append(text)
            for name in keep:
                cols[name].append(_opt_str(rec.get(name)))
    except FileNotFoundError:
        if task_sync.in_mirrored_task():
            raise  # a worker without the runner's files: run_mirrored says what to do
        raise StageError("the file is gone (it was there when the run started)", where=path, hint="restore it, or run again to re-read the source") from None
    except (OSError, EOFError, ValueError, pa.ArrowInvalid) as exc:
        raise StageError(f"cannot read file ({type(exc).__name__}: {exc})", where=path, hint="check that the file is complete and of the declared format") from None
    table = pa.table(cols, schema=schema)
    err = pa.table({"id": [e[0] for e in errors], "source": [source] * len(errors), "title": [None] * len(errors), "text": [e[2] for e in errors]})
    removed = removed_rows(err, node, [e[1] for e in errors], [{"file": p.name, **e[3]} for e in errors])
    storage.write_parquet(table, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    reasons: dict[str, int] = {}
    for e in errors:
        reasons[e[1]] = reasons.get(e[1], 0) + 1
    return {"in": table.num_rows + len(errors), "out": table.num_rows, "removed": len(errors), "removed_by_reason": reasons}


def _label(value) -> str | None:
    """A scalar label as a string (1 -> "1", True -> "true"); None when missing, empty or not a scalar."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)) and str(value).strip():
        return str(value).strip()
    return None


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


# ---- WARC / WET ------------------------------------------------------------------------------

# A part is written a batch at a time: at most this many rows or payload bytes are held.
WEB_BATCH_ROWS = 2000
WEB_BATCH_BYTES = 32 * 2**20


def _read_web_files(stage: SourceStage, ctx: NodeContext, paths: list[Path], fmts: list[str]) -> None:
    """One task per WARC/WET file. (Per-record gzip files could be cut at member offsets into
    several tasks later; a whole-file gzip or a plain file cannot be cut without reading it.)"""
    cfg = stage.params
    if cfg.task != "pretrain":
        raise StageError(f"task: {cfg.task} needs record files (jsonl, json, parquet, arrow, txt), not WARC/WET files", where=f"sources.{cfg.name}", hint="extract the pages' text with a pretraining manifest first, then label it")
    tasks = [(read_warc_task, (str(path), cfg.name, cfg.license, stage.node, str(ctx.part_path(i)), str(ctx.removed_path(i)), cfg.max_record_bytes)) for i, path in enumerate(paths)]
    ctx.run_tasks(_dispatch, tasks, desc="read WARC files")


def read_warc_task(path: str, source: str, license: str, node: str, out_path: str, removed_path: str, max_record_bytes: int = warc_fmt.DEFAULT_MAX_PAYLOAD, backend: str = "fastwarc") -> dict:
    """Stream one WARC/WET file into a part of web records (written a batch at a time) and a
    ledger of its damaged stretches. Stats: documents in = kept + removed; every record by type."""
    p = Path(path)
    by_type: dict[str, int] = {}
    problems: list[warc_fmt.WarcProblem] = []
    crawl: str | None = None
    cols: dict[str, list] = {n: [] for n in WEB_RECORD_SCHEMA.names}
    held = 0
    kept = 0
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = pq.ParquetWriter(str(tmp), WEB_RECORD_SCHEMA, **storage.PARQUET_OPTIONS)

    def flush() -> None:
        nonlocal cols, held
        if cols["id"]:
            writer.write_table(pa.table(cols, schema=WEB_RECORD_SCHEMA), row_group_size=8192)
        cols, held = {n: [] for n in WEB_RECORD_SCHEMA.names}, 0

    try:
        for item in warc_fmt.iter_records(p, max_payload_bytes=max_record_bytes, backend=backend):
            if isinstance(item, warc_fmt.WarcProblem):
                problems.append(item)
                continue
            by_type[item.warc_type or "?"] = by_type.get(item.warc_type or "?", 0) + 1
            if item.warc_type == "warcinfo":
                crawl = (item.fields or {}).get("isPartOf") or crawl
            if item.warc_type not in warc_fmt.DOCUMENT_TYPES:
                continue  # request, metadata, warcinfo, revisit: not documents
            _add_web_row(cols, item, source, license, p.name, crawl)
            kept += 1
            held += len(item.payload or b"")
            if len(cols["id"]) >= WEB_BATCH_ROWS or held >= WEB_BATCH_BYTES:
                flush()
        flush()
        writer.close()
    except BaseException as exc:
        writer.close()
        tmp.unlink(missing_ok=True)
        if isinstance(exc, warc_fmt.NotWarc):
            raise SourceError(f"{p.name} is not a WARC/WET file (or is damaged before its first record): {exc}", where=path, hint="list WARC/WET files only, or set the source's format to the files' real format") from None
        if isinstance(exc, FileNotFoundError):
            if task_sync.in_mirrored_task():
                raise
            raise StageError("the file is gone (it was there when the run started)", where=path, hint="restore it, or run again to re-read the source") from None
        if isinstance(exc, OSError):
            raise StageError(f"cannot read file ({type(exc).__name__}: {exc})", where=path, hint="check that the file is readable") from None
        raise
    os.replace(tmp, out)
    storage.write_parquet(_web_ledger(problems, source, node, p.name), Path(removed_path))
    reasons: dict[str, int] = {}
    for pr in problems:
        reasons[pr.reason] = reasons.get(pr.reason, 0) + 1
    return {"in": kept + len(problems), "out": kept, "removed": len(problems), "removed_by_reason": reasons, "warc_records_by_type": by_type}


def _add_web_row(cols: dict[str, list], rec, source: str, license: str, filename: str, crawl: str | None) -> None:
    uuid = rec.record_id or f"{filename}@{rec.offset}"
    append_web_record(cols, rec, doc_id=f"{source}/{uuid}", source=source, license=license, filename=filename, crawl=crawl)


def _web_ledger(problems: list, source: str, node: str, filename: str) -> pa.Table:
    """One ledger row per damaged stretch: the record's id when its header was read, else
    ``<source>/<file>@<offset>``; where it is (file, offset, length) in the signals."""
    ids = [f"{source}/{pr.record_id}" if pr.record_id else f"{source}/{filename}@{pr.offset}" for pr in problems]
    signals = [
        {
            "file": filename,
            "offset": pr.offset,
            "length": pr.length,
            "detail": pr.detail,
            **({"warc_type": pr.warc_type} if pr.warc_type else {}),
            **({"url": pr.url} if pr.url else {}),
            **pr.extra,
        }
        for pr in problems
    ]
    n = len(problems)
    table = pa.table({"id": ids, "source": [source] * n, "title": pa.nulls(n, pa.string()), "text": [""] * n})
    return removed_rows(table, node, [pr.reason for pr in problems], signals)
