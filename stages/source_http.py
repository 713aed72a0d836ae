"""Source ``http``: one file at a URL, pinned by its sha256, read like a local file.

The download is cached (keyed by the expected sha256), resumable and verified; a file whose
digest differs is quarantined and the run stops.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pipeline.core.stage import NodeContext, RunContext, SourceStage
from pipeline.io import http
from pipeline.io.urls import redact_url
from stages.source_local import RecordFields, read_files


class HttpConfig(RecordFields):
    kind: Literal["http"]
    url: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError(f"url must be http(s), got {value!r}")
        return value

    @model_validator(mode="after")
    def _needs_checksum(self):
        if self.sha256 is None and self.checksum == "require":
            raise ValueError("an http source needs 'sha256' (the expected digest), or checksum: verify / skip to go without")
        return self


class HttpSource(SourceStage):
    name = "http"
    version = "1"
    Config = HttpConfig
    code_deps = ("pipeline.io.formats.records", "pipeline.io.http", "stages.source_local")

    def resolve(self, rctx: RunContext) -> dict:
        cfg: HttpConfig = self.params
        key = cfg.sha256 or hashlib.sha256(cfg.url.encode()).hexdigest()
        return {"identity": {"sha256": cfg.sha256, "url": None if cfg.sha256 else redact_url(cfg.url)}, "url": redact_url(cfg.url), "cache_key": key}

    def run(self, ctx: NodeContext) -> dict:
        cfg: HttpConfig = self.params
        name = Path(urlsplit(cfg.url).path).name or "download"
        dest = ctx.run.cache_dir / "http" / ctx.resolved["cache_key"][:16] / name
        expected = {"sha256": cfg.sha256} if cfg.sha256 and cfg.checksum != "skip" else {}
        record = http.download(cfg.url, dest, cache_root=ctx.run.cache_dir, expected=expected)
        ctx.provenance["downloads"] = [record.to_json()]
        read_files(self, ctx, [Path(record.path)])
        return {"files": 1}
