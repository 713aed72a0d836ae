"""Stage ``lm_score``: per-document perplexity under a model trained by ``pipeline train``, and
CCNet's head / middle / tail buckets (Wenzek et al. 2020: a small LM on curated text, e.g. wiki-zh,
scores web text; low perplexity = close to the reference).

Scoring is separate from the decision: every document gets ``q_perplexity`` (float64, per UTF-8
byte by default, per token with ``per: token``; null for a document without tokens) and ``lm_bucket`` (``head`` | ``middle`` | ``tail``; null for those).
Documents are dropped only when ``max_perplexity`` or ``keep_buckets`` is set, to the ledger as
``lm:perplexity>X`` or ``lm:bucket:<bucket>`` (the first failing rule), or ``lm:empty`` with
``empty: drop``; the signals hold the perplexity, the bucket, the predicted tokens and the cut
points.

Phases (a global stage: buckets are quantiles of the whole node):

1. ``score`` -- one task per input part: the model is loaded once per worker process
   (``pipeline.text.lm``), documents are tokenized with the run's tokenizer, cut to
   ``max_tokens_per_doc``, sorted by length and scored in padded batches; the scores go to
   ``work/scores-<part>.parquet``.
2. cut points -- in this process: the ``buckets`` quantiles of every document's perplexity (or
   the fixed ``bucket_perplexities``), written to ``_lm.json`` so a resumed run uses the same.
3. final -- one task per input part: the part, its scores and bucket, the keep decision.

The model is part of the node's identity: ``model_sha256`` (the sha256 of the checkpoint's
``model.safetensors``) is filled in when the manifest is loaded, so its parameters -- and the
fingerprint -- change when the model does; a pinned value that no longer matches is an error.
See docs/lm-score.md for the figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipeline.common import storage
from pipeline.common.errors import PipelineError
from pipeline.core.stage import NodeContext, Stage, removed_rows
from pipeline.exec.executors import available_cores
from pipeline.exec.task_sync import ensure_local
from pipeline.text import lm

BUCKETS = ("head", "middle", "tail")
COLUMNS = ("q_perplexity", "lm_bucket")
SCORE_SCHEMA = pa.schema([("q_perplexity", pa.float64()), ("lm_tokens", pa.int32())])


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="a `pipeline train` output folder or its checkpoint/ folder (relative paths: to the manifest's folder)")
    model_sha256: str | None = Field(None, description="sha256 of the checkpoint's model.safetensors; filled in at load (so a new model re-scores), or set to pin one")
    batch_size: int = Field(16, ge=1, le=4096, description="sequences per forward pass (windows of at most the model's context, sorted by length)")
    max_tokens_per_doc: int = Field(1024, ge=1, description="documents longer than this are scored on their first N tokens")
    per: Literal["byte", "token"] = Field("byte", description="perplexity per UTF-8 byte (independent of how the tokenizer cuts the text: measured to separate shuffled and other-language text that per-token perplexity puts in the head; docs/lm-score.md) or per predicted token (CCNet's)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when torch sees one (bf16 there), else cpu")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per task (default: the machine's cores / the executor's workers)")
    buckets: list[float] = Field([0.33, 0.66], description="two quantiles of the node's perplexities: head <= first < middle <= second < tail")
    bucket_perplexities: list[float] | None = Field(None, description="two fixed perplexity cut points instead of quantiles (reuse a reference run's)")
    max_perplexity: float | None = Field(None, gt=0, description="drop documents above this perplexity (ledger lm:perplexity>X)")
    keep_buckets: list[Literal["head", "middle", "tail"]] | None = Field(None, description="keep only these buckets (ledger lm:bucket:<bucket>)")
    empty: Literal["keep", "drop"] = Field("keep", description="documents without tokens: keep them (null score and bucket) or drop them (ledger lm:empty)")

    @field_validator("buckets", "bucket_perplexities")
    @classmethod
    def _two_increasing(cls, v, info):
        if v is None:
            return v
        if len(v) != 2 or not v[0] < v[1]:
            raise ValueError("two increasing cut points, e.g. [0.33, 0.66]")
        if info.field_name == "buckets" and not (0 < v[0] and v[1] < 1):
            raise ValueError("quantiles strictly between 0 and 1")
        if info.field_name == "bucket_perplexities" and v[0] <= 0:
            raise ValueError("perplexities are positive")
        return v

    @field_validator("keep_buckets")
    @classmethod
    def _some_bucket(cls, v):
        if v is not None and not v:
            raise ValueError("keep at least one bucket (or leave keep_buckets unset)")
        return v

    @field_validator("model")
    @classmethod
    def _a_trained_run(cls, v: str, info: ValidationInfo) -> str:
        # relative to the manifest's folder (as local sources and tokenizer_path), kept absolute
        manifest_dir = (info.context or {}).get("manifest_dir")
        if manifest_dir and not Path(v).expanduser().is_absolute():
            v = str((Path(manifest_dir) / v).resolve())
        try:  # a missing model, a folder that is not a run, a lost tokenizer: named at load time
            lm.find_run(v)
        except PipelineError as exc:
            raise ValueError(f"{exc.where or v}: {exc.what}" + (f" ({exc.hint})" if exc.hint else "")) from None
        return v

    @model_validator(mode="after")
    def _identity(self) -> "Params":
        # the model's hash is what makes a new model re-score: it is a parameter, so it is in the
        # fingerprint and the lock file
        digest = lm.model_sha256(self.model)
        if self.model_sha256 is not None and self.model_sha256.lower() != digest:
            raise ValueError(f"model_sha256 pins {self.model_sha256}, but {self.model} has {digest}: update the pin or restore the model")
        self.model_sha256 = digest
        return self


class LmScore(Stage):
    name = "lm_score"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.lm", "pipeline.text.tokenizer")
    description = "perplexity under a model trained by `pipeline train` (q_perplexity) and CCNet head/middle/tail buckets (lm_bucket)"

    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        parts = [str(part) for inp in ctx.inputs for part in inp.parts]
        work = ctx.dir / "work"
        run_files = lm.find_run(p.model)
        threads = p.threads or max(1, available_cores() // max(1, getattr(ctx.executor, "workers", 1)))
        cfg = {
            "model": str(run_files.checkpoint.resolve()),
            "sha256": p.model_sha256,
            "device": p.device,
            "threads": threads,
            "batch_size": p.batch_size,
            "max_tokens": p.max_tokens_per_doc,
            "per": p.per,
        }
        ctx.provenance["lm_score"] = {
            "model": str(run_files.checkpoint.resolve()),
            "model_sha256": p.model_sha256,
            "model_config": run_files.state.get("model"),
            "trained_steps": run_files.state.get("step"),
            "trained_tokens": run_files.state.get("tokens"),
            "tokenizer": str(run_files.tokenizer),
            "tokens_dir": (run_files.state.get("data") or {}).get("tokens_dir"),
        }
        summary_path = ctx.dir / "_lm.json"
        final_done = all((ctx.dir / "_tasks" / f"part-{i:05d}.json").exists() for i in range(len(parts)))
        if not (final_done and summary_path.exists()):
            t0 = time.perf_counter()
            score_stats = ctx.run_tasks(_score_task, [(parts[i], str(_score_path(work, i)), cfg) for i in range(len(parts))], desc="score", phase="score")
            wall = time.perf_counter() - t0
            ppl = np.concatenate([storage.read_parquet(_score_path(work, i), ["q_perplexity"])["q_perplexity"].to_numpy(zero_copy_only=False) for i in range(len(parts))] or [np.zeros(0)])
            ppl = ppl[~np.isnan(ppl.astype(np.float64))] if len(ppl) else ppl
            if p.bucket_perplexities is not None:
                cuts, how = list(p.bucket_perplexities), "fixed"
            elif len(ppl):
                cuts, how = [float(c) for c in np.quantile(ppl, p.buckets)], "quantiles"
            else:
                cuts, how = [float("inf"), float("inf")], "quantiles"
            tokens = sum(s["tokens_scored"] for s in score_stats)
            forward = sum(s["forward_s"] for s in score_stats)
            summary = {
                "cut_points": cuts,
                "cut_points_from": how,
                "per": p.per,
                "quantiles": p.buckets if how == "quantiles" else None,
                "documents_scored": int(len(ppl)),
                "perplexity_median": float(np.median(ppl)) if len(ppl) else None,
                "perplexity_mean": float(np.mean(ppl)) if len(ppl) else None,
                "tokens_scored": tokens,
                "documents_truncated": sum(s["documents_truncated"] for s in score_stats),
                "padded_positions": sum(s["padded_positions"] for s in score_stats),
                "positions": sum(s["positions"] for s in score_stats),
                "tokenize_s": round(sum(s["tokenize_s"] for s in score_stats), 3),
                "forward_s": round(forward, 3),
                "load_s": round(sum(s["load_s"] for s in score_stats), 3),
                "tokens_per_s_per_task": round(tokens / forward, 1) if forward else None,
                "tokens_per_s_wall": round(tokens / wall, 1) if wall else None,
                "device": score_stats[0]["device"] if score_stats else None,
                "threads_per_task": threads,
            }
            storage.atomic_write_json(summary_path, summary)
        summary = storage.read_json(summary_path)
        decision = {"cuts": summary["cut_points"], "max_perplexity": p.max_perplexity, "keep_buckets": p.keep_buckets, "empty": p.empty}
        tasks = [(parts[i], str(_score_path(work, i)), decision, self.node, str(ctx.part_path(i)), str(ctx.removed_path(i))) for i in range(len(parts))]
        final = ctx.run_tasks(_final_task, tasks, desc="write")
        for marker in [*(ctx.dir / "_tasks").glob("score-part-*.json"), *(ctx.dir / "_tasks").glob("score-layout")]:
            marker.unlink()
        storage.remove_tree(work)
        by_bucket = {b: sum(s["buckets"].get(b, 0) for s in final) for b in BUCKETS}
        return {"lm_score": {**summary, "buckets_in": by_bucket}, "card": _card(p, summary, by_bucket)}


def _score_path(work: Path, i: int) -> Path:
    return work / f"scores-{i:05d}.parquet"


def _score_task(part_path: str, score_path: str, cfg: dict) -> dict:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(cfg["threads"])  # cores / workers: processes side by side do not oversubscribe
    try:
        t0 = time.perf_counter()
        scorer = lm.cached_scorer(cfg["model"], cfg["sha256"], cfg["device"])
        load_s = time.perf_counter() - t0
        texts = storage.read_parquet(Path(part_path), ["text"])["text"].to_pylist()
        ppl, count, facts = scorer.score(texts, max_tokens=cfg["max_tokens"], batch_size=cfg["batch_size"], per=cfg["per"])
    finally:
        torch.set_num_threads(before)
    table = pa.table({"q_perplexity": pa.array(lm.nan_to_none(ppl), pa.float64()), "lm_tokens": pa.array(count, pa.int32())}, schema=SCORE_SCHEMA)
    storage.write_parquet(table, Path(score_path))
    return {**facts, "load_s": round(load_s, 4), "device": str(scorer.device)}


def _final_task(part_path: str, score_path: str, decision: dict, node: str, out_path: str, removed_path: str) -> dict:
    from pipeline.core.stage import REMOVED_SCHEMA, doc_stats

    table = storage.read_parquet(Path(part_path))
    table = table.drop_columns([c for c in COLUMNS if c in table.column_names])  # scored twice: the new score wins
    scores = storage.read_parquet(ensure_local(score_path))
    ppl = scores["q_perplexity"].to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
    ntok = scores["lm_tokens"].to_numpy()
    c1, c2 = decision["cuts"]
    scored = ~np.isnan(ppl)
    bucket = np.where(~scored, None, np.where(ppl <= c1, "head", np.where(ppl <= c2, "middle", "tail"))).astype(object)

    reasons = np.full(len(ppl), None, dtype=object)
    if decision["empty"] == "drop":
        reasons[~scored] = "lm:empty"
    if decision["max_perplexity"] is not None:
        over = scored & (ppl > decision["max_perplexity"]) & (reasons == None)  # noqa: E711 (elementwise)
        reasons[over] = f"lm:perplexity>{decision['max_perplexity']:g}"
    if decision["keep_buckets"] is not None:
        out = scored & ~np.isin(bucket.astype(str), decision["keep_buckets"]) & (reasons == None)  # noqa: E711
        reasons[out] = np.char.add("lm:bucket:", bucket[out].astype(str)).astype(object)
    drop = reasons != None  # noqa: E711

    ppl_col = pa.array(lm.nan_to_none(ppl), pa.float64())
    bucket_col = pa.array(bucket.tolist(), pa.string())
    full = table.append_column("q_perplexity", ppl_col).append_column("lm_bucket", bucket_col)
    kept = full.filter(pa.array(~drop))
    gone = np.flatnonzero(drop)
    if len(gone):
        signals = [
            {
                "q_perplexity": None if np.isnan(ppl[i]) else round(float(ppl[i]), 4),
                "lm_bucket": bucket[i],
                "lm_tokens": int(ntok[i]),
                "cut_points": [round(c1, 4), round(c2, 4)],
                **({"max_perplexity": decision["max_perplexity"]} if decision["max_perplexity"] is not None else {}),
                **({"keep_buckets": decision["keep_buckets"]} if decision["keep_buckets"] is not None else {}),
            }
            for i in gone
        ]
        removed = removed_rows(table.take(pa.array(gone, pa.int64())), node, reasons[gone].tolist(), signals)
    else:
        removed = REMOVED_SCHEMA.empty_table()
    storage.write_parquet(kept, Path(out_path))
    storage.write_parquet(removed, Path(removed_path))
    counts = {b: int(np.sum(bucket == b)) for b in BUCKETS}
    counts["none"] = int(np.sum(~scored))
    return {"buckets": counts, **doc_stats(table.num_rows, kept, removed)}


def _card(p: Params, s: dict, by_bucket: dict) -> dict:
    fmt = lambda v: "n/a" if v is None else f"{v:,.2f}" if v < 100 else f"{v:,.0f}"  # noqa: E731
    rows = [
        ["model", p.model],
        ["model sha256", (p.model_sha256 or "")[:16]],
        ["documents scored", f"{s['documents_scored']:,}"],
        ["tokens scored", f"{s['tokens_scored']:,}"],
        [f"median perplexity (per {p.per})", fmt(s["perplexity_median"])],
        ["cut points (" + s["cut_points_from"] + ")", " / ".join(fmt(c) for c in s["cut_points"])],
        ["head / middle / tail", " / ".join(f"{by_bucket[b]:,}" for b in BUCKETS)],
    ]
    notes = [f"Documents longer than {p.max_tokens_per_doc:,} tokens are scored on their first {p.max_tokens_per_doc:,} tokens."]
    rules = []
    if p.max_perplexity is not None:
        rules.append(f"perplexity above {p.max_perplexity:g} dropped")
    if p.keep_buckets is not None:
        rules.append("only " + ", ".join(p.keep_buckets) + " kept")
    if p.empty == "drop":
        rules.append("documents without tokens dropped")
    notes.append("; ".join(rules).capitalize() + "." if rules else "Scores only: no document dropped by this stage.")
    return {"title": "LM perplexity (lm_score)", "rows": rows, "notes": notes}
