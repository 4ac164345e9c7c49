"""What kind of scikit-learn estimator we were handed, and whether irisserve can serve it as ONNX."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import skl2onnx

# The class -> converter table skl2onnx itself looks models up in; its public supported_converters()
# lists converter aliases (StandardScaler is "Scaler"), which cannot be matched to a class.
from skl2onnx._supported_operators import sklearn_operator_name_map
from sklearn.base import is_classifier, is_clusterer, is_outlier_detector, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.multioutput import (
    ClassifierChain,
    MultiOutputClassifier,
    MultiOutputRegressor,
    RegressorChain,
)
from sklearn.pipeline import Pipeline
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
