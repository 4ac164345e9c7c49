"""Convert a fitted scikit-learn model to ONNX and measure how closely ONNX Runtime reproduces it.

Mechanism only: these functions convert and measure; ``packaging`` decides what to refuse."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime
import pandas as pd
from skl2onnx import convert_sklearn, get_latest_tested_opset_version
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.pipeline import Pipeline

from irisserve.core.artifact import INT64_MAX
from irisserve.core.predictor import decide_rows
from irisserve.tools.converters import MISSING_MARKER, for_conversion, hist_gradient_boosting_fixed, parts

ONNX_INPUT = "input"
PROBABILITIES_OUTPUT = "probabilities"
EXPORT_CHECK_POINTS = 100_000
CHECK_SEED = 42
PROBABILITY_TOLERANCE = 1e-5
# A category value the training data never had: the check sends it where the model predicts unseen values.
UNSEEN_CATEGORY = "irisserve-unseen-category"
# What each ONNX input of a model with one input per feature holds ([N, 1]): a category's strings, an integer
# category's int64 values (what skl2onnx's encoders take for an integer column), float32 otherwise.
InputType = Literal["string", "int64", "float"]
INPUT_TENSORS = {"string": StringTensorType, "int64": Int64TensorType, "float": FloatTensorType}
# A regressor's float32 graph may differ from scikit-learn's float64 by this fraction of its output
# scale, max(1, largest |prediction| on the data rows): about 84 float32 ulps. Measured worst cases
# (diabetes, synthetic data; GradientBoosting, RandomForest, linear, SVR, MLP) stay below 1e-6.
REGRESSION_RELATIVE_TOLERANCE = 1e-5


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


def input_type(feature: Mapping[str, Any]) -> InputType:
    """A manifest feature's ONNX input type when the model takes one input per feature."""
    if feature["type"] != "category":
        return "float"
    return "int64" if isinstance(feature["categories"][0], int) else "string"


def unseen_category(categories: Sequence[Any]) -> str | int:
    """A value the category never had: UNSEEN_CATEGORY, or for integers one past the largest (below the smallest at int64's end)."""
    if not isinstance(categories[0], int):
        return UNSEEN_CATEGORY
    return max(categories) + 1 if max(categories) < INT64_MAX else min(categories) - 1


def convert(
    estimator: Any, *, n_features: int, classifier: Any | None, graph_name: str, columns: Sequence[tuple[str, InputType]] | None = None
) -> onnx.ModelProto:
    """The model as ONNX with one float32 input, or with ``columns`` one input per column ([N, 1] of its
    ``InputType``; skl2onnx's "Dataframe as an input"); a classifier's probabilities as a plain tensor (no ZipMap).
    It converts ``converters.for_conversion``'s copy, which answers as the model does."""
    prepared = for_conversion(estimator)
    final = prepared.steps[-1][1] if isinstance(prepared, Pipeline) else prepared
    options = {id(final): {"zipmap": False}} if classifier is not None else None
    initial_types: list[tuple[str, Any]] = (
        [(ONNX_INPUT, FloatTensorType([None, n_features]))]
        if columns is None
        else [(name, INPUT_TENSORS[kind]([None, 1])) for name, kind in columns]
    )
    with hist_gradient_boosting_fixed(prepared), warnings.catch_warnings():
        # skl2onnx's imputer casts its NaN missing_values to int64 for an int64 input (an integer category's imputer
        # before its encoder: the column has no gaps) and NumPy warns of the cast.
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        return convert_sklearn(
            prepared,
            initial_types=initial_types,
            options=options,
            target_opset=target_opset(prepared),
            name=graph_name,  # skl2onnx otherwise names the graph with a random UUID, and the bytes differ each run
        )


def target_opset(estimator: Any) -> dict[str, int] | None:
    """skl2onnx's default, but for LightGBM and XGBoost: onnxmltools 1.16 writes their trees in ai.onnx.ml opset 3 only."""
    if any(type(part).__module__.split(".")[0] in ("xgboost", "lightgbm") for part in parts(estimator)):
        return {"": get_latest_tested_opset_version(), "ai.onnx.ml": 3}
    return None


def new_session(onnx_bytes: bytes) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def sklearn_input(estimator: Any, values: np.ndarray | pd.DataFrame) -> Any:
    """Rows as the estimator was fitted: a DataFrame with its column names if it has them (no warning), else the array."""
    names = getattr(estimator, "feature_names_in_", None)
    if isinstance(values, pd.DataFrame):
        return values if names is not None else values.to_numpy()
    return pd.DataFrame(values, columns=list(names)) if names is not None else values


def check_frame(frame: pd.DataFrame, features: Sequence[Mapping[str, Any]], n_points: int, *, seed: int = CHECK_SEED) -> pd.DataFrame:
    """``check_points`` for a typed table: every data row plus random points drawn per kind (numbers as
    ``check_points`` draws them, whole for an integer; booleans; a category's values, and an unseen one where the
    model predicts unseen values: an integer category's as int64), missing (NaN) at each nullable feature's missing rate."""
    names = list(frame.columns)
    numeric = [i for i, feature in enumerate(features) if feature["type"] in ("number", "integer")]
    numbers = frame.iloc[:, numeric].to_numpy(dtype=np.float64)
    lows, highs = np.nanmin(numbers, axis=0), np.nanmax(numbers, axis=0)
    floors = [features[i].get("exclusive_minimum") for i in numeric]
    drawn = check_points(np.vstack([lows, highs]), n_points, exclusive_minimums=floors, seed=seed)[2:] if numeric else None
    rng = np.random.default_rng(seed + 1)
    columns: dict[str, Any] = {}
    for index, (name, feature) in enumerate(zip(names, features, strict=True)):
        kind = feature["type"]
        if kind == "category":
            values = list(feature["categories"]) + ([unseen_category(feature["categories"])] if feature.get("unknown") == "ignore" else [])
            random = pd.Series(rng.choice(np.array(values, dtype=object), n_points), dtype=object)
        elif kind == "boolean":
            random = pd.Series(rng.random(n_points) < 0.5)
        else:
            random = pd.Series(drawn[:, numeric.index(index)].astype(np.float64))  # type: ignore[index]
            if kind == "integer":
                random = random.round()
        if feature.get("nullable"):
            random = random.astype(object if kind == "category" else np.float64).mask(rng.random(n_points) < feature["missing_rate"])
        data = frame[name].astype(np.float32).astype(np.float64) if kind == "number" else frame[name]
        columns[name] = pd.concat([data.reset_index(drop=True), random], ignore_index=True)
    points = pd.DataFrame(columns)
    for name, feature in zip(names, features, strict=True):
        if feature["type"] == "integer" and not points[name].isna().any():
            points[name] = points[name].astype(np.int64)
        if feature["type"] == "boolean":
            points[name] = points[name].astype(bool)
        if input_type(feature) == "int64":
            points[name] = points[name].astype(np.int64)
    return points


def encode_frame(points: pd.DataFrame, features: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A table as ``ModelSpec.encode`` gives the server's rows: the float32 matrix (a category as its code) and each
    category's column [N, 1]: strings (missing as the marker), or an integer category's int64 values."""
    matrix = np.empty(points.shape, dtype=np.float32)
    texts: dict[int, np.ndarray] = {}
    for index, (name, feature) in enumerate(zip(points.columns, features, strict=True)):
        column = points[name]
        if feature["type"] == "category":
            codes = column.map({value: code for code, value in enumerate(feature["categories"])})  # NaN: missing or unseen
            matrix[:, index] = np.where(column.isna(), np.nan, codes.fillna(len(feature["categories"])).to_numpy(dtype=np.float64))
            if input_type(feature) == "int64":
                texts[index] = column.to_numpy(dtype=np.int64).reshape(-1, 1)
            else:
                texts[index] = column.astype(object).where(column.notna(), MISSING_MARKER).to_numpy().reshape(-1, 1)
        else:
            matrix[:, index] = column.to_numpy(dtype=np.float32)
    return matrix, texts


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
    """The server's label for each row: ``decide_rows``, the code that answers a batch."""
    return np.asarray(decide_rows(probabilities)[1], dtype=np.int64)


def _largest_difference(first: np.ndarray, second: np.ndarray) -> float:
    """max |first - second|, infinite if either side has a NaN (so a NaN can never pass a check)."""
    difference = np.abs(first.astype(np.float64) - second.astype(np.float64))
    return float(np.where(np.isnan(difference), np.inf, difference).max())


def _class_indices(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    order = np.argsort(classes)
    positions = np.searchsorted(classes[order], labels).clip(0, len(classes) - 1)
    return order[positions]


def compare_classifier(
    estimator: Any, session: onnxruntime.InferenceSession, points: np.ndarray | pd.DataFrame, feed: Mapping[str, np.ndarray] | None = None
) -> ExportCheck:
    """Labels the server would decide from ONNX probabilities vs ``predict``; probabilities vs ``predict_proba``.
    ``feed``: what ONNX Runtime gets for ``points`` (default: ``points`` as the one float32 input)."""
    onnx_probabilities = session.run([PROBABILITIES_OUTPUT], dict(feed) if feed is not None else {ONNX_INPUT: points})[0]
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
    estimator: Any, session: onnxruntime.InferenceSession, output: str, points: np.ndarray | pd.DataFrame, data_rows: int,
    feed: Mapping[str, np.ndarray] | None = None,
) -> ExportCheck:
    """ONNX predictions vs ``predict``, allowed REGRESSION_RELATIVE_TOLERANCE of the data rows' output scale."""
    onnx_predictions = session.run([output], dict(feed) if feed is not None else {ONNX_INPUT: points})[0].reshape(-1)
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
