"""Stage ``dedup``: exact and near-duplicate removal across all inputs (a global stage).

Every document gets a *key*: its position in input order (inputs in manifest order, parts in
name order, rows in file order), ``key = offset of its part + row``. Duplicates are joined into
clusters and the **kept document of a cluster is the one with the smallest key** -- the first in
input order -- whatever the number of workers or shards. Kept rows carry ``dup_cluster_id``
(int64, the kept document's key) and ``dup_cluster_size`` (int32, 1 for a unique document); the
others go to the ledger as ``dedup:exact dup of <kept id>`` or ``dedup:near dup of <kept id>``.

Phases (``docs/dedup.md`` has the details and the measured figures):

1. ``signatures`` -- one task per input part: normalized exact key (xxh3-128), MinHash signature
   (``pipeline.text.minhash``), LSH band hashes. Writes, under ``work/``: the signatures
   (``sig/``, memory-mapped later), with ``verify: exact`` every document's set of shingle hashes
   (``shingles/`` + ``shoff/``), exact keys, document ids (Arrow IPC, random access), and one
   *bucket record* Parquet file per part (``records/``) -- (bucket hash ``h``, key ``k``) rows sorted
   by (h, k), one row per band plus one for the exact key.
2. ``shuffle`` + ``buckets`` -- the executor's ``shuffle`` range-partitions the records on ``h``
   into shards (shard ``s`` = a range of bucket hashes, every bucket whole in one shard, sorted by
   (h, k)): the local executor reads each part's row groups in the range, the Dask executor runs a
   ``dask.dataframe`` shuffle; the shard files are the same bytes. Then one task per shard turns
   the buckets into edges (keys ascend within a bucket; never all pairs of a large bucket). With
   ``verify: exact`` (default) a near pair becomes an edge only when the **exact Jaccard of the two
   documents' shingle sets** (their distinct 32-bit shingle hashes, stored per part by phase 1)
   reaches ``threshold`` (pairs of too different sizes, and pairs whose signatures agree on fewer
   values than a pair at the threshold would with probability 1e-12, are dropped before reading
   the sets); small buckets check every pair that could add a connection, large ones link by
   leaders (``_near_edges``). With ``verify: estimate`` (the previous default) the check is
   the signatures' estimated Jaccard and each document is linked to the first document of its
   bucket, else the previous one; ``off`` keeps every candidate. Exact-key edges compare the full
   128-bit key.
3. ``clusters`` -- the executor's ``components``: connected components of the edges, every
   component labelled with its smallest key, written per input part (only the documents of
   clusters of 2 or more). The local executor runs a streamed union-find in the main process with
   one array of n_docs labels (4 bytes per document below 2**31 documents); the Dask executor runs
   min-label propagation with ``dask.dataframe`` joins and group-bys. Same files.
4. final -- one task per input part writes kept rows with the cluster columns and the ledger.
"""

from __future__ import annotations

import functools
import json
import math
import mmap
import os
import resource
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.common import storage
from pipeline.core.stage import NodeContext, Stage, removed_rows
from pipeline.exec.task_sync import ensure_local
from pipeline.text import minhash as mh

SHINGLE_BUDGET = 1_000_000  # shingles read per exact-Jaccard chunk (40-70 bytes each while comparing)
GATE_TAIL = 1e-12  # exact verification: a pair of Jaccard >= threshold is dropped by the signature gate with at most this probability (binomial)
ALL_PAIRS_MAX = 16  # with exact verification, near buckets of at most this many members check every pair
MAX_LEADERS = 8  # ... larger ones link by leaders, at most this many (checks per member)
RECORDS_PER_SHARD = 2_000_000  # bucket records per shard when ``shards`` is not set (32 MB of records; measured ~45 bytes per record at peak: ~90-100 MB per task)
BATCH_ROWS = 4096
CLUSTER_COLUMNS = ("dup_cluster_id", "dup_cluster_size")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="remove exact duplicates of the normalized text")
    near: bool = Field(True, description="remove near duplicates (MinHash LSH)")
    ngram: int = Field(3, ge=1, le=64, description="word n-gram size (documents not in character mode)")
    char_ngram: int = Field(5, ge=1, le=64, description="character n-gram size (CJK and other scripts without spaces)")
    cjk_char_ngrams: Literal["auto"] | bool = Field("auto", description="character shingles: auto (by script, per document), true (always), false (never)")
    cjk_min_fraction: float = Field(0.1, ge=0, le=1, description="auto: share of CJK/Thai/... code points that puts a document in character mode")
    t2s: bool = Field(True, description="fold Traditional to Simplified Chinese in the dedup key (OpenCC t2s, character by character)")
    num_perm: int = Field(112, ge=1, le=1024, description="MinHash permutations")
    bands: int | None = Field(None, ge=1, description="LSH bands (default: chosen from threshold)")
    rows: int | None = Field(None, ge=1, description="rows per band; bands * rows = num_perm")
    threshold: float = Field(0.7, gt=0, le=1, description="Jaccard similarity of a near duplicate: picks bands/rows, and the verification cut-off")
    verify: Literal["exact", "estimate", "off"] = Field(
        "exact",
        description="check each LSH candidate pair: exact (the exact Jaccard of the two shingle sets >= threshold), estimate (the signatures' estimate), off (keep every candidate); true = exact, false = off",
    )
    seed: int = Field(42, description="seed of the permutations and band hashes")
    shards: int | None = Field(None, ge=1, le=65536, description="bucket shards (default: one per 2M bucket records)")
    batch_chars: int = Field(1_000_000, ge=1000, description="characters hashed per vectorized batch")
    keep_work: bool = Field(False, description="keep work/ (signatures, buckets, edges) after the node completes")

    @field_validator("verify", mode="before")
    @classmethod
    def _verify_bool(cls, v):
        return {True: "exact", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if not (self.exact or self.near):
            raise ValueError("at least one of exact and near must be true")
        if self.bands is not None and self.rows is not None and self.bands * self.rows != self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} must equal num_perm = {self.num_perm}")
        for given in (self.bands, self.rows):
            if given is not None and self.num_perm % given:
                raise ValueError(f"{given} does not divide num_perm = {self.num_perm}")
        return self

    def lsh_shape(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.num_perm // self.bands
        if self.rows is not None:
            return self.num_perm // self.rows, self.rows
        # with verification a false candidate costs one check and is then dropped, while a missed
        # candidate is lost: take the fewest bands that still catch 95% of the pairs at the threshold
        if self.verify != "off":
            shape = mh.recall_bands_rows(self.threshold, self.num_perm, 0.95)
            if shape is not None:
                return shape
            return mh.optimal_bands_rows(self.threshold, self.num_perm, 0.2, 0.8)
        return mh.optimal_bands_rows(self.threshold, self.num_perm)


class Dedup(Stage):
    name = "dedup"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.minhash",)
    description = "exact and MinHash-LSH near-duplicate removal across all inputs; keeps the first document in input order"

    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        bands, rows = p.lsh_shape()
        cfg = _task_config(p, bands, rows)
        parts = [str(part) for inp in ctx.inputs for part in inp.parts]
        counts = [pq.ParquetFile(part).metadata.num_rows for part in parts]
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + c)
        n_docs = offsets[-1]
        work = ctx.dir / "work"
        ctx.provenance["dedup"] = {
            "kept_document": "smallest key = first in input order (inputs in manifest order, parts by name, rows in order)",
            "normalization": "NFKC, lower(), " + ("OpenCC t2s per character, " if p.t2s else "") + "whitespace/punctuation/symbols/control removed",
            "shingles": f"character {p.char_ngram}-grams (CJK/Thai/... documents, {p.cjk_char_ngrams}), word {p.ngram}-grams otherwise",
            "num_perm": p.num_perm,
            "bands": bands,
            "rows": rows,
            "threshold": p.threshold,
            "lsh_midpoint": round(mh.lsh_threshold_midpoint(bands, rows), 4),
            "verify": p.verify,
        }
        summary_path = ctx.dir / "_dedup.json"
        final_done = all((ctx.dir / "_tasks" / f"part-{i:05d}.json").exists() for i in range(len(parts)))
        if parts and not final_done:
            sig_stats = ctx.run_tasks(_signature_task, [(parts[i], i, offsets[i], cfg, str(work)) for i in range(len(parts))], desc="signatures", phase="signatures")
            records = sum(s["bucket_records"] for s in sig_stats)
            shards = p.shards or max(1, math.ceil(records / RECORDS_PER_SHARD))
            bounds = [(s << 64) // shards for s in range(shards)] + [1 << 64]
            buckets_done = all((ctx.dir / "_tasks" / f"buckets-part-{s:05d}.json").exists() for s in range(shards))
            # the exchange between phases is the executor's shuffle (Dask's own on a cluster)
            shard_files = (
                [str(work / "shards" / f"shard-{s:05d}.parquet") for s in range(shards)]
                if buckets_done
                else ctx.executor.shuffle(
                    [str(_wpath(work, "records", i, ".parquet")) for i in range(len(parts))],
                    "h",
                    bounds,
                    str(work / "shards"),
                    sort_by=["h", "k"],
                    desc=f"{ctx.name}: shuffle",
                    progress=ctx.run.progress,
                )
            )
            bucket_stats = ctx.run_tasks(
                _bucket_task,
                [(s, shard_files[s], offsets, cfg, str(work)) for s in range(shards)],
                desc="buckets",
                phase="buckets",
            )
            cluster_stats = _cluster(work, n_docs, offsets, shards, ctx)
            summary = {
                "documents": n_docs,
                "shards": shards,
                "bucket_records": records,
                "candidate_pairs": sum(s["candidates"] for s in bucket_stats),
                "rejected_pairs": sum(s["rejected"] for s in bucket_stats),
                "exact_jaccard_pairs": sum(s.get("exact_checked", 0) for s in bucket_stats),
                "size_rejected_pairs": sum(s.get("size_rejected", 0) for s in bucket_stats),
                "gate_rejected_pairs": sum(s.get("gate_rejected", 0) for s in bucket_stats),
                "shingles_stored": sum(s.get("shingles", 0) for s in sig_stats),
                "edges": sum(s["edges"] for s in bucket_stats),
                "largest_bucket": max([s["largest_bucket"] for s in bucket_stats] or [0]),
                "char_mode_documents": sum(s["char_mode"] for s in sig_stats),
                "unkeyed_documents": sum(s["empty"] for s in sig_stats),
                "worker_peak_rss_mb": max([s.get("worker_peak_rss_mb", 0) for s in sig_stats + bucket_stats] or [0]),
                "signatures_cpu_s": round(sum(s.get("cpu_s", 0) for s in sig_stats), 2),
                "buckets_cpu_s": round(sum(s.get("cpu_s", 0) for s in bucket_stats), 2),
                **cluster_stats,
            }
            storage.atomic_write_json(summary_path, summary)
        tasks = [(parts[i], i, offsets, cfg, self.node, str(ctx.part_path(i)), str(ctx.removed_path(i)), str(work)) for i in range(len(parts))]
        ctx.run_tasks(_final_task, tasks, desc="write")
        if not p.keep_work:
            for marker in [*(ctx.dir / "_tasks").glob("*-part-*.json"), *(ctx.dir / "_tasks").glob("*-layout")]:  # phase markers first: a crash below re-runs phases, never reads half-deleted work
                marker.unlink()
            storage.remove_tree(work)
        summary = storage.read_json(summary_path) if summary_path.exists() else {}
        return {"dedup": {**summary, "bands": bands, "rows": rows, "num_perm": p.num_perm, "threshold": p.threshold}}


def _task_config(p: Params, bands: int, rows: int) -> dict:
    return {
        "num_perm": p.num_perm,
        "bands": bands,
        "rows": rows,
        "ngram": p.ngram,
        "char_ngram": p.char_ngram,
        "char_mode": {"auto": "auto", True: "always", False: "never"}[p.cjk_char_ngrams],
        "cjk_min_fraction": p.cjk_min_fraction,
        "t2s": p.t2s,
        "seed": p.seed,
        "exact": p.exact,
        "near": p.near,
        "verify": p.verify,
        "threshold": p.threshold,
        "batch_chars": p.batch_chars,
    }


@functools.lru_cache(maxsize=4)
def _hasher(cfg_json: str) -> mh.MinHasher:
    cfg = json.loads(cfg_json)
    return mh.MinHasher(
        mh.MinHashConfig(
            num_perm=cfg["num_perm"],
            bands=cfg["bands"],
            rows=cfg["rows"],
            ngram=cfg["ngram"],
            char_ngram=cfg["char_ngram"],
            char_mode=cfg["char_mode"],
            cjk_min_fraction=cfg["cjk_min_fraction"],
            t2s=cfg["t2s"],
            seed=cfg["seed"],
        )
    )


# ------------------------------------------------------------------------------------ work files
def _wpath(work: str | Path, kind: str, index: int, suffix: str) -> Path:
    return Path(work) / kind / f"part-{index:05d}{suffix}"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


class _Lookup:
    """Random access by global key to the per-part work arrays (memory-mapped: only touched pages are read)."""

    def __init__(self, work: str, offsets: list[int]):
        self.work = work
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._cache: dict[tuple[str, int], object] = {}

    def _open(self, kind: str, part: int):
        key = (kind, part)
        if key not in self._cache:
            if kind == "ids":
                with pa.memory_map(str(ensure_local(_wpath(self.work, "ids", part, ".arrow")))) as source:
                    self._cache[key] = pa.ipc.open_file(source).read_all().column(0)
            elif kind == "shingles":  # (the map, its uint32 view): the map is released after each read (below)
                path = ensure_local(_wpath(self.work, "shingles", part, ".u32"))
                if path.stat().st_size:
                    with open(path, "rb") as fh:
                        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                    self._cache[key] = (mapped, np.frombuffer(mapped, dtype=np.uint32))
                else:
                    self._cache[key] = (None, np.zeros(0, np.uint32))
            else:
                self._cache[key] = np.load(ensure_local(_wpath(self.work, kind, part, ".npy")), mmap_mode="r")
        return self._cache[key]

    def shingle_counts(self, keys: np.ndarray) -> np.ndarray:
        """Distinct shingles of each document (int64), from the per-part offset arrays."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.zeros(len(keys), np.int64)
        parts = self.part_of(keys)
        for part in np.unique(parts).tolist():
            sel = parts == part
            local = keys[sel] - self.offsets[part]
            off = self._open("shoff", part)
            out[sel] = np.asarray(off[local + 1]) - np.asarray(off[local])
        return out

    def shingle_sets(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shingle sets of ``keys`` (distinct, ascending per document), one after the other in
        the order of ``keys``, and their offsets (len(keys) + 1). Read from the memory maps in file order."""
        keys = np.asarray(keys, dtype=np.int64)
        counts = self.shingle_counts(keys)
        offsets = np.zeros(len(keys) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = np.empty(int(offsets[-1]), np.uint32)
        parts = self.part_of(keys)
        for part in np.unique(parts).tolist():
            sel = np.flatnonzero(parts == part)
            local = keys[sel] - self.offsets[part]
            src = np.asarray(self._open("shoff", part)[local])
            order = np.argsort(src, kind="stable")
            sel, src = sel[order], src[order]
            src_idx = mh.segment_ranges(src, counts[sel])
            if len(src_idx):
                mapped, values = self._open("shingles", part)
                flat[mh.segment_ranges(offsets[sel], counts[sel])] = values[src_idx]
                if hasattr(mmap, "MADV_DONTNEED"):  # the pages read leave the worker's RSS (they stay in the page cache)
                    mapped.madvise(mmap.MADV_DONTNEED)
        return flat, offsets

    def exact_jaccard(self, a: np.ndarray, b: np.ndarray, budget: int = SHINGLE_BUDGET) -> np.ndarray:
        """Exact Jaccard of the shingle sets of the document pairs (a[i], b[i]), in chunks of pairs
        whose sets hold about ``budget`` shingles together (bounded memory: ~40 bytes per shingle)."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        out = np.zeros(len(a), np.float64)
        if not len(a):
            return out
        cost = np.cumsum(self.shingle_counts(a) + self.shingle_counts(b))
        start = 0
        while start < len(a):
            end = max(start + 1, int(np.searchsorted(cost, (cost[start - 1] if start else 0) + budget, side="right")))
            uniq, inv = np.unique(np.concatenate([a[start:end], b[start:end]]), return_inverse=True)
            flat, offsets = self.shingle_sets(uniq)
            k = end - start
            out[start:end] = mh.exact_jaccard(flat, offsets, inv[:k], inv[k:])
            start = end
        return out

    def part_of(self, keys: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, keys, side="right") - 1

    def rows(self, kind: str, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        parts = self.part_of(keys)
        like = self._open(kind, int(parts[0]) if len(keys) else 0)
        out = np.empty((len(keys),) + like.shape[1:], dtype=like.dtype)
        for part in np.unique(parts).tolist():
            sel = parts == part
            local = keys[sel] - self.offsets[part]
            order = np.argsort(local, kind="stable")  # sorted reads from the memory map
            rows = np.asarray(self._open(kind, part)[local[order]])
            tmp = np.empty_like(rows)
            tmp[order] = rows
            out[sel] = tmp
        return out

    def ids(self, keys: np.ndarray) -> list[str | None]:
        keys = np.asarray(keys, dtype=np.int64)
        out: list[str | None] = [None] * len(keys)
        parts = self.part_of(keys)
        for part in np.unique(parts).tolist():
            sel = np.flatnonzero(parts == part)
            col = self._open("ids", part)
            vals = col.take(pa.array(keys[sel] - self.offsets[part])).to_pylist()
            for i, v in zip(sel.tolist(), vals):
                out[i] = v
        return out


# ------------------------------------------------------------------------------------ phase 1
def _signature_task(part_path: str, part_index: int, offset: int, cfg: dict, work: str) -> dict:
    cpu0 = time.process_time()
    hasher = _hasher(json.dumps(cfg, sort_keys=True))
    pf = pq.ParquetFile(part_path)
    n = pf.metadata.num_rows
    K = cfg["num_perm"]
    sig_path = _wpath(work, "sig", part_index, ".npy")
    sig_path.parent.mkdir(parents=True, exist_ok=True)
    sig_tmp = sig_path.with_name(f".{sig_path.name}.tmp-{os.getpid()}")
    sig = np.lib.format.open_memmap(sig_tmp, mode="w+", dtype=np.uint32, shape=(n, K))  # on disk, not in RAM
    with_shingles = cfg["near"] and cfg["verify"] == "exact"
    if with_shingles:  # every document's distinct shingle hashes, appended batch by batch (never all in RAM)
        sh_path = _wpath(work, "shingles", part_index, ".u32")
        sh_path.parent.mkdir(parents=True, exist_ok=True)
        sh_tmp = sh_path.with_name(f".{sh_path.name}.tmp-{os.getpid()}")
        sh_file = open(sh_tmp, "wb")
        sh_counts = np.zeros(n, np.int64)
    exact = np.zeros((n, 2), np.uint64)
    has = np.zeros(n, bool)
    empty = np.zeros(n, bool)
    char_mode = np.zeros(n, bool)
    bands = np.zeros((n, cfg["bands"]), np.uint64)
    ids: list[pa.Array] = []
    row = 0
    chars = 0
    for rb in pf.iter_batches(batch_size=BATCH_ROWS, columns=["id", "text"]):
        ids.append(rb.column("id").cast(pa.string()))
        texts = [t if t is not None else "" for t in rb.column("text").to_pylist()]
        start = 0
        while start < len(texts):  # vectorized batches of about batch_chars characters
            end, size = start, 0
            while end < len(texts) and (end == start or size + len(texts[end]) <= cfg["batch_chars"]):
                size += len(texts[end])
                end += 1
            res = hasher.batch(texts[start:end], shingles=with_shingles)
            sl = slice(row + start, row + end)
            sig[sl], exact[sl], has[sl], empty[sl], char_mode[sl] = res.sig, res.exact, res.has_shingles, res.empty, res.char_mode
            if with_shingles:
                sh_file.write(res.shingles.tobytes())
                sh_counts[sl] = res.shingle_counts
            if cfg["near"]:
                bands[sl] = hasher.band_hashes(res.sig)
            chars += size
            start = end
        row += len(texts)
    assert row == n, f"{part_path}: read {row} rows, metadata says {n}"

    keys = np.arange(offset, offset + n, dtype=np.int64)
    hs, ks = [], []
    if cfg["near"]:
        ok = has & ~empty
        hs.append(bands[ok].T.reshape(-1))  # band-major: within one band, keys ascend
        ks.append(np.tile(keys[ok], bands.shape[1]))
    if cfg["exact"]:
        hs.append(mh.exact_bucket_hash(exact[~empty]))
        ks.append(keys[~empty])
    h = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
    k = np.concatenate(ks) if ks else np.zeros(0, np.int64)
    order = np.lexsort((k, h))  # sorted by bucket hash: the local shuffle reads only the row groups of a shard
    sig.flush()
    del sig
    os.replace(sig_tmp, sig_path)
    if with_shingles:
        sh_file.close()
        sh_off = np.zeros(n + 1, np.int64)
        np.cumsum(sh_counts, out=sh_off[1:])
        _save_npy(_wpath(work, "shoff", part_index, ".npy"), sh_off)
        os.replace(sh_tmp, sh_path)
    _save_npy(_wpath(work, "exact", part_index, ".npy"), exact)
    _save_npy(_wpath(work, "flags", part_index, ".npy"), (empty.astype(np.uint8) | (has.astype(np.uint8) << 1) | (char_mode.astype(np.uint8) << 2)))
    storage.write_parquet(pa.table({"h": h[order], "k": k[order]}), _wpath(work, "records", part_index, ".parquet"))
    id_path = _wpath(work, "ids", part_index, ".arrow")
    id_table = pa.table({"id": pa.concat_arrays(ids) if ids else pa.array([], pa.string())})
    id_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = id_path.with_name(f".{id_path.name}.tmp-{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, id_table.schema) as writer:
        writer.write_table(id_table)
    os.replace(tmp, id_path)
    return {
        "docs": n,
        "chars": chars,
        "bucket_records": int(len(h)),
        "char_mode": int(char_mode.sum()),
        "empty": int(empty.sum()),
        "shingles": int(sh_counts.sum()) if with_shingles else 0,
        "cpu_s": time.process_time() - cpu0,
        "worker_peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """The worker's peak RSS. VmHWM first: Linux carries ru_maxrss over fork and exec, so a pool or
    Dask worker would report its parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ------------------------------------------------------------------------------------ phase 2
def _bucket_task(shard: int, shard_path: str, offsets: list[int], cfg: dict, work: str) -> dict:
    cpu0 = time.process_time()
    # the executor's shuffle gathered every record of this range of bucket hashes, sorted by
    # (hash, key): within a bucket, keys ascend, whichever executor or worker count did it
    records = pq.read_table(shard_path)
    h = records["h"].to_numpy()
    k = records["k"].to_numpy()
    del records
    m = len(h)
    first = np.ones(m, bool)
    if m > 1:
        first[1:] = h[1:] != h[:-1]
    starts = np.flatnonzero(first)
    largest = int(np.diff(np.append(starts, m)).max()) if m else 0
    del starts
    exact_rec = (h & np.uint64(1)).astype(bool)  # whole buckets: exact-key buckets have the low bit 1
    del h

    look = _Lookup(work, offsets)
    verify_near = cfg["verify"]
    threshold = cfg["threshold"]
    checked = [0, 0, 0]  # near pairs: compared exactly, rejected by their sizes alone, by the signature gate
    gate = mh.signature_gate(cfg["num_perm"], threshold, GATE_TAIL) if verify_near == "exact" else 0

    def accept(a: np.ndarray, b: np.ndarray, exact_pair: np.ndarray) -> np.ndarray:
        """Which candidate pairs (a[i], b[i]) become edges. A pair met in several bands of this shard is checked once."""
        if len(a) < 2 or offsets[-1] > 1 << 32:
            return check(a, b, exact_pair)
        out = np.zeros(len(a), bool)
        for flag in (True, False):
            sel = np.flatnonzero(exact_pair == flag)
            if len(sel):
                pair, inv = np.unique((a[sel].astype(np.uint64) << np.uint64(32)) | b[sel].astype(np.uint64), return_inverse=True)
                ua, ub = (pair >> np.uint64(32)).astype(np.int64), (pair & np.uint64(0xFFFFFFFF)).astype(np.int64)
                out[sel] = check(ua, ub, np.full(len(pair), flag))[inv]
        return out

    def check(a: np.ndarray, b: np.ndarray, exact_pair: np.ndarray) -> np.ndarray:
        ok = np.ones(len(a), bool)
        if exact_pair.any():
            ea, eb = look.rows("exact", a[exact_pair]), look.rows("exact", b[exact_pair])
            ok[exact_pair] = (ea == eb).all(axis=1)
        near_pair = ~exact_pair
        if verify_near == "exact" and near_pair.any():
            idx = np.flatnonzero(near_pair)
            ca, cb = look.shingle_counts(a[idx]), look.shingle_counts(b[idx])
            # |A & B| / |A | B| <= min / max: pairs of very different sizes fail without reading their sets
            fits = np.minimum(ca, cb) >= threshold * np.maximum(ca, cb) - 1e-9
            ok[idx[~fits]] = False
            checked[1] += int((~fits).sum())
            idx = idx[fits]
            if gate > 0:  # far below the threshold by the signatures: a pair >= threshold lands here with probability <= GATE_TAIL
                far = np.zeros(len(idx), bool)
                for c0 in range(0, len(idx), 65536):
                    sel = idx[c0 : c0 + 65536]
                    far[c0 : c0 + 65536] = (look.rows("sig", a[sel]) == look.rows("sig", b[sel])).sum(axis=1) < gate
                ok[idx[far]] = False
                checked[2] += int(far.sum())
                idx = idx[~far]
            checked[0] += len(idx)
            ok[idx] = look.exact_jaccard(a[idx], b[idx]) >= threshold - 1e-12
        elif verify_near == "estimate" and near_pair.any():
            idx = np.flatnonzero(near_pair)
            for c0 in range(0, len(idx), 65536):  # bounded memory: 2 x 65536 signatures at a time
                sel = idx[c0 : c0 + 65536]
                est = mh.estimate_jaccard(look.rows("sig", a[sel]), look.rows("sig", b[sel]))
                ok[sel] = est >= threshold - 1e-9
        return ok

    if verify_near == "exact":  # exact-key buckets: first, else previous member; near buckets: _near_edges
        xu, xv, candidates, x_checks, rescued = _first_or_previous(k[exact_rec], first[exact_rec], np.ones(int(exact_rec.sum()), bool), accept)
        near = ~exact_rec
        del exact_rec
        kn, fn = k[near], first[near]
        del k, first, near
        candidates += len(kn) - int(fn.sum())
        nu, nv, n_checks, rounds = _near_edges(kn, fn, lambda a, b: accept(a, b, np.zeros(len(a), bool)))
        del kn, fn
        eu, ev = np.concatenate([xu, nu]), np.concatenate([xv, nv])
        checks = x_checks + n_checks
    else:
        eu, ev, candidates, checks, rescued = _first_or_previous(k, first, exact_rec, accept)
        rounds = 1
    rejected = checks - len(eu)
    edges = np.stack([eu, ev], axis=1) if len(eu) else np.zeros((0, 2), np.int64)
    if len(edges):
        edges = np.unique(edges, axis=0)
    edges = edges.astype(np.int64)
    storage.write_parquet(pa.table({"u": edges[:, 0], "v": edges[:, 1]}), Path(work) / "edges" / f"shard-{shard:05d}.parquet")
    return {
        "records": int(m),
        "candidates": int(candidates),
        "checks": int(checks),
        "rejected": int(rejected),
        "rescued": int(rescued),
        "leader_rounds": int(rounds),
        "exact_checked": checked[0],
        "size_rejected": checked[1],
        "gate_rejected": checked[2],
        "edges": int(len(edges)),
        "largest_bucket": largest,
        "cpu_s": time.process_time() - cpu0,
        "worker_peak_rss_mb": _peak_rss_mb(),
    }


def _first_or_previous(k: np.ndarray, first: np.ndarray, exact_rec: np.ndarray, accept) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Edges of buckets linking each member to the first document of its bucket, else (when that
    check fails) to the previous member: one or two checks per member. Used for exact-key buckets,
    and for near buckets when the check is the signatures' estimate or nothing (a noisy check made
    more often would merge more pairs below the threshold). Returns (u, v, members, checks, rescued)."""
    m = len(k)
    member = np.flatnonzero(~first)
    group_first = np.maximum.accumulate(np.where(first, np.arange(m), 0))
    u = k[member]
    v = k[group_first[member]]
    prev = k[member - 1]
    is_exact = exact_rec[member]
    del group_first, member
    ok = accept(u, v, is_exact)
    retry = np.flatnonzero(~ok & (prev != v))
    ok2 = accept(u[retry], prev[retry], is_exact[retry]) if len(retry) else np.zeros(0, bool)
    eu = np.concatenate([u[ok], u[retry][ok2]])
    ev = np.concatenate([v[ok], prev[retry][ok2]])
    return eu, ev, len(u), len(u) + len(retry), int(ok2.sum())


def _near_edges(k: np.ndarray, first: np.ndarray, accept, all_pairs_max: int = ALL_PAIRS_MAX, max_leaders: int = MAX_LEADERS) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Edges of the near buckets of a shard, for the exact check (which never accepts a pair below
    the threshold, so checking more pairs only finds more true ones).

    ``k``: the keys of the records, bucket after bucket, ascending within each (``first`` marks the
    first record of a bucket). **A bucket of at most ``all_pairs_max`` members** checks every member
    against its first document, then every pair of the other members of which at least one did not
    match the first (two that both matched it are connected through it already): its edges connect
    exactly what checking all its pairs would. A bucket whose members all match its first document
    costs one check per member; one of unrelated documents, every pair (at most
    (all_pairs_max - 1) / 2 checks per member). **A larger bucket** (many copies of one text, or a
    crowded band) links by *leaders*: its first member is the first leader and every later member is
    checked against it; the next leader is the first member that matched no leader so far, and every
    member after it is checked against it, and so on, up to ``max_leaders`` (checks per member).
    Linking each member to the first document, else to the previous one (``_first_or_previous``),
    misses pairs: in [A, B, C] with C ~ A and C ~ B but B !~ A, C is linked to A at once and B,
    which only tried A, stays alone. Each step is one vectorized ``accept`` over all buckets of
    the shard. Returns (u, v, checks, leader rounds)."""
    m = len(k)
    empty = np.zeros(0, np.int64)
    if m < 2:
        return empty, empty, 0, 0
    it = np.int32 if m < 2**31 - 1 else np.int64  # positions in the shard
    pos = np.arange(m, dtype=it)
    bucket = np.cumsum(first, dtype=it) - 1
    start = np.flatnonzero(first).astype(it)
    size = np.diff(np.append(start, it(m)))
    eu: list[np.ndarray] = []
    ev: list[np.ndarray] = []
    checks = rounds = 0
    matched = np.zeros(m, bool)
    # small buckets: every member against the first; then every pair of the others of which one
    # did not match the first (two members that both matched it are connected through it already)
    rank = pos - start[bucket]
    small = size[bucket] <= all_pairs_max
    sel = np.flatnonzero(small & (rank > 0))
    if len(sel):
        lead0 = start[bucket[sel]]
        ok = accept(k[sel], k[lead0])
        checks += len(sel)
        eu.append(k[sel][ok])
        ev.append(k[lead0][ok])
        matched[sel[ok]] = True
        open_bucket = np.zeros(len(start), bool)
        open_bucket[bucket[sel[~ok]]] = True
        sel = np.flatnonzero(small & (rank > 1) & open_bucket[bucket])
        later = np.repeat(sel, rank[sel] - 1)
        earlier = mh.segment_ranges(start[bucket[sel]] + 1, rank[sel] - 1)
        need = ~matched[later] | ~matched[earlier]
        later, earlier = later[need], earlier[need]
        if len(later):
            ok = accept(k[later], k[earlier])
            checks += len(later)
            eu.append(k[later][ok])
            ev.append(k[earlier][ok])
    # large buckets: leaders
    lead = np.where(size > all_pairs_max, start, -1)  # current leader position per bucket; -1: done
    while rounds < max_leaders:
        cur = lead[bucket]
        act = np.flatnonzero((cur >= 0) & (pos > cur))
        if not len(act):
            break
        rounds += 1
        leader = cur[act]
        ok = accept(k[act], k[leader])
        checks += len(act)
        eu.append(k[act][ok])
        ev.append(k[leader][ok])
        matched[act[ok]] = True
        lead = np.full(len(lead), -1, lead.dtype)
        rest = act[~matched[act]]  # ascending: the first one of each bucket is its next leader
        if len(rest):
            b, at = np.unique(bucket[rest], return_index=True)
            lead[b] = rest[at]
    if not eu:
        return empty, empty, checks, rounds
    return np.concatenate(eu), np.concatenate(ev), checks, rounds


# ------------------------------------------------------------------------------------ phase 3
def _cluster(work: Path, n_docs: int, offsets: list[int], shards: int, ctx: NodeContext) -> dict:
    """Connected components of the edges, by the executor (a union-find here, label propagation on
    Dask): per input part, the documents of clusters of 2 or more with their cluster's smallest key."""
    marker = work / "clusters" / "_DONE.json"
    if marker.exists():
        return storage.read_json(marker)
    edge_files = [str(work / "edges" / f"shard-{s:05d}.parquet") for s in range(shards)]
    outs, how = ctx.executor.components(edge_files, offsets, str(work / "clusters"), desc=f"{ctx.name}: clusters", progress=ctx.run.progress)
    dup_clusters = members = largest = 0
    for out in outs:
        t = pq.read_table(out)
        if t.num_rows:
            members += t.num_rows
            dup_clusters += int(pc.sum(pc.equal(t["node"], t["label"])).as_py())
            largest = max(largest, int(pc.max(t["size"]).as_py()))
    stats = {
        "clusters_with_duplicates": dup_clusters,
        "documents_in_duplicate_clusters": members,
        "largest_cluster": largest or (1 if n_docs else 0),
        **how,
    }
    ctx.run.console.log(f"\\[{ctx.name}] {dup_clusters:,} duplicate clusters ({members:,} documents)")
    storage.atomic_write_json(marker, stats)
    return stats


# ------------------------------------------------------------------------------------ final phase
def _final_task(part_path: str, part_index: int, offsets: list[int], cfg: dict, node: str, out_path: str, removed_path: str, work: str) -> dict:
    table = storage.read_parquet(Path(part_path))
    n = table.num_rows
    offset = offsets[part_index]
    keys = np.arange(offset, offset + n, dtype=np.int64)
    members = pq.read_table(ensure_local(Path(work) / "clusters" / f"shard-{part_index:05d}.parquet"))  # only documents with duplicates
    root = keys.copy()
    size = np.ones(n, np.int32)
    local = members["node"].to_numpy() - offset
    root[local] = members["label"].to_numpy()
    size[local] = members["size"].to_numpy()
    keep = root == keys
    for col in CLUSTER_COLUMNS:
        if col in table.column_names:
            table = table.drop_columns([col])
    kept = table.filter(pa.array(keep))
    kept = kept.append_column("dup_cluster_id", pa.array(root[keep], pa.int64()))
    kept = kept.append_column("dup_cluster_size", pa.array(size[keep], pa.int32()))

    gone = np.flatnonzero(~keep)
    dropped = table.take(pa.array(gone, pa.int64()))
    look = _Lookup(work, offsets)
    exact_jaccard = cfg["near"] and cfg["verify"] == "exact"
    jaccard_kind = "exact, of the shingle sets" if exact_jaccard else "estimated from MinHash signatures"
    kroot = root[gone]
    kept_ids = look.ids(kroot)
    if len(gone):
        own_exact = np.load(ensure_local(_wpath(work, "exact", part_index, ".npy")), mmap_mode="r")[gone]
        is_exact = (own_exact == look.rows("exact", kroot)).all(axis=1) & cfg["exact"]
        if exact_jaccard:  # against the kept document (it may differ from the one the pair was verified with)
            jac = look.exact_jaccard(keys[gone], kroot)
        else:
            own_sig = np.load(ensure_local(_wpath(work, "sig", part_index, ".npy")), mmap_mode="r")
            jac = np.empty(len(gone))
            for c0 in range(0, len(gone), 65536):
                sl = slice(c0, c0 + 65536)
                jac[sl] = mh.estimate_jaccard(np.asarray(own_sig[gone[sl]]), look.rows("sig", kroot[sl]))
    else:
        is_exact = np.zeros(0, bool)
        jac = np.zeros(0)
    reasons, signals = [], []
    n_exact = n_near = 0
    for i in range(len(gone)):
        kind = "exact" if is_exact[i] else "near"
        if is_exact[i]:
            n_exact += 1
        else:
            n_near += 1
        reasons.append(f"dedup:{kind} dup of {kept_ids[i]}")
        signals.append(
            {
                "cluster_id": int(kroot[i]),
                "cluster_size": int(size[gone[i]]),
                "kept_id": kept_ids[i],
                "match": kind,
                "jaccard": 1.0 if is_exact[i] else round(float(jac[i]), 4),
                "jaccard_kind": "exact key" if is_exact[i] else jaccard_kind,
            }
        )
    removed = removed_rows(dropped, node, reasons, signals)
    storage.write_parquet(kept, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    chars_out = int(pc.sum(pc.utf8_length(kept["text"])).as_py() or 0) if "text" in kept.column_names and kept.num_rows else 0
    by_reason = {}
    if n_exact:
        by_reason["dedup:exact dup"] = n_exact
    if n_near:
        by_reason["dedup:near dup"] = n_near
    return {
        "in": n,
        "out": kept.num_rows,
        "removed": removed.num_rows,
        "removed_by_reason": by_reason,
        "chars_out": chars_out,
        "dup_clusters_kept_here": int((size[keep] > 1).sum()),
    }
