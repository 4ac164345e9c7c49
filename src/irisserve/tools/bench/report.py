"""Targets with PASS/MISS, the Markdown report and the PNG chart, all drawn from the results dict alone."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASS, MISS = "PASS", "MISS"
COLOURS = {"web": "#1f77b4", "function": "#ff7f0e", "function-lazy": "#ff7f0e", "function-import": "#d62728", "cloud-run": "#1f77b4", "cloud-function": "#ff7f0e"}
PHASE_COLOURS = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#8c8c8c"]


@dataclass(frozen=True)
class Target:
    """One goal from the issues: where its figure sits in the results, and the bound it must meet."""

    name: str
    unit: str
    bound: float
    compare: Callable[[float, float], bool]
    locate: Callable[[dict[str, Any]], float]
    sign: str

    def judge(self, results: dict[str, Any]) -> dict[str, Any]:
        try:
            measured = float(self.locate(results))
        except (KeyError, IndexError, TypeError, StopIteration):
            measured = math.nan
        verdict = PASS if math.isfinite(measured) and self.compare(measured, self.bound) else MISS
        return {"target": self.name, "measured": measured, "bound": self.bound, "unit": self.unit, "sign": self.sign, "verdict": verdict}


def _inprocess(results: dict[str, Any], backend: str, path: str) -> float:
    return next(row for row in results["inprocess"] if row["backend"] == backend)[path]["p50_us"]


TARGETS: tuple[Target, ...] = (
    Target("ONNX single-row inference p50 (raw backend call)", "µs", 20.0, operator.le,
           lambda r: _inprocess(r, "onnx", "backend_call"), "≤"),
    Target("Web POST /predict ÷ GET /health throughput, 1 worker", "×", 0.8, operator.ge,
           lambda r: r["warm"]["predict_to_health_throughput_ratio"]["median"], "≥"),
    Target("Web cold start median (spawn → first 200 from /predict)", "s", 0.6, operator.le,
           lambda r: r["cold_start"]["web"]["median_s"], "≤"),
    Target("Web resident memory after ≥1,000 requests", "MB", 110.0, operator.le,
           lambda r: r["warm"]["memory"]["web"]["rss_mb"], "≤"),
    Target("Function cold start median, lazy load", "s", 0.5, operator.le,
           lambda r: r["cold_start"]["function-lazy"]["median_s"], "≤"),
    Target("Function cold start median, import-time load", "s", 0.5, operator.le,
           lambda r: r["cold_start"]["function-import"]["median_s"], "≤"),
)


def judge_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target that applies to these results (the function's only when it was measured)."""
    verdicts = [target.judge(results) for target in TARGETS]
    return [v for v in verdicts if not (v["target"].startswith("Function") and "function-lazy" not in results.get("cold_start", {}))]


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def target_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    rows = [[v["target"], f"{_fmt(v['measured'])} {v['unit']}", f"{v['sign']} {_fmt(v['bound'])} {v['unit']}", f"**{v['verdict']}**"] for v in verdicts]
    return _table(["Target", "Measured", "Target", "Verdict"], rows)


def local_markdown(results: dict[str, Any], chart_name: str | None) -> str:
    """The local run as Markdown: machine, targets, cold start phases, warm latency, memory, method notes."""
    m, plan = results["machine"], results["plan"]
    lines = [
        "# irisserve benchmark (local)",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['platform']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}. "
        f"Run took {results['duration_s']:.0f} s. Figures are medians of {plan['repeats']} repeats "
        f"({plan['cold_starts']} fresh processes per pattern for cold starts); web service and function ran "
        "interleaved in the same run.",
        "",
        "## Targets",
        "",
        *target_lines(judge_targets(results)),
        "",
    ]
    if chart_name:
        lines += [f"![latency CDFs and cold-start phases]({chart_name})", ""]
    lines += _inprocess_lines(results) + _cold_lines(results) + _warm_lines(results) + _memory_lines(results)
    lines += [
        "## How it was measured",
        "",
        "- Web service: `irisserve serve` (the container's command), 1 worker, ONNX backend. Function: "
        "`functions-framework --source <bundle>/main.py --target predict` (gunicorn, 1 worker, threads) from "
        "the bundle `irisserve bundle-function` builds, with only the bundle on the import path for `irisserve`.",
        "- Cold start: the wall clock just before `Popen` to the first 200 from a prediction (polled every 2 ms). "
        "The phases end at the marks each process reports in `startup` (`/health`, or the function's GET): "
        "*interpreter + imports* includes the server framework's own imports; *first response* spans "
        "the server binding its socket, the poll interval and the first request. For the lazy function, "
        "the model loads inside the first request, after the phase *server start, first request arrives*.",
        "- Warm load: a lean keep-alive HTTP/1.1 client on asyncio (not httpx: on 2 cores httpx's CPU "
        "cost, not the server, set the pace); the client's CPU share is in the JSON (`client_cpu_fraction`). "
        "Client and server share the 2 cores, so absolute throughput is a floor, ratios are the robust figures.",
        "- Memory: VmRSS of the server process and its children (functions-framework: gunicorn arbiter + worker, "
        "whose shared pages RSS counts twice; PSS shown too).",
        "",
    ]
    return "\n".join(lines)


def _inprocess_lines(results: dict[str, Any]) -> list[str]:
    rows = []
    for row in results["inprocess"]:
        if "error" in row:
            rows.append([row["backend"], "—", "—", "—", "—", f"not measured: {row['error']}"])
            continue
        raw, full = row["backend_call"], row["predict_rows"]
        rows.append([row["backend"], _fmt(raw["p50_us"], 1), _fmt(raw["p99_us"], 1), _fmt(full["p50_us"], 1), _fmt(full["p99_us"], 1), str(row["calls_per_repeat"])])
    header = ["Backend", "backend call p50 µs", "p99 µs", "predict_rows p50 µs", "p99 µs", "calls / repeat"]
    return ["## Single-row inference in process", "", *_table(header, rows), ""]


def _cold_lines(results: dict[str, Any]) -> list[str]:
    cold = results["cold_start"]
    rows = []
    for name, summary in cold.items():
        phases = ", ".join(f"{phase} {seconds * 1e3:.0f}" for phase, seconds in summary["median_phase_s"].items())
        samples = ", ".join(f"{s['seconds']:.2f}" for s in summary["samples"])
        rows.append([name, _fmt(summary["median_s"]), phases, samples])
    return ["## Cold start (spawn → first 200)", "", *_table(["Pattern", "Median s", "Median phases (ms)", "Samples s"], rows), ""]


def _warm_lines(results: dict[str, Any]) -> list[str]:
    warm = results["warm"]
    rows = []
    for name, kinds in warm["patterns"].items():
        for kind, summary in kinds.items():
            med = summary["median_of_repeats"]
            concurrency = summary["runs"][0]["concurrency"]
            rows.append([name, kind.replace("_", " "), str(concurrency), _fmt(med["throughput_rps"], 0), _fmt(med["p50_ms"]), _fmt(med["p95_ms"]), _fmt(med["p99_ms"]), str(summary["errors"]), f"{med['client_cpu_fraction'] * 100:.0f}%"])
    ratio = warm["predict_to_health_throughput_ratio"]
    per_repeat = ", ".join(f"{r:.2f}" for r in ratio["per_repeat"])
    header = ["Pattern", "Load", "Clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "Errors", "Client CPU"]
    return [
        "## Warm latency and throughput (medians of repeats)", "", *_table(header, rows), "",
        f"Web `POST /predict` ÷ `GET /health` throughput, measured back to back in each repeat: median {_fmt(ratio['median'])} (repeats: {per_repeat}).",
        "",
    ]


def _memory_lines(results: dict[str, Any]) -> list[str]:
    rows = [[name, str(mem["processes"]), _fmt(mem["rss_mb"], 1), _fmt(mem["pss_mb"], 1), str(mem["after_requests"])] for name, mem in results["warm"]["memory"].items()]
    return ["## Resident memory after the warm load", "", *_table(["Pattern", "Processes", "RSS MB", "PSS MB", "After requests"], rows), ""]


def remote_markdown(results: dict[str, Any], chart_name: str | None) -> str:
    lines = ["# irisserve benchmark (remote)", "", f"Concurrency {results['plan']['concurrency']}, {results['plan']['num_requests']} warm requests per pattern, idle {results['idle_seconds_before_first_request']:g} s before the first request.", ""]
    rows = []
    for name, pattern in results["patterns"].items():
        seq = pattern["sequential"]
        rows.append([name, pattern["url"], _fmt(pattern["first_request"]["seconds"] * 1e3, 0), _fmt(seq["p50_ms"]), _fmt(seq["p95_ms"]), _fmt(seq["p99_ms"]), str(seq["errors"])])
        if pattern["concurrent"]:
            con = pattern["concurrent"]
            rows.append([f"{name} ({con['concurrency']} clients)", "", "", _fmt(con["p50_ms"]), _fmt(con["p95_ms"]), _fmt(con["p99_ms"]), str(con["errors"])])
    lines += _table(["Pattern", "URL", "First request ms", "p50 ms", "p95 ms", "p99 ms", "Errors"], rows)
    if chart_name:
        lines += ["", f"![latency CDFs]({chart_name})"]
    lines += ["", "## What was and was not measured", "", results["not_measured"], ""]
    return "\n".join(lines)


def _cdfs(results: dict[str, Any]) -> dict[str, list[float]]:
    """The curves to draw: each pattern's prediction latency, concurrent and sequential."""
    curves: dict[str, list[float]] = {}
    if results["mode"] == "local":
        for name, kinds in results["warm"]["patterns"].items():
            for kind in ("predict_concurrent", "predict_sequential"):
                if kind in kinds and kinds[kind]["cdf_ms"]:
                    curves[f"{name} {kind.split('_')[1]}"] = kinds[kind]["cdf_ms"]
    else:
        for name, pattern in results["patterns"].items():
            for kind in ("sequential", "concurrent"):
                if pattern.get(kind) and pattern[kind]["cdf_ms"]:
                    curves[f"{name} {kind}"] = pattern[kind]["cdf_ms"]
    return curves


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """Latency CDFs of both patterns; for a local run, stacked cold-start phase bars beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    local = results["mode"] == "local"
    figure, axes = plt.subplots(1, 2 if local else 1, figsize=(13 if local else 7, 4.8), squeeze=False)
    cdf_axis = axes[0][0]
    fractions = [q / 100 for q in range(101)]
    for label, values in _cdfs(results).items():
        pattern = label.split(" ")[0]
        cdf_axis.plot(values, fractions[: len(values)], label=label, color=COLOURS.get(pattern), linestyle="-" if "concurrent" in label else "--")
    cdf_axis.set_xscale("log")
    cdf_axis.set_xlabel("latency (ms, log scale)")
    cdf_axis.set_ylabel("fraction of requests")
    cdf_axis.set_title("Warm prediction latency (CDF)")
    cdf_axis.grid(True, which="both", alpha=0.3)
    cdf_axis.legend(fontsize=8)
    if local:
        _phase_bars(axes[0][1], results["cold_start"])
    figure.suptitle(f"irisserve, {results['machine']['cpus'] if local else ''}{' CPUs, ' if local else ''}{results['mode']} run")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _phase_bars(axis: Any, cold: dict[str, Any]) -> None:
    names = list(cold)
    phase_names: list[str] = []
    for summary in cold.values():
        phase_names += [p for p in summary["median_phase_s"] if p not in phase_names]
    left = [0.0] * len(names)
    for index, phase in enumerate(phase_names):
        widths = [cold[name]["median_phase_s"].get(phase, 0.0) * 1e3 for name in names]
        axis.barh(names, widths, left=left, label=phase, color=PHASE_COLOURS[index % len(PHASE_COLOURS)])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, name in enumerate(names):
        axis.text(left[y], y, f"  {cold[name]['median_s'] * 1e3:.0f} ms", va="center", fontsize=8)
    axis.set_xlabel("ms from spawn (medians of phases)")
    axis.set_title("Cold start: spawn → first 200")
    axis.set_xlim(0, max(left) * 1.25 if left and max(left) > 0 else 1)
    axis.invert_yaxis()
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
