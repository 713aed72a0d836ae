"""The manifest: a YAML file declaring sources (with provenance and licenses) and stages.

Loading is three steps, each with errors that name the file and the field path:
  1. ``yaml.safe_load`` (syntax errors carry line and column);
  2. ``--set dotted.path=value`` overrides applied to the raw mapping
     (``sources.zhwiki.mirror`` addresses a source by its name);
  3. typed validation: the manifest schema here, each source against its kind's
     config model and each stage's ``params`` against the stage's ``Params`` model.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.common.errors import ManifestError
from pipeline.core.dag import build_dag, shape_problems
from pipeline.core.spdx import validate_spdx

NAME_RE = r"^[A-Za-z][A-Za-z0-9_.-]*$"


class LicenseOverride(BaseModel):
    """How to treat a license the engine does not know (``LicenseRef-*`` or an SPDX id outside its table).

    The justification is mandatory: it is kept in the license assessment and shown on the dataset card.
    """

    model_config = ConfigDict(extra="forbid")

    use: Literal["commercial", "non-commercial", "academic-only"]
    attribution: bool = True
    share_alike: str | None = None  # a label; an overridden share-alike license is compatible only with itself
    no_derivatives: bool = False
    name: str | None = None
    url: str | None = None
    justification: str

    @field_validator("justification")
    @classmethod
    def _justified(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value) < 20:
            raise ValueError(
                "write at least 20 characters saying why this classification is right "
                "(who granted what, where the terms are published)"
            )
        return value

    @field_validator("share_alike")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None


class SourceConfig(BaseModel):
    """Fields every source has, whatever its kind. Each kind subclasses this with its location fields."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(pattern=NAME_RE)
    kind: str
    license: str
    # Classifies licenses the engine does not know; see docs/licenses.md.
    license_override: LicenseOverride | None = None
    license_url: str | None = None
    attribution: str | None = None
    homepage: str | None = None
    citation: str | None = None
    languages: list[str] = Field(default_factory=list)
    description: str = ""
    # require: fail when no published checksum exists; verify: check when one exists; skip: never check.
    checksum: Literal["require", "verify", "skip"] = "require"

    @field_validator("license")
    @classmethod
    def _license_is_spdx(cls, value: str) -> str:
        return validate_spdx(value)


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(pattern=NAME_RE)
    stage: str
    inputs: list[str] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ManifestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(pattern=NAME_RE)
    description: str = ""
    cache_dir: str | None = None
    # Checked against the sources' licenses (pipeline/audit/licenses.py): e.g. commercial refuses non-commercial sources.
    intended_use: Literal["commercial", "non-commercial", "research", "academic"] | None = None
    sources: list[dict[str, Any]] = Field(min_length=1)
    stages: list[StageSpec] = Field(default_factory=list)
    output: str | None = None
    # A run that ends with no documents (a source that yields none, filters that remove all) is an
    # error unless this is true.
    allow_empty: bool = False
    # What a finished run keeps: every node's parts (all), or only what is published plus ledgers,
    # statistics and summaries (outputs; pipeline/run/retention.py).
    retain: Literal["all", "outputs"] = "all"
    # `pipeline train` settings (pretraining and fine-tuning); CLI flags win over these.
    train: dict[str, Any] = Field(default_factory=dict)
    finetune: dict[str, Any] = Field(default_factory=dict)


class Manifest:
    """A validated manifest: typed sources, stages with typed params, and where it came from."""

    def __init__(self, path: Path, raw: dict, model: ManifestModel, sources: list[SourceConfig], stage_params: list[BaseModel]):
        self.path = path
        self.raw = raw
        self.name = model.name
        self.description = model.description
        self.cache_dir = model.cache_dir
        self.intended_use = model.intended_use
        self.sources = sources
        self.stages = model.stages
        self.stage_params = stage_params
        self.output = model.output
        self.allow_empty = model.allow_empty
        self.retain = model.retain
        self.train = model.train
        self.finetune = model.finetune

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)

    def resolved_dict(self) -> dict:
        """The manifest after overrides and defaults: what the lock file records."""
        return {
            "name": self.name,
            "description": self.description,
            "cache_dir": self.cache_dir,
            "intended_use": self.intended_use,
            "sources": [s.model_dump(mode="json") for s in self.sources],
            "stages": [
                {**spec.model_dump(mode="json", exclude={"params"}), "params": params.model_dump(mode="json")}
                for spec, params in zip(self.stages, self.stage_params)
            ],
            "output": self.output,
            "train": self.train,
            "finetune": self.finetune,
        }


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_lines(err: ValidationError, prefix: tuple = ()) -> list[str]:
    """One ``field.path: message`` line per pydantic error."""
    lines = []
    for e in err.errors():
        loc = format_loc(prefix + tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/manifest.md for the allowed fields)"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {e.get('input')!r}"
        lines.append(f"{loc}: {msg}")
    return lines


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ManifestError(f"override {item!r} is not of the form dotted.path=value", where="--set")
    path, value = item.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ManifestError(f"override {item!r} has an empty path", where="--set")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return keys, parsed


def apply_override(raw: dict, keys: list[str], value: Any) -> None:
    """Set ``value`` at ``keys`` in the raw manifest; list items are addressed by ``name`` or index."""
    node: Any = raw
    walked: list[str] = []
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            idx = _list_index(node, key, walked)
            if last:
                node[idx] = value
                return
            node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = value
                return
            if key not in node or node[key] is None:
                node[key] = {}
            node = node[key]
        else:
            raise ManifestError(
                f"cannot set {'.'.join(keys)}: {'.'.join(walked) or 'the manifest'} is a {type(node).__name__}, not a mapping or list",
                where="--set",
            )
        walked.append(key)


def _list_index(items: list, key: str, walked: list[str]) -> int:
    for idx, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return idx
    if re.fullmatch(r"\d+", key) and int(key) < len(items):
        return int(key)
    names = [str(it.get("name")) for it in items if isinstance(it, dict)]
    raise ManifestError(
        f"no entry named {key!r} in {'.'.join(walked)}",
        where="--set",
        hint=f"known names: {', '.join(names) or '(none)'}; or use an index 0..{len(items) - 1}",
    )


class Registry(Protocol):
    """What the loader needs to know of the concrete stages (the ``stages`` package is one):
    it lives above this layer, so it is passed in (``pipeline.run.load_manifest`` does)."""

    def source_kinds(self) -> list[str]: ...
    def stage_names(self) -> list[str]: ...
    def get_source_class(self, kind: str) -> Any: ...
    def get_stage_class(self, name: str) -> Any: ...


def parse_manifest(path: str | Path, overrides: list[str] | None, registry: Registry) -> Manifest:
    """Read, override and validate a manifest against the registered sources and stages."""
    source_kinds, stage_names = registry.source_kinds, registry.stage_names
    get_source_class, get_stage_class = registry.get_source_class, registry.get_stage_class
    path = Path(path)
    if not path.is_file():
        raise ManifestError("manifest file not found", where=str(path), hint="give the path of a YAML manifest, e.g. manifests/wiki-zh.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"invalid YAML: {problem}", where=where, hint="fix the YAML syntax at that line") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest is not UTF-8 text ({exc})", where=str(path)) from None
    if not isinstance(raw, dict):
        raise ManifestError("a manifest must be a YAML mapping with 'name', 'sources' and 'stages'", where=str(path))
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        keys, value = parse_override(item)
        apply_override(raw, keys, value)

    # Every problem of the manifest is reported at once: the top level, then each source and each
    # stage on its own (one bad item does not hide the others), then the DAG's shape.
    problems: list[str] = []
    raw_sources, raw_stages = raw.get("sources"), raw.get("stages")
    top = dict(raw)
    if isinstance(raw_sources, list):
        top["sources"] = [{} for _ in raw_sources]  # items are checked below
    if isinstance(raw_stages, list):
        top["stages"] = []
    model = None
    try:
        model = ManifestModel.model_validate(top)
    except ValidationError as err:
        problems += validation_lines(err)

    sources: list[SourceConfig] = []
    for i, src in enumerate(raw_sources if isinstance(raw_sources, list) else []):
        kind = src.get("kind") if isinstance(src, dict) else None
        if not isinstance(src, dict):
            problems.append(f"sources[{i}]: must be a mapping with name, kind and license")
        elif kind not in source_kinds():
            problems.append(f"sources[{i}].kind: unknown source kind {kind!r}; allowed: {', '.join(source_kinds())}")
        else:
            try:
                sources.append(get_source_class(kind).Config.model_validate(src))
            except ValidationError as err:
                problems += validation_lines(err, ("sources", i))

    specs: list[StageSpec] = []
    stage_params: list[BaseModel] = []
    for i, item in enumerate(raw_stages if isinstance(raw_stages, list) else []):
        try:
            spec = StageSpec.model_validate(item)
        except ValidationError as err:
            problems += validation_lines(err, ("stages", i))
            continue
        specs.append(spec)
        if spec.stage not in stage_names():
            problems.append(f"stages[{i}].stage: unknown stage {spec.stage!r}; allowed: {', '.join(stage_names())}")
            continue
        try:
            # the context lets a validator read paths relative to the manifest's folder, as sources do
            stage_params.append(get_stage_class(spec.stage).Params.model_validate(spec.params, context={"manifest_dir": str(Path(path).resolve().parent)}))
        except ValidationError as err:
            problems += validation_lines(err, ("stages", i, "params"))

    named = isinstance(raw_sources, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in raw_sources)
    if problems and named and len(specs) == len(raw_stages or []):
        # the DAG's shape needs only names and inputs: check it too, so this is the only round
        stand_in = SimpleNamespace(path=path, sources=[SimpleNamespace(name=s["name"], kind=s.get("kind")) for s in raw_sources], stages=specs, stage_params=[None] * len(specs), output=raw.get("output"))
        problems += shape_problems(stand_in)
    if problems:
        raise ManifestError(
            f"invalid manifest ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n    " + "\n    ".join(problems),
            where=str(path),
            hint="fix the field(s) named above; `pipeline validate MANIFEST` checks without running",
        )
    model.stages = specs
    manifest = Manifest(path, raw, model, sources, stage_params)
    dag = build_dag(manifest)  # shape errors (cycles, unknown inputs, duplicate names) surface at load time
    # Params that name other nodes (mix weights, classifier training nodes) are checked against
    # the node's inputs here, so `pipeline validate` catches them: a stage class may define
    # check_inputs(params, inputs) -> list of problems.
    late = [
        f"stages[{i}].params.{msg} (stage {spec.name!r})"
        for i, (spec, prm) in enumerate(zip(specs, stage_params))
        if (chk := getattr(get_stage_class(spec.stage), "check_inputs", None))
        for msg in chk(prm, dag.nodes[spec.name].inputs)
    ]
    if late:
        raise ManifestError("invalid manifest:\n    " + "\n    ".join(late), where=str(path), hint="name each input of the stage as the stage's params expect; `pipeline validate MANIFEST` checks without running")
    return manifest
