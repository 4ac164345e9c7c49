"""The benchmark tool end to end: local mode on the short plan, remote mode against loopback servers; the
reference programs run standalone; the targets read from docs/benchmark.md decide the verdicts.

No timing assertions: speed is what the tool reports, not what the tests check."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from irisserve.tools.bundle import build_bundle
from irisserve_bench.cli import main
from irisserve_bench.errors import BenchError
from irisserve_bench.figures import FIGURES
from irisserve_bench.local import (
    REFERENCE_APPS,
    UNSPLIT,
    ServiceSpec,
    cloud_function,
    reference_app,
    reference_function,
    request,
    started,
)
from irisserve_bench.models import also_model_dirs
from irisserve_bench.runner import PAIRED_RATIOS
from irisserve_bench.targets import DEFAULT_DOC, Target, judge, read_targets
from support import REPO_ROOT, VENV_BIN, RunningServer, free_port

CLI_TIMEOUT_S = 60
REFERENCES = {"bare", "empty", "empty-function", "empty-asgi-function"}
PATTERNS = {"web", "web-repository", "function-lazy", "function-import"} | REFERENCES
WEB_LOADS = {"health_concurrent", "predict_concurrent", "v2_infer_concurrent", "batch_sequential", "predict_sequential"}
RUN_TARGETS = 4  # in-process: ONNX call, live figures + drift; the model repository: memory of an extra model, of an extra version
MODEL_TARGETS = 15  # per model: 4 web throughput/p99 ratios, batch, web and --models cold starts, 3 function throughput/p99 ratios,
# 2 function cold starts, 3 memory
REPOSITORIES = [["iris 1.0.0"], ["iris 1.0.0", "wine 1.0.0"], ["iris 1.0.0", "wine 1.0.0", "iris 1.1.0"]]
REPOSITORY_FIGURES = {"extra_model_rss_mb", "extra_version_rss_mb"}


@pytest.fixture(scope="module")
def bundle(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bench") / "bundle", model_dir).path


def _check_model_block(block: dict[str, Any], name: str) -> None:
    """One model's figures: every pattern's cold start, every load, the paired ratios, the memory soak."""
    assert block["model"]["name"] == name
    assert set(block["cold_start"]) == PATTERNS
    for pattern, summary in block["cold_start"].items():
        phases = summary["samples"][0]["phases"]
        assert summary["median_s"] == pytest.approx(sum(phase["seconds"] for phase in phases))
        if pattern in REFERENCES:  # no start-up marks: one phase
            assert [phase["phase"] for phase in phases] == [UNSPLIT]
            continue
        assert phases[0]["phase"] == "interpreter + imports" and phases[-1]["phase"] == "first response"
        assert {"model load + verify", "warm-up"} <= {phase["phase"] for phase in phases}
    warm = block["warm"]
    assert set(warm["patterns"]) == {"web", "function"} | REFERENCES
    assert set(warm["patterns"]["web"]) == WEB_LOADS
    for pattern in {"function"} | REFERENCES:
        assert set(warm["patterns"][pattern]) == {"predict_concurrent", "predict_sequential"}
    for kinds in warm["patterns"].values():
        for summary in kinds.values():
            assert summary["errors"] == 0 and len(summary["cdf_ms"]) == 101
    assert set(warm["ratios"]) == set(PAIRED_RATIOS)
    assert all(ratio["median"] > 0 and len(ratio["per_repeat"]) == 1 for ratio in warm["ratios"].values())
    assert warm["memory"]["web"]["rss_mb"] > 10 and warm["memory"]["function"]["processes"] == 2
    soak = block["memory_soak"]
    assert soak["errors"] == 0 and [sample["after_requests"] for sample in soak["samples"]] == list(range(0, 41, 4))
    assert soak["half_at_requests"] == 20 and soak["rss_mb_at_end"] > 10
    assert {"web_vs_bare_throughput", "function_vs_empty_function_throughput", "web_rss_after_soak_mb"} <= set(block["figures"])
    assert block["figures"]["repository_vs_web_cold_start"]["reference"].startswith("--model-dir ")
    assert all(figure["errors"] == 0 for figure in block["figures"].values())


def _check_repository(results: dict[str, Any]) -> None:
    """`irisserve serve --models` over Iris, + wine, + Iris 1.1.0: each one process (one repeat), every model answered,
    and what each added model costs is the difference of its repository's RSS and the one before's (a size, not a speed)."""
    repository = results["repository"]
    assert repository["default_model"] == "iris" and [row["models"] for row in repository["repositories"]] == REPOSITORIES
    rss = []
    for row in repository["repositories"]:
        [sample] = row["samples"]
        assert sample["processes"] == 1 and row["rss_mb"] == sample["rss_mb"] > 10
        rss.append(row["rss_mb"])
    extra = repository["rss_per_extra_model_mb"]
    assert list(extra) == ["wine 1.0.0", "iris 1.1.0"] and list(repository["pss_per_extra_model_mb"]) == list(extra)
    assert extra["wine 1.0.0"] == pytest.approx(rss[1] - rss[0]) and extra["iris 1.1.0"] == pytest.approx(rss[2] - rss[1])
    assert all(abs(mb) < 50 for mb in extra.values())  # a model of a few hundred KB: sane, whatever the machine
    figures = results["figures"]
    assert figures["extra_model_rss_mb"]["value"] == extra["wine 1.0.0"]
    assert figures["extra_version_rss_mb"]["value"] == extra["iris 1.1.0"]
    assert figures["extra_version_rss_mb"]["reference"].startswith("iris 1.0.0 + wine 1.0.0: ")


def test_local_mode_measures_the_references_and_a_second_model_and_writes_json_report_chart_and_verdicts(
    model_dir: Path, bundle: Path, tmp_path: Path
) -> None:
    output, doc = tmp_path / "results.json", tmp_path / "benchmark.md"
    shutil.copy(DEFAULT_DOC, doc)
    argv = ["--local", "--model-dir", str(model_dir), "--bundle", str(bundle), "--also-model", "wine", "--output", str(output)]
    assert main([*argv, "--short", "--no-progress", "--targets", str(doc), "--update-docs"]) == 0

    results = json.loads(output.read_text())
    assert results["mode"] == "local" and results["machine"]["cpus"] >= 1
    assert results["plan"]["repeats"] == 1 and results["plan"]["concurrency"] == 2 and results["plan"]["batch_rows"] == 50
    assert {row["backend"] for row in results["inprocess"]} == {"onnx", "sklearn"}
    assert results["inprocess"][0]["backend_call"]["p50_us"] > 0
    onnx = next(row for row in results["inprocess"] if row["backend"] == "onnx")
    for path in ("predict_rows_metrics", "predict_rows_metrics_live", "live_observe", "record_request"):
        assert onnx[path]["p50_us"] > 0, path  # the live panel's cost per request
    _check_model_block(results, "iris")
    [wine] = results["other_models"]
    _check_model_block(wine, "wine")
    _check_repository(results)
    assert REPOSITORY_FIGURES.isdisjoint(wine["figures"])  # run-wide, as the in-process figures
    assert (tmp_path / "models" / "wine" / "1.0.0" / "manifest.json").is_file()  # packaged into the output folder

    targets = results["targets"]
    assert len(targets) == RUN_TARGETS + 2 * MODEL_TARGETS
    assert [t["model"] for t in targets].count("wine") == MODEL_TARGETS
    for target in targets:  # every figure was measured: a ratio, a difference or a size, and a verdict
        assert isinstance(target["measured"], float) and target["verdict"] in {"PASS", "MISS"}, target
        assert target["errors"] == 0, target
    assert [t["figure"] for t in targets[: RUN_TARGETS + MODEL_TARGETS]] == [t.figure for t in read_targets(doc)]
    bare = next(t for t in targets if t["figure"] == "web_vs_bare_throughput")
    assert bare["reference"].startswith("bare ") and bare["sign"] == "≥" and bare["bound"] == 1.2
    function = next(t for t in targets if t["figure"] == "function_vs_empty_function_throughput")
    assert "empty ASGI function" in function["reference"]

    report = output.with_suffix(".md").read_text()
    assert "## Targets" in report and "results.png" in report and "function-import" in report
    assert "## wine: irisserve and the references side by side" in report and "reference: bare FastAPI app" in report
    assert "reference: empty ASGI function" in report
    assert "## Live figures and drift: cost per request" in report and "Drift + live figures added" in report
    assert "## Model repository: resident memory per loaded model" in report and "iris 1.0.0 + wine 1.0.0 + iris 1.1.0" in report
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The document's verdicts section now holds this run's verdicts; everything else in it is unchanged.
    written, before = doc.read_text(), DEFAULT_DOC.read_text()
    verdicts = written.split("<!-- bench:verdicts -->")[1].split("<!-- /bench:verdicts -->")[0]
    assert "medians of 1 repeats, 2 clients, batches of 50 rows" in verdicts
    assert verdicts.count("| iris |") == RUN_TARGETS + MODEL_TARGETS and verdicts.count("| wine |") == MODEL_TARGETS
    assert written.split("<!-- bench:verdicts -->")[0] == before.split("<!-- bench:verdicts -->")[0]
    assert written.split("<!-- /bench:verdicts -->")[1] == before.split("<!-- /bench:verdicts -->")[1]

    # The same JSON judged again against a stricter bound: the verdicts follow the document, nothing is measured.
    doc.write_text(written.replace("| ≥ 1.2 × |", "| ≥ 1000 × |"))
    assert main(["--judge", str(output), "--targets", str(doc), "--update-docs", "--no-progress"]) == 0
    judged = json.loads(output.read_text())["targets"]
    assert [t["verdict"] for t in judged if t["figure"] == "web_vs_bare_throughput"] == ["MISS", "MISS"]
    assert [t["measured"] for t in judged] == [t["measured"] for t in targets]
    assert "| ≥ 1000 × |" in doc.read_text().split("<!-- bench:verdicts -->")[1]


def test_also_model_none_and_a_missing_folder(tmp_path: Path) -> None:
    assert also_model_dirs(["none"], tmp_path) == ()
    with pytest.raises(BenchError, match="--also-model .*missing.*: no model artifact there"):
        also_model_dirs([str(tmp_path / "missing")], tmp_path)


def _batch_block(errors: int) -> dict[str, Any]:
    """A model block holding one load: the web service's batch requests, p50 1 ms, with ``errors`` failed requests."""
    run = {"errors": errors, "error_samples": ["ValueError: HTTP 431: headers too large"][:errors], "p50_ms": 1.0}
    block = {
        "model": {"name": "iris"},
        "warm": {"patterns": {"web": {"batch_sequential": {"median_of_repeats": {"p50_ms": 1.0, "p99_ms": 2.0}, "runs": [run]}}}},
    }
    return {**block, "figures": {"batch_p50_ms": FIGURES["batch_p50_ms"].read(block)}}


def test_a_failed_request_makes_its_target_a_miss() -> None:
    """A p50 of the requests that succeeded would flatter: any failure in a target's loads is a MISS, named."""
    [verdict] = judge(_batch_block(errors=2), [Target("batch_p50_ms", "batch p50", "≤", 10.0, "ms")])
    assert verdict["verdict"] == "MISS" and verdict["measured"] == 1.0 and verdict["errors"] == 2
    assert verdict["reference"].startswith("2 failed requests (ValueError: HTTP 431")


def test_the_bounds_in_the_document_decide_the_verdicts(tmp_path: Path) -> None:
    """The repository's table names only known figures; the same figures pass or miss as the document's bound says."""
    assert {target.figure for target in read_targets()} <= set(FIGURES)
    doc = tmp_path / "benchmark.md"
    row = "| `batch_p50_ms` | batch p50 | ms | {bound} |"
    table = "<!-- bench:targets -->\n| Figure | Target | Measured as | Bound |\n|---|---|---|---|\n{row}\n<!-- /bench:targets -->\n"
    for bound, verdict in (("≤ 10 ms", "PASS"), ("≤ 0.5 ms", "MISS"), ("≥ 2 ms", "MISS")):
        doc.write_text(table.format(row=row.format(bound=bound)))
        assert [v["verdict"] for v in judge(_batch_block(errors=0), read_targets(doc))] == [verdict], bound
    for bad, message in (("| `batch_p99` | x | ms | ≤ 1 ms |", "names the figure 'batch_p99'"),
                         (row.format(bound="< 10 ms"), "has the bound '< 10 ms'")):
        doc.write_text(table.format(row=bad))
        with pytest.raises(BenchError, match=message):
            read_targets(doc)
    doc.write_text("no table here")
    with pytest.raises(BenchError, match="no targets section"):
        read_targets(doc)


@pytest.mark.parametrize("kind", ["bare", "empty", "empty-function", "empty-asgi-function"])
def test_each_reference_runs_standalone_and_imports_nothing_of_irisserve(kind: str, model_dir: Path, tmp_path: Path) -> None:
    """Started exactly as the bench starts it, with Python's import-time log on: it answers, and the log names
    every module the process (and a gunicorn worker) imported, none of them irisserve's."""
    spec = reference_app(kind, model_dir) if kind in REFERENCE_APPS else reference_function(model_dir, kind)
    spec = dataclasses.replace(spec, env={**spec.env, "PYTHONPROFILEIMPORTTIME": "1"})
    with started(spec, tmp_path) as server:
        server.wait_first_prediction(timeout=CLI_TIMEOUT_S)
        status, body = request(server.port, "POST", spec.predict_path, spec.payload)
    assert server.process.returncode is not None
    assert status == 200 and "prediction" in json.loads(body)
    imported = [line.rsplit("|", 1)[1].strip() for line in server.log_path.read_text().splitlines() if line.startswith("import time:")]
    assert ("uvicorn" if kind in REFERENCE_APPS else "functions_framework") in imported
    assert [name for name in imported if name.split(".")[0] in {"irisserve", "irisserve_bench"}] == []
    if kind == "empty-asgi-function":  # functions-framework served the coroutine on gunicorn's uvicorn worker
        assert "uvicorn_worker._workers" in imported


def test_the_function_runs_the_bundles_own_copy_of_irisserve(bundle: Path) -> None:
    """PYTHONPATH and cwd point at the bundle, so its irisserve wins over the repository's editable install."""
    spec = cloud_function(bundle)
    found = subprocess.run(
        [sys.executable, "-c", "import irisserve; print(irisserve.__file__)"],
        cwd=spec.cwd, env={**spec.env, "PATH": ""}, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=True,
    )
    assert Path(found.stdout.strip()).resolve() == (bundle / "irisserve" / "__init__.py").resolve()


# A server that answers every request with 404, on the PORT it is given, as the bench passes it.
ALWAYS_404 = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_error(404)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


@pytest.mark.parametrize(
    ("script", "expected"),
    [("import sys; sys.exit(3)", "exited with code 3"), (ALWAYS_404, "answered 404")],
    ids=["exits", "answers-404"],
)
def test_a_server_that_cannot_come_up_is_reported_not_waited_for(script: str, expected: str, tmp_path: Path) -> None:
    spec = ServiceSpec("broken", (sys.executable, "-c", script), {}, predict_path="/", health_path="/")
    with started(spec, tmp_path) as server, pytest.raises(BenchError, match=expected):
        server.wait_first_prediction(timeout=30)
    assert server.process.poll() is not None


# --- remote mode -------------------------------------------------------------------------------------


class _Canned(BaseHTTPRequestHandler):
    """Answers every POST with the server's canned status, content type and body."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, content_type, body = self.server.canned  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canned_server(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    server.canned = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def _benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    """The seed's command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmark.py"), *args, "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )


def test_remote_mode_with_the_seed_flags(live_server: RunningServer, tmp_path: Path) -> None:
    output = tmp_path / "benchmark_results.json"
    done = _benchmark(
        "--cloud-run-url", live_server.base_url, "--cloud-function-url", live_server.base_url + "/predict",
        "--num-requests", "5", "--concurrency", "2", "--output", str(output),
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(output.read_text())
    assert set(results["patterns"]) == {"cloud-run", "cloud-function"}
    for pattern in results["patterns"].values():
        assert pattern["first_request"]["answer"]["prediction"] == "setosa"
        assert pattern["sequential"]["ok"] == 5 and pattern["sequential"]["errors"] == 0
        assert pattern["concurrent"]["ok"] == 5
    assert "What was and was not measured" in output.with_suffix(".md").read_text()
    assert output.with_suffix(".png").is_file()


@pytest.mark.parametrize(
    ("canned_server", "expected"),
    [
        ((500, "application/json", b'{"detail": "boom"}'), "answered HTTP 500: {\"detail\": \"boom\"}"),
        ((404, "text/html", b"<h1>Not Found</h1>"), "answered HTTP 404"),
        ((200, "text/html", b"<html>hello</html>"), "answered 200 but not JSON (text/html)"),
    ],
    indirect=["canned_server"],
    ids=["500", "404", "not-json"],
)
def test_remote_errors_are_one_clear_line(canned_server: str, expected: str, tmp_path: Path) -> None:
    done = _benchmark("--cloud-run-url", canned_server, "--output", str(tmp_path / "r.json"))
    assert done.returncode == 1
    assert expected in done.stderr and f"{canned_server}/predict" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_a_hanging_server_ends_in_a_timeout_message(hanging_server: str, tmp_path: Path) -> None:
    done = _benchmark("--cloud-function-url", hanging_server, "--timeout", "1", "--output", str(tmp_path / "r.json"))
    assert done.returncode == 1
    assert "no answer within 1 s" in done.stderr and "Traceback" not in done.stderr


def test_an_unreachable_url_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = _benchmark("--cloud-run-url", url, "--output", str(tmp_path / "r.json"))
    assert done.returncode == 1
    assert "cannot connect" in done.stderr and url in done.stderr and "Traceback" not in done.stderr


def test_irisserve_bench_forwards_its_options() -> None:
    done = subprocess.run([str(VENV_BIN / "irisserve"), "bench", "--help"], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0 and "--cloud-run-url" in done.stdout and "--local" in done.stdout
    done = subprocess.run([str(VENV_BIN / "irisserve"), "bench"], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 2 and "choose --local" in done.stderr
