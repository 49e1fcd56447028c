"""Charts drawn on the server as SVG: no script, no inline style (the Content-Security-Policy
forbids both), only presentation attributes. Each chart names itself for screen readers, and the
pages show the same figures in a table beside it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Colours with at least 3:1 contrast against white (graphics) from one palette.
FOR, AGAINST, NEUTRAL, TEXT = "#00703c", "#d4351c", "#505a5f", "#0b0c0c"
SERIES = ("#1d70b8", "#00703c", "#f47738", "#912b88", "#d4351c", "#505a5f", "#28a197", "#b58840")
# Reconciliation with the PND: in sync, then held, stale, missing, rejected, conflict.
IN_STEP = ("#00703c", "#1d70b8", "#f47738", "#d4351c", "#912b88", "#505a5f")


@dataclass(frozen=True)
class Step:
    """One bar of a waterfall: a label and what it adds."""

    label: str
    value: float
    detail: str = ""


def _number(value: float) -> str:
    return f"{value:+.2f}"


def waterfall(title: str, prior: float, steps: Sequence[Step], total_label: str = "Match weight") -> Markup:
    """A horizontal waterfall of match weights: the prior, each comparison's contribution from where
    the previous one ended (green for a match, red against), then the total. The axis is the match
    weight (log2 of the odds), zero marked."""
    running = [prior]
    for step in steps:
        running.append(running[-1] + step.value)
    total = running[-1]
    low, high = min(0.0, *running), max(0.0, *running)
    span = (high - low) or 1.0
    label_width, plot_width, row, top = 200, 420, 26, 30
    height = top + row * (len(steps) + 2) + 30

    def x(value: float) -> float:
        return label_width + (value - low) / span * plot_width

    ident = f"chart-{uuid.uuid4().hex[:8]}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-labelledby="{ident}" '
        f'viewBox="0 0 {label_width + plot_width + 260} {height}" width="{label_width + plot_width + 260}" '
        f'height="{height}">',
        f'<title id="{ident}">{escape(title)}</title>',
        f'<line x1="{x(0):.1f}" y1="{top - 10}" x2="{x(0):.1f}" y2="{height - 25}" stroke="{TEXT}" '
        'stroke-dasharray="3 3"/>',
        f'<text x="{x(0):.1f}" y="{height - 8}" text-anchor="middle" font-size="12" fill="{TEXT}">0</text>',
    ]

    def bar(index: int, label: str, start: float, end: float, colour: str, value: str) -> None:
        y = top + index * row
        left, right = sorted((x(start), x(end)))
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end" font-size="13" fill="{TEXT}">'
            f"{escape(label)}</text>"
        )
        parts.append(
            f'<rect x="{left:.1f}" y="{y + 3}" width="{max(right - left, 1.5):.1f}" height="{row - 8}" '
            f'fill="{colour}"><title>{escape(label)}: {escape(value)}</title></rect>'
        )
        parts.append(
            f'<text x="{right + 4:.1f}" y="{y + 16}" font-size="12" fill="{TEXT}">{escape(value)}</text>'
        )

    bar(0, "Prior", 0.0, prior, NEUTRAL, _number(prior))
    for index, step in enumerate(steps, start=1):
        text = _number(step.value) + (f" ({step.detail})" if step.detail else "")
        colour = FOR if step.value >= 0 else AGAINST
        bar(index, step.label, running[index - 1], running[index], colour, text)
    bar(len(steps) + 1, total_label, 0.0, total, TEXT, _number(total))
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(
    title: str,
    rows: Sequence[tuple[str, Sequence[float]]],
    series: Sequence[str],
    unit: str = "",
    colours: Sequence[str] = SERIES,
) -> Markup:
    """Horizontal stacked bars, one row per label (a region, a force), one segment per series
    (coloured from `colours` in order), with a legend. Values are counts; an empty chart says so."""
    # Drawn at its natural size (one unit a CSS pixel): the labels' width, a fixed plot, a legend
    # of as many columns as fit.
    longest = max((len(label) for label, _ in rows), default=8)
    label_width, plot_width, row, top = int(max(80, 7.5 * longest + 14)), 300, 24, 10
    width = label_width + plot_width + 60
    columns = max(1, (width - 10) // 150)
    legend_rows = (len(series) + columns - 1) // columns if len(series) > 1 else 0
    height = top + row * max(len(rows), 1) + 14 + legend_rows * 20
    largest = max((sum(values) for _, values in rows), default=0) or 1
    ident = f"chart-{uuid.uuid4().hex[:8]}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-labelledby="{ident}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<title id="{ident}">{escape(title)}</title>',
    ]
    if not rows:
        parts.append(f'<text x="10" y="{top + 16}" font-size="13" fill="{TEXT}">Nothing to show.</text>')
    for index, (label, values) in enumerate(rows):
        y = top + index * row
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end" font-size="13" fill="{TEXT}">'
            f"{escape(label)}</text>"
        )
        left = float(label_width)
        for number, value in enumerate(values):
            if value <= 0:
                continue
            segment = value / largest * plot_width
            name = series[number] if number < len(series) else ""
            parts.append(
                f'<rect x="{left:.1f}" y="{y + 3}" width="{segment:.1f}" height="{row - 7}" '
                f'fill="{colours[number % len(colours)]}"><title>{escape(label)}, {escape(name)}: '
                f"{value:g}{escape(unit)}</title></rect>"
            )
            left += segment
        parts.append(
            f'<text x="{left + 4:.1f}" y="{y + 16}" font-size="12" fill="{TEXT}">{sum(values):g}{escape(unit)}</text>'
        )
    legend_top = top + row * max(len(rows), 1) + 6
    for number, name in enumerate(series if len(series) > 1 else ()):
        lx, ly = 10 + (number % columns) * 150, legend_top + (number // columns) * 20
        parts.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colours[number % len(colours)]}"/>'
        )
        parts.append(f'<text x="{lx + 18}" y="{ly + 11}" font-size="12" fill="{TEXT}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
