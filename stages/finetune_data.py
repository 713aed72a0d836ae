"""Stage ``finetune_data``: labeled documents -> fine-tuning examples, with the pretraining tokenizer.

Inputs: the labeled documents (a source with ``task: classification`` or ``sft``, usually after
``clean``) and the pretraining ``tokenize`` node, whose ``tokenizer/`` encodes the examples, so
token ids mean what they meant in pretraining. Or ``tokenizer_path``: a ``tokenizer/`` folder
written by a tokenize stage of another run, any Hugging Face tokenizer folder (``tokenizer.json``
+ ``tokenizer_config.json``, e.g. a model's folder) or a hub id with ``revision``; it is copied
into ``<node>/tokenizer`` and ``finetune/tokenizer`` (the examples folder is self-contained) the
way ``tokenize`` copies its own ``tokenizer_path`` (same files, same sha256).

Writes ``<node>/finetune/`` (published to ``<out>/finetune``), a ``datasets`` DatasetDict:

    finetune/dataset_dict.json                 {"splits": ["train", "validation", "test"]}
    finetune/<split>/data-00000-of-00001.arrow id, input_ids (list<int32>), and
                                               label (ClassLabel) + label_name, or loss_mask (list<int8>)
    finetune/index.json                        task, labels, counts per split and label, label
                                               conflicts, max_len, tokenizer sha256 + files, eos/bos ids,
                                               chat template (sha256)

Phases (docs/finetune-data.md):

1. ``keys`` -- one task per part: the xxh3-128 of each usable example's exact text (classification;
   SFT: instruction + NUL + response) with its label, to ``work/keys/``; ``split_field`` values
   are checked here (an unknown value stops the run naming the values and the part).
2. decide -- in this process, over all parts: texts seen with two or more labels are *label
   conflicts* (``label_conflicts: drop``: every copy to the ledger as ``label:conflict``;
   ``majority``: the copies of the most frequent label are kept, the others ledgered, a tie drops
   all); with ``duplicates: drop`` later copies of a kept text go to the ledger
   (``finetune:duplicate``), the first in input order stays. Written per part to ``work/drops/``.
3. encode (final) -- one task per part: examples, splits, ledger.

Examples: classification ``[BOS] text EOS`` (text truncated to fit ``max_len``); SFT
``[BOS] instruction+separator response EOS`` with ``loss_mask`` 1 on the response tokens and EOS
(a response cut by ``max_len`` loses its EOS: the model must not learn to stop there). With a
chat template (the tokenizer's, ``chat_template: auto``) SFT examples are what the template
renders: prompt = the user turn + the generation prompt, response + the end-of-turn token (the
first special token the template puts after an assistant message, else EOS) with loss.
The split of a document is a function of its id: ``h = xxh3_64(b"split:" + id, seed)``;
test if ``h < test_fraction·2^64``, validation if below ``(test+validation)·2^64``, else train;
or, with ``split_field``, the split the data already has.
Every labeled document is in a split or in the ledger (``finetune:empty``, ``finetune:no-label``,
``finetune:unknown-label``, ``finetune:no-response``, ``finetune:too-long``,
``finetune:no-split``, ``finetune:duplicate``, ``label:conflict``); the tokenize input's rows
are not this node's documents and are not counted. Deterministic for any number of workers;
a killed run resumes from its finished tasks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
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
from pipeline.io.export import write_dataset_metadata
from pipeline.text import tokenizer as tkz
from stages.tokenize import split_hash, tokenizer_source

SPLITS = ("train", "validation", "test")
INDEX_FORMAT = "grist.finetune/1"
TASK_COLUMNS = {"classification": ("label",), "sft": ("instruction", "response")}
ADDED = ("split", "input_ids", "loss_mask", "n_tokens", "truncated")
# split_field values (case and surrounding spaces ignored) -> split
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation", "development": "validation",
    "test": "test", "testing": "test",
}  # fmt: skip
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CONFLICT = "label:conflict"
DUPLICATE = "finetune:duplicate"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["classification", "sft"]
    max_len: int = Field(256, ge=4, description="tokens per example, special tokens included; longer ones are truncated (counted)")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="share of documents (by a hash of the id) in the test split")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="share of documents in the validation split")
    seed: int = Field(0, ge=0, lt=1 << 64, description="seed of the split hash")
    split_field: str | None = Field(
        None, description="a column of the input with the split the data already has (train / validation / test; dev, valid, val = validation): kept instead of the hash split; a row without a value goes to the ledger (finetune:no-split)"
    )
    labels: list[str] | None = Field(None, min_length=2, description="classification: the label set, in this order (other labels go to the ledger); default: every label seen, sorted")
    label_conflicts: Literal["drop", "majority"] = Field("drop", description="classification: a text seen with different labels: drop every copy (label:conflict), or keep the copies of the majority label (a tie drops all)")
    duplicates: Literal["keep", "drop"] = Field("keep", description="later copies of the exact same example (text and label, or instruction and response): kept, or to the ledger (finetune:duplicate), the first in input order staying")
    separator: str = Field("\n", description="sft without a chat template: text between instruction and response (part of the prompt, no loss)")
    chat_template: Literal["auto", "none"] = Field("auto", description="sft: auto = build examples with the tokenizer's chat template when it has one; none = instruction + separator + response")
    tokenizer_path: str | None = Field(
        None,
        description="instead of a tokenize input: a tokenizer/ folder written by a tokenize stage, any Hugging Face tokenizer folder (tokenizer.json or tokenizer.model + tokenizer_config.json; relative to the manifest), or a hub id with revision",
    )
    revision: str | None = Field(None, description="hub revision (a commit sha, or a tag) of a hub tokenizer_path: required for hub ids")
    tokenizer_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="expected tokenizer sha256 (tokens/index.json tokenizer.sha256, or the source folder's tokenizer files): pins tokenizer_path")
    batch_rows: int = Field(1024, ge=1, description="documents encoded per batch")

    @model_validator(mode="after")
    def _check(self):
        if self.split_field is None and self.test_fraction + self.validation_fraction >= 1:
            raise ValueError("test_fraction + validation_fraction must leave documents for training (sum < 1)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must not repeat")
        return self


class FinetuneData(Stage):
    name = "finetune_data"
    version = "2"
    Params = Params
    code_deps = ("pipeline.text.tokenizer", "stages.tokenize")
    description = "labeled documents -> tokenized classification / SFT examples (train/validation/test) with the pretraining tokenizer; label conflicts to the ledger"
    publishes = {"finetune": "finetune"}

    def run(self, ctx: NodeContext) -> dict:
        p: Params = self.params
        where = f"node {self.node!r} ({self.name})"
        tok_dir, tok_node, labeled, special = self._tokenizer(ctx, where)
        meta = storage.read_json(tok_dir / tkz.META)
        tok = tkz.load_tokenizer(tok_dir)
        parts = [(inp.name, str(part)) for inp in labeled for part in inp.parts]
        needed = ("id", "text", *TASK_COLUMNS[p.task], *([p.split_field] if p.split_field else []))
        for node, part in parts:
            missing = [c for c in needed if c not in pq.read_schema(part).names]
            if missing:
                hint = (
                    f"carry the split column from the source (keep_fields: [{p.split_field}])"
                    if missing == [p.split_field]
                    else f"declare the source with task: {p.task} and {'label_field (or label_value)' if p.task == 'classification' else 'instruction_field and response_field'}"
                )
                raise StageError(f"input node {node!r} has no column(s) {', '.join(missing)} for task {p.task}", where=where, hint=hint)
        chat = _chat_template(tok_dir) if p.task == "sft" and p.chat_template == "auto" else None
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
            "split_field": p.split_field,
            "labels": p.labels,
            "separator": p.separator,
            "chat_template": chat["sha256"] if chat else None,
            "batch_rows": p.batch_rows,
        }

        # 1. keys (one task per part) -> 2. decide (here) -> 3. encode
        work = ctx.dir / "work"
        keys = [work / "keys" / f"part-{i:05d}.parquet" for i in range(len(parts))]
        for i, path in enumerate(keys):  # a marker whose key file is gone (work/ deleted at the end) must re-run
            marker = ctx.dir / "_tasks" / f"keys-part-{i:05d}.json"
            if marker.exists() and not path.exists():
                marker.unlink()
        scans = ctx.run_tasks(_keys_task, [(part, cfg, str(keys[i])) for i, (_, part) in enumerate(parts)], desc="hash texts", phase="keys")
        drops = [work / "drops" / f"part-{i:05d}.parquet" for i in range(len(parts))]
        checks = _decide(keys, drops, p)
        results = ctx.run_tasks(_encode_task, [(part, cfg, str(ctx.part_path(i)), str(ctx.removed_path(i)), str(drops[i])) for i, (_, part) in enumerate(parts)], desc="encode")
        totals = merge_stats(results)
        ft = totals.get("finetune", {})
        labels = p.labels or sorted({name for split in ft.get("labels", {}).values() for name in split})
        if p.task == "classification" and len(labels) < 2:
            raise StageError(f"classification needs at least two labels; the kept documents have {labels}", where=where, hint="check label_field / label_value of the sources")
        tok_files = dict(meta.get("files", {}))
        if (tok_dir / CHAT_TEMPLATE_FILE).is_file():
            tok_files[CHAT_TEMPLATE_FILE] = hashlib.sha256((tok_dir / CHAT_TEMPLATE_FILE).read_bytes()).hexdigest()
        index = _write_finetune_dir(
            ctx.dir / "finetune",
            [str(ctx.part_path(i)) for i in range(len(parts))],
            p,
            labels,
            ft,
            fingerprint=(ctx.dir / "_FINGERPRINT").read_text().strip(),
            tokenizer_copy=None if tok_node else tok_dir,
            extra={
                # relative to index.json: the tokenize input's (valid in the node dir and in <out>/ alike), or the copy inside finetune/
                "tokenizer": {
                    "sha256": meta["sha256"],
                    "kind": meta.get("kind"),
                    "vocab_size": tok.vocab_size,
                    "path": "../tokenizer" if tok_node else "tokenizer",
                    "files": tok_files,
                    **({"name": meta.get("source"), "revision": meta.get("revision"), "source_sha256": meta.get("source_dir_sha256") or meta.get("source_sha256")} if not meta.get("trained", True) else {}),
                },
                "vocab_size": tok.vocab_size,
                "eos_id": cfg["eos_id"],
                "bos_id": cfg["bos_id"],
                "tokenizer_node": tok_node,
                "source_nodes": [inp.name for inp in labeled],
                "chat_template": bool(chat),
                "chat_template_sha256": chat["sha256"] if chat else None,
                "end_of_turn_id": ft.get("end_of_turn_id") if chat else None,
                "label_conflicts": checks["conflicts"] if p.task == "classification" else None,
                "duplicates": checks["duplicates"],
                "examples_scanned": sum(s["eligible"] for s in scans),
            },
        )
        storage.remove_tree(work)
        empty = [s for s in SPLITS if index["splits"][s]["examples"] == 0]
        if empty:
            ctx.run.console.log(f"\\[{self.node}] WARNING: no example in split(s) {', '.join(empty)}: {'the data has none' if p.split_field else 'raise the fraction(s) or add documents'}")
        found = checks["conflicts"]["texts"]
        if p.task == "classification" and found:
            ctx.run.console.log(f"\\[{self.node}] {found} text(s) appear with different labels ({checks['conflicts']['documents']} documents): {checks['conflicts']['dropped']} dropped as {CONFLICT} (label_conflicts: {p.label_conflicts})")
        ctx.provenance["finetune"] = {k: index[k] for k in ("task", "labels", "max_len", "tokenizer", "chat_template", "chat_template_sha256")}
        return {"finetune": {k: index[k] for k in ("task", "labels", "max_len", "splits", "label_conflicts", "duplicates")}, "card": _card(index)}

    # ------------------------------------------------------------------------- tokenizer
    def _source(self, rctx) -> tuple[Path | None, str | None]:
        return tokenizer_source(self.params.tokenizer_path, self.params.revision, rctx, f"node {self.node!r} ({self.name}) params.tokenizer_path")

    def resolve(self, rctx) -> dict | None:
        """Pin ``tokenizer_path`` in the fingerprint: a folder by its tokenizer files, a hub id by its revision."""
        src, hub = self._source(rctx)
        if hub:
            return {"identity": {"tokenizer": hub, "revision": self.params.revision}}
        if src is None:
            return None
        files = {**tkz.source_files(src), **({tkz.META: hashlib.sha256((src / tkz.META).read_bytes()).hexdigest()} if (src / tkz.META).is_file() else {})} if src.is_dir() else {}
        for name in (CHAT_TEMPLATE_FILE, "chat_template.json"):
            if (src / name).is_file():
                files[name] = hashlib.sha256((src / name).read_bytes()).hexdigest()
        return {"identity": {"tokenizer_files": files}}

    def _tokenizer(self, ctx: NodeContext, where: str):
        """(tokenizer dir, tokenize node name or None, labeled inputs, {"eos_id", "bos_id"})."""
        p: Params = self.params
        tok_inputs = [inp for inp in ctx.inputs if (inp.dir / "tokenizer" / tkz.META).is_file()]
        labeled = [inp for inp in ctx.inputs if inp not in tok_inputs]
        if not labeled:
            raise StageError("no labeled input: inputs are [labeled documents node, tokenize node]", where=where, hint="add the node with the labeled documents to inputs")
        if p.tokenizer_path:
            if tok_inputs:
                raise StageError(f"both tokenizer_path and a tokenize input ({tok_inputs[0].name!r}): which tokenizer?", where=where, hint="keep one")
            tok_dir = ctx.dir / "tokenizer"
            special = self._install(ctx, tok_dir, where)
            return tok_dir, None, labeled, special
        if len(tok_inputs) != 1:
            raise StageError(
                f"{'no' if not tok_inputs else len(tok_inputs)} tokenize input(s) among {[i.name for i in ctx.inputs]}",
                where=where,
                hint="inputs: [labeled documents node, the pretraining tokenize node] (or set tokenizer_path)",
            )
        tok_dir = tok_inputs[0].dir / "tokenizer"
        meta = storage.read_json(tok_dir / tkz.META)
        if p.tokenizer_sha256 and p.tokenizer_sha256.lower() != meta["sha256"]:
            raise StageError(
                f"the tokenizer at {tok_dir} has sha256 {meta['sha256']}, expected {p.tokenizer_sha256}", where=f"{where} params.tokenizer_sha256", hint="the tokenizer changed: point at the pretraining run's tokenizer, or update the pin"
            )
        return tok_dir, tok_inputs[0].name, labeled, _special_ids(tok_dir, tok_dir.parent / "tokens" / "index.json")

    def _install(self, ctx: NodeContext, dest: Path, where: str) -> dict:
        """Copy ``tokenizer_path`` into ``dest`` as ``tokenize`` would (a tokenize stage's folder
        verbatim; a Hugging Face folder: its SentencePiece model, else its tokenizer.json +
        config, same files and sha256 as tokenize writes), plus its chat template. Returns the ids
        of EOS and BOS (BOS only when the tokenizer's conventions add it)."""
        p: Params = self.params
        at = f"{where} params.tokenizer_path"
        src, hub = self._source(ctx.run)
        if hub:
            try:
                src = tkz.fetch_hub_tokenizer(hub, p.revision)
            except tkz.TokenizerError as exc:
                raise StageError(str(exc), where=at, hint=getattr(exc, "hint", None)) from None
        if src is None or not src.is_dir():
            raise StageError(f"{src} is not a tokenizer folder", where=at, hint="a tokenizer/ folder of a pretraining run, a Hugging Face tokenizer or model folder (tokenizer.json or tokenizer.model), or a hub id with revision")
        grist = (src / tkz.META).is_file()
        if grist:
            digest = storage.read_json(src / tkz.META)["sha256"]
            accepted = {digest}
        else:
            pinned = src / tkz.SP_MODEL if (src / tkz.SP_MODEL).is_file() else src / tkz.HF_TOKENIZER
            if not pinned.is_file():
                raise StageError(f"no tokenizer in {src} (neither {tkz.META}, {tkz.SP_MODEL} nor {tkz.HF_TOKENIZER})", where=at, hint="point it at <pretraining run>/tokenizer, or at a Hugging Face tokenizer/model folder")
            files = tkz.source_files(src)
            accepted = {hashlib.sha256(pinned.read_bytes()).hexdigest(), tkz.dir_sha256(files)}
        if p.tokenizer_sha256 and p.tokenizer_sha256.lower() not in accepted:
            raise StageError(
                f"the tokenizer at {src} has sha256 {' / '.join(sorted(accepted))}, expected {p.tokenizer_sha256}",
                where=f"{where} params.tokenizer_sha256",
                hint="the tokenizer changed: point at the pretraining run's tokenizer, or update the pin",
            )
        template = read_template(src)
        if grist:
            tmp = dest.with_name(f".{dest.name}.tmp")
            storage.remove_tree(tmp)
            shutil.copytree(src, tmp)
            storage.remove_tree(dest)
            os.replace(tmp, dest)
        else:
            meta = {"source": hub or str(src), "source_sha256": hashlib.sha256(pinned.read_bytes()).hexdigest(), "trained": False, "source_files": files, "source_dir_sha256": tkz.dir_sha256(files)}
            if hub:
                meta["revision"] = p.revision
            meta["conventions"] = tkz.hf_conventions(src)
            if pinned.name == tkz.SP_MODEL:
                from stages.tokenize import _sp_meta

                model = pinned.read_bytes()
                tkz.write_tokenizer_dir(dest, sp_model=model, meta={**meta, **_sp_meta(model), "hf_agreement": None})
            else:
                tkz.write_tokenizer_dir(dest, hf_dir=src, meta={**meta, "kind": "hf", "model_type": None, "hf_agreement": None})
        if template is not None and read_template(dest) != template:  # a chat_template.jinja, or a SentencePiece install (its config is regenerated)
            (dest / CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")
        tokens_index = src.parent / "tokens" / "index.json" if grist else None
        return _special_ids(dest, tokens_index)


def _special_ids(tok_dir: Path, tokens_index: Path | None) -> dict:
    """EOS/BOS ids: those the pretraining tokens used (tokens/index.json beside the tokenizer),
    else the tokenizer's own EOS, and BOS when its conventions add one (``hf_conventions``)."""
    if tokens_index is not None and tokens_index.is_file():
        index = storage.read_json(tokens_index)
        return {"eos_id": index["eos_id"], "bos_id": index.get("bos_id")}
    tok = tkz.load_tokenizer(tok_dir)
    conventions = storage.read_json(tok_dir / tkz.META).get("conventions") or {}
    return {"eos_id": tok.eos_id, "bos_id": tok.bos_id if conventions.get("add_bos_token") else None}


# ----------------------------------------------------------------------------- chat template
def read_template(folder: Path) -> str | None:
    """The folder's chat template: ``chat_template.jinja``, else ``chat_template.json``'s or
    ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of named templates: the one
    named "default")."""
    if (folder / CHAT_TEMPLATE_FILE).is_file():
        return (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    value = None
    for name in ("chat_template.json", tkz.HF_CONFIG):
        if value is None and (folder / name).is_file():
            value = json.loads((folder / name).read_text(encoding="utf-8")).get("chat_template")
    if isinstance(value, list):
        value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"), None)
    return value if isinstance(value, str) and value.strip() else None


def _chat_template(tok_dir: Path) -> dict | None:
    """{"sha256": of the template's UTF-8 text} when the tokenizer folder has a chat template."""
    text = read_template(tok_dir)
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()} if text is not None else None


SENTINEL = "\ue000grist-content\ue001"  # private-use characters: never in a template's own text


class ChatRenderer:
    """SFT examples as the tokenizer's chat template renders them (``transformers``
    ``apply_chat_template``, jinja2), encoded with the pipeline's tokenizer: the special tokens the
    *template* writes become their ids, the user's text is encoded as text (a literal
    ``<|im_end|>`` in an instruction stays text)."""

    def __init__(self, tok_dir: Path, tok: tkz.TextTokenizer):
        from transformers import AutoTokenizer

        self.tok = tok
        self.hf = AutoTokenizer.from_pretrained(str(tok_dir))
        self.template = read_template(tok_dir)
        self.special = _special_tokens(tok_dir, tok)
        self._pattern = re.compile("|".join(re.escape(s) for s in sorted(self.special, key=len, reverse=True))) if self.special else None
        self.where = f"the chat template of {tok_dir}"
        # what the template writes between the generation prompt and the response, and after it
        gen = self.render([{"role": "user", "content": "x"}], True)
        full = self.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": SENTINEL}], False)
        if not full.startswith(gen) or SENTINEL not in full:
            raise StageError("the chat template does not render [user, assistant] as the user turn + generation prompt followed by the answer", where=self.where, hint="set chat_template: none")
        at = full.index(SENTINEL)
        self.between = full[len(gen) : at]
        ends = self.specials_in(full[at + len(SENTINEL) :])
        self.end_id = ends[0][2] if ends else tok.eos_id
        # the prompt around any instruction: special tokens are looked for there only
        probe = self.render([{"role": "user", "content": SENTINEL}], True) + self.between
        at = probe.find(SENTINEL)
        self.head, self.tail = (probe[:at], probe[at + len(SENTINEL) :]) if at >= 0 else (None, None)

    def render(self, messages: list[dict], generation: bool) -> str:
        try:
            return self.hf.apply_chat_template(messages, chat_template=self.template, add_generation_prompt=generation, tokenize=False)
        except Exception as exc:  # jinja2 TemplateError, or the template's own raise_exception()
            raise StageError(f"the chat template cannot render a {' + '.join(m['role'] for m in messages)} conversation ({type(exc).__name__}: {exc})", where=self.where, hint="set chat_template: none") from None

    def specials_in(self, text: str) -> list[tuple[int, int, int, str]]:
        if self._pattern is None:
            return []
        return [(m.start(), m.end(), self.special[m.group()], m.group()) for m in self._pattern.finditer(text)]

    def prompt(self, instruction: str) -> tuple[str, np.ndarray]:
        """(rendered prompt, ids): special tokens found in the template's own text (outside the
        instruction) are their ids, the text between them is encoded as one piece of text."""
        real = self.render([{"role": "user", "content": instruction}], True) + self.between
        head, tail = self.head, self.tail
        if head is not None and real.startswith(head) and real.endswith(tail) and len(real) >= len(head) + len(tail):
            spans = [s for s in self.specials_in(head)] + [(a + len(real) - len(tail), b + len(real) - len(tail), i, t) for a, b, i, t in self.specials_in(tail)]
        else:  # a template that rewrites the instruction: special tokens anywhere
            spans = self.specials_in(real)
        ids, pos = [], 0
        for a, b, tid, _ in spans:
            if a > pos:
                ids.extend(self.tok.encode(real[pos:a]))
            ids.append(tid)
            pos = b
        if pos < len(real):
            ids.extend(self.tok.encode(real[pos:]))
        return real, np.asarray(ids, np.int32)


def _special_tokens(tok_dir: Path, tok: tkz.TextTokenizer) -> dict[str, int]:
    """Special / added tokens of the tokenizer (tokenizer.json added_tokens, the config's named
    tokens) -> their ids; byte pieces and ordinary text excluded."""
    names: set[str] = set()
    if (tok_dir / tkz.HF_TOKENIZER).is_file():
        data = json.loads((tok_dir / tkz.HF_TOKENIZER).read_text(encoding="utf-8"))
        names |= {t["content"] for t in data.get("added_tokens", []) if t.get("special", True) and t.get("content")}
    conv = tkz.hf_conventions(tok_dir)
    names |= {v for v in (conv.get("bos_token"), conv.get("eos_token")) if v}
    index = {piece: i for i, piece in enumerate(tok.pieces)}
    return {n: index[n] for n in names if n in index and n.strip() and n != "\n"}


@functools.lru_cache(maxsize=2)
def _renderer(tok_dir: str, sha256: str, template_sha256: str) -> ChatRenderer:
    return ChatRenderer(Path(tok_dir), tkz.cached_tokenizer(tok_dir, sha256))


# ------------------------------------------------------------------------------- keys phase
def _split_values(column: pa.ChunkedArray | pa.Array) -> tuple[list[str | None], dict[str, int]]:
    """Mapped splits (None for a missing value) and the unknown values with their counts."""
    raw = column.to_pylist()
    out, bad = [], {}
    for v in raw:
        s = None if v is None else str(v).strip()
        if not s:
            out.append(None)
            continue
        m = SPLIT_ALIASES.get(s.lower())
        if m is None:
            bad[s] = bad.get(s, 0) + 1
        out.append(m)
    return out, bad


def _usable(table: pa.Table, cfg: dict) -> tuple[list[str | None], np.ndarray, list[str | None]]:
    """(the ledger reason each row already has or None, a bool mask of the rows that can become
    examples, the split of each row from split_field or None)."""
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    if cfg["task"] == "classification":
        allowed = set(cfg["labels"]) if cfg["labels"] else None
        labels, texts = table["label"].to_pylist(), table["text"].to_pylist()
        for i in range(n):
            if labels[i] is None or labels[i] == "":
                reasons[i] = "finetune:no-label"
            elif allowed is not None and labels[i] not in allowed:
                reasons[i] = "finetune:unknown-label"
            elif not texts[i]:
                reasons[i] = "finetune:empty"
    else:
        resp = table["response"].to_pylist()
        for i in range(n):
            if not resp[i]:
                reasons[i] = "finetune:no-response"
    splits: list[str | None] = [None] * n
    if cfg["split_field"]:
        splits, _ = _split_values(table[cfg["split_field"]])
        for i in range(n):
            if reasons[i] is None and splits[i] is None:
                reasons[i] = "finetune:no-split"
    return reasons, np.array([r is None for r in reasons], dtype=bool), splits


def _keys_task(part: str, cfg: dict, out_path: str) -> dict:
    """Per usable row: (row, h0, h1, label, id) with (h0, h1) the xxh3-128 of its exact text
    (SFT: instruction NUL response). Checks split_field values."""
    cols = ["id", "text", *TASK_COLUMNS[cfg["task"]], *([cfg["split_field"]] if cfg["split_field"] else [])]
    out = {"row": [], "h": [], "label": [], "id": []}
    offset, n_rows = 0, 0
    bad: dict[str, int] = {}
    for batch in pq.ParquetFile(part).iter_batches(batch_size=cfg["batch_rows"], columns=list(dict.fromkeys(cols))):
        table = pa.Table.from_batches([batch])
        if cfg["split_field"]:
            for k, v in _split_values(table[cfg["split_field"]])[1].items():
                bad[k] = bad.get(k, 0) + v
        _, ok, _ = _usable(table, cfg)
        rows = np.flatnonzero(ok)
        if cfg["task"] == "classification":
            texts = table["text"].to_pylist()
            keys = [texts[i] for i in rows]
            labels = table["label"].to_pylist()
            out["label"] += [labels[i] for i in rows]
        else:
            instr, resp = table["instruction"].to_pylist(), table["response"].to_pylist()
            keys = [(instr[i] or "") + "\0" + resp[i] for i in rows]
            out["label"] += [None] * len(rows)
        out["h"] += [xxhash.xxh3_128_digest(k.encode("utf-8", "surrogatepass")) for k in keys]
        ids = table["id"].to_pylist()
        out["id"] += [ids[i] for i in rows]
        out["row"] += (rows + offset).tolist()
        offset += table.num_rows
        n_rows += table.num_rows
    if bad:
        shown = ", ".join(f"{k!r} ({v})" for k, v in sorted(bad.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
        raise StageError(
            f"split_field {cfg['split_field']!r} has value(s) that are not a split: {shown}{' …' if len(bad) > 10 else ''}",
            where=f"node {cfg['node']!r} (finetune_data), input {part}",
            hint=f"values must be one of {', '.join(sorted(SPLIT_ALIASES))} (case ignored); map the others in the source, or drop split_field to split by hash",
        )
    h = np.frombuffer(b"".join(out["h"]), dtype="<u8").reshape(-1, 2) if out["h"] else np.zeros((0, 2), np.uint64)
    table = pa.table(
        {
            "row": pa.array(out["row"], pa.int64()),
            "h0": pa.array(h[:, 0], pa.uint64()),
            "h1": pa.array(h[:, 1], pa.uint64()),
            "label": pa.array(out["label"], pa.string()),
            "id": pa.array(out["id"], pa.string()),
        }
    )
    storage.write_parquet(table, Path(out_path))
    return {"rows": n_rows, "eligible": table.num_rows}


# ----------------------------------------------------------------------------- decide (driver)
def _decide(keys: list[Path], drops: list[Path], p: Params) -> dict:
    """Label conflicts and duplicates over all parts; writes one drop list per part (row, reason,
    signals) and returns the counts. Input order (part, row) breaks every tie: deterministic."""
    tables = []
    for i, path in enumerate(keys):
        t = pq.read_table(path)
        tables.append(t.append_column("part", pa.array(np.full(t.num_rows, i, np.int64))))
    t = (
        pa.concat_tables(tables)
        if tables
        else pa.table({"row": pa.array([], pa.int64()), "h0": pa.array([], pa.uint64()), "h1": pa.array([], pa.uint64()), "label": pa.array([], pa.string()), "id": pa.array([], pa.string()), "part": pa.array([], pa.int64())})
    )
    t = t.append_column("key", pc.add(pc.multiply(t["part"], 1 << 40), t["row"]))
    dropped: dict[int, tuple[str, dict]] = {}  # key -> (reason, signals)
    conflicts = {"policy": p.label_conflicts, "texts": 0, "documents": 0, "dropped": 0, "resolved": 0, "by_labels": {}}
    if p.task == "classification" and t.num_rows:
        pairs = t.group_by(["h0", "h1", "label"]).aggregate([("row", "count")])
        per_text = pairs.group_by(["h0", "h1"]).aggregate([("label", "count")])
        bad = per_text.filter(pc.greater(per_text["label_count"], 1)).select(["h0", "h1"])
        if bad.num_rows:
            copies = t.join(bad, keys=["h0", "h1"], join_type="inner").sort_by([("part", "ascending"), ("row", "ascending")])
            by_text: dict[tuple[int, int], dict[str, int]] = {}
            rows = copies.select(["h0", "h1", "label", "key"]).to_pylist()
            for r in rows:
                c = by_text.setdefault((r["h0"], r["h1"]), {})
                c[r["label"]] = c.get(r["label"], 0) + 1
            winner: dict[tuple[int, int], str | None] = {}
            for h, counts in by_text.items():
                top = max(counts.values())
                best = sorted(k for k, v in counts.items() if v == top)
                winner[h] = best[0] if p.label_conflicts == "majority" and len(best) == 1 else None
                combo = " / ".join(sorted(counts))
                conflicts["by_labels"][combo] = conflicts["by_labels"].get(combo, 0) + 1
            for r in rows:
                h = (r["h0"], r["h1"])
                if r["label"] != winner[h]:
                    dropped[r["key"]] = (CONFLICT, {"labels": dict(sorted(by_text[h].items())), "kept_label": winner[h]})
            conflicts.update(texts=len(by_text), documents=len(rows), dropped=len(dropped), resolved=sum(w is not None for w in winner.values()))
    duplicates = {"policy": p.duplicates, "dropped": 0}
    if p.duplicates == "drop" and t.num_rows:
        live = t.filter(pc.invert(pc.is_in(t["key"], pa.array(sorted(dropped), pa.int64())))) if dropped else t
        first = live.group_by(["h0", "h1"]).aggregate([("key", "min")])
        joined = live.join(first, keys=["h0", "h1"], join_type="inner")
        later = joined.filter(pc.not_equal(joined["key"], joined["key_min"])).sort_by([("key", "ascending")])
        if later.num_rows:
            kept = live.filter(pc.is_in(live["key"], pc.unique(later["key_min"])))  # the ids of the first copies only
            first_id = dict(zip(kept["key"].to_pylist(), kept["id"].to_pylist()))
            for key, kmin in zip(later["key"].to_pylist(), later["key_min"].to_pylist()):
                dropped[key] = (DUPLICATE, {"kept_id": first_id[kmin]})
            duplicates["dropped"] = later.num_rows
    by_part: dict[int, list[tuple[int, str, dict]]] = {}
    for key in sorted(dropped):
        by_part.setdefault(key >> 40, []).append((key & ((1 << 40) - 1), *dropped[key]))
    for i, path in enumerate(drops):
        items = by_part.get(i, [])
        table = pa.table(
            {
                "row": pa.array([x[0] for x in items], pa.int64()),
                "reason": pa.array([x[1] for x in items], pa.string()),
                "signals": pa.array([json.dumps(x[2], ensure_ascii=False, sort_keys=True) for x in items], pa.string()),
            }
        )
        storage.write_parquet(table, path)
    return {"conflicts": conflicts, "duplicates": duplicates}


# ---------------------------------------------------------------------------------- encode task
def _split_of(doc_id: str, cfg: dict) -> str:
    h = split_hash(doc_id, cfg["seed"])
    return "test" if h < cfg["test_threshold"] else "validation" if h < cfg["validation_threshold"] else "train"


def _encode_task(part: str, cfg: dict, out_path: str, removed_path: str, drops_path: str | None = None) -> dict:
    tok = tkz.cached_tokenizer(ensure_local(cfg["tokenizer_dir"]), cfg["tokenizer_sha256"])  # a blind Dask worker fetches the folder
    task, max_len, eos, bos = cfg["task"], cfg["max_len"], cfg["eos_id"], cfg["bos_id"]
    chat = _renderer(ensure_local(cfg["tokenizer_dir"]), cfg["tokenizer_sha256"], cfg["chat_template"]) if cfg.get("chat_template") else None
    head = [bos] if bos is not None else []
    end = chat.end_id if chat else eos
    drops: dict[int, tuple[str, str]] = {}
    if drops_path:
        d = pq.read_table(ensure_local(drops_path))
        drops = {r: (reason, sig) for r, reason, sig in zip(d["row"].to_pylist(), d["reason"].to_pylist(), d["signals"].to_pylist())}
    stats = {"in": 0, "out": 0, "removed": 0, "removed_by_reason": {}, "finetune": {"examples": {}, "tokens": {}, "loss_tokens": {}, "truncated": {}, "labels": {}}}
    if chat:
        stats["finetune"]["end_of_turn_id"] = int(end)
    ft = stats["finetune"]
    kept_tables, removed_tables = [], []
    offset = 0
    for batch in pq.ParquetFile(part).iter_batches(batch_size=cfg["batch_rows"]):
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        given, _, given_splits = _usable(table, cfg)  # before the recomputed columns go (split_field may be "split")
        for name in ADDED:  # recomputed here
            if name in table.column_names:
                table = table.drop_columns([name])
        stats["in"] += n
        ids = table["id"].to_pylist()
        reasons: dict[int, str] = {i: r for i, r in enumerate(given) if r is not None}
        signals: dict[int, str] = {}
        for i in range(n):
            if i not in reasons and offset + i in drops:
                reasons[i], signals[i] = drops[offset + i]
        todo = [i for i in range(n) if i not in reasons]
        rows = {}
        if task == "classification":
            labels = table["label"].to_pylist()
            texts = table["text"].to_pylist()
            enc = dict(zip(todo, tok.encode_batch([texts[i] for i in todo])))
            for i in todo:
                body = enc[i]
                if len(body) == 0:
                    reasons[i] = "finetune:empty"
                    continue
                room = max_len - len(head) - 1
                rows[i] = (np.concatenate([np.asarray(head, np.int32), body[:room], np.asarray([eos], np.int32)]), None, len(body) > room)
        else:
            instr, resp = table["instruction"].to_pylist(), table["response"].to_pylist()
            if chat:
                prompts = []
                for i in todo:
                    text, ids_ = chat.prompt(instr[i] or "")
                    # a template that writes BOS itself (Llama 3: {{ bos_token }}) gets no second one
                    prompts.append(ids_ if (head and len(ids_) and ids_[0] == head[0]) else np.concatenate([np.asarray(head, np.int32), ids_]))
            else:
                prompts = [np.concatenate([np.asarray(head, np.int32), ids_]) for ids_ in tok.encode_batch([(instr[i] or "") + cfg["separator"] for i in todo])]
            answers = tok.encode_batch([resp[i] for i in todo])
            for i, prompt, answer in zip(todo, prompts, answers):
                prefix = np.asarray(prompt, np.int32)
                room = max_len - len(prefix)
                if len(answer) == 0:
                    reasons[i] = "finetune:no-response"
                    continue
                if room < 2:  # not even one response token would be trained on
                    reasons[i] = "finetune:too-long"
                    continue
                full = np.concatenate([answer, np.asarray([end], np.int32)])
                truncated = len(full) > room
                full = full[:room]
                ids_ = np.concatenate([prefix, full]).astype(np.int32)
                mask = np.concatenate([np.zeros(len(prefix), np.int8), np.ones(len(full), np.int8)])
                rows[i] = (ids_, mask, truncated)
        kept_idx = sorted(rows)
        splits = []
        for i in kept_idx:
            split = given_splits[i] if cfg.get("split_field") else _split_of(ids[i] or "", cfg)
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
            sig = [json.loads(signals[i]) if i in signals else {} for i in gone]
            removed_tables.append(removed_rows(table.take(pa.array(gone, pa.int64())), cfg["node"], [reasons[i] for i in gone], sig))
            for i in gone:
                stats["removed_by_reason"][reasons[i]] = stats["removed_by_reason"].get(reasons[i], 0) + 1
        stats["out"] += len(kept_idx)
        stats["removed"] += len(gone)
        offset += n
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


def _write_finetune_dir(dest: Path, parts: list[str], p: Params, labels: list[str], ft: dict, *, fingerprint: str, extra: dict, tokenizer_copy: Path | None = None) -> dict:
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
    if tokenizer_copy is not None:
        shutil.copytree(tokenizer_copy, tmp / "tokenizer")
    storage.atomic_write_text(tmp / "dataset_dict.json", json.dumps({"splits": list(SPLITS)}) + "\n")
    index = {
        "format": INDEX_FORMAT,
        "task": p.task,
        "labels": labels if p.task == "classification" else [],
        "max_len": p.max_len,
        **extra,
        "seed": p.seed,
        "test_fraction": None if p.split_field else p.test_fraction,
        "validation_fraction": None if p.split_field else p.validation_fraction,
        "split_field": p.split_field,
        "split_rule": (
            f"the input's {p.split_field!r} column (train / validation / test; dev, valid, val = validation)"
            if p.split_field
            else "h = xxh3_64(b'split:' + id, seed): test if h < test_fraction * 2**64, validation if h < (test_fraction + validation_fraction) * 2**64, else train"
        ),
        "separator": p.separator if p.task == "sft" and not extra.get("chat_template") else None,
        "splits": splits,
    }
    storage.atomic_write_json(tmp / "index.json", index)
    storage.remove_tree(dest)
    os.replace(tmp, dest)
    return index


def _card(index: dict) -> dict:
    """Dataset-card facts: examples per label (share, per split) and the imbalance; label conflicts."""
    splits = index["splits"]
    notes = []
    if index["task"] == "classification":
        totals = {name: sum(splits[s]["labels"].get(name, 0) for s in SPLITS) for name in index["labels"]}
        n = sum(totals.values())
        rows = [[name, f"{c:,} ({100 * c / n:.1f}%): " + ", ".join(f"{s} {splits[s]['labels'].get(name, 0):,}" for s in SPLITS) if n else "0"] for name, c in totals.items()]
        counts = [c for c in totals.values()]
        if counts and min(counts) > 0:
            notes.append(f"imbalance (largest / smallest label): {max(counts) / min(counts):.2f}")
        elif counts:
            notes.append(f"label(s) without any example: {', '.join(k for k, v in totals.items() if v == 0)}")
        c = index.get("label_conflicts") or {}
        if c.get("texts"):
            kinds = "; ".join(f"{k}: {v}" for k, v in sorted(c["by_labels"].items()))
            done = f"{c['dropped']:,} documents dropped as {CONFLICT}" + (f", {c['resolved']:,} texts kept with their majority label" if c["policy"] == "majority" else "")
            notes.append(f"label conflicts: {c['texts']:,} texts appear with different labels ({c['documents']:,} documents; {kinds}); label_conflicts: {c['policy']}: {done}")
        else:
            notes.append("label conflicts: none (no text appears with two labels among the documents this node received)")
        title = "Labels"
    else:
        rows = [[s, f"{splits[s]['examples']:,} examples, {splits[s]['loss_tokens']:,} response tokens"] for s in SPLITS]
        notes.append("chat template: " + (f"the tokenizer's (sha256 {index['chat_template_sha256'][:12]}…)" if index.get("chat_template") else "none (instruction + separator + response)"))
        title = "Fine-tuning examples"
    d = index.get("duplicates") or {}
    if d.get("policy") == "drop":
        notes.append(f"exact duplicates: {d['dropped']:,} later copies dropped (finetune:duplicate)")
    if index.get("split_field"):
        notes.append(f"splits: as given by the data's {index['split_field']!r} column")
    return {"title": title, "rows": rows, "notes": notes}
