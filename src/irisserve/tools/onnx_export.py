"""Convert a fitted scikit-learn model to ONNX and measure how closely ONNX Runtime reproduces it.

Mechanism only: these functions convert and measure; ``packaging`` decides what to refuse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from irisserve.core.predictor import decide

ONNX_INPUT = "input"
PROBABILITIES_OUTPUT = "probabilities"
EXPORT_CHECK_POINTS = 100_000
CHECK_SEED = 42
PROBABILITY_TOLERANCE = 1e-5
# A regressor's float32 graph may differ from scikit-learn's float64 by this fraction of its output
# scale, max(1, largest |prediction| on the data rows): about 84 float32 ulps. Measured worst cases
# (diabetes, synthetic data; GradientBoosting, RandomForest, linear, SVR, MLP) stay below 1e-6.
REGRESSION_RELATIVE_TOLERANCE = 1e-5
# decide() rounds to 6 decimals, so it can only differ from argmax when the top two are this close.
NEAR_TIE = 1e-5


@dataclass(frozen=True)
class ExportCheck:
    """How far ONNX Runtime's answers are from scikit-learn's on the checked points."""

    rows_checked: int
    tolerance: float
    label_mismatches: int | None = None
    max_probability_difference: float | None = None
    max_abs_difference: float | None = None

    @property
    def passed(self) -> bool:
        if self.max_abs_difference is not None:
            return self.max_abs_difference <= self.tolerance
        return self.label_mismatches == 0 and (self.max_probability_difference or 0.0) <= self.tolerance

    def as_manifest(self) -> dict[str, Any]:
        return {
            "rows_checked": self.rows_checked,
            "label_mismatches": self.label_mismatches,
            "max_probability_difference": self.max_probability_difference,
            "max_abs_difference": self.max_abs_difference,
            "tolerance": self.tolerance,
        }


def convert(estimator: Any, *, n_features: int, classifier: Any | None, graph_name: str) -> onnx.ModelProto:
    """The model as ONNX with one float32 input; a classifier's probabilities as a plain tensor (no ZipMap)."""
    options = {id(classifier): {"zipmap": False}} if classifier is not None else None
    return convert_sklearn(
        estimator,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))],
        options=options,
        name=graph_name,  # skl2onnx otherwise names the graph with a random UUID, and the bytes differ each run
    )


def new_session(onnx_bytes: bytes) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def sklearn_input(estimator: Any, values: np.ndarray) -> Any:
    """Rows as the estimator was fitted: a DataFrame with its column names if it has them (no warning), else the array."""
    names = getattr(estimator, "feature_names_in_", None)
    return pd.DataFrame(values, columns=list(names)) if names is not None else values


def check_points(
    features: np.ndarray,
    n_points: int = EXPORT_CHECK_POINTS,
    *,
    exclusive_minimums: Sequence[float | None] | None = None,
    seed: int = CHECK_SEED,
) -> np.ndarray:
    """Every data row plus random points spanning, and reaching half a range beyond, each feature's range, as float32.

    A feature with an exclusive minimum gets only values above it, as the server would accept."""
    low, high = features.min(axis=0), features.max(axis=0)
    span = np.where(high > low, high - low, 1.0)  # a constant column still gets probed around its value
    floors = np.array(
        [-np.inf if m is None else float(m) for m in (exclusive_minimums or [None] * features.shape[1])]
    )
    rng = np.random.default_rng(seed)
    random_points = rng.uniform(np.maximum(low - span / 2, floors), high + span / 2, size=(n_points, features.shape[1]))
    points = np.vstack([features, random_points]).astype(np.float32)
    # uniform() may return its lower bound, and float32 rounding may land on it: lift those just above the minimum.
    return np.maximum(points, np.nextafter(floors.astype(np.float32), np.float32(np.inf)))


def decided_labels(probabilities: np.ndarray) -> np.ndarray:
    """The server's label for each row (``decide``), computed with NumPy wherever it cannot differ from argmax.

    Rounding is monotonic, so it can change argmax's answer only by turning a near-tie into a tie; rows
    whose top two normalised probabilities are more than NEAR_TIE apart keep argmax, the rest go
    through ``decide`` itself."""
    rows = probabilities.astype(np.float64)
    normalised = rows / rows.sum(axis=1, keepdims=True)
    labels = normalised.argmax(axis=1)
    if normalised.shape[1] < 2:
        return labels
    top_two = np.sort(normalised, axis=1)[:, -2:]
    for row in np.flatnonzero(~(top_two[:, 1] - top_two[:, 0] > NEAR_TIE)):
        labels[row] = decide(probabilities[row].tolist())[1]
    return labels


def _largest_difference(first: np.ndarray, second: np.ndarray) -> float:
    """max |first - second|, infinite if either side has a NaN (so a NaN can never pass a check)."""
    difference = np.abs(first.astype(np.float64) - second.astype(np.float64))
    return float(np.where(np.isnan(difference), np.inf, difference).max())


def _class_indices(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    order = np.argsort(classes)
    positions = np.searchsorted(classes[order], labels).clip(0, len(classes) - 1)
    return order[positions]


def compare_classifier(estimator: Any, session: onnxruntime.InferenceSession, points: np.ndarray) -> ExportCheck:
    """Labels the server would decide from ONNX probabilities vs ``predict``; probabilities vs ``predict_proba``."""
    onnx_probabilities = session.run([PROBABILITIES_OUTPUT], {ONNX_INPUT: points})[0]
    rows = sklearn_input(estimator, points)
    sklearn_probabilities = np.asarray(estimator.predict_proba(rows))
    sklearn_labels = _class_indices(np.asarray(estimator.classes_), np.asarray(estimator.predict(rows)))
    if onnx_probabilities.shape != sklearn_probabilities.shape:
        return ExportCheck(len(points), PROBABILITY_TOLERANCE, len(points), float("inf"))
    return ExportCheck(
        rows_checked=len(points),
        tolerance=PROBABILITY_TOLERANCE,
        label_mismatches=int((decided_labels(onnx_probabilities) != sklearn_labels).sum()),
        max_probability_difference=_largest_difference(onnx_probabilities, sklearn_probabilities),
    )


def compare_regressor(
    estimator: Any, session: onnxruntime.InferenceSession, output: str, points: np.ndarray, data_rows: int
) -> ExportCheck:
    """ONNX predictions vs ``predict``, allowed REGRESSION_RELATIVE_TOLERANCE of the data rows' output scale."""
    onnx_predictions = session.run([output], {ONNX_INPUT: points})[0].reshape(-1)
    sklearn_predictions = np.asarray(estimator.predict(sklearn_input(estimator, points)), dtype=np.float64).reshape(-1)
    scale = max(1.0, float(np.abs(sklearn_predictions[:data_rows]).max()))
    difference = (
        _largest_difference(onnx_predictions, sklearn_predictions)
        if onnx_predictions.shape == sklearn_predictions.shape
        else float("inf")
    )
    return ExportCheck(
        rows_checked=len(points),
        tolerance=float(f"{REGRESSION_RELATIVE_TOLERANCE * scale:.3g}"),
        max_abs_difference=difference,
    )
