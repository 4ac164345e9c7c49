"""The local benchmark: in-process inference, then for each model cold starts, warm load and a memory soak, with
irisserve's patterns and the reference programs interleaved in the same run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from irisserve.core.predictor import BACKENDS
from irisserve_bench import inprocess, payloads
from irisserve_bench.errors import BenchError
from irisserve_bench.load import MAX_ERROR_SAMPLES, Endpoint, LoadResult, run_load
from irisserve_bench.local import (
    ServerProcess,
    ServiceSpec,
    cloud_function,
    memory,
    reference_app,
    reference_function,
    repository_service,
    request,
    started,
    web_service,
)
from irisserve_bench.models import IRIS, Repository, growing_repositories, one_model_repository, package_wine
from irisserve_bench.stats import cdf_ms, median, median_of

MEMORY_SAMPLES = 10  # RSS is read after every tenth of the soak
# Loads a pattern gets at the chosen concurrency besides /predict, when its spec has the route.
CONCURRENT_ROUTES = ("health", "v2_infer")
# name → (numerator (pattern, load), denominator (pattern, load), figure): each taken per repeat, then the median.
PAIRED_RATIOS: dict[str, tuple[tuple[str, str], tuple[str, str], str]] = {
    "predict_vs_health_throughput": (("web", "predict_concurrent"), ("web", "health_concurrent"), "throughput_rps"),
    "v2_infer_vs_predict_throughput": (("web", "v2_infer_concurrent"), ("web", "predict_concurrent"), "throughput_rps"),
    "web_vs_bare_throughput": (("web", "predict_concurrent"), ("bare", "predict_concurrent"), "throughput_rps"),
    "web_vs_bare_p99": (("web", "predict_concurrent"), ("bare", "predict_concurrent"), "p99_ms"),
    "web_vs_empty_throughput": (("web", "predict_concurrent"), ("empty", "predict_concurrent"), "throughput_rps"),
    "function_vs_empty_function_throughput": (("function", "predict_concurrent"), ("empty-function", "predict_concurrent"), "throughput_rps"),
    "function_vs_empty_asgi_function_throughput": (("function", "predict_concurrent"), ("empty-asgi-function", "predict_concurrent"), "throughput_rps"),
    "function_vs_web_throughput": (("function", "predict_concurrent"), ("web", "predict_concurrent"), "throughput_rps"),
    "function_vs_web_p99": (("function", "predict_concurrent"), ("web", "predict_concurrent"), "p99_ms"),
}
# A task is (description, total); the sink returns the function that advances it.
ProgressSink = Callable[[str, int], Callable[[int], None]]
Turned = TypeVar("Turned")


def no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda _: None


@dataclass(kw_only=True)
class LocalPlan:
    """How much to measure (the CLI's defaults)."""

    model_dir: Path
    out_dir: Path
    bundle_dir: Path | None = None
    also_model_dirs: tuple[Path, ...] = ()  # measured like model_dir after it (no in-process part)
    cold_starts: int = 5
    warm_requests: int = 5000
    sequential_requests: int = 500
    batch_requests: int = 200
    batch_rows: int = 1000
    memory_requests: int = 100_000  # 0: no soak
    concurrency: int = 8
    repeats: int = 5
    inprocess_calls: int = 2000
    timeout: float = 10.0
    function: bool = True
    repository: bool = True  # the resident memory of a growing model repository (iris; + wine; + iris 1.1.0)

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            return [plain(item) for item in value] if isinstance(value, (list, tuple)) else value

        return {key: plain(value) for key, value in asdict(self).items()}


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


def _rotated(items: Sequence[Turned], turn: int) -> list[Turned]:
    """Change who goes first each round, so neither pattern always meets a warmer (or busier) machine."""
    shift = turn % len(items)
    return [*items[shift:], *items[:shift]]


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
    """The loads of one repeat, as (kind, endpoint, requests, clients): /predict and the routes compared with it at
    the chosen concurrency (their order rotating each turn, as they are compared back to back), then one client."""
    def endpoint(method: str, path: str, payload: Any) -> Endpoint:
        return Endpoint.from_url(server.base_url + path, method, payload)

    predict = endpoint("POST", spec.predict_path, spec.payload)
    concurrent = [("predict_concurrent", predict)] + [
        (f"{name}_concurrent", endpoint(route.method, route.path, route.payload))
        for name, route in spec.routes.items() if name in CONCURRENT_ROUTES
    ]
    shift = turn % len(concurrent)
    loads = [(kind, load, plan.warm_requests, plan.concurrency) for kind, load in concurrent[shift:] + concurrent[:shift]]
    if "batch" in spec.routes:
        batch = spec.routes["batch"]
        loads.append(("batch_sequential", endpoint(batch.method, batch.path, batch.payload), plan.batch_requests, 1))
    return [*loads, ("predict_sequential", predict, plan.sequential_requests, 1)]


def _requests_per_repeat(spec: ServiceSpec, plan: LocalPlan) -> int:
    concurrent = 1 + sum(name in CONCURRENT_ROUTES for name in spec.routes)
    return plan.warm_requests * concurrent + (plan.batch_requests if "batch" in spec.routes else 0) + plan.sequential_requests


def warm_load(specs: list[ServiceSpec], plan: LocalPlan, tick: Callable[[int], None]) -> dict[str, Any]:
    """Repeats of every pattern's loads, the patterns side by side and taken in turns; then each one's memory."""
    warm = {spec.name: _Warm() for spec in specs}
    served = {spec.name: 0 for spec in specs}
    with _serving(specs, plan) as servers:
        for turn in range(plan.repeats):
            for spec in _rotated(specs, turn):
                for kind, endpoint, count, concurrency in _loads(spec, servers[spec.name], plan, turn):
                    result = run_load(endpoint, requests=count, concurrency=concurrency, timeout=plan.timeout)
                    warm[spec.name].add(kind, result)
                    served[spec.name] += count
                    tick(count)
        memories = {name: {**memory(server.process.pid), "after_requests": served[name]} for name, server in servers.items()}
    patterns = {name: result.summary() for name, result in warm.items()}
    return {"patterns": patterns, "ratios": paired_ratios(patterns), "memory": memories}


def paired_ratios(patterns: dict[str, Any]) -> dict[str, Any]:
    """Each ratio of ``PAIRED_RATIOS`` whose two loads were measured: per repeat (both sides from the same repeat,
    minutes apart at most), and the median of those."""
    ratios = {}
    for name, ((top_pattern, top_load), (bottom_pattern, bottom_load), figure) in PAIRED_RATIOS.items():
        try:
            tops = patterns[top_pattern][top_load]["runs"]
            bottoms = patterns[bottom_pattern][bottom_load]["runs"]
        except KeyError:
            continue
        per_repeat = [
            top[figure] / bottom[figure]
            for top, bottom in zip(tops, bottoms, strict=True)
            if bottom[figure] and math.isfinite(bottom[figure]) and math.isfinite(top[figure])
        ]
        ratios[name] = {"figure": figure, "per_repeat": per_repeat, "median": median(per_repeat)}
    return ratios


def memory_soak(spec: ServiceSpec, plan: LocalPlan, tick: Callable[[int], None]) -> dict[str, Any]:
    """A fresh process driven with ``plan.memory_requests`` /predict requests; RSS read after every tenth of them.
    "Growth over the last half" is RSS at the end minus RSS at the sample nearest the half-way mark."""
    total = plan.memory_requests
    steps = min(MEMORY_SAMPLES, total)
    done, errors = 0, 0
    error_samples: list[str] = []
    with started(spec, plan.out_dir / "logs") as server:
        server.wait_first_prediction()
        endpoint = Endpoint.from_url(server.base_url + spec.predict_path, "POST", spec.payload)
        samples = [{"after_requests": 0, **_rss(server)}]
        for step in range(1, steps + 1):
            count = total * step // steps - done
            result = run_load(endpoint, requests=count, concurrency=plan.concurrency, timeout=plan.timeout, progress=tick)
            done, errors = done + count, errors + result.errors
            error_samples = (error_samples + result.error_samples)[:MAX_ERROR_SAMPLES]
            samples.append({"after_requests": done, **_rss(server), "throughput_rps": result.throughput_rps})
    half = min(samples[1:], key=lambda sample: abs(sample["after_requests"] - total / 2))
    end = samples[-1]
    return {
        "pattern": spec.name,
        "requests": total,
        "concurrency": plan.concurrency,
        "errors": errors,
        "error_samples": error_samples,
        "rss_mb_at_half": half["rss_mb"],
        "rss_mb_at_end": end["rss_mb"],
        "growth_last_half_mb": end["rss_mb"] - half["rss_mb"],
        "half_at_requests": half["after_requests"],
        "samples": samples,
    }


def _rss(server: ServerProcess) -> dict[str, Any]:
    figures = memory(server.process.pid)
    return {"rss_mb": figures["rss_mb"], "pss_mb": figures["pss_mb"]}


def measure_model(
    model_dir: Path, plan: LocalPlan, progress: ProgressSink, *, bundle_out: Path, prebuilt_bundle: Path | None = None
) -> dict[str, Any]:
    """One model's block: cold starts, warm load and memory soak of the web service, the function and the references.

    The function serves ``prebuilt_bundle`` (``--bundle``), else a bundle built from ``model_dir`` into ``bundle_out``."""
    spec = payloads.model_spec(model_dir)
    label = spec.name
    block: dict[str, Any] = {"model": {"name": spec.name, "version": spec.version, "task": spec.task, "dir": str(model_dir)}}
    web = web_service(model_dir, batch_rows=plan.batch_rows)
    bare, empty = reference_app("bare", model_dir), reference_app("empty", model_dir)
    cold_specs, warm_specs = [web, bare, empty], [web, bare, empty]
    if plan.function:
        bundle = prebuilt_bundle or _build_bundle(bundle_out, model_dir)
        block["function_bundle"] = str(bundle)
        empty_functions = [reference_function(model_dir, "empty-function"), reference_function(model_dir, "empty-asgi-function")]
        cold_specs += [cloud_function(bundle, load="lazy"), cloud_function(bundle, load="import"), *empty_functions]
        warm_specs += [cloud_function(bundle, load="lazy", name="function"), *empty_functions]
    # The same model served from a repository of it alone (`irisserve serve --models`): its cold start beside web's.
    with tempfile.TemporaryDirectory(prefix="irisserve-bench-repository-") as alone:
        cold_specs.insert(1, repository_service(one_model_repository(Path(alone), model_dir), default_model=spec.name))
        block["cold_start"] = cold_starts(cold_specs, plan, progress(f"cold starts ({label})", plan.cold_starts * len(cold_specs)))
    per_repeat = sum(_requests_per_repeat(spec, plan) for spec in warm_specs)
    block["warm"] = warm_load(warm_specs, plan, progress(f"warm requests ({label})", per_repeat * plan.repeats))
    if plan.memory_requests:
        block["memory_soak"] = memory_soak(web, plan, progress(f"memory soak ({label})", plan.memory_requests))
    return block


def run_local(plan: LocalPlan, progress: ProgressSink = no_progress) -> dict[str, Any]:
    """Everything ``make bench`` measures, as one JSON-ready dict (schema in docs/benchmark.md): the in-process
    figures and ``model_dir``'s block at the top level, each of ``also_model_dirs``' blocks under ``other_models``."""
    started_at = time.time()
    # The last run's logs only: with the JSON access log on, a default run writes about 150 MB of them.
    shutil.rmtree(plan.out_dir / "logs", ignore_errors=True)
    started = datetime.fromtimestamp(started_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    results: dict[str, Any] = {"mode": "local", "started_at": started, "machine": machine(), "plan": plan.as_dict()}
    tick = progress("in-process inference", len(BACKENDS))
    results["inprocess"] = []
    for backend in BACKENDS:
        results["inprocess"].append(
            inprocess.measure_backend(plan.model_dir, backend, calls=plan.inprocess_calls, repeats=plan.repeats)
        )
        tick(1)
    results.update(measure_model(plan.model_dir, plan, progress, bundle_out=plan.out_dir / "function-bundle", prebuilt_bundle=plan.bundle_dir))
    results["other_models"] = [
        measure_model(model_dir, plan, progress, bundle_out=plan.out_dir / f"function-bundle-{index}")
        for index, model_dir in enumerate(plan.also_model_dirs, start=2)
    ]
    if plan.repository:
        with tempfile.TemporaryDirectory(prefix="irisserve-bench-repositories-") as folder:
            repositories = growing_repositories(Path(folder), package_wine(plan.out_dir))
            tick = progress("model repositories", plan.repeats * len(repositories))
            results["repository"] = repository_memory(repositories, plan, tick)
    results["duration_s"] = time.time() - started_at
    return results


def repository_memory(repositories: Sequence[Repository], plan: LocalPlan, tick: Callable[[int], None]) -> dict[str, Any]:
    """Resident memory of ``irisserve serve --models`` over each repository (each one model more than the one before),
    in fresh processes, ``plan.repeats`` each, interleaved; read once every model has answered a prediction. What each
    added model costs is the difference of the medians of two neighbouring repositories (as cold starts, processes
    are not paired: one process's luck would decide a pair)."""
    samples: dict[str, list[dict[str, Any]]] = {repository.label: [] for repository in repositories}
    for turn in range(plan.repeats):
        for index, repository in _rotated(list(enumerate(repositories, start=1)), turn):
            spec = repository_service(repository, default_model=IRIS, name=f"repository-{index}")
            with started(spec, plan.out_dir / "logs") as server:
                server.wait_first_prediction()
                _every_model_answers(server, repository)
                samples[repository.label].append(memory(server.process.pid))
            tick(1)
    rows: list[dict[str, Any]] = []
    for repository in repositories:
        taken = samples[repository.label]
        rows.append({
            "label": repository.label,
            "models": [artifact.label for artifact in repository.artifacts],
            "added": repository.artifacts[-1].label,
            "rss_mb": median(sample["rss_mb"] for sample in taken),
            "pss_mb": median(sample["pss_mb"] for sample in taken),
            "samples": taken,
        })
    return {
        "default_model": IRIS,
        "repositories": rows,
        "rss_per_extra_model_mb": {now["added"]: now["rss_mb"] - before["rss_mb"] for before, now in pairwise(rows)},
        "pss_per_extra_model_mb": {now["added"]: now["pss_mb"] - before["pss_mb"] for before, now in pairwise(rows)},
    }


def _every_model_answers(server: ServerProcess, repository: Repository) -> None:
    """``/health`` 200, ``GET /models`` listing every version of the repository, and one prediction from each version,
    so every session has run (the memory read next is that of a server that has answered with all its models)."""
    status, body = request(server.port, "GET", "/health")
    if status != 200:
        raise BenchError(f"{server.spec.name}: GET /health answered {status}: {body[:200]!r}")
    status, body = request(server.port, "GET", "/models")
    listed: set[tuple[str, str]] = set()
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        listed = {(model["name"], version) for model in json.loads(body)["models"] for version in model["versions"]}
    wanted = {(artifact.name, artifact.version) for artifact in repository.artifacts}
    if listed != wanted:
        raise BenchError(f"{server.spec.name}: GET /models answered {status} listing {sorted(listed)}, not {sorted(wanted)}; "
                         f"its log ({server.log_path}) ends with:\n{server.log_tail()}")
    for artifact in repository.artifacts:
        path = f"/models/{artifact.name}/versions/{artifact.version}/predict"
        status, body = request(server.port, "POST", path, payloads.example_row(artifact.folder))
        if status != 200:
            raise BenchError(f"{server.spec.name}: POST {path} answered {status}: {body[:200]!r}")


def _build_bundle(out_dir: Path, model_dir: Path) -> Path:
    from irisserve.tools.bundle import build_bundle

    return build_bundle(out_dir, model_dir, force=True).path  # the bench's own output folder, rebuilt each run
