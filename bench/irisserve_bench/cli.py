"""``irisserve bench`` / ``python benchmark.py``: compare the web service and the Cloud Function.

Remote mode takes the seed's flags (``--cloud-run-url``, ``--cloud-function-url``); ``--local`` starts
both patterns on this machine beside small reference programs (a bare FastAPI app, an empty one, an empty
Flask function and an empty ASGI function) and measures cold starts, warm load and memory, for --model-dir and
each --also-model (default: scikit-learn's wine data, packaged into the output folder), and the resident memory
each extra model adds to `irisserve serve --models`. The targets, mostly ratios to the references, are read from
docs/benchmark.md; --update-docs writes the run's verdicts there."""

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
from irisserve_bench.errors import BenchError
from irisserve_bench.targets import DEFAULT_DOC

DEFAULT_OUT_DIR = Path("bench-out")
DEFAULT_MODEL_DIR = Path("models/iris/1.0.0")
REMOTE_REQUESTS = 20
LOCAL_REQUESTS = 5000
MEMORY_REQUESTS = 100_000
CONSOLE_WIDTH = 160
# --short: every part measured once with a few requests (seconds, not minutes): for the tests and a quick check.
SHORT_PLAN = {"cold_starts": 1, "num_requests": 20, "sequential_requests": 5, "repeats": 1, "inprocess_calls": 20,
              "concurrency": 2, "batch_rows": 50, "batch_requests": 3, "memory_requests": 40}


def build_parser(prog: str = "irisserve bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_argument_group("what to measure")
    where.add_argument("--local", action="store_true", help="Start both patterns and the reference programs on loopback and measure them.")
    where.add_argument("--cloud-run-url", help="Deployed web service; gets POST {url}/predict.")
    where.add_argument("--cloud-function-url", help="Deployed function; gets POST {url}.")
    counts = parser.add_argument_group("how much")
    counts.add_argument("--short", action="store_true", help="Local: a short plan that runs every part once with a few requests "
                        "(figures too rough to judge; for tests and a quick check); count options given beside it still win.")
    counts.add_argument("--num-requests", type=int, help=f"Warm requests per pattern and load (default {REMOTE_REQUESTS} remote, {LOCAL_REQUESTS} local).")
    counts.add_argument("--concurrency", type=int, default=8, help="Concurrent clients for the concurrent load (default 8).")
    counts.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for any one answer (default 10).")
    counts.add_argument("--idle-seconds", type=float, default=0.0, help="Remote: wait this long before the first request, so it may meet a cold instance.")
    counts.add_argument("--cold-starts", type=int, default=5, help="Local: fresh processes per pattern and load strategy (default 5).")
    counts.add_argument("--sequential-requests", type=int, default=500, help="Local: one-client requests per repeat (default 500).")
    counts.add_argument("--repeats", type=int, default=5, help="Local: repeats whose median is reported (default 5).")
    counts.add_argument("--inprocess-calls", type=int, default=2000, help="Local: timed single-row inferences per repeat (default 2000).")
    counts.add_argument("--batch-rows", type=int, default=1000, help="Local: rows per POST /predict/batch (default 1000, the service's limit).")
    counts.add_argument("--batch-requests", type=int, default=200, help="Local: one-client batch requests per repeat (default 200).")
    counts.add_argument("--memory-requests", type=int, default=MEMORY_REQUESTS,
                        help=f"Local: POST /predict sent to a fresh web service, RSS read every tenth; 0 skips it (default {MEMORY_REQUESTS:,}).")
    local = parser.add_argument_group("local set-up")
    local.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="Artifact to serve locally; remote: the deployed artifact, whose example row is posted (default %(default)s).")
    local.add_argument("--also-model", action="append", metavar="DIR|wine|none",
                       help="Local: measure this artifact too, the same way (repeatable). 'wine' packages scikit-learn's wine "
                            "data into <output folder>/models/wine/1.0.0 on first use; 'none' measures --model-dir only (default: wine).")
    local.add_argument("--bundle", type=Path, help="Prebuilt function bundle for --model-dir (default: build one into the output folder).")
    local.add_argument("--no-function", action="store_true", help="Local: measure the web service only.")
    local.add_argument("--no-repository", action="store_true", help="Local: skip the resident memory of `irisserve serve --models` "
                       "over a growing model repository (Iris; + wine; + a second Iris version), built in a temporary folder.")
    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, help=f"Results JSON (default {DEFAULT_OUT_DIR}/results.json); the report and chart go beside it.")
    out.add_argument("--targets", type=Path, default=DEFAULT_DOC, help="Local: the document whose targets table the run is judged against (default: the repository's docs/benchmark.md).")
    out.add_argument("--update-docs", action="store_true", help="Local: rewrite the verdicts section of that document from this run (make bench does).")
    out.add_argument("--judge", type=Path, metavar="RESULTS_JSON", help="No measuring: judge a local run's results JSON again against "
                     "--targets and write its report and chart again (beside it, or --output); with --update-docs, the verdicts too.")
    out.add_argument("--no-progress", action="store_true", help="No progress bars.")
    return parser


def _paths(output: Path | None) -> tuple[Path, Path, Path]:
    """results.json, report.md, chart.png: the defaults in bench-out/, else named after --output."""
    if output is None:
        return DEFAULT_OUT_DIR / "results.json", DEFAULT_OUT_DIR / "report.md", DEFAULT_OUT_DIR / "chart.png"
    return output, output.with_suffix(".md"), output.with_suffix(".png")


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    remote = args.cloud_run_url or args.cloud_function_url
    if args.judge and (args.local or remote):
        parser.error("--judge reads a finished run: give it without --local or URLs")
    if not args.judge and args.local == bool(remote):
        parser.error("choose --local, or give --cloud-run-url and/or --cloud-function-url (not both modes)")
    for name in ("num_requests", "concurrency", "cold_starts", "sequential_requests", "repeats", "inprocess_calls", "batch_rows", "batch_requests"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.memory_requests < 0:
        parser.error(f"--memory-requests must be 0 (no soak) or more, got {args.memory_requests}")
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
    from irisserve_bench.models import also_model_dirs
    from irisserve_bench.runner import LocalPlan, run_local

    if not (args.model_dir / "manifest.json").is_file():
        raise BenchError(f"No model artifact at {args.model_dir} (manifest.json missing); run `irisserve train` or `make model`.")
    plan = LocalPlan(
        model_dir=args.model_dir, out_dir=out_dir, bundle_dir=args.bundle, also_model_dirs=also_model_dirs(args.also_model, out_dir),
        cold_starts=args.cold_starts, warm_requests=args.num_requests or LOCAL_REQUESTS, sequential_requests=args.sequential_requests,
        batch_requests=args.batch_requests, batch_rows=args.batch_rows, memory_requests=args.memory_requests,
        concurrency=args.concurrency, repeats=args.repeats, inprocess_calls=args.inprocess_calls,
        timeout=args.timeout, function=not args.no_function, repository=not args.no_repository,
    )
    return run_local(plan, progress)


def _run_remote(args: argparse.Namespace, progress: Callable[[str, int], Callable[[int], None]]) -> dict[str, Any]:
    from irisserve.core.errors import ArtifactError
    from irisserve_bench.local import example_row
    from irisserve_bench.remote import RemoteTarget, run_remote

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

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough that the tables do not wrap every cell
        console.width = max(console.width, CONSOLE_WIDTH)
    if results["mode"] == "local":
        _print_local_figures(console, results)
        table = Table(title="Targets (medians of repeats; references measured in the same run, this machine)")
        for column in ("Model", "Target", "Measured", "Bound", "Reference", "Verdict"):
            table.add_column(column)
        for v in results["targets"]:
            colour = "green" if v["verdict"] == "PASS" else "red"
            table.add_row(v["model"], v["target"], f"{_cell(v['measured'], 2)} {v['unit']}", f"{v['sign']} {v['bound']:g} {v['unit']}",
                          v["reference"], f"[{colour}]{v['verdict']}[/]")
        console.print(table)
    else:
        for name, pattern in results["patterns"].items():
            seq = pattern["sequential"]
            console.print(f"{name}: first request {pattern['first_request']['seconds'] * 1e3:.0f} ms; warm p50 {seq['p50_ms']:.1f} ms, p99 {seq['p99_ms']:.1f} ms, {seq['errors']} errors")
    console.print(f"Wrote {paths[0]}, {paths[1]}, {paths[2]}", soft_wrap=True)


def _print_local_figures(console: Any, results: dict[str, Any]) -> None:
    """In-process inference, then per model every pattern side by side: cold start, warm /predict, memory."""
    from rich.table import Table

    from irisserve_bench.figures import model_blocks, model_label
    from irisserve_bench.report import side_by_side

    for row in results["inprocess"]:
        if "error" in row:
            console.print(f"in-process {row['backend']}: not measured ({row['error']})")
        else:
            console.print(f"in-process {row['backend']}, one row: backend call p50 {row['backend_call']['p50_us']:.1f} µs, "
                          f"predict_rows p50 {row['predict_rows']['p50_us']:.1f} µs; live figures + drift add "
                          f"{row['live_observe']['p50_us'] + row['record_request']['p50_us']:.2f} µs")
    concurrency = results["plan"]["concurrency"]
    for block in model_blocks(results):
        table = Table(title=f"{model_label(block)}: irisserve and the references (medians)")
        for column in ("Pattern", "Cold start s", f"req/s ({concurrency} clients)", "p50 ms", "p99 ms", "RSS MB"):
            table.add_column(column)
        for row in side_by_side(block):
            table.add_row(row["pattern"], *(_cell(row[key], digits) for key, digits in
                          (("cold_start_s", 3), ("throughput_rps", 0), ("p50_ms", 2), ("p99_ms", 2), ("rss_mb", 1))))
        console.print(table)
        web = block["warm"]["patterns"].get("web", {})
        extra = [f"{kind.replace('_', ' ')} {summary['median_of_repeats']['throughput_rps']:,.0f} req/s, "
                 f"p50 {summary['median_of_repeats']['p50_ms']:.2f} ms, p99 {summary['median_of_repeats']['p99_ms']:.2f} ms"
                 for kind, summary in web.items() if kind not in ("predict_concurrent",)]
        if extra:
            console.print("web: " + "; ".join(extra))
        soak = block.get("memory_soak")
        if soak:
            console.print(f"memory soak ({soak['pattern']}): RSS {soak['rss_mb_at_half']:.1f} MB after {soak['half_at_requests']:,} "
                          f"requests, {soak['rss_mb_at_end']:.1f} MB after {soak['requests']:,} ({soak['errors']} errors)")
    repository = results.get("repository")
    if repository:
        sizes = "; ".join(f"{row['label']} {row['rss_mb']:.1f} MB" for row in repository["repositories"])
        added = ", ".join(f"{label} {_cell(mb, 1)} MB" for label, mb in repository["rss_per_extra_model_mb"].items())
        console.print(f"irisserve serve --models, RSS with every model warm (medians): {sizes}. Added per model: {added}")


def _cell(value: Any, digits: int) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:,.{digits}f}"


def _finite(value: Any) -> Any:
    """NaN (a figure with no samples, e.g. every request failed) becomes null: NaN is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _remote(args: argparse.Namespace) -> bool:
    return bool(args.cloud_run_url or args.cloud_function_url)


def _read_results(path: Path) -> dict[str, Any]:
    """A local run's results JSON, for --judge."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"--judge {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(results, dict) or results.get("mode") != "local":
        raise BenchError(f"--judge {path}: not the results of a local run (\"mode\": \"local\")")
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    from irisserve_bench import figures, report, targets

    paths = _paths(args.output or args.judge)
    out_dir = paths[0].parent
    goals = targets.read_targets(args.targets) if not _remote(args) else []  # a malformed table fails before minutes of measuring
    if args.judge:
        results = _read_results(args.judge)
    else:
        with _progress(not args.no_progress) as progress:
            results = _run_local(args, out_dir, progress) if args.local else _run_remote(args, progress)
    if results["mode"] == "local":
        for block in figures.model_blocks(results):
            block["figures"] = figures.block_figures(block)
        results = _finite(results)  # judged as the JSON holds it
        results["targets"] = targets.judge(results, goals)
        if args.update_docs:
            targets.update_doc(args.targets, results, results["targets"])
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
    if args.short:  # the short plan's counts become the defaults, so options given explicitly still win
        parser.set_defaults(**SHORT_PLAN)
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
