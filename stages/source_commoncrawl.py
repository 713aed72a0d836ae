"""Source ``commoncrawl``: WARC (or WET) files of a Common Crawl crawl, whole, a head of N records,
or only the records a selection picks from the crawl's columnar URL index.

resolve(): ``crawl: latest`` becomes the newest crawl of the crawl list (``collinfo.json``) whose
paths file the mirror serves; the paths file (``warc.paths.gz``/``wet.paths.gz``) is fetched once
and cached (a crawl never changes once published: an explicit crawl resolves offline from the
cache), then ``files`` / ``max_files`` choose the files.

run(), one task per WARC file (with ``select``: per group of selected records, from one file or
several), resumable per task:

* whole files: downloaded into the cache, resumed with Range, pinned by size and sha256 after
  the first download (Common Crawl publishes no checksums) and verified on every reuse;
* ``max_records``: the file is read in growing ranged chunks from its start, gzip member by member,
  and reading stops at the N-th document record: only the bytes needed are moved;
* ``select``: the index Parquet files are scanned (a task each) with column projection and
  row-group pruning over ranged reads; then only the selected records are fetched by byte
  range (adjacent ranges coalesced), each checked to be one complete gzip member holding the
  record the index names, and cached pinned by (file, offset, length, sha256).

Rows follow ``WEB_RECORD_SCHEMA`` (raw HTTP payloads; ``html_extract`` makes documents of them),
ids ``cc/<crawl>/<record uuid>``. Damaged records (truncated members, lying lengths, oversized
payloads) go to the ledger with the reader's reason; they never stop the run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.common import storage
from pipeline.common.errors import ChecksumError, SourceError
from pipeline.core.manifest import SourceConfig
from pipeline.core.stage import WEB_RECORD_SCHEMA, NodeContext, RunContext, SourceStage, append_web_record, removed_rows
from pipeline.io import http
from pipeline.io.formats import cc_index, warc
from pipeline.io.urls import redact_url

DEFAULT_MIRROR = "https://data.commoncrawl.org"
COLLINFO_URL = "https://index.commoncrawl.org/collinfo.json"  # where Common Crawl lists its crawls
# Common Crawl's Terms of Use grant no license to the pages (pipeline/audit/licenses.py models the id).
LICENSE = "LicenseRef-CommonCrawl-ToU"
CRAWL_RE = re.compile(r"CC-MAIN-\d{4}-\d{2}")
DOC_TYPES = {"warc": ("response", "resource"), "wet": ("conversion",)}
HEAD_FIRST_CHUNK = 256 * 1024  # max_records: first ranged read; doubles up to HEAD_MAX_CHUNK
HEAD_MAX_CHUNK = 16 * 2**20


class FileSample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample: int = Field(gt=0, description="how many files of the paths list, drawn at random")
    seed: int = 0


class SelectConfig(BaseModel):
    """What to read, decided on the URL index before any WARC byte is fetched."""

    model_config = ConfigDict(extra="forbid")
    languages: list[str] = Field(default_factory=list, description="primary content language, ISO 639-3 as in content_languages (zho, eng, ...)")
    tlds: list[str] = Field(default_factory=list, description="url_host_tld values (cn, tw, hk, ...)")
    hosts: list[str] = Field(default_factory=list, description="host names; subdomains match too")
    mimes: list[str] = Field(default_factory=lambda: ["text/html", "application/xhtml+xml"], description="content_mime_detected values; [] for any")
    statuses: list[int] = Field(default_factory=lambda: [200], description="fetch_status values; [] for any")
    max_index_files: int | None = Field(default=None, gt=0, description="scan only the first N index Parquet files (a cheap sample of the whole crawl)")
    max_gap: int = Field(default=0, ge=0, description="records closer than this many bytes are fetched with one request")
    limit: int | None = Field(default=None, gt=0, description="at most N selected records in all: the first in (file, offset) order")

    @field_validator("languages")
    @classmethod
    def _iso3(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.fullmatch(r"[a-z]{3}", v)]
        if bad:
            raise ValueError(f"languages are ISO 639-3 codes as Common Crawl's index writes them (zho, eng, jpn, ...), got {bad}")
        return value

    @model_validator(mode="after")
    def _something(self):
        if not (self.languages or self.tlds or self.hosts):
            raise ValueError("select needs at least one of languages, tlds or hosts (without them, read whole files: drop select)")
        return self


class CommonCrawlConfig(SourceConfig):
    kind: Literal["commoncrawl"]
    license: str = LICENSE
    crawl: str = Field("latest", description="CC-MAIN-YYYY-WW, or latest")
    format: Literal["warc", "wet"] = "warc"
    mirror: str = DEFAULT_MIRROR
    max_files: int | None = Field(default=None, gt=0)
    files: list[str] | FileSample | None = Field(default=None, description="paths from the paths file (or file names), or {sample: N, seed: S}")
    max_records: int | None = Field(default=None, gt=0, description="per file: stop reading at the N-th document record")
    select: SelectConfig | None = None
    max_record_bytes: int = Field(default=warc.DEFAULT_MAX_PAYLOAD, ge=2**10, description="a record whose block is larger goes to the ledger (warc:too-large) unread")
    records_per_partition: int = Field(default=2000, gt=0, description="select: selected records per task")
    # Common Crawl publishes no checksums: files are pinned by size and sha256 on first download.
    checksum: Literal["require", "verify", "skip"] = "verify"

    @field_validator("crawl", mode="before")
    @classmethod
    def _crawl(cls, value) -> str:
        value = str(value)
        if value != "latest" and not CRAWL_RE.fullmatch(value):
            raise ValueError(f"crawl must be 'latest' or a crawl id like CC-MAIN-2024-33, got {value!r}")
        return value

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError(f"mirror must be an http(s) URL with Common Crawl's layout (crawl-data/<crawl>/warc.paths.gz), got {value!r}")
        return value.rstrip("/")

    @field_validator("license")
    @classmethod
    def _license(cls, value: str) -> str:
        if value != LICENSE:
            raise ValueError(
                f"a commoncrawl source is {LICENSE} (the default: leave license out), not {value!r}: Common Crawl's Terms of Use "
                "grant no license to the pages, each page stays the copyright of its owner, so crawled text cannot be declared "
                "under CC-BY or any other license (docs/licenses.md, 'Crawled web text')"
            )
        return value

    @model_validator(mode="after")
    def _combinations(self):
        if self.checksum == "require":
            raise ValueError("checksum: require cannot hold for Common Crawl, which publishes no checksums; files are pinned by size and sha256 on first download and verified on reuse (checksum: verify, the default)")
        if self.select is not None and self.format == "wet":
            raise ValueError("select reads the URL index, whose offsets are in the WARC files: use format: warc with select (html_extract makes the text)")
        return self


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _lines(path: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def fetch_pinned(url: str, dest: Path, cache_root: Path, on_progress=None) -> tuple[http.DownloadRecord, dict]:
    """``http.download`` plus a pin: the first verified download records its size and sha256 in
    ``<dest>.pin.json``; a cached copy is used only while it matches, and a later download (the
    cache deleted or damaged) must match it too. Common Crawl files never change once published,
    so a different file means a wrong or damaged mirror."""
    pin_path = dest.with_name(dest.name + ".pin.json")
    pin = storage.read_json(pin_path) if pin_path.exists() else None
    try:
        record = http.download(url, dest, cache_root=cache_root, expected={"sha256": pin["sha256"]} if pin else None, on_progress=on_progress)
    except ChecksumError as exc:
        raise SourceError(
            f"the file differs from the one pinned on {pin['pinned_at']} ({pin['size']:,} bytes, sha256 {pin['sha256'][:16]}…): {exc.what}",
            where=redact_url(url),
            hint=f"Common Crawl files never change once published: the mirror serves another or a damaged file; use another mirror (--set sources.NAME.mirror=URL), or if the new file is right delete {pin_path} and run again",
        ) from None
    if pin is None:
        pin = {"size": record.bytes, "sha256": record.checksums["sha256"], "pinned_at": _now(), "url": redact_url(url)}
        storage.atomic_write_json(pin_path, pin)
    elif record.bytes != pin["size"]:  # the sha256 matched, so this cannot happen; kept as a guard
        raise SourceError(f"size {record.bytes} differs from the pinned {pin['size']}", where=redact_url(url))
    return record, pin


class CommonCrawlSource(SourceStage):
    name = "commoncrawl"
    version = "1"
    Config = CommonCrawlConfig
    code_deps = ("pipeline.io.http", "pipeline.io.formats.warc", "pipeline.io.formats.cc_index")
    pinned_by_resolve = ("crawl",)

    # ---- resolve: the crawl and its files -------------------------------------------------
    def _cache(self, rctx: RunContext, crawl: str) -> Path:
        return rctx.cache_dir / "commoncrawl" / crawl

    def _collinfo_url(self) -> str:
        return COLLINFO_URL if self.params.mirror == DEFAULT_MIRROR else f"{self.params.mirror}/collinfo.json"

    def list_crawls(self) -> list[str]:
        """Crawl ids, newest first: the mirror's collinfo.json (Common Crawl's for the default
        mirror), else a directory listing of ``crawl-data/``."""
        cfg: CommonCrawlConfig = self.params
        ids: set[str] = set()
        try:
            data = http.get_json(self._collinfo_url())
            ids.update(e["id"] for e in data if isinstance(e, dict) and CRAWL_RE.fullmatch(str(e.get("id", ""))))
        except http.HostUnreachable:
            raise
        except SourceError:
            pass
        if not ids:
            try:
                ids.update(CRAWL_RE.findall(http.get_text(f"{cfg.mirror}/crawl-data/")))
            except http.HostUnreachable:
                raise
            except SourceError:
                pass
        return sorted(ids, reverse=True)

    def resolve(self, rctx: RunContext) -> dict:
        cfg: CommonCrawlConfig = self.params
        try:
            crawl, paths_path = self._resolve_paths(rctx)
        except http.HostUnreachable as exc:
            cached = sorted((p.parent.name for p in (rctx.cache_dir / "commoncrawl").glob(f"*/{cfg.format}.paths.gz.pin.json")), reverse=True)
            if cfg.crawl == "latest" and cached:
                hint = f"'crawl: latest' needs the mirror; crawls an earlier run cached here: {', '.join(cached)}: add --set sources.{cfg.name}.crawl={cached[0]} to use one offline, or use a mirror you can reach (--set sources.{cfg.name}.mirror=URL)"
            else:
                hint = f"no earlier run cached the {cfg.format} paths of {cfg.crawl if cfg.crawl != 'latest' else 'any crawl'} in {rctx.cache_dir}: use a mirror you can reach (--set sources.{cfg.name}.mirror=URL), or point GRIST_CACHE at a cache that holds it"
            raise SourceError(exc.what, where=exc.where, hint=hint) from None
        paths = _lines(paths_path)
        if not paths:
            raise SourceError(f"the {cfg.format} paths file of {crawl} lists no files", where=redact_url(self._paths_url(crawl)))
        chosen = self._choose(paths, crawl)
        files = None if (cfg.select is not None and chosen == paths) else chosen
        ident = {
            "crawl": crawl,
            "format": cfg.format,
            "paths_file": {"name": paths_path.name, "sha256": storage.file_digests(paths_path)["sha256"], "lines": len(paths)},
            "files": len(files) if files is not None else "all",
            "files_sha256": _digest(files) if files is not None else None,
        }
        return {"identity": ident, "files": files, "urls": {"paths": self._paths_url(crawl)}, "mirror": redact_url(cfg.mirror)}

    def _paths_url(self, crawl: str) -> str:
        return f"{self.params.mirror}/crawl-data/{crawl}/{self.params.format}.paths.gz"

    def _resolve_paths(self, rctx: RunContext) -> tuple[str, Path]:
        cfg: CommonCrawlConfig = self.params
        if cfg.crawl != "latest":
            return cfg.crawl, self._fetch_paths(rctx, cfg.crawl)
        crawls = self.list_crawls()
        if not crawls:
            raise SourceError(
                "cannot list the crawls: no collinfo.json and no crawl-data/ listing",
                where=redact_url(self._collinfo_url()),
                hint="give the crawl explicitly (crawl: CC-MAIN-YYYY-WW), or use a mirror with Common Crawl's layout",
            )
        tried = []
        for crawl in crawls[:3]:  # the newest crawl is announced before its files are all published
            try:
                return crawl, self._fetch_paths(rctx, crawl)
            except http.HostUnreachable:
                raise
            except SourceError as exc:
                tried.append(f"{crawl} ({exc.what})")
        raise SourceError(f"none of the newest crawls has a {cfg.format} paths file on the mirror: {'; '.join(tried)}", where=redact_url(cfg.mirror), hint="give the crawl explicitly, or use another mirror")

    def _fetch_paths(self, rctx: RunContext, crawl: str) -> Path:
        url = self._paths_url(crawl)
        dest = self._cache(rctx, crawl) / f"{self.params.format}.paths.gz"
        try:
            record, _ = fetch_pinned(url, dest, rctx.cache_dir)
        except http.HostUnreachable:
            raise
        except SourceError as exc:
            if "404" not in exc.what:
                raise
            try:
                recent = self.list_crawls()[:8]
            except SourceError:
                recent = []
            raise SourceError(
                f"unknown crawl {crawl}: the mirror has no crawl-data/{crawl}/{self.params.format}.paths.gz",
                where=redact_url(url),
                hint=(f"recent crawls: {', '.join(recent)}" if recent else "check the crawl id (CC-MAIN-YYYY-WW, see https://index.commoncrawl.org/collinfo.json)") + "; or 'crawl: latest'",
            ) from None
        return Path(record.path)

    def _choose(self, paths: list[str], crawl: str) -> list[str]:
        cfg: CommonCrawlConfig = self.params
        chosen = paths
        if isinstance(cfg.files, FileSample):
            n = min(cfg.files.sample, len(paths))
            chosen = [paths[i] for i in sorted(random.Random(cfg.files.seed).sample(range(len(paths)), n))]
        elif isinstance(cfg.files, list):
            known = set(paths)
            by_name: dict[str, list[str]] = {}
            for p in paths:
                by_name.setdefault(p.rsplit("/", 1)[-1], []).append(p)
            chosen, unknown = [], []
            for f in cfg.files:
                if f in known:
                    chosen.append(f)
                elif len(by_name.get(f, [])) == 1:
                    chosen.append(by_name[f][0])
                else:
                    unknown.append(f)
            if unknown:
                raise SourceError(
                    f"{len(unknown)} of the files are not in the {cfg.format} paths of {crawl}: {', '.join(unknown[:3])}",
                    where=f"sources.{cfg.name}.files",
                    hint=f"give paths as warc.paths.gz lists them (e.g. {paths[0]}) or their file names",
                )
        if cfg.max_files:
            chosen = chosen[: cfg.max_files]
        return chosen

    # ---- run --------------------------------------------------------------------------------
    def run(self, ctx: NodeContext) -> dict:
        cfg: CommonCrawlConfig = self.params
        crawl = ctx.resolved["identity"]["crawl"]
        cache = self._cache(ctx.run, crawl)
        base = {"crawl": crawl, "format": cfg.format, "source": cfg.name, "license": cfg.license, "node": self.node, "cache_root": str(ctx.run.cache_dir), "max_record_bytes": cfg.max_record_bytes}
        extra: dict = {}
        if cfg.select is not None:
            jobs, extra = self._select_jobs(ctx, crawl, cache, ctx.resolved["files"])
        else:
            jobs = []
            for path in ctx.resolved["files"]:
                dest = self._cache_path(cache, path)
                if cfg.max_records:
                    jobs.append({"mode": "head", "path": path, "url": f"{cfg.mirror}/{path}", "dest": str(dest), "max_records": cfg.max_records})
                else:
                    jobs.append({"mode": "file", "path": path, "url": f"{cfg.mirror}/{path}", "dest": str(dest)})
        tasks = []
        for i, job in enumerate(jobs):
            job.update(base, out=str(ctx.part_path(i)), removed=str(ctx.removed_path(i)), prov=str(ctx.dir / "_downloads" / f"part-{i:05d}.json"))
            tasks.append((job,))
        ctx.run.console.log(f"\\[{self.node}] {crawl}: {len(tasks)} task(s) ({jobs[0]['mode'] if jobs else 'nothing'})")
        results = ctx.run_tasks(read_cc_task, tasks, desc=f"{crawl} {cfg.format}")
        downloads = [d for j in jobs if Path(j["prov"]).exists() for d in storage.read_json(Path(j["prov"]))]
        moved = sum(r.get("bytes_moved", 0) for r in results)
        ctx.provenance.update(
            crawl=crawl, format=cfg.format, mirror=redact_url(cfg.mirror), downloads=downloads,
            bytes_moved={"records": moved, "index": extra.get("index_bytes_moved", 0), "total": moved + extra.get("index_bytes_moved", 0)},
        )
        if "index" in extra:
            ctx.provenance["index"] = extra.pop("index")
        return {"files": len({d["path"] for d in downloads}), **extra}

    def _cache_path(self, cache: Path, path: str) -> Path:
        try:
            return storage.confined(cache / "files", path)
        except ValueError:
            raise SourceError(f"the paths file lists a path that escapes the cache: {path!r}", where=redact_url(self.params.mirror), hint="the mirror is not a Common Crawl mirror") from None

    def _select_jobs(self, ctx: NodeContext, crawl: str, cache: Path, files: list[str] | None) -> tuple[list[dict], dict]:
        cfg: CommonCrawlConfig = self.params
        sel: SelectConfig = cfg.select  # type: ignore[assignment]
        url = f"{cfg.mirror}/crawl-data/{crawl}/cc-index-table.paths.gz"
        try:
            record, _ = fetch_pinned(url, cache / "cc-index-table.paths.gz", ctx.run.cache_dir)
        except http.HostUnreachable:
            raise
        except SourceError as exc:
            if "404" not in exc.what:
                raise
            raise SourceError(
                f"select needs the crawl's columnar URL index, and the mirror has none for {crawl} (no cc-index-table.paths.gz)",
                where=redact_url(url),
                hint="use a mirror that serves cc-index/ too (data.commoncrawl.org does), or drop select and read whole files (max_files, max_records)",
            ) from None
        index_paths = [p for p in _lines(Path(record.path)) if "/subset=warc/" in p]
        if not index_paths:
            raise SourceError(f"the index of {crawl} lists no subset=warc Parquet files", where=redact_url(url), hint="the mirror's index is incomplete: use another mirror")
        if sel.max_index_files:
            index_paths = index_paths[: sel.max_index_files]
        key = sel.model_dump(mode="json", exclude={"max_index_files", "max_gap", "limit"})
        scan_tasks = []
        for p in index_paths:
            out = cache / "select" / f"{Path(p).name}.{_digest([p, key])[:16]}.parquet"
            scan_tasks.append(({"url": f"{cfg.mirror}/{p}", "path": p, "select": key, "out": str(out)},))
        scans = ctx.run_tasks(scan_index_task, scan_tasks, desc="scan URL index", phase="index")
        for t in scan_tasks:  # a cached selection removed since its marker was written: scan again
            if not Path(t[0]["out"]).exists():
                scan_index_task(*t)
        tables = [storage.read_parquet(Path(t[0]["out"])) for t in scan_tasks]
        table = pa.concat_tables(tables) if tables else cc_index.SELECTED_SCHEMA.empty_table()
        index_moved = sum(s.get("bytes_read", 0) for s in scans)
        index_info = {
            "files": len(index_paths), "rows_read": sum(s.get("rows_read", 0) for s in scans), "rows_selected": table.num_rows,
            "row_groups": sum(s.get("row_groups", 0) for s in scans), "row_groups_read": sum(s.get("row_groups_read", 0) for s in scans),
            "bytes_read": index_moved, "file_bytes": sum(s.get("file_bytes", 0) for s in scans), "select": key,
        }
        jobs, n_files = self._plan_jobs(ctx, cache, table, files, sel.max_gap)
        ctx.run.console.log(f"\\[{self.node}] URL index: {index_info['rows_selected']:,} of {index_info['rows_read']:,} rows read selected ({index_info['row_groups_read']} of {index_info['row_groups']} row groups, {index_moved:,} bytes moved); {sum(j['records'] for j in jobs):,} records in {n_files} files")
        return jobs, {"index_bytes_moved": index_moved, "index_rows_selected": index_info["rows_selected"], "index": index_info}

    def _plan_jobs(self, ctx: NodeContext, cache: Path, table: pa.Table, files: list[str] | None, max_gap: int) -> tuple[list[dict], int]:
        """Selected rows -> jobs of up to ``records_per_partition`` records each, in (file, offset)
        order: a job holds the records of one file or of several (a small sample of a whole crawl
        has a few records in each of thousands of files: one task per file would be mostly
        overhead). A job's records go to a plan file (``_plan/part-N.parquet``) rather than into
        the task arguments: a crawl-wide selection has millions of them."""
        import polars as pl

        cfg: CommonCrawlConfig = self.params
        df = pl.from_arrow(table.select(["warc_filename", "warc_record_offset", "warc_record_length", "url"]))
        if files is not None:
            df = df.filter(pl.col("warc_filename").is_in(files))
        df = df.sort(["warc_filename", "warc_record_offset", "warc_record_length", "url"]).unique(["warc_filename", "warc_record_offset"], keep="first", maintain_order=True)
        if cfg.max_records:
            df = df.filter(pl.int_range(pl.len()).over("warc_filename") < cfg.max_records)
        if cfg.select.limit:
            df = df.head(cfg.select.limit)
        df = df.rename({"warc_record_offset": "offset", "warc_record_length": "length"}).with_columns(pl.col("offset").cast(pl.Int64), pl.col("length").cast(pl.Int64))
        jobs = []
        for k in range(0, df.height, cfg.records_per_partition):
            plan = df.slice(k, cfg.records_per_partition).to_arrow()
            plan_path = ctx.dir / "_plan" / f"part-{len(jobs):05d}.parquet"
            storage.write_parquet(plan, plan_path)
            digest = _digest([plan["warc_filename"].to_pylist(), plan["offset"].to_pylist(), plan["length"].to_pylist(), plan["url"].to_pylist()])
            names = plan["warc_filename"].unique().to_pylist()
            jobs.append({
                "mode": "ranges", "path": names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} files)", "files": len(names),
                "mirror": cfg.mirror, "files_root": str(cache / "files"), "plan": str(plan_path), "plan_sha256": digest, "records": plan.num_rows, "max_gap": max_gap,
            })
        return jobs, df["warc_filename"].n_unique()


# ---- tasks (module level: they run in worker processes) -------------------------------------


def scan_index_task(job: dict) -> dict:
    """Select the rows of one index Parquet file into the cache (reused by later runs)."""
    out = Path(job["out"])
    meta_path = out.with_name(out.name + ".json")
    if out.exists() and meta_path.exists():
        return {**storage.read_json(meta_path), "bytes_read": 0, "from_cache": True}
    s = job["select"]
    sel = cc_index.Selection(languages=tuple(s["languages"]), tlds=tuple(s["tlds"]), hosts=tuple(s["hosts"]), mimes=tuple(s["mimes"]), statuses=tuple(s["statuses"]))
    f = http.RangedFile(job["url"])  # pyarrow coalesces the column chunks it needs (pre_buffer)
    try:
        table, st = cc_index.scan(f, sel)
    except ValueError as exc:
        raise SourceError(f"the index file is not Parquet ({exc})", where=redact_url(job["url"]), hint="the mirror's index is damaged or not Common Crawl's: use another mirror") from None
    except KeyError as exc:
        raise SourceError(f"the index file lacks column(s) {exc.args[0]}", where=redact_url(job["url"]), hint="the mirror's index is not Common Crawl's columnar index (cc-index/table/cc-main/warc)") from None
    except SourceError as exc:
        if "404" in exc.what:
            raise SourceError("an index file listed in cc-index-table.paths.gz is missing on the mirror", where=exc.where, hint="select needs the crawl's whole URL index: use a mirror that serves cc-index/, or set select.max_index_files to the files it has") from None
        raise
    st.bytes_read, st.requests, st.file_bytes = f.bytes_read, f.requests, f.size
    storage.write_parquet(table, out)
    stats = st.to_json()
    storage.atomic_write_json(meta_path, stats)
    return stats


def read_cc_task(job: dict) -> dict:
    """Read one WARC/WET file (whole, or its head), or the selected records of one or more files
    (``mode: ranges``, from the job's plan), into a part and a ledger part."""
    writer = _PartWriter(Path(job["out"]))
    problems: list[warc.WarcProblem] = []
    provs, moved, kept, other = [], 0, 0, 0
    try:
        for unit in _units(job):
            prov, items, offsets, bad = _open_unit(unit)
            problems += bad
            moved += prov["bytes_moved"]
            n_kept, n_other, found = _read_items(unit, items, offsets, writer)
            kept, other = kept + n_kept, other + n_other
            problems += found
            prov.update(records=n_kept, problems=len(bad) + len(found))
            provs.append(prov)
    except warc.NotWarc as exc:
        writer.abort()
        raise SourceError(
            f"the mirror served something that is not a WARC file ({exc})", where=redact_url(unit["url"]),
            hint=f"the cached copy was moved to {_forget(unit)}; check the mirror (an error page served as the file?), or use another one (--set sources.{job['source']}.mirror=URL)",
        ) from None
    except BaseException:
        writer.abort()
        raise
    writer.close()
    removed = _ledger(problems, job)
    storage.write_parquet(removed, Path(job["removed"]))
    storage.atomic_write_json(Path(job["prov"]), provs)
    reasons: dict[str, int] = {}
    for p in problems:
        reasons[p.reason] = reasons.get(p.reason, 0) + 1
    return {"in": kept + removed.num_rows, "out": kept, "removed": removed.num_rows, "removed_by_reason": reasons, "bytes_moved": moved, "warc_other_records": other}


def _units(job: dict) -> list[dict]:
    """What a task reads, file by file: the job itself, or one unit per file of its plan."""
    if job["mode"] != "ranges":
        return [job]
    plan = storage.read_parquet(Path(job["plan"])).to_pydict()
    by_file: dict[str, list[list]] = {}
    for fname, off, length, url in zip(plan["warc_filename"], plan["offset"], plan["length"], plan["url"]):
        by_file.setdefault(fname, []).append([off, length, url])
    units = []
    for fname, ranges in by_file.items():
        try:
            dest = storage.confined(Path(job["files_root"]), fname)
        except ValueError:
            raise SourceError(f"the URL index names a file path that escapes the cache: {fname!r}", where=redact_url(job["mirror"])) from None
        units.append({**job, "path": fname, "url": f"{job['mirror']}/{fname}", "ranges": ranges, "dest": str(dest.with_name(f"{dest.name}.records-{_digest(ranges)[:16]}"))})
    return units


def _open_unit(unit: dict):
    """(provenance, records iterator, blob->file offset map or None, problems found fetching)."""
    cap = unit["max_record_bytes"]
    if unit["mode"] == "file":
        record, pin = fetch_pinned(unit["url"], Path(unit["dest"]), Path(unit["cache_root"]))
        moved = 0 if record.from_cache else record.bytes
        prov = {"path": unit["path"], "url": redact_url(unit["url"]), "bytes": record.bytes, "sha256": pin["sha256"], "pinned_at": pin["pinned_at"], "from_cache": record.from_cache, "bytes_moved": moved}
        return prov, warc.iter_records(record.path, max_payload_bytes=cap), None, []
    if unit["mode"] == "head":
        blob, prov = _fetch_head(unit, DOC_TYPES[unit["format"]])
        return prov, warc.iter_records(io.BytesIO(blob), gz=True, max_payload_bytes=cap), None, []
    blob, offsets, bad, prov = _fetch_ranges(unit)
    return prov, (warc.iter_records(io.BytesIO(blob), gz=True, max_payload_bytes=cap) if blob else iter(())), offsets, bad


def _read_items(unit: dict, items, offsets: dict[int, int] | None, writer: "_PartWriter") -> tuple[int, int, list[warc.WarcProblem]]:
    """Document records to rows; problems (with file offsets) returned; other record types counted."""
    doc_types = DOC_TYPES[unit["format"]]
    limit = unit.get("max_records") if unit["mode"] == "head" else None
    expect_url = {r[0]: r[2] for r in unit["ranges"]} if offsets is not None else None
    kept = other = 0
    problems: list[warc.WarcProblem] = []
    for item in items:
        if offsets is not None and item.offset in offsets:
            item.offset = offsets[item.offset]  # the record's offset in the WARC file, not in the fetched pieces
        if isinstance(item, warc.WarcProblem):
            item.extra = {**item.extra, "file": unit["path"]}
            problems.append(item)
            continue
        if item.warc_type not in doc_types:
            other += 1
            continue
        if expect_url is not None and expect_url.get(item.offset) not in (None, item.url):
            problems.append(warc.WarcProblem("cc:index-mismatch", f"the index names {expect_url[item.offset]} at offset {item.offset}, the record holds {item.url}", item.offset, item.length, item.warc_type, item.record_id, item.url, item.date, extra={"file": unit["path"]}))
            continue
        writer.add(item, unit)
        kept += 1
        if limit and kept >= limit:
            break
    return kept, other, problems


def _forget(job: dict) -> str:
    """Move a cached file (and its pin) that turned out unusable to quarantine: a re-run fetches it
    again instead of failing on the same bytes."""
    dest = Path(job["dest"])
    if job["mode"] == "head":
        dest = Path(job["dest"] + f".head-{job['max_records']}")
    if not dest.exists():
        return "nowhere (nothing was cached)"
    qdir = Path(job["cache_root"]) / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    target = qdir / f"{dest.name}.{os.getpid()}.bad"
    os.replace(dest, target)
    for side in (".pin.json", ".meta.json"):
        dest.with_name(dest.name + side).unlink(missing_ok=True)
    return str(target)


class _PartWriter:
    """Rows written a batch at a time (a 1 GB WARC file holds gigabytes of HTML), to a temporary
    file renamed into place when complete."""

    BATCH_ROWS, BATCH_BYTES = 2000, 32 * 2**20

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp-{os.getpid()}")  # the run lock removes strays
        self.writer = pq.ParquetWriter(str(self.tmp), WEB_RECORD_SCHEMA, **storage.PARQUET_OPTIONS)
        self.cols: dict[str, list] = {n: [] for n in WEB_RECORD_SCHEMA.names}
        self.held = 0

    def add(self, rec: warc.WarcRecord, job: dict) -> None:
        doc_id = f"cc/{job['crawl']}/{rec.record_id or job['path'].rsplit('/', 1)[-1] + '@' + str(rec.offset)}"
        append_web_record(self.cols, rec, doc_id=doc_id, source=job["source"], license=job["license"], filename=job["path"], crawl=job["crawl"])
        self.held += len(rec.payload or b"")
        if len(self.cols["id"]) >= self.BATCH_ROWS or self.held >= self.BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.cols["id"]:
            self.writer.write_table(pa.table(self.cols, schema=WEB_RECORD_SCHEMA), row_group_size=8192)
        self.cols, self.held = {n: [] for n in WEB_RECORD_SCHEMA.names}, 0

    def close(self) -> None:
        self.flush()
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _ledger(problems: list[warc.WarcProblem], job: dict) -> pa.Table:
    def file(p: warc.WarcProblem) -> str:
        return p.extra.get("file") or job.get("path") or ""

    ids = [f"cc/{job['crawl']}/{p.record_id}" if p.record_id else f"cc/{job['crawl']}/{file(p).rsplit('/', 1)[-1]}@{p.offset}" for p in problems]
    t = pa.table({"id": ids, "source": [job["source"]] * len(problems), "title": [p.url for p in problems], "text": [""] * len(problems)}, schema=pa.schema([("id", pa.string()), ("source", pa.string()), ("title", pa.string()), ("text", pa.string())]))
    signals = [{"detail": p.detail, "file": file(p), "offset": p.offset, "length": p.length, "warc_type": p.warc_type, "url": p.url} for p in problems]
    return removed_rows(t, job["node"], [p.reason for p in problems], signals)


def _cached_piece(dest: Path, meta_path: Path) -> tuple[bytes, dict] | None:
    """A cached piece (head or selected records), if its sha256 still matches its pin."""
    if not (dest.exists() and meta_path.exists()):
        return None
    meta = storage.read_json(meta_path)
    data = dest.read_bytes()
    if len(data) != meta.get("bytes") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        return None
    return data, meta


def _fetch_head(job: dict, doc_types: tuple[str, ...]) -> tuple[bytes, dict]:
    """The first ``max_records`` document records of a file: ranged reads from byte 0 in growing
    chunks, gzip member by member, stopping at the member that completes the N-th record."""
    n = job["max_records"]
    dest = Path(job["dest"] + f".head-{n}")
    meta_path = dest.with_name(dest.name + ".meta.json")
    cached = _cached_piece(dest, meta_path)
    if cached is not None:
        return cached[0], {**cached[1], "from_cache": True, "bytes_moved": 0}
    scanner = warc.MemberScanner(0)
    data = bytearray()
    moved, pos, chunk, count, end, size, note = 0, 0, HEAD_FIRST_CHUNK, 0, None, None, None
    while end is None:
        piece, headers = http.fetch_range(job["url"], pos, pos + chunk)
        moved += len(piece)
        size = headers.get("size", size)
        data += piece
        try:
            for off, length, head in scanner.feed(piece):
                if warc.member_type(head) in doc_types:
                    count += 1
                    if count == n:
                        end = off + length
                        break
        except ValueError as exc:  # damaged bytes: the reader ledgers them; stop fetching here
            note, end = str(exc), len(data)
        pos += len(piece)
        if end is None and (len(piece) < chunk or (size is not None and pos >= size)):
            end = len(data)  # the whole file holds fewer records
        chunk = min(chunk * 2, HEAD_MAX_CHUNK)
    blob = bytes(data[:end])
    meta = {
        "path": job["path"], "url": redact_url(job["url"]), "byte_range": [0, len(blob)], "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
        "records": count, "file_size": size, "complete_file": size is not None and len(blob) >= size, "pinned_at": _now(),
    }
    if note:
        meta["problem"] = note
    storage.atomic_write_bytes(dest, blob)
    storage.atomic_write_json(meta_path, meta)
    return blob, {**meta, "from_cache": False, "bytes_moved": moved}


def _fetch_ranges(job: dict) -> tuple[bytes, dict[int, int], list[warc.WarcProblem], dict]:
    """The selected records of one file, by byte range (coalesced), each checked to be exactly one
    complete gzip member where the index says. Returns the concatenated members, a map from
    their offsets in it to their offsets in the file, the records that failed, and provenance."""
    dest = Path(job["dest"])
    meta_path = dest.with_name(dest.name + ".meta.json")
    ranges = job["ranges"]
    cached = _cached_piece(dest, meta_path)
    if cached is not None:
        blob, meta = cached
        if all(hashlib.sha256(blob[b : b + m[1]]).hexdigest() == m[2] for b, m in zip(_starts(meta["members"]), meta["members"])):
            offsets = dict(zip(_starts(meta["members"]), (m[0] for m in meta["members"])))
            bad = [warc.WarcProblem(**p, extra={"file": job["path"]}) for p in meta.get("problems", [])]
            return blob, offsets, bad, {**_range_prov(job, meta), "from_cache": True, "bytes_moved": 0}
    out = bytearray()
    members: list[list] = []  # [file offset, length, sha256]
    bad: list[warc.WarcProblem] = []
    moved = 0
    for start, end, idx in cc_index.coalesce([(r[0], r[1]) for r in ranges], job.get("max_gap", 0)):
        data, _ = http.fetch_range(job["url"], start, end)
        moved += len(data)
        for k in idx:
            off, length, url = ranges[k]
            piece = data[off - start : off - start + length]
            found, problem = warc.check_members(piece, off)
            if len(piece) < length:
                problem = f"the file ends at byte {start + len(data)}, before the record the index places at {off}+{length} (truncated file?)"
            elif problem is None and (len(found) != 1 or found[0][1] != length):
                problem = f"the index range {off}+{length} holds {len(found)} gzip member(s) of length(s) {[m[1] for m in found][:3]}, not one record"
            if problem is not None:
                reason = warc.TRUNCATED if "ends" in problem or "damaged" in problem else "cc:index-mismatch"
                bad.append(warc.WarcProblem(reason, problem, off, length, url=url, extra={"file": job["path"]}))
                continue
            members.append([off, length, hashlib.sha256(piece).hexdigest()])
            out += piece
    blob = bytes(out)
    meta = {
        "path": job["path"], "url": redact_url(job["url"]), "members": members, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
        "problems": [{k: getattr(p, k) for k in ("reason", "detail", "offset", "length", "url")} for p in bad], "pinned_at": _now(),
    }
    storage.atomic_write_bytes(dest, blob)
    storage.atomic_write_json(meta_path, meta)
    offsets = dict(zip(_starts(members), (m[0] for m in members)))
    return blob, offsets, bad, {**_range_prov(job, meta), "from_cache": False, "bytes_moved": moved}


def _starts(members: list[list]) -> list[int]:
    out, pos = [], 0
    for m in members:
        out.append(pos)
        pos += m[1]
    return out


def _range_prov(job: dict, meta: dict) -> dict:
    return {"path": job["path"], "url": redact_url(job["url"]), "records_selected": len(job["ranges"]), "records_fetched": len(meta["members"]), "bytes": meta["bytes"], "sha256": meta["sha256"], "pinned_at": meta["pinned_at"]}
