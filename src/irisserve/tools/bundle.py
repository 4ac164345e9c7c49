"""Build the Cloud Function's source folder: what ``gcloud functions deploy --source`` uploads, and nothing else.

The folder holds main.py, requirements.txt (the pinned serving set: no scikit-learn, scipy or FastAPI), the
irisserve modules main.py imports (found by reading their imports, so a new core module follows) with the data
files of their packages (``ui/page.html``), the verified model artifact in ``model/`` and ``bundle.json``
listing every file's SHA-256.
"""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from irisserve import __version__
from irisserve.core.artifact import MANIFEST_NAME, load_verified_manifest, sha256_file
from irisserve.core.errors import IrisServeError

PACKAGE = "irisserve"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# bundle-function is a tool for the source checkout: main.py and the pins live beside src/, not in the package.
SOURCE_ROOT = PACKAGE_DIR.parents[1]
ENTRY_POINT = Path("cloud_function") / "main.py"
REQUIREMENTS = Path("requirements-function.txt")
MODEL_FOLDER = "model"
# Non-Python files a bundled package reads at run time (the package data pyproject.toml installs).
DATA_PATTERNS = ("*.html",)
BUNDLE_MANIFEST = "bundle.json"
# Locally run bundles write bytecode; nothing but source needs uploading.
GCLOUDIGNORE = ".gcloudignore\n__pycache__/\n*.pyc\n"


class BundleError(IrisServeError):
    """The bundle cannot be built: a source file is missing or the output folder is not ours to replace."""


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    size_bytes: int
    files: tuple[str, ...]
    model_version: str

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1_000_000


def build_bundle(out_dir: Path, model_dir: Path, *, source_root: Path = SOURCE_ROOT, force: bool = False) -> BundleInfo:
    """Write a fresh, self-contained function source folder at ``out_dir`` and describe it; an earlier bundle there
    is replaced only with ``force`` (only the files it lists)."""
    entry, requirements = source_root / ENTRY_POINT, source_root / REQUIREMENTS
    for needed in (entry, requirements):
        if not needed.is_file():
            raise BundleError(f"{needed} is missing; bundle-function runs from an irisserve source checkout.")
    manifest = load_verified_manifest(Path(model_dir))  # never ship an artifact that would fail to load
    _clear(out_dir, force=force)
    shutil.copy2(entry, out_dir / "main.py")
    shutil.copy2(requirements, out_dir / "requirements.txt")
    (out_dir / ".gcloudignore").write_text(GCLOUDIGNORE)
    modules = package_modules(entry)
    for module in [*modules, *package_data(modules)]:
        target = out_dir / PACKAGE / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_DIR / module, target)
    (out_dir / MODEL_FOLDER).mkdir()
    for file_name in [MANIFEST_NAME, *manifest.data.files]:
        shutil.copy2(manifest.path_of(file_name), out_dir / MODEL_FOLDER / file_name)
    load_verified_manifest(out_dir / MODEL_FOLDER)  # the copy, too: a retrain may have raced the copying
    return _describe(out_dir, manifest.version)


def package_modules(entry: Path) -> list[str]:
    """The irisserve modules ``entry`` imports, directly or through each other, as paths relative to the
    package (``core/spec.py``); every package's ``__init__.py`` on the way comes along."""
    found: set[str] = set()
    pending = _irisserve_imports(entry)
    while pending:
        module = pending.pop()
        if module in found:
            continue
        path = PACKAGE_DIR / module
        if not path.is_file():
            raise BundleError(f"{entry} needs {PACKAGE}/{module}, but {path} does not exist.")
        found.add(module)
        pending |= _irisserve_imports(path)
    return sorted(found)


def package_data(modules: list[str]) -> list[str]:
    """The data files (``DATA_PATTERNS``) beside each bundled package's ``__init__.py``, relative to the package."""
    folders = {Path(module).parent for module in modules if Path(module).name == "__init__.py"}
    found = {
        (folder / path.name).as_posix()
        for folder in folders
        for pattern in DATA_PATTERNS
        for path in (PACKAGE_DIR / folder).glob(pattern)
        if path.is_file()
    }
    return sorted(found)


def _module_file(dotted: str) -> str | None:
    """``irisserve.core.spec`` -> ``core/spec.py`` (or a package's ``__init__.py``), if it exists."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    relative = Path(*parts[1:]) if len(parts) > 1 else Path()
    for candidate in (relative.with_suffix(".py") if parts[1:] else None, relative / "__init__.py"):
        if candidate is not None and (PACKAGE_DIR / candidate).is_file():
            return candidate.as_posix()
    return None


def _irisserve_imports(path: Path) -> set[str]:
    """Files (within irisserve) imported anywhere in ``path``, lazy imports inside functions included,
    plus the ``__init__.py`` of every package on the way."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:depth]))
                if found:
                    modules.add(found)
    return modules


def _clear(out_dir: Path, *, force: bool) -> None:
    """Make ``out_dir`` ready for a bundle: new or empty; or, with ``force``, an earlier bundle whose files (as its
    bundle.json lists them, and the bytecode a local run of it wrote) are removed. Anything else is refused as it
    is: a folder holding files no bundle wrote is never emptied."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise BundleError(f"{out_dir} is not a folder; give --out a new folder (nothing was written).")
    if out_dir.exists() and any(out_dir.iterdir()):
        try:
            listed = set(json.loads((out_dir / BUNDLE_MANIFEST).read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            raise BundleError(f"{out_dir} exists and is not a function bundle; give --out an empty or new folder (nothing was written).") from None
        ours = {BUNDLE_MANIFEST, *listed}
        present = [path for path in out_dir.rglob("*") if path.is_file() or path.is_symlink()]
        foreign = sorted(
            relative for path in present
            if (relative := path.relative_to(out_dir).as_posix()) not in ours and "__pycache__" not in path.parts
        )
        if foreign:
            raise BundleError(
                f"{out_dir} holds a function bundle and also files it did not write ({', '.join(foreign[:5])}"
                f"{' ...' if len(foreign) > 5 else ''}); move them away or give --out a new folder (nothing was written)."
            )
        if not force:
            raise BundleError(f"{out_dir} already holds a function bundle; pass --force to replace it (nothing was written).")
        shutil.rmtree(out_dir)  # every file in it is one the earlier bundle wrote, or its bytecode
    out_dir.mkdir(parents=True, exist_ok=True)


def _describe(out_dir: Path, model_version: str) -> BundleInfo:
    files = sorted(path for path in out_dir.rglob("*") if path.is_file())
    listing = {path.relative_to(out_dir).as_posix(): sha256_file(path) for path in files}
    record = {"irisserve_version": __version__, "model_version": model_version, "files": listing}
    (out_dir / BUNDLE_MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    size = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
    return BundleInfo(path=out_dir, size_bytes=size, files=(*listing, BUNDLE_MANIFEST), model_version=model_version)
