"""Domain and URL blocklists, URL keyword rules and registered domains, over whole columns.

A **domain list** holds domains (a listed domain blocks itself and every subdomain: an entry
``example.com`` blocks ``www.example.com`` and ``a.b.example.com``, not ``badexample.com``),
exact URLs and URL prefixes. Entries are kept as sorted 64-bit hashes (xxh3 of the UTF-8 bytes,
stable across versions and machines), so the 4.5 million domains of datatrove's archive take
36 MB per process and a lookup is a ``searchsorted``; the chance that an unlisted domain shares
a listed one's hash is about 2.5e-13 per lookup.

URLs are read with a regular expression over the column (no per-row Python): the host is
lower-cased, its port, user info and trailing dot dropped; hosts with non-ASCII characters are
converted to IDNA (punycode) once per distinct host, as lists write them. For a document the
candidates are its host and every parent domain of it (``a.b.example.com``, ``b.example.com``,
``example.com``, ``com``), hashed once per distinct candidate.

**Registered domains** (for per-domain caps) come from the Public Suffix List snapshot shipped
inside the ``tldextract`` package (BSD-3-Clause; the list is MPL-2.0), read with
``suffix_list_urls=()`` and no cache directory: nothing is fetched at run time. Private suffixes (``github.io``, ``blogspot.com``) count
as suffixes by default, so ``alice.github.io`` and ``bob.github.io`` are two sites.

Named lists (see :data:`NAMED_DOMAIN_LISTS`, :data:`NAMED_URL_WORDS`) come from installed
packages; a path names a file of one entry per line.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from pipeline.common import storage

# scheme:// (or a bare //), user info, then the host (an IPv6 literal in brackets or up to : / ? #)
_HOST_RE = r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.\-]*://|//)?(?:[^@/?#\s]*@)?(\[[^\]/]*\]|[^:/?#\s]*)"
_SCHEME_RE = r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.\-]*://|//)?(?:[^@/?#\s]*@)?"
_PORT_RE = r"^([^/?#]*?)(?::[0-9]*)?([/?#]|$)"
_IPV4_RE = r"^[0-9]{1,3}(?:\.[0-9]{1,3}){3}$"

DATATROVE_UT1 = "datatrove-ut1"

# name -> (what it is, license, origin). The archive has no license file of its own: its domains
# are UT1's (RefinedWeb, Penedo et al. 2023, section G.1, describes the aggregation datatrove's
# URLFilter ships), and UT1's lists are CC BY-SA 4.0.
NAMED_DOMAIN_LISTS = {
    DATATROVE_UT1: {
        "what": "domains and URLs of datatrove's bundled URL-filter archive (the blocklist FineWeb and RefinedWeb used: mostly adult sites)",
        "license": "CC-BY-SA-4.0",
        "origin": "UT1 blacklists, Universite Toulouse Capitole (https://dsi.ut-capitole.fr/blacklists/), aggregated by datatrove (package asset url_filterblacklists*.tar.gz)",
        "package": "datatrove",
    },
}

# RefinedWeb's URL word lists as datatrove ships them (package assets, Apache-2.0 package).
NAMED_URL_WORDS = {
    "datatrove:banned_words": "banned_words.txt",
    "datatrove:banned_subwords": "banned_subwords.txt",
    "datatrove:soft_banned_words": "soft_banned_words.txt",
}


def hash64(values: Iterable[str]) -> np.ndarray:
    """xxh3-64 of each string's UTF-8 bytes, as uint64."""
    import xxhash

    f = xxhash.xxh3_64_intdigest
    return np.fromiter((f(v.encode("utf-8")) for v in values), dtype=np.uint64)


def _is_in(hashes: np.ndarray, table: np.ndarray) -> np.ndarray:
    if len(table) == 0 or len(hashes) == 0:
        return np.zeros(len(hashes), dtype=bool)
    i = np.searchsorted(table, hashes)
    i[i == len(table)] = 0
    return table[i] == hashes


# ----------------------------------------------------------------------------- URLs
def _idna(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def hosts(urls: pl.Series) -> pl.Series:
    """Each URL's host: lower case, without port, user info or trailing dot, IDNA-encoded;
    empty for a missing or unparsable URL. A URL without a scheme (``example.com/a``) is read
    as host + path."""
    h = urls.cast(pl.String).fill_null("").str.extract(_HOST_RE, 1).fill_null("").str.to_lowercase().str.strip_suffix(".")
    non_ascii = h.str.contains(r"[^\x00-\x7f]")
    if non_ascii.any():
        distinct = h.filter(non_ascii).unique()
        mapping = dict(zip(distinct.to_list(), (_idna(x) for x in distinct.to_list())))
        h = pl.select(pl.when(non_ascii).then(h.replace(mapping)).otherwise(h)).to_series()
    return h.alias("host")


def normalize_urls(urls: pl.Series) -> pl.Series:
    """The form exact-URL and prefix entries are compared in: no scheme, user info, port or
    ``www.``; host lower case (IDNA); path, query and fragment as they are; no trailing ``/``."""
    u = urls.cast(pl.String).fill_null("")
    rest = u.str.replace(_SCHEME_RE, "").str.replace(r"^[^/?#]*", "")
    rest = rest.str.replace(r"^(?::[0-9]*)", "")
    h = hosts(urls).str.strip_prefix("www.")
    return (h + rest).str.strip_suffix("/").alias("url")


def normalize_entry(entry: str) -> str:
    return normalize_urls(pl.Series([entry if "://" in entry else "http://" + entry])).item()


def parents(host_values: pl.Series) -> pl.DataFrame:
    """(row, candidate, depth): every host and each of its parent domains, depth 0 the host."""
    df = pl.DataFrame({"row": np.arange(len(host_values), dtype=np.int64), "candidate": host_values}).filter(pl.col("candidate") != "")
    out, depth = [], 0
    while df.height:
        out.append(df.with_columns(depth=pl.lit(depth, pl.Int32)))
        df = df.filter(pl.col("candidate").str.contains(".", literal=True)).with_columns(pl.col("candidate").str.replace(r"^[^.]*\.", ""))
        depth += 1
    if not out:
        return pl.DataFrame(schema={"row": pl.Int64, "candidate": pl.String, "depth": pl.Int32})
    return pl.concat(out)


@lru_cache(maxsize=2)
def _extractor(private: bool):
    import tldextract

    # suffix_list_urls=() and cache_dir=None: the snapshot bundled in the package, never a fetch
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True, include_psl_private_domains=private)


def public_suffix_info() -> dict:
    from importlib import metadata

    return {"package": "tldextract", "version": metadata.version("tldextract"), "list": "Public Suffix List snapshot bundled in the package (.tld_set_snapshot)", "license": "BSD-3-Clause (package), MPL-2.0 (list)", "fetched_at_run_time": False}


def registered_domains(host_values: pl.Series, private_suffixes: bool = True) -> pl.Series:
    """Each host's registered domain (public suffix + one label) by the Public Suffix List; an IP
    address, ``localhost`` or a bare suffix stands for itself; empty stays empty. Computed once
    per distinct host."""
    ext = _extractor(private_suffixes)
    distinct = host_values.unique().to_list()
    mapping = {}
    for h in distinct:
        if not h or h.startswith("[") or re.match(_IPV4_RE, h):
            mapping[h] = h or ""
            continue
        r = ext.extract_str(h, include_psl_private_domains=private_suffixes)
        mapping[h] = f"{r.domain}.{r.suffix}" if r.domain and r.suffix else h
    return host_values.replace_strict(mapping, return_dtype=pl.String).alias("domain")


# ----------------------------------------------------------------------------- lists
@dataclass
class DomainList:
    """Hashed entries of one list and what to record about it."""

    name: str
    domains: np.ndarray  # sorted uint64
    urls: np.ndarray  # sorted uint64, normalized URLs
    prefixes: tuple[str, ...] = ()  # normalized URL prefixes (entries ending in *)
    info: dict = field(default_factory=dict)


def _datatrove_assets() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("datatrove")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("datatrove is not installed: the named list needs its package data (pip install datatrove)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


def _sha256(path: Path) -> str:
    return storage.file_digests(Path(path))["sha256"]


def _cache_file(digest: str) -> Path:
    return Path(tempfile.gettempdir()) / f"grist-blocklist-{digest[:24]}.npz"


def _load_cached(path: Path) -> dict | None:
    try:
        if hasattr(os, "getuid") and os.stat(path).st_uid != os.getuid():
            return None  # a file of another user in a shared temporary directory
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None


def _save_cached(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


@lru_cache(maxsize=4)
def load_datatrove_ut1() -> DomainList:
    from importlib import metadata

    assets = _datatrove_assets()
    archives = sorted(assets.glob("url_filterblacklists*.tar.gz"))
    if not archives:
        raise FileNotFoundError(f"no url_filterblacklists*.tar.gz in {assets} (datatrove {metadata.version('datatrove')})")
    archive = archives[-1]
    digest = _sha256(archive)
    cache = _cache_file(hashlib.sha256(f"ut1 xxh3 1 {digest}".encode()).hexdigest())
    arrays = _load_cached(cache)
    if arrays is None:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            domains = tar.extractfile(members["domains"]).read().decode("utf-8").split("\n")
            urls = tar.extractfile(members["urls"]).read().decode("utf-8").split("\n") if "urls" in members else []
        dom = np.unique(hash64(d.strip().lower().strip(".") for d in domains if d.strip() and not d.startswith("#")))
        url_norm = normalize_urls(pl.Series([u.strip() for u in urls if u.strip() and not u.startswith("#")], dtype=pl.String)) if urls else pl.Series([], dtype=pl.String)
        url = np.unique(hash64(url_norm.to_list()))
        arrays = {"domains": dom, "urls": url}
        _save_cached(cache, **arrays)
    info = {
        **NAMED_DOMAIN_LISTS[DATATROVE_UT1],
        "name": DATATROVE_UT1,
        "version": metadata.version("datatrove"),
        "file": archive.name,
        "sha256": digest,
        "domains": int(len(arrays["domains"])),
        "urls": int(len(arrays["urls"])),
    }
    return DomainList(DATATROVE_UT1, arrays["domains"], arrays["urls"], (), info)


def parse_entry(line: str) -> tuple[str, str] | None:
    """One line of a list file -> ("domain" | "url" | "prefix", normalized entry), or None for a
    blank line or a comment. Accepted: ``example.com``, ``.example.com``, ``*.example.com``,
    hosts-file lines (``0.0.0.0 example.com``), Adblock domain rules (``||example.com^``),
    URLs (``example.com/path``, with or without scheme) and URL prefixes (``example.com/adult/*``)."""
    s = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
    if not s:
        return None
    parts = s.split()
    if len(parts) >= 2 and parts[0] in ("0.0.0.0", "127.0.0.1", "::", "::1"):
        s = parts[1]
    elif len(parts) > 1:
        s = parts[0]
    if s.startswith("||"):
        s = s[2:].rstrip("^")
    if s.endswith("*") and ("/" in s or "?" in s):
        return "prefix", normalize_entry(s[:-1])
    if "/" in s.split("://", 1)[-1] or "?" in s:
        return "url", normalize_entry(s)
    host = s.split("://", 1)[-1].lstrip("*").strip(".").lower()
    host = _idna(host) if not host.isascii() else host
    return ("domain", host) if host else None


def load_file(path: str | os.PathLike, name: str | None = None) -> DomainList:
    """A list file: one domain, URL or URL prefix per line (:func:`parse_entry`)."""
    p = Path(path)
    data = p.read_bytes()
    entries: dict[str, list[str]] = {"domain": [], "url": [], "prefix": []}
    for line in data.decode("utf-8").splitlines():
        e = parse_entry(line)
        if e is not None:
            entries[e[0]].append(e[1])
    info = {"name": name or p.stem, "file": p.name, "sha256": hashlib.sha256(data).hexdigest(), "domains": len(set(entries["domain"])), "urls": len(set(entries["url"])), "prefixes": len(set(entries["prefix"]))}
    return DomainList(info["name"], np.unique(hash64(entries["domain"])), np.unique(hash64(entries["url"])), tuple(sorted(set(entries["prefix"]))), info)


def load_domain_list(spec: str) -> DomainList:
    """A named list (:data:`NAMED_DOMAIN_LISTS`) or a file path."""
    if spec == DATATROVE_UT1:
        return load_datatrove_ut1()
    if spec in NAMED_DOMAIN_LISTS:
        raise ValueError(f"no loader for {spec!r}")
    return load_file(spec)


def load_url_words(spec: str) -> tuple[str, list[str], dict]:
    """A named URL word list (:data:`NAMED_URL_WORDS`) or a file of one word per line ->
    (name, words normalized like datatrove: lower case, only ``[a-z0-9]``, info)."""
    from importlib import metadata

    if spec in NAMED_URL_WORDS:
        path = _datatrove_assets() / NAMED_URL_WORDS[spec]
        info = {"name": spec, "package": "datatrove", "version": metadata.version("datatrove"), "file": path.name, "license": "Apache-2.0 (datatrove package)", "origin": "RefinedWeb URL word lists as datatrove ships them"}
        name = spec
    else:
        path = Path(spec)
        info = {"name": path.stem, "file": path.name}
        name = path.stem
    data = path.read_bytes()
    info["sha256"] = hashlib.sha256(data).hexdigest()
    words = sorted({w for w in (normalize_word(x) for x in data.decode("utf-8").splitlines() if x.strip() and not x.lstrip().startswith("#")) if w})
    info["words"] = len(words)
    return name, words, info


def normalize_word(word: str) -> str:
    """datatrove's URL-word normalization: lower case, only ASCII letters and digits kept."""
    return "".join(c for c in word.lower() if c.isascii() and c.isalnum())


# ----------------------------------------------------------------------------- matching
@dataclass
class Match:
    """Per row: the first matching list's name (null: none), the kind of entry and the entry."""

    list: list[str | None]
    kind: list[str | None]
    entry: list[str | None]


def match_lists(urls: pl.Series, lists: Sequence[DomainList]) -> Match:
    """For each URL, the first list (in order) with its host or a parent domain, its exact
    (normalized) URL or a prefix of it; within a list: domain, then URL, then prefix."""
    n = len(urls)
    out_list = np.full(n, None, dtype=object)
    out_kind = np.full(n, None, dtype=object)
    out_entry = np.full(n, None, dtype=object)
    if n == 0 or not lists:
        return Match(out_list.tolist(), out_kind.tolist(), out_entry.tolist())
    host = hosts(urls)
    cand = parents(host)
    distinct = cand.get_column("candidate").unique()
    dh = pl.DataFrame({"candidate": distinct, "h": pl.Series(hash64(distinct.to_list()), dtype=pl.UInt64)})
    cand = cand.join(dh, on="candidate", how="left").sort(["row", "depth"], descending=[False, True])  # the shortest listed parent first
    ch = cand.get_column("h").to_numpy()
    need_url = any(len(lst.urls) or lst.prefixes for lst in lists)
    norm = normalize_urls(urls) if need_url else None
    url_h = hash64(norm.to_list()) if need_url and any(len(lst.urls) for lst in lists) else None
    undecided = np.ones(n, dtype=bool)
    for lst in lists:
        hit = _is_in(ch, lst.domains)
        if hit.any():
            rows_hit = cand.filter(pl.Series(hit)).unique("row", keep="first", maintain_order=True)
            r = rows_hit.get_column("row").to_numpy()
            sel = undecided[r]
            r = r[sel]
            out_list[r] = lst.name
            out_kind[r] = "domain"
            out_entry[r] = np.asarray(rows_hit.get_column("candidate").to_list(), dtype=object)[sel]
            undecided[r] = False
        if url_h is not None and len(lst.urls):
            uh = _is_in(url_h, lst.urls) & undecided & (norm != "").to_numpy()
            r = np.flatnonzero(uh)
            out_list[r] = lst.name
            out_kind[r] = "url"
            out_entry[r] = np.asarray(norm.to_list(), dtype=object)[r]
            undecided[r] = False
        if lst.prefixes:
            rx = "^(?:" + "|".join(re.escape(p) for p in lst.prefixes) + ")"
            found = norm.str.extract(f"({rx})", 1)
            ph = found.is_not_null().to_numpy() & undecided
            r = np.flatnonzero(ph)
            out_list[r] = lst.name
            out_kind[r] = "prefix"
            out_entry[r] = np.asarray(found.to_list(), dtype=object)[r]
            undecided[r] = False
    return Match(out_list.tolist(), out_kind.tolist(), out_entry.tolist())


def url_words(urls: pl.Series) -> pl.DataFrame:
    """(row, word): the URL split on every character outside ``[a-z0-9]``, lower case, words distinct per row."""
    w = urls.cast(pl.String).fill_null("").str.to_lowercase().str.extract_all(r"[a-z0-9]+")
    return pl.DataFrame({"row": np.arange(len(urls), dtype=np.int64), "word": w}).explode("word").drop_nulls("word").unique(maintain_order=True)


def first_word_hits(words: pl.DataFrame, vocabulary: Sequence[str], n: int) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Rows with a word of ``vocabulary``: (hit mask, first such word, number of distinct such words)."""
    vocab = pl.Series(list(vocabulary), dtype=pl.String)
    hits = words.filter(pl.col("word").is_in(vocab.implode()))
    mask = np.zeros(n, dtype=bool)
    first = np.full(n, None, dtype=object)
    count = np.zeros(n, dtype=np.int64)
    if hits.height:
        g = hits.group_by("row", maintain_order=True).agg(pl.col("word").first().alias("w"), pl.len().alias("k"))
        r = g.get_column("row").to_numpy()
        mask[r] = True
        first[r] = np.asarray(g.get_column("w").to_list(), dtype=object)
        count[r] = g.get_column("k").to_numpy()
    return mask, first.tolist(), count


def substring_hits(urls: pl.Series, substrings: Sequence[str]) -> list[str | None]:
    """The first of ``substrings`` found in each URL normalized like datatrove (lower case, only
    ``[a-z0-9]``), or None."""
    if not substrings:
        return [None] * len(urls)
    norm = urls.cast(pl.String).fill_null("").str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "")
    found = norm.str.extract_many(list(substrings), overlapping=False)
    return [f[0] if f else None for f in found.to_list()]
