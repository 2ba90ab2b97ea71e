"""Small inline SVG charts: numbers drawn on the server, scaled to the page's width, readable on a phone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

COLOURS = ("#4c6ef5", "#f08c00", "#2f9e44", "#c2255c", "#7048e8", "#1098ad")
_WIDTH, _ROW, _LABEL = 600, 16, 170  # the view box: scaled down to the page by CSS


def _number(value: object) -> float | None:
    try:
        number = float(value)  # DVC's plot rows hold numbers as text
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _svg(height: float, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height:.0f}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>'
    )


def legend(names: Sequence[str]) -> Markup:
    items = "".join(
        f'<span class="key"><i style="background:{COLOURS[i % len(COLOURS)]}"></i>{escape(name)}</span>'
        for i, name in enumerate(names)
    )
    return Markup(f'<div class="legend">{items}</div>')


def bars(categories: Sequence[str], series: dict[str, Sequence[object]], label: str) -> Markup:
    """Horizontal bars, one group per category and one bar per series (a series per revision or model)."""
    names = list(series)
    values = [[_number(v) for v in series[name]] for name in names]
    top = max([abs(v) for row in values for v in row if v is not None] or [1.0]) or 1.0
    group = _ROW * len(names) + 6
    body = []
    for c, category in enumerate(categories):
        y = c * group
        body.append(
            f'<text x="{_LABEL - 6}" y="{y + group / 2 + 2:.0f}" text-anchor="end">{escape(str(category))}</text>'
        )
        for s, name in enumerate(names):
            value = values[s][c] if c < len(values[s]) else None
            if value is None:
                continue
            width = (_WIDTH - _LABEL - 60) * abs(value) / top
            colour = COLOURS[s % len(COLOURS)]
            body.append(
                f'<rect x="{_LABEL}" y="{y + s * _ROW + 3}" width="{width:.1f}" height="{_ROW - 3}" fill="{colour}">'
                f"<title>{escape(name)}: {value:g}</title></rect>"
                f'<text x="{_LABEL + width + 4:.1f}" y="{y + s * _ROW + _ROW - 2}">{value:.4g}</text>'
            )
    return _svg(max(group * len(categories), 20), body, label)


def scatter(points: dict[str, Sequence[tuple[object, object]]], label: str, limit: int = 600) -> Markup:
    """Points per series (x, y), with the y = x diagonal: predicted against actual."""
    clean = {
        name: [(x, y) for x, y in ((_number(a), _number(b)) for a, b in rows[:: max(1, len(rows) // limit)])
               if x is not None and y is not None]
        for name, rows in points.items()
    }  # fmt: skip
    every = [v for rows in clean.values() for point in rows for v in point]
    low, high = (min(every), max(every)) if every else (0.0, 1.0)
    span = (high - low) or 1.0
    size = _WIDTH * 0.6

    def at(value: float) -> float:
        return 30 + (value - low) / span * (size - 40)

    body = [f'<line x1="{at(low):.1f}" y1="{size - at(low):.1f}" x2="{at(high):.1f}" y2="{size - at(high):.1f}" '
            'class="diagonal"/>']  # fmt: skip
    for s, rows in enumerate(clean.values()):
        colour = COLOURS[s % len(COLOURS)]
        body += [f'<circle cx="{at(x):.1f}" cy="{size - at(y):.1f}" r="2" fill="{colour}" fill-opacity="0.5"/>'
                 for x, y in rows]  # fmt: skip
    body.append(f'<text x="{at(high):.0f}" y="{size - 4:.0f}" text-anchor="end">{high:.4g}</text>')
    body.append(f'<text x="30" y="{size - 4:.0f}">{low:.4g}</text>')
    return _svg(size, body, label)


def lines(xs: Sequence[str], series: dict[str, Sequence[object]], label: str) -> Markup:
    """One line per series over the same x labels (windows): production error per slice over time."""
    values = {name: [_number(v) for v in row] for name, row in series.items()}
    every = [v for row in values.values() for v in row if v is not None]
    top = max(every or [1.0]) or 1.0
    height, left, right = 220, 40, _WIDTH - 10
    step = (right - left) / max(1, len(xs) - 1)

    def y_of(value: float) -> float:
        return height - 24 - value / top * (height - 40)

    body = [f'<line x1="{left}" y1="{y_of(0):.0f}" x2="{right}" y2="{y_of(0):.0f}" class="axis"/>',
            f'<text x="{left - 4}" y="{y_of(top) + 4:.0f}" text-anchor="end">{top:.3g}</text>',
            f'<text x="{left - 4}" y="{y_of(0):.0f}" text-anchor="end">0</text>']  # fmt: skip
    for i, x in enumerate(xs):
        if len(xs) <= 8 or i in (0, len(xs) - 1):
            anchor = "start" if i == 0 else "end" if i == len(xs) - 1 else "middle"  # the ends stay inside
            body.append(f'<text x="{left + i * step:.0f}" y="{height - 6}" text-anchor="{anchor}">{escape(x)}</text>')
    for s, (name, row) in enumerate(values.items()):
        colour = COLOURS[s % len(COLOURS)]
        points = [(left + i * step, y_of(v)) for i, v in enumerate(row) if v is not None]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
                    f"<title>{escape(name)}</title></polyline>")  # fmt: skip
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
    return _svg(height, body, label)
