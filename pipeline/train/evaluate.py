"""``pipeline eval RUN --data DATA``: score a trained model on held-out data.

Three evaluations, chosen by what RUN and DATA are (``evaluate(EvalRequest) -> dict``):

* ``lm``: loss (mean token cross-entropy, nats), perplexity and bits per byte of a language
  model on token shards (a run's out dir or its ``tokens/``: the ``test`` split by default, the
  validation split when the shards have no test split, with a note) or on a text file encoded
  with the model's tokenizer (``pipeline.train.evalsets``). Shards of another tokenizer are
  refused: ids would mean other pieces.
* ``sft``: an instruction-tuned model (``pipeline train --finetune sft``) on a ``finetune_data``
  output (default: the one it was tuned on): the response-token loss, then for each example of the
  split a greedy generation from the prompt (the tokens before the first response token), decoded
  and scored against the response with ROUGE-L, chrF, BLEU and exact match
  (``pipeline.train.metrics_text``).
* ``classification``: a fine-tuned classifier on another labeled ``finetune_data`` output, its
  labels mapped by name onto the classifier's: accuracy, macro precision / recall / F1, per-class
  scores and the confusion matrix (``finetune.classification_scores``).

RUN is a pretraining run (``pipeline train --out``, or its ``checkpoint/``), a fine-tuning out dir
(``RUN/finetune``) or a Hugging Face export folder (``RUN/hf``). Results go to
``<metrics dir>/eval/<name>.json`` and under ``"eval": {name: ...}`` in that folder's
``metrics.json`` (the run's for pretraining and exports, ``RUN/finetune/`` for fine-tunings),
where ``pipeline report --train RUN`` finds them."""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common import storage
from pipeline.train import TrainError

TASKS = ("auto", "lm", "sft", "classification")
SAMPLES = 5  # generations kept in the result (prompt, reference, prediction)


@dataclass
class EvalRequest:
    run: str
    data: str | None = None  # token shards, a text file, or a finetune_data output; None: the run's own
    split: str | None = None  # None: test (token shards without one: validation)
    task: str = "auto"  # auto | lm | sft | classification
    name: str | None = None
    max_tokens: int = 1_000_000  # lm: tokens scored (the first ones, in order)
    batch_size: int = 8
    device: str = "auto"
    max_new_tokens: int | None = None  # sft: default max(2 x reference tokens, 16)
    max_examples: int | None = 1000  # sft: generations (the first examples of the split)
    samples: int = SAMPLES

    def __post_init__(self):
        if self.task not in TASKS:
            raise TrainError(f"unknown task {self.task!r}", where="--task", hint=f"use {', '.join(TASKS)}")


@dataclass
class RunInfo:
    kind: str  # pretrain | sft | classification | hf
    model_dir: Path  # what the model loads from
    metrics_dir: Path  # where metrics.json and eval/ are
    state: dict | None
    tok_hash: str  # the tokenizer's sha256 as token shards record it ("" when unknown)
    tok_files: dict  # name -> sha256 of its tokenizer files (a published model's, or the shards')
    vocab: int | None = None

    def tokenizer_problem(self, index: dict) -> str | None:
        """Why data with this ``index.json`` is not in the model's token space (None: it is).
        Same sha256, or (a published model, whose folder holds more files than the tokenizer/
        the tokenize stage writes) the same ``tokenizer.json`` / ``tokenizer.model`` files."""
        tok = index.get("tokenizer") or {}
        theirs = tok.get("sha256") or ""
        if self.tok_hash and theirs == self.tok_hash:
            return None
        if self.tok_files and tok.get("files"):
            from pipeline.train.hf_import import tokenizer_mismatch

            why = tokenizer_mismatch(self.tok_files, tok["files"], self.vocab or 1 << 62, index.get("vocab_size"))
            if why is None or not theirs or not self.tok_hash:
                return why
        return f"made with another tokenizer ({theirs[:12] or 'unknown'}…, the model's is {self.tok_hash[:12] or 'unknown'}…)"


# ----------------------------------------------------------------------------------- the run
def inspect_run(run: str | Path) -> RunInfo:
    """What RUN is, where its metrics go and which tokenizer it was trained with."""
    from pipeline.text.tokenizer import dir_sha256, source_files

    p = Path(run)
    ft = p / "finetune" if (p / "finetune" / "state.json").is_file() else p if (p / "state.json").is_file() and not (p / "checkpoint").is_dir() else None
    state_path = None
    if ft is not None:
        state_path = ft / "state.json"
    elif (p / "checkpoint" / "state.json").is_file():
        state_path = p / "checkpoint" / "state.json"
    if state_path is not None:
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrainError(f"unreadable state.json ({exc})", where=str(state_path), hint="restore the run folder") from None
        data = state.get("data") or {}
        origin = state.get("init_from") or {}
        tok_files = data.get("tokenizer_files") or origin.get("files") or {}
        vocab = (state.get("model") or {}).get("vocab_size")
        task = (state.get("finetune") or {}).get("task")
        if task:
            return RunInfo(task, state_path.parent, state_path.parent, state, data.get("tokenizer") or "", tok_files, vocab)
        metrics_dir = p if (p / "checkpoint").is_dir() else p.parent  # RUN or RUN/checkpoint
        return RunInfo("pretrain", state_path.parent, metrics_dir, state, data.get("tokenizer") or "", tok_files, vocab)
    folder = p if (p / "config.json").is_file() else p / "hf"
    if (folder / "config.json").is_file():
        files = source_files(folder)
        if not files:
            raise TrainError("the Hugging Face folder has no tokenizer files", where=str(folder), hint="export with the tokenizer (pipeline train exports RUN/hf with it)")
        try:
            vocab = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("vocab_size")
        except (OSError, ValueError):
            vocab = None
        return RunInfo("hf", folder, p, None, dir_sha256(files), files, vocab)
    raise TrainError(
        "not a model: no checkpoint (checkpoint/state.json), fine-tuning (finetune/state.json) or Hugging Face export (config.json) here",
        where=str(p),
        hint="pass the --out folder of `pipeline train` (pretraining or --finetune), or a Hugging Face export folder",
    )


def _autocast(device):
    import torch

    from pipeline.train.loop import use_bf16_for

    if use_bf16_for("auto", device):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _special(info: RunInfo, loaded) -> tuple[int | None, int | None]:
    """EOS/BOS as the run's shards used them (an export: its tokenizer's conventions)."""
    if info.state is not None:
        data = info.state.get("data") or {}
        return data.get("eos_id", loaded.eos_id), data.get("bos_id")
    return loaded.eos_id, loaded.bos_id  # an export: BOS when its tokenizer adds one (generate.load_for_generation)


# ---------------------------------------------------------------------------------- the data
def data_kind(path: Path) -> str:
    """``finetune`` (a finetune_data output), ``tokens`` (token shards), ``text`` (a file)."""
    from pipeline.train.finetune import find_finetune_dir

    if path.is_file():
        return "text"
    if not path.exists():
        raise TrainError("the evaluation data does not exist", where=str(path), hint="give a run's out dir (tokens/ or finetune/), its tokens/ or finetune/ folder, or a .jsonl/.json/.parquet/.txt file")
    kinds = []
    try:
        find_finetune_dir(path)
        kinds.append("finetune")
    except TrainError:
        pass
    if (path / "index.json").is_file() and "finetune" not in kinds or (path / "tokens" / "index.json").is_file():
        kinds.append("tokens")
    if not kinds:
        raise TrainError("no token shards (tokens/index.json) or fine-tuning examples (finetune/index.json) here", where=str(path), hint="give a run's out dir, its tokens/ or finetune/ folder, or a text file")
    return "+".join(kinds)


def default_name(data: Path, split: str | None) -> str:
    base = data.name.split(".")[0] if data.is_file() else (data.parent.name if data.name in ("tokens", "finetune") else data.name)
    return safe_name(f"{base}-{split}" if split else base)


def safe_name(name: str) -> str:
    """A file name: no path separators or odd characters (``--name ../x`` stays in eval/)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "eval"


# ------------------------------------------------------------------------------------ the evaluations
def evaluate(req: EvalRequest) -> dict:
    """Run the evaluation; write ``eval/<name>.json`` and merge it into ``metrics.json``."""
    from pipeline.train.loop import pick_device

    info = inspect_run(req.run)
    device = pick_device(req.device)
    data = Path(req.data) if req.data else _own_data(info)
    kinds = data_kind(data).split("+")
    task = req.task
    if task == "auto":
        if "finetune" in kinds and info.kind in ("sft", "classification"):
            task = info.kind
        elif "tokens" in kinds or "text" in kinds:
            task = "lm"
        else:
            task = _finetune_task(data)
    if task == "classification" and info.kind != "classification":
        raise TrainError(f"a classifier is needed to score labeled examples; {req.run} is a {info.kind} run", where=str(req.run), hint="pass the out dir of `pipeline train --finetune classification`")
    if task == "sft" and info.kind == "classification":
        raise TrainError("a classifier cannot generate: SFT examples need a language model", where=str(req.run), hint="pass an SFT fine-tuning, a pretraining run or an export")
    t0 = time.time()
    if task == "lm":
        result = _lm(req, info, data, device)
    elif task == "sft":
        result = _sft(req, info, data, device)
    else:
        result = _classification(req, info, data, device)
    step = (info.state or {}).get("step")  # which weights were scored: results outlive a resumed run's checkpoint
    result.update(model=str(info.model_dir), model_step=step, run_kind=info.kind, tokenizer=info.tok_hash, device=str(device), seconds=round(time.time() - t0, 2))
    name = safe_name(req.name) if req.name else default_name(data, result.get("split"))
    result["name"] = name
    write_result(info.metrics_dir, name, result)
    return result


def _own_data(info: RunInfo) -> Path:
    data = (info.state or {}).get("data") or {}
    key = "finetune_dir" if info.kind in ("sft", "classification") else "tokens_dir"
    if data.get(key) and Path(data[key]).exists():
        return Path(data[key])
    raise TrainError("no --data, and the run's own data is not recorded or not found", where=str(info.model_dir), hint="give --data: token shards, a text file or a finetune_data output")


def _finetune_task(data: Path) -> str:
    from pipeline.train.finetune import find_finetune_dir

    return json.loads((find_finetune_dir(data) / "index.json").read_text(encoding="utf-8"))["task"]


def _load_lm(info: RunInfo, device):
    from pipeline.train.generate import load_for_generation

    return load_for_generation(info.model_dir, device)


def _lm(req: EvalRequest, info: RunInfo, data: Path, device) -> dict:
    from pipeline.train import evalsets

    loaded = _load_lm(info, device)
    model = loaded.model
    T = int((info.state or {}).get("T") or model.cfg.max_seq_len) if info.kind == "pretrain" else int(model.cfg.max_seq_len)
    T = min(T, int(model.cfg.max_seq_len))
    eos, bos = _special(info, loaded)
    name = req.name or default_name(data, None)
    if data.is_file():
        if req.split:
            raise TrainError("--split applies to token shards and fine-tuning examples, not to a text file", where=str(data), hint="drop --split")
        es = evalsets.text_set(name, data, loaded.tokenizer, eos, bos, note="encoded with the model's tokenizer (BOS/EOS as in the run's shards)")
    else:
        from pipeline.train.data import find_tokens_dir, read_index

        es = evalsets.token_set(name, data, info.tok_hash, split=req.split, default_order=None, check=info.tokenizer_problem)
        index = read_index(find_tokens_dir(data))
        eos, bos = index.get("eos_id", eos), index.get("bos_id", bos)
    if es.stream.n_windows(T) == 0 and es.tokens >= 2:  # a set shorter than the context: one window of all of it
        es.note += f"; shorter than one window of the model's context {T}: scored as one window of {es.tokens - 1}"
        T = es.tokens - 1
    r = evalsets.loss_on(model, es.stream, T, batch_size=req.batch_size, max_tokens=max(req.max_tokens, T), device=device, autocast=_autocast(device))
    nbytes = evalsets.scored_bytes(es.stream, r["windows"], T, loaded.tokenizer, {i for i in (eos, bos) if i is not None})
    out = {
        "task": "lm",
        "data": str(data),
        "data_kind": es.kind,
        "split": es.split,
        "loss": r["loss"],
        "ppl": r["ppl"],
        "tokens": r["tokens"],
        "bytes": nbytes,
        "bits_per_byte": r["loss"] * r["tokens"] / math.log(2) / nbytes if nbytes else None,
        "set_tokens": es.tokens,
        "documents": es.documents,
        "complete": r["complete"],
        "seq_len": T,
        "note": es.note + ("" if r["complete"] else f"; the first {r['tokens']:,} of {es.tokens:,} tokens (--max-tokens)"),
    }
    return out


def _examples(data: Path, split: str | None, task: str, info: RunInfo, also: str | None = None):
    from pipeline.train.finetune import find_finetune_dir, read_split

    ft_dir = find_finetune_dir(data)
    index = json.loads((ft_dir / "index.json").read_text(encoding="utf-8"))
    if index.get("task") != task:
        raise TrainError(f"these are {index.get('task')} examples, the model is a {task} fine-tuning", where=str(ft_dir / "index.json"), hint=f"give a finetune_data output with task: {task}")
    why = None if also and (index.get("tokenizer") or {}).get("sha256") == also else info.tokenizer_problem(index)
    if why:
        raise TrainError(
            f"tokenizer mismatch: the examples were {why}" if why.startswith("made ") else f"tokenizer mismatch: {why}",
            where=str(ft_dir / "index.json"),
            hint="re-run finetune_data with the model's tokenizer (tokenizer_path: <pretraining out>/tokenizer)",
        )
    split = split or "test"
    examples = read_split(ft_dir, index, split)
    if not len(examples):
        raise TrainError(f"the {split} split has no examples", where=str(ft_dir), hint="pick another --split, or raise finetune_data's test_fraction")
    return ft_dir, index, split, examples


def _sft(req: EvalRequest, info: RunInfo, data: Path, device) -> dict:
    from pipeline.train.finetune import response_loss
    from pipeline.train.metrics_text import exact_match, text_scores

    loaded = _load_lm(info, device)
    model, tok = loaded.model, loaded.tokenizer
    ft_dir, index, split, ex = _examples(data, req.split, "sft", info)
    if index["max_len"] > model.cfg.max_seq_len:
        raise TrainError(f"examples of up to {index['max_len']} tokens, the model's context is {model.cfg.max_seq_len}", where=str(ft_dir), hint=f"re-run finetune_data with max_len <= {model.cfg.max_seq_len}")
    autocast = _autocast(device)
    eos, bos = int(index["eos_id"]), index.get("bos_id")
    loss = response_loss(model, ex, req.batch_size, eos, device, autocast)
    # the token that ends a response in these examples (EOS, or a chat template's end-of-turn)
    ends = [int(ids[-1]) for ids, m in zip(ex.examples, ex.masks) if len(ids) and m[-1] == 1]
    stop = int(np.bincount(ends).argmax()) if ends else eos
    stops = sorted({stop, eos, *getattr(loaded, "stop_ids", [])})
    n = len(ex) if req.max_examples is None else min(len(ex), req.max_examples)
    items = []  # (prompt ids, reference ids, budget)
    skipped = 0
    for i in range(n):
        ids, mask = ex.examples[i], ex.masks[i]
        first = np.flatnonzero(mask == 1)
        if not len(first) or first[0] == 0:
            skipped += 1
            continue
        prompt, ref = ids[: first[0]].tolist(), ids[first[0] :].tolist()
        if ref and ref[-1] in stops:
            ref = ref[:-1]
        items.append((prompt, ref, req.max_new_tokens or max(2 * len(ref), 16)))
    outs = _greedy(model, items, req.batch_size, stops, autocast, tok.vocab_size)
    prompts = [tok.decode(p[1:] if bos is not None and p and p[0] == bos else p) for p, _, _ in items]
    refs = [tok.decode(r) for _, r, _ in items]
    preds = [tok.decode(o) for o in outs]
    scores = text_scores(preds, refs)
    return {
        "task": "sft",
        "data": str(ft_dir),
        "data_kind": "finetune",
        "split": split,
        "loss": loss["loss"],
        "ppl": loss["ppl"],
        "tokens": loss["tokens"],
        "examples": len(ex),
        "generated": len(preds),
        "skipped": skipped,
        "generation": {**scores, "decoding": "greedy", "max_new_tokens": req.max_new_tokens or "max(2 x reference tokens, 16)", "stop_ids": stops},
        "samples": [{"prompt": p, "reference": r, "prediction": q, "exact_match": exact_match(q, r)} for p, r, q in list(zip(prompts, refs, preds))[: req.samples]],
        "note": "response-token loss on every example; generation metrics on the first " + (f"{len(preds)} of {len(ex)}" if len(preds) < len(ex) else f"{len(preds)}") + " examples",
    }


def _greedy(model, items: list[tuple[list[int], list[int], int]], batch_size: int, stops: list[int], autocast, vocab_limit: int) -> list[list[int]]:
    """Greedy continuations (stop token removed) of each prompt, at most its own budget, in
    batches of similar budgets (``generate_batch``: one prefill and one position per step per
    batch). Greedy tokens do not depend on what follows, so cutting a row at its budget gives
    what a run with that budget alone would."""
    from pipeline.train.generate import generate_batch

    order = sorted(range(len(items)), key=lambda i: items[i][2])
    out: list[list[int]] = [[] for _ in items]
    for a in range(0, len(order), batch_size):
        idx = order[a : a + batch_size]
        budget = max(items[i][2] for i in idx)
        gens = generate_batch(model, [items[i][0] for i in idx], budget, temperature=0.0, stop_ids=stops, autocast=autocast, vocab_limit=vocab_limit)
        for i, g in zip(idx, gens):
            toks = g[0].tokens[: items[i][2]]
            out[i] = toks[:-1] if toks and toks[-1] in stops else toks
    return out


def _classification(req: EvalRequest, info: RunInfo, data: Path, device) -> dict:
    from pipeline.train.finetune import classification_scores, load_classifier, predict

    model, state = load_classifier(info.model_dir)
    labels = list(state["finetune"]["labels"])
    own_index = Path((state.get("data") or {}).get("finetune_dir") or "") / "index.json"
    own = None
    if own_index.is_file():  # the classifier's own examples record the tokenizer as the other set does
        own = (json.loads(own_index.read_text(encoding="utf-8")).get("tokenizer") or {}).get("sha256")
    ft_dir, index, split, ex = _examples(data, req.split, "classification", info, also=own)
    ctx = model.base.cfg.max_seq_len
    if index["max_len"] > ctx:
        raise TrainError(f"examples of up to {index['max_len']} tokens, the classifier's context is {ctx}", where=str(ft_dir), hint=f"re-run finetune_data with max_len <= {ctx}")
    theirs = list(index["labels"])
    extra = [l for l in theirs if l not in labels]
    if extra:
        raise TrainError(
            f"labels the classifier does not know: {', '.join(map(repr, extra))} (its labels: {', '.join(map(repr, labels))})",
            where=str(ft_dir / "index.json"),
            hint="the other set's labels must be a subset of the classifier's, by name: set finetune_data's labels (other labels go to the ledger), or rename them at the source",
        )
    mapping = np.array([labels.index(l) for l in theirs], dtype=np.int64)
    y_true = mapping[ex.labels]
    model.to(device)
    pred = predict(model, ex, req.batch_size, int(index["eos_id"]), device, _autocast(device))
    scores = classification_scores(y_true, pred, labels)
    return {
        "task": "classification",
        "data": str(ft_dir),
        "data_kind": "finetune",
        "split": split,
        "examples": len(ex),
        "label_map": {l: labels[k] for l, k in zip(theirs, mapping.tolist())},
        "scores": scores,
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "note": f"labels mapped by name onto the classifier's {len(labels)}; {len(set(ex.labels.tolist()))} present in the split",
    }


# ------------------------------------------------------------------------------------ results
def write_result(metrics_dir: Path, name: str, result: dict) -> Path:
    """``eval/<name>.json`` and ``metrics.json``'s ``eval.<name>`` (other keys kept)."""
    metrics_dir = Path(metrics_dir)
    path = metrics_dir / "eval" / f"{name}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.atomic_write_text(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        mpath = metrics_dir / "metrics.json"
        metrics = {}
        if mpath.is_file():
            try:
                loaded = json.loads(mpath.read_text(encoding="utf-8"))
                metrics = loaded if isinstance(loaded, dict) else {"value": loaded}
            except ValueError:
                raise TrainError("metrics.json is not JSON: the result is in eval/ only", where=str(mpath), hint="repair or remove metrics.json, then run pipeline eval again") from None
        metrics.setdefault("eval", {})[name] = result
        storage.atomic_write_text(mpath, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise TrainError(f"cannot write the results ({exc})", where=str(metrics_dir), hint="the run folder must be writable") from None
    return path


def summary_rows(result: dict) -> list[tuple[str, str]]:
    """(metric, value) pairs for the CLI's table."""
    def f(v, d=4):
        return "-" if v is None else f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    rows = [("name", result["name"]), ("task", result["task"]), ("data", result["data"]), ("split", result.get("split") or "-")]
    if result["task"] in ("lm", "sft"):
        rows += [("loss (nats/token)", f(result["loss"])), ("perplexity", f(result["ppl"], 2)), ("tokens scored", f(result["tokens"]))]
    if result["task"] == "lm":
        rows.append(("bits per byte", f(result.get("bits_per_byte"))))
    if result["task"] == "sft":
        g = result["generation"]
        rows += [("examples generated", f(result["generated"])), ("ROUGE-L F1", f(g.get("rouge_l"))), ("chrF", f(g.get("chrf"), 2)), (f"BLEU ({g.get('bleu_tokenize')})", f(g.get("bleu"), 2)), ("exact match", f(g.get("exact_match")))]
    if result["task"] == "classification":
        s = result["scores"]
        rows += [("examples", f(result["examples"])), ("accuracy", f(s["accuracy"])), ("macro F1", f(s["macro_f1"])), ("macro precision", f(s["macro_precision"])), ("macro recall", f(s["macro_recall"]))]
    if result.get("note"):
        rows.append(("note", result["note"]))
    return rows
