"""The DAG of a manifest: source nodes and stage nodes joined by ``inputs``.

A stage without ``inputs`` reads the stage listed before it (the first stage reads all
sources), so a plain list of stages is a chain; ``inputs`` lets sources branch (one
node feeding several) and merge (one node reading several).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.common.errors import ManifestError


@dataclass
class Node:
    name: str
    kind: str  # "source" or "stage"
    impl: str  # source kind or stage name
    config: Any  # SourceConfig or the stage's Params model
    inputs: list[str] = field(default_factory=list)


@dataclass
class Dag:
    nodes: dict[str, Node]
    order: list[str]  # topological, stable (manifest order where free)
    output: str

    def consumers(self, name: str) -> list[str]:
        return [n for n in self.order if name in self.nodes[n].inputs]

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.nodes[name].inputs)
        while stack:
            cur = stack.pop()
            if cur not in seen:
                seen.add(cur)
                stack.extend(self.nodes[cur].inputs)
        return seen


def build_dag(manifest: Any) -> Dag:
    """The DAG of a ``pipeline.core.manifest.Manifest`` (its ``path``, ``sources``, ``stages``,
    ``stage_params`` and ``output``). Every shape problem (duplicate names, missing or unknown
    inputs, cycles, an unknown output) is reported at once, in one ``ManifestError``."""
    nodes, output, problems = _shape(manifest)
    if problems:
        raise ManifestError(_problem_list(problems), where=str(manifest.path), hint="fix the field(s) named above; `pipeline validate MANIFEST` checks without running")
    return Dag(nodes, _toposort(nodes, str(manifest.path)), output)


def shape_problems(manifest: Any) -> list[str]:
    """What ``build_dag`` would refuse, as ``field: message`` lines (empty: the shape is sound)."""
    return _shape(manifest)[2]


def _shape(manifest: Any) -> tuple[dict[str, Node], str | None, list[str]]:
    problems: list[str] = []
    nodes: dict[str, Node] = {}
    for i, src in enumerate(manifest.sources):
        if src.name in nodes:
            problems.append(f"sources[{i}].name: duplicate node name {src.name!r}")
        nodes[src.name] = Node(src.name, "source", src.kind, src)
    source_names = [s.name for s in manifest.sources]
    prev: list[str] = source_names
    for i, (spec, params) in enumerate(zip(manifest.stages, manifest.stage_params)):
        if spec.name in nodes:
            problems.append(f"stages[{i}].name: duplicate node name {spec.name!r} (source and stage names share one namespace)")
        inputs = list(spec.inputs) if spec.inputs is not None else list(prev)
        if not inputs:
            problems.append(f"stages[{i}].inputs: a stage needs at least one input")
        nodes[spec.name] = Node(spec.name, "stage", spec.stage, params, inputs)
        prev = [spec.name]
    for i, spec in enumerate(manifest.stages):
        for inp in nodes[spec.name].inputs:
            if inp not in nodes:
                problems.append(f"stages[{i}].inputs: unknown node {inp!r} (inputs name sources or stages: {', '.join(nodes)})")
            elif inp == spec.name:
                problems.append(f"stages[{i}].inputs: stage {spec.name!r} reads itself")
    output = manifest.output or (manifest.stages[-1].name if manifest.stages else None)
    if output is None and len(source_names) != 1:
        problems.append("output: a manifest with several sources and no stages needs 'output' or a merging stage")
    output = output or (source_names[0] if source_names else None)
    if output is not None and output not in nodes:
        problems.append(f"output: unknown node {output!r}; known: {', '.join(nodes)}")
    if not problems:
        try:
            _toposort(nodes, str(manifest.path))
        except ManifestError as exc:
            problems.append(exc.what)
    return nodes, output, problems


def _problem_list(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n    " + "\n    ".join(problems)


def _toposort(nodes: dict[str, Node], where: str) -> list[str]:
    indeg = {n: len(node.inputs) for n, node in nodes.items()}
    ready = [n for n in nodes if indeg[n] == 0]
    order: list[str] = []
    while ready:
        cur = ready.pop(0)
        order.append(cur)
        for n, node in nodes.items():
            if cur in node.inputs:
                indeg[n] -= node.inputs.count(cur)
                if indeg[n] == 0:
                    ready.append(n)
    if len(order) != len(nodes):
        cyclic = sorted(n for n in nodes if n not in order)
        raise ManifestError(f"stages form a cycle through: {', '.join(cyclic)}", where=where, hint="remove one of the inputs that closes the loop")
    return order
