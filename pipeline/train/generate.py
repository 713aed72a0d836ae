"""Sampling text from a model: the sample generations logged at each evaluation and
``pipeline generate RUN "prompt"`` (or ``--prompts-file``), for a run trained here, a fine-tuning,
a run that started from a published model, its export, or a published Llama-family folder.

Sampling draws from its own CPU ``torch.Generator`` (seeded), never from the global RNG, so
logging samples during training changes neither the data order nor the weights. Generation uses
a KV cache: the prompts are prefilled once, then each new token computes one position; when the
context reaches ``max_seq_len`` the last window is prefilled again (the tokens are the same as
recomputing the whole context each step; benchmarks/bench_generate.py). Prompts of different
lengths run in one batch, left-padded, with each row's own positions and a padding mask: greedy
decoding gives the tokens of one prompt at a time (tests/test_generate.py), faster
(docs/generation.md)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.common.errors import PipelineError
from pipeline.train import TrainError
from pipeline.train.model import KVCache, Transformer


@dataclass
class Generated:
    """One continuation: the new token ids (the stop token included when there was one) and
    why it ended: ``eos`` (a stop token) or ``length`` (``max_new_tokens``)."""

    tokens: list[int]
    finish: str


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p: per row, the smallest set of most likely tokens whose mass reaches ``top_p``
    (the most likely token always stays); the others get probability 0."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # the mass before this token already reaches P
    drop[..., 0] = False
    return probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))


def pick(logits: torch.Tensor, gens: list[torch.Generator], temperature: float, top_k: int | None, top_p: float | None) -> list[int]:
    """The next token of each row of ``logits`` [B, V]: argmax when ``temperature`` <= 0, else a
    draw from row r's own generator after temperature, then top-k, then top-p."""
    if temperature <= 0:
        return logits.argmax(-1).tolist()
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p is not None and top_p < 1:
        probs = nucleus(probs, top_p)
    probs = probs.cpu()
    return [int(torch.multinomial(probs[r], 1, generator=g)) for r, g in enumerate(gens)]


def _left_pad(seqs: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """(ids [B, L], positions, mask, real [B, L]) of left-padded rows; positions and mask are None
    when every row has the same length (the plain causal path, as for one prompt)."""
    L = max(len(s) for s in seqs)
    ids = torch.tensor([[0] * (L - len(s)) + s for s in seqs], dtype=torch.long, device=device)
    real = torch.tensor([[False] * (L - len(s)) + [True] * len(s) for s in seqs], device=device)
    if bool(real.all()):
        return ids, None, None, real
    positions = (real.cumsum(1) - 1).clamp(min=0)  # each row's positions start at its first real token
    mask = torch.tril(torch.ones(L, L, dtype=torch.bool, device=device))[None, None] & real[:, None, None, :]
    mask |= torch.eye(L, dtype=torch.bool, device=device)[None, None]  # pad rows attend to themselves (SDPA gives NaN otherwise)
    return ids, positions, mask, real


def _select(cache: KVCache, real: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep rows ``keep`` of the cache; drop the leading columns that are padding in every row left."""
    real = real[keep]
    start = int(real.any(0).float().argmax()) if real.numel() else 0
    for i in range(len(cache.k)):
        cache.k[i] = cache.k[i][keep, :, start:]
        cache.v[i] = cache.v[i][keep, :, start:]
    cache.pos -= start
    return real[:, start:]


@torch.no_grad()
def generate_batch(
    model: Transformer,
    contexts: list[list[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    num_return_sequences: int = 1,
    stop_ids: list[int] | tuple[int, ...] = (),
    autocast=contextlib.nullcontext,
    vocab_limit: int | None = None,
) -> list[list[Generated]]:
    """``num_return_sequences`` continuations of each context, all in one batch: the contexts
    are prefilled once (left-padded, each row's own positions and a padding mask), each
    prefill is copied to its N sequences, then one position per step for the rows still running
    (a row stops at a stop token and leaves the batch). Sequence j of every context draws from
    its own generator seeded ``seed + j``, so the output does not depend on the batch. When the
    longest row reaches the context window, every row's last window is prefilled again."""
    if not contexts or any(not c for c in contexts):
        raise TrainError("sampling needs at least one context token", hint="give a prompt (the document-start token is added for you)")
    N = num_return_sequences
    device = next(model.parameters()).device
    window = min(model.cfg.max_seq_len, model.cfg.sliding_window or model.cfg.max_seq_len)
    stops = set(stop_ids)
    tokens = [list(c) for c in contexts for _ in range(N)]
    gens = [torch.Generator().manual_seed(seed + j) for _ in contexts for j in range(N)]
    outs: list[list[int]] = [[] for _ in tokens]
    finish = ["length"] * len(tokens)
    was_training = model.training
    model.eval()

    def prefill(rows: list[int]) -> tuple[KVCache, torch.Tensor, torch.Tensor]:
        # each row's last `window` tokens at positions 0.., as in training (also when the window slides)
        ids, positions, mask, real = _left_pad([tokens[r][-window:] for r in rows], device)
        cache = KVCache(len(model.layers))
        with autocast():
            logits = model(ids, cache=cache, positions=positions, mask=mask)
        return cache, logits[:, -1].float(), real

    try:
        # one prefill per context, copied to its N sequences
        cache, logits, real = prefill(list(range(0, len(tokens), N)))
        if N > 1:
            for i in range(len(cache.k)):
                cache.k[i], cache.v[i] = cache.k[i].repeat_interleave(N, 0), cache.v[i].repeat_interleave(N, 0)
            logits, real = logits.repeat_interleave(N, 0), real.repeat_interleave(N, 0)
        active = list(range(len(tokens)))
        for step in range(max_new_tokens):
            if step:  # the logits of the tokens just chosen: one position through the cache
                if int(real.sum(1).max()) >= window:
                    cache, logits, real = prefill(active)
                else:
                    last = torch.tensor([[tokens[r][-1]] for r in active], dtype=torch.long, device=device)
                    if bool(real.all()):
                        positions = mask = None
                    else:
                        positions = real.sum(1, keepdim=True)  # real tokens before this one
                        mask = torch.cat([real, torch.ones_like(real[:, :1])], 1)[:, None, None, :]
                    with autocast():
                        logits = model(last, cache=cache, positions=positions, mask=mask)[:, -1].float()
                    real = torch.cat([real, torch.ones_like(real[:, :1])], 1)
            if vocab_limit is not None:
                logits = logits[:, :vocab_limit]
            chosen = pick(logits, [gens[r] for r in active], temperature, top_k, top_p)
            keep = []
            for k, (r, nxt) in enumerate(zip(active, chosen)):
                outs[r].append(nxt)
                tokens[r].append(nxt)
                if nxt in stops:
                    finish[r] = "eos"
                else:
                    keep.append(k)
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch
                idx = torch.tensor(keep, device=device)
                real = _select(cache, real, idx)
                active = [active[k] for k in keep]
    finally:
        model.train(was_training)
    return [[Generated(outs[c * N + j], finish[c * N + j]) for j in range(N)] for c in range(len(contexts))]


def sample(
    model: Transformer,
    context: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    eos_id: int | None = None,
    autocast=contextlib.nullcontext,
    vocab_limit: int | None = None,
    top_p: float | None = None,
    stop_ids: list[int] | tuple[int, ...] = (),
) -> list[int]:
    """New token ids after ``context`` (greedy when ``temperature`` <= 0); stops after ``eos_id``
    (or any of ``stop_ids``). ``vocab_limit``: the tokenizer's size, when the model's vocabulary
    is padded beyond it. One row of ``generate_batch``."""
    stops = [*stop_ids, *([eos_id] if eos_id is not None else [])]
    return generate_batch(model, [context], max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          stop_ids=stops, autocast=autocast, vocab_limit=vocab_limit)[0][0].tokens


def strip_eos(ids: list[int], eos_id: int | None) -> list[int]:
    return ids[:-1] if ids and ids[-1] == eos_id else ids


# ------------------------------------------------------------------------------------ tokenizer
def tokenizer_files_match(folder: Path, files: dict[str, str]) -> bool:
    """True when ``folder`` holds every recorded tokenizer file with the recorded sha256."""
    for name, digest in files.items():
        p = folder / name
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return False
    return True


def find_run_tokenizer(state: dict, extra: list[Path] = ()) -> Path:
    """The tokenizer a run was trained with: the folder recorded in its checkpoint (or beside its
    tokens, or an export's copy), checked against the recorded file hashes."""
    data = state.get("data", {})
    cands = [Path(p) for p in (data.get("tokenizer_dir"),) if p]
    if data.get("tokens_dir"):
        cands.append(Path(data["tokens_dir"]).parent / "tokenizer")
    cands += list(extra)
    files = data.get("tokenizer_files") or {}
    seen = []
    for c in cands:
        if c.is_dir() and any((c / n).is_file() for n in ("tokenizer.model", "tokenizer.json")):
            if not files or tokenizer_files_match(c, files):
                return c
            seen.append(str(c))
    if seen:
        raise TrainError(
            "the tokenizer found differs from the one this run was trained with (file hashes)",
            where=", ".join(seen),
            hint="restore the run's tokenizer/ folder (the ids would decode to the wrong text)",
        )
    raise TrainError("the run's tokenizer was not found", where=", ".join(str(c) for c in cands) or "checkpoint", hint="keep the shards' tokenizer/ folder, or generate from the Hugging Face export (RUN/hf)")


# ------------------------------------------------------------------------------------ loading
@dataclass
class Loaded:
    model: Transformer
    tokenizer: object  # pipeline.text.tokenizer.TextTokenizer
    eos_id: int | None
    bos_id: int | None
    source: Path
    imported: bool = False  # a published model or a run that started from one: its tokenizer's conventions
    stop_ids: list[int] = field(default_factory=list)  # EOS and end-of-turn ids: a row stops at any of them
    folders: list[Path] = field(default_factory=list)  # where the tokenizer, chat template and generation config may be
    sft: bool = False  # an SFT fine-tuning: its examples start with [BOS] and the instruction

    @property
    def head(self) -> list[int]:
        """What starts a document: grist's shards put EOS between documents (and BOS when the
        data had one); a published tokenizer's convention, and an SFT example, is BOS when there
        is one, else nothing."""
        if self.imported or self.sft:
            return [self.bos_id] if self.bos_id is not None else []
        return [i for i in (self.eos_id, self.bos_id) if i is not None]


def _json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _ids(value) -> list[int]:
    vals = value if isinstance(value, list) else [value]
    return [int(v) for v in vals if isinstance(v, int) and not isinstance(v, bool)]


def stop_ids_of(tok, eos_id: int | None, folders: list[Path], config: dict | None = None) -> list[int]:
    """Ids that end a generation: the run's EOS, the tokenizer's ``eos_token`` (a chat model's
    ``<|im_end|>``), ``generation_config.json``'s and ``config.json``'s ``eos_token_id`` (an int or
    a list) in any of ``folders``."""
    from pipeline.text.tokenizer import TokenizerError, hf_conventions, resolve_special

    ids = [eos_id] if eos_id is not None else []
    ids += _ids((config or {}).get("eos_token_id"))
    for f in folders:
        if not f.is_dir():
            continue
        ids += _ids(_json(f / "generation_config.json").get("eos_token_id"))
        ids += _ids(_json(f / "config.json").get("eos_token_id"))
        try:
            ids.append(resolve_special(tok, hf_conventions(f).get("eos_token"), None, "eos_token"))
        except (OSError, ValueError, TokenizerError):
            pass  # no readable config, or a name that is not a token: nothing to add
    return [i for i in dict.fromkeys(ids) if i is not None and 0 <= i < tok.vocab_size]


def grist_own_export(folder: Path) -> bool:
    """An export of a model pretrained from scratch here (documents separated by EOS, as in
    our shards), not a published model: its card says so, or, without a card, its tokenizer is
    one trained here (``tokenizer.model`` with the config our trainer writes)."""
    readme = folder / "README.md"
    if readme.is_file():
        head = readme.read_text(encoding="utf-8", errors="replace")[:4000]
        return "pretrained-from-scratch" in head and "grist" in head
    config = _json(folder / "tokenizer_config.json")
    return (folder / "tokenizer.model").is_file() and config.get("split_special_tokens") is True and config.get("add_bos_token") is False


def _run_state(run: Path) -> Path | None:
    """The state.json of a run: a fine-tuning out (RUN/finetune, first, as `pipeline eval`
    reads it), RUN/checkpoint, or the folder itself."""
    for cand in (run / "finetune" / "state.json", run / "checkpoint" / "state.json", run / "state.json"):
        if cand.is_file():
            return cand
    return None


def load_for_generation(run: str | Path, device: torch.device, revision: str | None = None) -> Loaded:
    """A training run folder (its ``checkpoint/``), a fine-tuning out dir (``finetune/``), a
    checkpoint folder, or a Hugging Face model folder: a run's export (RUN/hf) or a published
    Llama / Qwen2 / Qwen3 / Mistral model (also a hub id, fetched at a pinned ``revision``)."""
    from pipeline.text.tokenizer import hf_conventions, is_hub_id, load_tokenizer
    from pipeline.train.checkpoint import load_native

    if not Path(run).exists() and is_hub_id(str(run)):
        if not revision:  # also what a mistyped relative run folder looks like
            raise TrainError(f"{run} is not a folder here; as a Hugging Face hub id it needs a pinned revision", where=str(run),
                             hint="check the run folder's path, or add --revision <commit sha or tag> to fetch the model from the hub")
        from pipeline.train.hf_import import resolve

        run, _ = resolve(str(run), revision)
    run = Path(run)
    state_path = _run_state(run)
    if state_path is not None:
        ckpt = state_path.parent
        model, state = load_native(ckpt)
        info = state.get("finetune") or {}
        if info.get("task") == "classification":
            raise TrainError("a classifier does not generate text", where=str(ckpt), hint="generate from the pretraining run or an SFT fine-tuning; score a classifier with `pipeline eval`")
        base = ckpt.parent  # RUN for RUN/checkpoint and RUN/finetune
        origin = state.get("init_from") or {}
        extra = [base / "hf"] + ([Path(origin["path"])] if origin.get("path") else [])
        tok_dir = find_run_tokenizer(state, extra)
        tok = load_tokenizer(tok_dir)
        data = state.get("data", {})
        eos = info.get("eos_id", data.get("eos_id", tok.eos_id))
        bos = info.get("bos_id", data.get("bos_id"))
        imported, sft = bool(origin), info.get("task") == "sft"
        ft_tok, eot = _finetune_data_facts(data) if sft else (None, None)
        folders = [*([ft_tok] if ft_tok else []), tok_dir, *extra]
        stops = stop_ids_of(tok, eos, folders, origin.get("config")) if imported else [i for i in (eos,) if i is not None]
        stops += [eot] if eot is not None and eot not in stops else []
        source = run
    else:
        from pipeline.train.hf_import import load_model

        folder = run if (run / "config.json").is_file() else run / "hf"
        if not (folder / "config.json").is_file():
            raise TrainError("no checkpoint (checkpoint/state.json) or Hugging Face export (config.json) here", where=str(run), hint="pass the --out folder of `pipeline train`, or a Hugging Face model folder")
        try:
            model, _ = load_model(folder)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise TrainError(f"unreadable model folder ({type(exc).__name__}: {exc})", where=str(folder), hint="re-export the run, or download the model folder again") from None
        tok = load_tokenizer(folder)
        imported, folders = not grist_own_export(folder), [folder]
        eos = tok.eos_id
        bos = tok.bos_id if imported and hf_conventions(folder).get("add_bos_token") else None
        stops = stop_ids_of(tok, eos, folders) if imported else [eos]
        source, sft = folder, False
    if tok.vocab_size > model.cfg.vocab_size:
        raise TrainError(f"the tokenizer has {tok.vocab_size} ids, the model {model.cfg.vocab_size}", where=str(source), hint="the tokenizer does not belong to this model")
    return Loaded(model.eval().to(device), tok, eos, bos, source, imported, stops, [f for f in folders if f.is_dir()], sft)


def _finetune_data_facts(data: dict) -> tuple[Path | None, int | None]:
    """An SFT run's examples folder (``finetune_data`` output), when it is still there: its
    tokenizer copy (with the chat template the examples were rendered with) and the
    end-of-turn id its responses end with."""
    if not data.get("finetune_dir"):
        return None, None
    root = Path(data["finetune_dir"])
    ft = next((c for c in (root, root / "finetune") if (c / "index.json").is_file()), None)  # as finetune.find_finetune_dir
    index = _json(ft / "index.json") if ft is not None else {}
    if not index:
        return None, None  # moved or deleted: the run's own tokenizer and EOS still generate
    rel = (index.get("tokenizer") or {}).get("path")
    folder = (ft / rel).resolve() if rel else None
    eot = index.get("end_of_turn_id")
    return (folder if folder and folder.is_dir() else None), (int(eot) if isinstance(eot, int) else None)


def prompt_context(loaded: Loaded, prompt: str) -> list[int]:
    """A prompt is placed as the start of a new document (``Loaded.head``); an empty prompt of a
    model whose documents start with nothing starts after an EOS."""
    ids = loaded.head + loaded.tokenizer.encode(prompt)
    return ids or [loaded.eos_id]


# ------------------------------------------------------------------------------------ chat
def chat_folder(loaded: Loaded) -> Path | None:
    """The first of the model's folders whose tokenizer has a chat template (``chat_template.jinja``,
    ``chat_template.json`` or tokenizer_config.json's ``chat_template``)."""
    from stages.finetune_data import read_template

    for f in loaded.folders:
        if ((f / "tokenizer.json").is_file() or (f / "tokenizer.model").is_file()) and read_template(f) is not None:
            return f
    return None


class ChatFormat:
    """The tokenizer's chat template, rendered as ``finetune_data`` renders SFT prompts (its
    ``ChatRenderer``: transformers' ``apply_chat_template``, the template's special tokens as
    their ids, the user's text encoded as text): one user turn, then the assistant's turn header.
    The special token the template puts after an assistant message (``<|im_end|>``) ends the
    generation."""

    def __init__(self, loaded: Loaded):
        folder = chat_folder(loaded)
        if folder is None:
            raise TrainError("--chat: this model's tokenizer has no chat template", where=", ".join(str(f) for f in loaded.folders) or str(loaded.source),
                             hint="drop --chat and write the prompt in the format the model was trained on")
        try:
            from stages.finetune_data import ChatRenderer
        except ImportError as exc:
            raise TrainError(f"--chat needs transformers and jinja2 ({exc})", hint="pip install transformers") from None
        try:
            self.renderer = ChatRenderer(folder, loaded.tokenizer)
        except PipelineError:
            raise
        except Exception as exc:  # transformers raises many kinds for a folder it cannot read
            raise TrainError(f"cannot load the tokenizer's chat template ({type(exc).__name__}: {exc})", where=str(folder), hint="check tokenizer_config.json") from None
        self.folder = folder
        eot = self.renderer.end_id
        self.end_of_turn = eot if eot != loaded.tokenizer.eos_id else None

    def encode(self, prompt: str) -> list[int]:
        return self.renderer.prompt(prompt)[1].tolist()  # the template writes BOS itself when it wants one


# ------------------------------------------------------------------------------------ prompts
def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a file: ``.jsonl`` (a ``prompt`` string per line) or text (one prompt per
    non-empty line)."""
    path = Path(path)
    if not path.is_file():
        raise TrainError("prompts file not found", where=str(path), hint="give a .txt file (one prompt per line) or a .jsonl file with a \"prompt\" field")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"cannot read the prompts file ({type(exc).__name__}: {exc})", where=str(path), hint="save it as UTF-8 text") from None
    prompts: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise TrainError(f"not JSON ({exc})", where=f"{path}:{n}", hint="one JSON object per line, with a \"prompt\" field") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise TrainError("no \"prompt\" string in this record", where=f"{path}:{n}", hint="each line: {\"prompt\": \"...\"}")
            prompts.append(rec["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise TrainError("the prompts file has no prompts", where=str(path), hint="one prompt per line (.txt) or {\"prompt\": ...} per line (.jsonl)")
    return prompts


@dataclass
class GenerateOptions:
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    seed: int = 0
    num_return_sequences: int = 1
    batch_size: int = 8
    chat: bool = False

    def check(self) -> "GenerateOptions":
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise TrainError(f"--top-p {self.top_p} is outside (0, 1]", where="--top-p", hint="e.g. 0.9: sample among the most likely tokens holding 90% of the probability")
        for name, value in (("--max-new-tokens", self.max_new_tokens), ("--num-return-sequences", self.num_return_sequences), ("--batch-size", self.batch_size)):
            if value < 1:
                raise TrainError(f"{name} must be at least 1", where=name)
        return self


def generate_texts(loaded: Loaded, prompts: list[str], opts: GenerateOptions, autocast=contextlib.nullcontext) -> list[dict]:
    """One record per prompt and sequence, in the prompts' order: ``prompt``, ``sequence``,
    ``text`` (decoded, the stop token left out), ``tokens`` (the new ids, the stop token left
    out), ``finish`` (``eos`` or ``length``). Prompts run ``batch_size`` at a time, grouped by
    length (less padding); the results do not depend on the grouping."""
    opts.check()
    stops = list(loaded.stop_ids)
    if opts.chat:
        fmt = ChatFormat(loaded)
        contexts = [fmt.encode(p) for p in prompts]
        if fmt.end_of_turn is not None and fmt.end_of_turn not in stops:
            stops.append(fmt.end_of_turn)
    else:
        contexts = [prompt_context(loaded, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(contexts[i]))
    results: dict[int, list[Generated]] = {}
    for b in range(0, len(order), opts.batch_size):
        chunk = order[b : b + opts.batch_size]
        outs = generate_batch(loaded.model, [contexts[i] for i in chunk], opts.max_new_tokens, temperature=opts.temperature, top_k=opts.top_k,
                              top_p=opts.top_p, seed=opts.seed, num_return_sequences=opts.num_return_sequences, stop_ids=stops,
                              autocast=autocast, vocab_limit=loaded.tokenizer.vocab_size)
        results.update(zip(chunk, outs))
    records = []
    for i, prompt in enumerate(prompts):
        for j, g in enumerate(results[i]):
            ids = g.tokens[:-1] if g.finish == "eos" else g.tokens
            records.append({"index": i, "sequence": j, "prompt": prompt, "text": loaded.tokenizer.decode(ids), "tokens": ids, "finish": g.finish})
    return records
