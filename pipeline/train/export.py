"""Export a checkpoint to Hugging Face format as ``LlamaForCausalLM``.

The native model already uses Llama's layout and conventions, so the export is a rename:
rotary in the rotate-half convention (``cat([freqs, freqs])``, not interleaved pairs) with the
same ``rope_theta``, RMSNorm computed in float32 with the same eps (``rms_norm_eps``), SwiGLU
``down(silu(gate(x)) * up(x))``, no biases, one key/value head per query head, tied embeddings
(``tie_word_embeddings=True``: no ``lm_head.weight`` is written).

The export carries a model card (``README.md``): the datasets the model was trained on and their
licenses, read from the shards' run (``manifest.lock.yaml``, ``provenance.json``,
``licenses.json``), and the training facts (preset, parameters, tokens seen, validation loss)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from pipeline.train import TrainError
from pipeline.train.checkpoint import load_native
from pipeline.train.model import ModelConfig, Transformer

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json")


def llama_config(cfg: ModelConfig, **special):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        initializer_range=cfg.init_std,
        torch_dtype="float32",
        **special,
    )


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Native names -> Llama names (``model.`` prefix; the tied head is not a separate tensor)."""
    return {f"model.{k}": v.detach().float().contiguous() for k, v in model.state_dict().items()}


def export_hf(checkpoint: str | Path, dest: str | Path, tokenizer_dir: str | Path | None = None, card: bool = True) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ generation config), the tokenizer files
    and the model card ``README.md`` to ``dest``; ``AutoModelForCausalLM.from_pretrained(dest)``
    then gives the native model's logits.  The tokenizer defaults to ``<run out>/tokenizer``
    beside the trained tokens."""
    from transformers import LlamaForCausalLM

    model, state = load_native(checkpoint)
    tok = Path(tokenizer_dir) if tokenizer_dir else Path(state["data"]["tokens_dir"]).parent / "tokenizer"
    if state.get("init_from"):
        return export_published(model, state, Path(checkpoint), Path(dest), tok, card)
    special = {}
    if (tok / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model"))
        special = {k: v for k, v in (("bos_token_id", sp.bos_id()), ("eos_token_id", sp.eos_id()), ("pad_token_id", None)) if v is None or v >= 0}
    hf = LlamaForCausalLM(llama_config(model.cfg, **special))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise TrainError(f"weights do not map onto Llama: missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf.tie_weights()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the middle of our output
    try:
        hf.save_pretrained(str(dest), safe_serialization=True)
    finally:
        hf_logging.enable_progress_bar()
    copied = []
    if tok.is_dir():
        for name in TOKENIZER_FILES:
            if (tok / name).is_file():
                shutil.copy2(tok / name, dest / name)
                copied.append(name)
    if not copied:
        raise TrainError("tokenizer files not found; the export has weights only", where=str(tok), hint="pass tokenizer_dir=<out>/tokenizer")
    if card:
        ckpt = Path(checkpoint)
        run_dir = ckpt if (ckpt / "checkpoint").is_dir() else ckpt.parent
        (dest / "README.md").write_text(model_card(state, model, run_dir), encoding="utf-8")
    return dest


# ------------------------------------------------------------------ a published model, continued
ORIGIN_EXTRAS = ("generation_config.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model")


def export_published(model: Transformer, state: dict, checkpoint: Path, dest: Path, tok: Path, card: bool = True) -> Path:
    """A model that started from a published checkpoint, saved in that checkpoint's own format:
    its config.json (same architecture and model_type), weights under its names and in its
    dtype, its tokenizer and generation files, its license files, and a card that keeps the
    original's license and facts and adds ours."""
    from huggingface_hub import save_torch_state_dict

    origin = state["init_from"]
    config = dict(origin["config"])
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(config.get("dtype") or config.get("torch_dtype"), torch.float32)
    weights = {(k if k == "lm_head.weight" else f"model.{k}"): v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    dest.mkdir(parents=True, exist_ok=True)
    for old in list(dest.glob("model*.safetensors")) + list(dest.glob("model.safetensors.index.json")):
        old.unlink()  # a re-export must not leave shards of an earlier one
    save_torch_state_dict(weights, str(dest), max_shard_size="5GB")
    (dest / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    src = Path(origin.get("path") or "")
    copied = []
    for name in TOKENIZER_FILES:  # the tokenizer the shards were made with (the model's own, checked at init)
        if (tok / name).is_file():
            shutil.copy2(tok / name, dest / name)
            copied.append(name)
    if not copied:
        raise TrainError("tokenizer files not found; the export has weights only", where=str(tok), hint="keep the shards' tokenizer/ folder")
    facts = origin.get("card") or {}
    if src.is_dir():
        for name in ORIGIN_EXTRAS + tuple(facts.get("license_files") or ()):
            if (src / name).is_file() and not (dest / name).exists():
                shutil.copy2(src / name, dest / name)
    if card:
        run_dir = checkpoint if (checkpoint / "checkpoint").is_dir() else checkpoint.parent
        (dest / "README.md").write_text(model_card(state, model, run_dir), encoding="utf-8")
    return dest


# ------------------------------------------------------------------------------------ model card
def _read(path: Path, kind: str):
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text) if kind == "yaml" else json.loads(text)


def _assess_lock(lock: dict) -> dict | None:
    """The license engine's verdict for a run that predates ``licenses.json``: the lock minus
    what ``pipeline run`` added, loaded as a manifest and assessed."""
    try:
        from pipeline.audit.licenses import assess
        from pipeline.run.load import load_manifest
    except ImportError:
        return None
    from pipeline.common.errors import PipelineError

    doc = {k: v for k, v in lock.items() if k not in ("pipeline_version", "packages")}
    doc["sources"] = [{k: v for k, v in src.items() if k != "resolved"} for src in lock.get("sources", [])]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
        try:
            return assess(load_manifest(path)).to_dict()
        except (PipelineError, ValueError, TypeError):
            return None  # fall back to the plain conjunction of the sources' licenses


def _version(src: dict, prov: dict) -> str:
    """What pins the source's content: dump date, hub revision, file hashes."""
    resolved = (prov.get("resolved") or src.get("resolved") or {}).get("identity") or {}
    if resolved.get("date"):
        return f"dump {resolved['date']}"
    if resolved.get("revision"):
        return f"revision {resolved['revision']}"
    files = resolved.get("files") or []
    if files:
        first = files[0].get("sha256", "")[:12]
        return f"{len(files)} file(s), sha256 {first}…" if len(files) > 1 else f"sha256 {first}…"
    return resolved.get("sha256", "")[:12] or "-"


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value or [])


def model_card(state: dict, model: Transformer, run_dir: Path) -> str:
    """A Hugging Face model card: YAML metadata (license, datasets, language, library) and a
    body listing each training source with its license and version, and the training facts.
    Everything taken from the manifest is escaped for Markdown/HTML."""
    from huggingface_hub import ModelCardData

    from pipeline.audit.attribution import md_code, md_escape, md_link
    from pipeline.audit.cards import hf_license

    data_out = Path(state["data"]["tokens_dir"]).parent
    lock = _read(data_out / "manifest.lock.yaml", "yaml") or {}
    prov = _read(data_out / "provenance.json", "json") or {}
    index = _read(Path(state["data"]["tokens_dir"]) / "index.json", "json") or {}
    metrics = _read(run_dir / "metrics.json", "json") or {}
    sources = lock.get("sources") or []
    assessed = _read(data_out / "licenses.json", "json") or (_assess_lock(lock) if lock else None)
    plain = " AND ".join(dict.fromkeys(s["license"] for s in sources if s.get("license")))
    expression = assessed["output_license"] if assessed and assessed.get("output_license") not in (None, "NOASSERTION") else plain

    languages = sorted({lang for s in sources for lang in s.get("languages") or []})
    for stage in lock.get("stages") or []:  # a language filter says what is left
        if stage.get("stage") == "lid_filter":
            languages = sorted(set(languages) | set(stage.get("params", {}).get("keep") or []))
    origin = state.get("init_from")
    base = (origin or {}).get("card") or {}
    datasets = [s["dataset"] if s.get("kind") == "hf" and s.get("dataset") else s["name"] for s in sources] or None
    if origin:  # the base model's license governs its weights: keep its terms, add our data's below
        lic = {k: base[k] for k in ("license", "license_name", "license_link") if base.get(k)} or {"license": "unknown"}
        tags = list(dict.fromkeys([*_as_list(base.get("tags")), "grist", "continued-pretraining"]))
        data = ModelCardData(**lic, library_name="transformers", pipeline_tag="text-generation", tags=tags, datasets=datasets,
                             language=sorted(set(languages) | set(_as_list(base.get("language")))) or None, base_model=origin["source"])
    else:
        data = ModelCardData(
            **(hf_license(expression, sources) if expression else {"license": "unknown"}),
            library_name="transformers",
            pipeline_tag="text-generation",
            tags=["grist", "llama", "causal-lm", "pretrained-from-scratch"],
            datasets=datasets,
            language=languages or None,
        )
    cfg, train = model.cfg, state.get("train", {})
    name = lock.get("name") or data_out.name
    if origin:
        L = [
            f"# {md_escape(origin['source'])}, continued on {md_escape(name)} ({model.num_params() / 1e6:.1f} M parameters)",
            "",
            f"{md_code(origin['source'])} ({md_escape(origin.get('model_type', '?'))}) further pretrained by `pipeline train --init-from` (grist) "
            f"on the output of the run {md_code(name)}. It loads with `AutoModelForCausalLM.from_pretrained`; the tokenizer is included.",
            "",
            "## Base model",
            "",
            "| | |",
            "|---|---|",
            f"| model | {md_code(origin['source'])} |",
            f"| revision | {md_escape(origin.get('commit') or origin.get('revision') or 'local folder')} |",
            f"| files (sha256 of the folder's config, weights and tokenizer) | {len(origin.get('files') or {})} |",
            f"| license | {md_code(base.get('license', 'unknown'))}" + (f" ({md_escape(str(base['license_name']))})" if base.get("license_name") else "") + " |",
        ]
        if base.get("license_link"):
            L.append(f"| license link | {md_link(str(base['license_link']), str(base['license_link']))} |")
        if base.get("license_files"):
            L.append(f"| license files (copied here) | {md_escape(', '.join(base['license_files']))} |")
        L += ["", "The base model's license and terms apply to these weights; the training data below adds its own.", "", "## Training data", ""]
    else:
        L = [
            f"# {md_escape(name)}: {md_escape(train.get('preset', 'custom'))} ({model.num_params() / 1e6:.1f} M parameters)",
            "",
            f"A Llama-style decoder-only language model pretrained from scratch by `pipeline train` (grist) on the "
            f"output of the run {md_code(name)}. It loads with `AutoModelForCausalLM.from_pretrained`; the tokenizer is included.",
            "",
            "## Training data",
            "",
        ]
    if sources:
        L += ["| source | kind | license | version | homepage |", "|---|---|---|---|---|"]
        for s in sources:
            p = (prov.get("sources") or {}).get(s["name"], {})
            home = md_link(s["homepage"], s["homepage"]) if s.get("homepage") else "-"
            L.append(f"| {md_escape(s['name'])} | {md_escape(s.get('kind', ''))} | {md_code(s.get('license', '?'))} | {md_escape(_version(s, p))} | {home} |")
        L += ["", f"License of the training data: {md_code(expression)}"
              + (" (assessed by grist's license engine)." if assessed else " (the conjunction of the sources' licenses)."),
              "Whether and how these terms bind the model weights is not settled by this card: check with the licenses themselves."]
        obligations = (assessed or {}).get("obligations") or []
        if obligations:
            L += ["", "Obligations that come with the data:", ""] + [f"- {md_escape(o)}" for o in obligations]
    else:
        L.append("The shards' run left no `manifest.lock.yaml`: the training data and its licenses are unknown.")
    if index:
        L += ["", f"Tokens: {index.get('splits', {}).get('train', {}).get('tokens', 0):,} training and "
              f"{index.get('splits', {}).get('validation', {}).get('tokens', 0):,} validation tokens, "
              f"{index.get('vocab_size', cfg.vocab_size):,}-token vocabulary, sequences of {index.get('seq_len', '?')}."]
    facts = [
        ("preset", md_code(train.get("preset", "?")) if not origin else f"architecture of {md_code(origin['source'])}"),
        ("parameters", f"{model.num_params():,} (embeddings {'tied' if cfg.tie_embeddings else 'untied'})"),
        ("layers / width / heads / KV heads / SwiGLU hidden", f"{cfg.n_layers} / {cfg.dim} / {cfg.n_heads} / {cfg.kv_heads} / {cfg.ffn_dim}"),
        ("context", f"{state.get('T', cfg.max_seq_len)} tokens (rotary, theta {cfg.rope_theta:g})"),
        ("vocabulary", f"{cfg.vocab_size:,}"),
        ("optimizer steps", f"{state.get('step', 0):,}"),
        ("tokens seen", f"{state.get('tokens', 0):,}"),
        ("learning rate", f"{train.get('lr')} peak, warmup {train.get('warmup_steps')} steps, cosine"),
    ]
    if metrics.get("step") == state.get("step") and "val_loss" in metrics:
        facts.append(("final validation loss", f"{metrics['val_loss']:.4f} nats/token (perplexity {metrics['val_ppl']:.2f})"))
    if metrics.get("device"):
        facts.append(("hardware", md_escape(f"{metrics['device']} x {metrics.get('world_size', 1)}" + (", bf16" if metrics.get("bf16") else ", float32"))))
    L += ["", "## Training", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts]
    L += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'tok = AutoTokenizer.from_pretrained("PATH")',
        'model = AutoModelForCausalLM.from_pretrained("PATH")',
        "```",
        "",
        "## Limitations",
        "",
        "A small research model: it continues text in the style of its training data, with no instruction tuning, "
        "no safety filtering of its outputs and no evaluation beyond the validation loss above."
        if not origin else
        "Continued pretraining shifts the base model toward its new data; its earlier abilities, safety tuning and "
        "evaluations do not carry over unmeasured. No evaluation beyond the validation loss above.",
    ]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(L) + "\n"
