"""Write an artifact folder so that it appears whole, by one rename, or not at all; never over a user's files.

The destination must be new, an empty folder, or (with ``force``) an earlier irisserve artifact of the same
name and version holding nothing but the files its manifest lists. Anything else (a file, a symbolic link, a
folder with other files, another model's artifact) is refused before anything is written; only files irisserve
wrote are ever removed."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from irisserve.core.artifact import MANIFEST_NAME, write_manifest
from irisserve.tools.errors import PackagingError, listed


def check_destination(out_dir: Path, *, name: str, version: str, force: bool) -> list[str] | None:
    """Refuse ``out_dir`` unless it may receive the artifact ``name`` ``version``; the files an earlier artifact
    there wrote (replaced with ``force``), or None when the folder is new or empty."""
    if out_dir.is_symlink():
        raise PackagingError(f"{out_dir} is a symbolic link; give --out a new folder (nothing was written).")
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise PackagingError(f"{out_dir} is a file, not a folder; give --out a new folder (nothing was written).")
    present = sorted(path.name for path in out_dir.iterdir())
    if not present:
        return None
    earlier = _earlier_artifact(out_dir)
    if earlier is None:
        raise PackagingError(
            f"{out_dir} already holds files ({listed(present)}) and is not an irisserve artifact; "
            "give --out a new folder (nothing was written)."
        )
    if (earlier.get("name"), earlier.get("version")) != (name, version):
        raise PackagingError(
            f"{out_dir} holds the artifact {earlier.get('name')!r} {earlier.get('version')!r}, not {name!r} {version!r}; "
            "give --out a new folder (nothing was written)."
        )
    written = [MANIFEST_NAME, *(file_name for file_name in earlier.get("files", {}) if isinstance(file_name, str))]
    foreign = [file_name for file_name in present if file_name not in written or not (out_dir / file_name).is_file()]
    if foreign:
        raise PackagingError(
            f"{out_dir} holds {name} {version} and also files irisserve did not write ({listed(foreign)}); "
            "move them away or give --out a new folder (nothing was written)."
        )
    if not force:
        raise PackagingError(
            f"{out_dir} already holds {name} {version} (created {earlier.get('created_at', '?')}); "
            "pass --force to replace it, or give another --version (nothing was written)."
        )
    return [file_name for file_name in written if file_name in present]


def superseded_version(out_dir: Path, name: str) -> str | None:
    """The version of the newest earlier artifact of ``name`` beside ``out_dir`` (or at it): what the new one
    supersedes, recorded in its manifest."""
    newest: tuple[str, str] | None = None
    parent = out_dir.parent
    if not parent.is_dir():
        return None
    for folder in parent.iterdir():
        earlier = _earlier_artifact(folder) if folder.is_dir() and not folder.is_symlink() else None
        if earlier is None or earlier.get("name") != name or not isinstance(earlier.get("version"), str):
            continue
        created = str(earlier.get("created_at", ""))
        if newest is None or created > newest[0]:
            newest = (created, earlier["version"])
    return None if newest is None else newest[1]


def _earlier_artifact(folder: Path) -> dict[str, Any] | None:
    """The manifest of an irisserve artifact in ``folder`` (as JSON), or None if there is none."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or "format_version" not in data or not isinstance(data.get("files"), dict):
        return None
    return data


def write_artifact(
    out_dir: Path,
    files: Mapping[str, bytes],
    manifest_for: Callable[[Path], dict[str, Any]],
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Write ``files`` and ``manifest_for(staging)`` into a staging folder beside ``out_dir``, then rename it into place.

    ``out_dir`` is checked by ``check_destination`` (with ``force``, an earlier artifact of the same name and
    version is replaced). On any failure nothing is left behind: neither the staging folder nor the parent
    folders this call created."""
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
        earlier = check_destination(out_dir, name=manifest["name"], version=manifest["version"], force=force)
        _move_into_place(staging, out_dir, earlier)
        return manifest
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)  # the staging folder is this call's own
        with contextlib.suppress(OSError):  # a name too long for the file system cannot exist either
            if not out_dir.exists():
                for parent in reversed(created):
                    _remove_if_empty(parent)


def _move_into_place(staging: Path, out_dir: Path, earlier: list[str] | None) -> None:
    """Rename ``staging`` to ``out_dir`` (an empty folder there is replaced by the rename itself); an earlier
    artifact is moved aside first, and back on failure, then only its own files are removed."""
    if earlier is None:
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
    for file_name in earlier:
        with contextlib.suppress(OSError):
            (aside / file_name).unlink()
    _remove_if_empty(aside)  # a file that appeared meanwhile is left where it is, with the folder


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (something else wrote there) or already gone: leave it
        folder.rmdir()
