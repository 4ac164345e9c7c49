"""The deployable function bundle: its contents, and the folder itself served from a fresh venv of its own pins."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from irisserve.tools.bundle import BundleError, BundleInfo, build_bundle
from irisserve.core.errors import ArtifactError
from support import REPO_ROOT, SEED_ANSWER, SEED_EXAMPLE, RunningServer, free_port, function_command, run_server
from test_function import assert_json_error

FORBIDDEN = {"sklearn", "scipy", "fastapi", "joblib", "skl2onnx", "onnx", "lightgbm", "xgboost", "onnxmltools"}
FORBIDDEN_DISTRIBUTIONS = {"scikit-learn", "scipy", "fastapi", "joblib", "skl2onnx", "onnx", "lightgbm", "xgboost", "onnxmltools"}
PIP_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def bundle(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BundleInfo:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "cloud_function", model_dir)


def test_bundle_holds_main_pins_package_and_verified_artifact(bundle: BundleInfo, model_dir: Path) -> None:
    files = set(bundle.files)
    assert {"main.py", "requirements.txt", "bundle.json", ".gcloudignore"} <= files
    assert {"model/manifest.json", "model/model.onnx"} <= files
    package = {name.removeprefix("irisserve/") for name in files if name.startswith("irisserve/")}
    assert {
        "__init__.py", "core/__init__.py", "function/__init__.py", "function/handler.py", "core/predictor.py",
        "core/settings.py", "core/errors.py", "ops/drift.py", "ops/live.py", "ui/__init__.py", "ui/page.html",
    } <= package
    assert not any(name.startswith(("tools/", "web/")) for name in package), package
    assert (bundle.path / "main.py").read_bytes() == (REPO_ROOT / "cloud_function" / "main.py").read_bytes()
    assert (bundle.path / "model" / "manifest.json").read_bytes() == (model_dir / "manifest.json").read_bytes()
    assert bundle.size_bytes == sum(p.stat().st_size for p in bundle.path.rglob("*") if p.is_file())
    assert json.loads((bundle.path / "bundle.json").read_text())["model_version"] == bundle.model_version == "1.0.0"


def test_requirements_are_the_exact_pins_without_training_libraries(bundle: BundleInfo) -> None:
    text = (bundle.path / "requirements.txt").read_text()
    assert text == (REPO_ROOT / "requirements-function.txt").read_text()
    pins = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert all("==" in line for line in pins), pins
    names = {line.split("==")[0].lower() for line in pins}
    assert {"functions-framework", "onnxruntime", "numpy", "pydantic", "pydantic-settings"} <= names
    assert not names & FORBIDDEN_DISTRIBUTIONS


def test_bundled_code_imports_only_what_the_bundle_holds(bundle: BundleInfo) -> None:
    """Module-level imports: irisserve modules present in the bundle, and nothing from training or FastAPI."""
    for path in bundle.path.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            for name in names:
                top, _, rest = name.partition(".")
                assert top not in FORBIDDEN, f"{path} imports {name}"
                if top == "irisserve" and rest:
                    module = bundle.path / "irisserve" / rest.replace(".", "/")
                    assert module.with_suffix(".py").is_file() or (module / "__init__.py").is_file(), f"{path}: {name}"


def test_bundle_serves_from_its_own_folder_without_training_libraries(bundle: BundleInfo, tmp_path: Path) -> None:
    """Load main.py as functions-framework does, from a neutral cwd: the bundled package and model serve."""
    script = f"""
import json, sys
import functions_framework
from starlette.testclient import TestClient
app = functions_framework.create_app(target="predict", source={str(bundle.path / "main.py")!r})
response = TestClient(app).post("/", json={SEED_EXAMPLE!r})
import irisserve
print(json.dumps({{"status": response.status_code, "body": response.json(), "package": irisserve.__file__,
                   "forbidden": sorted(m for m in sys.modules if m.split(".")[0] in {sorted(FORBIDDEN)!r})}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRISSERVE_") and k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["status"] == 200 and report["body"] == SEED_ANSWER
    assert Path(report["package"]).parent == bundle.path / "irisserve"
    assert report["forbidden"] == []


def test_cli_prints_path_and_size_and_rebuilds_only_with_force(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fn"
    command = [str(Path(sys.executable).parent / "irisserve"), "bundle-function", "--out", str(out), "--model-dir", str(model_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout and " MB" in result.stdout
    written = (out / "bundle.json").read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 2 and "pass --force" in again.stderr and (out / "bundle.json").read_text() == written
    (out / "irisserve" / "__pycache__").mkdir()  # a local run's bytecode is the bundle's own
    (out / "irisserve" / "__pycache__" / "x.pyc").write_bytes(b"")
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (out / "main.py").is_file() and not (out / "irisserve" / "__pycache__").exists()


def test_force_never_replaces_a_bundle_holding_other_files(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fn"
    build_bundle(out, model_dir)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="notes.txt"):
        build_bundle(out, model_dir, force=True)
    assert (out / "notes.txt").read_text() == "keep me" and (out / "main.py").is_file()


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(model_dir: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a function bundle"):
        build_bundle(precious, model_dir)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_refuses_a_tampered_artifact_before_writing(artifact_copy: Path, tmp_path: Path) -> None:
    (artifact_copy / "model.onnx").write_bytes(b"not the model")
    with pytest.raises(ArtifactError, match="integrity check"):
        build_bundle(tmp_path / "fn", artifact_copy)
    assert not (tmp_path / "fn").exists()


@pytest.fixture(scope="module")
def bundle_venv(bundle: BundleInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding exactly the bundle's requirements.txt, as the Cloud Functions build does."""
    folder = tmp_path_factory.mktemp("bundle-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(folder)
    result = subprocess.run(
        [str(folder / "bin" / "pip"), "install", "-q", "--no-compile", "-r", str(bundle.path / "requirements.txt")],
        capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return folder


@pytest.fixture(scope="module")
def bundle_server(bundle: BundleInfo, bundle_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real functions-framework of that venv serving the bundle, from a folder that is not the repository."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    port = free_port()
    saved = dict(os.environ)
    for name in [k for k in os.environ if k.startswith("IRISSERVE_")] + ["PYTHONPATH"]:
        os.environ.pop(name, None)  # the bundle must find its model and package by itself
    try:
        command = function_command(port, source=bundle.path / "main.py", bin_dir=bundle_venv / "bin")
        env = {"PYTHONDONTWRITEBYTECODE": "1", "VIRTUAL_ENV": str(bundle_venv)}
        with run_server(command, port=port, log_path=elsewhere / "log", env=env, cwd=elsewhere, ready_path="/") as server:
            yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.slow
def test_the_bundle_venv_has_no_irisserve_and_no_training_libraries(bundle_venv: Path, tmp_path: Path) -> None:
    """So a working server below can only have used the bundle's own copy of the package."""
    script = "import importlib.util as u; print([m for m in ('irisserve', 'sklearn', 'scipy', 'fastapi') if u.find_spec(m)])"
    result = subprocess.run([str(bundle_venv / "bin" / "python"), "-I", "-c", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_bundle_serves_through_functions_framework(bundle_server: RunningServer) -> None:
    with httpx.Client(base_url=bundle_server.base_url, timeout=10) as client:
        health = client.get("/").json()
        assert health["status"] == "healthy" and health["model"]["model_version"] == "1.0.0"
        assert client.post("/", json=SEED_EXAMPLE).json() == SEED_ANSWER
        batch = client.post("/", json={"instances": [SEED_EXAMPLE] * 3}).json()
        assert [p["prediction"] for p in batch["predictions"]] == ["setosa"] * 3
        missing = {k: v for k, v in SEED_EXAMPLE.items() if k != "petal_width"}
        assert assert_json_error(client.post("/", json=missing), 422)[0]["loc"] == ["body", "petal_width"]
        assert assert_json_error(client.post("/", content=b"not json"), 422)[0]["type"] == "json_invalid"
        assert assert_json_error(client.put("/", json=SEED_EXAMPLE), 405)
        assert assert_json_error(client.post("/", content=b" " * (1_048_576 + 1)), 413)
        assert "limit is 1000" in assert_json_error(client.post("/", json={"instances": [SEED_EXAMPLE] * 1001}), 413)
        page = client.get("/", headers={"Accept": "text/html"})  # the model page is package data: it must come along
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '"door":"function"' in page.text
