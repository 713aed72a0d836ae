"""Issue 15 item 2, first slice: Llama-family checkpoints (tiny, random, built offline) load with
logits equal to transformers' within 1e-4 in float32."""

import pytest
import torch

pytest.importorskip("transformers")

from pipeline.train import TrainError
from pipeline.train.hf_import import (
    HFCausalLM,
    load_imported,
    load_into_native,
    make_tiny_checkpoint,
    native_gaps,
    read_config,
    spec_from_config,
)

TOL = 1e-4

CASES = {
    "llama-gqa-untied": ("llama", {}),
    "llama3-rope-scaling": ("llama", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                           "original_max_position_embeddings": 16})),
    "llama-linear-rope": ("llama", dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})),
    "llama-attention-bias": ("llama", dict(attention_bias=True)),
    "qwen2-bias-theta": ("qwen2", dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "qwen2-tied": ("qwen2", dict(tie_word_embeddings=True)),
    "mistral-head-dim": ("mistral", dict(head_dim=32, sliding_window=64)),
    "qwen3-qk-norm": ("qwen3", dict(head_dim=32)),
    "qwen3-qk-norm-bias": ("qwen3", dict(attention_bias=True)),
}


def _reference(path, idx):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(input_ids=idx).logits


def _idx(vocab=256, T=48):
    return torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", list(CASES))
def test_imported_decoder_logits_match_transformers(tmp_path, case):
    family, overrides = CASES[case]
    path = make_tiny_checkpoint(tmp_path / case, family, **overrides)
    idx = _idx()
    ref = _reference(path, idx)
    model = load_imported(path).eval()
    with torch.no_grad():
        got = model(idx)
    err = (got - ref).abs().max().item()
    print(f"{case}: max |logit diff| = {err:.2e}")
    assert err < TOL


def test_native_model_loads_the_subset_it_supports(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "mha", "llama", num_key_value_heads=4, tie_word_embeddings=True, max_position_embeddings=64)
    assert native_gaps(spec_from_config(read_config(path))) == []
    idx = _idx()
    ref = _reference(path, idx)
    with torch.no_grad():
        got = load_into_native(path).eval()(idx)
    assert (got - ref).abs().max().item() < TOL


def test_native_model_refuses_what_it_lacks(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "q", "qwen2")
    gaps = native_gaps(spec_from_config(read_config(path)))
    assert any("grouped-query" in g for g in gaps) and any("biases" in g for g in gaps) and any("untied" in g for g in gaps)
    with pytest.raises(TrainError, match="grouped-query"):
        load_into_native(path)


def test_other_architectures_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(TrainError, match="not a supported decoder"):
        spec_from_config(read_config(tmp_path))


def test_unimplemented_rope_refused(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "y", "llama", rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                                           "original_max_position_embeddings": 32})
    with pytest.raises(TrainError, match="yarn"):
        load_imported(path)


@pytest.mark.parametrize("which", ["imported", "transformers"])
def test_training_lowers_the_loss(tmp_path, which):
    path = make_tiny_checkpoint(tmp_path / "t", "qwen2")
    model = load_imported(path) if which == "imported" else HFCausalLM.from_pretrained(path)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = _idx(T=33)
    losses = []
    for _ in range(10):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_wrapper_matches_imported_decoder_loss(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "w", "mistral")
    x = _idx(T=33)
    with torch.no_grad():
        _, a = load_imported(path)(x[:, :-1], x[:, 1:])
        _, b = HFCausalLM.from_pretrained(path)(x[:, :-1], x[:, 1:])
    assert abs(a.item() - b.item()) < 1e-5


def test_transformers_4_config_keys_are_read():
    spec = spec_from_config({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16,
                             "rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    assert spec.rope_theta == 500000.0 and spec.rope["rope_type"] == "llama3" and spec.n_kv_heads == 1 and spec.head_dim == 4
    assert any("RoPE scaling" in g for g in native_gaps(spec))
