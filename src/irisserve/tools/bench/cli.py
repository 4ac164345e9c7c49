"""``irisserve bench`` / ``python benchmark.py``: compare the web service and the Cloud Function.

Remote mode takes the seed's flags (``--cloud-run-url``, ``--cloud-function-url``); ``--local`` starts
both patterns on this machine and measures cold starts, warm load and memory."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from irisserve.core.errors import IrisServeError
from irisserve.tools.bench.errors import BenchError

DEFAULT_OUT_DIR = Path("bench-out")
DEFAULT_MODEL_DIR = Path("models/iris/1.0.0")
REMOTE_REQUESTS = 20
LOCAL_REQUESTS = 2000


def build_parser(prog: str = "irisserve bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_argument_group("what to measure")
    where.add_argument("--local", action="store_true", help="Start both patterns on loopback and measure them.")
    where.add_argument("--cloud-run-url", help="Deployed web service; gets POST {url}/predict.")
    where.add_argument("--cloud-function-url", help="Deployed function; gets POST {url}.")
    counts = parser.add_argument_group("how much")
    counts.add_argument("--num-requests", type=int, help=f"Warm requests per pattern and load (default {REMOTE_REQUESTS} remote, {LOCAL_REQUESTS} local).")
    counts.add_argument("--concurrency", type=int, default=8, help="Concurrent clients for the concurrent load (default 8).")
    counts.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for any one answer (default 10).")
    counts.add_argument("--idle-seconds", type=float, default=0.0, help="Remote: wait this long before the first request, so it may meet a cold instance.")
    counts.add_argument("--cold-starts", type=int, default=5, help="Local: fresh processes per pattern and load strategy (default 5).")
    counts.add_argument("--sequential-requests", type=int, default=500, help="Local: one-client requests per repeat (default 500).")
    counts.add_argument("--repeats", type=int, default=3, help="Local: repeats whose median is reported (default 3).")
    counts.add_argument("--inprocess-calls", type=int, default=2000, help="Local: timed single-row inferences per repeat (default 2000).")
    local = parser.add_argument_group("local set-up")
    local.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="Artifact to serve locally; remote: the deployed artifact, whose example row is posted (default %(default)s).")
    local.add_argument("--bundle", type=Path, help="Prebuilt function bundle (default: build one into the output folder).")
    local.add_argument("--no-function", action="store_true", help="Local: measure the web service only.")
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, help=f"Results JSON (default {DEFAULT_OUT_DIR}/results.json); the report and chart go beside it.")
    out.add_argument("--no-progress", action="store_true", help="No progress bars.")
    return parser


def _paths(output: Path | None) -> tuple[Path, Path, Path]:
    """results.json, report.md, chart.png: the defaults in bench-out/, else named after --output."""
    if output is None:
        return DEFAULT_OUT_DIR / "results.json", DEFAULT_OUT_DIR / "report.md", DEFAULT_OUT_DIR / "chart.png"
    return output, output.with_suffix(".md"), output.with_suffix(".png")


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    remote = args.cloud_run_url or args.cloud_function_url
    if args.local == bool(remote):
        parser.error("choose --local, or give --cloud-run-url and/or --cloud-function-url (not both modes)")
    for name in ("num_requests", "concurrency", "cold_starts", "sequential_requests", "repeats", "inprocess_calls"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.timeout <= 0 or args.idle_seconds < 0:
        parser.error("--timeout must be positive and --idle-seconds not negative")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A rich progress bar per stage, on stderr; a no-op when disabled or not on a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda description, total: (lambda _: None)
        return
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        def task(description: str, total: int) -> Callable[[int], None]:
            task_id = progress.add_task(description, total=total)
            return lambda steps: progress.advance(task_id, steps)

        yield task


def _run_local(args: argparse.Namespace, out_dir: Path, progress: Callable[[str, int], Callable[[int], None]]) -> dict[str, Any]:
    from irisserve.tools.bench.runner import LocalPlan, run_local

    if not (args.model_dir / "manifest.json").is_file():
        raise BenchError(f"No model artifact at {args.model_dir} (manifest.json missing); run `irisserve train` or `make model`.")
    plan = LocalPlan(
        model_dir=args.model_dir, out_dir=out_dir, bundle_dir=args.bundle, cold_starts=args.cold_starts,
        warm_requests=args.num_requests or LOCAL_REQUESTS, sequential_requests=args.sequential_requests,
        concurrency=args.concurrency, repeats=args.repeats, inprocess_calls=args.inprocess_calls,
        timeout=args.timeout, function=not args.no_function,
    )
    return run_local(plan, progress)


def _run_remote(args: argparse.Namespace, progress: Callable[[str, int], Callable[[int], None]]) -> dict[str, Any]:
    from irisserve.core.errors import ArtifactError
    from irisserve.tools.bench.local import example_row
    from irisserve.tools.bench.remote import RemoteTarget, run_remote

    try:
        payload = example_row(args.model_dir)
    except ArtifactError as exc:
        raise BenchError(f"The benchmark posts the deployed model's example row, read from --model-dir: {exc}") from None
    targets = []
    if args.cloud_run_url:
        targets.append(RemoteTarget.cloud_run(args.cloud_run_url, payload))
    if args.cloud_function_url:
        targets.append(RemoteTarget.cloud_function(args.cloud_function_url, payload))
    requests = args.num_requests or REMOTE_REQUESTS
    per_target = 1 + requests + (requests if args.concurrency > 1 else 0)
    tick = progress("requests", per_target * len(targets))
    results = run_remote(targets, requests=requests, concurrency=args.concurrency, idle_seconds=args.idle_seconds, timeout=args.timeout, tick=tick)
    return {"mode": "remote", "plan": {"num_requests": requests, "concurrency": args.concurrency, "timeout": args.timeout}, **results}


def _print_summary(results: dict[str, Any], paths: tuple[Path, Path, Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    from irisserve.tools.bench.report import judge_targets

    console = Console()
    if results["mode"] == "local":
        table = Table(title="Targets (medians of repeats, this machine)")
        for column in ("Target", "Measured", "Target", "Verdict"):
            table.add_column(column)
        for v in judge_targets(results):
            colour = "green" if v["verdict"] == "PASS" else "red"
            table.add_row(v["target"], f"{v['measured']:,.2f} {v['unit']}", f"{v['sign']} {v['bound']:g} {v['unit']}", f"[{colour}]{v['verdict']}[/]")
        console.print(table)
        _print_local_figures(console, results)
    else:
        for name, pattern in results["patterns"].items():
            seq = pattern["sequential"]
            console.print(f"{name}: first request {pattern['first_request']['seconds'] * 1e3:.0f} ms; warm p50 {seq['p50_ms']:.1f} ms, p99 {seq['p99_ms']:.1f} ms, {seq['errors']} errors")
    console.print(f"Wrote {paths[0]}, {paths[1]}, {paths[2]}", soft_wrap=True)


def _print_local_figures(console: Any, results: dict[str, Any]) -> None:
    """Both patterns side by side: cold start with its phases, warm load, memory; in-process inference first."""
    from rich.table import Table

    for row in results["inprocess"]:
        if "error" in row:
            console.print(f"in-process {row['backend']}: not measured ({row['error']})")
        else:
            console.print(f"in-process {row['backend']}, one row: backend call p50 {row['backend_call']['p50_us']:.1f} µs, "
                          f"predict_rows p50 {row['predict_rows']['p50_us']:.1f} µs")
    cold = Table(title="Cold start, spawn → first 200 (medians)")
    for column in ("Pattern", "Total s", "Phases (ms)"):
        cold.add_column(column)
    for name, summary in results["cold_start"].items():
        phases = ", ".join(f"{phase} {seconds * 1e3:.0f}" for phase, seconds in summary["median_phase_s"].items())
        cold.add_row(name, f"{summary['median_s']:.3f}", phases)
    console.print(cold)
    warm = Table(title="Warm load (medians of repeats)")
    for column in ("Pattern", "Load", "Clients", "req/s", "p50 ms", "p99 ms", "Errors"):
        warm.add_column(column)
    for name, kinds in results["warm"]["patterns"].items():
        for kind, summary in kinds.items():
            med = summary["median_of_repeats"]
            warm.add_row(name, kind.replace("_", " "), str(summary["runs"][0]["concurrency"]), f"{med['throughput_rps']:.0f}",
                         f"{med['p50_ms']:.2f}", f"{med['p99_ms']:.2f}", str(summary["errors"]))
    console.print(warm)
    for name, mem in results["warm"]["memory"].items():
        console.print(f"memory {name}: RSS {mem['rss_mb']:.1f} MB (PSS {mem['pss_mb'] or 0:.1f}) over {mem['processes']} process(es) "
                      f"after {mem['after_requests']} requests")


def _finite(value: Any) -> Any:
    """NaN (a figure with no samples, e.g. every request failed) becomes null: NaN is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def run(args: argparse.Namespace) -> dict[str, Any]:
    from irisserve.tools.bench import report

    paths = _paths(args.output)
    out_dir = paths[0].parent
    with _progress(not args.no_progress) as progress:
        results = _run_local(args, out_dir, progress) if args.local else _run_remote(args, progress)
    if results["mode"] == "local":
        results["targets"] = report.judge_targets(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(json.dumps(_finite(results), indent=2, default=str, allow_nan=False) + "\n")
    report.draw_chart(results, paths[2])
    render = report.local_markdown if results["mode"] == "local" else report.remote_markdown
    paths[1].write_text(render(results, paths[2].name))
    _print_summary(results, paths)
    return results


def main(argv: list[str] | None = None, *, prog: str = "irisserve bench") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _check(args, parser)
    try:
        run(args)
    except (BenchError, IrisServeError) as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark: interrupted; every server it started was stopped.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
