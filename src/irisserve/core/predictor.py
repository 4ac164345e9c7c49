"""The prediction core every front door uses: load a verified artifact, predict a float32 matrix in one call.

The predictor returns typed predictions (class ids and probabilities, or values); it never builds an HTTP
body (that is ``pipeline.py``'s job) and reads no environment.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Protocol

import numpy as np

from irisserve.core.artifact import (
    MANIFEST_NAME,
    ONNX_NAME,
    PICKLE_NAME,
    Manifest,
    read_manifest,
    verified_bytes,
    verify_files,
)
from irisserve.core.errors import ArtifactError, ModelNotReadyError, ModelOutputError
from irisserve.core.spec import ModelSpec
from irisserve.core.startup import mark

Backend = Literal["onnx", "sklearn"]
BACKENDS: tuple[Backend, ...] = ("onnx", "sklearn")
# The one file each backend opens: it must be listed in manifest.files with its hash (else the artifact is refused).
BACKEND_FILES: dict[Backend, str] = {"onnx": ONNX_NAME, "sklearn": PICKLE_NAME}
PROBABILITY_DECIMALS = 6
# From this many rows NumPy's fixed cost per call is worth paying (deciding classes here, range checks in the pipeline).
VECTORISE_FROM_ROWS = 16

logger = logging.getLogger("irisserve")


def decide(probabilities: Sequence[float]) -> tuple[list[float], int]:
    """One row's probabilities, normalised and rounded, and the first largest class.

    ONNX Runtime sums the trees in float32, so a row's probabilities add up to 0.9999993, not 1, and
    exact ties come out broken at random; normalised and rounded, they are ties again and resolve to the
    lowest class id, as scikit-learn's ``predict`` does. Plain Python: for the few numbers in a row it
    is several times faster than NumPy's per-call overhead. The sum runs left to right (as ``decide_rows``
    adds the columns), not by ``sum``, which compensates its additions from Python 3.12."""
    total = 0.0
    for probability in probabilities:
        total += probability
    rounded = [round(p / total, PROBABILITY_DECIMALS) for p in probabilities]
    return rounded, rounded.index(max(rounded))


_SCALE = 10.0**PROBABILITY_DECIMALS
# round(x, 6) rounds the exact decimal value of x; rint(x * 1e6) rounds a product that float arithmetic has already
# rounded. Both land on the double nearest the same k / 1e6 unless x * 1e6 lies this close to a half.
_NEAR_HALF = 1e-6


def decide_rows(output: np.ndarray) -> tuple[list[list[float]], list[int]]:
    """``decide`` for every row of a probability matrix [N, classes] at once, with exactly its answers: the same
    left-to-right sums and divisions, and Python's ``round`` for the rare entry where NumPy's rounding could differ."""
    probabilities = output.astype(np.float64)
    total = probabilities[:, 0].copy()
    for column in range(1, probabilities.shape[1]):
        total += probabilities[:, column]
    shares = probabilities / total[:, None]
    scaled = shares * _SCALE
    rounded = (np.rint(scaled) / _SCALE).tolist()
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) < _NEAR_HALF
    if near_half.any():
        for row, column in zip(*np.nonzero(near_half), strict=True):
            rounded[row][column] = round(float(shares[row, column]), PROBABILITY_DECIMALS)
    return rounded, np.argmax(np.asarray(rounded), axis=1).tolist()


@dataclass(frozen=True)
class ClassPredictions:
    """A classifier's answers: each row's class id and its rounded probabilities (one per class)."""

    class_ids: list[int]
    probabilities: list[list[float]]


@dataclass(frozen=True)
class ValuePredictions:
    """A regressor's answers: one number per row, as float32 computed them (shortest repr)."""

    values: list[float]


Predictions = ClassPredictions | ValuePredictions


# A category feature's index -> its column [N, 1] as the model reads it: strings, or int64 for an integer category
# (``ModelSpec.encode``).
Texts = Mapping[int, np.ndarray]
NO_TEXTS: Texts = MappingProxyType({})


class ModelBackend(Protocol):
    def run(self, matrix: np.ndarray, texts: Texts = NO_TEXTS) -> np.ndarray:
        """Probabilities [N, classes] for a classifier, values [N] for a regressor."""
        ...


def onnx_feed(inputs: Sequence[str] | None, input_name: str, matrix: np.ndarray, texts: Texts) -> dict[str, np.ndarray]:
    """ONNX Runtime's inputs: the float32 matrix as one input, or (``inputs``: one per feature, for mixed kinds) each
    feature's column [N, 1], a category's as ``texts`` holds it (strings, or int64 for an integer category: the dtypes
    packaging declared for those inputs). Packaging's export check feeds the model through this too."""
    if inputs is None:
        return {input_name: matrix}
    return {name: texts[index] if index in texts else matrix[:, index : index + 1] for index, name in enumerate(inputs)}


class OnnxBackend:
    """ONNX Runtime on one thread: the models served here gain nothing from a thread pool per request."""

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
                f"{checked_with}: install onnxruntime>={checked_with}, or rebuild the artifact with the installed one."
            ) from None
        outputs = manifest.data.onnx.outputs
        self._output = outputs.get("probabilities") or outputs["prediction"]
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._inputs = manifest.data.onnx.inputs
        known = [output.name for output in self._session.get_outputs()]
        if self._output not in known:
            raise ArtifactError(f"{path} has outputs {known}; {manifest_path(manifest)} onnx.outputs names {self._output!r}.")
        width = model_input.shape[-1] if model_input.shape else None
        declared = len(manifest.data.features)
        if self._inputs is not None:
            width = len(self._session.get_inputs())
            if sorted(self._inputs) != sorted(model_input.name for model_input in self._session.get_inputs()):
                raise ArtifactError(f"{manifest_path(manifest)} onnx.inputs does not name {ONNX_NAME}'s inputs; the manifest does not describe this model.")
        if isinstance(width, int) and width != declared:
            raise ArtifactError(
                f"{manifest_path(manifest)} declares {declared} features but {ONNX_NAME} takes {width}; "
                "the manifest does not describe this model."
            )

    def run(self, matrix: np.ndarray, texts: Texts = NO_TEXTS) -> np.ndarray:
        return self._session.run([self._output], onnx_feed(self._inputs, self._input_name, matrix, texts))[0]


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
                f"rebuild the artifact, or use IRISSERVE_BACKEND=onnx."
            )
        # Unpickled from the very bytes whose hash was just checked: the file cannot change in between.
        self._model = joblib.load(io.BytesIO(verified_bytes(manifest, PICKLE_NAME)))
        self._classifier = manifest.data.task == "classification"
        self._names = [feature.name for feature in manifest.data.features]
        self._markers = {index: entry.missing_marker for index, entry in enumerate(manifest.data.features) if entry.type == "category"}

    def run(self, matrix: np.ndarray, texts: Texts = NO_TEXTS) -> np.ndarray:
        rows: object = matrix
        if hasattr(self._model, "feature_names_in_"):  # fitted on a DataFrame: give it one, as ONNX gets columns by position
            import pandas

            frame = pandas.DataFrame(matrix.astype(np.float64), columns=self._names)
            for index, column in texts.items():  # a category's strings, its missing marker back to NaN; an integer one's values
                values = column.reshape(-1)
                if values.dtype == object:
                    frame[self._names[index]] = pandas.Series(values, dtype=object).where(values != self._markers[index], np.nan)
                else:
                    frame[self._names[index]] = values
            rows = frame
        return self._model.predict_proba(rows) if self._classifier else self._model.predict(rows)


def manifest_path(manifest: Manifest) -> str:
    return str(manifest.path_of(MANIFEST_NAME))


def _make_backend(name: Backend, manifest: Manifest) -> ModelBackend:
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
        self._backend: ModelBackend | None = None

    @cached_property
    def manifest(self) -> Manifest:
        """The artifact's manifest, shape-checked (``load`` checks the files' hashes)."""
        return read_manifest(self.model_dir)

    @cached_property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_manifest(self.manifest)

    @property
    def backend(self) -> ModelBackend:
        """The loaded backend: ``backend.run(float32 matrix)`` is the bare model call."""
        if self._backend is None:
            raise ModelNotReadyError("The model is not loaded yet.")
        return self._backend

    @property
    def version(self) -> str | None:
        return self.spec.version if self.ready else None

    def load(self) -> bool:
        """Verify the artifact, open the backend, run one warm-up inference; raise ArtifactError on any fault."""
        started = time.perf_counter()
        self._open()
        self.load_seconds = time.perf_counter() - started
        mark("model_loaded")
        self._warm_up()
        mark("warmed_up")
        self.ready = True
        return self.ready

    def check(self) -> None:
        """Everything ``load`` checks, then let the model go (no start-up phase marked): what `irisserve serve`
        runs before any worker starts, so a bad artifact is one line and exit 2, not a worker's traceback."""
        self._open()
        self._warm_up()
        self._backend = None

    def _open(self) -> None:
        manifest = self.manifest
        if self.backend_name in BACKEND_FILES and BACKEND_FILES[self.backend_name] not in manifest.data.files:
            raise ArtifactError(
                f"{manifest_path(manifest)} does not list {BACKEND_FILES[self.backend_name]} in files (with its SHA-256), "
                f"which the {self.backend_name} backend loads; refusing to load an unverified file."
            )
        verify_files(manifest)
        self._backend = _make_backend(self.backend_name, manifest)

    def _warm_up(self) -> None:
        """Pay ONNX Runtime's first-call costs before the first real request does."""
        started = time.perf_counter()
        row, texts = self.spec.encode([self.spec.middle_row()])
        try:
            output = np.asarray(self.backend.run(row, texts))
        except Exception as exc:  # noqa: BLE001 - a backend raises its own untyped errors for a mismatched model
            raise ArtifactError(
                f"{manifest_path(self.manifest)} does not describe this model: one row of its {len(self.spec.features)} "
                f"features fails ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})."
            ) from None
        self._check_output_shape(output)
        try:
            self.predict(row, texts, check_ready=False)  # and the answer's own first-call costs
        except ModelOutputError:
            raise ArtifactError(
                f"The model's output is not finite for the middle of its training ranges ({manifest_path(self.manifest)})."
            ) from None
        self.warmup_seconds = time.perf_counter() - started

    def _check_output_shape(self, output: np.ndarray) -> None:
        """A classifier answers [1, len(targets)], a regressor [1] or [1, 1]: else the manifest's targets or task
        do not match the model, and every prediction would fail."""
        targets = len(self.spec.targets)
        if self.spec.is_classifier:
            fits = output.shape == (1, targets)
            wanted = f"[1, {targets}] (one probability per target)"
        else:
            fits = output.shape in ((1,), (1, 1))
            wanted = "[1] (one value per row)"
        if not fits:
            raise ArtifactError(
                f"{manifest_path(self.manifest)} says task {self.spec.task!r} with {targets} targets {list(self.spec.targets)[:10]}, "
                f"so the model should answer one row with shape {wanted}; it answers {list(output.shape)}."
            )

    def predict(self, matrix: np.ndarray, texts: Texts = NO_TEXTS, *, check_ready: bool = True) -> Predictions:
        """Predict every row of a float32 matrix [N, n_features] (features in the spec's order; ``texts``: the
        category columns, ``ModelSpec.encode``) in one call."""
        if check_ready and not self.ready:
            raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
        output = self.backend.run(matrix, texts)
        finite = np.isfinite(output)
        if not finite.all():  # inputs beyond what the model computes (1e38 times a coefficient): never sent nor counted
            bad = finite.reshape(len(matrix), -1).all(axis=1)
            raise ModelOutputError(np.flatnonzero(~bad).tolist())
        if self.spec.is_classifier:
            if len(output) >= VECTORISE_FROM_ROWS:
                probabilities, class_ids = decide_rows(output)
                return ClassPredictions(class_ids, probabilities)
            decided = [decide(row) for row in output.tolist()]
            return ClassPredictions([class_id for _, class_id in decided], [rounded for rounded, _ in decided])
        values = np.asarray(output, dtype=np.float32).reshape(-1)
        return ValuePredictions([float(str(value)) for value in values])
