"""grist: a dataset curation pipeline for language-model pretraining.

Orchestration lives here (manifest, DAG, runner, executors, provenance, CLI);
the stages themselves live in the top-level ``stages`` package.
"""

__version__ = "0.1.0"
