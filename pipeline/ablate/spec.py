"""``--variant NAME:KEY=VALUE[,KEY=VALUE…]``: what a variant is and how its text is read.

Each ``KEY=VALUE`` is a ``--set`` override of the base manifest (``pipeline.core.manifest``:
dotted path, list items by ``name``, the value read as YAML). Overrides are separated by commas
at the top level: a comma inside ``[...]``, ``{...}`` or quotes belongs to the value
(``keep=[zh,en]``, ``title='a, b'``), and ``\\,`` is a literal comma anywhere. A variant with
no override (``base``, or ``base:``) is the base manifest as written."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.common.errors import PipelineError

# A name is a label in tables and JSON; its folder is ``slug(name)``.
NAME_RE = re.compile(r"^[^\s:=,/\\][^:=,/\\]*$")


class AblateError(PipelineError):
    """An ablation could not run as asked (variants, eval sets, the base manifest)."""


class VariantSpecError(AblateError):
    """A malformed ``--variant``: a usage error (exit 2)."""


@dataclass
class Variant:
    name: str
    overrides: list[str] = field(default_factory=list)
    dir: str = ""  # folder name under DIR/variants and DIR/train

    @property
    def is_base(self) -> bool:
        return not self.overrides


def split_overrides(text: str) -> list[str]:
    """Split on top-level commas (not inside brackets, braces or quotes; ``\\,`` is literal)."""
    items, cur, depth, quote, i = [], [], 0, None, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] == ",":
            cur.append(",")
            i += 2
            continue
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    items.append("".join(cur))
    return [s.strip() for s in items]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "variant"


def parse_variant(spec: str) -> Variant:
    """One ``--variant`` value; a ``VariantSpecError`` naming it when malformed."""
    name, sep, rest = spec.partition(":")
    name = name.strip()
    where = f"--variant {spec!r}"
    if not name or not NAME_RE.match(name):
        raise VariantSpecError("a variant needs a name before ':' (no spaces at the ends, no ':', '=', ',', '/')", where=where, hint="e.g. --variant base or --variant short:stages.quality.params.min_chars=50")
    overrides = split_overrides(rest) if sep and rest.strip() else []
    for item in overrides:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip() or not all(key.strip().split(".")):
            raise VariantSpecError(f"override {item!r} of variant {name!r} is not KEY=VALUE (a dotted path, '=', a value)", where=where, hint="separate overrides with ','; write a comma inside a value as '\\,' or inside [..], {..} or quotes")
    return Variant(name=name, overrides=overrides)


def parse_variants(specs: list[str]) -> list[Variant]:
    """All ``--variant`` values: names unique, folders unique (``slug``), at least one."""
    if not specs:
        raise VariantSpecError("no --variant given", where="--variant", hint="give at least one, e.g. --variant base --variant strict:stages.quality.params.preset=strict")
    out: list[Variant] = []
    dirs: set[str] = set()
    for spec in specs:
        v = parse_variant(spec)
        if any(o.name == v.name for o in out):
            raise VariantSpecError(f"variant name {v.name!r} given twice", where=f"--variant {spec!r}", hint="give each variant its own name")
        base, n = slug(v.name), 1
        v.dir = base
        while v.dir in dirs:
            n += 1
            v.dir = f"{base}-{n}"
        dirs.add(v.dir)
        out.append(v)
    return out
