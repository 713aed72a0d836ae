"""Batches straight from the token shards, memory-mapped.

A split is the concatenation of its rows (shard files in ``index.json`` order): one token
stream, read through ``pyarrow.memory_map`` as numpy views of the Arrow list values, never copied
whole.  Training examples are the windows ``stream[k*T : k*T + T + 1]`` (inputs = the first T,
targets = the last T), k = 0 .. (n_tokens - 1) // T - 1.  Each epoch visits every window once in
the order of ``numpy.random.default_rng([seed, epoch]).permutation``; a batch is the next B
windows of that order (the incomplete tail is dropped).  The training loop draws one batch per
optimizer step (B = all the windows of that step, every process and micro-batch), so the data
order depends only on the tokens per step, not on how a step is split.  The position is (epoch, step within
epoch): saved in checkpoints, it restarts the exact same sequence of batches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.train import TrainError


def find_tokens_dir(path: str | Path) -> Path:
    """The tokens folder: ``path`` itself if it holds ``index.json``, else ``path/tokens``."""
    p = Path(path)
    for cand in (p, p / "tokens"):
        if (cand / "index.json").is_file():
            return cand
    raise TrainError("no token shards here (index.json not found)", where=str(p), hint="pass the output folder of `pipeline run` with a tokenize stage, or its tokens/ folder")


def find_run(path: str | Path, kind: str = "tokens") -> tuple[Path, str | None]:
    """What ``--shards`` names: a run's output folder holding ``kind/index.json`` (``tokens`` or
    ``finetune``), that folder itself, or a folder of runs (``out/``) holding exactly one such run.
    Returns the path to use and a note saying which run was picked (None when ``path`` was it)."""
    p = Path(path)
    if (p / "index.json").is_file() or (p / kind / "index.json").is_file():
        return p, None
    runs = sorted(c for c in p.glob("*") if (c / kind / "index.json").is_file()) if p.is_dir() else []
    if len(runs) == 1:
        return runs[0], f"using {runs[0]}: the only run with {kind} shards in {p}"
    what = "token shards" if kind == "tokens" else "fine-tuning examples"
    if runs:
        raise TrainError(f"{len(runs)} runs with {what} here: {', '.join(r.name for r in runs)}", where=str(p), hint=f"pick one: --shards {runs[0]}")
    made_by = "a tokenize stage" if kind == "tokens" else "a finetune_data stage"
    raise TrainError(f"no {what} here ({kind}/index.json not found)", where=str(p), hint=f"pass the output folder of `pipeline run` with {made_by} (e.g. out/wiki-zh), or its {kind}/ folder")


def read_index(tokens_dir: Path) -> dict:
    try:
        return json.loads((tokens_dir / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot read index.json: {e}", where=str(tokens_dir / "index.json"), hint="re-run the tokenize stage") from e


def tokenizer_hash(index: dict) -> str:
    """The tokenizer's identity: its sha256 from index.json, else a hash of its file hashes."""
    tok = index.get("tokenizer") or {}
    if tok.get("sha256"):
        return tok["sha256"]
    return hashlib.sha256(json.dumps(tok.get("files", {}), sort_keys=True).encode()).hexdigest()


def vocab_size(tokens_dir: Path) -> int:
    """Vocabulary size of the run's tokenizer (``<out>/tokenizer`` beside ``tokens/``)."""
    tok = tokens_dir.parent / "tokenizer"
    if (tok / "tokenizer.model").is_file():
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model")).get_piece_size()
    if (tok / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(tok / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    raise TrainError("tokenizer not found beside the token shards", where=str(tok), hint="give vocab_size explicitly")


class TokenStream:
    """One split as a random-access token stream over memory-mapped shards."""

    def __init__(self, tokens_dir: str | Path, split: str):
        self.dir = find_tokens_dir(tokens_dir)
        self.index = read_index(self.dir)
        self.split = split
        if split not in self.index.get("splits", {}):
            raise TrainError(f"split {split!r} not in index.json", where=str(self.dir / "index.json"), hint="the tokenize stage writes train and validation (validation_fraction > 0)")
        self.seq_len = int(self.index["seq_len"])
        self.dtype = np.dtype(self.index.get("dtype", "uint16"))
        self._maps = []  # keep the memory maps open
        segments = []
        for shard in self.index["splits"][split]["shards"]:
            path = self.dir / shard["file"]
            if not path.is_file():
                raise TrainError("token shard missing", where=str(path), hint="the tokens folder is incomplete: re-run `pipeline run` (or restore the file)")
            source = pa.memory_map(str(path))
            self._maps.append(source)
            for batch in pa.ipc.open_stream(source):
                col = batch.column(batch.schema.get_field_index("input_ids"))
                offsets = col.offsets.to_numpy()
                values = col.values.to_numpy(zero_copy_only=True)[offsets[0] : offsets[-1]]
                if len(values):
                    segments.append(values)
        self.segments = segments
        self.starts = np.cumsum([0] + [len(s) for s in segments])
        self.n_tokens = int(self.starts[-1])

    def __len__(self) -> int:
        return self.n_tokens

    def slice(self, a: int, b: int) -> np.ndarray:
        """Tokens [a, b) as int64 (a copy of just that range)."""
        out = np.empty(b - a, dtype=np.int64)
        i = int(np.searchsorted(self.starts, a, side="right")) - 1
        pos = a
        while pos < b:
            seg, s0 = self.segments[i], int(self.starts[i])
            n = min(b, s0 + len(seg)) - pos
            out[pos - a : pos - a + n] = seg[pos - s0 : pos - s0 + n]
            pos += n
            i += 1
        return out

    def n_windows(self, T: int) -> int:
        return max(0, (self.n_tokens - 1) // T)

    def windows(self, ks, T: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.stack([self.slice(int(k) * T, int(k) * T + T + 1) for k in ks])
        return rows[:, :-1], rows[:, 1:]


class Batches:
    """Shuffled [B, T] batches with an exact position ``(epoch, step)``."""

    def __init__(self, stream: TokenStream, batch_size: int, T: int, seed: int, epoch: int = 0, step: int = 0):
        self.stream, self.B, self.T, self.seed = stream, batch_size, T, seed
        self.n = stream.n_windows(T)
        self.steps_per_epoch = self.n // batch_size
        if self.steps_per_epoch == 0:
            raise TrainError(
                f"split {stream.split!r} has {stream.n_tokens} tokens: not one batch of {batch_size} x {T}",
                where=str(stream.dir),
                hint="use a smaller batch_size / batch_tokens / seq_len, or more data",
            )
        self.epoch, self.step = epoch, step
        self._perm_epoch, self._perm = None, None

    def position(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}

    def _order(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            self._perm_epoch = self.epoch
        return self._perm

    def next_ids(self) -> np.ndarray:
        """The window indices of the next batch (callers read only the rows they need)."""
        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        ks = self._order()[self.step * self.B : (self.step + 1) * self.B]
        self.step += 1
        return ks

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        return self.stream.windows(self.next_ids(), self.T)


def eval_batches(stream: TokenStream, batch_size: int, T: int, max_tokens: int, rank: int = 0, world: int = 1):
    """The first ``max_tokens`` of the split (at least one window), in order: a fixed budget.
    With ``world`` > 1, process ``rank`` gets every world-th batch (the caller sums across)."""
    n = min(stream.n_windows(T), max(1, max_tokens // T))
    for i, a in enumerate(range(0, n, batch_size)):
        if i % world == rank:
            yield stream.windows(range(a, min(n, a + batch_size)), T)
