"""One error type with three parts, so every failure tells the user what, where and what to do."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the user can act on.

    ``what`` says what went wrong, ``where`` names the file / URL / node / field,
    ``hint`` says what to do about it.  Picklable so it survives process pools.
    """

    def __init__(self, what: str, where: str | None = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(what, where, hint)

    def __str__(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(self.what)
        if self.hint:
            parts.append(f"\n  -> {self.hint}")
        return "".join(parts)


class ManifestError(PipelineError):
    """The manifest is invalid (YAML syntax, schema, DAG shape, overrides)."""


class SourceError(PipelineError):
    """A source could not be resolved, downloaded or verified."""


class ChecksumError(SourceError):
    """A downloaded file does not match its published checksum."""


class StageError(PipelineError):
    """A stage failed on its input."""


class LicenseError(PipelineError):
    """The manifest's licenses conflict (or one is unknown): refused before anything is downloaded.

    ``conflicts`` holds each conflict as ``{"rule", "sources", "message"}``.
    """

    def __init__(self, what: str, where: str | None = None, hint: str | None = None, conflicts: list[dict] | None = None):
        super().__init__(what, where, hint)
        self.conflicts = list(conflicts or [])

    def __reduce__(self):  # keep the conflicts when pickled across process pools
        return (type(self), (self.what, self.where, self.hint, self.conflicts))
