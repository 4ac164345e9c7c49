"""Helpers for tests that run real server processes on loopback ports."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SEED_EXAMPLE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
SEED_ANSWER = {
    "prediction": "setosa",
    "prediction_id": 0,
    "confidence": 1.0,
    "probabilities": {"setosa": 1.0, "versicolor": 0.0, "virginica": 0.0},
    "model_version": "1.0.0",
    "out_of_range_features": [],
}
VIRGINICA = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


def with_value(field: str, value: object) -> dict[str, object]:
    """The seed example with one field changed."""
    return {**SEED_EXAMPLE, field: value}


# Each invalid /predict body, the field its error names, and the error type both front doors must give.
INVALID_SINGLE = {
    "missing field": ({k: v for k, v in SEED_EXAMPLE.items() if k != "petal_width"}, "petal_width", "missing"),
    "string number": (with_value("sepal_length", "5.1"), "sepal_length", "float_type"),
    "boolean": (with_value("sepal_width", True), "sepal_width", "float_type"),
    "null": (with_value("petal_length", None), "petal_length", "float_type"),
    "negative": (with_value("petal_length", -1.4), "petal_length", "greater_than"),
    "zero": (with_value("petal_width", 0), "petal_width", "greater_than"),
    "larger than float32": (with_value("sepal_length", 1e39), "sepal_length", "less_than_equal"),
    "extra field": ({**SEED_EXAMPLE, "color": "blue"}, "color", "extra_forbidden"),
}
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{log_path.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Stop the process (and its children); kill it if it ignores ``sig``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
    return process.returncode


@contextlib.contextmanager
def run_server(
    command: Sequence[str],
    *,
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/health",
    cwd: Path = REPO_ROOT,
    timeout: float = STARTUP_TIMEOUT_S,
) -> Iterator[RunningServer]:
    """Start ``command`` in its own process group, wait for ``ready_path`` to answer 200, stop it afterwards.

    No drain at stop unless the test asks for one (IRISSERVE_DRAIN_SECONDS): only the tests about draining wait it out."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "IRISSERVE_DRAIN_SECONDS": "0", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, base_url + ready_path, log_path, timeout)
        yield RunningServer(process, base_url, log_path)
    finally:
        stop(process)


FUNCTION_SOURCE = REPO_ROOT / "cloud_function" / "main.py"
ALLOWED_ORIGIN = "https://app.example"


def function_env(model_dir: Path, **extra: str) -> dict[str, str]:
    return {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_CORS_ORIGINS": json.dumps([ALLOWED_ORIGIN]), **extra}


def function_command(port: int, source: Path = FUNCTION_SOURCE, bin_dir: Path = VENV_BIN) -> list[str]:
    return [
        str(bin_dir / "functions-framework"), "--source", str(source), "--target", "predict",
        "--host", "127.0.0.1", "--port", str(port),
    ]



def uvicorn_command(port: int, app: str = "irisserve.web.app:app", *extra: str) -> list[str]:
    return [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), *extra]


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``irisserve ARGS`` run in this process from ``cwd``: the same ``main()`` the console script calls, its exit
    code and what it printed, without an interpreter start and a fresh import of scikit-learn per call. (Tests that
    serve a packaged model run the console script itself.)"""
    from irisserve.tools.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse: --help, or a usage error
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["irisserve", *map(str, args)], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def both_doors(model_dir: Path, folder: Path, timeout: float = 30) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """An artifact served by uvicorn and by functions-framework on loopback (logs in ``folder``): their clients."""
    web_port, function_port = free_port(), free_port()
    with run_server(uvicorn_command(web_port), port=web_port, log_path=folder / "web.log", env={"IRISSERVE_MODEL_DIR": str(model_dir)}) as web, \
            run_server(function_command(function_port), port=function_port, log_path=folder / "function.log",
                       env=function_env(model_dir), ready_path="/") as function, \
            httpx.Client(base_url=web.base_url, timeout=timeout) as web_client, \
            httpx.Client(base_url=function.base_url, timeout=timeout) as function_client:
        yield web_client, function_client


def package_with_cli(zoo: Any, *, name: str, out: Path, version: str = "1.0.0", target: str = "target") -> dict[str, Any]:
    """`irisserve package` of a models_zoo model, in its own process; the manifest it wrote."""
    result = subprocess.run(
        [str(VENV_BIN / "irisserve"), "package", "--model", str(zoo.model_path), "--data", str(zoo.csv_path), "--target", target,
         "--name", name, "--version", version, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "manifest.json").read_text())


def build_repository(root: Path, model_dir: Path) -> Path:
    """A model repository at ``root``: iris/1.0.0 (``model_dir``'s artifact), iris/1.1.0 (another random_state, so
    /models/iris serves 1.1.0) and wine/1.0.0 (models_zoo's RandomForest), as `irisserve serve --models` reads it."""
    import shutil

    import models_zoo
    from irisserve.tools.packaging import package_files
    from irisserve.tools.training import train

    shutil.copytree(model_dir, root / "iris" / "1.0.0")
    train(root / "iris" / "1.1.0", version="1.1.0", check_size=2_000, random_state=7)
    zoo = models_zoo.wine(root.parent / f"{root.name}-zoo")
    package_files(zoo.model_path, zoo.csv_path, target_column="target", name="wine", version="1.0.0", out_dir=root / "wine" / "1.0.0")
    return root
