"""Markdown table cells shared by the benchmarks' reports."""

from __future__ import annotations


def number_cell(value: float | None, digits: int = 1) -> str:
    """A figure with `digits` decimals, or "-" where there is none."""
    return "-" if value is None else f"{value:.{digits}f}"
