"""The prediction core every front door uses: load a verified artifact, predict rows in one vectorised call."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from irisserve.core.artifact import ONNX_NAME, PICKLE_NAME, Manifest, load_verified_manifest
from irisserve.core.errors import ArtifactError, ModelNotReadyError
from irisserve.core.schemas import FEATURE_NAMES, IrisFeatures
from irisserve.core.startup import mark

Backend = Literal["onnx", "sklearn"]
BACKENDS: tuple[Backend, ...] = ("onnx", "sklearn")
PROBABILITY_DECIMALS = 6

logger = logging.getLogger("irisserve")


def decide(probabilities: Sequence[float]) -> tuple[list[float], int]:
    """One row's probabilities, normalised and rounded, and the first largest class.

    ONNX Runtime sums the trees in float32, so a row's probabilities add up to 0.9999993, not 1, and
    exact ties come out broken at random; normalised and rounded, they are ties again and resolve to the
    lowest class id, as scikit-learn's ``predict`` does. Plain Python: for the few numbers in a row it
    is several times faster than NumPy's per-call overhead."""
    total = sum(probabilities)
    rounded = [round(p / total, PROBABILITY_DECIMALS) for p in probabilities]
    return rounded, rounded.index(max(rounded))


class _ProbabilityModel(Protocol):
    def predict_proba(self, rows: np.ndarray) -> np.ndarray: ...


class OnnxBackend:
    """ONNX Runtime on one thread: a tree ensemble this small gains nothing from a thread pool."""

    def __init__(self, manifest: Manifest) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = manifest.path_of(ONNX_NAME)
        checked_with = manifest.libraries.get("onnxruntime", "?")
        if checked_with != onnxruntime.__version__:
            # ONNX files are forward compatible, so only warn; loading fails below if the opset is too new.
            logger.warning(
                "%s was checked with onnxruntime %s; onnxruntime %s is installed.", path, checked_with, onnxruntime.__version__
            )
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ArtifactError(
                f"ONNX Runtime {onnxruntime.__version__} cannot load {path}: {str(exc).strip()}. The manifest says it was "
                f"exported with skl2onnx {manifest.libraries.get('skl2onnx', '?')} and checked with onnxruntime "
                f"{checked_with}: install onnxruntime>={checked_with}, or retrain with the installed one."
            ) from None
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = manifest.data.get("onnx", {}).get("probabilities_output", "probabilities")

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: rows})[0]


class SklearnBackend:
    """The joblib copy, unpickled only after its hash check and only by the scikit-learn that wrote it."""

    def __init__(self, manifest: Manifest) -> None:
        try:
            import joblib
            import sklearn
        except ImportError as exc:
            raise ArtifactError(f"The sklearn backend needs scikit-learn and joblib installed ({exc}).") from None
        trained_with = manifest.libraries.get("scikit-learn")
        if trained_with != sklearn.__version__:
            raise ArtifactError(
                f"{PICKLE_NAME} was pickled by scikit-learn {trained_with} but {sklearn.__version__} is installed; "
                f"unpickling across versions can give wrong answers. Install scikit-learn=={trained_with}, "
                f"retrain, or use IRISSERVE_BACKEND=onnx."
            )
        self._model = joblib.load(manifest.path_of(PICKLE_NAME))

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self._model.predict_proba(rows)


def _make_backend(name: Backend, manifest: Manifest) -> _ProbabilityModel:
    if name == "onnx":
        return OnnxBackend(manifest)
    if name == "sklearn":
        return SklearnBackend(manifest)
    raise ArtifactError(f"Unknown backend {name!r}; choose one of {BACKENDS}.")


class Predictor:
    """Loads one artifact and answers predictions; ``ready`` is what health checks read."""

    def __init__(self, model_dir: Path, *, backend: Backend = "onnx") -> None:
        self.model_dir = Path(model_dir)
        self.backend_name = backend
        self.ready = False
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self._manifest: Manifest | None = None
        self._backend: _ProbabilityModel | None = None

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise ModelNotReadyError("The model is not loaded yet.")
        return self._manifest

    @property
    def backend(self) -> _ProbabilityModel:
        """The loaded backend: ``backend.predict_proba(float32 matrix)`` is the bare model call."""
        if self._backend is None:
            raise ModelNotReadyError("The model is not loaded yet.")
        return self._backend

    @property
    def version(self) -> str | None:
        return self._manifest.version if self._manifest else None

    def load(self) -> bool:
        """Verify the artifact, open the backend, run one warm-up inference; raise ArtifactError on any fault."""
        started = time.perf_counter()
        manifest = load_verified_manifest(self.model_dir)
        if tuple(manifest.feature_names) != FEATURE_NAMES:
            raise ArtifactError(
                f"The artifact's features are {manifest.feature_names}; this service expects {list(FEATURE_NAMES)}."
            )
        self._backend = _make_backend(self.backend_name, manifest)
        self._manifest = manifest
        ranges = manifest.feature_ranges
        self._ranges = [(ranges[name]["min"], ranges[name]["max"]) for name in FEATURE_NAMES]
        self._targets = manifest.target_names
        self._version = manifest.version
        self.load_seconds = time.perf_counter() - started
        mark("model_loaded")
        self._warm_up()
        mark("warmed_up")
        self.ready = True
        return self.ready

    def _warm_up(self) -> None:
        """Pay ONNX Runtime's first-call costs before the first real request does."""
        started = time.perf_counter()
        self.predict_rows([[(low + high) / 2 for low, high in self._ranges]], check_ready=False)
        self.warmup_seconds = time.perf_counter() - started

    def predict_rows(self, rows: Sequence[Sequence[float]], *, check_ready: bool = True) -> list[dict[str, Any]]:
        """Predict every row (in FEATURE_NAMES order) in one call; returns the /predict response objects."""
        if check_ready and not self.ready:
            raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
        assert self._backend is not None and self._manifest is not None
        matrix = np.asarray(rows, dtype=np.float32).reshape(-1, len(FEATURE_NAMES))
        probabilities = self._backend.predict_proba(matrix).tolist()
        return [self._answer(row, row_probabilities) for row, row_probabilities in zip(rows, probabilities)]

    def _answer(self, row: Sequence[float], row_probabilities: list[float]) -> dict[str, Any]:
        rounded, class_id = decide(row_probabilities)
        return {
            "prediction": self._targets[class_id],
            "prediction_id": class_id,
            "confidence": rounded[class_id],
            "probabilities": dict(zip(self._targets, rounded)),
            "model_version": self._version,
            "out_of_range_features": [
                name for name, value, (low, high) in zip(FEATURE_NAMES, row, self._ranges) if not low <= value <= high
            ],
        }

    def predict_features(self, instances: Sequence[IrisFeatures]) -> list[dict[str, Any]]:
        return self.predict_rows([instance.as_row() for instance in instances])

    def info(self) -> dict[str, Any]:
        """The /model/info body."""
        manifest = self.manifest
        model = manifest.data["model"]
        return {
            "model_name": manifest.name,
            "model_type": model["type"],
            "model_version": manifest.version,
            "backend": self.backend_name,
            "feature_names": manifest.feature_names,
            "feature_ranges": manifest.feature_ranges,
            "target_names": manifest.target_names,
            "n_estimators": model["parameters"].get("n_estimators"),
            "parameters": model["parameters"],
            "metrics": manifest.data.get("metrics", {}),
            "artifact_sha256": manifest.sha256,
            "files": manifest.data["files"],
            "libraries": manifest.libraries,
            "created_at": manifest.data.get("created_at", ""),
        }
