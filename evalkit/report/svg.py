"""Small pure-Python SVG charts for the HTML report (no matplotlib, no network, no scripts).

Every label is escaped here: labels come from suite, tag and model names, which are user data.
Each function returns an ``<svg>`` string with a ``role="img"`` and an ``aria-label``.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

PALETTE = ["#3b6fb6", "#e07b39", "#3a9d5d", "#b8426b", "#7a5cb8", "#8c7a3b", "#2aa1a8", "#666666"]
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _num(x: float) -> str:
    return f"{x:.1f}"


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3g}"


def _open(width: int, height: int, label: str, kind: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot plot-{kind}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
    )


def _empty(label: str, kind: str, width: int = 420) -> str:
    return _open(width, 40, label, kind) + f'<text x="8" y="24" {_FONT} fill="#777">no data for {escape(label)}</text></svg>'


def bar_ci(
    rows: Sequence[tuple[str, float | None, float | None, float | None]],
    *,
    title: str,
    lo: float = 0.0,
    hi: float = 1.0,
    reference: float | None = None,
    kind: str = "bars",
) -> str:
    """Horizontal bars with CI whiskers: rows of (label, value, ci_low, ci_high) on [lo, hi]."""
    rows = [r for r in rows if r[1] is not None and not math.isnan(r[1])]
    if not rows:
        return _empty(title, kind)
    left, width, bar_h, gap = 190, 300, 14, 8
    height = 26 + len(rows) * (bar_h + gap) + 18
    total_w = left + width + 70
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / span * width

    parts = [_open(total_w, height, title, kind), f'<text x="4" y="14" {_FONT} font-weight="bold">{escape(title)}</text>']
    for i, (label, v, low, high) in enumerate(rows):
        y = 24 + i * (bar_h + gap)
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<text x="{left - 6}" y="{_num(y + bar_h - 3)}" text-anchor="end" {_FONT}>{escape(label[:34])}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{_num(max(x(v if v is not None else lo) - left, 0.5))}" height="{bar_h}" fill="{color}" opacity="0.8"/>')
        if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
            cy = y + bar_h / 2
            parts.append(
                f'<path d="M{_num(x(low))} {_num(cy)}H{_num(x(high))}M{_num(x(low))} {_num(cy - 4)}V{_num(cy + 4)}M{_num(x(high))} {_num(cy - 4)}V{_num(cy + 4)}" '
                f'stroke="#222" stroke-width="1.2" class="ci"/>'
            )
        parts.append(f'<text x="{left + width + 6}" y="{_num(y + bar_h - 3)}" {_FONT}>{escape(_fmt(v))}</text>')
    axis_y = 24 + len(rows) * (bar_h + gap)
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + width}" y2="{axis_y}" stroke="#999"/>')
    for t in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{_num(x(t))}" y="{axis_y + 13}" text-anchor="middle" {_FONT} fill="#555">{escape(_fmt(t))}</text>')
    if reference is not None and lo <= reference <= hi:
        parts.append(f'<line x1="{_num(x(reference))}" y1="20" x2="{_num(x(reference))}" y2="{axis_y}" stroke="#c00" stroke-dasharray="3 3"/>')
    parts.append("</svg>")
    return "".join(parts)


def diverging(rows: Sequence[tuple[str, float, float | None, float | None]], *, title: str, kind: str = "deltas") -> str:
    """Bars left/right of zero with CI whiskers (per-tag deltas, candidate minus baseline)."""
    rows = [r for r in rows if r[1] is not None and not math.isnan(r[1])]
    if not rows:
        return _empty(title, kind)
    m = max([abs(v) for _, v, _, _ in rows] + [abs(x) for r in rows for x in r[2:] if x is not None and not math.isnan(x)] + [0.05])
    m = min(1.0, math.ceil(m * 10) / 10)
    left, width, bar_h, gap = 190, 300, 14, 8
    height = 26 + len(rows) * (bar_h + gap) + 18
    mid = left + width / 2

    def x(v: float) -> float:
        return mid + max(-m, min(m, v)) / m * (width / 2)

    parts = [_open(left + width + 70, height, title, kind), f'<text x="4" y="14" {_FONT} font-weight="bold">{escape(title)}</text>']
    for i, (label, v, l, h) in enumerate(rows):  # noqa: E741
        y = 24 + i * (bar_h + gap)
        color = "#3a9d5d" if v >= 0 else "#c0392b"
        x0, x1 = sorted((mid, x(v)))
        parts.append(f'<text x="{left - 6}" y="{_num(y + bar_h - 3)}" text-anchor="end" {_FONT}>{escape(label[:34])}</text>')
        parts.append(f'<rect x="{_num(x0)}" y="{y}" width="{_num(max(x1 - x0, 0.5))}" height="{bar_h}" fill="{color}" opacity="0.8"/>')
        if l is not None and h is not None and not (math.isnan(l) or math.isnan(h)):
            cy = y + bar_h / 2
            parts.append(f'<path d="M{_num(x(l))} {_num(cy)}H{_num(x(h))}" stroke="#222" stroke-width="1.2" class="ci"/>')
        parts.append(f'<text x="{left + width + 6}" y="{_num(y + bar_h - 3)}" {_FONT}>{escape(f"{v:+.3g}")}</text>')
    axis_y = 24 + len(rows) * (bar_h + gap)
    parts.append(f'<line x1="{_num(mid)}" y1="20" x2="{_num(mid)}" y2="{axis_y}" stroke="#555"/>')
    for t in (-m, 0.0, m):
        parts.append(f'<text x="{_num(x(t))}" y="{axis_y + 13}" text-anchor="middle" {_FONT} fill="#555">{escape(f"{t:+.2g}")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(series: dict[str, dict[float, int]], *, title: str, kind: str = "hist") -> str:
    """Grouped bars: value -> count for each model (judge score distributions)."""
    values = sorted({v for h in series.values() for v in h})
    if not values:
        return _empty(title, kind)
    if len(values) > 24:  # continuous scores: bin them
        lo, hi = values[0], values[-1]
        step = (hi - lo) / 12 or 1.0
        binned: dict[str, dict[float, int]] = {}
        for m, h in series.items():
            b: dict[float, int] = {}
            for v, c in h.items():
                k = round(lo + min(int((v - lo) / step), 11) * step, 3)
                b[k] = b.get(k, 0) + c
            binned[m] = b
        series = binned
        values = sorted({v for h in series.values() for v in h})
    models = list(series)
    top = max(c for h in series.values() for c in h.values()) or 1
    plot_h, left, group_w = 120, 36, max(24, 14 * len(models) + 10)
    width = left + group_w * len(values) + 140
    height = plot_h + 60
    bw = (group_w - 8) / len(models)
    parts = [_open(width, height, title, kind), f'<text x="4" y="14" {_FONT} font-weight="bold">{escape(title)}</text>']
    base_y = 24 + plot_h
    for gi, v in enumerate(values):
        gx = left + gi * group_w + 4
        for mi, m in enumerate(models):
            c = series[m].get(v, 0)
            bar = c / top * plot_h
            parts.append(
                f'<rect x="{_num(gx + mi * bw)}" y="{_num(base_y - bar)}" width="{_num(max(bw - 1, 1))}" height="{_num(bar)}" '
                f'fill="{PALETTE[mi % len(PALETTE)]}"><title>{escape(m)}: {c} at {escape(_fmt(v))}</title></rect>'
            )
        parts.append(f'<text x="{_num(gx + (group_w - 8) / 2)}" y="{base_y + 13}" text-anchor="middle" {_FONT} fill="#555">{escape(_fmt(v))}</text>')
    parts.append(f'<line x1="{left}" y1="{base_y}" x2="{left + group_w * len(values)}" y2="{base_y}" stroke="#999"/>')
    parts.append(f'<text x="{left - 4}" y="30" text-anchor="end" {_FONT} fill="#555">{top}</text>')
    lx = left + group_w * len(values) + 10
    for mi, m in enumerate(models):
        parts.append(f'<rect x="{lx}" y="{30 + mi * 16}" width="10" height="10" fill="{PALETTE[mi % len(PALETTE)]}"/>')
        parts.append(f'<text x="{lx + 14}" y="{39 + mi * 16}" {_FONT}>{escape(m[:18])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def trend(points: Sequence[tuple[str, dict[str, float]]], *, title: str, kind: str = "trend") -> str:
    """Lines over runs: points are (run label, {series: value in [0, 1] or any range})."""
    if not points:
        return _empty(title, kind)
    names = sorted({k for _, d in points for k in d})
    vals = [v for _, d in points for v in d.values() if v is not None and not math.isnan(v)]
    if not vals:
        return _empty(title, kind)
    lo, hi = min(vals + [0.0]), max(vals + [1.0])
    left, plot_w, plot_h = 40, max(160, 70 * len(points)), 130
    width, height = left + plot_w + 200, plot_h + 70
    n = len(points)

    def px(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def py(v: float) -> float:
        return 24 + plot_h - (v - lo) / ((hi - lo) or 1.0) * plot_h

    parts = [_open(width, height, title, kind), f'<text x="4" y="14" {_FONT} font-weight="bold">{escape(title)}</text>']
    parts.append(f'<line x1="{left}" y1="{24 + plot_h}" x2="{left + plot_w}" y2="{24 + plot_h}" stroke="#999"/>')
    for t in (lo, hi):
        parts.append(f'<text x="{left - 4}" y="{_num(py(t) + 4)}" text-anchor="end" {_FONT} fill="#555">{escape(_fmt(t))}</text>')
    for i, (label, _) in enumerate(points):
        parts.append(f'<text x="{_num(px(i))}" y="{24 + plot_h + 13}" text-anchor="middle" {_FONT} fill="#555">{escape(label[-15:])}</text>')
    for si, name in enumerate(names[:8]):
        color = PALETTE[si % len(PALETTE)]
        pts = [(px(i), py(d[name])) for i, (_, d) in enumerate(points) if d.get(name) is not None]
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(f"{_num(a)},{_num(b)}" for a, b in pts)}"/>')
        for a, b in pts:
            parts.append(f'<circle cx="{_num(a)}" cy="{_num(b)}" r="3" fill="{color}"/>')
        parts.append(f'<rect x="{left + plot_w + 12}" y="{24 + si * 16}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{33 + si * 16}" {_FONT}>{escape(name[:28])}</text>')
    parts.append("</svg>")
    return "".join(parts)
