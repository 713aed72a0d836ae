"""The license engine: classify each source's SPDX expression and combine them into the output's terms.

It runs before anything is resolved or downloaded (``pipeline validate``, the top of
``run_manifest``).  ``assess`` collects every conflict; ``check`` raises ``LicenseError``
listing them.  The table, the rules and their references are in docs/licenses.md.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

from pipeline.common.errors import LicenseError
from pipeline.core.spdx import licensing

USES = ("commercial", "non-commercial", "academic-only", "unknown")
_USE_RANK = {u: i for i, u in enumerate(USES)}
# The most restrictive output use each intended use tolerates.
_INTENDED_MAX = {"commercial": "commercial", "non-commercial": "non-commercial", "research": "academic-only", "academic": "academic-only"}
# Stages that hand documents on verbatim: the only ones a no-derivatives source may pass through.
PASS_THROUGH_STAGES = frozenset({"concat"})
# OR alternatives tried jointly across sources; beyond this, each source is chosen on its own.
_MAX_COMBINATIONS = 4096


@dataclass(frozen=True)
class LicenseClass:
    """What one license id lets the dataset builder do."""

    id: str
    name: str
    url: str | None
    use: str  # one of USES
    attribution: bool
    share_alike: str | None = None  # family, e.g. "CC-BY-SA", "GFDL", "GPL"
    version: str | None = None
    no_derivatives: bool = False
    use_restrictions: bool = False  # behavioural-use clauses (OpenRAIL) that must be passed on
    # The documents are their owners' copyright and nobody in the chain licenses them (crawled web
    # pages): never "licensed under" anything, never relicensed by share-alike, use not granted.
    third_party: bool = False
    known: bool = True  # False: not in the table, refused unless overridden
    override: bool = False  # classified by the source's license_override
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Assessment:
    sources: dict[str, dict]
    use: str
    attribution: list[dict]
    share_alike: str | None  # the share-alike license the output must carry, if any
    output_license: str
    obligations: list[str]
    overrides: list[dict]
    conflicts: list[dict]  # {rule, sources, message}
    intended_use: str | None = None

    @property
    def ok(self) -> bool:
        return not self.conflicts

    def to_dict(self) -> dict:
        return {
            "sources": self.sources,
            "use": self.use,
            "attribution": self.attribution,
            "share_alike": self.share_alike,
            "output_license": self.output_license,
            "obligations": self.obligations,
            "overrides": self.overrides,
            "conflicts": self.conflicts,
            "intended_use": self.intended_use,
        }


# ---------------------------------------------------------------------------------------------
# The table


def _spdx_url(lid: str) -> str:
    return f"https://spdx.org/licenses/{lid}.html"


_CC_RE = re.compile(r"^CC-BY(?P<nc>-NC)?(?P<x>-SA|-ND)?-(?P<v>\d\.\d)(?:-(?P<port>[A-Z]{2,3}))?$")


def _cc_class(lid: str, m: re.Match) -> LicenseClass:
    nc, x, v, port = bool(m["nc"]), m["x"], m["v"], m["port"]
    elems = "by" + ("-nc" if nc else "") + (x.lower() if x else "")
    url = f"https://creativecommons.org/licenses/{elems}/{v}/" + (f"{port.lower()}/" if port else "")
    words = ["Attribution"] + (["NonCommercial"] if nc else [])
    if x == "-SA":
        words.append("ShareAlike")
    elif x == "-ND":
        words.append("NoDerivatives" if v == "4.0" else "NoDerivs")
    edition = f"{v} {port}" if port else (f"{v} International" if v == "4.0" else f"{v} Unported" if v == "3.0" else f"{v} Generic")
    family = None
    if x == "-SA":
        family = "CC-BY-NC-SA" if nc else "CC-BY-SA"
    return LicenseClass(
        id=lid,
        name=f"Creative Commons {'-'.join(words)} {edition}",
        url=url,
        use="non-commercial" if nc else "commercial",
        attribution=True,
        share_alike=family,
        version=v,
        no_derivatives=x == "-ND",
    )


_GNU_VERSIONS = {"GPL": ("1.0", "2.0", "3.0"), "LGPL": ("2.0", "2.1", "3.0"), "AGPL": ("3.0",), "GFDL": ("1.1", "1.2", "1.3")}
_GNU_NAMES = {
    "GPL": "GNU General Public License",
    "LGPL": "GNU Lesser General Public License",
    "AGPL": "GNU Affero General Public License",
    "GFDL": "GNU Free Documentation License",
}
_GNU_RE = re.compile(r"^(?P<fam>GPL|LGPL|AGPL|GFDL)-(?P<v>\d\.\d)(?P<inv>-(?:no-)?invariants)?-(?P<scope>only|or-later)$")


def _gnu_url(fam: str, v: str) -> str:
    slug = {"GPL": "gpl", "LGPL": "lgpl", "AGPL": "agpl", "GFDL": "fdl"}[fam]
    current = {"GPL": "3.0", "LGPL": "3.0", "AGPL": "3.0", "GFDL": "1.3"}[fam]
    return f"https://www.gnu.org/licenses/{'' if v == current else 'old-licenses/'}{slug}-{v}.html"


def _gnu_class(lid: str, m: re.Match) -> LicenseClass:
    fam, v, inv, scope = m["fam"], m["v"], m["inv"], m["scope"]
    invariants = inv == "-invariants"
    return LicenseClass(
        id=lid,
        name=f"{_GNU_NAMES[fam]} v{v} {'or later' if scope == 'or-later' else 'only'}" + (" (with invariant sections)" if invariants else ""),
        url=_gnu_url(fam, v),
        use="commercial",
        attribution=True,
        share_alike=fam,
        version=v,
        # Invariant sections may not be altered or removed (GFDL section 4), and a pipeline cannot tell them apart.
        no_derivatives=invariants,
        note="invariant sections must be kept verbatim" if invariants else "",
    )


# (id, name, attribution, share-alike family, version, use restrictions, url or None for the SPDX page)
_OTHERS: list[tuple] = [
    ("CC0-1.0", "Creative Commons Zero v1.0 Universal", False, None, "1.0", False, "https://creativecommons.org/publicdomain/zero/1.0/"),
    ("CC-PDDC", "Creative Commons Public Domain Dedication and Certification", False, None, None, False, None),
    ("CC-PDM-1.0", "Creative Commons Public Domain Mark 1.0", False, None, "1.0", False, "https://creativecommons.org/publicdomain/mark/1.0/"),
    ("PDDL-1.0", "Open Data Commons Public Domain Dedication and License v1.0", False, None, "1.0", False, "https://opendatacommons.org/licenses/pddl/1-0/"),
    ("Unlicense", "The Unlicense", False, None, None, False, "https://unlicense.org/"),
    ("0BSD", "BSD Zero Clause License", False, None, None, False, None),
    ("MIT-0", "MIT No Attribution", False, None, None, False, None),
    ("DL-DE-ZERO-2.0", "Data licence Germany - Zero - v2.0", False, None, "2.0", False, None),
    ("MIT", "MIT License", True, None, None, False, None),
    ("BSD-2-Clause", "BSD 2-Clause License", True, None, None, False, None),
    ("BSD-3-Clause", "BSD 3-Clause License", True, None, None, False, None),
    ("ISC", "ISC License", True, None, None, False, None),
    ("Zlib", "zlib License", True, None, None, False, None),
    ("BSL-1.0", "Boost Software License 1.0", True, None, "1.0", False, None),
    ("Apache-2.0", "Apache License 2.0", True, None, "2.0", False, "https://www.apache.org/licenses/LICENSE-2.0"),
    ("ODC-By-1.0", "Open Data Commons Attribution License v1.0", True, None, "1.0", False, "https://opendatacommons.org/licenses/by/1-0/"),
    ("CDLA-Permissive-1.0", "Community Data License Agreement - Permissive 1.0", True, None, "1.0", False, "https://cdla.dev/permissive-1-0/"),
    ("CDLA-Permissive-2.0", "Community Data License Agreement - Permissive 2.0", True, None, "2.0", False, "https://cdla.dev/permissive-2-0/"),
    ("OGL-UK-3.0", "Open Government Licence v3.0", True, None, "3.0", False, "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/"),
    ("DL-DE-BY-2.0", "Data licence Germany - attribution - v2.0", True, None, "2.0", False, None),
    ("etalab-2.0", "Etalab Open License 2.0", True, None, "2.0", False, None),
    ("ODbL-1.0", "Open Data Commons Open Database License v1.0", True, "ODbL", "1.0", False, "https://opendatacommons.org/licenses/odbl/1-0/"),
    ("CDLA-Sharing-1.0", "Community Data License Agreement - Sharing 1.0", True, "CDLA-Sharing", "1.0", False, "https://cdla.dev/sharing-1-0/"),
    ("MPL-2.0", "Mozilla Public License 2.0", True, "MPL", "2.0", False, "https://www.mozilla.org/en-US/MPL/2.0/"),
    ("MPL-2.0-no-copyleft-exception", "Mozilla Public License 2.0 (Incompatible With Secondary Licenses)", True, "MPL", "2.0", False, None),
    ("LAL-1.3", "Licence Art Libre 1.3 (Free Art License)", True, "LAL", "1.3", False, "https://artlibre.org/licence/lal/en/"),
    # OpenRAIL: the SPDX list has no OpenRAIL id; license-expression knows these ScanCode references.
    ("LicenseRef-scancode-bigscience-open-rail-m", "BigScience OpenRAIL-M", True, None, None, True, None),
    ("LicenseRef-scancode-bigscience-rail-1.0", "BigScience RAIL License v1.0", True, None, "1.0", True, None),
    ("LicenseRef-scancode-bigcode-open-rail-m-v1", "BigCode OpenRAIL-M v1", True, None, "1", True, None),
]


# Crawled web text: Common Crawl distributes pages under its Terms of Use, which grant no license to
# the pages' content; each page stays the copyright of its owner (docs/licenses.md, Crawled web text).
COMMON_CRAWL = "LicenseRef-CommonCrawl-ToU"
_THIRD_PARTY = [
    LicenseClass(
        COMMON_CRAWL,
        "Common Crawl Terms of Use; each page remains the copyright of its owner",
        "https://commoncrawl.org/terms-of-use",
        "unknown",
        attribution=True,
        third_party=True,
        note="no license to the pages' text is granted; attribution by each document's URL",
    ),
]


@lru_cache(maxsize=1)
def license_table() -> dict[str, LicenseClass]:
    """Every license id the engine classifies (SPDX ids as license-expression spells them)."""
    table: dict[str, LicenseClass] = {}
    for lid in licensing().known_symbols:
        if m := _CC_RE.match(lid):
            table[lid] = _cc_class(lid, m)
        elif m := _GNU_RE.match(lid):
            table[lid] = _gnu_class(lid, m)
    for lid, name, attribution, family, version, restricted, url in _OTHERS:
        note = "use-based restrictions must be passed on to downstream users" if restricted else ""
        table[lid] = LicenseClass(lid, name, url or _spdx_url(lid), "commercial", attribution, family, version, use_restrictions=restricted, note=note)
    for cls in _THIRD_PARTY:
        table[cls.id] = cls
    return table


# ---------------------------------------------------------------------------------------------
# Share-alike compatibility: which licenses material under a share-alike license may be adapted under.


def _vkey(v: str) -> float:
    return float(v)


def _gnu_base(lid: str) -> str:
    # GFDL "invariants" qualifiers describe the document, not the license it may be relicensed under.
    return re.sub(r"-(?:no-)?invariants", "", lid)


@lru_cache(maxsize=1)
def _edges() -> dict[str, set[str]]:
    table = license_table()
    edges: dict[str, set[str]] = {}

    def add(src: str, *dst: str) -> None:
        edges.setdefault(src, set()).update(dst)

    # CC BY-SA / BY-NC-SA 2.0 and later: adaptations may use a later version with the same elements
    # (BY-SA 4.0 s.3(b)(1), 3.0 s.4(b), 2.0 s.4(b)); 1.0 has no such clause. 3.0 ports also allow 3.0 Unported.
    for lid, cls in table.items():
        if cls.share_alike in ("CC-BY-SA", "CC-BY-NC-SA"):
            m = _CC_RE.match(lid)
            if _vkey(cls.version) < 2.0:
                continue
            for w in ("2.0", "2.5", "3.0", "4.0"):
                later = f"{cls.share_alike}-{w}"
                if later in table and (_vkey(w) > _vkey(cls.version) or (m["port"] and m["port"] != "IGO" and w == cls.version)):
                    add(lid, later)
    # Creative Commons' compatible-licenses list: BY-SA 4.0 -> GPLv3 one way; BY-SA 4.0 <-> Free Art License 1.3.
    add("CC-BY-SA-4.0", "GPL-3.0-only", "LAL-1.3")
    add("LAL-1.3", "CC-BY-SA-4.0")
    # GNU "or later" grants; LGPL section 3 (2.x) / LGPLv3 as GPLv3 plus permissions; GPLv3 section 13 (AGPLv3).
    for fam, versions in _GNU_VERSIONS.items():
        for i, v in enumerate(versions):
            add(f"{fam}-{v}-or-later", f"{fam}-{v}-only", *(f"{fam}-{w}-or-later" for w in versions[i + 1 :]))
    for v in ("2.0", "2.1"):
        add(f"LGPL-{v}-only", "GPL-2.0-or-later")
        add(f"LGPL-{v}-or-later", "GPL-2.0-or-later")
    add("LGPL-3.0-only", "GPL-3.0-only")
    add("LGPL-3.0-or-later", "GPL-3.0-or-later")
    add("GPL-3.0-only", "AGPL-3.0-only")
    add("GPL-3.0-or-later", "AGPL-3.0-only")
    # MPL 2.0 section 3.3: Secondary Licenses (GPL 2.0, LGPL 2.1, AGPL 3.0, or later versions).
    add("MPL-2.0", "GPL-2.0-or-later", "LGPL-2.1-or-later", "AGPL-3.0-or-later")
    return edges


def share_alike_targets(cls: LicenseClass) -> set[str]:
    """Licenses that material under ``cls`` may be adapted under (itself included)."""
    if cls.override:
        return {cls.id}
    start = cls.id.split(" WITH ")[0]  # an exception only adds permissions: the base license's reach holds
    start = _gnu_base(start) if cls.share_alike in _GNU_VERSIONS else start
    seen, stack = {start}, [start]
    edges = _edges()
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


# Permissive licenses that copyleft licenses cannot absorb (FSF license list: Apache 2.0 vs GPLv2).
_EXCLUDED_TARGETS = {"Apache-2.0": re.compile(r"^L?GPL-(?:1\.0|2\.0|2\.1)-")}


def _family_of(lid: str) -> str | None:
    cls = license_table().get(lid)
    return cls.share_alike if cls else None


def _target_use(target: str, items: list[tuple[str, LicenseClass]]) -> str:
    cls = license_table().get(target)
    if cls is not None:
        return cls.use
    return next(c.use for _, c in items if c.id == target)  # an overridden share-alike license


# ---------------------------------------------------------------------------------------------
# Expressions


def _parse(expression: str):
    try:
        return licensing().parse(expression)
    except Exception as exc:  # license-expression raises several types for bad syntax
        raise LicenseError(
            f"cannot parse license expression {expression!r}: {exc}",
            hint="use SPDX ids joined with AND / OR / WITH, e.g. 'CC-BY-SA-4.0 OR GFDL-1.3-or-later'",
        ) from None


def _symbol_class(sym) -> LicenseClass:
    exc = getattr(sym, "exception_symbol", None)
    base = sym.license_symbol.key if exc is not None else sym.key
    cls = license_table().get(base)
    if cls is None:
        cls = LicenseClass(base, base, None if base.startswith("LicenseRef-") else _spdx_url(base), "unknown", True, known=False, note="not in the license table")
    if exc is not None:  # exceptions only add permissions: the base license's class holds
        cls = replace(cls, id=f"{base} WITH {exc.key}", note=(cls.note + "; " if cls.note else "") + f"with {exc.key}")
    return cls


def classify(expression: str) -> list[LicenseClass]:
    """One class per license id in ``expression``, in order of appearance."""
    parsed = _parse(expression)
    out: dict[str, LicenseClass] = {}
    for sym in licensing().license_symbols(parsed, unique=True, decompose=False):
        cls = _symbol_class(sym)
        out.setdefault(cls.id, cls)
    return list(out.values())


def _alternatives(node) -> list[list]:
    """The expression as OR-of-ANDs: each alternative is the list of license symbols that all apply."""
    from license_expression import AND, OR

    if isinstance(node, OR):
        return [alt for arg in node.args for alt in _alternatives(arg)]
    if isinstance(node, AND):
        out = [[]]
        for arg in node.args:
            out = [a + b for a in out for b in _alternatives(arg)]
        return out
    return [[node]]


def _options(src) -> list[list[LicenseClass]]:
    override = getattr(src, "license_override", None)
    options: list[list[LicenseClass]] = []
    seen: set[tuple] = set()
    for alt in _alternatives(_parse(src.license)):
        classes: dict[str, LicenseClass] = {}
        for sym in alt:
            cls = _symbol_class(sym)
            if not cls.known and override is not None:
                cls = replace(
                    cls,
                    name=override.name or cls.id,
                    url=override.url or cls.url,
                    use=override.use,
                    attribution=override.attribution,
                    share_alike=override.share_alike,
                    no_derivatives=override.no_derivatives,
                    override=True,
                    note="classified by license_override",
                )
            classes.setdefault(cls.id, cls)
        key = tuple(sorted(classes))
        if key not in seen:
            seen.add(key)
            options.append(list(classes.values()))
    return options


def _render(classes: list[LicenseClass]) -> str:
    return " AND ".join(c.id for c in classes)


# ---------------------------------------------------------------------------------------------
# Combining


@dataclass
class _Outcome:
    conflicts: list[dict] = field(default_factory=list)
    use: str = "commercial"
    target: str | None = None

    def score(self, copyleft: int, attribution: int, indices: int) -> tuple:
        return (len(self.conflicts), _USE_RANK[self.use], self.target is not None, copyleft, attribution, indices)


def _conflict(rule: str, sources: list[str], message: str) -> dict:
    return {"rule": rule, "sources": sorted(set(sources), key=sources.index), "message": message}


def _label(name: str, cls: LicenseClass) -> str:
    return f"{name!r} ({cls.id})"


def _share_alike_message(a: tuple[str, LicenseClass], b: tuple[str, LicenseClass]) -> str:
    (na, ca), (nb, cb) = a, b
    fams = {ca.share_alike, cb.share_alike}
    pair = f"{_label(na, ca)} and {_label(nb, cb)}"
    if fams == {"GFDL", "CC-BY-SA"}:
        why = (
            "GFDL text cannot be combined with CC BY-SA text: the only bridge, the GFDL 1.3 section 11 relicensing of "
            "wiki content, closed on 2009-08-01, so GFDL-only text cannot become CC BY-SA (nor the reverse)"
        )
    elif fams == {"CC-BY-SA", "CC-BY-NC-SA"}:
        why = "CC BY-SA and CC BY-NC-SA are different share-alike licenses: each requires adaptations under its own terms"
    elif ca.share_alike == cb.share_alike and "1.0" in (ca.version, cb.version) and ca.share_alike.startswith("CC-"):
        why = "CC share-alike 1.0 has no later-version clause: 1.0 material can only be adapted under 1.0"
    elif ca.share_alike == cb.share_alike:
        why = f"no {ca.share_alike} version satisfies both (an '-only' license cannot be upgraded)"
    else:
        why = f"{ca.share_alike} and {cb.share_alike} each require adaptations under their own license and no one-way compatibility joins them"
    return f"share-alike: {pair} cannot be combined: {why}"


def _no_derivatives(dag, name: str, cls: LicenseClass, source_names: set[str]) -> list[dict]:
    """A no-derivatives source may only flow through pass-through stages and never meet another source."""
    problems: list[str] = []
    for node_name in dag.order:
        node = dag.nodes[node_name]
        if node.kind != "stage" or name not in dag.ancestors(node_name):
            continue
        if node.impl not in PASS_THROUGH_STAGES:
            problems.append(f"stage {node_name!r} ({node.impl}) transforms or filters it")
        others = sorted((dag.ancestors(node_name) & source_names) - {name})
        if others and not any(p.startswith("node ") for p in problems):  # the first merge point says it
            problems.append(f"node {node_name!r} mixes it with {', '.join(repr(o) for o in others)}")
    if not problems:
        return []
    others = sorted({o for n in dag.order if name in dag.ancestors(n) for o in dag.ancestors(n) & source_names} - {name})
    what = "; ".join(dict.fromkeys(problems))
    return [
        _conflict(
            "no-derivatives",
            [name, *others],
            f"no-derivatives: cannot be filtered or mixed: {_label(name, cls)} forbids adaptations, but {what}",
        )
    ]


def _evaluate(choice: dict[str, list[LicenseClass]], dag, intended: str | None) -> _Outcome:
    out = _Outcome()
    source_names = set(choice)
    considered: list[tuple[str, LicenseClass]] = []
    unknown = False
    for name, classes in choice.items():
        missing = [c for c in classes if not c.known and not c.override]
        if missing:
            unknown = True
            ids = ", ".join(c.id for c in missing)
            out.conflicts.append(
                _conflict(
                    "unknown-license",
                    [name],
                    f"unknown license: source {name!r} uses {ids}, which the license table does not classify; "
                    "an unknown license is refused: add license_override (use, justification) to the source, or use a listed license",
                )
            )
        considered += [(name, c) for c in classes if c.known or c.override]

    ranks = [_USE_RANK[c.use] for _, c in considered] + ([_USE_RANK["unknown"]] if unknown else [])
    out.use = USES[max(ranks, default=0)]

    for name, cls in considered:
        if cls.no_derivatives:
            out.conflicts += _no_derivatives(dag, name, cls, source_names)

    # Share-alike: one license must satisfy every share-alike license in the output.
    sa_items = [(n, c) for n, c in considered if c.share_alike]
    if sa_items:
        common = set.intersection(*(share_alike_targets(c) for _, c in sa_items))
        excluded = {t for t in common for n, c in considered if (rx := _EXCLUDED_TARGETS.get(c.id)) and rx.match(t)}
        candidates = common - excluded
        if candidates:
            out.target = min(candidates, key=lambda t: _target_rank(t, sa_items))
        elif common:
            blockers = [(n, c) for n, c in considered if c.id in _EXCLUDED_TARGETS]
            out.conflicts.append(
                _conflict(
                    "share-alike-incompatible",
                    [n for n, _ in blockers] + [n for n, _ in sa_items],
                    f"share-alike: {', '.join(_label(n, c) for n, c in blockers)} cannot be relicensed under "
                    f"{' or '.join(sorted(common))}, the only license(s) every share-alike source allows "
                    "(the FSF lists Apache-2.0 as incompatible with GPL/LGPL version 2)",
                )
            )
        else:
            pairs = [
                (a, b)
                for a, b in itertools.combinations(sa_items, 2)
                if not (share_alike_targets(a[1]) & share_alike_targets(b[1]))
            ]
            for a, b in pairs or [(sa_items[0], sa_items[-1])]:
                out.conflicts.append(_conflict("share-alike-incompatible", [a[0], b[0]], _share_alike_message(a, b)))

    # Share-alike licenses forbid adding restrictions: non-commercial, academic-only, behavioural-use clauses.
    # Third-party documents add none: nobody licenses them, so share-alike does not reach them (each
    # document keeps its own terms in the dataset; the obligations say so).
    target_use = _target_use(out.target, sa_items) if out.target else None
    for name, cls in considered:
        if cls.share_alike or cls.third_party:
            continue
        victims = [(n, c) for n, c in sa_items if cls.use_restrictions or _USE_RANK[cls.use] > _USE_RANK[target_use or c.use]]
        if not victims:
            continue
        adds = f"restricts use to {cls.use}" if _USE_RANK[cls.use] > _USE_RANK[target_use or victims[0][1].use] else "adds use-based restrictions"
        under = f"the output must carry {out.target}" if out.target else f"{', '.join(_label(n, c) for n, c in victims)} require share-alike"
        out.conflicts.append(
            _conflict(
                "share-alike-added-restriction",
                [name] + [n for n, _ in victims],
                f"share-alike forbids adding restrictions: {under}, but {_label(name, cls)} {adds}",
            )
        )

    if intended:
        limit = _INTENDED_MAX[intended]
        offenders = [(n, c) for n, c in considered if _USE_RANK[c.use] > _USE_RANK[limit] and not c.third_party]  # third party: a note, not a license
        if offenders:
            out.conflicts.append(
                _conflict(
                    "intended-use",
                    [n for n, _ in offenders],
                    f"intended use: the manifest declares intended_use: {intended}, but "
                    + ", ".join(f"{_label(n, c)} allows {c.use} use only" for n, c in offenders),
                )
            )
    return out


def _target_rank(target: str, sa_items: list[tuple[str, LicenseClass]]) -> tuple:
    """Prefer keeping sources in their own family, then the newest version, then 'or later'."""
    fam = _family_of(target)
    leaving = sum(1 for _, c in sa_items if c.share_alike != fam and c.id != target)
    m = re.search(r"-(\d\.\d)", target)
    return (leaving, -(_vkey(m.group(1)) if m else 0.0), 0 if target.endswith("-or-later") else 1, target)


def _combinations(options: dict[str, list[list[LicenseClass]]], dag, intended):
    names = list(options)
    total = 1
    for opts in options.values():
        total *= len(opts)
    if total <= _MAX_COMBINATIONS:
        for idx in itertools.product(*(range(len(options[n])) for n in names)):
            yield dict(zip(names, idx))
        return
    # Too many joint choices: pick each source's option with the others at their first option.
    best = {n: 0 for n in names}
    for n in names:
        scored = []
        for i in range(len(options[n])):
            trial = {**best, n: i}
            scored.append((_score(trial, options, dag, intended), i))
        best[n] = min(scored)[1]
    yield best


def _score(idx: dict[str, int], options, dag, intended) -> tuple:
    choice = {n: options[n][i] for n, i in idx.items()}
    outcome = _evaluate(choice, dag, intended)
    copyleft = sum(1 for classes in choice.values() for c in classes if c.share_alike)
    attribution = sum(1 for classes in choice.values() if any(c.attribution for c in classes))
    return outcome.score(copyleft, attribution, sum(idx.values()))


def _explain(name: str, idx: dict[str, int], options, dag, intended) -> str:
    chosen = options[name][idx[name]]
    base = _evaluate({n: options[n][i] for n, i in idx.items()}, dag, intended)
    reasons = []
    for i, alt in enumerate(options[name]):
        if i == idx[name]:
            continue
        other = _evaluate({**{n: options[n][j] for n, j in idx.items()}, name: alt}, dag, intended)
        if len(other.conflicts) > len(base.conflicts):
            added = Counter(c["rule"] for c in other.conflicts) - Counter(c["rule"] for c in base.conflicts)
            why = "would conflict (" + "; ".join(sorted(added)) + ")"
        elif _USE_RANK[other.use] > _USE_RANK[base.use]:
            why = f"would restrict use to {other.use}"
        elif other.target and not base.target:
            why = f"would require share-alike under {other.target}"
        elif sum(1 for c in alt if c.share_alike) > sum(1 for c in chosen if c.share_alike):
            why = "would add a share-alike license" + (f" and make the output {other.target}" if other.target != base.target else "")
        elif any(c.attribution for c in alt) and not any(c.attribution for c in chosen):
            why = "would add an attribution requirement"
        else:
            why = "no less restrictive; the first listed is kept"
        reasons.append(f"{_render(alt)} {why}")
    how = "the option with the fewest conflicts and restrictions" if base.conflicts else "the most permissive option compatible with the other sources"
    return f"chose {_render(chosen)}: {how} (" + "; ".join(reasons) + ")"


def assess(manifest) -> Assessment:
    """Classify every source and combine them; conflicts are collected, never raised."""
    from pipeline.core.dag import build_dag

    dag = build_dag(manifest)
    intended = getattr(manifest, "intended_use", None)
    options = {src.name: _options(src) for src in manifest.sources}

    best_idx, best_score = None, None
    for idx in _combinations(options, dag, intended):
        score = _score(idx, options, dag, intended)
        if best_score is None or score < best_score:
            best_idx, best_score = idx, score
    choice = {n: options[n][i] for n, i in best_idx.items()}
    outcome = _evaluate(choice, dag, intended)
    conflicts = list(outcome.conflicts)

    sources: dict[str, dict] = {}
    overrides: list[dict] = []
    for src in manifest.sources:
        override = getattr(src, "license_override", None)
        classes = choice[src.name]
        if override is not None:
            unknown_ids = [c.id for c in classify(src.license) if not c.known]
            if not unknown_ids:
                conflicts.append(
                    _conflict(
                        "override-not-applicable",
                        [src.name],
                        f"license_override on source {src.name!r} has nothing to classify: every license in "
                        f"{src.license!r} is in the table; remove the override (or use a LicenseRef-* id for separately granted terms)",
                    )
                )
            else:
                overrides.append(
                    {"source": src.name, "license": src.license, "ids": unknown_ids, **override.model_dump(mode="json")}
                )
        sources[src.name] = {
            "license": src.license,
            "chosen": _render(classes),
            "choice": _explain(src.name, best_idx, options, dag, intended) if len(options[src.name]) > 1 else None,
            "classes": [c.to_dict() for c in classes],
            "license_url": getattr(src, "license_url", None),
            "attribution": getattr(src, "attribution", None),
            "homepage": getattr(src, "homepage", None),
        }

    attribution = [
        {
            "source": src.name,
            "license": _render(choice[src.name]),
            "notice": src.attribution or _default_notice(src, choice[src.name]),
            "license_url": src.license_url or next((c.url for c in choice[src.name] if c.url), None),
        }
        for src in manifest.sources
        if any(c.attribution for c in choice[src.name])
    ]
    # With a conflict there is no license the output could be distributed under: say so in SPDX's words.
    third = list(dict.fromkeys(c.id for classes in choice.values() for c in classes if c.third_party))
    licensed = outcome.target or " AND ".join(dict.fromkeys(c.id for classes in choice.values() for c in classes if not c.third_party))
    output_license = "NOASSERTION" if conflicts else " AND ".join(x for x in [licensed, *third] if x)
    return Assessment(
        sources=sources,
        use=outcome.use,
        attribution=attribution,
        share_alike=outcome.target,
        output_license=output_license,
        obligations=_obligations(choice, outcome, attribution, overrides, conflicts, intended),
        overrides=overrides,
        conflicts=conflicts,
        intended_use=intended,
    )


def _default_notice(src, classes: list[LicenseClass]) -> str:
    where = f" ({src.homepage})" if src.homepage else ""
    if all(c.third_party for c in classes):
        return f"web pages{where}, each the copyright of its owner; each document's url names its page"
    return f"{src.name}{where}, licensed under {_render(classes)}"


def _obligations(choice, outcome: _Outcome, attribution: list[dict], overrides: list[dict], conflicts: list[dict], intended: str | None = None) -> list[str]:
    out: list[str] = []
    third = {n: [c for c in cs if c.third_party] for n, cs in choice.items() if any(c.third_party for c in cs)}
    if conflicts:
        out.append(f"unresolved: {len(conflicts)} license conflict(s); the output cannot be distributed as configured")
    if outcome.target:
        cls = license_table().get(outcome.target)
        carriers = [n for n, cs in choice.items() if any(c.share_alike for c in cs)]
        what = f"the documents that come from {', '.join(carriers)}, and adaptations of them," if third else "the output and adaptations of it"
        out.append(
            f"share-alike: distribute {what} under {outcome.target}"
            + (f" ({cls.url})" if cls and cls.url else "")
            + f", required by {', '.join(carriers)}"
        )
        for n, cs in choice.items():
            for c in cs:
                if c.share_alike and c.id != outcome.target:
                    out.append(f"{n}: {c.id} material is adapted under {outcome.target} (one-way compatible)")
    elif len({c.id for cs in choice.values() for c in cs}) > 1 and not any(c.share_alike for cs in choice.values() for c in cs):
        out.append("no share-alike: each source keeps its own license; the output is under all of them (AND)")
    for n, cs in third.items():
        for c in cs:
            out.append(
                f"{n}: crawled pages remain the copyright of their owners: no license to their text is granted by "
                f"Common Crawl or by this dataset ({c.name}: {c.url}); the documents of {n} are not under "
                + (f"{outcome.target} or any other license of this dataset" if outcome.target else "any license of this dataset")
            )
        out.append(f"{n}: attribution by URL: every document keeps its page's url (the url column of data/, ATTRIBUTION-urls.tsv.gz)")
        out.append(f"{n}: honour removal requests from rights holders: drop the document (by url or id) and export again")
        out.append(
            f"{n}: whether {'the declared intended use (' + intended + ')' if intended else 'a use'} of crawled text is lawful "
            "depends on the law where it is used (text-and-data-mining exceptions, fair use); it is not a license question this "
            "assessment can settle"
        )
    licensed_use = [c.use for cs in choice.values() for c in cs if not c.third_party]
    if outcome.use != "commercial" and (not third or (licensed_use and max(licensed_use, key=_USE_RANK.get) == outcome.use)):
        limiting = [f"{n} ({c.id})" for n, cs in choice.items() for c in cs if c.use == outcome.use]
        out.append(f"use: {outcome.use} only, because of {', '.join(limiting)}")
    elif third:
        out.append(f"use: not granted for the crawled documents of {', '.join(third)} (see above); " + (f"the licensed documents allow {max(licensed_use, key=_USE_RANK.get)} use" if licensed_use else "no document of this dataset is licensed"))
    for a in attribution:
        out.append(f"attribution: {a['source']}: {a['notice']}" + (f" <{a['license_url']}>" if a["license_url"] else ""))
    licensed_attribution = [a for a in attribution if a["source"] not in third]
    if licensed_attribution and not any(c.share_alike for cs in choice.values() for c in cs):
        out.append("permissive licenses keep their notices: ship each source's license text and copyright notice with the output")
    for n, cs in choice.items():
        for c in cs:
            if c.id.startswith("Apache-2.0"):
                out.append(f"{n}: Apache-2.0 requires stating that the files were changed and keeping any NOTICE text")
            if c.use_restrictions:
                out.append(f"{n}: {c.id} use-based restrictions must be passed on to every downstream user")
            if c.no_derivatives:
                out.append(f"{n}: {c.id} forbids adaptations: its documents are redistributed verbatim (format changes only)")
    for o in overrides:
        out.append(f"override: {o['source']} ({', '.join(o['ids'])}) treated as {o['use']} use: {o['justification']}")
    return out


def conflict_error(result: Assessment, where: str) -> LicenseError:
    """The ``LicenseError`` listing every conflict of ``result`` (which must have some)."""
    lines = "\n    ".join(f"[{c['rule']}] {c['message']}" for c in result.conflicts)
    return LicenseError(
        f"license check failed ({len(result.conflicts)} conflict(s)); nothing was downloaded:\n    {lines}",
        where=where,
        hint="drop or replace the sources named above, change intended_use, or (for an unknown license only) add "
        "license_override with a justification; see docs/licenses.md",
        conflicts=result.conflicts,
    )


def check(manifest) -> Assessment:
    """``assess``, raising ``LicenseError`` that lists every conflict."""
    result = assess(manifest)
    if result.conflicts:
        raise conflict_error(result, str(getattr(manifest, "path", "manifest")))
    return result
