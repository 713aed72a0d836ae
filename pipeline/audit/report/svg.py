"""Small inline-SVG plots: horizontal bars, histograms with threshold lines, line charts.

Hand-written rather than matplotlib: the core install stays free of a plotting stack, the output
is a few kilobytes per plot, byte-for-byte deterministic, needs no JavaScript and no fonts beyond
the browser's, and every label goes through one escaping function (``_t``).
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

PALETTE = ("#3b6ea8", "#c8553d", "#6a994e", "#a267ac", "#e0a526", "#4aa3a2", "#7f7f7f")
FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def _t(value) -> str:
    """Escape any value for SVG text or attribute content."""
    return escape(str(value), quote=True)


def fmt(value: float | int | None) -> str:
    """Compact number for axes and labels: 1234567 -> 1.23M, 0.12345 -> 0.123."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = float(value)
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1e3:
        return f"{v:.0f}"
    if v == int(v):
        return str(int(v))
    return f"{v:.3g}"


def _svg(width: int, height: int, body: list[str], title: str, kind: str) -> str:
    return (
        f'<svg class="plot" data-plot="{_t(kind)}" role="img" aria-label="{_t(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" {FONT}>'
        f"<title>{_t(title)}</title>" + "".join(body) + "</svg>"
    )


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        xx = x + i * 130
        out.append(f'<rect x="{xx:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        out.append(f'<text x="{xx + 14:.1f}" y="{y:.1f}">{_t(name)}</text>')
    return out


def bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, title: str, unit: str = "", width: int = 640, label_width: int = 190) -> str:
    """Horizontal stacked bars, one row per label; ``series`` maps a legend name to one value per label."""
    names = list(series)
    row_h = 20
    top = 34 if len(names) > 1 else 22
    height = top + row_h * max(len(labels), 1) + 10
    totals = [sum(float(series[n][i] or 0) for n in names) for i in range(len(labels))]
    vmax = max(totals, default=0) or 1
    plot_w = width - label_width - 70
    body = [f'<text x="4" y="14" font-weight="600">{_t(title)}</text>']
    if len(names) > 1:
        body += _legend(names, 4, 28)
    for i, label in enumerate(labels):
        y = top + i * row_h
        short = label if len(label) <= 30 else label[:29] + "…"
        body.append(f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end"><title>{_t(label)}</title>{_t(short)}</text>')
        x = float(label_width)
        for k, name in enumerate(names):
            v = float(series[name][i] or 0)
            w = plot_w * v / vmax
            if w > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{PALETTE[k % len(PALETTE)]}"><title>{_t(f"{label}: {name} {v:,.0f}{unit}")}</title></rect>')
            x += w
        body.append(f'<text x="{x + 4:.1f}" y="{y + 13}">{_t(fmt(totals[i]) + unit)}</text>')
    return _svg(width, height, body, title, "bar")


def histogram(
    edges: Sequence[float],
    series: dict[str, Sequence[int]],
    *,
    title: str,
    thresholds: Sequence[tuple[float, str]] = (),
    width: int = 320,
    height: int = 170,
) -> str:
    """Stacked histogram over ``edges`` (len = bins + 1) with vertical threshold lines; thresholds
    outside the data range are listed as off-scale at the edge instead of squashing the plot."""
    names = list(series)
    n = max(len(edges) - 1, 0)
    left, right, top, bottom = 38, 10, 30, 32
    pw, ph = width - left - right, height - top - bottom
    totals = [sum(int(series[s][i]) for s in names) for i in range(n)]
    cmax = max(totals, default=0) or 1
    lo, hi = (float(edges[0]), float(edges[-1])) if n else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def xpos(v: float) -> float:
        return left + pw * (v - lo) / span

    body = [f'<text x="4" y="12" font-weight="600">{_t(title)}</text>']
    if len(names) > 1:
        body += _legend(names, 4, 25)
    for i in range(n):
        x0, x1 = xpos(float(edges[i])), xpos(float(edges[i + 1]))
        y = top + ph
        for k, name in enumerate(names):
            c = int(series[name][i])
            if c:
                h = ph * c / cmax
                y -= h
                body.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}"><title>{_t(f"[{fmt(edges[i])}, {fmt(edges[i + 1])}): {name} {c:,}")}</title></rect>')
    body.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#555"/>')
    body.append(f'<text x="{left}" y="{top + ph + 13}" text-anchor="start">{_t(fmt(lo))}</text>')
    body.append(f'<text x="{left + pw}" y="{top + ph + 13}" text-anchor="end">{_t(fmt(hi))}</text>')
    body.append(f'<text x="{left - 3}" y="{top + 8}" text-anchor="end">{_t(fmt(cmax))}</text>')
    off = []
    for value, label in thresholds:
        if lo <= value <= hi and n:
            x = xpos(value)
            body.append(f'<line class="threshold" x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{top + ph}" stroke="#d00" stroke-width="1.5" stroke-dasharray="4 2"><title>{_t(f"{label} = {value:g}")}</title></line>')
            anchor = "end" if x > left + pw - 15 else "start" if x < left + 15 else "middle"
            body.append(f'<text x="{x:.1f}" y="{top + ph + 26}" text-anchor="{anchor}" fill="#d00">{_t(fmt(value))}</text>')
        else:
            off.append(f"{label}={value:g} {'→' if value > hi else '←'}")
    if off:
        body.append(f'<text class="threshold-off" x="{left + pw}" y="{top + 8}" text-anchor="end" fill="#d00" font-size="10">{_t("; ".join(off))}</text>')
    return _svg(width, height, body, title, "histogram")


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str = "", width: int = 640, height: int = 240) -> str:
    """Lines (x, y) on shared axes; series with one point are drawn as a dot."""
    names = [k for k, (xs, ys) in series.items() if len(xs)]
    left, right, top, bottom = 52, 12, 34, 30
    pw, ph = width - left - right, height - top - bottom
    xs_all = [float(x) for k in names for x in series[k][0]]
    ys_all = [float(y) for k in names for y in series[k][1] if y is not None and math.isfinite(y)]
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    y0, y1 = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def pt(x: float, y: float) -> str:
        return f"{left + pw * (x - x0) / (x1 - x0):.1f},{top + ph - ph * (y - y0) / (y1 - y0):.1f}"

    body = [f'<text x="4" y="12" font-weight="600">{_t(title)}</text>']
    body += _legend(names, 4, 27)
    body.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>')
    body.append(f'<text x="{left - 3}" y="{top + 8}" text-anchor="end">{_t(fmt(y1))}</text>')
    body.append(f'<text x="{left - 3}" y="{top + ph}" text-anchor="end">{_t(fmt(y0))}</text>')
    body.append(f'<text x="{left}" y="{top + ph + 13}">{_t(fmt(x0))}</text>')
    body.append(f'<text x="{left + pw}" y="{top + ph + 13}" text-anchor="end">{_t(fmt(x1))}</text>')
    if xlabel:
        body.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 26}" text-anchor="middle">{_t(xlabel)}</text>')
    for k, name in enumerate(names):
        color = PALETTE[k % len(PALETTE)]
        pts = [pt(float(x), float(y)) for x, y in zip(*series[name]) if y is not None and math.isfinite(y)]
        if len(pts) == 1:
            cx, cy = pts[0].split(",")
            body.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"><title>{_t(name)}</title></circle>')
        elif pts:
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(pts)}"><title>{_t(name)}</title></polyline>')
    return _svg(width, height, body, title, "line")
