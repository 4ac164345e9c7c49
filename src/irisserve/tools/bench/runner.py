"""The local benchmark: in-process inference, cold starts, warm load and memory, both patterns interleaved."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irisserve.core.predictor import BACKENDS
from irisserve.tools.bench import inprocess
from irisserve.tools.bench.load import Endpoint, LoadResult, run_load
from irisserve.tools.bench.local import (
    ServerProcess,
    ServiceSpec,
    cloud_function,
    memory,
    started,
    web_service,
)
from irisserve.tools.bench.stats import cdf_ms, median, median_of

MEMORY_AFTER_REQUESTS = 1000
# A task is (description, total); the sink returns the function that advances it.
ProgressSink = Callable[[str, int], Callable[[int], None]]


def no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda _: None


@dataclass(kw_only=True)
class LocalPlan:
    """How much to measure; the defaults take a few minutes on 2 cores."""

    model_dir: Path
    out_dir: Path
    bundle_dir: Path | None = None
    cold_starts: int = 5
    warm_requests: int = 2000
    sequential_requests: int = 500
    concurrency: int = 8
    repeats: int = 3
    inprocess_calls: int = 2000
    timeout: float = 10.0
    function: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


@dataclass
class _Warm:
    """Per-pattern warm results across repeats, with every latency kept for the CDF."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, result: LoadResult) -> dict[str, Any]:
        row = result.as_dict()
        self.runs.setdefault(kind, []).append(row)
        self.latencies.setdefault(kind, []).extend(result.latencies_s)
        return row

    def summary(self) -> dict[str, Any]:
        keys = ("throughput_rps", "p50_ms", "p95_ms", "p99_ms", "client_cpu_fraction")
        return {
            kind: {
                "median_of_repeats": {key: median_of(rows, key) for key in keys},
                "errors": sum(row["errors"] for row in rows),
                "cdf_ms": cdf_ms(self.latencies[kind]),
                "runs": rows,
            }
            for kind, rows in self.runs.items()
        }


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def _rotated(items: list[ServiceSpec], turn: int) -> list[ServiceSpec]:
    """Change who goes first each round, so neither pattern always meets a warmer (or busier) machine."""
    shift = turn % len(items)
    return items[shift:] + items[:shift]


def cold_starts(specs: list[ServiceSpec], plan: LocalPlan, tick: Callable[[int], None]) -> dict[str, Any]:
    """K fresh processes per pattern, interleaved: spawn → first 200, split into the phases each reports."""
    samples: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in specs}
    for turn in range(plan.cold_starts):
        for spec in _rotated(specs, turn):
            with started(spec, plan.out_dir / "logs") as server:
                total = server.wait_first_prediction()
                samples[spec.name].append(
                    {"seconds": total, "phases": server.phases(), "memory_at_first_response": memory(server.process.pid)}
                )
            tick(1)
    return {name: _cold_summary(rows) for name, rows in samples.items()}


def _cold_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    phase_names: list[str] = []
    for row in rows:
        for phase in row["phases"]:
            if phase["phase"] not in phase_names:
                phase_names.append(phase["phase"])
    medians = {name: median(p["seconds"] for row in rows for p in row["phases"] if p["phase"] == name) for name in phase_names}
    return {"median_s": median(row["seconds"] for row in rows), "median_phase_s": medians, "samples": rows}


@contextlib.contextmanager
def _serving(specs: list[ServiceSpec], plan: LocalPlan) -> Iterator[dict[str, ServerProcess]]:
    with contextlib.ExitStack() as stack:
        servers = {spec.name: stack.enter_context(started(spec, plan.out_dir / "logs")) for spec in specs}
        for server in servers.values():
            server.wait_first_prediction()
        yield servers


def _loads(spec: ServiceSpec, server: ServerProcess, plan: LocalPlan, turn: int) -> list[tuple[str, Endpoint, int, int]]:
    """The loads of one repeat, as (kind, endpoint, requests, clients); /health goes first every other turn."""
    predict = Endpoint.from_url(server.base_url + spec.predict_path, "POST", spec.payload)
    loads = [("predict_concurrent", predict, plan.warm_requests, plan.concurrency)]
    if spec.health_path == "/health":  # only the web service has a trivial endpoint to compare with
        health = Endpoint.from_url(server.base_url + spec.health_path, "GET")
        loads.insert(turn % 2, ("health_concurrent", health, plan.warm_requests, plan.concurrency))
    return [*loads, ("predict_sequential", predict, plan.sequential_requests, 1)]


def warm_load(specs: list[ServiceSpec], plan: LocalPlan, tick: Callable[[int], None]) -> dict[str, Any]:
    """Repeats of: /health and /predict at the chosen concurrency, then sequential /predict, per pattern."""
    warm = {spec.name: _Warm() for spec in specs}
    served = {spec.name: 0 for spec in specs}
    ratios: list[float] = []
    with _serving(specs, plan) as servers:
        for turn in range(plan.repeats):
            for spec in _rotated(specs, turn):
                rows = {}
                for kind, endpoint, count, concurrency in _loads(spec, servers[spec.name], plan, turn):
                    result = run_load(endpoint, requests=count, concurrency=concurrency, timeout=plan.timeout)
                    rows[kind] = warm[spec.name].add(kind, result)
                    served[spec.name] += count
                    tick(count)
                if "health_concurrent" in rows and rows["health_concurrent"]["throughput_rps"] > 0:
                    ratios.append(rows["predict_concurrent"]["throughput_rps"] / rows["health_concurrent"]["throughput_rps"])
        memories = {name: {**memory(server.process.pid), "after_requests": served[name]} for name, server in servers.items()}
    return {
        "patterns": {name: result.summary() for name, result in warm.items()},
        "predict_to_health_throughput_ratio": {"per_repeat": ratios, "median": median(ratios)},
        "memory": memories,
    }


def run_local(plan: LocalPlan, progress: ProgressSink = no_progress) -> dict[str, Any]:
    """Everything ``make bench`` measures, as one JSON-ready dict (schema in docs/benchmark.md)."""
    started_at = time.time()
    results: dict[str, Any] = {"mode": "local", "machine": machine(), "plan": plan.as_dict()}
    tick = progress("in-process inference", 2)
    results["inprocess"] = []
    for backend in BACKENDS:
        results["inprocess"].append(
            inprocess.measure_backend(plan.model_dir, backend, calls=plan.inprocess_calls, repeats=plan.repeats)
        )
        tick(1)
    web = web_service(plan.model_dir)
    cold_specs, warm_specs = [web], [web]
    if plan.function:
        bundle = plan.bundle_dir or _build_bundle(plan)
        results["function_bundle"] = str(bundle)
        cold_specs += [cloud_function(bundle, load="lazy"), cloud_function(bundle, load="import")]
        warm_specs.append(cloud_function(bundle, load="lazy", name="function"))
    results["cold_start"] = cold_starts(cold_specs, plan, progress("cold starts", plan.cold_starts * len(cold_specs)))
    per_repeat = sum(plan.warm_requests * (2 if s.health_path == "/health" else 1) + plan.sequential_requests for s in warm_specs)
    results["warm"] = warm_load(warm_specs, plan, progress("warm requests", per_repeat * plan.repeats))
    results["duration_s"] = time.time() - started_at
    return results


def _build_bundle(plan: LocalPlan) -> Path:
    from irisserve.tools.bundle import build_bundle

    return build_bundle(plan.out_dir / "function-bundle", plan.model_dir).path
