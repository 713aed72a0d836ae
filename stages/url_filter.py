"""Stage ``url_filter``: drop documents by their URL -- domain/URL blocklists, URL word rules, an
allow-list and a cap on documents per domain.

Rules, in this order (the first that fires is the ledger reason):

1. ``allow`` / ``allow_files``: a document whose host (or a parent domain) or URL is listed is
   kept by every rule below except the domain cap.
2. ``lists`` (named lists or files, one domain / URL / URL prefix per line, ``#`` comments; see
   :func:`pipeline.text.blocklists.domains.parse_entry`) and ``domains`` (literal entries): a listed
   domain blocks itself and every subdomain. Reason ``url:blocklist:<list>``, signals
   ``{"list", "kind": domain|url|prefix, "matched"}``. The default, ``datatrove-ut1``, is the
   UT1-derived archive datatrove ships (FineWeb's and RefinedWeb's URL blocklist, CC BY-SA 4.0:
   recorded in provenance and in the node's stats).
3. ``words``: a URL containing one of these words (the URL split on everything outside
   ``[a-z0-9]``, lower case) -> ``url:word:<list>``; ``soft_words``: at least
   ``soft_word_threshold`` distinct ones -> ``url:soft-words:<list>``; ``subwords``: a substring
   of the URL with everything outside ``[a-z0-9]`` removed -> ``url:subword:<list>``. The default
   lists are RefinedWeb's, as datatrove's ``URLFilter`` (FineWeb) uses them.
4. ``max_per_domain``: at most N documents per registered domain (Public Suffix List snapshot of
   ``tldextract``, never fetched; ``cap_by: host`` counts hosts instead) over the **whole input**
   of the node. Which ones stay is deterministic and independent of order and partitioning: the
   N with the smallest ``xxh3_64(id, seed=cap_seed)``. This needs a global view, so the stage
   runs in two phases: ``domains`` (each partition reports, per domain, its count and its N
   smallest keys: a domain's global N smallest are among them) and the final write, which drops
   the rest with reason ``url:domain-cap`` and signals ``{"domain", "cap", "domain_docs"}``.

Documents without a URL are kept (nothing to judge) and counted (``url_filter.no_url``), unless
``missing_url: drop`` (reason ``url:missing``). Everything is computed per partition over whole
columns (polars); Python runs once per distinct host, never per document.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.common import storage
from pipeline.common.errors import StageError
from pipeline.core.stage import REMOVED_SCHEMA, MapStage, NodeContext, _stage_instance, class_path, doc_stats, removed_rows
from pipeline.text.blocklists import domains as dl


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lists: list[str] = Field(default_factory=lambda: [dl.DATATROVE_UT1], description=f"blocklists: named ({', '.join(dl.NAMED_DOMAIN_LISTS)}) or files of one domain/URL/prefix per line")
    domains: list[str] = Field(default_factory=list, description="extra entries to block (domains, URLs, URL prefixes ending in *)")
    words: list[str] = Field(default_factory=lambda: ["datatrove:banned_words"], description="URL word lists: named (datatrove:banned_words) or files; any word blocks")
    soft_words: list[str] = Field(default_factory=lambda: ["datatrove:soft_banned_words"], description="URL word lists where soft_word_threshold distinct words block")
    soft_word_threshold: int = Field(2, ge=1)
    subwords: list[str] = Field(default_factory=lambda: ["datatrove:banned_subwords"], description="substring lists, matched in the URL reduced to [a-z0-9]")
    allow: list[str] = Field(default_factory=list, description="domains/URLs never blocked (subdomains included)")
    allow_files: list[str] = Field(default_factory=list, description="files of allowed domains/URLs")
    max_per_domain: int | None = Field(None, ge=1, description="at most this many documents per domain (None: no cap)")
    cap_by: Literal["registered", "host"] = Field("registered", description="registered: the registered domain (a.b.example.co.uk -> example.co.uk); host: the full host")
    private_suffixes: bool = Field(True, description="treat private suffixes (github.io, blogspot.com) as suffixes: alice.github.io is its own domain")
    cap_seed: int = Field(0, ge=0, description="seed of the id hash that picks which documents a capped domain keeps")
    missing_url: Literal["keep", "drop"] = "keep"

    @field_validator("lists")
    @classmethod
    def _named_lists_available(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in dl.NAMED_DOMAIN_LISTS and importlib.util.find_spec(dl.NAMED_DOMAIN_LISTS[name]["package"]) is None:
                raise ValueError(f"the list {name!r} ships in the {dl.NAMED_DOMAIN_LISTS[name]['package']!r} package, which is not installed (pip install {dl.NAMED_DOMAIN_LISTS[name]['package']}, or give list files)")
        return value

    @field_validator("words", "soft_words", "subwords")
    @classmethod
    def _named_words_available(cls, value: list[str]) -> list[str]:
        if any(v in dl.NAMED_URL_WORDS for v in value) and importlib.util.find_spec("datatrove") is None:
            raise ValueError("the datatrove:* URL word lists ship in the 'datatrove' package, which is not installed (pip install datatrove, or give word files)")
        return value


def _load(kind: str, spec: str, loader):
    """Load one list; a missing or unreadable file is the user's to fix: say which and how."""
    from pipeline.exec.task_sync import ensure_local

    named = spec in dl.NAMED_DOMAIN_LISTS or spec in dl.NAMED_URL_WORDS
    path = spec if named else str(ensure_local(spec))
    try:
        return loader(path)
    except FileNotFoundError as e:
        raise StageError(f"url_filter: {kind} list not found: {spec}", where="url_filter params", hint=f"give an existing file (one entry per line, # comments) or a named list ({', '.join([*dl.NAMED_DOMAIN_LISTS, *dl.NAMED_URL_WORDS])}); {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StageError(f"url_filter: cannot read {kind} list {spec}: {e}", where="url_filter params", hint="a list is a UTF-8 text file, one entry per line") from None


def _literal_list(name: str, entries: list[str]) -> dl.DomainList:
    parsed = [e for e in (dl.parse_entry(x) for x in entries) if e is not None]
    pick = {k: sorted({v for kk, v in parsed if kk == k}) for k in ("domain", "url", "prefix")}
    info = {"name": name, "domains": len(pick["domain"]), "urls": len(pick["url"]), "prefixes": len(pick["prefix"])}
    return dl.DomainList(name, np.unique(dl.hash64(pick["domain"])), np.unique(dl.hash64(pick["url"])), tuple(pick["prefix"]), info)


class UrlFilter(MapStage):
    name = "url_filter"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.blocklists.domains",)
    description = "URL blocklists (UT1 via datatrove, files), URL word rules, allow-list, per-domain caps"

    # ------------------------------------------------------------------ lists
    @cached_property
    def _lists(self) -> list[dl.DomainList]:
        p: Params = self.params
        out = [_load("domain", spec, dl.load_domain_list) for spec in p.lists]
        if p.domains:
            out.append(_literal_list("params.domains", p.domains))
        return out

    @cached_property
    def _allow(self) -> list[dl.DomainList]:
        p: Params = self.params
        out = [_load("allow", spec, lambda path: dl.load_file(path, name="allow")) for spec in p.allow_files]
        if p.allow:
            out.append(_literal_list("allow", p.allow))
        return out

    @cached_property
    def _words(self) -> dict[str, list[tuple[str, list[str], dict]]]:
        p: Params = self.params
        return {kind: [_load("word", spec, dl.load_url_words) for spec in getattr(p, kind)] for kind in ("words", "soft_words", "subwords")}

    def provenance(self) -> dict:
        p: Params = self.params
        out = {
            "lists": [lst.info for lst in self._lists],
            "allow": [lst.info for lst in self._allow],
            "url_words": {kind: [info for _, _, info in items] for kind, items in self._words.items()},
            "soft_word_threshold": p.soft_word_threshold,
        }
        if p.max_per_domain:
            out["domain_cap"] = {"max_per_domain": p.max_per_domain, "cap_by": p.cap_by, "kept": f"smallest xxh3_64(id, seed={p.cap_seed})", "public_suffix_list": dl.public_suffix_info()}
        return {"url_filter": out}

    # ------------------------------------------------------------------ rules
    def judge(self, table: pa.Table) -> tuple[np.ndarray, list[str | None], list[dict | None], pl.Series]:
        """Per row: removed by a rule (bool), the reason, the signals, and the host."""
        p: Params = self.params
        n = table.num_rows
        urls = pl.Series("url", table["url"] if "url" in table.column_names else pa.nulls(n, pa.string())).cast(pl.String) if n else pl.Series("url", [], dtype=pl.String)
        host = dl.hosts(urls)
        reason = np.full(n, None, dtype=object)
        signals = np.full(n, None, dtype=object)
        missing = (host == "").to_numpy() if n else np.zeros(0, bool)
        if p.missing_url == "drop":
            reason[missing] = "url:missing"
            for i in np.flatnonzero(missing):
                signals[i] = {"url": None}
        open_ = (reason == None) & ~missing  # noqa: E711 - elementwise
        if self._allow and open_.any():
            allowed = np.asarray(dl.match_lists(urls, self._allow).list, dtype=object) != None  # noqa: E711
            open_ &= ~allowed
        if self._lists and open_.any():
            m = dl.match_lists(urls, self._lists)
            for i in np.flatnonzero(open_ & (np.asarray(m.list, dtype=object) != None)):  # noqa: E711
                reason[i] = f"url:blocklist:{m.list[i]}"
                signals[i] = {"list": m.list[i], "kind": m.kind[i], "matched": m.entry[i] if m.kind[i] == "domain" else _redact(m.entry[i])}
            open_ &= reason == None  # noqa: E711
        if open_.any():
            words = dl.url_words(urls) if (self._words["words"] or self._words["soft_words"]) else None
            for name, vocab, _ in self._words["words"]:
                hit, first, _ = dl.first_word_hits(words, vocab, n)
                for i in np.flatnonzero(open_ & hit):
                    reason[i], signals[i] = f"url:word:{name}", {"word": first[i], "host": host[int(i)]}
                open_ &= ~hit
            for name, vocab, _ in self._words["soft_words"]:
                hit, first, count = dl.first_word_hits(words, vocab, n)
                hit &= count >= p.soft_word_threshold
                if hit.any():
                    w = words.filter(pl.col("word").is_in(pl.Series(list(vocab), dtype=pl.String).implode())).group_by("row").agg(pl.col("word"))
                    found = dict(zip(w.get_column("row").to_list(), w.get_column("word").to_list()))
                    for i in np.flatnonzero(open_ & hit):
                        reason[i], signals[i] = f"url:soft-words:{name}", {"words": found.get(int(i), []), "count": int(count[i]), "threshold": p.soft_word_threshold, "host": host[int(i)]}
                open_ &= ~hit
            for name, vocab, _ in self._words["subwords"]:
                if not open_.any():
                    break
                first = dl.substring_hits(urls, vocab)
                hit = np.asarray([f is not None for f in first], dtype=bool)
                for i in np.flatnonzero(open_ & hit):
                    reason[i], signals[i] = f"url:subword:{name}", {"subword": first[i], "host": host[int(i)]}
                open_ &= ~hit
        return reason != None, reason.tolist(), signals.tolist(), host  # noqa: E711

    def cap_keys(self, table: pa.Table, host: pl.Series) -> tuple[pl.Series, np.ndarray]:
        """(domain per row, the id hash that ranks rows within a domain)."""
        import xxhash

        p: Params = self.params
        domain = host if p.cap_by == "host" else dl.registered_domains(host, p.private_suffixes)
        ids = table["id"].to_pylist() if "id" in table.column_names else [str(i) for i in range(table.num_rows)]
        f, seed = xxhash.xxh3_64_intdigest, p.cap_seed
        keys = np.fromiter((f((x or "").encode("utf-8"), seed) >> 1 for x in ids), dtype=np.int64, count=len(ids))  # 63 bits: JSON- and int64-safe
        return domain, keys

    def process(self, table: pa.Table, cutoffs: dict[str, list] | None = None):
        """Apply the rules; with ``cutoffs`` ({domain: [key of the last kept document, domain's
        documents]}) also the domain cap."""
        p: Params = self.params
        drop, reasons, signals, host = self.judge(table)
        if cutoffs:
            domain, keys = self.cap_keys(table, host)
            cut = domain.replace_strict({d: c[0] for d, c in cutoffs.items()}, default=None, return_dtype=pl.Int64)
            over = (pl.Series(keys) > cut).fill_null(False).to_numpy()  # int64 compare: keys use 63 bits
            capped = ~drop & over
            for i in np.flatnonzero(capped):
                d = domain[int(i)]
                reasons[i], signals[i] = "url:domain-cap", {"domain": d, "cap": p.max_per_domain, "domain_docs": int(cutoffs[d][1]), "cap_by": p.cap_by}
            drop = drop | capped
        kept = table.filter(pa.array(~drop))
        gone = np.flatnonzero(drop)
        removed = removed_rows(table.take(pa.array(gone, pa.int64())), self.node, [reasons[i] for i in gone], [signals[i] for i in gone]) if len(gone) else REMOVED_SCHEMA.empty_table()
        no_url = int((host == "").sum()) if table.num_rows else 0
        return kept, removed, {"url_filter": {"no_url": no_url}}

    # ------------------------------------------------------------------ the run: one phase, or two with a cap
    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        ctx.provenance.update(self.provenance())
        licenses = {lst.info.get("name"): lst.info.get("license") for lst in self._lists if lst.info.get("license")}
        extra = {"url_filter": {"list_licenses": licenses}} if licenses else {}
        if not p.max_per_domain:
            super().run(ctx)
            return extra
        parts = [str(part) for inp in ctx.inputs for part in inp.parts]
        cls, params = class_path(type(self)), self.params.model_dump(mode="json")
        reports = ctx.run_tasks(_domains_task, [(cls, params, self.node, part) for part in parts], desc="domains", phase="domains")
        cutoffs = global_cutoffs(reports, p.max_per_domain)
        ctx.provenance["url_filter"]["domain_cap"]["capped_domains"] = len(cutoffs)
        tasks = [(cls, params, self.node, parts[i], str(ctx.part_path(i)), str(ctx.removed_path(i)), cutoffs) for i in range(len(parts))]
        ctx.run_tasks(_final_task, tasks, desc="write")
        top = sorted(cutoffs.items(), key=lambda kv: -kv[1][1])[:20]
        return {"url_filter": {**extra.get("url_filter", {}), "capped_domains": len(cutoffs), "largest_capped": {d: c[1] for d, c in top}}}


def _redact(entry: str | None) -> str | None:
    from pipeline.io.urls import redact_url

    return redact_url("http://" + entry).removeprefix("http://") if entry else entry


def global_cutoffs(reports: list[dict], cap: int) -> dict[str, list]:
    """Merge the partitions' reports: for each domain over the cap, [the cap-th smallest key,
    the domain's documents]. Documents of that domain with a larger key are dropped."""
    frames = [pl.DataFrame({"domain": r["domain"], "n": r["n"], "keys": r["keys"]}, schema={"domain": pl.String, "n": pl.Int64, "keys": pl.List(pl.Int64)}) for r in reports if r["domain"]]
    if not frames:
        return {}
    df = pl.concat(frames)
    over = df.group_by("domain").agg(pl.col("n").sum()).filter(pl.col("n") > cap)
    if over.height == 0:
        return {}
    keys = df.join(over.select("domain"), on="domain").select("domain", "keys").explode("keys").group_by("domain").agg(pl.col("keys").bottom_k(cap).max().alias("cut"))
    df = over.join(keys, on="domain")
    return {d: [int(c), int(n)] for d, c, n in df.select("domain", "cut", "n").sort("domain").iter_rows()}


def _domains_task(stage_class: str, params: dict, node: str, in_path: str) -> dict:
    """Phase ``domains``: per domain of the documents the rules keep, the count and the smallest
    ``max_per_domain`` keys."""
    stage = _stage_instance(stage_class, json.dumps(params, sort_keys=True), node)
    table = storage.read_parquet(Path(in_path))
    drop, _, _, host = stage.judge(table)
    domain, keys = stage.cap_keys(table, host)
    df = pl.DataFrame({"domain": domain, "k": keys}).filter(pl.Series(~drop) & (pl.col("domain") != ""))
    g = df.group_by("domain").agg(pl.len().alias("n"), pl.col("k").bottom_k(stage.params.max_per_domain).alias("keys")).sort("domain")
    return {"domain": g.get_column("domain").to_list(), "n": g.get_column("n").to_list(), "keys": g.get_column("keys").to_list()}


def _final_task(stage_class: str, params: dict, node: str, in_path: str, out_path: str, removed_path: str, cutoffs: dict) -> dict:
    stage = _stage_instance(stage_class, json.dumps(params, sort_keys=True), node)
    table = storage.read_parquet(Path(in_path))
    kept, removed, extra = stage.process(table, cutoffs)
    storage.write_parquet(kept, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    return {**extra, **doc_stats(table.num_rows, kept, removed)}
