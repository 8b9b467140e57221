"""What a saved matplotlib figure shows, read back for the plot tests: the
`saved_figures` fixture (tests/unit/conftest.py) hands over every figure a
test saved, and these read its series by label.

A figure keeps its axes, lines and scatters after `plt.close`, so a plot
function that saves and closes its figure can still be checked this way.
"""

from __future__ import annotations

from typing import Any

import pytest

Axes = Any  # matplotlib.axes.Axes; not imported here, so collecting tests loads no matplotlib


def lines(axes: Axes) -> dict[str, tuple[list[float], list[float]]]:
    """Each line of `axes` (plot, axhline, axvline) by its label: (xs, ys)."""
    drawn = {line.get_label(): ([float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()])
             for line in axes.get_lines()}
    assert len(drawn) == len(axes.get_lines()), "two lines share a label"
    return drawn


def points(axes: Axes) -> dict[str, tuple[list[float], list[float]]]:
    """Each scatter of `axes` by its label: (xs, ys) of its points."""
    drawn = {collection.get_label(): ([float(x) for x, _ in collection.get_offsets()],
                                      [float(y) for _, y in collection.get_offsets()])
             for collection in axes.collections}
    assert len(drawn) == len(axes.collections), "two scatters share a label"
    return drawn


def legend(axes: Axes) -> list[str]:
    shown = axes.get_legend()
    return [] if shown is None else [text.get_text() for text in shown.get_texts()]


def assert_horizontal_line(axes: Axes, label: str, y: float) -> None:
    """A line across the whole width of `axes` at `y` (axhline: x in axes coordinates)."""
    xs, ys = lines(axes)[label]
    assert (xs, ys) == ([0.0, 1.0], [y, y]), (label, xs, ys)
    assert label in legend(axes)


def assert_vertical_line(axes: Axes, label: str, x: float) -> None:
    """A line across the whole height of `axes` at `x` (axvline)."""
    xs, ys = lines(axes)[label]
    assert (xs, ys) == ([x, x], [0.0, 1.0]), (label, xs, ys)
    assert label in legend(axes)


def series(xs: list[float], ys: list[float], rel: float = 1e-6) -> tuple[Any, Any]:
    """Expected (xs, ys) of a line or scatter, equal (`==`) to the drawn ones within `rel`."""
    return pytest.approx(xs, rel=rel), pytest.approx(ys, rel=rel)
