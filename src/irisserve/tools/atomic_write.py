"""Write an artifact folder so that it appears whole, by one rename, or not at all."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from irisserve.core.artifact import write_manifest


def write_artifact(
    out_dir: Path, files: Mapping[str, bytes], manifest_for: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """Write ``files`` and ``manifest_for(staging)`` into a staging folder beside ``out_dir``, then rename it into place.

    An artifact already at ``out_dir`` is replaced. On any failure nothing is left behind: neither the
    staging folder nor the parent folders this call created."""
    created = [parent for parent in reversed(out_dir.parents) if not parent.exists()]
    staging: Path | None = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; a non-root server must read it
        for file_name, content in files.items():
            (staging / file_name).write_bytes(content)
        manifest = manifest_for(staging)
        write_manifest(staging, manifest)
        _move_into_place(staging, out_dir)
        return manifest
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not out_dir.exists():
            for parent in reversed(created):
                _remove_if_empty(parent)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``; an artifact already there is moved aside first, and back on failure."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    aside = Path(tempfile.mkdtemp(prefix=".replaced-", dir=out_dir.parent))
    aside.rmdir()  # only the unique name is wanted: rename() needs the target not to exist
    out_dir.rename(aside)
    try:
        staging.rename(out_dir)
    except OSError:
        aside.rename(out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (something else wrote there) or already gone: leave it
        folder.rmdir()
