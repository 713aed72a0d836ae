"""``load_manifest``: the manifest schema (``pipeline.core.manifest``) bound to the stages and
sources registered in ``stages/__init__.py``. Everything that reads a manifest calls this."""

from __future__ import annotations

from pathlib import Path

import stages
from pipeline.core.manifest import Manifest, parse_manifest


def load_manifest(path: str | Path, overrides: list[str] | None = None) -> Manifest:
    """Read ``path`` (YAML, ``safe_load``), apply ``--set`` overrides, validate every source's
    config and every stage's params; errors are ``ManifestError``s naming file and field."""
    return parse_manifest(path, overrides, stages)
