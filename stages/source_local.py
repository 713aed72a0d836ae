"""Source ``local``: files on this machine (paths or globs of jsonl, json, parquet, arrow, txt,
or MediaWiki XML dumps). Globs are relative to the manifest's folder. One partition per file.

``resolve()`` hashes every file (sha256), so editing an input re-runs what depends on it.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline import http, storage
from pipeline.errors import SourceError, StageError
from pipeline.formats import records as rec_fmt
from pipeline.manifest import SourceConfig
from pipeline.stage import DOC_SCHEMA, NodeContext, RunContext, SourceStage, removed_rows

Format = Literal["auto", "jsonl", "json", "parquet", "arrow", "txt", "mediawiki-xml"]


class RecordFields(SourceConfig):
    """Fields shared by sources that read record files."""

    format: Format = "auto"
    text_field: str = "text"
    id_field: str | None = None
    title_field: str | None = None
    url_field: str | None = None
    txt_mode: Literal["file", "line"] = Field("file", description="txt: one document per file or per line")
    wiki: str | None = Field(None, description="mediawiki-xml: id prefix (default: the dump's dbname)")


class LocalConfig(RecordFields):
    kind: Literal["local"]
    paths: list[str] = Field(min_length=1)


class LocalSource(SourceStage):
    name = "local"
    version = "1"
    Config = LocalConfig
    code_deps = ("pipeline.formats.records", "pipeline.formats.mediawiki_xml")

    def _files(self, rctx: RunContext) -> list[Path]:
        base = Path(rctx.manifest.path).parent if rctx.manifest is not None else Path.cwd()
        files: list[Path] = []
        for pattern in self.params.paths:
            full = pattern if Path(pattern).is_absolute() else str(base / pattern)
            matched = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
            if not matched:
                raise SourceError(f"no file matches {pattern!r}", where=f"sources.{self.params.name}.paths", hint=f"paths are relative to {base}")
            files.extend(matched)
        return files

    def resolve(self, rctx: RunContext) -> dict:
        files = self._files(rctx)
        identity = [{"name": f.name, "size": f.stat().st_size, "sha256": http.file_digests(f)["sha256"]} for f in files]
        return {"identity": {"files": identity}, "paths": [str(f) for f in files]}

    def run(self, ctx: NodeContext) -> dict:
        paths = [Path(p) for p in ctx.resolved["paths"]]
        read_files(self, ctx, paths)
        return {"files": len(paths)}


def read_files(stage: SourceStage, ctx: NodeContext, paths: list[Path]) -> None:
    """One task per file: record files become document parts, dumps become raw-page parts."""
    from stages.source_wikimedia import parse_dump_task

    cfg = stage.params
    tasks = []
    for i, path in enumerate(paths):
        fmt = cfg.format if cfg.format != "auto" else rec_fmt.detect_format(path.name)
        out, removed = str(ctx.part_path(i)), str(ctx.removed_path(i))
        if fmt == "mediawiki-xml":
            from pipeline.formats import mediawiki_xml as mx

            header = mx.read_header(path, None)
            wiki = cfg.wiki or header.get("dbname") or cfg.name
            base = header.get("article_base") or mx.wiki_article_base(wiki)
            tasks.append((parse_dump_task, (str(path), 0, None, wiki, cfg.name, cfg.license, base, None, stage.node, out, removed)))
        else:
            fields = {"text": cfg.text_field, "id": cfg.id_field, "title": cfg.title_field, "url": cfg.url_field}
            tasks.append((read_records_task, (str(path), fmt, cfg.txt_mode, fields, cfg.name, cfg.license, stage.node, out, removed)))
    ctx.run_tasks(_dispatch, tasks, desc="read files")


def _dispatch(fn, args) -> dict:
    return fn(*args)


def read_records_task(path: str, fmt: str, txt_mode: str, fields: dict, source: str, license: str, node: str, out_path: str, removed_path: str) -> dict:
    p = Path(path)
    cols: dict[str, list] = {n: [] for n in DOC_SCHEMA.names}
    errors: list[tuple[str, str, str]] = []
    try:
        for n, (status, rec) in enumerate(rec_fmt.iter_records(p, fmt, txt_mode)):
            default_id = f"{source}/{p.name}" if (fmt == "txt" and txt_mode == "file") else f"{source}/{p.name}:{n}"
            if status == "error":
                errors.append((default_id, rec, ""))
                continue
            text = rec.get(fields["text"])
            if not isinstance(text, str):
                errors.append((default_id, "parse:missing-text-field", str(rec)[:2000]))
                continue
            doc_id = rec.get(fields["id"]) if fields.get("id") else None
            cols["id"].append(f"{source}/{doc_id}" if doc_id is not None else default_id)
            cols["source"].append(source)
            cols["license"].append(license)
            cols["title"].append(_opt_str(rec.get(fields["title"])) if fields.get("title") else (p.stem if fmt == "txt" and txt_mode == "file" else None))
            cols["url"].append(_opt_str(rec.get(fields["url"])) if fields.get("url") else None)
            cols["timestamp"].append(None)
            cols["revision_id"].append(None)
            cols["text"].append(text)
    except UnicodeDecodeError as exc:
        raise StageError(f"file is not UTF-8 text ({exc})", where=path, hint="convert it to UTF-8") from None
    except (OSError, EOFError, ValueError, pa.ArrowInvalid) as exc:
        raise StageError(f"cannot read file ({type(exc).__name__}: {exc})", where=path, hint="check that the file is complete and of the declared format") from None
    table = pa.table(cols, schema=DOC_SCHEMA)
    err = pa.table({"id": [e[0] for e in errors], "source": [source] * len(errors), "title": [None] * len(errors), "text": [e[2] for e in errors]})
    removed = removed_rows(err, node, [e[1] for e in errors], [{"file": p.name} for _ in errors])
    storage.write_parquet(table, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    reasons: dict[str, int] = {}
    for e in errors:
        reasons[e[1]] = reasons.get(e[1], 0) + 1
    return {"in": table.num_rows + len(errors), "out": table.num_rows, "removed": len(errors), "removed_by_reason": reasons}


def _opt_str(value) -> str | None:
    return None if value is None else str(value)
