"""Tokenizers for the ``tokenize`` stage: SentencePiece training, the equivalent Hugging Face
``tokenizer.json``, and one small encode/decode interface over both.

Why these settings (``docs/tokenization.md`` has the measurements):

* **Lossless on cleaned text.** ``normalization_rule_name=identity`` (no NFKC),
  ``remove_extra_whitespaces=false`` (runs of spaces kept), ``add_dummy_prefix=false`` (no
  invented leading space, so a decoded token stream is the plain concatenation of its pieces),
  ``byte_fallback=true`` (no character is ever unknown: a character outside the vocabulary
  becomes its UTF-8 bytes). ``"\\n"`` is a user-defined symbol: SentencePiece trains on lines,
  so without it every newline would be a byte token. The one character this cannot reproduce is
  U+2581 ``▁`` itself (SentencePiece's whitespace mark decodes to a space): documents containing
  it are reported (and by default dropped to the ledger as ``tokenize:lossy``).
* **The Hugging Face twin.** A SentencePiece BPE model becomes ``models.BPE`` with merges
  generated from the pieces (every split of a normal piece into two normal pieces, ranked by
  the merged piece's id, i.e. its score), ``byte_fallback``, the Metaspace pre-tokenizer with the
  model's dummy-prefix setting, user-defined symbols as added tokens and control symbols as
  special tokens, and a ``Replace("▁", " ") → ByteFallback → Fuse`` decoder. Unigram models
  become ``models.Unigram``. ``tokenizer_config.json`` sets ``split_special_tokens`` so that a
  literal ``</s>`` in a document is text, as it is for SentencePiece. Id equality with
  SentencePiece is tested on real text, not assumed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pipeline.common.errors import StageError

SPACE_MARK = "\u2581"  # "▁": SentencePiece's whitespace symbol
USER_SYMBOLS = ("\n",)
SP_MODEL = "tokenizer.model"
HF_TOKENIZER = "tokenizer.json"
HF_CONFIG = "tokenizer_config.json"
HF_SPECIAL = "special_tokens_map.json"
META = "grist_tokenizer.json"
MAX_TRAIN_LINE_CHARS = 16384  # SentencePiece skips longer sentences; 16384 chars <= 65536 UTF-8 bytes
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")

# sentencepiece_model.proto ModelPiece.Type and TrainerSpec.ModelType
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2


class TokenizerError(StageError):
    """A tokenizer cannot be trained, read or converted; the message says why."""


# --------------------------------------------------------------------------------- training
def training_lines(texts: Iterable[str]) -> Iterator[str]:
    """Documents -> SentencePiece training sentences: non-empty lines, long ones cut to
    ``MAX_TRAIN_LINE_CHARS`` (SentencePiece silently drops sentences over its length limit)."""
    for text in texts:
        for line in text.split("\n"):
            for start in range(0, len(line), MAX_TRAIN_LINE_CHARS):
                yield line[start : start + MAX_TRAIN_LINE_CHARS]


def train_sentencepiece(
    texts: Iterable[str],
    *,
    model_type: str = "bpe",
    vocab_size: int = 32000,
    character_coverage: float = 0.9995,
    num_threads: int = 1,
    max_piece_length: int = 16,
    split_digits: bool = False,
) -> bytes:
    """Train a lossless SentencePiece model on ``texts`` (an iterator: streamed into the trainer)
    and return the serialized model. Deterministic for a given input (BPE whatever
    ``num_threads``; unigram for a given ``num_threads``)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_lines(texts),
            model_writer=out,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small sample gives a smaller vocabulary instead of an error (reported)
            character_coverage=character_coverage,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=split_digits,
            user_defined_symbols=list(USER_SYMBOLS),
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            max_sentence_length=1 << 16,
            max_sentencepiece_length=max_piece_length,
            input_sentence_size=0,  # the caller already sampled: use every sentence, no reshuffle
            shuffle_input_sentence=False,
            num_threads=max(1, num_threads),
            minloglevel=2,
        )
    except RuntimeError as exc:
        msg = str(exc)
        if "required_chars" in msg:
            raise TokenizerError(
                f"vocab_size {vocab_size} cannot hold the characters the sample needs at character_coverage {character_coverage}: {msg.split(']')[-1].strip()}"
            ) from exc
        if "no sentence" in msg.lower() or "empty" in msg.lower():
            raise TokenizerError(
                "no training text: no document reached the tokenize node (see `pipeline inspect OUT` for what the earlier stages removed)",
                hint="check the language and quality settings, or give an existing tokenizer with tokenizer_path",
            ) from exc
        raise TokenizerError(f"SentencePiece training failed: {msg}") from exc
    proto = pb.ModelProto.FromString(out.getvalue())
    # The trainer records its thread count in the model; the pieces do not depend on it for BPE.
    # Normalize it so the file is byte-identical for any number of workers.
    proto.trainer_spec.num_threads = 1
    return proto.SerializeToString(deterministic=True)


# ------------------------------------------------------------------------- HF conversion
def _sp_proto(model: bytes):
    from sentencepiece import sentencepiece_model_pb2 as pb

    return pb.ModelProto.FromString(model)


def bpe_merges(pieces: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """Merges equivalent to SentencePiece BPE encoding: SentencePiece repeatedly joins the
    adjacent pair whose concatenation is the best-scored normal piece (score order = id order
    for a trained BPE model); ``models.BPE`` joins the pair of lowest merge rank. So every split
    of a normal piece into two normal pieces is a merge, ranked by the merged piece's id."""
    normal = {p: i for i, (p, t) in enumerate(pieces) if t == NORMAL}
    merges: list[tuple[str, str]] = []
    for piece, ptype in pieces:
        if ptype != NORMAL or len(piece) < 2:
            continue
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                local.append((normal[left], normal[right], left, right))
        local.sort()
        merges.extend((l, r) for _, _, l, r in local)
    return merges


def hf_tokenizer_from_sentencepiece(model: bytes):
    """A ``tokenizers.Tokenizer`` that yields the same ids as the SentencePiece ``model``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    proto = _sp_proto(model)
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    pieces = [(p.piece, p.type) for p in proto.pieces]
    unk_piece = pieces[ts.unk_id][0] if 0 <= ts.unk_id < len(pieces) else "<unk>"
    if ts.model_type == BPE:
        vocab = {p: i for i, (p, _) in enumerate(pieces)}
        tok = Tokenizer(models.BPE(vocab=vocab, merges=bpe_merges(pieces), unk_token=unk_piece, fuse_unk=True, byte_fallback=ts.byte_fallback, dropout=None))
    elif ts.model_type == UNIGRAM:
        # SentencePiece never matches control/byte/unused pieces against text; Unigram would
        # (their stored score is 0, the best there is), and the unknown piece matches a literal "<unk>":
        # give them a score 1000 below the worst normal piece (far enough; -1e9 would cost float64
        # path sums their precision, and drags the unknown-character score down with it).
        floor = min((p.score for p in proto.pieces if p.type == NORMAL), default=0.0) - 1000.0
        scored = [(p.piece, p.score if p.type in (NORMAL, USER_DEFINED) else floor) for p in proto.pieces]
        tok = Tokenizer(models.Unigram(scored, unk_id=ts.unk_id, byte_fallback=ts.byte_fallback))
    else:
        raise TokenizerError(f"SentencePiece model type {ts.model_type} (word/char) has no Hugging Face equivalent here; use bpe or unigram")

    norm = []
    if ns.precompiled_charsmap:
        norm.append(normalizers.Precompiled(ns.precompiled_charsmap))
    if ns.remove_extra_whitespaces:
        norm += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if norm:
        tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE_MARK, prepend_scheme="first" if ns.add_dummy_prefix else "never", split=True)
    steps = [decoders.Replace(SPACE_MARK, " ")]
    if ts.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if ns.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    # user-defined symbols are cut out of the text before the model (SentencePiece does the same);
    # control symbols are special tokens (never produced from text: split_special_tokens below)
    tok.add_tokens([AddedToken(p.piece, normalized=False, special=False) for p in proto.pieces if p.type == USER_DEFINED])
    tok.add_special_tokens([AddedToken(p.piece, normalized=False, special=True) for i, p in enumerate(proto.pieces) if p.type in (CONTROL, UNKNOWN)])
    return tok


def _special_map(proto) -> dict:
    ts = proto.trainer_spec
    out = {}
    for key, idx in (("bos_token", ts.bos_id), ("eos_token", ts.eos_id), ("unk_token", ts.unk_id), ("pad_token", ts.pad_id)):
        if 0 <= idx < len(proto.pieces):
            out[key] = proto.pieces[idx].piece
    return out


def write_tokenizer_dir(dest: Path, *, sp_model: bytes | None = None, hf_dir: Path | None = None, meta: dict | None = None) -> dict:
    """Write ``dest`` (atomically: a temp folder renamed into place) with the SentencePiece model
    and its Hugging Face twin (``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``), or copy an existing Hugging Face tokenizer folder. Returns the
    metadata written to ``grist_tokenizer.json``."""
    import shutil

    from pipeline.common import storage

    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    storage.remove_tree(tmp)
    tmp.mkdir(parents=True)
    if sp_model is not None:
        proto = _sp_proto(sp_model)
        (tmp / SP_MODEL).write_bytes(sp_model)
        hf = hf_tokenizer_from_sentencepiece(sp_model)
        (tmp / HF_TOKENIZER).write_text(hf.to_str(pretty=True) + "\n", encoding="utf-8")
        special = _special_map(proto)
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "add_bos_token": False,
            "add_eos_token": False,
            # a literal "</s>" in a document is text, as it is for SentencePiece
            "split_special_tokens": True,
            # keep " ." and friends: decoding must give back the text exactly
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1000000000000000019884624838656,
        }
        (tmp / HF_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / HF_SPECIAL).write_text(json.dumps(special, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    elif hf_dir is not None:
        for name in (HF_TOKENIZER, HF_CONFIG, HF_SPECIAL, *CHAT_TEMPLATE_FILES):
            if (Path(hf_dir) / name).exists():
                shutil.copyfile(Path(hf_dir) / name, tmp / name)
    else:
        raise ValueError("write_tokenizer_dir needs sp_model or hf_dir")
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp.iterdir())}
    info = {**(meta or {}), "files": files, "sha256": dir_sha256(files)}
    (tmp / META).write_text(json.dumps(info, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    storage.remove_tree(dest)
    os.replace(tmp, dest)
    return info


def dir_sha256(files: dict[str, str]) -> str:
    """The tokenizer's hash: sha256 over the sorted (name, sha256) of its files."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------- published tokenizers (issue 15)
# The files of a Hugging Face tokenizer folder that define its behaviour: hashed to pin a local
# folder, fetched for a hub id. Other files in the folder (weights, README) are ignored.
# newer transformers write the chat template to its own file instead of tokenizer_config.json
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
TOKENIZER_FILES = (SP_MODEL, HF_TOKENIZER, HF_CONFIG, HF_SPECIAL, "added_tokens.json", "vocab.json", "merges.txt", *CHAT_TEMPLATE_FILES)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def source_files(folder: Path) -> dict[str, str]:
    """sha256 of each tokenizer file present in ``folder`` (``TOKENIZER_FILES``)."""
    folder = Path(folder)
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in TOKENIZER_FILES if (folder / n).is_file()}


def is_hub_id(value: str) -> bool:
    """``org/name`` that is not an existing local path."""
    return bool(HUB_ID.match(value)) and not Path(value).expanduser().exists()


def fetch_hub_tokenizer(repo_id: str, revision: str) -> Path:
    """Download the tokenizer files of a hub model at ``revision`` (huggingface_hub cache;
    offline with HF_HUB_OFFLINE=1 once cached). Returns the snapshot folder."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(TOKENIZER_FILES)))
    except Exception as exc:  # network, unknown repo/revision, gated model
        raise TokenizerError(
            f"cannot fetch the tokenizer of {repo_id}@{revision} from the Hugging Face hub ({type(exc).__name__}: {exc})",
            hint="check the id and revision, network access and HF_TOKEN for gated models; or download the folder and give its path",
        ) from None


def _special_content(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def hf_conventions(folder: Path) -> dict:
    """The tokenizer's own BOS/EOS conventions, from ``tokenizer_config.json`` (then
    ``special_tokens_map.json``): ``bos_token``, ``eos_token``, ``add_bos_token``,
    ``add_eos_token``. When the config does not say ``add_bos_token`` / ``add_eos_token``
    (Llama 3, Qwen), they are read off ``tokenizer.json``'s post-processor: the special tokens it
    puts around an encoding. Absent facts are None."""
    folder = Path(folder)
    config: dict = {}
    for name in (HF_CONFIG, HF_SPECIAL):
        if (folder / name).is_file():
            for k, v in json.loads((folder / name).read_text(encoding="utf-8")).items():
                config.setdefault(k, v)
    out = {
        "bos_token": _special_content(config.get("bos_token")),
        "eos_token": _special_content(config.get("eos_token")),
        "add_bos_token": config.get("add_bos_token") if isinstance(config.get("add_bos_token"), bool) else None,
        "add_eos_token": config.get("add_eos_token") if isinstance(config.get("add_eos_token"), bool) else None,
        "from": "tokenizer_config",
    }
    if (out["add_bos_token"] is None or out["add_eos_token"] is None) and (folder / HF_TOKENIZER).is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / HF_TOKENIZER))
        plain = tok.encode("a", add_special_tokens=False).ids
        full = tok.encode("a", add_special_tokens=True).ids
        at = next((k for k in range(len(full) - len(plain) + 1) if full[k : k + len(plain)] == plain), 0)
        before, after = full[:at], full[at + len(plain) :]
        bos_id = tok.token_to_id(out["bos_token"]) if out["bos_token"] else None
        eos_id = tok.token_to_id(out["eos_token"]) if out["eos_token"] else None
        if out["add_bos_token"] is None:
            out["add_bos_token"] = bos_id is not None and bos_id in before
        if out["add_eos_token"] is None:
            out["add_eos_token"] = eos_id is not None and eos_id in after
        out["from"] = "tokenizer_config + tokenizer.json post_processor"
    return out


# ------------------------------------------------------------------------------ encoding
@dataclass
class TextTokenizer:
    """Encode/decode over a SentencePiece model (preferred: faster per core, see
    docs/tokenization.md) or, when only a Hugging Face ``tokenizer.json`` exists, over that."""

    kind: str  # "sentencepiece" | "hf"
    vocab_size: int
    eos_id: int
    bos_id: int | None
    unk_id: int | None
    byte_ids: np.ndarray  # bool per id: a byte-fallback token
    lossless: bool  # decode(encode(t)) == t for every t without U+2581, by construction
    pieces: list[str] = field(repr=False, default_factory=list)
    _sp: object = field(repr=False, default=None)
    _hf: object = field(repr=False, default=None)

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(self.vocab_size)

    def encode(self, text: str) -> list[int]:
        if self._sp is not None:
            return self._sp.encode(text)
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Ids of each text as an int32 array, on this thread only (one worker = one core).
        SentencePiece >= 0.2.1 hands back the ids as a buffer: no Python int per token."""
        if self._sp is not None:
            if _sp_numpy_output(self._sp):
                return self._sp.encode(texts, out_type="numpy", num_threads=1)
            return [np.asarray(ids, dtype=np.int32) for ids in self._sp.encode(texts, num_threads=1)]
        return [np.asarray(self._hf.encode(t, add_special_tokens=False).ids, dtype=np.int32) for t in texts]

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(map(int, ids))
        if self._sp is not None:
            return self._sp.decode(ids)
        return self._hf.decode(ids, skip_special_tokens=False)

    def roundtrip_safe(self, text: str) -> bool:
        """True when decode(encode(text)) == text is guaranteed without decoding."""
        return self.lossless and SPACE_MARK not in text


def _sp_numpy_output(sp) -> bool:
    cached = getattr(sp, "_grist_numpy", None)
    if cached is None:
        try:
            cached = isinstance(sp.encode(["a"], out_type="numpy", num_threads=1)[0], np.ndarray)
        except (ValueError, TypeError, RuntimeError):
            cached = False
        try:
            sp._grist_numpy = cached
        except AttributeError:  # pragma: no cover - a processor that refuses attributes: ask again next time
            pass
    return cached


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def _from_sentencepiece(model: bytes) -> TextTokenizer:
    import sentencepiece as spm

    proto = _sp_proto(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    n = sp.get_piece_size()
    byte_ids = np.array([sp.is_byte(i) for i in range(n)], dtype=bool)
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    lossless = (
        ts.byte_fallback
        and not ns.precompiled_charsmap
        and ns.name in ("identity", "")
        and not ns.remove_extra_whitespaces
        and ns.escape_whitespaces
    )
    if ts.eos_id < 0:
        raise TokenizerError("the SentencePiece model has no EOS piece (eos_id = -1); documents need one between them")
    return TextTokenizer(
        kind="sentencepiece",
        vocab_size=n,
        eos_id=ts.eos_id,
        bos_id=ts.bos_id if ts.bos_id >= 0 else None,
        unk_id=ts.unk_id if ts.unk_id >= 0 else None,
        byte_ids=byte_ids,
        lossless=bool(lossless),
        pieces=[sp.id_to_piece(i) for i in range(n)],
        _sp=sp,
    )


def _from_hf_dir(path: Path) -> TextTokenizer:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / HF_TOKENIZER))
    tok.encode_special_tokens = True  # literal "</s>" in text is text
    config: dict = {}
    for name in (HF_SPECIAL, HF_CONFIG):
        if (path / name).exists():
            for k, v in json.loads((path / name).read_text(encoding="utf-8")).items():
                config.setdefault(k, v)

    def token_id(key: str) -> int | None:
        value = _special_content(config.get(key))
        return tok.token_to_id(value) if value is not None else None

    eos = token_id("eos_token")
    if eos is None:
        raise TokenizerError(f"{path}: no eos_token in tokenizer_config.json / special_tokens_map.json, or it is not a token (set the stage's eos_token)")
    # ids run to the highest id, added tokens included (Qwen's sit above its 151,643 pieces)
    n = max(tok.get_vocab_size(with_added_tokens=True), max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1)
    pieces = [tok.id_to_token(i) or "" for i in range(n)]
    return TextTokenizer(
        kind="hf",
        vocab_size=n,
        eos_id=eos,
        bos_id=token_id("bos_token"),
        unk_id=token_id("unk_token"),
        byte_ids=np.array([bool(_BYTE_PIECE.match(p)) for p in pieces], dtype=bool),
        lossless=False,
        pieces=pieces,
        _hf=tok,
    )


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """A SentencePiece ``.model`` file, or a folder with ``tokenizer.model`` (SentencePiece,
    preferred) or ``tokenizer.json`` (Hugging Face)."""
    path = Path(path)
    if path.is_file():
        return _from_sentencepiece(path.read_bytes())
    if (path / SP_MODEL).is_file():
        return _from_sentencepiece((path / SP_MODEL).read_bytes())
    if (path / HF_TOKENIZER).is_file():
        return _from_hf_dir(path)
    raise TokenizerError(f"{path}: neither a SentencePiece model nor a folder with {SP_MODEL} or {HF_TOKENIZER}")


@functools.lru_cache(maxsize=4)
def cached_tokenizer(path: str, sha256: str) -> TextTokenizer:
    """One tokenizer per worker process and tokenizer version (``sha256`` keys the cache). On a
    Dask worker without the runner's files, the caller fetches the folder first (``ensure_local``)."""
    return load_tokenizer(path)


def resolve_special(tok: TextTokenizer, token: str | None, default: int | None, what: str) -> int | None:
    """The id of a special token named by the user, or the tokenizer's own."""
    if token is None:
        return default
    if tok.kind == "sentencepiece":
        i = tok._sp.piece_to_id(token)
        if tok.pieces[i] != token:
            raise TokenizerError(f"{what} {token!r} is not a piece of the tokenizer")
        return i
    i = tok._hf.token_to_id(token)
    if i is None:
        raise TokenizerError(f"{what} {token!r} is not a token of the tokenizer")
    return i
