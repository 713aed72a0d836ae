"""Pretraining on the pipeline's token shards: a small Llama-style model (model.py), a
memory-mapped batch loader (data.py), configuration from manifests and flags (config.py), a
resumable training loop with DDP (loop.py), sampling (generate.py) and a Hugging Face export with
a model card (export.py).  See docs/training.md."""

from __future__ import annotations

from pipeline.common.errors import PipelineError


class TrainError(PipelineError):
    """Training could not start or continue (data, checkpoint, configuration)."""


__all__ = ["TrainError"]
