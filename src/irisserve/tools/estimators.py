"""What kind of scikit-learn estimator we were handed, and whether irisserve can serve it as ONNX."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import skl2onnx

# The class -> converter table skl2onnx itself looks models up in; its public supported_converters()
# lists converter aliases (StandardScaler is "Scaler"), which cannot be matched to a class.
from skl2onnx._supported_operators import sklearn_operator_name_map
from sklearn.base import is_classifier, is_clusterer, is_outlier_detector, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.multioutput import (
    ClassifierChain,
    MultiOutputClassifier,
    MultiOutputRegressor,
    RegressorChain,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder
from sklearn.utils.validation import check_is_fitted

from irisserve.tools.converters import register_boosters
from irisserve.tools.errors import PackagingError

Task = Literal["classification", "regression"]

SUPPORTED = "irisserve packages fitted classifiers and single-output regressors"
MULTI_OUTPUT_WRAPPERS = (MultiOutputClassifier, MultiOutputRegressor, ClassifierChain, RegressorChain)
SAMPLE_ROWS = 5


@dataclass(frozen=True)
class EstimatorSpec:
    """What packaging needs to know about an estimator, read once."""

    task: Task
    final: Any  # what predicts: the estimator itself, or a Pipeline's last step
    label: str  # how messages name it: "KMeans", "KernelRidge (step 'kr' of the Pipeline)"
    type_name: str
    steps: list[str]


def inspect_estimator(estimator: Any) -> EstimatorSpec:
    """The task and the predicting step; refuse, naming the estimator or step, anything irisserve cannot serve."""
    type_name = type(estimator).__name__
    if not (hasattr(estimator, "get_params") and hasattr(estimator, "fit")):
        raise PackagingError(
            f"Cannot package {type_name}: it is not a scikit-learn estimator; {SUPPORTED} (or Pipelines ending in one)."
        )
    steps = list(estimator.steps) if isinstance(estimator, Pipeline) else [(None, estimator)]
    step_name, final = steps[-1]
    label = _label(final, step_name)
    if final is None or isinstance(final, str):
        raise PackagingError(f"Cannot package {type_name}: its final step {step_name!r} is {final!r}; {SUPPORTED}.")
    task = _task(final, label)
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise PackagingError(f"Cannot package {label}: it is not fitted; fit it before saving it with joblib.dump.") from None
    if getattr(final, "n_outputs_", 1) > 1:
        raise PackagingError(_multi_output(label, final.n_outputs_))
    if task == "classification" and not hasattr(estimator, "predict_proba"):
        raise PackagingError(
            f"Cannot package {label}: it has no predict_proba, and irisserve serves class probabilities "
            "(use e.g. SVC(probability=True) or CalibratedClassifierCV)."
        )
    if type(final).__name__ in ("SVC", "NuSVC") and getattr(final, "probability", False):
        raise PackagingError(
            f"Cannot package {label}: with probability=True its predict decides labels from the decision function, "
            "not from the probabilities ONNX exports, so the two disagree near the boundary (and scikit-learn deprecates "
            "the option); fit CalibratedClassifierCV(SVC(), ensemble=False) instead, which packages."
        )
    register_boosters()
    _check_converters(steps)
    return EstimatorSpec(
        task=task,
        final=final,
        label=label,
        type_name=type_name,
        steps=[step if isinstance(step, str) else type(step).__name__ for _, step in steps],
    )


def check_single_output(estimator: Any, spec: EstimatorSpec, sample: Any) -> None:
    """Catch multi-output models that carry no n_outputs_ (a linear model fitted on two columns) by their answers."""
    predictions = np.asarray(estimator.predict(sample[:SAMPLE_ROWS]))
    if predictions.ndim > 1 and predictions.shape[1] != 1:
        raise PackagingError(_multi_output(spec.label, predictions.shape[1]))


def scalar_parameters(final: Any) -> dict[str, Any]:
    """The predicting step's own scalar parameters (nested estimators and arrays left out)."""
    return {
        key: str(value) if isinstance(value, float) and not math.isfinite(value) else value  # XGBoost's missing=nan: JSON has no NaN
        for key, value in final.get_params(deep=False).items()
        if isinstance(value, (int, float, str, bool, type(None)))
    }


# Encoders whose fitted categories_ are the only values a column can usefully take; the steps that may come before one
# in a Pipeline and still hand it the raw column (an imputer keeps each column, in order; its indicators come after).
ENCODERS = (OneHotEncoder, OrdinalEncoder)
KEEPS_COLUMNS = (SimpleImputer,)
Uses = dict[str, list[list[Any] | None]]  # a raw column -> each reader's categories (an encoder's), or None (read otherwise)


def encoded_columns(estimator: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    """The raw columns a fitted Pipeline reads only through encoders (OneHotEncoder, OrdinalEncoder; directly, or after
    imputers in a Pipeline, in a ColumnTransformer at its head, nested any depth), each with its encoders' fitted
    categories. A column also read any other way (scaled, passed through, fed to the model), or by encoders that
    disagree, is left out; so is every column of a ColumnTransformer whose column selection cannot be read."""
    uses: Uses = {name: [] for name in names}
    steps = [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    _read_by_steps(steps, list(names), uses)
    encoded: dict[str, list[Any]] = {}
    for name, readers in uses.items():
        first = readers[0] if readers else None
        if first is not None and all(reader == first for reader in readers):
            encoded[name] = first
    return encoded


def _read_by_steps(steps: Sequence[Any], columns: list[str], uses: Uses) -> None:
    """The columns through a Pipeline's steps: the first step that is not an imputer (or passthrough) reads them."""
    for step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if isinstance(step, KEEPS_COLUMNS):
            try:
                kept = [str(name) for name in step.get_feature_names_out(columns)]
                statistics = list(step.statistics_)
            except Exception:  # noqa: BLE001 - fitted on another width: the columns cannot be followed
                _read_otherwise(columns, uses)
                return
            # skl2onnx converts an imputer of int64 values only when what it fills in is whole (a mean of 3.15 is not):
            # a column with any other fill is read as a number
            _read_otherwise([column for column, fill in zip(columns, statistics, strict=False) if not _whole(fill)], uses)
            columns = kept
            continue
        _read_by(step, columns, uses)
        return
    _read_otherwise(columns, uses)  # only imputers: the columns reach whatever comes next as numbers


def _read_by(step: Any, columns: list[str], uses: Uses) -> None:
    if isinstance(step, ColumnTransformer):
        for _, transformer, selection in step.transformers_:
            if isinstance(transformer, str) and transformer == "drop":
                continue
            selected = _selected(selection, columns)
            if selected is None:
                _read_otherwise(columns, uses)
            else:
                _read_by_steps([transformer], selected, uses)
    elif isinstance(step, Pipeline):
        _read_by_steps([inner for _, inner in step.steps], columns, uses)
    elif isinstance(step, ENCODERS) and len(getattr(step, "categories_", ())) == len(columns):
        for column, categories in zip(columns, step.categories_, strict=True):
            if column in uses:
                uses[column].append(list(categories))
    else:
        _read_otherwise(columns, uses)


def _whole(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) and float(value).is_integer()


def _read_otherwise(columns: list[str], uses: Uses) -> None:
    for column in columns:
        if column in uses:
            uses[column].append(None)


def _selected(selection: Any, columns: list[str]) -> list[str] | None:
    """A fitted ColumnTransformer's column selection (names, positions, a mask or a slice; a callable is already
    resolved in ``transformers_``) as column names, or None when it cannot be read."""
    try:
        if isinstance(selection, str):
            return [selection] if selection in columns else None
        if isinstance(selection, (int, np.integer)) and not isinstance(selection, (bool, np.bool_)):
            return [columns[selection]]
        if isinstance(selection, slice):
            if isinstance(selection.start, str) or isinstance(selection.stop, str):  # by name, both ends included
                start = 0 if selection.start is None else columns.index(selection.start)
                stop = len(columns) if selection.stop is None else columns.index(selection.stop) + 1
                return columns[start:stop]
            return columns[selection]
        items = list(np.asarray(selection, dtype=object).reshape(-1))
        if not items:
            return []
        if all(isinstance(item, (bool, np.bool_)) for item in items):
            return [column for column, keep in zip(columns, items, strict=True) if keep]
        if all(isinstance(item, str) for item in items):
            return items if all(item in columns for item in items) else None
        if all(isinstance(item, (int, np.integer)) for item in items):
            return [columns[int(item)] for item in items]
    except (IndexError, ValueError, TypeError):
        return None
    return None


def _check_converters(steps: list[tuple[str | None, Any]]) -> None:
    for name, step in steps:
        if step is not None and not isinstance(step, str) and type(step) not in sklearn_operator_name_map:
            raise PackagingError(
                f"Cannot package {_label(step, name)}: skl2onnx {skl2onnx.__version__} has no converter for it, "
                "so it cannot run as ONNX; use a model or transformer that skl2onnx supports."
            )


def _label(step: Any, step_name: str | None) -> str:
    class_name = step if isinstance(step, str) else type(step).__name__
    return class_name if step_name is None else f"{class_name} (step {step_name!r} of the Pipeline)"


def _task(final: Any, label: str) -> Task:
    if isinstance(final, MULTI_OUTPUT_WRAPPERS):
        raise PackagingError(_multi_output(label, "several"))
    if is_clusterer(final):
        raise PackagingError(f"Cannot package {label}: it is a clustering model, with no labels to learn from; {SUPPORTED}.")
    if is_classifier(final):
        return "classification"
    if is_regressor(final):
        return "regression"
    if is_outlier_detector(final):
        raise PackagingError(f"Cannot package {label}: it is an outlier detector; {SUPPORTED}.")
    if hasattr(final, "transform"):
        raise PackagingError(f"Cannot package {label}: it is a transformer, not a predictor; {SUPPORTED}.")
    raise PackagingError(f"Cannot package {label}: it is neither a classifier nor a regressor; {SUPPORTED}.")


def _multi_output(label: str, outputs: object) -> str:
    return f"Cannot package {label}: it predicts {outputs} outputs per row; {SUPPORTED} (fit one model per target)."
