"""Published Llama-family checkpoints (tiny, random, built offline from transformers config
classes) load into our Transformer with logits equal to transformers' within 1e-4 in float32,
with and without the KV cache."""

import pytest
import torch

pytest.importorskip("transformers")

from pipeline.train import TrainError
from pipeline.train.hf_import import (
    HFCausalLM,
    load_model,
    make_tiny_checkpoint,
    read_config,
    spec_from_config,
    tokenizer_mismatch,
    unsupported,
)
from pipeline.train.model import KVCache

TOL = 1e-4

CASES = {
    "llama-gqa-untied": ("llama", {}),
    "llama3-rope-scaling": ("llama", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                           "original_max_position_embeddings": 16})),
    "llama-linear-rope": ("llama", dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})),
    # YaRN as Qwen2.5 long-context configs set it (original context 16 < T = 48: ramp and attention factor both used)
    "qwen2-yarn": ("qwen2", dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16})),
    "llama-yarn-mscale": ("llama", dict(rope_parameters={"rope_type": "yarn", "rope_theta": 50000.0, "factor": 8.0, "original_max_position_embeddings": 16,
                                                         "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 16, "beta_slow": 2})),
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
    model = load_model(path)[0].eval()
    with torch.no_grad():
        got = model(idx)
    err = (got - ref).abs().max().item()
    print(f"{case}: max |logit diff| = {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("case", ["llama-gqa-untied", "qwen3-qk-norm-bias", "llama3-rope-scaling"])
def test_kv_cache_and_batched_positions_match_full_forward(tmp_path, case):
    """Generation paths (one prefill then token by token; left-padded batch with positions and a
    mask) give the full forward's logits on a GQA model."""
    family, overrides = CASES[case]
    model = load_model(make_tiny_checkpoint(tmp_path / case, family, **overrides))[0].eval()
    idx = _idx(T=20)
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(len(model.layers))
        steps = [model(idx[:, :12], cache=cache)[:, -1]]
        for t in range(12, 20):
            steps.append(model(idx[:, t : t + 1], cache=cache)[:, -1])
        assert (torch.stack(steps[1:], 1) - full[:, 12:]).abs().max() < TOL
        # row 1 left-padded by 5: positions restart at its first real token
        pad = 5
        ids = torch.cat([torch.zeros(1, pad, dtype=torch.long), idx[1:, : 20 - pad]], 1)
        both = torch.cat([idx[:1], ids])
        real = torch.ones(2, 20, dtype=torch.bool)
        real[1, :pad] = False
        pos = (real.cumsum(1) - 1).clamp(min=0)
        mask = torch.tril(torch.ones(20, 20, dtype=torch.bool))[None, None] & real[:, None, None, :]
        mask |= torch.eye(20, dtype=torch.bool)[None, None]  # pad rows attend to themselves (no NaN)
        out = model(both, positions=pos, mask=mask)
        ref1 = model(idx[1:, : 20 - pad])
        assert (out[0] - full[0]).abs().max() < TOL
        assert (out[1, pad:] - ref1[0]).abs().max() < TOL


def test_tokenizer_mismatch_rules():
    assert tokenizer_mismatch({"tokenizer.json": "a"}, {"tokenizer.json": "a", "tokenizer_config.json": "x"}, 100, 90) is None
    assert "another tokenizer" in tokenizer_mismatch({"tokenizer.json": "a"}, {"tokenizer.json": "b"}, 100, 90)
    assert "nothing to compare" in tokenizer_mismatch({"tokenizer.json": "a"}, {"tokenizer.model": "b"}, 100, 90)
    assert "ids" in tokenizer_mismatch({"tokenizer.json": "a"}, {"tokenizer.json": "a"}, 100, 101)


def test_other_architectures_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(TrainError, match="not a supported decoder"):
        spec_from_config(read_config(tmp_path))


def test_unimplemented_rope_refused(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "y", "llama", rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0})
    with pytest.raises(TrainError, match="dynamic"):
        load_model(path)[0]


@pytest.mark.parametrize("which", ["imported", "transformers"])
def test_training_lowers_the_loss(tmp_path, which):
    path = make_tiny_checkpoint(tmp_path / "t", "qwen2")
    model = load_model(path)[0] if which == "imported" else HFCausalLM.from_pretrained(path)
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
        _, a = load_model(path)[0](x[:, :-1], x[:, 1:])
        _, b = HFCausalLM.from_pretrained(path)(x[:, :-1], x[:, 1:])
    assert abs(a.item() - b.item()) < 1e-5


def test_transformers_4_config_keys_are_read():
    spec = spec_from_config({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16,
                             "rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    assert spec.rope_theta == 500000.0 and spec.rope["rope_type"] == "llama3" and spec.n_kv_heads == 1 and spec.head_dim == 4
    assert unsupported(spec) == []


def test_yarn_really_changes_the_rotation():
    """The parity cases above would pass with plain RoPE if YaRN were ignored on both sides: check it is not."""
    from pipeline.train.model import ModelConfig, rope_attention_scaling, rope_cache

    plain = ModelConfig(vocab_size=8, dim=64, n_layers=1, n_heads=2, ffn_dim=8)
    yarn = ModelConfig(**{**plain.__dict__, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}})
    assert abs(rope_attention_scaling(yarn) - (0.1 * torch.log(torch.tensor(4.0)).item() + 1)) < 1e-6
    (c0, _), (c1, _) = rope_cache(plain, 48, "cpu"), rope_cache(yarn, 48, "cpu")
    assert (c0 - c1).abs().max() > 0.1
