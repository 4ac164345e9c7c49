"""The Markdown report and the PNG chart, drawn from the results dict alone (the verdicts included: ``targets.py``
computes them from the run's figures against docs/benchmark.md)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from irisserve_bench.figures import live_cost_us, model_blocks, model_label
from irisserve_bench.local import UNSPLIT

COLOURS = {
    "web": "#1f77b4", "web-repository": "#17becf", "bare": "#2ca02c", "empty": "#7f7f7f", "function": "#ff7f0e", "function-lazy": "#ff7f0e",
    "function-import": "#d62728", "empty-function": "#9467bd", "empty-asgi-function": "#8c564b", "cloud-run": "#1f77b4", "cloud-function": "#ff7f0e",
}
PHASE_COLOURS = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#8c8c8c"]
UNSPLIT_COLOUR = "#c7c7c7"  # a reference's whole start-up, one bar (it reports no marks)
REFERENCE_PATTERNS = frozenset({"bare", "empty", "empty-function", "empty-asgi-function"})
# Side by side, in this order: irisserve's patterns, each followed by its references.
SIDE_BY_SIDE = (
    ("web", "web", "irisserve serve"),
    ("web-repository", None, "irisserve serve --models, a repository of this model alone"),
    ("bare", "bare", "reference: bare FastAPI app"),
    ("empty", "empty", "reference: empty FastAPI app"),
    ("function-lazy", "function", "irisserve function, lazy load"),
    ("function-import", None, "irisserve function, import-time load"),
    ("empty-function", "empty-function", "reference: empty function (Flask, gunicorn threads)"),
    ("empty-asgi-function", "empty-asgi-function", "reference: empty ASGI function (Starlette, uvicorn worker)"),
)
# The steps added to every request by the model page's live panel (ops/live.py, ops/drift.py), in order.
LIVE_PATHS = (
    ("predict_rows", "pipeline, no observer"),
    ("predict_rows_metrics", "+ Prometheus observer (the web service before the live panel)"),
    ("predict_rows_metrics_live", "+ drift window and live counts (the web service now)"),
    ("live_observe", "the live observer alone (drift window copy + counts)"),
    ("record_request", "the middleware's request record (deque append)"),
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def verdict_table(verdicts: list[dict[str, Any]]) -> list[str]:
    """The verdicts (``targets.judge``) as a Markdown table."""
    rows = [
        [v["model"], v["target"], f"{_fmt(v['measured'])} {v['unit']}", f"{v['sign']} {v['bound']:g} {v['unit']}", v["reference"] or "—", f"**{v['verdict']}**"]
        for v in verdicts
    ]
    return _table(["Model", "Target", "Measured", "Bound", "Reference (same run)", "Verdict"], rows)


def side_by_side(block: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pattern measured: cold start, concurrent /predict (req/s, p50, p99), RSS after the warm load."""
    rows = []
    for pattern, warm_name, what in SIDE_BY_SIDE:
        cold = block["cold_start"].get(pattern)
        warm = block["warm"]["patterns"].get(warm_name or "", {}).get("predict_concurrent")
        if cold is None and warm is None:
            continue
        figures = warm["median_of_repeats"] if warm else {}
        memory = block["warm"]["memory"].get(warm_name or "")
        rows.append({
            "pattern": pattern, "what": what, "cold_start_s": cold["median_s"] if cold else None,
            "throughput_rps": figures.get("throughput_rps"), "p50_ms": figures.get("p50_ms"), "p99_ms": figures.get("p99_ms"),
            "rss_mb": memory["rss_mb"] if memory else None,
        })
    return rows


def local_markdown(results: dict[str, Any], chart_name: str | None) -> str:
    """The local run as Markdown: machine, targets, then per model the patterns side by side, cold start phases,
    warm latency and memory; method notes last."""
    m, plan = results["machine"], results["plan"]
    models = ", ".join(model_label(block) for block in model_blocks(results))
    lines = [
        "# irisserve benchmark (local)",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['platform']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}. "
        f"Run took {results['duration_s']:.0f} s. Models: {models}. Figures are medians of {plan['repeats']} repeats "
        f"({plan['cold_starts']} fresh processes per pattern for cold starts); irisserve's patterns and the reference "
        "programs ran interleaved in the same run, so the ratios compare like with like.",
        "",
        "## Targets",
        "",
        *verdict_table(results.get("targets", [])),
        "",
    ]
    if chart_name:
        lines += [f"![latency CDFs and cold-start phases]({chart_name})", ""]
    lines += _inprocess_lines(results)
    for block in model_blocks(results):
        lines += _side_by_side_lines(block, plan) + _cold_lines(block) + _warm_lines(block) + _memory_lines(block)
    lines += _repository_lines(results)
    lines += [
        "## How it was measured",
        "",
        "- Web service: `irisserve serve` (the container's command), 1 worker, ONNX backend, default settings (metrics, "
        "JSON access log, request ids, body limit). Function: `functions-framework --source <bundle>/main.py --target "
        "predict` (gunicorn, 1 worker, threads) from the bundle `irisserve bundle-function` builds, with only the bundle "
        "on the import path for `irisserve`.",
        "- References, same installed libraries, each a standalone file run by path that imports nothing of irisserve: "
        "*bare* is `uvicorn --app-dir …/references bare_app:app` (pydantic model, `async def` handler, one ONNX Runtime "
        "session; no metrics, logs, limits or range flags), *empty* a FastAPI POST returning a constant, *empty-function* "
        "a functions-framework function returning a constant (Flask on gunicorn threads), *empty-asgi-function* the same "
        "as an `@functions_framework.aio.http` coroutine (Starlette on gunicorn's uvicorn worker).",
        "- Cold start: the wall clock just before `Popen` to the first 200 from a prediction (polled every 2 ms). "
        "The phases end at the marks each process reports in `startup` (`/health`, or the function's GET): "
        "*interpreter + imports* includes the server framework's own imports; *first response* spans "
        "the server binding its socket, the poll interval and the first request. For the lazy function, "
        "the model loads inside the first request, after the phase *server start, first request arrives*. "
        "The references report no marks: their start-up is one bar.",
        "- Warm load: a lean keep-alive HTTP/1.1 client on asyncio (not httpx: on 2 cores httpx's CPU "
        "cost, not the server, set the pace); the client's CPU share is in the JSON (`client_cpu_fraction`). "
        "Client and server share the 2 cores, so absolute throughput is a floor, ratios are the robust figures; "
        "each ratio is taken per repeat (both sides from the same repeat) and the median reported.",
        "- Memory: VmRSS of the server process and its children (functions-framework: gunicorn arbiter + worker, "
        "whose shared pages RSS counts twice; PSS shown too). The soak is a fresh web service driven with "
        f"{plan['memory_requests']:,} `POST /predict`, RSS read after every tenth.",
        "- Model repository: `irisserve serve --models DIR --default-model iris` over three repositories built for the run "
        "(Iris 1.0.0; + wine 1.0.0; + Iris 1.1.0, another forest seed), fresh processes, interleaved; RSS read once "
        "`/health` answers 200 and every version has answered one prediction. What a model adds is the difference of the "
        "medians of the repositories with and without it. The cold start of `--models` over a repository of the run's "
        "model alone is measured with the other cold starts (`web-repository`).",
        "",
    ]
    return "\n".join(lines)


def _side_by_side_lines(block: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    rows = [
        [row["pattern"], row["what"], _fmt(row["cold_start_s"], 3), _fmt(row["throughput_rps"], 0), _fmt(row["p50_ms"]), _fmt(row["p99_ms"]), _fmt(row["rss_mb"], 1)]
        for row in side_by_side(block)
    ]
    header = ["Pattern", "What", "Cold start s", f"req/s ({plan['concurrency']} clients)", "p50 ms", "p99 ms", "RSS MB"]
    return [f"## {model_label(block)}: irisserve and the references side by side (medians)", "", *_table(header, rows), ""]


def _inprocess_lines(results: dict[str, Any]) -> list[str]:
    rows = []
    for row in results["inprocess"]:
        if "error" in row:
            rows.append([row["backend"], "—", "—", "—", "—", f"not measured: {row['error']}"])
            continue
        raw, full = row["backend_call"], row["predict_rows"]
        rows.append([row["backend"], _fmt(raw["p50_us"], 1), _fmt(raw["p99_us"], 1), _fmt(full["p50_us"], 1), _fmt(full["p99_us"], 1), str(row["calls_per_repeat"])])
    header = ["Backend", "backend call p50 µs", "p99 µs", "predict_rows p50 µs", "p99 µs", "calls / repeat"]
    return ["## Single-row inference in process", "", *_table(header, rows), "", *_live_lines(results)]


def _live_lines(results: dict[str, Any]) -> list[str]:
    """The live panel's cost per request (ONNX backend): the pipeline before and after, and its two parts."""
    onnx = next((row for row in results["inprocess"] if row["backend"] == "onnx" and "error" not in row), None)
    if onnx is None or "live_observe" not in onnx:
        return []
    rows = [[f"`{path}`", what, _fmt(onnx[path]["p50_us"], 2), _fmt(onnx[path]["p99_us"], 2)] for path, what in LIVE_PATHS]
    return [
        "## Live figures and drift: cost per request (ONNX, one row, in process)",
        "",
        *_table(["Path", "What", "p50 µs", "p99 µs"], rows),
        "",
        f"Added per request: {_fmt(live_cost_us(results))} µs at p50 (observer + request record).",
        "",
    ]


def _cold_lines(block: dict[str, Any]) -> list[str]:
    rows = []
    for name, summary in block["cold_start"].items():
        phases = ", ".join(f"{phase} {seconds * 1e3:.0f}" for phase, seconds in summary["median_phase_s"].items())
        samples = ", ".join(f"{s['seconds']:.2f}" for s in summary["samples"])
        rows.append([name, _fmt(summary["median_s"], 3), phases, samples])
    header = ["Pattern", "Median s", "Median phases (ms)", "Samples s"]
    return [f"## {model_label(block)}: cold start (spawn → first 200)", "", *_table(header, rows), ""]


def _warm_lines(block: dict[str, Any]) -> list[str]:
    warm = block["warm"]
    rows = []
    for name, kinds in warm["patterns"].items():
        for kind, summary in kinds.items():
            med = summary["median_of_repeats"]
            concurrency = summary["runs"][0]["concurrency"]
            rows.append([name, kind.replace("_", " "), str(concurrency), _fmt(med["throughput_rps"], 0), _fmt(med["p50_ms"]), _fmt(med["p95_ms"]), _fmt(med["p99_ms"]), str(summary["errors"]), f"{med['client_cpu_fraction'] * 100:.0f}%"])
    header = ["Pattern", "Load", "Clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "Errors", "Client CPU"]
    ratio_rows = [
        [f"`{name}`", ratio["figure"], _fmt(ratio["median"]), ", ".join(f"{r:.2f}" for r in ratio["per_repeat"])]
        for name, ratio in warm["ratios"].items()
    ]
    return [
        f"## {model_label(block)}: warm latency and throughput (medians of repeats)", "", *_table(header, rows), "",
        "Ratios, each taken within a repeat (both loads minutes apart at most), then the median:", "",
        *_table(["Ratio", "Figure", "Median", "Repeats"], ratio_rows), "",
    ]


def _memory_lines(block: dict[str, Any]) -> list[str]:
    rows = [[name, str(mem["processes"]), _fmt(mem["rss_mb"], 1), _fmt(mem["pss_mb"], 1), f"{mem['after_requests']:,}"] for name, mem in block["warm"]["memory"].items()]
    lines = [f"## {model_label(block)}: resident memory", "", "After the warm load:", "", *_table(["Pattern", "Processes", "RSS MB", "PSS MB", "After requests"], rows), ""]
    soak = block.get("memory_soak")
    if soak:
        samples = ", ".join(f"{sample['after_requests']:,}: {sample['rss_mb']:.1f}" for sample in soak["samples"])
        lines += [
            f"Soak ({soak['pattern']}, fresh process, {soak['requests']:,} `POST /predict` at {soak['concurrency']} clients, "
            f"{soak['errors']} errors): RSS {_fmt(soak['rss_mb_at_half'], 1)} MB after {soak['half_at_requests']:,}, "
            f"{_fmt(soak['rss_mb_at_end'], 1)} MB at the end (growth over the last half {_fmt(soak['growth_last_half_mb'], 2)} MB). "
            f"RSS MB by requests served: {samples}.",
            "",
        ]
    return lines


def _repository_lines(results: dict[str, Any]) -> list[str]:
    repository = results.get("repository")
    if not repository:
        return []
    extra, pss = repository["rss_per_extra_model_mb"], repository["pss_per_extra_model_mb"]
    rows = [
        [row["label"], _fmt(row["rss_mb"], 1), _fmt(row["pss_mb"], 1),
         f"{_fmt(extra[row['added']], 1)} / {_fmt(pss[row['added']], 1)}" if row["added"] in extra else "—",
         ", ".join(f"{sample['rss_mb']:.1f}" for sample in row["samples"])]
        for row in repository["repositories"]
    ]
    header = ["Repository (`irisserve serve --models`)", "RSS MB", "PSS MB", "Added by the last model, RSS / PSS MB", "RSS samples MB"]
    return [
        "## Model repository: resident memory per loaded model (medians)",
        "",
        f"Each a fresh process, default model `{repository['default_model']}`, read after every version answered one prediction.",
        "",
        *_table(header, rows),
        "",
    ]


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
    """The curves to draw: each pattern's prediction latency, concurrent and sequential (the references: concurrent)."""
    curves: dict[str, list[float]] = {}
    if results["mode"] == "local":
        for name, kinds in results["warm"]["patterns"].items():
            for kind in ("predict_concurrent", "predict_sequential")[: 1 if name in REFERENCE_PATTERNS else 2]:
                if kind in kinds and kinds[kind]["cdf_ms"]:
                    curves[f"{name} {kind.split('_')[1]}"] = kinds[kind]["cdf_ms"]
    else:
        for name, pattern in results["patterns"].items():
            for kind in ("sequential", "concurrent"):
                if pattern.get(kind) and pattern[kind]["cdf_ms"]:
                    curves[f"{name} {kind}"] = pattern[kind]["cdf_ms"]
    return curves


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """Latency CDFs of every pattern; for a local run (its own model), stacked cold-start phase bars beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    local = results["mode"] == "local"
    figure, axes = plt.subplots(1, 2 if local else 1, figsize=(13 if local else 7, 4.8), squeeze=False)
    cdf_axis = axes[0][0]
    fractions = [q / 100 for q in range(101)]
    for label, values in _cdfs(results).items():
        pattern = label.split(" ")[0]
        cdf_axis.plot(values, fractions[: len(values)], label=label, color=COLOURS.get(pattern), linestyle="-" if "concurrent" in label else "--")
    cdf_axis.set_xscale("log")
    cdf_axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    cdf_axis.xaxis.set_minor_formatter(NullFormatter())  # matplotlib's minor labels on a log axis overlap
    cdf_axis.set_xlabel("latency (ms, log scale)")
    cdf_axis.set_ylabel("fraction of requests")
    cdf_axis.set_title("Warm prediction latency (CDF)")
    cdf_axis.grid(True, which="both", alpha=0.3)
    cdf_axis.legend(fontsize=8)
    if local:
        _phase_bars(axes[0][1], results["cold_start"])
    what = f"{model_label(results)} model, {results['machine']['cpus']} CPUs, local run" if local else "remote run"
    figure.suptitle(f"irisserve, {what}")
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
        colour = UNSPLIT_COLOUR if phase == UNSPLIT else PHASE_COLOURS[index % len(PHASE_COLOURS)]
        axis.barh(names, widths, left=left, label=phase, color=colour)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, name in enumerate(names):
        axis.text(left[y], y, f"  {cold[name]['median_s'] * 1e3:.0f} ms", va="center", fontsize=8)
    axis.set_xlabel("ms from spawn (medians of phases)")
    axis.set_title("Cold start: spawn → first 200")
    axis.set_xlim(0, max(left) * 1.25 if left and max(left) > 0 else 1)
    axis.invert_yaxis()
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
