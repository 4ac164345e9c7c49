"""Shared fixtures: a trained artifact (trained once per run if `make model` has not made one) and live servers."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import ALLOWED_ORIGIN, REPO_ROOT, RunningServer, free_port, function_command, function_env, run_server, uvicorn_command

DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "iris" / "1.0.0"
# Tests read their counts right after the requests they make: every scrape renders (production: once a second).
# In-process apps read it through Settings, the servers tests start inherit it.
os.environ.setdefault("IRISSERVE_METRICS_MAX_AGE_SECONDS", "0")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's artifact; trained into a temporary folder if it does not exist yet."""
    if (DEFAULT_MODEL_DIR / "manifest.json").is_file():
        return DEFAULT_MODEL_DIR
    from irisserve.tools.training import train

    folder = tmp_path_factory.mktemp("model") / "1.0.0"
    train(folder)
    return folder


@pytest.fixture
def artifact_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the artifact that a test may tamper with."""
    copy = tmp_path / "artifact"
    shutil.copytree(model_dir, copy)
    return copy


@pytest.fixture(scope="session")
def live_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real uvicorn process serving irisserve.web.app:app on a free loopback port, shared by a test session."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("logs") / "uvicorn.log"
    env = {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_CORS_ORIGINS": json.dumps([ALLOWED_ORIGIN])}
    with run_server(uvicorn_command(port), port=port, log_path=log_path, env=env) as server:
        yield server


@pytest.fixture(scope="session")
def live_function(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real functions-framework (gunicorn) process serving cloud_function/main.py, lazy loading."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("function") / "functions-framework.log"
    with run_server(function_command(port), port=port, log_path=log_path, env=function_env(model_dir), ready_path="/") as server:
        yield server
