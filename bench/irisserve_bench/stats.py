"""Order statistics for latency samples: percentiles, medians, a compact CDF."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

CDF_POINTS = 101  # latency at every whole percentile, 0..100: enough for a smooth curve, small in the JSON
SUMMARY_PERCENTILES: tuple[float, ...] = (50.0, 95.0, 99.0)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; NaN when empty."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] * (1.0 - fraction) + sorted_values[high] * fraction


def median(values: Iterable[float]) -> float:
    """The median of the finite values; NaN when there are none."""
    finite = sorted(value for value in values if value is not None and math.isfinite(value))
    return percentile(finite, 50.0)


def summarize_ms(latencies_s: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/mean/min/max of latencies given in seconds, reported in milliseconds."""
    ordered = sorted(latencies_s)
    summary: dict[str, Any] = {f"p{q:g}_ms": percentile(ordered, q) * 1e3 for q in SUMMARY_PERCENTILES}
    summary["mean_ms"] = (sum(ordered) / len(ordered) * 1e3) if ordered else math.nan
    summary["min_ms"] = ordered[0] * 1e3 if ordered else math.nan
    summary["max_ms"] = ordered[-1] * 1e3 if ordered else math.nan
    summary["count"] = len(ordered)
    return summary


def cdf_ms(latencies_s: Sequence[float]) -> list[float]:
    """Latency (ms) at each whole percentile 0..100, so a CDF can be drawn from the JSON alone."""
    ordered = sorted(latencies_s)
    if not ordered:
        return []
    return [percentile(ordered, q) * 1e3 for q in range(CDF_POINTS)]


def median_of(rows: Sequence[dict[str, Any]], key: str) -> float:
    """The median of ``row[key]`` across repeats."""
    return median(row.get(key, math.nan) for row in rows)
