"""What skl2onnx needs beyond itself: onnxmltools' converters for LightGBM and XGBoost, registered with skl2onnx
(its tutorials "Convert a pipeline with a LightGBM classifier / a XGBoost model"), and a fitted model prepared
for conversion (a copy; the model itself is never changed).

Packaging-time only: lightgbm, xgboost and onnxmltools are the ``train`` extra's; the server runs the ONNX file."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
from skl2onnx import update_registered_converter
from skl2onnx.common import tree_ensemble
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer

# A missing category is fed to the model as this string: skl2onnx converts a string SimpleImputer only when its
# missing_values is a string (not NaN), so the exported copy's imputers look for this instead.
MISSING_MARKER = ""
CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
_registered = False


def register_boosters() -> None:
    """Register LightGBM's and XGBoost's scikit-learn estimators with skl2onnx, for those installed (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    if importlib.util.find_spec("onnxmltools") is None:
        return
    if importlib.util.find_spec("lightgbm") is not None:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm  # type: ignore[import-untyped]

        update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                    convert_lightgbm, options=CLASSIFIER_OPTIONS)
        update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                    convert_lightgbm, options={"split": None})
    if importlib.util.find_spec("xgboost") is not None:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost  # type: ignore[import-untyped]
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                    convert_xgboost, options=CLASSIFIER_OPTIONS)
        update_registered_converter(XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                    convert_xgboost)


def parts(estimator: Any) -> Iterator[Any]:
    """The estimator and every estimator nested in it (Pipeline steps, ColumnTransformer transformers)."""
    yield estimator
    if isinstance(estimator, BaseEstimator):
        for value in vars(estimator).values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                candidates = item if isinstance(item, tuple) else [item]
                for candidate in candidates:
                    if isinstance(candidate, BaseEstimator):
                        yield from parts(candidate)


def for_conversion(estimator: Any) -> Any:
    """A copy skl2onnx can convert: string imputers look for MISSING_MARKER, XGBoost boosters forget their
    column names (onnxmltools reads only f0, f1...). Its answers are the model's."""
    prepared = copy.deepcopy(estimator)
    for part in parts(prepared):
        statistics = getattr(part, "statistics_", None)
        if isinstance(part, SimpleImputer) and statistics is not None and np.asarray(statistics).dtype == object:
            part.missing_values = MISSING_MARKER
        if hasattr(part, "get_booster") and type(part).__module__.startswith("xgboost"):
            part.get_booster().feature_names = None
    return prepared


@contextlib.contextmanager
def hist_gradient_boosting_fixed(estimator: Any) -> Iterator[None]:
    """skl2onnx 1.20's HistGradientBoosting export, fixed for the time of one conversion: it passes a Python bool
    as a leaf's missing-value flag, which onnx 1.23 refuses ("Expected an int, got a boolean"), and rounds each
    float64 threshold to float32, which moves points near it to the other branch; skl2onnx's own
    ``adjust_threshold_for_sklearn`` picks the float32 threshold that splits float32 inputs as the float64 one does."""
    if not any(isinstance(part, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)) for part in parts(estimator)):
        yield
        return
    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        kwargs.update(adjust_threshold_for_sklearn=True, dtype=np.float32)
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original
