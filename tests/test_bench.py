"""The benchmark tool end to end: local mode with tiny counts, remote mode against loopback servers.

No timing assertions: speed is what the tool reports, not what the tests check."""

from __future__ import annotations

import json
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
from irisserve_bench.local import UNSPLIT, ServiceSpec, cloud_function, started
from irisserve_bench.models import also_model_dirs
from irisserve_bench.report import TARGETS
from irisserve_bench.runner import PAIRED_RATIOS
from support import REPO_ROOT, VENV_BIN, RunningServer, free_port

# Batches of 50 rows: the count is what the tiny run needs, not the 1,000 of the target.
TINY_LOCAL = ["--cold-starts", "1", "--num-requests", "20", "--sequential-requests", "5", "--repeats", "1",
              "--inprocess-calls", "20", "--concurrency", "2", "--batch-rows", "50", "--batch-requests", "3",
              "--memory-requests", "40", "--no-progress"]
CLI_TIMEOUT_S = 60
PATTERNS = {"web", "bare", "empty", "function-lazy", "function-import", "empty-function"}
REFERENCES = {"bare", "empty", "empty-function"}
WEB_LOADS = {"health_concurrent", "predict_concurrent", "v2_infer_concurrent", "batch_sequential", "predict_sequential"}
RUN_TARGETS = 2  # in-process: ONNX call, live figures + drift
MODEL_TARGETS = 10  # per model: 4 throughput/p99 ratios, batch, web cold start, 2 function cold starts, 2 memory


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
    assert set(warm["patterns"]) == {"web", "bare", "empty", "function", "empty-function"}
    assert set(warm["patterns"]["web"]) == WEB_LOADS
    for pattern in ("bare", "empty", "function", "empty-function"):
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


def test_local_mode_measures_the_references_and_a_second_model_and_writes_json_report_and_chart(
    model_dir: Path, bundle: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results.json"
    argv = ["--local", "--model-dir", str(model_dir), "--bundle", str(bundle), "--also-model", "wine", "--output", str(output)]
    assert main([*argv, *TINY_LOCAL]) == 0

    results = json.loads(output.read_text())
    assert results["mode"] == "local" and results["machine"]["cpus"] >= 1
    assert {row["backend"] for row in results["inprocess"]} == {"onnx", "sklearn"}
    assert results["inprocess"][0]["backend_call"]["p50_us"] > 0
    onnx = next(row for row in results["inprocess"] if row["backend"] == "onnx")
    for path in ("predict_rows_metrics", "predict_rows_metrics_live", "live_observe", "record_request"):
        assert onnx[path]["p50_us"] > 0, path  # the live panel's cost per request
    _check_model_block(results, "iris")
    [wine] = results["other_models"]
    _check_model_block(wine, "wine")
    assert (tmp_path / "models" / "wine" / "1.0.0" / "manifest.json").is_file()  # packaged into the output folder

    targets = results["targets"]
    assert len(targets) == RUN_TARGETS + 2 * MODEL_TARGETS
    assert [t["model"] for t in targets].count("wine") == MODEL_TARGETS
    for target in targets:  # every figure was measured: a ratio, a difference or a size, and a verdict
        assert isinstance(target["measured"], float) and target["verdict"] in {"PASS", "MISS"}, target
        assert target["errors"] == 0, target
    bare = next(t for t in targets if t["target"].startswith("Web POST /predict throughput ÷ the bare app's"))
    assert bare["target"].endswith("(2 clients)") and bare["reference"].startswith("bare ") and bare["sign"] == "≥"

    report = output.with_suffix(".md").read_text()
    assert "## Targets" in report and "results.png" in report and "function-import" in report
    assert "## wine: irisserve and the references side by side" in report and "reference: bare FastAPI app" in report
    assert "## Live figures and drift: cost per request" in report and "Drift + live figures added" in report
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_also_model_none_and_a_missing_folder(tmp_path: Path) -> None:
    assert also_model_dirs(["none"], tmp_path) == ()
    with pytest.raises(BenchError, match="--also-model .*missing.*: no model artifact there"):
        also_model_dirs([str(tmp_path / "missing")], tmp_path)


def test_a_failed_request_makes_its_target_a_miss() -> None:
    """A p50 of the requests that succeeded would flatter: any failure in a target's loads is a MISS, named."""
    run = {"errors": 2, "error_samples": ["ValueError: HTTP 431: headers too large"], "p50_ms": 1.0}
    block = {
        "model": {"name": "iris"},
        "warm": {"patterns": {"web": {"batch_sequential": {"median_of_repeats": {"p50_ms": 1.0, "p99_ms": 2.0}, "runs": [run]}}}},
    }
    batch = next(target for target in TARGETS if target.name.startswith("POST /predict/batch"))
    verdict = batch.judge(block, {"batch_rows": 1000, "concurrency": 8, "memory_requests": 10})
    assert verdict["verdict"] == "MISS" and verdict["measured"] == 1.0 and verdict["errors"] == 2
    assert verdict["reference"].startswith("2 failed requests (ValueError: HTTP 431")


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
