"""Start each serving pattern as production runs it, on a free loopback port, and watch it come up.

The web service runs as the container's command (``irisserve serve``) with its default settings; the
function runs from the built bundle under ``functions-framework`` with ``PYTHONPATH`` set to the bundle, so
the bundle's own copy of ``irisserve`` is the one imported (as on Cloud Functions, where the bundle is all
there is).

The references (``references/``, beside this module) are fixed programs doing what a bare stack does for the
same job, so irisserve's figures read as ratios to them. Each is a standalone file run by path, under the same
uvicorn and functions-framework (``uvicorn --app-dir references/ bare_app:app``, ``functions-framework --source
references/empty_function.py``): never imported through this package, and importing nothing of irisserve.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irisserve_bench import payloads
from irisserve_bench.errors import BenchError
from irisserve_bench.models import Repository

LOOPBACK = "127.0.0.1"
POLL_INTERVAL_S = 0.002  # the first-response phase is only this precise; a refused connect costs ~50 µs
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 1500
VENV_BIN = Path(sys.executable).parent
REFERENCES = Path(__file__).resolve().parent / "references"
REFERENCE_APPS = {"bare": "bare_app", "empty": "empty_app"}
# Pattern name → file: the Flask function (gunicorn's threaded worker) and the ASGI one (uvicorn worker).
REFERENCE_FUNCTIONS = {"empty-function": "empty_function.py", "empty-asgi-function": "empty_asgi_function.py"}
PORT_PLACEHOLDER = "{port}"  # in a command, replaced by the port the process is given

# Each start-up mark ends a phase; the phase is named by what happened since the previous mark.
PHASE_NAMES: dict[str, str] = {
    "imports_done": "interpreter + imports",
    "model_loaded": "model load + verify",
    "warmed_up": "warm-up",
    "first_request": "server start, first request arrives",
}
# "ready" follows "warmed_up" by microseconds in both front doors; as a phase it would be an empty bar.
IGNORED_MARKS = frozenset({"ready"})
FIRST_RESPONSE = "first response"
UNSPLIT = "start-up (no marks)"  # the references report no marks: spawn → first 200 is one phase


@dataclass(frozen=True)
class Route:
    """A request the benchmark sends besides the prediction: method, path and JSON body."""

    method: str
    path: str
    payload: Any = None


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one pattern and where to talk to it."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    predict_path: str
    health_path: str | None  # where start-up marks are read; None: the process reports none
    payload: Mapping[str, Any] = field(default_factory=dict)
    cwd: Path | None = None
    routes: Mapping[str, Route] = field(default_factory=dict)  # extra loads by name: "health", "v2_infer", "batch"


def example_row(model_dir: Path) -> dict[str, float]:
    """The served model's example row, from its manifest: what every single-row request posts."""
    return payloads.example_row(model_dir)


def _script(name: str, module: str) -> tuple[str, ...]:
    """The venv's console script, or ``python -m`` when the venv has none (an unusual install)."""
    script = VENV_BIN / name
    return (str(script),) if script.exists() else (sys.executable, "-m", module)


def web_service(model_dir: Path, *, backend: str = "onnx", name: str = "web", batch_rows: int = 1000) -> ServiceSpec:
    """The container's command, one worker, default settings (metrics, JSON access log, request ids, limits on)."""
    spec = payloads.model_spec(model_dir)
    env = {
        "IRISSERVE_HOST": LOOPBACK,
        "IRISSERVE_MODEL_DIR": str(Path(model_dir).resolve()),
        "IRISSERVE_BACKEND": backend,
        "IRISSERVE_WORKERS": "1",
    }
    routes = {
        "health": Route("GET", "/health"),
        "v2_infer": Route("POST", payloads.v2_infer_path(spec), payloads.v2_infer_request(spec)),
        "batch": Route("POST", "/predict/batch", payloads.batch_request(spec, batch_rows)),
    }
    return ServiceSpec(
        name, (*_script("irisserve", "irisserve.tools.cli"), "serve"), env,
        predict_path="/predict", health_path="/health", payload=spec.example, routes=routes,
    )


def repository_service(repository: Repository, *, default_model: str, name: str = "web-repository") -> ServiceSpec:
    """``irisserve serve --models ROOT --default-model NAME``, otherwise as ``web_service`` starts it (one worker, the
    ONNX backend, default settings). ``POST /predict`` answers with the default model's latest version: its example row."""
    from irisserve.core.registry import latest

    versions = {artifact.version: artifact.folder for artifact in repository.artifacts if artifact.name == default_model}
    env = {"IRISSERVE_HOST": LOOPBACK, "IRISSERVE_BACKEND": "onnx", "IRISSERVE_WORKERS": "1"}
    command = (*_script("irisserve", "irisserve.tools.cli"), "serve", "--models", str(repository.root.resolve()), "--default-model", default_model)
    return ServiceSpec(
        name, command, env, predict_path="/predict", health_path="/health", payload=example_row(versions[latest(versions)])
    )


def cloud_function(bundle_dir: Path, *, load: str = "lazy", name: str | None = None) -> ServiceSpec:
    """functions-framework serving the bundle's main.py; only the bundle is on the import path for irisserve."""
    bundle = Path(bundle_dir).resolve()
    command = (*_script("functions-framework", "functions_framework"), "--source", str(bundle / "main.py"), "--target", "predict", "--host", LOOPBACK)
    env = {"PYTHONPATH": str(bundle), "IRISSERVE_FUNCTION_LOAD": load}
    return ServiceSpec(
        name or f"function-{load}", command, env, predict_path="/", health_path="/", payload=example_row(bundle / "model"), cwd=bundle
    )


def reference_app(kind: str, model_dir: Path) -> ServiceSpec:
    """``bare`` or ``empty``: uvicorn serving a reference file from the references folder (the only folder added to
    its import path), 1 worker, no access log (``--log-level warning``)."""
    command = (*_script("uvicorn", "uvicorn"), "--app-dir", str(REFERENCES), f"{REFERENCE_APPS[kind]}:app",
               "--host", LOOPBACK, "--port", PORT_PLACEHOLDER, "--workers", "1", "--log-level", "warning")
    env = {"IRISSERVE_MODEL_DIR": str(Path(model_dir).resolve())}
    return ServiceSpec(kind, command, env, predict_path="/predict", health_path=None, payload=example_row(model_dir), cwd=REFERENCES)


def reference_function(model_dir: Path, kind: str = "empty-function") -> ServiceSpec:
    """``empty-function`` or ``empty-asgi-function``: functions-framework serving that file, as the bundle is served
    (it gets the same body)."""
    source = REFERENCES / REFERENCE_FUNCTIONS[kind]
    command = (*_script("functions-framework", "functions_framework"), "--source", str(source), "--target", "predict", "--host", LOOPBACK)
    return ServiceSpec(kind, command, {}, predict_path="/", health_path=None, payload=example_row(model_dir), cwd=REFERENCES)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, payload: Any = None, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """One blocking request on a fresh connection (polling and probes; the load uses bench.load)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@dataclass
class ServerProcess:
    """A started server: its process, port, log, and the wall-clock time just before it was spawned."""

    spec: ServiceSpec
    port: int
    process: subprocess.Popen[bytes]
    spawned_at: float
    log_path: Path
    first_ok_at: float | None = None
    probes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        return ""

    def wait_first_prediction(self, timeout: float = START_TIMEOUT_S) -> float:
        """Poll the prediction endpoint until it answers 200; returns seconds from spawn to that answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.spec.name} exited with code {self.process.returncode} before answering; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            self.probes += 1
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, body = request(self.port, "POST", self.spec.predict_path, self.spec.payload, timeout=timeout)
                if status == 200:
                    self.first_ok_at = time.time()
                    return self.first_ok_at - self.spawned_at
                if 400 <= status < 500:  # 503 means "still loading"; a 4xx will not go away by waiting
                    raise BenchError(f"{self.spec.name}: POST {self.spec.predict_path} answered {status}: {body[:200]!r}")
            time.sleep(POLL_INTERVAL_S)
        raise BenchError(f"{self.spec.name} gave no 200 within {timeout:g} s; its log ({self.log_path}) ends with:\n{self.log_tail()}")

    def health(self) -> dict[str, Any]:
        if self.spec.health_path is None:
            return {}
        status, body = request(self.port, "GET", self.spec.health_path)
        try:
            data = json.loads(body)
        except ValueError:
            raise BenchError(f"{self.spec.name}: GET {self.spec.health_path} answered {status} with non-JSON {body[:120]!r}") from None
        return data if isinstance(data, dict) else {}

    def phases(self) -> list[dict[str, Any]]:
        """Spawn → each start-up mark the server reports → first 200 seen here, as consecutive phases."""
        marks = self.health().get("startup") or {}
        ordered = sorted(
            (float(at), name) for name, at in marks.items() if name not in IGNORED_MARKS and float(at) >= self.spawned_at
        )
        assert self.first_ok_at is not None
        phases, previous = [], self.spawned_at
        for at, name in ordered:
            if at > self.first_ok_at:
                continue  # a mark after the first answer (e.g. set by the health probe itself) is not start-up
            phases.append({"phase": PHASE_NAMES.get(name, name), "ends_at_mark": name, "seconds": at - previous})
            previous = at
        last = FIRST_RESPONSE if self.spec.health_path is not None else UNSPLIT
        phases.append({"phase": last, "ends_at_mark": "first 200 seen by the client", "seconds": self.first_ok_at - previous})
        return phases

    def stop(self) -> int:
        """SIGKILL the process group (the server and any workers). Nothing after a process's last answer is measured,
        and a graceful stop (drain, graceful timeout) would add up to a second to each of a run's ~80 processes."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def started(spec: ServiceSpec, log_dir: Path) -> Iterator[ServerProcess]:
    """Spawn ``spec`` on a free port in its own process group; always stop it on the way out."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec.name}-{port}.log"
    # Both front doors take the port from PORT, as Cloud Run and Cloud Functions pass it.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env, "PORT": str(port)}
    command = [part.replace(PORT_PLACEHOLDER, str(port)) for part in spec.command]
    with log_path.open("wb") as log:
        spawned_at = time.time()
        try:
            process = subprocess.Popen(
                command, cwd=spec.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            raise BenchError(f"cannot start {spec.name} ({' '.join(spec.command)}): {exc}") from None
    server = ServerProcess(spec, port, process, spawned_at, log_path)
    try:
        yield server
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (functions-framework runs a gunicorn arbiter and a worker)."""
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in _children(parent)]
        tree.extend(frontier)
    return tree


def _status_kib(pid: int, field_name: str, file: str = "status") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def memory(pid: int) -> dict[str, Any]:
    """Resident memory of the process tree: RSS summed (counts shared pages once per process) and PSS."""
    pids = process_tree(pid)
    rss = [_status_kib(p, "VmRSS") for p in pids]
    pss = [_status_kib(p, "Pss", "smaps_rollup") for p in pids]
    return {
        "processes": len(pids),
        "rss_mb": sum(rss) / 1024,
        "rss_per_process_mb": [kib / 1024 for kib in rss],
        "pss_mb": sum(pss) / 1024 if all(pss) else None,
    }
