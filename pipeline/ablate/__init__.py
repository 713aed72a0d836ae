"""``pipeline ablate``: what each curation choice buys. Variants of one manifest (``--set``
overrides) are curated with shared nodes, tokenized with one tokenizer, trained with the same
preset, seeds and token budget, and scored on the same held-out text (docs/ablations.md).

``spec.py`` reads ``--variant``; ``evalsets.py`` loads eval sets and scores a model;
``run.py`` runs it all and writes ``DIR/ablation.json`` (the page: ``pipeline.audit.report.ablation``)."""

from __future__ import annotations

from pipeline.ablate.spec import AblateError, Variant, VariantSpecError, parse_variants

__all__ = ["AblateError", "Variant", "VariantSpecError", "parse_variants"]
