"""The run's headline figures, each under a name, computed from the results alone: what the targets in
docs/benchmark.md are set on (``targets.py``). No bound and no verdict here.

A figure is read from one model's block: the run's model (the results themselves) or an entry of ``other_models``;
the in-process ones and the model repository's memory (``repository``) exist in the run's block only. ``loads`` names
the (pattern, load) pairs a figure comes from: their failed requests are counted beside the value, because a p50 of
the requests that succeeded would flatter."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from irisserve_bench.models import EXTRA_IRIS_VERSION, IRIS, WINE, WINE_VERSION

Block = dict[str, Any]
WEB_VS_BARE = (("web", "predict_concurrent"), ("bare", "predict_concurrent"))
SOAK = (("memory_soak", ""),)
# The model each step of the growing repository adds (models.growing_repositories): a second model, a second version.
EXTRA_MODEL = f"{WINE} {WINE_VERSION}"
EXTRA_VERSION = f"{IRIS} {EXTRA_IRIS_VERSION}"


def _no_reference(block: Block) -> str:
    return ""


def _always(block: Block) -> bool:
    return True


@dataclass(frozen=True)
class Figure:
    """Where a figure sits in a block, what to show beside it (the reference figures), and when it exists."""

    locate: Callable[[Block], float]
    reference: Callable[[Block], str] = _no_reference
    applies: Callable[[Block], bool] = _always
    loads: tuple[tuple[str, str], ...] = ()

    def read(self, block: Block) -> dict[str, Any]:
        """``{"value", "reference", "errors", "first_error"}``; the value is NaN when the block lacks a part of it."""
        try:
            value = float(self.locate(block))
        except (KeyError, IndexError, TypeError, StopIteration, ZeroDivisionError):
            value = math.nan
        try:
            reference = self.reference(block)
        except (KeyError, IndexError, TypeError, StopIteration, ValueError):
            reference = ""
        errors, first_error = failures(block, self.loads)
        return {"value": value, "reference": reference, "errors": errors, "first_error": first_error}


def failures(block: Block, loads: tuple[tuple[str, str], ...]) -> tuple[int, str]:
    """Failed requests in these loads (``("memory_soak", "")`` for the soak), and the first error message seen."""
    count, first = 0, ""
    for pattern, load in loads:
        if pattern == "memory_soak":
            runs = [block.get(pattern, {})]
        else:
            runs = block.get("warm", {}).get("patterns", {}).get(pattern, {}).get(load, {}).get("runs", [])
        for run in runs:
            count += run.get("errors", 0)
            first = first or next(iter(run.get("error_samples", [])), "")
    return count, first


def model_blocks(results: dict[str, Any]) -> Iterator[Block]:
    """The run's model (the results themselves), then each ``--also-model``."""
    yield results
    yield from results.get("other_models", [])


def model_label(block: Block) -> str:
    model = block.get("model") or {}
    return str(model.get("name", "?"))


def _inprocess(results: Block, backend: str, path: str) -> float:
    return next(row for row in results["inprocess"] if row["backend"] == backend)[path]["p50_us"]


def live_cost_us(results: Block) -> float:
    """What the live figures and drift window add to one single-row request: the observer plus the request record."""
    return _inprocess(results, "onnx", "live_observe") + _inprocess(results, "onnx", "record_request")


def _warm(block: Block, pattern: str, load: str, figure: str = "throughput_rps") -> float:
    return float(block["warm"]["patterns"][pattern][load]["median_of_repeats"][figure])


def _ratio(block: Block, name: str) -> float:
    return float(block["warm"]["ratios"][name]["median"])


def _cold(block: Block, pattern: str) -> float:
    return float(block["cold_start"][pattern]["median_s"])


def _function_margin_ms(load: str) -> Callable[[Block], float]:
    return lambda block: (_cold(block, f"function-{load}") - _cold(block, "empty-function")) * 1e3


def _function_reference(load: str) -> Callable[[Block], str]:
    return lambda block: f"empty function {_cold(block, 'empty-function') * 1e3:,.0f} ms; function {_cold(block, f'function-{load}') * 1e3:,.0f} ms"


def _function_throughput_reference(block: Block) -> str:
    return (f"empty function {_warm(block, 'empty-function', 'predict_concurrent'):,.0f} req/s; empty ASGI function "
            f"{_warm(block, 'empty-asgi-function', 'predict_concurrent'):,.0f}; function {_warm(block, 'function', 'predict_concurrent'):,.0f}")


def _has_inprocess(block: Block) -> bool:
    return "inprocess" in block


def _has_function(block: Block) -> bool:
    return "empty-function" in block.get("cold_start", {})


def _has_soak(block: Block) -> bool:
    return "memory_soak" in block


def _has_repository_cold_start(block: Block) -> bool:
    return "web-repository" in block.get("cold_start", {})


def _has_repository(block: Block) -> bool:
    return "repository" in block


def _extra_model_mb(added: str) -> Callable[[Block], float]:
    """What the model ``added`` ("wine 1.0.0") adds to the resident memory of the repository before it."""
    return lambda block: block["repository"]["rss_per_extra_model_mb"][added]


def _repository_reference(added: str) -> Callable[[Block], str]:
    def reference(block: Block) -> str:
        rows = block["repository"]["repositories"]
        index = next(i for i, row in enumerate(rows) if row["added"] == added)
        return f"{rows[index - 1]['label']}: {rows[index - 1]['rss_mb']:.1f} MB; + {added}: {rows[index]['rss_mb']:.1f} MB"

    return reference


FIGURES: dict[str, Figure] = {
    "onnx_call_p50_us": Figure(lambda r: _inprocess(r, "onnx", "backend_call"), applies=_has_inprocess),
    "live_cost_p50_us": Figure(live_cost_us, applies=_has_inprocess),
    "web_vs_bare_throughput": Figure(
        lambda b: _ratio(b, "web_vs_bare_throughput"),
        lambda b: f"bare {_warm(b, 'bare', 'predict_concurrent'):,.0f} req/s; web {_warm(b, 'web', 'predict_concurrent'):,.0f} req/s",
        loads=WEB_VS_BARE),
    "web_vs_bare_p99": Figure(
        lambda b: _ratio(b, "web_vs_bare_p99"),
        lambda b: f"bare p99 {_warm(b, 'bare', 'predict_concurrent', 'p99_ms'):.2f} ms; web {_warm(b, 'web', 'predict_concurrent', 'p99_ms'):.2f} ms",
        loads=WEB_VS_BARE),
    "predict_vs_health_throughput": Figure(
        lambda b: _ratio(b, "predict_vs_health_throughput"),
        lambda b: f"/health {_warm(b, 'web', 'health_concurrent'):,.0f} req/s",
        loads=(("web", "predict_concurrent"), ("web", "health_concurrent"))),
    "v2_infer_vs_predict_throughput": Figure(
        lambda b: _ratio(b, "v2_infer_vs_predict_throughput"),
        lambda b: f"/predict {_warm(b, 'web', 'predict_concurrent'):,.0f} req/s; V2 {_warm(b, 'web', 'v2_infer_concurrent'):,.0f} req/s",
        loads=(("web", "v2_infer_concurrent"), ("web", "predict_concurrent"))),
    "batch_p50_ms": Figure(
        lambda b: _warm(b, "web", "batch_sequential", "p50_ms"),
        lambda b: f"p99 {_warm(b, 'web', 'batch_sequential', 'p99_ms'):.2f} ms; one-row /predict p50 {_warm(b, 'web', 'predict_sequential', 'p50_ms'):.2f} ms",
        loads=(("web", "batch_sequential"),)),
    "web_vs_bare_cold_start": Figure(
        lambda b: _cold(b, "web") / _cold(b, "bare"),
        lambda b: f"bare {_cold(b, 'bare') * 1e3:,.0f} ms; web {_cold(b, 'web') * 1e3:,.0f} ms"),
    "function_vs_empty_function_throughput": Figure(
        lambda b: _ratio(b, "function_vs_empty_function_throughput"), _function_throughput_reference, applies=_has_function,
        loads=(("function", "predict_concurrent"), ("empty-function", "predict_concurrent"))),
    "function_vs_web_throughput": Figure(
        lambda b: _ratio(b, "function_vs_web_throughput"),
        lambda b: f"web {_warm(b, 'web', 'predict_concurrent'):,.0f} req/s; function {_warm(b, 'function', 'predict_concurrent'):,.0f} req/s",
        applies=_has_function, loads=(("function", "predict_concurrent"), ("web", "predict_concurrent"))),
    "function_vs_web_p99": Figure(
        lambda b: _ratio(b, "function_vs_web_p99"),
        lambda b: f"web p99 {_warm(b, 'web', 'predict_concurrent', 'p99_ms'):.2f} ms; function {_warm(b, 'function', 'predict_concurrent', 'p99_ms'):.2f} ms",
        applies=_has_function, loads=(("function", "predict_concurrent"), ("web", "predict_concurrent"))),
    "function_lazy_cold_start_margin_ms": Figure(_function_margin_ms("lazy"), _function_reference("lazy"), applies=_has_function),
    "function_import_cold_start_margin_ms": Figure(_function_margin_ms("import"), _function_reference("import"), applies=_has_function),
    "web_rss_after_soak_mb": Figure(
        lambda b: b["memory_soak"]["rss_mb_at_end"],
        lambda b: f"bare app {b['warm']['memory']['bare']['rss_mb']:.1f} MB after its warm load", applies=_has_soak, loads=SOAK),
    "web_rss_over_bare_mb": Figure(
        lambda b: b["memory_soak"]["rss_mb_at_end"] - b["warm"]["memory"]["bare"]["rss_mb"],
        lambda b: f"web {b['memory_soak']['rss_mb_at_end']:.1f} MB after the soak; bare app {b['warm']['memory']['bare']['rss_mb']:.1f} MB after its warm load",
        applies=_has_soak, loads=SOAK),
    "web_rss_growth_last_half_mb": Figure(
        lambda b: b["memory_soak"]["growth_last_half_mb"],
        lambda b: f"{b['memory_soak']['rss_mb_at_half']:.1f} MB after {b['memory_soak']['half_at_requests']:,} requests",
        applies=_has_soak, loads=SOAK),
    "repository_vs_web_cold_start": Figure(
        lambda b: _cold(b, "web-repository") / _cold(b, "web"),
        lambda b: f"--model-dir {_cold(b, 'web') * 1e3:,.0f} ms; --models {_cold(b, 'web-repository') * 1e3:,.0f} ms",
        applies=_has_repository_cold_start),
    "extra_model_rss_mb": Figure(_extra_model_mb(EXTRA_MODEL), _repository_reference(EXTRA_MODEL), applies=_has_repository),
    "extra_version_rss_mb": Figure(_extra_model_mb(EXTRA_VERSION), _repository_reference(EXTRA_VERSION), applies=_has_repository),
}


def block_figures(block: Block) -> dict[str, dict[str, Any]]:
    """Every figure that applies to this block, by name."""
    return {name: figure.read(block) for name, figure in FIGURES.items() if figure.applies(block)}
