"""Source ``wikimedia-dump``: a Wikipedia pages-articles multistream dump from a Wikimedia mirror.

resolve(): ``date: latest`` becomes the newest date whose ``articlesmultistreamdump`` job is
``done`` in its ``dumpstatus.json``; checksums come from the dump's own md5/sha1 files.
run(): downloads the dump and its index (cached, resumable, verified), or with ``max_pages``
only the byte range of the first streams covering N pages (the index is itself read in
ranged chunks and abandoned early), then parses the streams in parallel, one group of
streams per partition. The output is one row per page with its raw wikitext; the
``wikitext_extract`` stage turns articles into plain text.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator

from pipeline.common import storage
from pipeline.common.errors import SourceError
from pipeline.core.manifest import SourceConfig
from pipeline.core.stage import DOC_SCHEMA, NodeContext, RunContext, SourceStage, removed_rows
from pipeline.io import http
from pipeline.io.formats import mediawiki_xml as mx
from pipeline.io.urls import redact_url

DEFAULT_MIRROR = "https://dumps.wikimedia.org"
RESOLVED_FILE = "resolved.json"  # what resolve() pinned for a date, kept beside its downloads
JOB = "articlesmultistreamdump"

# Raw pages: the document columns (``text`` holds wikitext) plus what extraction needs.
PAGE_SCHEMA = DOC_SCHEMA.append(pa.field("ns", pa.int32())).append(pa.field("redirect", pa.string())).append(pa.field("page_id", pa.int64()))


class WikimediaDumpConfig(SourceConfig):
    kind: Literal["wikimedia-dump"]
    wiki: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="database name, e.g. zhwiki")
    date: str = "latest"
    mirror: str = DEFAULT_MIRROR
    max_pages: int | None = Field(default=None, gt=0)
    streams_per_partition: int = Field(default=10, gt=0)

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, value: str) -> str:
        value = str(value)
        if value != "latest" and not re.fullmatch(r"\d{8}", value):
            raise ValueError(f"date must be 'latest' or YYYYMMDD, got {value!r}")
        return value

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: str) -> str:
        if not re.match(r"^(https?|file)://", value):
            raise ValueError(f"mirror must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _lists_combined(job: dict, wiki: str, date: str) -> bool:
    return f"{wiki}-{date}-pages-articles-multistream.xml.bz2" in (job.get("files") or {})


def parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0]
    return sums


class WikimediaDumpSource(SourceStage):
    name = "wikimedia-dump"
    version = "1"
    Config = WikimediaDumpConfig
    code_deps = ("pipeline.io.formats.mediawiki_xml", "pipeline.io.http")
    pinned_by_resolve = ("date",)  # the concrete date is in the identity

    # ---- resolve: metadata only -------------------------------------------------------
    def resolve(self, rctx: RunContext) -> dict:
        """Pin the dump (date, files, checksums) from the mirror's metadata; when the mirror cannot
        be reached, from what an earlier run pinned for the same explicit date (the downloads it
        cached then serve the run offline)."""
        try:
            pinned = self._resolve_online()
        except http.HostUnreachable as exc:
            return self._resolve_offline(rctx, exc)
        remembered = self._cache_dir(rctx, pinned["identity"]["date"]) / RESOLVED_FILE
        storage.atomic_write_json(remembered, {"identity": {k: v for k, v in pinned["identity"].items() if k != "max_pages"}, "pinned_at": _now()})
        return pinned

    def _cache_dir(self, rctx: RunContext, date: str) -> Path:
        return rctx.cache_dir / "wikimedia" / self.params.wiki / date

    def _resolve_offline(self, rctx: RunContext, exc: http.HostUnreachable) -> dict:
        cfg: WikimediaDumpConfig = self.params
        cached = sorted(p.parent.name for p in (rctx.cache_dir / "wikimedia" / cfg.wiki).glob(f"*/{RESOLVED_FILE}"))
        if cfg.date != "latest" and cfg.date in cached:
            record = storage.read_json(self._cache_dir(rctx, cfg.date) / RESOLVED_FILE)
            ident = {**record["identity"], "max_pages": cfg.max_pages}
            rctx.console.log(f"\\[{self.node}] {exc.what}: using dump {cfg.wiki} {cfg.date} as an earlier run pinned it ({record.get('pinned_at')}); its downloads must be in the cache")
            base = f"{cfg.mirror}/{cfg.wiki}/{cfg.date}"
            return {
                "identity": ident,
                "urls": {"xml": f"{base}/{ident['xml']['name']}", "index": f"{base}/{ident['index']['name']}", "dumpstatus": f"{base}/dumpstatus.json"},
                "mirror": redact_url(cfg.mirror),
                "offline": True,
            }
        if cfg.date == "latest" and cached:
            hint = f"'date: latest' needs the mirror; dumps an earlier run cached here: {', '.join(cached)}: add --set sources.{cfg.name}.date={cached[-1]} to use the newest of them offline, or use a mirror you can reach (--set sources.{cfg.name}.mirror=URL)"
        else:
            what = f"dump {cfg.wiki} {cfg.date}" if cfg.date != "latest" else f"any {cfg.wiki} dump"
            hint = f"this machine cannot reach the mirror and no earlier run cached {what} in {rctx.cache_dir}: use a mirror you can reach (--set sources.{cfg.name}.mirror=URL), or point GRIST_CACHE at a cache that holds the download"
        raise SourceError(exc.what, where=exc.where, hint=hint)

    def _resolve_online(self) -> dict:
        cfg: WikimediaDumpConfig = self.params
        base = f"{cfg.mirror}/{cfg.wiki}"
        if cfg.date == "latest":
            candidates = self._list_dates(base)
        else:
            candidates = [cfg.date]
        checked = []
        for date in candidates:
            status_url = f"{base}/{date}/dumpstatus.json"
            try:
                status = http.get_json(status_url)
            except http.HostUnreachable:
                raise
            except SourceError as exc:
                if cfg.date != "latest":
                    raise SourceError(
                        f"cannot read the status of dump {cfg.wiki} {date} ({exc.what})",
                        where=redact_url(status_url),
                        hint="check the date (YYYYMMDD) and the mirror; 'date: latest' picks the newest finished dump",
                    ) from None
                checked.append(f"{date} (no dumpstatus.json)")
                continue
            jobs = status.get("jobs") or {}
            job = jobs.get(JOB) or {}
            state = job.get("status", "missing")
            if state == "done":
                # Big wikis list split parts under the multistream job and the recombined
                # single file under a separate job; use that one when it is finished too.
                recombined = jobs.get(JOB + "recombine") or {}
                if not _lists_combined(job, cfg.wiki, date) and recombined.get("status") == "done":
                    job = {**job, "files": {**(job.get("files") or {}), **(recombined.get("files") or {})}}
                return self._pin(base, date, job)
            checked.append(f"{date} ({state})")
            if cfg.date != "latest":
                raise SourceError(
                    f"dump {cfg.wiki} {date} is not finished: its {JOB} job is {state!r}",
                    where=redact_url(status_url),
                    hint="use a finished date, or 'date: latest' to pick the newest finished dump",
                )
        raise SourceError(
            f"no dump of {cfg.wiki} has a finished {JOB} job; checked: {', '.join(checked) or 'no dates found'}",
            where=redact_url(base + "/"),
            hint="try again later, pick a date explicitly, or use another mirror",
        )

    def _list_dates(self, base: str) -> list[str]:
        dates: set[str] = set()
        errors = []
        try:
            dates.update(re.findall(r'href="(?:\./)?(\d{8})/?"', http.get_text(base + "/")))
        except http.HostUnreachable:
            raise
        except SourceError as exc:
            errors.append(exc.what)
        if not dates:  # no directory listing: the latest/ RSS names the current date
            rss = f"{base}/latest/{self.params.wiki}-latest-pages-articles-multistream.xml.bz2-rss.xml"
            try:
                dates.update(re.findall(r"/(\d{8})(?:/|<)", http.get_text(rss)))
            except http.HostUnreachable:
                raise
            except SourceError as exc:
                errors.append(exc.what)
        if not dates:
            raise SourceError(
                f"cannot list the dump dates of {self.params.wiki}" + (f" ({errors[0]})" if errors else ""),
                where=redact_url(base + "/"),
                hint="check the mirror URL and the wiki name (e.g. zhwiki), or give an explicit date",
            )
        return sorted(dates, reverse=True)

    def _pin(self, base: str, date: str, job: dict) -> dict:
        cfg: WikimediaDumpConfig = self.params
        files = job.get("files") or {}
        xml_name = f"{cfg.wiki}-{date}-pages-articles-multistream.xml.bz2"
        idx_name = f"{cfg.wiki}-{date}-pages-articles-multistream-index.txt.bz2"
        for name in (xml_name, idx_name):
            if name not in files:
                raise SourceError(
                    f"the {JOB} job of {cfg.wiki} {date} does not list {name}",
                    where=redact_url(f"{base}/{date}/dumpstatus.json"),
                    hint=f"files listed: {', '.join(sorted(files)) or 'none'}",
                )
        published: dict[str, dict[str, str]] = {xml_name: {}, idx_name: {}}
        for algo in ("md5", "sha1"):
            url = f"{base}/{date}/{cfg.wiki}-{date}-{algo}sums.txt"
            try:
                sums = parse_sums(http.get_text(url))
            except http.HostUnreachable:
                raise
            except SourceError:
                sums = {}
            for name in published:
                from_file = sums.get(name)
                from_status = files[name].get(algo)
                if from_file and from_status and from_file.lower() != from_status.lower():
                    raise SourceError(
                        f"{algo} of {name} differs between {algo}sums.txt ({from_file}) and dumpstatus.json ({from_status})",
                        where=redact_url(url),
                        hint="the mirror is inconsistent (a dump being replaced?); try again later or use another mirror",
                    )
                if from_file or from_status:
                    published[name][algo] = (from_file or from_status).lower()
        if cfg.checksum == "require":
            for name, sums in published.items():
                if not sums:
                    raise SourceError(
                        f"no published md5/sha1 for {name}",
                        where=redact_url(f"{base}/{date}/"),
                        hint="set checksum: verify (check when available) or skip on this source to proceed without",
                    )
        if cfg.checksum == "skip":
            published = {name: {} for name in published}

        def entry(name: str) -> dict:
            return {"name": name, "size": files[name].get("size"), **published[name]}

        return {
            "identity": {"wiki": cfg.wiki, "date": date, "xml": entry(xml_name), "index": entry(idx_name), "max_pages": cfg.max_pages},
            "urls": {"xml": f"{base}/{date}/{xml_name}", "index": f"{base}/{date}/{idx_name}", "dumpstatus": f"{base}/{date}/dumpstatus.json"},
            "mirror": redact_url(cfg.mirror),
        }

    # ---- run: download and parse ----------------------------------------------------------
    def run(self, ctx: NodeContext) -> dict:
        cfg: WikimediaDumpConfig = self.params
        ident, urls = ctx.resolved["identity"], ctx.resolved["urls"]
        cache = ctx.run.cache_dir / "wikimedia" / cfg.wiki / ident["date"]
        records = []
        if cfg.max_pages:
            entries, end = self._cached_index_head(cache, urls["index"], cfg.max_pages, ident["xml"]["size"])
            xml_path, record = self._fetch_head(urls["xml"], cache / ident["xml"]["name"], end, entries, ctx)
            records.append(record)
            allowed = {e[1] for e in entries}
            file_size = end
        else:
            for key in ("index", "xml"):
                records.append(self._download(urls[key], cache / ident[key]["name"], ident[key], ctx))
            xml_path = Path(records[1].path)
            # Keep only the distinct stream offsets: the full zhwiki index has millions of titles.
            offsets, n_pages = [], 0
            for offset, _, _ in mx.iter_index_entries(mx.iter_text(mx.iter_compressed(Path(records[0].path)))):
                n_pages += 1
                if not offsets or offset != offsets[-1]:
                    offsets.append(offset)
            allowed = None
            file_size = xml_path.stat().st_size
        if cfg.max_pages:
            offsets, n_pages = [e[0] for e in entries], len(entries)
        if not n_pages:
            raise SourceError("the multistream index lists no pages", where=redact_url(urls["index"]))
        ranges = mx.stream_ranges(offsets, file_size)
        header = mx.read_header(xml_path, ranges[0][0])
        base = header.get("article_base") or mx.wiki_article_base(cfg.wiki)
        groups = [ranges[i : i + cfg.streams_per_partition] for i in range(0, len(ranges), cfg.streams_per_partition)]
        tasks = []
        for i, group in enumerate(groups):
            start, end = group[0][0], group[-1][1]
            tasks.append((str(xml_path), start, end, cfg.wiki, cfg.name, cfg.license, base, sorted(allowed) if allowed else None, self.node, str(ctx.part_path(i)), str(ctx.removed_path(i))))
        ctx.run_tasks(parse_dump_task, tasks, desc="parse streams")
        ctx.provenance["downloads"] = [r.to_json() for r in records]
        ctx.provenance["siteinfo"] = {k: v for k, v in header.items() if k != "namespaces"}
        return {"index_pages": n_pages, "streams": len(ranges), "partitions": len(groups)}

    def _download(self, url: str, dest: Path, meta: dict, ctx: NodeContext) -> http.DownloadRecord:
        expected = {a: meta[a] for a in ("md5", "sha1") if meta.get(a)}
        with _byte_progress(ctx, dest.name) as update:
            record = http.download(url, dest, cache_root=ctx.run.cache_dir, expected=expected, on_progress=update)
        if meta.get("size") and record.bytes != meta["size"]:
            raise SourceError(
                f"size mismatch: dumpstatus.json says {meta['size']} bytes, got {record.bytes}",
                where=redact_url(url),
                hint="the mirror may be serving a different dump; delete the cached file and re-run",
            )
        ctx.run.console.log(f"\\[{self.node}] {dest.name}: {record.bytes:,} bytes, verified {', '.join(record.verified) or 'nothing (no published checksum)'}{' (cached)' if record.from_cache else ''}")
        return record

    def _cached_index_head(self, cache: Path, index_url: str, max_pages: int, xml_size: int | None) -> tuple[list[tuple[int, int, str]], int]:
        """``_index_head``, remembered per dump and page count (a dump never changes once done), so
        that a sample can be run again offline."""
        path = cache / f"index-head-{max_pages}.json"
        if path.is_file():
            head = storage.read_json(path)
            return [tuple(e) for e in head["entries"]], head["end"]
        entries, end = self._index_head(index_url, max_pages, xml_size)
        storage.atomic_write_json(path, {"entries": entries, "end": end})
        return entries, end

    def _index_head(self, index_url: str, max_pages: int, xml_size: int | None) -> tuple[list[tuple[int, int, str]], int]:
        """The first ``max_pages`` index entries and the byte where their last stream ends,
        reading the compressed index in ranged chunks and stopping as soon as that is known."""
        entries: list[tuple[int, int, str]] = []
        end = None
        texts = mx.iter_text(mx.iter_bz2_bytes(http.iter_ranges(index_url, chunk_size=1 << 15)))
        for entry in mx.iter_index_entries(texts):
            if len(entries) < max_pages:
                entries.append(entry)
            elif entry[0] > entries[-1][0]:
                end = entry[0]
                break
        if end is None:
            if not xml_size:
                raise SourceError("cannot tell where the last stream ends: dumpstatus.json gives no size", where=redact_url(index_url))
            end = int(xml_size)
        return entries, end

    def _fetch_head(self, url: str, dest: Path, end: int, entries: list[tuple[int, int, str]], ctx: NodeContext) -> tuple[Path, http.DownloadRecord]:
        """Bytes 0..end of the dump (the ``max_pages`` sample), cached. Whole-file checksums cannot
        apply to a piece, so the piece is verified itself: every bz2 stream in it must decompress
        (each carries a CRC) and hold every page the index lists for it. A cached piece is used
        only if it passed that check and its sha256 still matches; a piece that fails is moved to
        quarantine and fetched again (once more, then the run stops)."""
        path = dest.with_name(f"{dest.name}.bytes-0-{end}")
        meta_path = path.with_name(path.name + ".meta.json")
        if path.exists() and meta_path.exists():
            meta = storage.read_json(meta_path)
            if "bz2-streams+index-pages" in (meta.get("verified") or []) and path.stat().st_size == end and storage.file_digests(path)["sha256"] == (meta.get("checksums") or {}).get("sha256"):
                return path, http.DownloadRecord(**{**meta, "path": str(path), "from_cache": True})
            self._quarantine_piece(path, meta_path, ctx, "its cached copy was never verified or has changed")
        elif path.exists():
            self._quarantine_piece(path, meta_path, ctx, "it has no record of verification")
        for attempt in (1, 2):
            data, headers = http.fetch_range(url, 0, end)
            if len(data) != end:
                raise SourceError(f"short read: asked for bytes 0-{end - 1}, got {len(data)} bytes", where=redact_url(url), hint="re-run to try again")
            storage.atomic_write_bytes(path, data)
            problem = _sample_problem(path, end, entries)
            if problem is None:
                break
            q = self._quarantine_piece(path, meta_path, ctx, problem)
            if attempt == 2:
                raise SourceError(
                    f"the max_pages sample (bytes 0-{end - 1}) is corrupt twice in a row: {problem}; moved to {q}",
                    where=redact_url(url),
                    hint="the mirror serves damaged bytes for this range: try again later or use another mirror (--set sources.NAME.mirror=...)",
                )
        from datetime import datetime, timezone

        record = http.DownloadRecord(
            url=url, path=str(path), bytes=len(data), checksums=storage.file_digests(path), verified=["bz2-streams+index-pages"],
            etag=headers.get("etag"), last_modified=headers.get("last_modified"),
            retrieved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), byte_range=[0, end],
        )
        storage.atomic_write_json(meta_path, {k: v for k, v in record.to_json().items() if k not in ("path", "from_cache")})
        ctx.run.console.log(f"\\[{self.node}] fetched bytes 0-{end - 1} of {dest.name} (max_pages sample; verified: every bz2 stream decompresses and holds the {len(entries)} pages of the index)")
        return path, record

    def _quarantine_piece(self, path: Path, meta_path: Path, ctx: NodeContext, why: str) -> Path:
        qdir = ctx.run.cache_dir / "quarantine"
        qdir.mkdir(parents=True, exist_ok=True)
        target = qdir / f"{path.name}.{time.time_ns()}.bad"
        os.replace(path, target)
        meta_path.unlink(missing_ok=True)
        ctx.run.console.log(f"\\[{self.node}] the cached sample {path.name} is not used ({why}): moved to {target}; fetching it again")
        return target


def _sample_problem(path: Path, end: int, entries: list[tuple[int, int, str]]) -> str | None:
    """None if bytes 0..end decompress stream by stream and hold every page of ``entries``;
    otherwise what is wrong."""
    want = {page_id for _, page_id, _ in entries}
    try:
        for kind, rec in mx.iter_pages(mx.iter_text(mx.iter_bz2_range(path, 0, end))):
            if kind == "page":
                want.discard(rec["page_id"])
    except mx.TruncatedInput as exc:
        return exc.what
    if want:
        return f"{len(want)} of the {len(entries)} pages the index lists are not in it (e.g. page id {min(want)})"
    return None


class _byte_progress:
    """A rich progress bar for one download, as a context manager yielding an update callback."""

    def __init__(self, ctx: NodeContext, label: str):
        from pipeline.exec.executors import make_progress

        self.bar = make_progress(ctx.run.console) if ctx.run.progress else None
        self.label = label

    def __enter__(self):
        if self.bar is None:
            return lambda done, total: None
        self.bar.start()
        task = self.bar.add_task(f"download {self.label}", total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


OWN_FILE_HINT = "this is your own input file (grist only reads it): restore a complete copy from where it came from, then run again"


def parse_dump_task(
    xml_path: str, start: int, end: int | None, wiki: str, source: str, license: str, article_base: str,
    allowed_ids: list[int] | None, node: str, out_path: str, removed_path: str, own_file: bool = False,
) -> dict:
    """Parse the pages in bytes [start, end) of a dump file into a raw-page part and a ledger part.
    ``own_file``: a local source's file (damage is the user's to repair), not a verified download."""
    try:
        return _parse_dump(xml_path, start, end, wiki, source, license, article_base, allowed_ids, node, out_path, removed_path)
    except mx.TruncatedInput as exc:
        if not own_file:
            raise
        raise mx.TruncatedInput(exc.what, where=exc.where, hint=f"{exc.hint}: {OWN_FILE_HINT}") from None


def _parse_dump(xml_path, start, end, wiki, source, license, article_base, allowed_ids, node, out_path, removed_path) -> dict:
    path = Path(xml_path)
    chunks = mx.iter_bz2_range(path, start, end) if path.name.endswith(".bz2") or ".bz2." in path.name else mx.iter_compressed(path)
    allowed = set(allowed_ids) if allowed_ids is not None else None
    cols: dict[str, list] = {name: [] for name in PAGE_SCHEMA.names}
    errors: list[dict] = []
    for kind, rec in mx.iter_pages(mx.iter_text(chunks)):
        if kind == "error":
            errors.append(rec)
            continue
        if allowed is not None and rec["page_id"] not in allowed:
            continue  # beyond max_pages: never part of the sample
        cols["id"].append(f"{wiki}/{rec['page_id']}")
        cols["source"].append(source)
        cols["license"].append(license)
        cols["title"].append(rec["title"])
        cols["url"].append(mx.article_url(article_base, rec["title"]))
        cols["timestamp"].append(rec["timestamp"])
        cols["revision_id"].append(rec["revision_id"])
        cols["text"].append(rec["text"])
        cols["ns"].append(rec["ns"])
        cols["redirect"].append(rec["redirect"])
        cols["page_id"].append(rec["page_id"])
    table = pa.table(cols, schema=PAGE_SCHEMA)
    err_table = pa.table(
        {
            "id": [f"{wiki}/{e['page_id']}" if e["page_id"] is not None else f"{wiki}/unparsed@{start}#{k}" for k, e in enumerate(errors)],
            "source": [source] * len(errors),
            "title": [e["title"] for e in errors],
            "text": [e.get("raw", "") for e in errors],
        }
    )
    removed = removed_rows(err_table, node, [e["reason"] for e in errors], [{"detail": e.get("detail", e["reason"]), "file": path.name, "byte_range": [start, end]} for e in errors])
    storage.write_parquet(table, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    return {"in": table.num_rows + len(errors), "out": table.num_rows, "removed": len(errors), "removed_by_reason": _count([e["reason"] for e in errors]), "bytes_compressed": (end or path.stat().st_size) - start}


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
