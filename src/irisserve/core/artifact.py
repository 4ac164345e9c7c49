"""The model artifact on disk: a folder with model.onnx, model.pkl and manifest.json pinning their SHA-256.

The manifest's shape is checked by a pydantic model, so a manifest that is JSON of the wrong shape is
refused with a message naming the file and the field, never a TypeError deep in the server
(docs/artifact.md describes every field).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from irisserve.core.errors import ArtifactError

MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
PICKLE_NAME = "model.pkl"
FORMAT_VERSION = 2
MAX_ERRORS_NAMED = 3
_CHUNK = 1 << 20

Task = Literal["classification", "regression"]
# A model's name and version name folders and appear in URLs and page titles: `irisserve package` writes only
# these, and loading refuses anything else (a hand-edited manifest cannot put markup into a page).
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]*")
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
MAX_IDENTITY_CHARS = 100  # a folder name is at most 255 bytes; URLs and labels stay readable


def identity_problem(name: str, version: str) -> str | None:
    """What is wrong with a model name or version, or None: the one rule for packaging and loading."""
    if not NAME_PATTERN.fullmatch(name) or len(name) > MAX_IDENTITY_CHARS:
        return f"model name {name[:MAX_IDENTITY_CHARS]!r} is not allowed; use [a-z0-9][a-z0-9_.-]*, at most {MAX_IDENTITY_CHARS} characters (it names the model in URLs)"
    if not VERSION_PATTERN.fullmatch(version) or len(version) > MAX_IDENTITY_CHARS:
        return f"version {version[:MAX_IDENTITY_CHARS]!r} is not allowed; use letters, digits and _ . + -, at most {MAX_IDENTITY_CHARS} characters (it names a folder)"
    return None


def control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (NUL, newline...): refused in feature and class names, which
    become JSON keys, Prometheus labels and page text."""
    return any(unicodedata.category(char) == "Cc" for char in text)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


Finite = Field(allow_inf_nan=False)


class FeatureBins(_Entry):
    edges: list[Annotated[float, Finite]]
    shares: list[Annotated[float, Finite]]

    @model_validator(mode="after")
    def _one_share_per_bin(self) -> FeatureBins:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges make {len(self.edges) + 1} bins, but there are {len(self.shares)} shares")
        return self


Kind = Literal["number", "integer", "category", "boolean"]
Unknown = Literal["error", "ignore"]
# A category value is a JSON key's value, an OpenAPI enum member and page text: bounded, as names are.
MAX_CATEGORY_CHARS = 256
MAX_CATEGORIES = 1000
# An integer category's values go to the model as int64 (its ONNX input's dtype).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Scalar = bool | int | float | str | None  # one example value: JSON's scalars
Categories = list[str] | list[StrictInt]  # text categories, or an integer-coded column's (its encoder's values)


class FeatureEntry(_Entry):
    name: str = Field(..., min_length=1)
    type: Kind = "number"
    nullable: bool = False  # null or an omitted key means missing: NaN, or missing_marker for a category
    description: str | None = None
    exclusive_minimum: Annotated[float, Finite] | None = None
    min: Annotated[float, Finite] | None = None  # required but for a category
    max: Annotated[float, Finite] | None = None
    bins: FeatureBins | None = None
    # a category's values, in the order its drift shares follow: the training data's strings, or for an integer column
    # the model one-hot (or ordinal) encodes, its encoder's integers (JSON integers; older manifests hold strings only)
    categories: Categories | None = None
    unknown: Unknown = "error"  # "ignore": the model predicts an unseen category (flagged out of range)
    missing_marker: str = ""  # what a missing category is fed to the model as (its string imputer's missing_values)
    missing_rate: Annotated[float, Finite] = 0.0

    @model_validator(mode="after")
    def _sane(self) -> FeatureEntry:
        if control_characters(self.name):
            raise ValueError(f"feature name {self.name[:60]!r} holds a control character")
        if self.type == "category":
            values = self.categories or []
            if not values or len(values) > MAX_CATEGORIES or len(set(values)) != len(values):
                raise ValueError(f"category feature {self.name[:60]!r} needs 1 to {MAX_CATEGORIES} distinct categories")
            if isinstance(values[0], int):
                if any(not INT64_MIN <= value <= INT64_MAX for value in values):
                    raise ValueError(f"integer category feature {self.name[:60]!r} has a value outside int64")
                if self.nullable:
                    raise ValueError(f"integer category feature {self.name[:60]!r} cannot be nullable (the model reads int64, which has no gap)")
                return self
            if any(len(value) > MAX_CATEGORY_CHARS or control_characters(value) for value in values):
                raise ValueError(f"feature {self.name[:60]!r} has a category longer than {MAX_CATEGORY_CHARS} characters or with a control character")
            return self
        if self.min is None or self.max is None:
            raise ValueError(f"feature {self.name[:60]!r} of type {self.type!r} needs min and max")
        if self.min > self.max:
            raise ValueError(f"feature {self.name[:60]!r} has min {self.min} above max {self.max}")
        return self


class FileEntry(_Entry):
    sha256: str = Field(..., pattern="^[0-9a-f]{64}$")
    bytes: int = Field(..., ge=0)


class ModelEntry(_Entry):
    type: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    steps: list[str] = Field(default_factory=list)


class OnnxEntry(_Entry):
    input_name: str = "input"
    inputs: list[str] | None = None  # one input per feature (mixed kinds), in feature order; else input_name [N, features]
    outputs: dict[str, str]
    export_check: dict[str, Any] = Field(default_factory=dict)


class ManifestData(_Entry):
    """manifest.json, format_version 2."""

    format_version: int
    name: str = Field(..., min_length=1)
    version: str = Field(..., min_length=1)
    created_at: str = ""
    task: Task
    model: ModelEntry
    features: list[FeatureEntry] = Field(..., min_length=1)
    targets: list[str] = Field(..., min_length=1)
    examples: list[dict[str, Scalar]] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    metrics_source: str | None = None  # "held-out: <--eval-data file>, N rows", "in-sample: the packaging data, N rows", or the trainer's
    training_rows: int | None = None
    libraries: dict[str, str] = Field(default_factory=dict)
    onnx: OnnxEntry
    files: dict[str, FileEntry] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ManifestData:
        problem = identity_problem(self.name, self.version)
        if problem:
            raise ValueError(problem)
        if any(control_characters(target) for target in self.targets) or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets must be distinct names without control characters, not {[t[:60] for t in self.targets[:10]]}")
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {sorted({n for n in names if names.count(n) > 1})}")
        if self.task == "classification" and len(self.targets) < 2:
            raise ValueError(f"a classifier needs at least two target classes, not {self.targets}")
        wanted = "probabilities" if self.task == "classification" else "prediction"
        if wanted not in self.onnx.outputs:
            raise ValueError(f"onnx.outputs must name the {wanted!r} output of a {self.task} model")
        if self.onnx.inputs is not None and len(self.onnx.inputs) != len(names):
            raise ValueError(f"onnx.inputs names {len(self.onnx.inputs)} inputs for {len(names)} features")
        for example in self.examples:
            if list(example) != names:
                raise ValueError(f"example {example} must give every feature, in order: {names}")
        for file_name in self.files:
            if Path(file_name).name != file_name or file_name in ("", ".", ".."):
                raise ValueError(f"files lists {file_name!r}, which is not a plain file name in the artifact folder")
        return self


@dataclass(frozen=True)
class Manifest:
    """What manifest.json says (checked), plus the hash of the manifest itself and its raw JSON."""

    folder: Path
    data: ManifestData
    raw: dict[str, Any]
    sha256: str

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def version(self) -> str:
        return self.data.version

    @property
    def libraries(self) -> dict[str, str]:
        return self.data.libraries

    def path_of(self, file_name: str) -> Path:
        return self.folder / file_name


def _describe(error: ValidationError) -> str:
    parts = [
        f"{'.'.join(map(str, e['loc'])) or 'the top level'}: {e['msg']}" for e in error.errors(include_url=False)[:MAX_ERRORS_NAMED]
    ]
    more = f" (and {error.error_count() - MAX_ERRORS_NAMED} more)" if error.error_count() > MAX_ERRORS_NAMED else ""
    return "; ".join(parts) + more


def read_manifest(folder: Path) -> Manifest:
    """Read manifest.json and check its shape; no file hashes are checked here."""
    path = Path(folder) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(
            f"No model artifact at {folder}: {MANIFEST_NAME} is missing. Run `irisserve train` (or `irisserve package`) first."
        ) from None
    except OSError as exc:
        raise ArtifactError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {version!r}; this irisserve reads {FORMAT_VERSION}. "
            "Rebuild the artifact with this irisserve's `irisserve train` or `irisserve package`."
        )
    try:
        checked = ManifestData.model_validate(data)
    except ValidationError as exc:
        raise ArtifactError(f"{path} is not a valid manifest: {_describe(exc)}.") from None
    return Manifest(folder=Path(folder), data=checked, raw=data, sha256=hashlib.sha256(raw).hexdigest())


def verify_files(manifest: Manifest) -> None:
    """Check every file the manifest lists against its SHA-256; refuse, naming the file, on any difference."""
    for file_name, expected in manifest.data.files.items():
        path = manifest.path_of(file_name)
        if not path.is_file():
            raise ArtifactError(f"Artifact file {file_name} is missing from {manifest.folder}.")
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise ArtifactError(f"Cannot read artifact file {path}: {exc.strerror or exc}.") from None
        _check_hash(manifest, file_name, actual, expected.sha256)


def _check_hash(manifest: Manifest, file_name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ArtifactError(
            f"Artifact file {file_name} in {manifest.folder} fails its integrity check: "
            f"SHA-256 {actual} but the manifest says {expected}. Refusing to load it."
        )


def verified_bytes(manifest: Manifest, file_name: str) -> bytes:
    """A listed file's bytes, read once and checked against the manifest's SHA-256 before anyone uses them."""
    entry = manifest.data.files.get(file_name)
    if entry is None:
        raise ArtifactError(f"{manifest.path_of(MANIFEST_NAME)} does not list {file_name} in files; refusing to open it unverified.")
    try:
        content = manifest.path_of(file_name).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"Cannot read artifact file {manifest.path_of(file_name)}: {exc.strerror or exc}.") from None
    _check_hash(manifest, file_name, hashlib.sha256(content).hexdigest(), entry.sha256)
    return content


def load_verified_manifest(folder: Path) -> Manifest:
    manifest = read_manifest(folder)
    verify_files(manifest)
    return manifest


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
