"""The feature table: checked against the model, and profiled (range, decile bins) for the manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from irisserve.tools.errors import PackagingError, listed

DECILES = np.arange(1, 10) / 10
NOTE_KEYS = ("description", "exclusive_minimum")


class FeatureNote(TypedDict, total=False):
    """What the manifest may say about a feature beyond its data: shown in the OpenAPI, enforced by the server."""

    description: str
    exclusive_minimum: float


def feature_frame(features: pd.DataFrame | np.ndarray, feature_names: Sequence[str] | None) -> pd.DataFrame:
    """The features as a DataFrame of finite numbers under unique string names; refuse anything else."""
    frame = _as_frame(features, feature_names)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise PackagingError(f"The data has {frame.shape[0]} rows and {frame.shape[1]} feature columns; packaging needs both.")
    columns = list(frame.columns)
    not_strings = [column for column in columns if not isinstance(column, str)]
    if not_strings:
        raise PackagingError(f"Feature names must be strings; these are not: {listed(not_strings)}.")
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise PackagingError(f"Feature names must be unique; repeated: {listed(repeated)}.")
    not_numeric = [
        column
        for column in columns
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column])
    ]
    if not_numeric:
        raise PackagingError(f"Columns {listed(not_numeric)} are not numeric; irisserve features are numbers (encode or drop them).")
    finite = np.isfinite(frame.to_numpy(dtype=np.float64))
    if not finite.all():
        gaps = [f"{column!r} ({int((~finite[:, i]).sum())} rows)" for i, column in enumerate(columns) if not finite[:, i].all()]
        raise PackagingError(f"Columns {', '.join(gaps)} have missing or infinite values; fill or drop those rows first.")
    return frame


def check_feature_names(estimator: Any, label: str, names: list[str]) -> None:
    """The data's columns must be the model's features: the same names in the same order (or the same count)."""
    expected = getattr(estimator, "feature_names_in_", None)
    if expected is None:
        count = getattr(estimator, "n_features_in_", None)
        if count is not None and count != len(names):
            raise PackagingError(f"{label} was fitted on {count} features but the data has {len(names)} columns ({listed(names)}).")
        return
    expected = [str(feature) for feature in expected]
    if expected == names:
        return
    missing = [feature for feature in expected if feature not in names]
    unexpected = [column for column in names if column not in expected]
    problems = [f"missing {listed(missing)}"] if missing else []
    problems += [f"unexpected {listed(unexpected)}"] if unexpected else []
    if not problems:
        problems = [f"same columns in another order (the model's order: {listed(expected)})"]
    raise PackagingError(f"The data's columns do not match the features {label} was fitted on: {'; '.join(problems)}.")


def check_notes(notes: Mapping[str, FeatureNote] | None, names: list[str], values: np.ndarray) -> dict[str, dict[str, Any]]:
    """Notes on known features only, in the manifest's key order; the data must respect each exclusive_minimum."""
    notes = notes or {}
    unknown = [feature for feature in notes if feature not in names]
    if unknown:
        raise PackagingError(f"feature_notes names {listed(unknown)}, which are not features ({listed(names)}).")
    checked: dict[str, dict[str, Any]] = {}
    for feature, note in notes.items():
        checked[feature] = {key: note[key] for key in NOTE_KEYS if key in note}  # type: ignore[literal-required]
        minimum = note.get("exclusive_minimum")
        if minimum is not None and not (values[:, names.index(feature)] > minimum).all():
            raise PackagingError(f"Feature {feature!r} must be > {minimum} (its exclusive_minimum), but the data has smaller values.")
    return checked


def check_examples(
    examples: Sequence[Mapping[str, float]] | None, names: list[str], values: np.ndarray
) -> list[dict[str, float]]:
    """The example rows (the OpenAPI examples: the first for /predict, all of them for a batch): the ones
    given (every feature, in order), else the first two data rows."""
    if examples is None:
        return [{feature: float(value) for feature, value in zip(names, row, strict=True)} for row in values[:2]]
    for example in examples:
        if list(example) != names:
            raise PackagingError(f"An example must give every feature, in order ({listed(names)}); it gives {listed(list(example))}.")
    return [{feature: float(value) for feature, value in example.items()} for example in examples]


def bins(column: np.ndarray) -> dict[str, list[float]]:
    """Decile edges without duplicates, and the share of rows per bin; x is in bin searchsorted(edges, x, "right")."""
    edges = np.unique(np.quantile(column, DECILES))
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / len(column)).tolist()}


def profile(name: str, column: np.ndarray, note: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One manifest feature entry: name, type, the optional note (description, exclusive_minimum), range, bins."""
    return {
        "name": name,
        "type": "number",
        **(note or {}),
        "min": float(column.min()),
        "max": float(column.max()),
        "bins": bins(column),
    }


def _as_frame(features: pd.DataFrame | np.ndarray, feature_names: Sequence[str] | None) -> pd.DataFrame:
    if isinstance(features, pd.DataFrame):
        if feature_names is not None and list(feature_names) != list(features.columns):
            raise PackagingError("feature_names differ from the DataFrame's columns; pass one or the other.")
        return features
    array = np.asarray(features)
    if array.ndim != 2 or feature_names is None or len(feature_names) != array.shape[1]:
        raise PackagingError(
            f"Features must be a DataFrame, or a 2-D array with one name per column (got shape {array.shape} "
            f"and {0 if feature_names is None else len(feature_names)} names)."
        )
    return pd.DataFrame(array, columns=list(feature_names))
