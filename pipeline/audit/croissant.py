"""``<out>/croissant.json``: a Croissant 1.0 (MLCommons, JSON-LD on schema.org/Dataset)
description of the run's output.

The JSON-LD is written as a plain dict (no runtime dependency); ``validate`` checks it with the
``mlcroissant`` package (extra ``cards``), which parses the file locally without fetching
anything. Files: one ``cr:FileObject`` per Arrow shard (sha256, size) plus a ``cr:FileSet``
per folder of shards, the source of a ``cr:RecordSet`` whose fields are typed from the Arrow
schema. Token rows' ``doc_ids`` field ``references`` the documents' ``id``: the lineage of a
token sequence is part of the description.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from pipeline.common.errors import PipelineError
from pipeline.common.storage import file_digests

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
ARROW_STREAM = "application/vnd.apache.arrow.stream"  # IANA media type of the Arrow IPC stream format

# The Croissant 1.0 @context (as the spec and mlcroissant write it) plus PROV-O for lineage.
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "prov": "http://www.w3.org/ns/prov#",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}


class CroissantError(PipelineError):
    """croissant.json does not validate."""


def data_type(typ: pa.DataType) -> tuple[str, bool]:
    """Croissant data type of an Arrow type, and whether the field is repeated (a list)."""
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return data_type(typ.value_type)[0], True
    if pa.types.is_boolean(typ):
        return "sc:Boolean", False
    if pa.types.is_integer(typ):
        return "sc:Integer", False
    if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return "sc:Float", False
    if pa.types.is_timestamp(typ):
        return "sc:DateTime", False
    if pa.types.is_date(typ):
        return "sc:Date", False
    return "sc:Text", False


def file_objects(out_dir: Path, files: list[Path]) -> list[dict]:
    return [
        {
            "@type": "cr:FileObject",
            "@id": f.relative_to(out_dir).as_posix(),
            "name": f.relative_to(out_dir).as_posix(),
            "contentUrl": f.relative_to(out_dir).as_posix(),
            "contentSize": f"{f.stat().st_size} B",
            "encodingFormat": ARROW_STREAM,
            "sha256": file_digests(f)["sha256"],
        }
        for f in files
    ]


def record_set(rs_id: str, description: str, file_set: str, schema: pa.Schema, descriptions: dict[str, str], *, key: str | None = None, references: dict[str, str] | None = None) -> dict:
    fields = []
    for fld in schema:
        dtype, repeated = data_type(fld.type)
        entry = {
            "@type": "cr:Field",
            "@id": f"{rs_id}/{fld.name}",
            "name": fld.name,
            "description": descriptions.get(fld.name) or f"{fld.type} column",
            "dataType": dtype,
            "source": {"fileSet": {"@id": file_set}, "extract": {"column": fld.name}},
        }
        if repeated:
            entry["repeated"] = True
        if references and fld.name in references:
            entry["references"] = {"field": {"@id": references[fld.name]}}
        fields.append(entry)
    out = {"@type": "cr:RecordSet", "@id": rs_id, "name": rs_id, "description": description, "field": fields}
    if key:
        out["key"] = {"@id": f"{rs_id}/{key}"}
    return out


def build(meta: dict, out_dir: Path, data_files: list[Path], data_schema: pa.Schema, field_descriptions: dict[str, str], tokens: dict | None = None) -> dict:
    """The Croissant document. ``meta``: name, description, license (URLs), url, creator,
    datePublished, citeAs, inLanguage, keywords, wasDerivedFrom (source URLs); ``tokens``:
    ``{split: (files, schema)}`` for packed token shards, when the run has them."""
    distribution = file_objects(out_dir, data_files)
    distribution.append({"@type": "cr:FileSet", "@id": "data-shards", "name": "data-shards", "description": "Arrow IPC stream shards of the documents (datasets.load_from_disk format)", "encodingFormat": ARROW_STREAM, "includes": "data/data-*-of-*.arrow"})
    record_sets = [record_set("documents", "One curated document per record.", "data-shards", data_schema, field_descriptions, key="id" if "id" in data_schema.names else None)]
    for split, (files, schema) in sorted((tokens or {}).items()):
        fs = f"tokens-{split}-shards"
        distribution += file_objects(out_dir, files)
        distribution.append({"@type": "cr:FileSet", "@id": fs, "name": fs, "description": f"Arrow IPC stream shards of the packed token rows, {split} split", "encodingFormat": ARROW_STREAM, "includes": f"tokens/{split}/data-*-of-*.arrow"})
        record_sets.append(
            record_set(
                f"tokens-{split}",
                f"Packed token rows of the {split} split; doc_ids are the ids of the documents whose tokens the row holds.",
                fs,
                schema,
                {"input_ids": "token ids of the row (EOS after each document)", "doc_ids": "ids of the documents with tokens in the row, in stream order", "doc_starts": "offset in the row of each document's first token here (0 when continued from the previous row)"},
                references={"doc_ids": "documents/id"} if "id" in data_schema.names else None,
            )
        )
    doc = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": meta["name"],
        "description": meta["description"],
        "license": meta["license"],
        "url": meta["url"],
        "creator": meta["creator"],
    }
    for key in ("datePublished", "version", "citeAs", "inLanguage", "keywords"):
        if meta.get(key):
            doc[key] = meta[key]
    if meta.get("wasDerivedFrom"):
        doc["prov:wasDerivedFrom"] = [{"@id": u} for u in meta["wasDerivedFrom"]]
    doc["distribution"] = distribution
    doc["recordSet"] = record_sets
    return doc


def validate(path: Path) -> list[str]:
    """Validate with ``mlcroissant`` (local parse, no network). Returns its warnings; raises
    ``CroissantError`` on errors, ``ImportError`` when mlcroissant is not installed."""
    import mlcroissant as mlc

    try:
        ds = mlc.Dataset(jsonld=str(path))
    except mlc.ValidationError as exc:
        raise CroissantError(f"croissant.json does not validate: {exc}", where=str(path), hint="this is a bug in pipeline/audit/croissant.py: report it with the file") from None
    return list(ds.metadata.ctx.issues.warnings)


def dumps(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
