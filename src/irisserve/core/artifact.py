"""The model artifact on disk: a folder with model.onnx, model.pkl and manifest.json pinning their SHA-256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irisserve.core.errors import ArtifactError

MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
PICKLE_NAME = "model.pkl"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


@dataclass(frozen=True)
class Manifest:
    """What manifest.json says, plus the hash of the manifest itself."""

    folder: Path
    data: dict[str, Any]
    sha256: str

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def feature_names(self) -> list[str]:
        return [feature["name"] for feature in self.data["features"]]

    @property
    def feature_ranges(self) -> dict[str, dict[str, float]]:
        return {f["name"]: {"min": f["min"], "max": f["max"]} for f in self.data["features"]}

    @property
    def target_names(self) -> list[str]:
        return list(self.data["target_names"])

    @property
    def libraries(self) -> dict[str, str]:
        return dict(self.data.get("libraries", {}))

    def path_of(self, file_name: str) -> Path:
        return self.folder / file_name


_REQUIRED_KEYS = ("name", "version", "features", "target_names", "files", "model")


def read_manifest(folder: Path) -> Manifest:
    """Read manifest.json and check its shape; no file hashes are checked here."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"No model artifact at {folder}: {MANIFEST_NAME} is missing. Run `irisserve train` first.")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ArtifactError(f"{path} lacks the keys {missing}.")
    if data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {data.get('format_version')!r}; this irisserve reads {FORMAT_VERSION}."
        )
    return Manifest(folder=folder, data=data, sha256=hashlib.sha256(raw).hexdigest())


def verify_files(manifest: Manifest) -> None:
    """Check every file the manifest lists against its SHA-256; refuse, naming the file, on any difference."""
    for file_name, expected in manifest.data["files"].items():
        path = manifest.path_of(file_name)
        if Path(file_name).name != file_name:
            raise ArtifactError(f"Manifest lists {file_name!r}, which is not a plain file name in the artifact folder.")
        if not path.is_file():
            raise ArtifactError(f"Artifact file {file_name} is missing from {manifest.folder}.")
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            raise ArtifactError(
                f"Artifact file {file_name} in {manifest.folder} fails its integrity check: "
                f"SHA-256 {actual} but the manifest says {expected['sha256']}. Refusing to load it."
            )


def load_verified_manifest(folder: Path) -> Manifest:
    manifest = read_manifest(folder)
    verify_files(manifest)
    return manifest


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
