"""Stage ``tokenize``: tokenizer training, tokenization, sequence packing, Arrow token shards.

Turns the curated documents of its inputs into what ``pipeline train --shards out/`` reads:

    <out>/tokenizer/   tokenizer.model (SentencePiece) + tokenizer.json, tokenizer_config.json,
                       special_tokens_map.json (AutoTokenizer.from_pretrained loads it), grist_tokenizer.json
    <out>/tokens/      datasets.load_from_disk -> DatasetDict(train, validation, test) of packed rows
                       (input_ids, doc_ids, doc_starts) + index.json

Phases (``docs/tokenization.md`` has the details and the measured figures):

1. ``scan`` -- one task per input part: per part, the documents with text, their UTF-8 bytes,
   how many fall in the validation and test splits, and the smallest split hash (the fallback
   validation document). The split of a document is a function of its id only: with
   ``h = xxh3_64(b"split:" + id, seed)``, validation if ``h < validation_fraction * 2**64``, test
   if ``h >= 2**64 - test_fraction * 2**64`` (the top of the hash range, so the validation split
   is the same whatever test_fraction is), else train. When that puts no document in validation
   although at least two have text, the document with the smallest hash goes there, so
   validation is never empty then (``validation_fraction: 0`` asks for no validation split; test
   has no such fallback). Neither held-out split is in the tokenizer's training sample.
2. tokenizer -- in this process: train SentencePiece on a deterministic sample (train-split
   documents chosen by ``xxh3_64(b"sample:" + id, seed) < sample_bytes / total_bytes``, in input
   order, until ``sample_bytes``), or read ``tokenizer_path``; write ``tokenizer/`` and check that
   the Hugging Face twin gives the same ids on sample documents.
3. encode (the node's final phase) -- one task per input part: encode, add EOS (and BOS) per
   document, verify the round trip where it is not guaranteed by construction, write the flat
   token stream and the document boundaries per split to ``work/``, the kept documents (with
   ``split`` and ``n_tokens`` columns) to the node's part, and dropped ones to the ledger
   (``tokenize:empty``: no text; ``tokenize:lossy``: decoding would not give the text back).
4. pack -- in this process: stream the work files in part order into rows of ``seq_len``
   tokens and write ``tokens/`` (``pipeline.text.packing``); then delete ``work/``.

Everything is deterministic: the same input and parameters give the same bytes for any number
of workers, and a killed run resumes from its finished partitions.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.common import storage
from pipeline.common.errors import StageError
from pipeline.core.stage import REMOVED_SCHEMA, NodeContext, Stage, merge_stats, removed_rows
from pipeline.exec.task_sync import ensure_local
from pipeline.text import packing
from pipeline.text import tokenizer as tkz

SPLITS = packing.SPLITS
KEPT_ROW_GROUP = 8192
HF_CHECK_CHARS = 2_000_000  # at most this much sample text is encoded twice for the agreement check


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer_path: str | None = Field(None, description="existing tokenizer: a SentencePiece .model, a folder with tokenizer.model or tokenizer.json (+ tokenizer_config.json; any Hugging Face tokenizer folder, relative to the manifest), or a hub model id (org/name) with revision; None: train one")
    revision: str | None = Field(None, description="hub revision (a commit sha, or a tag) of a hub tokenizer_path: required for hub ids so the run can be repeated")
    tokenizer_sha256: str | None = Field(None, description="expected sha256 of the tokenizer_path file (tokenizer.model, else tokenizer.json), or of the folder's tokenizer files (grist_tokenizer.json source_dir_sha256): pins it")
    model_type: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = Field(32000, ge=300, le=1 << 20, description="requested vocabulary size (a sample too small for it gives fewer pieces, reported)")
    character_coverage: float = Field(0.9995, gt=0, le=1, description="share of the sample's characters that get their own piece; the rest is byte-encoded")
    sample_bytes: int = Field(100_000_000, ge=1, description="cap on the tokenizer training sample (UTF-8 bytes); training takes ~25 bytes of memory per sample byte on Chinese text (2.5 GB at the default)")
    max_piece_length: int = Field(16, ge=1, le=64, description="longest piece, in characters")
    split_digits: bool = Field(False, description="one digit per piece")
    train_threads: int | None = Field(None, ge=1, description="SentencePiece trainer threads (default: workers for bpe, which is deterministic for any count; 1 for unigram, which is not)")
    seq_len: int = Field(1024, ge=2, description="tokens per packed row")
    bos: bool | None = Field(None, description="also put BOS before each document (EOS always follows each); None: the tokenizer's convention (tokenizer_config add_bos_token, or its post-processor; false for trained and bare .model tokenizers)")
    eos_token: str | None = Field(None, description="EOS piece (default: the tokenizer's own)")
    bos_token: str | None = Field(None, description="BOS piece (default: the tokenizer's own)")
    validation_fraction: float = Field(0.01, ge=0, lt=1, description="share of documents (by a hash of the id) in the validation split")
    test_fraction: float = Field(0.01, ge=0, lt=1, description="share of documents (by a hash of the id, the top of its range) in the test split, held out from training and validation: what `pipeline eval` scores")
    seed: int = Field(0, ge=0, lt=1 << 64, description="seed of the split and sample hashes")
    verify_roundtrip: Literal["auto", "always", "never"] = Field("auto", description="decode-check documents: auto = where losslessness is not guaranteed by construction")
    on_lossy: Literal["drop", "keep"] = Field("drop", description="documents whose decoded tokens differ from the text: to the ledger (tokenize:lossy), or kept")
    hf_check_documents: int = Field(200, ge=0, description="sample documents on which the Hugging Face tokenizer must give SentencePiece's ids")
    shard_bytes: int = Field(512 << 20, ge=1 << 16, description="token bytes per Arrow shard")
    batch_rows: int = Field(1024, ge=1, description="documents encoded per batch (memory per task)")
    keep_work: bool = Field(False, description="keep work/ (flat token files) after the node completes")

    @model_validator(mode="after")
    def _check_fractions(self):
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must leave documents for training (sum < 1)")
        return self


def split_thresholds(validation_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(validation, test) hash thresholds: validation iff h < the first, test iff h >= the second.
    Test takes the top of the hash range so that adding it leaves the validation split unchanged."""
    val = min(int(validation_fraction * 2**64), 2**64 - 1)
    test = 2**64 - int(test_fraction * 2**64) if test_fraction > 0 else 2**64  # 2**64: no hash reaches it
    return val, max(test, val)


def split_of_hash(h: int, val_threshold: int, test_threshold: int) -> str:
    return "validation" if h < val_threshold else "test" if h >= test_threshold else "train"


class Tokenize(Stage):
    name = "tokenize"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.tokenizer", "pipeline.text.packing")
    description = "SentencePiece tokenizer (trained or given), tokenization, packing into seq_len rows, DatasetDict token shards"
    publishes = {"tokens": "tokens", "tokenizer": "tokenizer"}

    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        parts = [str(part) for inp in ctx.inputs for part in inp.parts]
        val_threshold, test_threshold = split_thresholds(p.validation_fraction, p.test_fraction)

        # 1. scan
        scan = ctx.run_tasks(_scan_task, [(part, p.seed, val_threshold, test_threshold) for part in parts], desc="scan", phase="scan")
        nonempty = sum(s["nonempty"] for s in scan)
        forced: list[str] = []
        if p.validation_fraction > 0 and nonempty >= 2 and sum(s["validation"] for s in scan) == 0:
            best = min((s["min_hash"], s["min_id"]) for s in scan if s["min_id"] is not None)
            forced = [best[1]]

        # 2. tokenizer
        tok_dir = ctx.dir / "tokenizer"
        if not (tok_dir / tkz.META).exists():
            self._make_tokenizer(ctx, parts, scan, val_threshold, test_threshold, forced, tok_dir)
        meta = storage.read_json(tok_dir / tkz.META)
        tok = tkz.load_tokenizer(tok_dir)
        conventions = meta.get("conventions") or {}
        want_bos = p.bos if p.bos is not None else bool(conventions.get("add_bos_token"))
        try:
            eos_id = tkz.resolve_special(tok, p.eos_token, tok.eos_id, "eos_token")
            bos_id = tkz.resolve_special(tok, p.bos_token, tok.bos_id, "bos_token") if want_bos else None
        except tkz.TokenizerError as exc:
            raise StageError(str(exc), where=f"node {self.node!r} params", hint="name a piece of the tokenizer") from exc
        if want_bos and bos_id is None:
            said = "bos: true" if p.bos else "the tokenizer's config adds BOS (add_bos_token)"
            raise StageError(f"{said} but the tokenizer has no BOS piece", where=f"node {self.node!r} params.bos", hint="set bos_token, or bos: false")
        ctx.provenance["tokenizer"] = {k: meta.get(k) for k in ("source", "revision", "kind", "model_type", "vocab_size", "sha256", "source_dir_sha256", "sample", "hf_agreement")}

        # 3. encode
        work = ctx.dir / "work"
        tokens_dir = ctx.dir / "tokens"
        packed = (tokens_dir / "index.json").exists()
        if not packed:  # a marker whose work files are gone (deleted after an earlier pack) must re-run
            for i in range(len(parts)):
                marker = ctx.dir / "_tasks" / f"part-{i:05d}.json"
                if marker.exists() and not packing.work_complete(work, i):
                    marker.unlink()
        cfg = {
            "node": self.node,
            "tokenizer_dir": str(tok_dir),
            "tokenizer_sha256": meta["sha256"],
            "dtype": tok.dtype.name,
            "eos_id": eos_id,
            "bos_id": bos_id,
            "seed": p.seed,
            "val_threshold": val_threshold,
            "test_threshold": test_threshold,
            "forced_validation": forced,
            "verify": p.verify_roundtrip,
            "on_lossy": p.on_lossy,
            "batch_rows": p.batch_rows,
        }
        enc = ctx.run_tasks(_encode_task, [(parts[i], i, cfg, str(work), str(ctx.part_path(i)), str(ctx.removed_path(i))) for i in range(len(parts))], desc="tokenize")

        # 4. pack
        totals = _merge(enc)
        licenses = sorted(totals.get("licenses", {}))
        if not packed:
            packing.write_token_dataset(
                work,
                len(parts),
                tokens_dir,
                seq_len=p.seq_len,
                dtype=tok.dtype,
                fingerprint=(ctx.dir / "_FINGERPRINT").read_text().strip(),
                shard_bytes=p.shard_bytes,
                index_extra={
                    "vocab_size": tok.vocab_size,
                    "eos_id": eos_id,
                    "bos_id": bos_id,
                    "tokenizer": _identity(meta, tok, eos_id, bos_id),
                    "validation_fraction": p.validation_fraction,
                    "test_fraction": p.test_fraction,
                    "split_rule": "h = xxh3_64(b'split:' + id, seed): validation iff h < validation_fraction * 2**64, test iff h >= 2**64 - test_fraction * 2**64, else train; forced_validation if no document was in validation",
                    "seed": p.seed,
                    "forced_validation": forced,
                    "documents": {s: totals.get("documents", {}).get(s, 0) for s in SPLITS},
                },
                info={"description": "token sequences packed to seq_len, EOS after each document", "license": " AND ".join(licenses)},
            )
        if not p.keep_work:
            storage.remove_tree(work)
        index = packing.read_index(tokens_dir)
        return {"tokenize": _summary(totals, index, meta, p, forced)}

    # ------------------------------------------------------------------------- identity
    def _source(self, rctx) -> tuple[Path | None, str | None]:
        return tokenizer_source(self.params.tokenizer_path, self.params.revision, rctx, f"node {self.node!r} ({self.name}) params.tokenizer_path")

    def resolve(self, rctx) -> dict | None:
        """Pin a given tokenizer in the fingerprint: a local folder by the sha256 of its tokenizer
        files, a file by its sha256, a hub id by its revision. None when the tokenizer is trained."""
        p: Params = self.params
        src, hub = self._source(rctx)
        if hub:
            return {"identity": {"tokenizer": hub, "revision": p.revision}}
        if src is None:
            return None
        if src.is_dir():
            files = tkz.source_files(src)
            return {"identity": {"tokenizer_files": files, "tokenizer_sha256": tkz.dir_sha256(files) if files else None}}
        return {"identity": {"tokenizer_sha256": hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else None}}

    # ------------------------------------------------------------------------- tokenizer
    def _make_tokenizer(self, ctx: NodeContext, parts: list[str], scan: list[dict], val_threshold: int, test_threshold: int, forced: list[str], tok_dir: Path) -> None:
        p: Params = self.params
        where = f"node {self.node!r} ({self.name})"
        if p.tokenizer_path:
            src, hub = self._source(ctx.run)
            if hub:
                try:
                    src = tkz.fetch_hub_tokenizer(hub, p.revision)
                except tkz.TokenizerError as exc:
                    raise StageError(str(exc), where=f"{where} params.tokenizer_path", hint=exc.hint if hasattr(exc, "hint") else None) from None
            if src.is_dir():
                pinned = src / tkz.SP_MODEL if (src / tkz.SP_MODEL).is_file() else src / tkz.HF_TOKENIZER
            else:
                pinned = src
            if not pinned.is_file():
                raise StageError(f"no tokenizer at {src}", where=f"{where} params.tokenizer_path", hint="a SentencePiece .model file, or a folder with tokenizer.model or tokenizer.json")
            digest = hashlib.sha256(pinned.read_bytes()).hexdigest()
            files = tkz.source_files(src) if src.is_dir() else {}
            dir_digest = tkz.dir_sha256(files) if files else None
            if p.tokenizer_sha256 and p.tokenizer_sha256.lower() not in (digest, dir_digest):
                raise StageError(f"{pinned} has sha256 {digest}" + (f" (its folder's tokenizer files: {dir_digest})" if dir_digest else "") + f", expected {p.tokenizer_sha256}", where=f"{where} params.tokenizer_sha256", hint="the tokenizer file changed: update the pin or restore the file")
            meta = {"source": hub or str(src), "source_sha256": digest, "trained": False}
            if hub:
                meta["revision"] = p.revision
            if files:
                meta.update(source_files=files, source_dir_sha256=dir_digest)
            if src.is_dir() and ((src / tkz.HF_CONFIG).is_file() or (src / tkz.HF_SPECIAL).is_file() or (src / tkz.HF_TOKENIZER).is_file()):
                meta["conventions"] = tkz.hf_conventions(src)
            checks = _first_texts(parts, p.hf_check_documents)
            if pinned.name != tkz.HF_TOKENIZER:
                model = pinned.read_bytes()
                meta.update(_sp_meta(model), hf_agreement=_hf_agreement(model, checks))
                tkz.write_tokenizer_dir(tok_dir, sp_model=model, meta=meta)
            else:
                meta.update(kind="hf", model_type=None, hf_agreement=None)
                tkz.write_tokenizer_dir(tok_dir, hf_dir=pinned.parent, meta=meta)
            return
        train_bytes = sum(s["train_bytes"] for s in scan)
        # the tokenizer never sees validation or test text, unless there is nothing else (a corpus of one document)
        only_validation = train_bytes == 0
        fraction = min(1.0, p.sample_bytes / train_bytes) if train_bytes else 1.0
        sampler = _Sample(parts, p.seed, -1 if only_validation else val_threshold, 2**64 if only_validation else test_threshold, set() if only_validation else set(forced), fraction, p.sample_bytes, p.hf_check_documents)
        threads = p.train_threads or (ctx.executor.workers if p.model_type == "bpe" else 1)
        ctx.run.console.log(f"\\[{self.node}] training a SentencePiece {p.model_type} tokenizer (vocab {p.vocab_size}) on ~{min(train_bytes, p.sample_bytes) / 1e6:.1f} MB sampled from {train_bytes / 1e6:.1f} MB")
        need, free = TRAIN_MEMORY_PER_BYTE * min(train_bytes, p.sample_bytes), _available_memory()
        if free is not None and need > free:
            ctx.run.console.log(f"[yellow]warning[/]: \\[{self.node}] SentencePiece needs about {need / 1e9:.1f} GB to train on this sample (~{TRAIN_MEMORY_PER_BYTE} bytes per sample byte) and {free / 1e9:.1f} GB are available: lower sample_bytes if it runs out of memory")
        try:
            model = tkz.train_sentencepiece(
                sampler,
                model_type=p.model_type,
                vocab_size=p.vocab_size,
                character_coverage=p.character_coverage,
                num_threads=threads,
                max_piece_length=p.max_piece_length,
                split_digits=p.split_digits,
            )
        except tkz.TokenizerError as exc:
            raise StageError(str(exc), where=where, hint="raise vocab_size or sample_bytes, or lower character_coverage; Chinese needs ~5000+ pieces at 0.9995") from exc
        meta = {
            "source": "trained",
            "trained": True,
            **_sp_meta(model),
            "requested_vocab_size": p.vocab_size,
            "character_coverage": p.character_coverage,
            "max_piece_length": p.max_piece_length,
            "split_digits": p.split_digits,
            "sample": {
                "documents": sampler.documents,
                "bytes": sampler.bytes,
                "cap_bytes": p.sample_bytes,
                "fraction": fraction,
                "rule": "train-split documents with xxh3_64(b'sample:' + id, seed) < fraction * 2**64, in input order, until cap_bytes",
                "sha256": sampler.digest.hexdigest(),
            },
            "hf_agreement": _hf_agreement(model, sampler.checks),
        }
        if meta["vocab_size"] < p.vocab_size:
            ctx.run.console.log(f"\\[{self.node}] the sample supports {meta['vocab_size']} pieces, fewer than vocab_size {p.vocab_size}")
        if meta["hf_agreement"]["mismatches"]:
            ctx.run.console.log(f"\\[{self.node}] WARNING: tokenizer.json disagrees with SentencePiece on {meta['hf_agreement']['mismatches']} of {meta['hf_agreement']['documents']} documents")
        tkz.write_tokenizer_dir(tok_dir, sp_model=model, meta=meta)


def tokenizer_source(tokenizer_path: str | None, revision: str | None, rctx, where: str) -> tuple[Path | None, str | None]:
    """(local path, hub id) of a stage's ``tokenizer_path``: relative paths are the manifest's;
    a hub id (``org/name`` that is no local path) needs ``revision``."""
    if not tokenizer_path:
        return None, None
    manifest = getattr(rctx, "manifest", None)
    base = Path(manifest.path).parent if manifest is not None and getattr(manifest, "path", None) else Path.cwd()
    src = Path(tokenizer_path).expanduser()
    src = src if src.is_absolute() else base / src
    if not src.exists() and tkz.HUB_ID.match(tokenizer_path):
        if not revision:
            raise StageError(f"{tokenizer_path!r} is not a local path: as a hub model id it needs revision", where=where, hint="set revision: a commit sha (or a tag) of the hub repository, so the run can be repeated")
        return None, tokenizer_path
    return src, None


def _identity(meta: dict, tok: tkz.TextTokenizer, eos_id: int, bos_id: int | None) -> dict:
    """What token shards record of their tokenizer: enough to refuse shards of another one."""
    out = {"sha256": meta["sha256"], "kind": meta["kind"], "files": meta["files"], "path": "../tokenizer"}
    if not meta.get("trained", True):  # a given tokenizer: where it came from (trained ones: index unchanged)
        out.update(
            name=meta.get("source"),
            revision=meta.get("revision"),
            source_sha256=meta.get("source_dir_sha256") or meta.get("source_sha256"),
            vocab_size=tok.vocab_size,
            eos_id=eos_id,
            bos_id=bos_id,
            eos_token=tok.pieces[eos_id] if eos_id is not None and eos_id < len(tok.pieces) else None,
            bos_token=tok.pieces[bos_id] if bos_id is not None and bos_id < len(tok.pieces) else None,
            conventions=meta.get("conventions"),
        )
    return out


def _sp_meta(model: bytes) -> dict:
    proto = tkz._sp_proto(model)
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    return {
        "kind": "sentencepiece",
        "model_type": {tkz.UNIGRAM: "unigram", tkz.BPE: "bpe"}.get(ts.model_type, str(ts.model_type)),
        "vocab_size": len(proto.pieces),
        "byte_fallback": ts.byte_fallback,
        "normalization": ns.name,
        "add_dummy_prefix": ns.add_dummy_prefix,
        "remove_extra_whitespaces": ns.remove_extra_whitespaces,
        "user_defined_symbols": [p.piece for p in proto.pieces if p.type == tkz.USER_DEFINED],
    }


def _hf_agreement(model: bytes, texts: list[str]) -> dict:
    """Encode ``texts`` with SentencePiece and with the generated tokenizer.json: ids must match."""
    tok = tkz._from_sentencepiece(model)
    hf = tkz.hf_tokenizer_from_sentencepiece(model)
    hf.encode_special_tokens = True
    bad = [i for i, t in enumerate(texts) if tok.encode(t) != hf.encode(t, add_special_tokens=False).ids]
    return {"documents": len(texts), "mismatches": len(bad)}


# ------------------------------------------------------------------------------- hashing
_REPEAT_SUFFIX = re.compile(r"#r\d+$")


def base_id(doc_id: str) -> str:
    """The original's id of a copy ``mix`` made by up-sampling (``<id>#r1``): copies share their
    original's split, so repeated text never lands in validation while its original trains."""
    return _REPEAT_SUFFIX.sub("", doc_id) if "#r" in doc_id else doc_id


def split_hash(doc_id: str, seed: int) -> int:
    return xxhash.xxh3_64_intdigest(b"split:" + base_id(doc_id).encode("utf-8"), seed=seed)


def sample_hash(doc_id: str, seed: int) -> int:
    return xxhash.xxh3_64_intdigest(b"sample:" + doc_id.encode("utf-8"), seed=seed)


def _nonempty(batch: pa.RecordBatch) -> np.ndarray:
    text = batch.column("text")
    return pc.fill_null(pc.greater(pc.binary_length(text), 0), False).to_numpy(zero_copy_only=False)


def _scan_task(part: str, seed: int, val_threshold: int, test_threshold: int = 2**64) -> dict:
    out = {"documents": 0, "nonempty": 0, "validation": 0, "test": 0, "train_bytes": 0, "min_hash": None, "min_id": None}
    for batch in pq.ParquetFile(part).iter_batches(batch_size=8192, columns=["id", "text"]):
        ok = _nonempty(batch)
        nbytes = pc.fill_null(pc.binary_length(batch.column("text")), 0).to_numpy(zero_copy_only=False)
        no_mark = pc.invert(pc.fill_null(pc.match_substring(batch.column("text"), tkz.SPACE_MARK), False)).to_numpy(zero_copy_only=False)
        out["documents"] += batch.num_rows
        for i, doc_id in enumerate(batch.column("id").to_pylist()):
            if not ok[i]:
                continue
            h = split_hash(doc_id or "", seed)
            out["nonempty"] += 1
            if h < val_threshold:
                out["validation"] += 1
            elif h >= test_threshold:
                out["test"] += 1
            else:
                out["train_bytes"] += int(nbytes[i])
            if no_mark[i] and (out["min_hash"] is None or (h, doc_id) < (out["min_hash"], out["min_id"])):
                out["min_hash"], out["min_id"] = h, doc_id
    return out


# Memory SentencePiece's trainer takes per byte of sample, measured on Chinese text (BPE, 10 and
# 30 MB samples: 21 and 24 bytes; it keeps every character's position); docs/tokenization.md.
TRAIN_MEMORY_PER_BYTE = 25


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None elsewhere."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _Sample:
    """Iterator over the tokenizer training sample (documents' texts), streamed from the parts."""

    def __init__(self, parts: list[str], seed: int, val_threshold: int, test_threshold: int, forced: set[str], fraction: float, cap: int, n_checks: int):
        self.parts, self.seed, self.val_threshold, self.test_threshold, self.forced = parts, seed, val_threshold, test_threshold, forced
        self.threshold = 2**64 if fraction >= 1 else int(fraction * 2**64)
        self.cap, self.n_checks = cap, n_checks
        self.documents = self.bytes = 0
        self.digest = hashlib.sha256()
        self.checks: list[str] = []
        self._check_chars = 0

    def __iter__(self):
        for part in self.parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=1024, columns=["id", "text"]):
                ok = _nonempty(batch)
                ids = batch.column("id").to_pylist()
                texts = batch.column("text")
                for i in np.flatnonzero(ok).tolist():
                    doc_id = ids[i] or ""
                    if self.val_threshold >= 0:
                        h = split_hash(doc_id, self.seed)
                        if h < self.val_threshold or h >= self.test_threshold or base_id(doc_id) in self.forced:
                            continue
                    if self.threshold < 2**64 and sample_hash(doc_id, self.seed) >= self.threshold:
                        continue
                    text = texts[i].as_py()
                    raw = text.encode("utf-8")
                    if self.bytes + len(raw) > self.cap:
                        text = raw[: self.cap - self.bytes].decode("utf-8", "ignore")
                        raw = text.encode("utf-8")
                    self.documents += 1
                    self.bytes += len(raw)
                    self.digest.update(len(raw).to_bytes(8, "little") + raw)
                    if len(self.checks) < self.n_checks and self._check_chars < HF_CHECK_CHARS:
                        self.checks.append(text)
                        self._check_chars += len(text)
                    yield text
                    if self.bytes >= self.cap:
                        return


def _first_texts(parts: list[str], n: int) -> list[str]:
    out: list[str] = []
    chars = 0
    for part in parts:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=256, columns=["text"]):
            for text in batch.column("text").to_pylist():
                if text:
                    if len(out) >= n or chars >= HF_CHECK_CHARS:
                        return out
                    out.append(text)
                    chars += len(text)
    return out


# -------------------------------------------------------------------------------- encode
def _encode_task(part: str, index: int, cfg: dict, work: str, out_path: str, removed_path: str) -> dict:
    tok = tkz.cached_tokenizer(ensure_local(cfg["tokenizer_dir"]), cfg["tokenizer_sha256"])  # a blind Dask worker fetches the folder
    dtype = np.dtype(cfg["dtype"])
    eos, bos = cfg["eos_id"], cfg["bos_id"]
    forced = set(cfg["forced_validation"])
    seed, val_threshold, test_threshold = cfg["seed"], cfg["val_threshold"], cfg.get("test_threshold", 2**64)
    verify, on_lossy = cfg["verify"], cfg["on_lossy"]
    n_special = 1 + (bos is not None)
    byte_ids = tok.byte_ids

    stats: dict = {
        "in": 0,
        "out": 0,
        "removed": 0,
        "removed_by_reason": {},
        "chars_out": 0,
        "documents": {s: 0 for s in SPLITS},
        "tokens": {s: 0 for s in SPLITS},
        "special_tokens": {s: 0 for s in SPLITS},
        "chars": {s: 0 for s in SPLITS},
        "byte_fallback_tokens": {s: 0 for s in SPLITS},
        "sources": {},
        "licenses": {},
        "verified_documents": 0,
        "lossy_documents_kept": 0,
    }
    pf = pq.ParquetFile(part)
    in_schema = pf.schema_arrow
    kept_schema = in_schema
    for name, typ in (("split", pa.string()), ("n_tokens", pa.int32())):
        if name in kept_schema.names:
            kept_schema = kept_schema.remove(kept_schema.get_field_index(name))
        kept_schema = kept_schema.append(pa.field(name, typ))
    writers = {s: packing.WorkWriter(work, s, index, dtype) for s in SPLITS}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    kept_tmp = Path(out_path).with_name(f".{Path(out_path).name}.tmp-{index}")
    kept_writer = pq.ParquetWriter(str(kept_tmp), kept_schema, **storage.PARQUET_OPTIONS)
    pending: list[pa.Table] = []
    pending_rows = 0
    removed_tables: list[pa.Table] = []
    try:
        for batch in pf.iter_batches(batch_size=cfg["batch_rows"]):
            n = batch.num_rows
            stats["in"] += n
            ids = batch.column("id").to_pylist()
            texts = batch.column("text").to_pylist()
            sources = batch.column("source").to_pylist() if "source" in batch.schema.names else [None] * n
            licenses = batch.column("license").to_pylist() if "license" in batch.schema.names else [None] * n
            keep = np.zeros(n, dtype=bool)
            split_of = [""] * n
            enc: list[np.ndarray | None] = [None] * n
            reasons: list[str] = []
            signals: list[dict] = []
            removed_idx: list[int] = []
            nonempty = [i for i in range(n) if texts[i]]
            encoded = dict(zip(nonempty, tok.encode_batch([texts[i] for i in nonempty])))
            for i in range(n):
                text = texts[i]
                if not text:
                    removed_idx.append(i); reasons.append("tokenize:empty"); signals.append({"chars": 0})
                    continue
                token_ids = encoded[i]
                if verify == "always" or (verify == "auto" and not tok.roundtrip_safe(text)):
                    stats["verified_documents"] += 1
                    decoded = tok.decode(token_ids)
                    if decoded != text:
                        if on_lossy == "drop":
                            removed_idx.append(i); reasons.append("tokenize:lossy"); signals.append(_lossy_signal(text, decoded))
                            continue
                        stats["lossy_documents_kept"] += 1
                doc_id = ids[i] or ""
                keep[i] = True
                enc[i] = token_ids
                split_of[i] = "validation" if base_id(doc_id) in forced else split_of_hash(split_hash(doc_id, seed), val_threshold, test_threshold)
            kept_idx = np.flatnonzero(keep)
            # token stream per split: [BOS] ids EOS for each document, in input order
            n_tok = np.zeros(n, dtype=np.int64)
            n_byte = np.zeros(n, dtype=np.int64)
            for split in SPLITS:
                rows = [i for i in kept_idx.tolist() if split_of[i] == split]
                if not rows:
                    continue
                lengths = np.array([len(enc[i]) for i in rows], dtype=np.int64)
                content = np.concatenate([enc[i] for i in rows])
                is_byte = byte_ids[content]
                starts = np.zeros(len(rows), dtype=np.int64)
                np.cumsum(lengths[:-1], out=starts[1:])
                bytes_per_doc = np.add.reduceat(is_byte, starts).astype(np.int64) if len(content) else np.zeros(len(rows), np.int64)
                n_tok[rows] = lengths
                n_byte[rows] = bytes_per_doc
                full = lengths + n_special
                out = np.empty(int(full.sum()), dtype=dtype)
                ends = np.cumsum(full)
                out[ends - 1] = eos
                if bos is not None:
                    out[ends - full] = bos
                mask = np.ones(len(out), dtype=bool)
                mask[ends - 1] = False
                if bos is not None:
                    mask[ends - full] = False
                out[mask] = content
                writers[split].write(out, [ids[i] or "" for i in rows], full)
            for i in kept_idx.tolist():
                split = split_of[i]
                chars = len(texts[i])
                src = sources[i] or "unknown"
                s = stats["sources"].setdefault(src, {"documents": {}, "tokens": {}, "chars": {}, "byte_fallback_tokens": 0})
                s["documents"][split] = s["documents"].get(split, 0) + 1
                s["tokens"][split] = s["tokens"].get(split, 0) + int(n_tok[i])
                s["chars"][split] = s["chars"].get(split, 0) + chars
                s["byte_fallback_tokens"] += int(n_byte[i])
                stats["documents"][split] += 1
                stats["tokens"][split] += int(n_tok[i])
                stats["special_tokens"][split] += n_special
                stats["chars"][split] += chars
                stats["byte_fallback_tokens"][split] += int(n_byte[i])
                stats["chars_out"] += chars
                lic = licenses[i] or "unknown"
                stats["licenses"][lic] = stats["licenses"].get(lic, 0) + 1
            if len(kept_idx):
                kept = pa.Table.from_batches([batch]).take(pa.array(kept_idx))
                for name in ("split", "n_tokens"):
                    if name in kept.column_names:
                        kept = kept.drop_columns([name])
                kept = kept.append_column("split", pa.array([split_of[i] for i in kept_idx.tolist()], pa.string()))
                kept = kept.append_column("n_tokens", pa.array(n_tok[kept_idx], pa.int32()))
                pending.append(kept.cast(kept_schema))
                pending_rows += kept.num_rows
                if pending_rows >= KEPT_ROW_GROUP:
                    kept_writer.write_table(pa.concat_tables(pending), row_group_size=KEPT_ROW_GROUP)
                    pending, pending_rows = [], 0
            if removed_idx:
                dropped = pa.Table.from_batches([batch]).take(pa.array(removed_idx, pa.int64()))
                removed_tables.append(removed_rows(dropped, cfg["node"], reasons, signals))
                for r in reasons:
                    stats["removed_by_reason"][r] = stats["removed_by_reason"].get(r, 0) + 1
            stats["out"] += len(kept_idx)
            stats["removed"] += len(removed_idx)
        if pending:
            kept_writer.write_table(pa.concat_tables(pending), row_group_size=KEPT_ROW_GROUP)
        kept_writer.close()
        for w in writers.values():
            w.close()
    except BaseException:
        kept_writer.close()
        kept_tmp.unlink(missing_ok=True)
        for w in writers.values():
            w.abort()
        raise
    os.replace(kept_tmp, out_path)
    removed = pa.concat_tables(removed_tables) if removed_tables else REMOVED_SCHEMA.empty_table()
    storage.write_parquet(removed, Path(removed_path))
    return stats


def _lossy_signal(text: str, decoded: str) -> dict:
    at = next((k for k, (a, b) in enumerate(zip(text, decoded)) if a != b), min(len(text), len(decoded)))
    return {
        "first_difference": at,
        "text": text[max(0, at - 10) : at + 10],
        "decoded": decoded[max(0, at - 10) : at + 10],
        "contains_u2581": tkz.SPACE_MARK in text,
    }


# ------------------------------------------------------------------------------- summary
def _merge(items: list[dict]) -> dict:
    return merge_stats(items)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def _summary(totals: dict, index: dict, meta: dict, p: Params, forced: list[str]) -> dict:
    tokens = sum(totals.get("tokens", {}).values())
    chars = sum(totals.get("chars", {}).values())
    byte_tokens = sum(totals.get("byte_fallback_tokens", {}).values())
    splits = {}
    for split in SPLITS:
        info = index["splits"][split]
        t = totals.get("tokens", {}).get(split, 0)
        splits[split] = {
            "documents": totals.get("documents", {}).get(split, 0),
            "tokens": t,  # document tokens, without EOS/BOS
            "tokens_with_special": info["tokens"],
            "sequences": info["sequences"],
            "full_sequences": info["full_sequences"],
            "last_sequence_tokens": info["last_sequence_tokens"],
            "shards": len(info["shards"]),
            "tokens_per_char": _rate(t, totals.get("chars", {}).get(split, 0)),
            "byte_fallback_rate": _rate(totals.get("byte_fallback_tokens", {}).get(split, 0), t),
        }
    sources = {}
    for src, s in sorted(totals.get("sources", {}).items()):
        st, sc = sum(s["tokens"].values()), sum(s["chars"].values())
        sources[src] = {
            "documents": s["documents"],
            "tokens": s["tokens"],
            "chars": sc,
            "tokens_per_char": _rate(st, sc),
            "byte_fallback_tokens": s["byte_fallback_tokens"],
            "byte_fallback_rate": _rate(s["byte_fallback_tokens"], st),
        }
    return {
        "tokenizer": {k: meta.get(k) for k in ("source", "revision", "kind", "model_type", "vocab_size", "requested_vocab_size", "sha256", "source_dir_sha256", "conventions", "sample", "hf_agreement") if k in meta},
        "seq_len": p.seq_len,
        "dtype": index["dtype"],
        "eos_id": index["eos_id"],
        "bos_id": index["bos_id"],
        "tokens": tokens,
        "chars": chars,
        "tokens_per_char": _rate(tokens, chars),
        "byte_fallback_tokens": byte_tokens,
        "byte_fallback_rate": _rate(byte_tokens, tokens),
        "sequences": sum(s["sequences"] for s in splits.values()),
        "splits": splits,
        "sources": sources,
        "forced_validation": forced,
        "verified_documents": totals.get("verified_documents", 0),
        "lossy_documents_kept": totals.get("lossy_documents_kept", 0),
    }
