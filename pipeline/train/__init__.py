"""Pretraining on the pipeline's token shards: a small Llama-style model, a memory-mapped batch
loader, a resumable training loop and a Hugging Face export.  See docs/training.md."""

from __future__ import annotations

from pipeline.errors import PipelineError


class TrainError(PipelineError):
    """Training could not start or continue (data, checkpoint, configuration)."""


__all__ = ["TrainError"]
