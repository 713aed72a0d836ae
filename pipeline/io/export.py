"""Write a node's parts as a Hugging Face ``datasets`` directory (``load_from_disk`` reads it).

We write the format ourselves rather than through ``Dataset.save_to_disk`` so that the
export streams (one record batch at a time, never the whole corpus in RAM) and is
byte-for-byte deterministic: the same parts always give the same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common import storage

DEFAULT_MAX_SHARD_BYTES = 512 << 20


def _target_schema(parts: list[Path]) -> pa.Schema:
    from datasets import Features

    schema = pa.unify_schemas([pq.read_schema(p).remove_metadata() for p in parts]) if parts else pa.schema([("id", pa.string()), ("text", pa.string())])
    return Features.from_arrow_schema(schema).arrow_schema


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Parts written by different sources may order or type columns differently: align them."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    cols = [batch.column(name).cast(field.type) if name in batch.schema.names else pa.nulls(batch.num_rows, field.type) for name, field in zip(schema.names, schema)]
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def write_dataset_metadata(folder: Path, schema: pa.Schema, shard_names: list[str], fingerprint: str, info: dict | None = None) -> None:
    """``dataset_info.json`` and ``state.json``: what makes a folder of Arrow shards a ``datasets`` Dataset."""
    info = info or {}
    dataset_info = {
        "citation": info.get("citation", ""),
        "description": info.get("description", ""),
        "features": json.loads(schema.metadata[b"huggingface"])["info"]["features"],
        "homepage": info.get("homepage", ""),
        "license": info.get("license", ""),
    }
    state = {
        "_data_files": [{"filename": n} for n in shard_names],
        "_fingerprint": fingerprint[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    storage.atomic_write_text(folder / "dataset_info.json", json.dumps(dataset_info, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    storage.atomic_write_text(folder / "state.json", json.dumps(state, indent=2, sort_keys=True) + "\n")


def export_dataset(parts: list[Path], dest: Path, fingerprint: str, *, info: dict | None = None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> dict:
    """Export ``parts`` (in order) to ``dest``; atomic: a half-written export is never at ``dest``."""
    marker = dest / ".grist_export.json"
    if marker.exists() and storage.read_json(marker).get("fingerprint") == fingerprint:
        return storage.read_json(marker)
    tmp = dest.with_name(f".{dest.name}.tmp")
    storage.remove_tree(tmp)
    tmp.mkdir(parents=True)
    schema = _target_schema(parts)
    shards: list[Path] = []
    writer = None
    shard_bytes = rows = 0
    try:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=2048):
                if batch.num_rows == 0:
                    continue
                batch = _conform(batch, schema)
                if writer is None or shard_bytes >= max_shard_bytes:
                    if writer is not None:
                        writer.close()
                    shards.append(tmp / f"shard-{len(shards):05d}.arrow")
                    writer = pa.ipc.new_stream(str(shards[-1]), schema)
                    shard_bytes = 0
                writer.write_batch(batch)
                shard_bytes += batch.nbytes
                rows += batch.num_rows
        if writer is None:  # empty dataset: one shard holding just the schema
            shards.append(tmp / "shard-00000.arrow")
            pa.ipc.new_stream(str(shards[-1]), schema).close()
        else:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    names = []
    for i, shard in enumerate(shards):
        name = f"data-{i:05d}-of-{len(shards):05d}.arrow"
        os.replace(shard, tmp / name)
        names.append(name)
    write_dataset_metadata(tmp, schema, names, fingerprint, info)
    summary = {"fingerprint": fingerprint, "rows": rows, "shards": names, "bytes": sum((tmp / n).stat().st_size for n in names)}
    storage.atomic_write_json(tmp / ".grist_export.json", summary)
    storage.remove_tree(dest)
    os.replace(tmp, dest)
    return summary


def publish_dir(src: Path, dest: Path, fingerprint: str) -> None:
    """Make ``dest`` a copy of a node's artifact folder ``src`` (hard links when possible, so a
    large token directory costs no extra space). Atomic, and skipped when already up to date."""
    import shutil

    marker = dest / ".grist_publish.json"
    if marker.exists() and storage.read_json(marker).get("fingerprint") == fingerprint:
        return
    tmp = dest.with_name(f".{dest.name}.tmp")
    storage.remove_tree(tmp)

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, tmp, copy_function=link_or_copy)
    # relative to the run's output dir: two runs of one manifest publish the same bytes
    storage.atomic_write_json(tmp / ".grist_publish.json", {"fingerprint": fingerprint, "from": os.path.relpath(src, dest.parent)})
    storage.remove_tree(dest)
    os.replace(tmp, dest)
