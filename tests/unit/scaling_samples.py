"""Scaling results built by hand, for the tests of the scaling report and plots."""

from __future__ import annotations

from loadtest.bench.flops import DecoderShape
from loadtest.bench.scaling.measure import point_flops
from loadtest.bench.scaling.points import ScalingPoint
from loadtest.bench.scaling.results import ScalingResult

SHAPE = DecoderShape(hidden_size=128, intermediate_size=384, layers=4, heads=2, kv_heads=2, head_dim=64,
                     vocab_size=764)


def result(engine: str, point: ScalingPoint, seconds: tuple[float, ...] = (), skipped: str | None = None,
           cached: float | None = 0.0, cpu_s: dict[str, float] | None = None) -> ScalingResult:
    """`engine` at `point` on SHAPE with 24-token suffixes, against a 1 GFLOP/s peak."""
    needed, naive = point_flops(SHAPE, point, 24)
    return ScalingResult(engine, point, needed, naive, 1e9, seconds, cached, skipped, cpu_s or {})
