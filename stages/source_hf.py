"""Source ``hf``: a dataset on the Hugging Face hub (or a local dataset folder) through ``datasets``.

Streams rows (never the whole dataset in memory) and writes parts of ``rows_per_partition``
rows. A hub dataset must pin ``revision`` (a commit sha or tag) so a run can be repeated.
A token, when needed, comes from the environment (HF_TOKEN) and is never recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.common import storage
from pipeline.common.errors import SourceError
from pipeline.core.manifest import SourceConfig
from pipeline.core.stage import DOC_SCHEMA, NodeContext, RunContext, SourceStage, removed_rows

PACKAGED_BUILDERS = {"json", "csv", "parquet", "arrow", "text", "webdataset"}


class HFConfig(SourceConfig):
    kind: Literal["hf"]
    dataset: str = Field(description="hub id (org/name) or a local folder")
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: list[str] | None = None
    text_field: str = "text"
    id_field: str | None = None
    title_field: str | None = None
    url_field: str | None = None
    max_docs: int | None = Field(None, gt=0)
    rows_per_partition: int = Field(50_000, gt=0)

    @model_validator(mode="after")
    def _pinned(self):
        local = Path(self.dataset).exists() or self.dataset.startswith((".", "/"))
        packaged = self.dataset in PACKAGED_BUILDERS and bool(self.data_files)  # files given: nothing on the hub
        if not (local or packaged) and not self.revision:
            raise ValueError("a hub dataset needs 'revision' (a commit sha or tag) so the run can be repeated")
        return self


class HFSource(SourceStage):
    name = "hf"
    version = "1"
    Config = HFConfig

    def resolve(self, rctx: RunContext) -> dict:
        cfg: HFConfig = self.params
        ident = {"dataset": cfg.dataset, "config": cfg.config, "split": cfg.split, "revision": cfg.revision, "data_files": cfg.data_files, "max_docs": cfg.max_docs}
        return {"identity": ident}

    def run(self, ctx: NodeContext) -> dict:
        import datasets

        cfg: HFConfig = self.params
        try:
            stream = datasets.load_dataset(cfg.dataset, cfg.config, split=cfg.split, revision=cfg.revision, data_files=cfg.data_files, streaming=True)
        except Exception as exc:
            raise SourceError(f"cannot open the dataset ({type(exc).__name__}: {exc})", where=f"hf:{cfg.dataset}", hint="check the dataset id, config, split and revision, and network access to the hub") from None
        index, rows, errors, n = 0, [], [], 0
        for rec in stream:
            if cfg.max_docs is not None and n >= cfg.max_docs:
                break
            rows.append(rec) if isinstance(rec.get(cfg.text_field), str) else errors.append(n)
            n += 1
            if len(rows) + len(errors) >= cfg.rows_per_partition:
                self._write(ctx, index, rows, errors, n)
                index, rows, errors = index + 1, [], []
        if rows or errors or index == 0:
            self._write(ctx, index, rows, errors, n)
        return {"partitions_written": index + 1}

    def _write(self, ctx: NodeContext, index: int, rows: list[dict], errors: list[int], n: int) -> None:
        cfg: HFConfig = self.params
        marker = ctx.dir / "_tasks" / f"part-{index:05d}.json"
        if marker.exists():
            return
        start = n - len(rows) - len(errors)
        ids = [f"{cfg.name}/{r[cfg.id_field]}" if cfg.id_field else f"{cfg.name}/{start + k}" for k, r in enumerate(rows)]
        table = pa.table(
            {
                "id": ids,
                "source": [cfg.name] * len(rows),
                "license": [cfg.license] * len(rows),
                "title": [str(r.get(cfg.title_field)) if cfg.title_field else None for r in rows],
                "url": [str(r.get(cfg.url_field)) if cfg.url_field else None for r in rows],
                "timestamp": [None] * len(rows),
                "revision_id": [None] * len(rows),
                "text": [r[cfg.text_field] for r in rows],
            },
            schema=DOC_SCHEMA,
        )
        err = pa.table({"id": [f"{cfg.name}/{i}" for i in errors], "source": [cfg.name] * len(errors), "title": [None] * len(errors), "text": [None] * len(errors)})
        storage.write_parquet(table, ctx.part_path(index))
        storage.write_parquet(removed_rows(err, self.node, ["parse:missing-text-field"] * len(errors)), ctx.removed_path(index))
        stats = {"in": len(rows) + len(errors), "out": len(rows), "removed": len(errors), "removed_by_reason": {"parse:missing-text-field": len(errors)} if errors else {}}
        storage.atomic_write_json(marker, stats)
