"""LoRA fine-tuning with ``peft``: low-rank adapters in the attention and MLP projections of our
``Transformer``, the rest frozen; merged back into plain weights before saving, so a LoRA run
saves, loads, generates and exports exactly like a full fine-tuning.

The model joins q/k/v (and gate/up) into one matmul for speed; that matmul would read the
Linear weights directly and skip the adapters, so ``apply`` turns the joining off."""

from __future__ import annotations

import torch.nn as nn

from pipeline.train import TrainError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets: list[str] | None = None) -> nn.Module:
    """Inject adapters into ``model`` in place; only they stay trainable. Returns the model."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise TrainError(f"LoRA needs peft ({exc})", hint="pip install peft") from None
    for m in model.modules():
        m.fuse = False  # model.fused(): separate matmuls, so the adapters are applied
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets or DEFAULT_TARGETS), bias="none")
    try:
        model = inject_adapter_in_model(config, model)
    except ValueError as exc:  # no module matched the targets
        raise TrainError(f"LoRA: {exc}", where="lora_targets", hint=f"target some of: {', '.join(DEFAULT_TARGETS)}") from None
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    return model


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base Linear (W + B·A·alpha/r) and put the plain Linear back:
    the state dict has the original names again."""
    from peft.tuners.lora.layer import LoraLayer

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
    for m in model.modules():
        if hasattr(m, "fuse"):
            m.fuse = True
    model.requires_grad_(True)
    return model


def trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
