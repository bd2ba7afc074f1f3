"""Small inline SVG drawings for the pages: bar and line charts for the dashboard and the
linked-sellers graph of the case page. Every text is escaped; colours pass WCAG AA contrast
on white."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

INK, BAR, ALERT, MUTED = "#1a1a1a", "#1f5fa8", "#a8321f", "#555555"
PALETTE = (BAR, "#2e7d32", "#6a3d9a", "#8a5a00", MUTED)  # lines, each AA on white


def bars(title: str, points: Sequence[tuple[str, float]], fmt: str = "{:.0f}",
         width: int = 560, height: int = 200) -> Markup:
    """A labelled bar chart (one bar per point) with its title as the accessible name."""
    if not points:
        return Markup(f'<p class="empty">{escape(title)}: nothing yet.</p>')
    top = max(v for _, v in points) or 1.0
    step = min((width - 40) / len(points), 56.0)
    parts = [f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height + 40}"'
             f' width="100%" style="max-width:{width}px"><title>{escape(title)}</title>']
    for i, (label, value) in enumerate(points):
        h = (height - 30) * value / top
        x = 20 + i * step
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - h:.1f}" width="{max(step - 4, 1):.1f}" '
                     f'height="{h:.1f}" fill="{BAR}"/>')
        if len(points) <= 16 or i % math.ceil(len(points) / 16) == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - h - 4:.1f}" '
                         f'text-anchor="middle" font-size="11" fill="{INK}">'
                         f'{escape(fmt.format(value))}</text>'
                         f'<text x="{x + step / 2:.1f}" y="{height + 16}" text-anchor="middle" '
                         f'font-size="10" fill="{MUTED}">{escape(label)}</text>')
    parts.append(f'<line x1="20" y1="{height}" x2="{width - 20}" y2="{height}" '
                 f'stroke="{INK}"/></svg>')
    return Markup("".join(parts))


def seller_graph(seller: str, linked: Sequence[dict[str, object]], size: int = 300) -> Markup:
    """The seller in the middle, linked sellers around it; edges say how they are linked
    (solid: shared contact hash, dashed: shared photos)."""
    c = size / 2
    parts = [f'<svg role="img" aria-label="Sellers linked to {escape(seller)}" '
             f'viewBox="0 0 {size} {size}" width="{size}" height="{size}">'
             f'<title>Sellers linked to {escape(seller)}</title>']
    nodes = []
    for i, link in enumerate(linked):
        angle = 2 * math.pi * i / max(len(linked), 1)
        x, y = c + (c - 45) * math.cos(angle), c + (c - 45) * math.sin(angle)
        via = list(link["via"])  # type: ignore[call-overload]
        dash = "" if "contact" in via else ' stroke-dasharray="5 4"'
        parts.append(f'<line x1="{c}" y1="{c}" x2="{x:.1f}" y2="{y:.1f}" stroke="{MUTED}" '
                     f'stroke-width="2"{dash}><title>{escape(", ".join(via))}</title></line>')
        nodes.append((x, y, str(link["seller_id"]), BAR))
    nodes.append((c, c, seller, ALERT))
    for x, y, name, colour in nodes:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="{colour}"/>'
                     f'<text x="{x:.1f}" y="{y + 22:.1f}" text-anchor="middle" font-size="10" '
                     f'fill="{INK}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def lines(title: str, series: dict[str, Sequence[tuple[float, float]]],
          limits: Sequence[float] = (), x_labels: tuple[str, str] = ("", ""),
          width: int = 560, height: int = 200) -> Markup:
    """One line per named series of (x, y) points (e.g. a batch's time as a timestamp and its
    score PSI), x scaled over all series, a dot on each point, a dashed horizontal line at each
    of `limits` (e.g. warning levels) and `x_labels` under both ends of the x axis."""
    points = [p for values in series.values() for p in values]
    if not points:
        return Markup(f'<p class="empty">{escape(title)}: nothing yet.</p>')
    top = max([*(y for _, y in points), *limits, 0.0]) * 1.1 or 1.0
    low, span = min(x for x, _ in points), (max(x for x, _ in points) - min(x for x, _ in points))

    def at(x: float, y: float) -> tuple[float, float]:
        return (30 + (width - 100) * ((x - low) / span if span else 0.5),
                height - (height - 20) * y / top)

    parts = [f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height + 46}"'
             f' width="100%" style="max-width:{width}px"><title>{escape(title)}</title>',
             f'<line x1="30" y1="{height}" x2="{width - 70}" y2="{height}" stroke="{INK}"/>'
             f'<text x="24" y="{height + 4}" text-anchor="end" font-size="10" fill="{MUTED}">0'
             f'</text><text x="30" y="{height + 16}" font-size="10" fill="{MUTED}">'
             f'{escape(x_labels[0])}</text><text x="{width - 70}" y="{height + 16}" '
             f'text-anchor="end" font-size="10" fill="{MUTED}">{escape(x_labels[1])}</text>']
    for limit in limits:
        _, y = at(low, limit)
        parts.append(f'<line x1="30" y1="{y:.1f}" x2="{width - 70}" y2="{y:.1f}" '
                     f'stroke="{ALERT}" stroke-dasharray="6 4"/><text x="{width - 66}" '
                     f'y="{y + 4:.1f}" font-size="11" fill="{ALERT}">{limit:g}</text>')
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        placed = [at(x, y) for x, y in values]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in placed)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"><title>{escape(name)}</title></polyline>')
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>'
                     f'{escape(name)}: {value:.3f}</title></circle>'
                     for (x, y), (_, value) in zip(placed, values, strict=True))
        parts.append(f'<text x="{30 + 110 * k}" y="{height + 38}" font-size="11" '
                     f'fill="{colour}">■ {escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
