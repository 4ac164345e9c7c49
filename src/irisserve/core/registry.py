"""The served models: one artifact (``--model-dir``), or every ``DIR/<name>/<version>/`` of a model repository
(``--models DIR``), with one version answering each name and one name answering the seed API.

Handlers look a model up here per request (``resolve``) and keep the record they got, so a request finishes on
the version it started on. A record is built whole (hashes verified, spec built, one warm-up inference) before
it is swapped in, by replacing one immutable ``Snapshot``: a switch is atomic, and a version that fails to load
never takes traffic. As MLServer's registry and Triton's repository extension do, a name is answered by its
latest version (by semantic version) unless a load pinned another.

What a repository should serve (which versions are unloaded, which are pinned) is a ``RepositoryState``; with
several worker processes it lives in a file every worker follows (``ops/repository_sync.py``), so a load call
answered by one worker reaches the others.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from irisserve.core.artifact import MANIFEST_NAME, sha256_file
from irisserve.core.errors import (
    ArtifactError,
    BadRequestError,
    ConflictError,
    ModelNotReadyError,
    UnknownModelError,
)
from irisserve.core.pipeline import RequestPipeline
from irisserve.core.predictor import Backend, Predictor
from irisserve.core.settings import Settings
from irisserve.core.spec import ModelSpec
from irisserve.core.startup import reclaim_heap

logger = logging.getLogger("irisserve")

MAX_SHOWN = 60
NAMES_LISTED = 10
_VERSION_PART = re.compile(r"(\d+)|([^\d.+-]+)")


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order: numeric parts as numbers (1.10.0 after 1.9.0), a pre-release before its release
    (1.1.0-rc1 before 1.1.0); a build suffix (+...) is ignored."""
    core, _, pre = version.split("+", 1)[0].partition("-")
    numbers = tuple(int(part) if part.isdigit() else -1 for part in core.split("."))
    pre_key = tuple((0, int(a)) if a else (1, b) for a, b in _VERSION_PART.findall(pre))
    return numbers, (1,) if not pre else (0, *pre_key)


def latest(versions: Iterable[str]) -> str:
    return max(versions, key=version_key)


def _short(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(repr(name) for name in names[:NAMES_LISTED])
    return (shown + (f" (and {len(names) - NAMES_LISTED} more)" if len(names) > NAMES_LISTED else "")) or "none"


@dataclass(eq=False)
class ServedModel:
    """One loaded version: its verified predictor and its request pipeline, and what the door attached (live
    figures). Immutable once swapped in; dropped when no snapshot and no request holds it."""

    path: Path
    predictor: Predictor
    pipeline: RequestPipeline
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest_sha256(self) -> str:
        """The SHA-256 of the manifest this version was loaded from (a rescan reloads the version when the file changes)."""
        return self.predictor.manifest.sha256

    @property
    def spec(self) -> ModelSpec:
        return self.pipeline.spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version


class Snapshot(NamedTuple):
    """What is served at one moment: every loaded version by name, and the version answering each name."""

    loaded: Mapping[str, Mapping[str, ServedModel]]
    serving: Mapping[str, ServedModel]


EMPTY = Snapshot(MappingProxyType({}), MappingProxyType({}))


@dataclass
class RepositoryState:
    """What the repository's clients asked for: versions unloaded ("name" for every version, "name/version" for
    one) and versions pinned to answer their name. ``generation`` grows with every change and rescan."""

    generation: int = 0
    unloaded: set[str] = field(default_factory=set)
    pinned: dict[str, str] = field(default_factory=dict)

    def wants(self, name: str, version: str) -> bool:
        return name not in self.unloaded and f"{name}/{version}" not in self.unloaded

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "unloaded": sorted(self.unloaded), "pinned": dict(sorted(self.pinned.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RepositoryState:
        return cls(int(data.get("generation", 0)), set(data.get("unloaded", ())), dict(data.get("pinned", {})))


# What a door serves a loaded predictor with: its request pipeline (limits, observer) and extras (live figures).
Build = Callable[[Predictor], tuple[RequestPipeline, dict[str, Any]]]
# Called with each record leaving the snapshot (its metric series go away).
Dropped = Callable[[ServedModel], None]


def manifest_sha256(folder: Path) -> str:
    """The SHA-256 of the manifest on disk now ("" when it cannot be read: the load then says why)."""
    try:
        return sha256_file(folder / MANIFEST_NAME)
    except OSError:
        return ""


class ModelRegistry:
    """The served models of one process. Readers take ``snapshot`` (one attribute read); writers hold a lock,
    build new records off to the side, and swap a new snapshot in."""

    def __init__(
        self,
        *,
        root: Path | None = None,
        artifact: Path | None = None,
        default: str | None = None,
        backend: Backend = "onnx",
        build: Build | None = None,
        dropped: Dropped = lambda record: None,
        predictor: Predictor | None = None,
    ) -> None:
        if (root is None) == (artifact is None):
            raise ValueError("a registry serves either a repository (root) or one artifact")
        self.root = root
        self.artifact = artifact
        self.backend: Backend = backend
        self.build = build
        self.dropped = dropped
        self.snapshot = EMPTY
        self.state = RepositoryState()
        self.failures: dict[tuple[str, str], str] = {}  # (name, version) -> why it did not load
        self._lock = threading.RLock()
        # Predictors whose manifest was read (to build routes, to check a repository) and not yet loaded: the load
        # takes them, so a manifest is read and its spec built once.
        self._read: dict[Path, Predictor] = {} if predictor is None else {Path(predictor.model_dir): predictor}
        self.default_name = self._choose_default(default)

    # --- what is on disk ----------------------------------------------------------------------------

    def discover(self) -> dict[str, dict[str, Path]]:
        """Every artifact folder: ``{name: {version: folder}}`` (a folder's name is its model's or version's;
        hidden folders and folders without a manifest are skipped)."""
        if self.artifact is not None:
            spec = self.predictor_for(self.artifact).spec
            return {spec.name: {spec.version: self.artifact}}
        assert self.root is not None
        if not self.root.is_dir():
            raise ArtifactError(f"The model repository {self.root} is not a folder; give --models a folder of <name>/<version>/ artifacts.")
        found: dict[str, dict[str, Path]] = {}
        for model_dir in sorted(self.root.iterdir()):
            if model_dir.name.startswith(".") or not model_dir.is_dir():
                continue
            versions = {
                version_dir.name: version_dir
                for version_dir in sorted(model_dir.iterdir())
                if not version_dir.name.startswith(".") and (version_dir / MANIFEST_NAME).is_file()
            }
            if versions:
                found[model_dir.name] = versions
        return found

    def predictor_for(self, folder: Path) -> Predictor:
        """A predictor for an artifact folder (its manifest read, not yet loaded), checked against the folder's place."""
        predictor = self._read.get(folder)
        if predictor is not None:
            return predictor
        predictor = Predictor(folder, backend=self.backend)
        spec = predictor.spec
        if self.root is not None and (spec.name, spec.version) != (folder.parent.name, folder.name):
            raise ArtifactError(
                f"{folder} holds {spec.name!r} version {spec.version!r} (its manifest); a repository keeps each artifact "
                f"at <name>/<version>/: move it to {spec.name}/{spec.version}/."
            )
        self._read[folder] = predictor
        return predictor

    def latest_spec(self, name: str) -> ModelSpec:
        """The spec of ``name``'s newest version on disk whose manifest reads (what the app documents for the default
        model; a broken newer folder is left to the load, which refuses it with its reason)."""
        folders = self.discover()[name]
        refusals: list[ArtifactError] = []
        for version in sorted(folders, key=version_key, reverse=True):
            try:
                return self.predictor_for(folders[version]).spec
            except ArtifactError as exc:
                refusals.append(exc)
        raise refusals[0]

    def _choose_default(self, default: str | None) -> str:
        names = sorted(self.discover())
        if default is not None:
            if default not in names:
                raise ArtifactError(f"The default model {_short(default)!r} is not in {self.root}; it holds {_listed(names)}.")
            return default
        if len(names) == 1:
            return names[0]
        if not names:
            raise ArtifactError(f"The model repository {self.root} holds no artifact; put one at <name>/<version>/ (irisserve package --out).")
        raise ArtifactError(
            f"The model repository {self.root} holds {len(names)} models ({_listed(names)}); choose the one /predict answers "
            "with --default-model or IRISSERVE_DEFAULT_MODEL."
        )

    # --- what is served -----------------------------------------------------------------------------

    def default(self) -> ServedModel:
        record = self.snapshot.serving.get(self.default_name)
        if record is None:
            raise ModelNotReadyError(f"The default model {self.default_name!r} is not loaded; retry shortly.")
        return record

    def resolve(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The record answering ``name`` (the default model when None), or that ``version`` of it; 404 naming what
        is served otherwise."""
        snapshot = self.snapshot
        if name is None:
            return self.default()
        versions = snapshot.loaded.get(name)
        if not versions:
            raise UnknownModelError(f"Unknown model {_short(name)!r}; this server serves {_listed(snapshot.loaded)}.")
        if version is None:
            return snapshot.serving[name]
        record = versions.get(version)
        if record is None:
            served = f"the served version is {next(iter(versions))!r}" if len(versions) == 1 else f"the loaded versions are {_listed(versions)}"
            raise UnknownModelError(f"Unknown version {_short(version)!r} of model {name!r}; {served}.")
        return record

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: every version on disk or loaded, READY or UNAVAILABLE with the reason."""
        snapshot = self.snapshot
        entries: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            on_disk = self.discover()
        except ArtifactError:
            on_disk = {}
        for name, folders in on_disk.items():
            for version in folders:
                reason = self.failures.get((name, version)) or (
                    "unloaded" if not self.state.wants(name, version) else "not loaded yet"
                )
                entries[(name, version)] = {"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason}
        for name, versions in snapshot.loaded.items():
            for version, record in versions.items():
                entry: dict[str, Any] = {"name": name, "version": version, "state": "READY"}
                if snapshot.serving.get(name) is record:
                    entry["serving"] = True
                entries[(name, version)] = entry
        return [entries[key] for key in sorted(entries, key=lambda key: (key[0], version_key(key[1])))]

    # --- changes --------------------------------------------------------------------------------------

    def load_record(self, folder: Path) -> ServedModel:
        """Verify, open and warm up one artifact off to the side (nothing served changes); ArtifactError says why not."""
        if self.build is None:
            raise RuntimeError("this registry only reads manifests (no build given)")
        predictor = self.predictor_for(folder)
        self._read.pop(folder, None)  # a reload after a change on disk reads the manifest again
        if not predictor.ready:
            predictor.load()
        pipeline, extras = self.build(predictor)
        return ServedModel(folder, predictor, pipeline, extras)

    def reconcile(self, state: RepositoryState | None = None, *, ready: Mapping[tuple[str, str], ServedModel] | None = None) -> list[str]:
        """Serve what is on disk as ``state`` asks: load the versions wanted and not loaded (or changed on disk),
        drop the rest, pick each name's serving version, swap. Returns the problems (also logged); a version that
        fails keeps whatever was serving."""
        with self._lock:
            if state is not None:
                self.state = state
            state = self.state
            on_disk = self.discover()
            current = self.snapshot.loaded
            problems: list[str] = []
            loaded: dict[str, dict[str, ServedModel]] = {}
            for name, versions in on_disk.items():
                for version, folder in versions.items():
                    if not state.wants(name, version):
                        continue
                    record = (ready or {}).get((name, version)) or current.get(name, {}).get(version)
                    if record is None or record.manifest_sha256 != manifest_sha256(folder):
                        try:
                            record = self.load_record(folder)
                        except ArtifactError as exc:
                            problem = f"{name} {version}: {exc}"
                            self.failures[(name, version)] = str(exc)
                            logger.error("Model %s version %s was not loaded: %s", name, version, exc)
                            problems.append(problem)
                            record = current.get(name, {}).get(version)  # the earlier load of it, if any, keeps serving
                            if record is None:
                                continue
                        else:
                            self.failures.pop((name, version), None)
                            logger.info(
                                "Model %s %s loaded from %s in %.3fs (warm-up %.4fs)",
                                name, version, folder, record.predictor.load_seconds, record.predictor.warmup_seconds,
                            )
                    loaded.setdefault(name, {})[version] = record
            self._swap(loaded, state)
            if self.default_name not in self.snapshot.serving:
                problems.append(f"the default model {self.default_name!r} has no loaded version")
                logger.error("The default model %s has no loaded version: /predict answers 503 until one loads", self.default_name)
            return problems

    def _swap(self, loaded: dict[str, dict[str, ServedModel]], state: RepositoryState) -> None:
        serving: dict[str, ServedModel] = {}
        for name, versions in loaded.items():
            pinned = state.pinned.get(name)
            serving[name] = versions[pinned] if pinned in versions else versions[latest(versions)]
        before = self.snapshot
        self.snapshot = Snapshot(
            MappingProxyType({name: MappingProxyType(versions) for name, versions in loaded.items()}),
            MappingProxyType(serving),
        )
        kept = {(name, version) for name, versions in loaded.items() for version in versions}
        left = False
        for name, was_loaded in before.loaded.items():
            for version, record in was_loaded.items():
                if (name, version) not in kept:
                    logger.info("Model %s %s unloaded", name, version)
                    self.dropped(record)
                left = left or loaded.get(name, {}).get(version) is not record
        if left:
            reclaim_heap()
        for name, record in serving.items():
            previous = before.serving.get(name)
            if previous is not None and previous is not record and previous.version != record.version:
                logger.info("Model %s now answered by version %s (was %s)", name, record.version, previous.version)

    def plan_load(self, name: str, version: str | None) -> tuple[RepositoryState, ServedModel]:
        """Load call: build the version (the latest on disk when None) off to the side, and the state that serves it
        (pinned when a version was named, else the name follows its latest). Raises, changing nothing, on any fault."""
        self._check_repository("load")
        on_disk = self.discover().get(name)
        if not on_disk:
            raise UnknownModelError(f"No model {_short(name)!r} in the repository {self.root}; it holds {_listed(self.discover())}.")
        chosen = latest(on_disk) if version is None else version
        if chosen not in on_disk:
            raise UnknownModelError(f"No version {_short(chosen)!r} of model {name!r} in the repository; it holds {_listed(on_disk)}.")
        try:
            record = self.load_record(on_disk[chosen])
        except ArtifactError as exc:
            self.failures[(name, chosen)] = str(exc)
            logger.error("Load of model %s version %s refused: %s", name, chosen, exc)
            raise BadRequestError(f"Model {name!r} version {chosen!r} was not loaded: {exc} The version serving before still serves.") from None
        self.failures.pop((name, chosen), None)
        state = RepositoryState(self.state.generation + 1, set(self.state.unloaded), dict(self.state.pinned))
        state.unloaded -= {name, f"{name}/{chosen}"}
        if version is None:
            state.pinned.pop(name, None)
        else:
            state.pinned[name] = chosen
        return state, record

    def plan_unload(self, name: str, version: str | None) -> RepositoryState:
        """Unload call: the state without that version (every version when None); the default model's last version
        is refused (/predict answers for it)."""
        self._check_repository("unload")
        versions = self.snapshot.loaded.get(name)
        if not versions or (version is not None and version not in versions):
            what = f"model {_short(name)!r}" if version is None else f"version {_short(version)!r} of model {_short(name)!r}"
            raise UnknownModelError(f"No loaded {what}; loaded: {_listed(self.snapshot.loaded)}.")
        remaining = [] if version is None else [v for v in versions if v != version]
        if name == self.default_name and not remaining:
            raise ConflictError(
                f"Model {name!r} is the default model (/predict answers for it), so its last loaded version stays; load "
                "another version first, or restart with another --default-model."
            )
        state = RepositoryState(self.state.generation + 1, set(self.state.unloaded), dict(self.state.pinned))
        state.unloaded.add(name if version is None else f"{name}/{version}")
        if version is None or state.pinned.get(name) == version:
            state.pinned.pop(name, None)
        return state

    def _check_repository(self, action: str) -> None:
        if self.root is None:
            raise BadRequestError(
                f"This server serves one artifact ({self.artifact}); {action} needs a model repository: start it with "
                "`irisserve serve --models DIR` (IRISSERVE_MODEL_REPOSITORY)."
            )



def registry_from_settings(settings: Settings, build: Build | None = None, *, dropped: Dropped = lambda record: None, predictor: Predictor | None = None) -> ModelRegistry:
    """The served models the settings name: IRISSERVE_MODEL_REPOSITORY's every artifact, else IRISSERVE_MODEL_DIR's one."""
    if settings.model_repository is not None:
        return ModelRegistry(
            root=settings.model_repository, default=settings.default_model, backend=settings.backend, build=build, dropped=dropped,
            predictor=predictor,
        )
    return ModelRegistry(artifact=settings.model_dir, backend=settings.backend, build=build, dropped=dropped, predictor=predictor)
