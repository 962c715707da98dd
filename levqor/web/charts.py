"""Charts as server-rendered SVG: no chart library, no script; each chart's numbers are
also given as a table beside it (for screen readers, and to copy)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, GUTTER = 640, 180, 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float


@dataclass(frozen=True)
class BarChart:
    title: str
    unit: str
    bars: list[Bar]
    peak: float
    width: int = WIDTH
    height: int = HEIGHT + GUTTER


def bar_chart(title: str, unit: str, points: list[tuple[str, float]]) -> BarChart:
    """Bars for `points` (label, value), scaled to the largest; zero gets no height."""
    peak = max((value for _, value in points), default=0) or 1
    slot = WIDTH / max(len(points), 1)
    bars = []
    for index, (label, value) in enumerate(points):
        height = HEIGHT * value / peak
        bars.append(
            Bar(
                x=index * slot + slot * 0.1,
                y=HEIGHT - height,
                width=slot * 0.8,
                height=height,
                label=label,
                value=value,
            )
        )
    return BarChart(title=title, unit=unit, bars=bars, peak=peak)
