"""The benchmark is a distribution of its own (irisserve-bench, bench/): the serving wheel, the image built from it
and the function bundle carry none of it, and ``irisserve bench`` says how to install it when it is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from irisserve.tools.bundle import build_bundle
from support import REPO_ROOT

BUILD_TIMEOUT_S = 180
# What the image's build context lets in to build the wheel (.dockerignore), less the requirements and models.
WHEEL_SOURCES = ("pyproject.toml", "README.md")


def _bench_paths(paths: list[str]) -> list[str]:
    return [path for path in paths if "bench" in path.lower()]


def test_the_serving_wheel_holds_no_bench_module(tmp_path: Path) -> None:
    """Built with pip from a copy of what the Dockerfile builds its wheel from, as the image does."""
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in WHEEL_SOURCES:
        shutil.copy(REPO_ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheel").glob("irisserve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"irisserve/tools/cli.py", "irisserve/web/app.py", "irisserve/core/predictor.py"} <= set(names)
    assert _bench_paths(names) == []


def test_the_image_build_context_leaves_the_bench_out() -> None:
    allowed = [line[1:].strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert "src/" in allowed and _bench_paths(allowed) == []


def test_the_function_bundle_holds_no_bench_module(model_dir: Path, tmp_path: Path) -> None:
    info = build_bundle(tmp_path / "bundle", model_dir)
    files = [str(path.relative_to(info.path)) for path in info.path.rglob("*")]
    assert "irisserve/core/predictor.py" in files and "main.py" in files
    assert _bench_paths(files) == []


def test_irisserve_bench_without_the_bench_installed_says_how_to_install_it() -> None:
    """irisserve_bench made unimportable, as in an install of the serving wheel alone: one line and exit 2."""
    code = "import sys; sys.modules['irisserve_bench'] = None; from irisserve.tools.cli import main; sys.exit(main(['bench', '--local']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "pip install -e bench" in done.stderr and "Traceback" not in done.stderr
