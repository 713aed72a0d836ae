"""Stage ``finetune_data``: labeled documents -> fine-tuning examples, with the pretraining tokenizer.

Inputs: the labeled documents (a source with ``task: classification`` or ``sft``, usually after
``clean``/``dedup``) and the pretraining ``tokenize`` node, whose ``tokenizer/`` encodes the
examples, so token ids mean what they meant in pretraining (or ``tokenizer_path``: a
``tokenizer/`` folder written by a tokenize stage of another run).

Writes ``<node>/finetune/`` (published to ``<out>/finetune``), a ``datasets`` DatasetDict:

    finetune/dataset_dict.json                 {"splits": ["train", "validation", "test"]}
    finetune/<split>/data-00000-of-00001.arrow id, input_ids (list<int32>), and
                                               label (ClassLabel) + label_name, or loss_mask (list<int8>)
    finetune/index.json                        task, labels, counts per split and label, max_len,
                                               tokenizer sha256 (as tokens/index.json), eos/bos ids

Examples: classification ``[BOS] text EOS`` (text truncated to fit ``max_len``); SFT
``[BOS] instruction+separator response EOS`` with ``loss_mask`` 1 on the response tokens and EOS
(a response cut by ``max_len`` loses its EOS: the model must not learn to stop there).
The split of a document is a function of its id: ``h = xxh3_64(b"split:" + id, seed)``;
test if ``h < test_fraction·2^64``, validation if below ``(test+validation)·2^64``, else train.
Every labeled document is in a split or in the ledger (``finetune:empty``, ``finetune:no-label``,
``finetune:unknown-label``, ``finetune:no-response``, ``finetune:too-long``); the tokenize input's
rows are not this node's documents and are not counted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.common import storage
from pipeline.common.errors import StageError
from pipeline.core.stage import REMOVED_SCHEMA, NodeContext, Stage, merge_stats, removed_rows
from pipeline.exec.task_sync import ensure_local
from pipeline.io.export import write_dataset_metadata
from pipeline.text import tokenizer as tkz
from stages.tokenize import split_hash

SPLITS = ("train", "validation", "test")
INDEX_FORMAT = "grist.finetune/1"
TASK_COLUMNS = {"classification": ("label",), "sft": ("instruction", "response")}
ADDED = ("split", "input_ids", "loss_mask", "n_tokens", "truncated")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["classification", "sft"]
    max_len: int = Field(256, ge=4, description="tokens per example, special tokens included; longer ones are truncated (counted)")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="share of documents (by a hash of the id) in the test split")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="share of documents in the validation split")
    seed: int = Field(0, ge=0, lt=1 << 64, description="seed of the split hash")
    labels: list[str] | None = Field(None, min_length=2, description="classification: the label set, in this order (other labels go to the ledger); default: every label seen, sorted")
    separator: str = Field("\n", description="sft: text between instruction and response (part of the prompt, no loss)")
    tokenizer_path: str | None = Field(None, description="a tokenizer/ folder written by a tokenize stage (relative to the manifest), instead of a tokenize input")
    tokenizer_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="expected tokenizer sha256 (tokens/index.json tokenizer.sha256): pins tokenizer_path, whose changes the fingerprint cannot see")
    batch_rows: int = Field(1024, ge=1, description="documents encoded per batch")

    @model_validator(mode="after")
    def _check(self):
        if self.test_fraction + self.validation_fraction >= 1:
            raise ValueError("test_fraction + validation_fraction must leave documents for training (sum < 1)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must not repeat")
        return self


class FinetuneData(Stage):
    name = "finetune_data"
    version = "1"
    Params = Params
    code_deps = ("pipeline.text.tokenizer", "stages.tokenize")
    description = "labeled documents -> tokenized classification / SFT examples (train/validation/test) with the pretraining tokenizer"
    publishes = {"finetune": "finetune"}

    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        where = f"node {self.node!r} ({self.name})"
        tok_dir, tok_node, labeled = self._tokenizer(ctx, where)
        meta = storage.read_json(tok_dir / tkz.META)
        if p.tokenizer_sha256 and p.tokenizer_sha256.lower() != meta["sha256"]:
            raise StageError(f"the tokenizer at {tok_dir} has sha256 {meta['sha256']}, expected {p.tokenizer_sha256}", where=f"{where} params.tokenizer_sha256", hint="the tokenizer changed: point at the pretraining run's tokenizer, or update the pin")
        tok = tkz.load_tokenizer(tok_dir)
        tokens_index = tok_dir.parent / "tokens" / "index.json"
        special = storage.read_json(tokens_index) if tokens_index.is_file() else {"eos_id": tok.eos_id, "bos_id": None}
        parts = [(inp.name, str(part)) for inp in labeled for part in inp.parts]
        needed = ("id", "text", *TASK_COLUMNS[p.task])
        for node, part in parts:
            missing = [c for c in needed if c not in pq.read_schema(part).names]
            if missing:
                raise StageError(
                    f"input node {node!r} has no column(s) {', '.join(missing)} for task {p.task}",
                    where=where,
                    hint=f"declare the source with task: {p.task} and {'label_field (or label_value)' if p.task == 'classification' else 'instruction_field and response_field'}",
                )
        test_thr = int(p.test_fraction * 2**64)
        cfg = {
            "node": self.node,
            "task": p.task,
            "tokenizer_dir": str(tok_dir),
            "tokenizer_sha256": meta["sha256"],
            "eos_id": special["eos_id"],
            "bos_id": special.get("bos_id"),
            "max_len": p.max_len,
            "seed": p.seed,
            "test_threshold": test_thr,
            "validation_threshold": min(test_thr + int(p.validation_fraction * 2**64), 2**64 - 1),
            "labels": p.labels,
            "separator": p.separator,
            "batch_rows": p.batch_rows,
        }
        results = ctx.run_tasks(_encode_task, [(part, cfg, str(ctx.part_path(i)), str(ctx.removed_path(i))) for i, (_, part) in enumerate(parts)], desc="encode")
        totals = merge_stats(results)
        ft = totals.get("finetune", {})
        labels = p.labels or sorted({name for split in ft.get("labels", {}).values() for name in split})
        if p.task == "classification" and len(labels) < 2:
            raise StageError(f"classification needs at least two labels; the kept documents have {labels}", where=where, hint="check label_field / label_value of the sources")
        index = _write_finetune_dir(
            ctx.dir / "finetune",
            [str(ctx.part_path(i)) for i in range(len(parts))],
            p,
            labels,
            ft,
            fingerprint=(ctx.dir / "_FINGERPRINT").read_text().strip(),
            extra={
                # relative when it is the tokenize input's: valid in the node dir and in <out>/ alike
                "tokenizer": {"sha256": meta["sha256"], "kind": meta.get("kind"), "vocab_size": tok.vocab_size, "path": "../tokenizer" if tok_node else str(tok_dir)},
                "vocab_size": tok.vocab_size,
                "eos_id": cfg["eos_id"],
                "bos_id": cfg["bos_id"],
                "tokenizer_node": tok_node,
                "source_nodes": [inp.name for inp in labeled],
            },
        )
        empty = [s for s in SPLITS if index["splits"][s]["examples"] == 0]
        if empty:
            ctx.run.console.log(f"\\[{self.node}] WARNING: no example in split(s) {', '.join(empty)}: raise the fraction(s) or add documents")
        ctx.provenance["finetune"] = {k: index[k] for k in ("task", "labels", "max_len", "tokenizer")}
        return {"finetune": {k: index[k] for k in ("task", "labels", "max_len", "splits")}}

    def _tokenizer(self, ctx: NodeContext, where: str):
        """(tokenizer dir, tokenize node name or None, labeled inputs)."""
        p: Params = self.params
        tok_inputs = [inp for inp in ctx.inputs if (inp.dir / "tokenizer" / tkz.META).is_file()]
        labeled = [inp for inp in ctx.inputs if inp not in tok_inputs]
        if not labeled:
            raise StageError("no labeled input: inputs are [labeled documents node, tokenize node]", where=where, hint="add the node with the labeled documents to inputs")
        if p.tokenizer_path:
            if tok_inputs:
                raise StageError(f"both tokenizer_path and a tokenize input ({tok_inputs[0].name!r}): which tokenizer?", where=where, hint="keep one")
            base = Path(ctx.run.manifest.path).parent if getattr(ctx.run, "manifest", None) is not None else Path.cwd()
            tok_dir = Path(p.tokenizer_path).expanduser()
            tok_dir = tok_dir if tok_dir.is_absolute() else base / tok_dir
            if not (tok_dir / tkz.META).is_file():
                raise StageError(f"{tok_dir} is not a tokenizer folder written by the tokenize stage (no {tkz.META})", where=f"{where} params.tokenizer_path", hint="point it at <pretraining run>/tokenizer, the folder the checkpoint's tokens were made with")
            return tok_dir, None, labeled
        if len(tok_inputs) != 1:
            raise StageError(
                f"{'no' if not tok_inputs else len(tok_inputs)} tokenize input(s) among {[i.name for i in ctx.inputs]}",
                where=where,
                hint="inputs: [labeled documents node, the pretraining tokenize node] (or set tokenizer_path)",
            )
        return tok_inputs[0].dir / "tokenizer", tok_inputs[0].name, labeled


# ---------------------------------------------------------------------------------- encode task
def _split_of(doc_id: str, cfg: dict) -> str:
    h = split_hash(doc_id, cfg["seed"])
    return "test" if h < cfg["test_threshold"] else "validation" if h < cfg["validation_threshold"] else "train"


def _encode_task(part: str, cfg: dict, out_path: str, removed_path: str) -> dict:
    tok = tkz.cached_tokenizer(ensure_local(cfg["tokenizer_dir"]), cfg["tokenizer_sha256"])  # a blind Dask worker fetches the folder
    task, max_len, eos, bos = cfg["task"], cfg["max_len"], cfg["eos_id"], cfg["bos_id"]
    head = [bos] if bos is not None else []
    allowed = set(cfg["labels"]) if cfg["labels"] else None
    stats = {"in": 0, "out": 0, "removed": 0, "removed_by_reason": {}, "finetune": {"examples": {}, "tokens": {}, "loss_tokens": {}, "truncated": {}, "labels": {}}}
    ft = stats["finetune"]
    kept_tables, removed_tables = [], []
    for batch in pq.ParquetFile(part).iter_batches(batch_size=cfg["batch_rows"]):
        table = pa.Table.from_batches([batch])
        for name in ADDED:  # recomputed here
            if name in table.column_names:
                table = table.drop_columns([name])
        n = table.num_rows
        stats["in"] += n
        ids = table["id"].to_pylist()
        reasons: dict[int, str] = {}
        if task == "classification":
            labels = table["label"].to_pylist()
            texts = table["text"].to_pylist()
            for i in range(n):
                if labels[i] is None or labels[i] == "":
                    reasons[i] = "finetune:no-label"
                elif allowed is not None and labels[i] not in allowed:
                    reasons[i] = "finetune:unknown-label"
                elif not texts[i]:
                    reasons[i] = "finetune:empty"
            todo = [i for i in range(n) if i not in reasons]
            enc = dict(zip(todo, tok.encode_batch([texts[i] for i in todo])))
            rows = {}
            for i in todo:
                body = enc[i]
                if len(body) == 0:
                    reasons[i] = "finetune:empty"
                    continue
                room = max_len - len(head) - 1
                rows[i] = (np.concatenate([np.asarray(head, np.int32), body[:room], np.asarray([eos], np.int32)]), None, len(body) > room)
        else:
            instr, resp = table["instruction"].to_pylist(), table["response"].to_pylist()
            for i in range(n):
                if not resp[i]:
                    reasons[i] = "finetune:no-response"
            todo = [i for i in range(n) if i not in reasons]
            prompts = tok.encode_batch([(instr[i] or "") + cfg["separator"] for i in todo])
            answers = tok.encode_batch([resp[i] for i in todo])
            rows = {}
            for i, prompt, answer in zip(todo, prompts, answers):
                prefix = np.concatenate([np.asarray(head, np.int32), prompt]).astype(np.int32)
                room = max_len - len(prefix)
                if len(answer) == 0:
                    reasons[i] = "finetune:no-response"
                    continue
                if room < 2:  # not even one response token would be trained on
                    reasons[i] = "finetune:too-long"
                    continue
                full = np.concatenate([answer, np.asarray([eos], np.int32)])
                truncated = len(full) > room
                full = full[:room]
                ids_ = np.concatenate([prefix, full]).astype(np.int32)
                mask = np.concatenate([np.zeros(len(prefix), np.int8), np.ones(len(full), np.int8)])
                rows[i] = (ids_, mask, truncated)
        kept_idx = sorted(rows)
        splits = []
        for i in kept_idx:
            split = _split_of(ids[i] or "", cfg)
            splits.append(split)
            ex, mask, truncated = rows[i]
            ft["examples"][split] = ft["examples"].get(split, 0) + 1
            ft["tokens"][split] = ft["tokens"].get(split, 0) + len(ex)
            ft["truncated"][split] = ft["truncated"].get(split, 0) + int(truncated)
            if mask is not None:
                ft["loss_tokens"][split] = ft["loss_tokens"].get(split, 0) + int(mask.sum())
            else:
                by_label = ft["labels"].setdefault(split, {})
                by_label[labels[i]] = by_label.get(labels[i], 0) + 1
        kept = table.take(pa.array(kept_idx, pa.int64()))
        kept = kept.append_column("split", pa.array(splits, pa.string()))
        kept = kept.append_column("input_ids", pa.array([rows[i][0] for i in kept_idx], pa.list_(pa.int32())))
        if task == "sft":
            kept = kept.append_column("loss_mask", pa.array([rows[i][1] for i in kept_idx], pa.list_(pa.int8())))
        kept = kept.append_column("n_tokens", pa.array([len(rows[i][0]) for i in kept_idx], pa.int32()))
        kept = kept.append_column("truncated", pa.array([rows[i][2] for i in kept_idx], pa.bool_()))
        kept_tables.append(kept)
        gone = sorted(reasons)
        if gone:
            removed_tables.append(removed_rows(table.take(pa.array(gone, pa.int64())), cfg["node"], [reasons[i] for i in gone]))
            for i in gone:
                stats["removed_by_reason"][reasons[i]] = stats["removed_by_reason"].get(reasons[i], 0) + 1
        stats["out"] += len(kept_idx)
        stats["removed"] += len(gone)
    if kept_tables:
        kept_all = pa.concat_tables(kept_tables)
    else:  # an empty part: keep its schema so the node's parts stay uniform
        schema = pq.read_schema(part)
        kept_all = schema.empty_table()
    storage.write_parquet(kept_all, Path(out_path))
    storage.write_parquet(pa.concat_tables(removed_tables) if removed_tables else REMOVED_SCHEMA.empty_table(), Path(removed_path))
    return stats


# ----------------------------------------------------------------------------- finetune/ folder
def example_features(task: str, labels: list[str]):
    from datasets import ClassLabel, Features, Sequence, Value

    cols = {"id": Value("string"), "input_ids": Sequence(Value("int32"))}
    if task == "classification":
        cols.update(label=ClassLabel(names=list(labels)), label_name=Value("string"))
    else:
        cols["loss_mask"] = Sequence(Value("int8"))
    return Features(cols)


def _write_finetune_dir(dest: Path, parts: list[str], p: Params, labels: list[str], ft: dict, *, fingerprint: str, extra: dict) -> dict:
    """Stream the kept parts, split by split, into a DatasetDict (atomically: built beside, renamed)."""
    features = example_features(p.task, labels)
    schema = features.arrow_schema
    label_id = {name: k for k, name in enumerate(labels)}
    tmp = dest.with_name(f".{dest.name}.tmp")
    storage.remove_tree(tmp)
    tmp.mkdir(parents=True)
    cols = ["id", "split", "input_ids"] + (["label"] if p.task == "classification" else ["loss_mask"])
    splits = {}
    for split in SPLITS:
        folder = tmp / split
        folder.mkdir()
        name = "data-00000-of-00001.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for part in parts:
                table = pq.read_table(part, columns=[c for c in cols if c in pq.read_schema(part).names])
                if "split" not in table.column_names:
                    continue
                table = table.filter(pc.equal(table["split"], split))
                if not table.num_rows:
                    continue
                arrays = [table["id"], table["input_ids"]]
                if p.task == "classification":
                    arrays += [pa.array([label_id[x] for x in table["label"].to_pylist()], pa.int64()), table["label"]]
                else:
                    arrays.append(table["loss_mask"])
                writer.write_table(pa.table([a.cast(f.type) for a, f in zip(arrays, schema)], schema=schema))
        write_dataset_metadata(folder, schema, [name], f"{fingerprint}:{split}", {"description": f"{p.task} fine-tuning examples ({split})"})
        splits[split] = {
            "file": f"{split}/{name}",
            "examples": ft.get("examples", {}).get(split, 0),
            "tokens": ft.get("tokens", {}).get(split, 0),
            "truncated": ft.get("truncated", {}).get(split, 0),
            **({"labels": {name_: ft.get("labels", {}).get(split, {}).get(name_, 0) for name_ in labels}} if p.task == "classification" else {"loss_tokens": ft.get("loss_tokens", {}).get(split, 0)}),
        }
    storage.atomic_write_text(tmp / "dataset_dict.json", json.dumps({"splits": list(SPLITS)}) + "\n")
    index = {
        "format": INDEX_FORMAT,
        "task": p.task,
        "labels": labels if p.task == "classification" else [],
        "max_len": p.max_len,
        **extra,
        "seed": p.seed,
        "test_fraction": p.test_fraction,
        "validation_fraction": p.validation_fraction,
        "split_rule": "h = xxh3_64(b'split:' + id, seed): test if h < test_fraction * 2**64, validation if h < (test_fraction + validation_fraction) * 2**64, else train",
        "separator": p.separator if p.task == "sft" else None,
        "splits": splits,
    }
    storage.atomic_write_json(tmp / "index.json", index)
    storage.remove_tree(dest)
    os.replace(tmp, dest)
    return index
