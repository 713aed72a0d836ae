"""A tiny "published" Hugging Face model folder, built offline: a byte-level BPE tokenizer in the
Qwen style (``<|endoftext|>`` EOS, no BOS, ``<|im_start|>``/``<|im_end|>`` and a chat template),
random weights of a Llama-family architecture from a ``transformers`` config class, a model card
with a license in its front matter and a LICENSE file — the shape of what ``--init-from`` reads."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "维基百科是一个自由内容、公开编辑且多语言的网络百科全书协作计划。",
    "这家酒店的服务很好，房间干净，早餐也不错。下次还会再来。",
    "手机的电池续航太差了，用了半天就没电，非常失望。",
    "The quick brown fox jumps over the lazy dog. Data curation matters for language models.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "Tokenizers map text to ids; the model only ever sees the ids.",
] * 4
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_level_bpe(texts: list[str], vocab_size: int, specials: list[str]):
    """A byte-level BPE (Llama 3 / Qwen style) trained on ``texts``, ``specials`` added after."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(specials)
    return tok


def tokenizer(vocab_size: int = 700):
    return byte_level_bpe(CORPUS, vocab_size, SPECIALS)


def published_model(folder: Path, family: str = "qwen2", seed: int = 0, chat: bool = True, license: str = "apache-2.0", **overrides) -> Path:
    """Write the model folder and return it. The embedding has a few more rows than the tokenizer
    has ids (as Qwen's 151,936 for 151,665 ids)."""
    from pipeline.train.hf_import import make_tiny_checkpoint

    folder = Path(folder)
    tok = tokenizer()
    n = tok.get_vocab_size(with_added_tokens=True)
    shape = dict(vocab_size=-(-n // 64) * 64 + 64, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, eos_token_id=tok.token_to_id("<|endoftext|>"), bos_token_id=None)
    shape.update(overrides)
    make_tiny_checkpoint(folder, family, seed=seed, **shape)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "add_prefix_space": False, "errors": "replace", "model_max_length": 256}
    if chat:
        config["chat_template"] = CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "README.md").write_text(
        f"---\nlicense: {license}\nlanguage:\n- zh\n- en\ntags:\n- tiny-test-model\npipeline_tag: text-generation\n---\n\n# tiny-{family}\n\nA random test model.\n",
        encoding="utf-8",
    )
    (folder / "LICENSE").write_text("Apache License 2.0 (test fixture)\n", encoding="utf-8")
    return folder
