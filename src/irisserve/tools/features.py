"""The feature table: checked against the model, and profiled (range, decile bins) for the manifest."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from irisserve.core.artifact import INT64_MAX, INT64_MIN, MAX_CATEGORIES, MAX_CATEGORY_CHARS, Kind, Scalar, control_characters
from irisserve.tools.converters import MISSING_MARKER
from irisserve.tools.errors import PackagingError, listed

DECILES = np.arange(1, 10) / 10
NOTE_KEYS = ("description", "exclusive_minimum")


class FeatureNote(TypedDict, total=False):
    """What the manifest may say about a feature beyond its data: shown in the OpenAPI, enforced by the server."""

    description: str
    exclusive_minimum: float


def feature_frame(features: pd.DataFrame | np.ndarray, feature_names: Sequence[str] | None) -> pd.DataFrame:
    """The features as a DataFrame under unique string names: numbers (finite or missing), booleans, text categories."""
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
    kinds = {column: column_kind(frame, column) for column in columns}
    numeric = [column for column in columns if kinds[column] in ("number", "integer")]
    infinite = [column for column in numeric if np.isinf(frame[column].to_numpy(dtype=np.float64)).any()]
    if infinite:
        raise PackagingError(f"Columns {listed(infinite)} have infinite values; fill or drop those rows first.")
    empty = [column for column in columns if frame[column].isna().all()]
    if empty:
        raise PackagingError(f"Columns {listed(empty)} have no values at all; drop them.")
    return frame


def column_kind(frame: pd.DataFrame, column: str) -> Kind:
    """A column's kind from its values: boolean (a bool column), integer (an integer column), number, or category
    (text: every value a string, at most MAX_CATEGORIES of them, none empty, long or with a control character)."""
    series = frame[column]
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "integer" if pd.api.types.is_integer_dtype(series) else "number"
    values = series.dropna()
    if not all(isinstance(value, str) for value in values):
        raise PackagingError(f"Column {column!r} mixes text with other values; irisserve features are numbers, booleans or text categories.")
    categories = values.unique()
    if len(categories) > MAX_CATEGORIES:
        raise PackagingError(f"Column {column!r} has {len(categories)} distinct values; a category may have at most {MAX_CATEGORIES} (is it an identifier?).")
    bad = [value for value in categories if value == MISSING_MARKER or len(value) > MAX_CATEGORY_CHARS or control_characters(value)]
    if bad:
        raise PackagingError(
            f"Column {column!r} has the value(s) {listed([value[:60] for value in bad[:5]])}: a category must be non-empty text of at "
            f"most {MAX_CATEGORY_CHARS} characters without control characters (an empty cell means missing)."
        )
    return "category"


def integer_categories(encoded: Mapping[str, Sequence[Any]], frame: pd.DataFrame, kinds: Mapping[str, Kind]) -> dict[str, list[int]]:
    """The integer columns that are categories: read by the model only through encoders (``encoded``, from
    ``estimators.encoded_columns``: an encoder's fitted categories per column), with no gaps, their encoder's values
    whole numbers within int64, at most MAX_CATEGORIES of them. Each with those values, in the encoder's order."""
    found: dict[str, list[int]] = {}
    for name, values in encoded.items():
        if kinds.get(name) != "integer" or frame[name].isna().any() or not 0 < len(values) <= MAX_CATEGORIES:
            continue
        if all(_whole_int64(value) for value in values):
            found[name] = [int(value) for value in values]
    return found


def _whole_int64(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(value)) and float(value).is_integer() and INT64_MIN <= int(value) <= INT64_MAX


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


def check_notes(notes: Mapping[str, FeatureNote] | None, names: list[str], frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Notes on known features only, in the manifest's key order; the data must respect each exclusive_minimum."""
    notes = notes or {}
    unknown = [feature for feature in notes if feature not in names]
    if unknown:
        raise PackagingError(f"feature_notes names {listed(unknown)}, which are not features ({listed(names)}).")
    checked: dict[str, dict[str, Any]] = {}
    for feature, note in notes.items():
        checked[feature] = {key: note[key] for key in NOTE_KEYS if key in note}  # type: ignore[literal-required]
        minimum = note.get("exclusive_minimum")
        if minimum is not None and not (frame[feature].dropna().to_numpy(dtype=np.float64) > minimum).all():
            raise PackagingError(f"Feature {feature!r} must be > {minimum} (its exclusive_minimum), but the data has smaller values.")
    return checked


def json_value(kind: Kind, value: Any, *, integer: bool = False) -> Scalar:
    """A data value as the JSON a client sends for it (``integer``: a category of integers): null when missing."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if kind == "category":
        return int(value) if integer else str(value)
    if kind == "boolean":
        return bool(value)
    return int(value) if kind == "integer" else float(value)


def check_examples(
    examples: Sequence[Mapping[str, Any]] | None,
    names: list[str],
    frame: pd.DataFrame,
    kinds: Mapping[str, Kind],
    integer_categories: Container[str] = (),
) -> list[dict[str, Scalar]]:
    """The example rows (the OpenAPI examples: the first for /predict, all of them for a batch): the ones
    given (every feature, in order), else the first two data rows; ``integer_categories``' values as integers."""
    if examples is None:
        examples = frame.head(2).to_dict(orient="records")
    for example in examples:
        if list(example) != names:
            raise PackagingError(f"An example must give every feature, in order ({listed(names)}); it gives {listed(list(example))}.")
    return [
        {feature: json_value(kinds[feature], value, integer=feature in integer_categories) for feature, value in example.items()}
        for example in examples
    ]


def bins(column: np.ndarray) -> dict[str, list[float]]:
    """Decile edges without duplicates, and the share of rows per bin; x is in bin searchsorted(edges, x, "right")."""
    edges = np.unique(np.quantile(column, DECILES))
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / len(column)).tolist()}


def category_bins(series: pd.Series, categories: Sequence[str | int]) -> dict[str, list[float]]:
    """Bins over a category's codes (ModelSpec.encode): one per category, in order, then one for unseen values
    (share 0 in training, unless an encoder's categories leave out values the data has); the edges fall between the
    codes, so the numeric drift rule bins them."""
    present = series.dropna()
    counts = present.value_counts()
    total = max(len(present), 1)
    shares = [float(counts.get(value, 0)) / total for value in categories]
    unseen = float(len(present) - int(present.isin(list(categories)).sum())) / total
    return {"edges": [code + 0.5 for code in range(len(categories))], "shares": [*shares, unseen]}


def profile(
    name: str, series: pd.Series, kind: Kind, note: Mapping[str, Any] | None = None, categories: Sequence[int] | None = None
) -> dict[str, Any]:
    """One manifest feature entry: name, type, nullable, the optional note (description, exclusive_minimum), then
    the range and bins of its present values (a category: its values, the data's sorted strings or ``categories``,
    an integer column's encoder's values, and their shares)."""
    missing = float(series.isna().mean())
    entry: dict[str, Any] = {"name": name, "type": kind, **({"nullable": True, "missing_rate": missing} if missing else {}), **(note or {})}
    if kind == "category":
        values = list(categories) if categories is not None else sorted(series.dropna().unique().tolist())
        return {**entry, "categories": values, "bins": category_bins(series, values)}
    column = series.dropna().to_numpy(dtype=np.float64)
    return {**entry, "min": float(column.min()), "max": float(column.max()), "bins": bins(column)}


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
