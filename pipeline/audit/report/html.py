"""HTML building blocks where escaping is the default, not a thing to remember.

Every value interpolated into markup goes through :func:`esc` unless it is :class:`Safe`, and
only markup produced here (or by ``svg.py``, which escapes its own labels) is ``Safe``. Pages
carry a Content-Security-Policy that allows no script, no network and no external resource at
all, so even an escaping bug could not run document text as code.
"""

from __future__ import annotations

import html
import re
import string
from typing import Iterable, Mapping

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa;font-size:14px}
nav{background:#24384f;padding:8px 16px}nav a{color:#fff;margin-right:14px;text-decoration:none}
nav a.current{font-weight:700;text-decoration:underline}
main{max-width:1180px;margin:0 auto;padding:8px 16px 40px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 16px;margin:14px 0}
h1{font-size:22px}h2{font-size:17px;margin:6px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.output td{background:#eef5e9;font-weight:600}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:6px 10px;border-radius:4px}
.plots{display:flex;flex-wrap:wrap;gap:10px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:14px}
article.doc{border:1px solid #ddd;border-radius:4px;padding:6px 8px;margin:6px 0;background:#fcfcfc}
article.doc.removed{border-left:4px solid #c8553d}article.doc.kept{border-left:4px solid #6a994e}
article.doc header{font-size:12px;color:#555;margin-bottom:4px}
pre.text{white-space:pre-wrap;word-break:break-word;font-size:12px;max-height:14em;overflow:auto;margin:4px 0;font-family:ui-monospace,monospace}
.reason{background:#f6e0db;border-radius:3px;padding:0 4px;font-family:ui-monospace,monospace}
dl.signals{font-size:11px;margin:2px 0;color:#444}dl.signals dt{display:inline;font-weight:600}dl.signals dd{display:inline;margin:0 10px 0 3px}
code{font-family:ui-monospace,monospace;font-size:12px}
.muted{color:#777}
"""


class Safe(str):
    """Markup that is already escaped (built here); everything else is text."""


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not allowed in HTML text


def esc(value) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape(_CONTROL.sub("\ufffd", "" if value is None else str(value)), quote=True))


def render(template: str, **values) -> Safe:
    """``$name`` placeholders (string.Template: CSS braces need no doubling), every value escaped."""
    return Safe(string.Template(template).substitute({k: esc(v) for k, v in values.items()}))


def join(parts: Iterable, sep: str = "") -> Safe:
    return Safe(esc(sep).join(esc(p) for p in parts))


def num(value) -> Safe:
    if value is None:
        return Safe("-")
    if isinstance(value, float) and not value.is_integer():
        return esc(f"{value:,.4g}")
    return esc(f"{int(value):,}")


def link(href: str, text) -> Safe:
    """A relative link within the report, or an http(s) link; anything else (javascript:, data:)
    is shown as text."""
    if re.match(r"^(https?://|[A-Za-z0-9_.\-][A-Za-z0-9_.\-/]*(#[\w-]*)?$)", href or "") and not href.lower().startswith(("javascript", "data")):
        external = href.startswith(("http://", "https://"))
        return render('<a href="$h"$rel>$t</a>', h=href, rel=Safe(' rel="noopener noreferrer"') if external else Safe(""), t=text)
    return esc(text if text == href else f"{text} ({href})")


def table(headers: list[str], rows: Iterable[list], *, numeric: Iterable[int] = (), row_attrs: Iterable[Mapping[str, str]] | None = None, cls: str = "", keys: list[str] | None = None) -> Safe:
    """A table; cells are escaped unless Safe. ``numeric``: column indexes right-aligned and
    formatted, with the raw number in ``data-value``; ``keys``: a ``data-col`` name per column."""
    numeric = set(numeric)
    head = join(render('<th class="$c">$h</th>', c="num" if i in numeric else "", h=h) for i, h in enumerate(headers))
    body = []
    attrs = list(row_attrs) if row_attrs is not None else None
    for r, row in enumerate(rows):
        a = attrs[r] if attrs is not None and r < len(attrs) else {}
        attr = join(render(' $k="$v"', k=k, v=v) for k, v in a.items())
        cells = join(
            render('<td class="num"$col data-value="$raw">$v</td>', col=_col(keys, i), raw="" if c is None else c, v=num(c))
            if i in numeric and (c is None or isinstance(c, (int, float)))
            else render("<td$col>$v</td>", col=_col(keys, i), v=c)
            for i, c in enumerate(row)
        )
        body.append(render("<tr$attr>$cells</tr>", attr=attr, cells=cells))
    thead = render("<thead><tr>$h</tr></thead>", h=head) if any(headers) else Safe("")
    return render('<table class="$cls">$thead<tbody>$body</tbody></table>', cls=cls, thead=thead, body=join(body))


def _col(keys: list[str] | None, i: int) -> Safe:
    return render(' data-col="$k"', k=keys[i]) if keys and i < len(keys) else Safe("")


def kv_table(mapping: Mapping, *, cls: str = "kv") -> Safe:
    """Key/value pairs; nested mappings become nested tables, lists of lists become matrices."""
    rows = [[render("<b>$k</b>", k=k), value(v)] for k, v in mapping.items()]
    return table(["", ""], rows, cls=cls)


def _is_matrix(v) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(r, (list, tuple)) and all(isinstance(x, (int, float)) for x in r) for r in v)


def value(v) -> Safe:
    if isinstance(v, Mapping) and _is_matrix(v.get("matrix")):  # a labelled confusion matrix
        labels = [str(x) for x in v.get("labels") or []] or None
        axes = f"rows: {v['rows']}, columns: {v['columns']}" if v.get("rows") and v.get("columns") else ""
        rest = {k: x for k, x in v.items() if k not in ("matrix", "labels", "rows", "columns")}
        return join([matrix(v["matrix"], labels), render('<p class="muted">$a</p>', a=axes) if axes else Safe(""), kv_table(rest) if rest else Safe("")])
    if isinstance(v, Mapping):
        return kv_table(v) if v else Safe('<span class="muted">{}</span>')
    if isinstance(v, (list, tuple)):
        if _is_matrix(v):
            return matrix(v)
        if all(isinstance(x, (str, int, float, bool)) or x is None for x in v):
            return esc(", ".join("null" if x is None else str(x) for x in v))
        return join((render("<div>$x</div>", x=value(x)) for x in v))
    if isinstance(v, bool) or v is None:
        return esc("null" if v is None else str(v).lower())
    if isinstance(v, (int, float)):
        return num(v)
    if isinstance(v, str) and re.match(r"^https?://\S+$", v):
        return link(v, v)
    return esc(v)


def matrix(rows, labels: list[str] | None = None) -> Safe:
    """A numeric matrix (confusion matrix) with cells shaded by value."""
    peak = max((abs(float(x)) for r in rows for x in r), default=0) or 1
    labels = labels or [str(i) for i in range(len(rows))]
    head = join(render("<th>$l</th>", l=l) for l in ["", *labels[: len(rows[0]) if rows else 0]])
    body = []
    for i, r in enumerate(rows):
        cells = join(render('<td class="num" style="background:rgba(59,110,168,$a)">$v</td>', a=f"{0.08 + 0.6 * abs(float(x)) / peak:.2f}", v=num(x)) for x in r)
        body.append(render("<tr><th>$l</th>$c</tr>", l=labels[i] if i < len(labels) else i, c=cells))
    return render('<table class="matrix"><thead><tr>$h</tr></thead><tbody>$b</tbody></table>', h=head, b=join(body))


def section(key: str, title: str, body, *, note: str = "") -> Safe:
    return render(
        '<section class="card-section" id="$k" data-section="$k"><h2>$t</h2>$n$b</section>',
        k=key,
        t=title,
        n=render('<p class="muted">$n</p>', n=note) if note else Safe(""),
        b=body,
    )


def page(title: str, nav: list[tuple[str, str]], current: str, body, *, generated: str = "") -> str:
    links = join(render('<a href="$h" class="$c">$t</a>', h=href, c="current" if href == current else "", t=text) for href, text in nav)
    return render(
        """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><style>$css</style></head>
<body><nav>$nav</nav><main><h1>$title</h1>$body<p class="muted">$generated</p></main></body></html>
""",
        csp=CSP,
        title=title,
        css=Safe(CSS),
        nav=links,
        body=body,
        generated=generated,
    )
