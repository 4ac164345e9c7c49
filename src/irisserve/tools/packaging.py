"""Package a fitted scikit-learn classifier or single-output regressor as a served artifact (format_version 2).

The one path from an estimator to an artifact folder: `irisserve package` and the Iris trainer both come
here. Everything is checked, converted and compared before anything is written; the folder then appears
by one rename, or not at all."""

from __future__ import annotations

import csv
import io
import platform
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import skl2onnx
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)

from irisserve.core.artifact import (
    FORMAT_VERSION,
    NAME_PATTERN,
    ONNX_NAME,
    PICKLE_NAME,
    describe_file,
    identity_problem,
)
from irisserve.core.predictor import onnx_feed
from irisserve.tools import onnx_export
from irisserve.tools.atomic_write import check_destination, superseded_version, write_artifact
from irisserve.tools.converters import MISSING_MARKER
from irisserve.tools.errors import PackagingError, listed, one_line, root_cause
from irisserve.tools.estimators import (
    EstimatorSpec,
    check_single_output,
    encoded_columns,
    inspect_estimator,
    scalar_parameters,
)
from irisserve.tools.features import (
    FeatureNote,
    check_examples,
    check_feature_names,
    check_notes,
    column_kind,
    feature_frame,
    integer_categories,
    profile,
)

__all__ = ["DEFAULT_VERSION", "FeatureNote", "PackagingError", "default_name", "package", "package_files"]

DEFAULT_VERSION = "1.0.0"
REGRESSION_TARGET = "prediction"
SKOPS_SUFFIX = ".skops"
# Types skops does not trust by default that scikit-learn's own estimators hold (trees, gradient boosting's
# predictors, losses); a .skops file holding any other is refused before it is loaded.
SKOPS_TRUSTED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
})
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "joblib")


def package(
    estimator: Any,
    features: pd.DataFrame | np.ndarray,
    *,
    name: str,
    out_dir: Path,
    version: str = DEFAULT_VERSION,
    feature_names: Sequence[str] | None = None,
    target: Any | None = None,
    target_names: Sequence[str] | None = None,
    feature_notes: Mapping[str, FeatureNote] | None = None,
    examples: Sequence[Mapping[str, Any]] | None = None,
    metrics: Mapping[str, Any] | None = None,
    metrics_source: str | None = None,
    eval_data: tuple[pd.DataFrame, Any, str] | None = None,
    graph_name: str | None = None,
    check_size: int = onnx_export.EXPORT_CHECK_POINTS,
    force: bool = False,
) -> dict[str, Any]:
    """Check, convert and compare ``estimator`` on ``features``, then write ``out_dir`` atomically; return the manifest.

    ``target`` (the rows' true values) adds metrics, computed on ``eval_data`` (held-out rows, their true values and
    the file's name) when given, else on ``features`` and labelled in-sample; ``target_names`` renames the classes
    (in ``classes_`` order) or the regression output; ``metrics`` are added to, and override, the computed ones,
    and ``metrics_source`` then says where they come from; ``graph_name`` defaults to ``name``. ``out_dir`` must be new or empty, or with ``force`` an earlier
    artifact of the same name and version (``atomic_write.check_destination``)."""
    _check_identity(name, version)
    out_dir = Path(out_dir)
    check_destination(out_dir, name=name, version=version, force=force)  # refused before minutes of export
    spec = inspect_estimator(estimator)
    frame = feature_frame(features, feature_names)
    names = [str(column) for column in frame.columns]
    kinds = {name: column_kind(frame, name) for name in names}
    check_feature_names(estimator, spec.type_name, names)
    check_single_output(estimator, spec, onnx_export.sklearn_input(estimator, frame))
    # An integer column the model reads only through a one-hot (or ordinal) encoder is a category of its encoder's values.
    encoded = integer_categories(encoded_columns(estimator, names), frame, kinds)
    kinds.update({column: "category" for column in encoded})
    notes = check_notes(feature_notes, names, frame)
    checked_examples = check_examples(examples, names, frame, kinds, encoded)
    targets = _targets(estimator, spec, target, target_names)
    scores, source = _metrics(estimator, spec, frame, target, eval_data)
    scores.update(metrics or {})
    source = metrics_source or source
    profiles = [profile(name, frame[name], kinds[name], notes.get(name), encoded.get(name)) for name in names]
    for entry in profiles:
        if entry["type"] == "category":
            entry["unknown"] = _unknown_handling(estimator, frame, entry["name"], entry["categories"])
            if entry.get("nullable"):
                entry["missing_marker"] = MISSING_MARKER
    columns = [(entry["name"], onnx_export.input_type(entry)) for entry in profiles] if "category" in kinds.values() else None

    onnx_bytes, outputs = _export(estimator, spec, len(names), graph_name or name, columns)
    check = _check_export(estimator, spec, onnx_bytes, outputs, frame, profiles, columns, check_size)
    pickle_bytes = _pickle(estimator, spec)
    supersedes = superseded_version(out_dir, name)

    def manifest_for(folder: Path) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "task": spec.task,
            "model": {"type": spec.type_name, "parameters": scalar_parameters(spec.final), "steps": spec.steps},
            "features": profiles,
            "targets": targets,
            "examples": checked_examples,
            "metrics": scores,
            **({"metrics_source": source} if scores and source else {}),
            "training_rows": len(frame),
            "libraries": _library_versions(),
            "onnx": {
                "input_name": onnx_export.ONNX_INPUT,
                **({"inputs": names} if columns is not None else {}),
                "outputs": outputs,
                "export_check": check.as_manifest(),
            },
            "files": {file_name: describe_file(folder / file_name) for file_name in (ONNX_NAME, PICKLE_NAME)},
        }
        if supersedes is not None:
            manifest["supersedes"] = supersedes
        return manifest

    try:
        return write_artifact(out_dir, {ONNX_NAME: onnx_bytes, PICKLE_NAME: pickle_bytes}, manifest_for, force=force)
    except OSError as exc:
        raise PackagingError(f"Cannot write the artifact to {out_dir}: {one_line(exc)}") from None


def package_files(
    model_path: Path,
    csv_path: Path,
    *,
    target_column: str | None = None,
    name: str,
    version: str = DEFAULT_VERSION,
    out_dir: Path,
    eval_path: Path | None = None,
    check_size: int = onnx_export.EXPORT_CHECK_POINTS,
    force: bool = False,
) -> dict[str, Any]:
    """`irisserve package`: a joblib/pickle (or skops) file, and a CSV whose header names the features (plus the
    optional target); ``eval_path``, a held-out CSV with the same columns, is what the metrics are computed on.
    A pickle runs code when loaded: only give it files you trust."""
    _check_identity(name, version)
    check_destination(Path(out_dir), name=name, version=version, force=force)
    if eval_path is not None and target_column is None:
        raise PackagingError("--eval-data needs --target: the metrics compare the model's predictions with that column.")
    table = _read_csv(Path(csv_path), text_column=target_column)
    target = None
    if target_column is not None:
        if target_column not in table.columns:
            raise PackagingError(f"{csv_path} has no column {target_column!r} (--target); its columns are {listed(table.columns)}.")
        target = table.pop(target_column)
    held_out = None if eval_path is None or target_column is None else _read_eval_csv(Path(eval_path), table, target_column)
    estimator = _load_model(Path(model_path))
    eval_data = None
    if target is not None:
        target = _as_labels_of(estimator, target)
    if held_out is not None:
        eval_data = (held_out[0], _as_labels_of(estimator, held_out[1]), Path(eval_path).name)  # type: ignore[arg-type]
    return package(
        estimator, table, target=target, eval_data=eval_data, name=name, version=version, out_dir=out_dir,
        check_size=check_size, force=force,
    )


def _read_eval_csv(path: Path, table: pd.DataFrame, target_column: str) -> tuple[pd.DataFrame, pd.Series]:
    """The held-out rows (the packaging CSV's feature columns, in its order and dtypes) and their target."""
    held_out = _read_csv(path, text_column=target_column)
    if target_column not in held_out.columns:
        raise PackagingError(
            f"{path} (--eval-data) has no column {target_column!r} (--target); its columns are {listed(held_out.columns)}."
        )
    missing = [column for column in table.columns if column not in held_out.columns]
    if missing:
        raise PackagingError(f"{path} (--eval-data) lacks the feature column(s) {listed(missing)}; it needs the packaging CSV's columns.")
    features = held_out[list(table.columns)].copy()
    for column in table.columns:
        if pd.api.types.is_numeric_dtype(table[column]) or pd.api.types.is_bool_dtype(table[column]):
            if not (pd.api.types.is_numeric_dtype(features[column]) or pd.api.types.is_bool_dtype(features[column])):
                raise PackagingError(f"{path} (--eval-data): column {column!r} holds text where the packaging CSV has numbers.")
            if pd.api.types.is_bool_dtype(table[column]) and not pd.api.types.is_bool_dtype(features[column]):
                raise PackagingError(f"{path} (--eval-data): column {column!r} is not true/false as in the packaging CSV.")
            if not pd.api.types.is_bool_dtype(table[column]):
                features[column] = features[column].astype(np.float64 if features[column].isna().any() else table[column].dtype)
        else:  # text in the packaging CSV: text here too, whatever pandas read ("1" stays "1")
            features[column] = features[column].map(lambda value: value if pd.isna(value) else str(value)).astype(object)
    return features, held_out[target_column]


def default_name(model_path: Path) -> str:
    """The model file's stem, lower-cased, each run of characters outside [a-z0-9_.-] turned into one "_"."""
    candidate = re.sub(r"[^a-z0-9_.-]+", "_", Path(model_path).stem.lower()).strip("_.-")
    if not NAME_PATTERN.fullmatch(candidate):
        raise PackagingError(f"Cannot make a model name from {Path(model_path).name!r}; pass --name (a-z, 0-9, _ . -).")
    return candidate


def _read_csv(path: Path, *, text_column: str | None = None) -> pd.DataFrame:
    """The CSV, its header checked first (pandas would rename a repeated column to "a.1"); ``text_column`` (the
    target) is read as text, so labels "1" and "1.0" stay two labels."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        repeated = sorted({column for column in header if header.count(column) > 1})
        if repeated:
            raise PackagingError(f"{path} names the column(s) {listed(repeated)} more than once; give every column its own name.")
        table = pd.read_csv(path, dtype={text_column: str} if text_column in header else None)
    except FileNotFoundError:
        raise PackagingError(f"No CSV file at {path}.") from None
    except (OSError, ValueError, csv.Error) as exc:  # pandas' parser and decoding errors are ValueErrors
        raise PackagingError(f"Cannot read {path} as CSV: {one_line(exc)}") from None
    if table.empty:
        raise PackagingError(f"{path} has no data rows; packaging needs the training rows (or a sample of them).")
    return table


def _as_labels_of(estimator: Any, target: pd.Series) -> pd.Series:
    """The target column (read as text) as the estimator's labels: numbers unless its classes are text."""
    classes = getattr(estimator, "classes_", None)
    if classes is not None and np.asarray(classes).dtype.kind in "OUS":
        return target
    try:
        return pd.to_numeric(target)
    except (ValueError, TypeError):
        return target  # not numbers: refused below, naming the values


def _load_model(path: Path) -> Any:
    """The estimator: a .skops file through skops.io with an explicit list of trusted types; anything else through
    joblib, which runs the code a pickle holds (the README and `package --help` say: trusted files only)."""
    if not path.is_file():
        raise PackagingError(f"No model file at {path}.")
    if path.suffix == SKOPS_SUFFIX:
        return _load_skops(path)
    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - unpickling raises whatever the pickled classes raise
        raise PackagingError(
            f"Cannot load {path} with joblib.load ({type(exc).__name__}: {one_line(exc)}); "
            "save the fitted estimator with joblib.dump, under the scikit-learn installed here."
        ) from None


def _load_skops(path: Path) -> Any:
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
        refused = [name for name in untrusted if name not in SKOPS_TRUSTED_TYPES]
        if refused:
            raise PackagingError(
                f"{path} holds types irisserve does not trust ({listed(refused)}); only scikit-learn's own types are "
                "loaded from a .skops file. Nothing was loaded."
            )
        return skops.io.load(path, trusted=untrusted)
    except PackagingError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged zip or schema raises many types
        raise PackagingError(f"Cannot load {path} with skops.io ({type(exc).__name__}: {one_line(exc)}).") from None


def _targets(estimator: Any, spec: EstimatorSpec, target: Any | None, target_names: Sequence[str] | None) -> list[str]:
    """Class names in ``classes_`` order, or the one regression output's name (the target column's, if known)."""
    if spec.task == "classification":
        targets = [str(label) for label in estimator.classes_]
        if len(targets) < 2:
            raise PackagingError(f"Cannot package {spec.label}: it was fitted on one class ({listed(targets)}); a classifier needs two or more.")
    else:
        column = getattr(target, "name", None)
        targets = [column if isinstance(column, str) else REGRESSION_TARGET]
    if target_names is None:
        return targets
    if len(target_names) != len(targets):
        raise PackagingError(f"target_names gives {len(target_names)} names for {spec.label}'s {len(targets)} outputs ({listed(targets)}).")
    return [str(target_name) for target_name in target_names]


def _unknown_handling(estimator: Any, frame: pd.DataFrame, column: str, categories: Sequence[Any]) -> str:
    """"ignore" when the model predicts a row whose ``column`` holds a value it never saw (an encoder with
    handle_unknown="ignore"), else "error": asked of the model itself, whatever encoder it holds."""
    probe = frame.head(1).copy()
    probe[column] = onnx_export.unseen_category(categories)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.predict(onnx_export.sklearn_input(estimator, probe))
    except Exception:  # noqa: BLE001 - an encoder refusing an unknown category raises ValueError, others anything
        return "error"
    return "ignore"


def _metrics(
    estimator: Any, spec: EstimatorSpec, frame: pd.DataFrame, target: Any | None, eval_data: tuple[pd.DataFrame, Any, str] | None
) -> tuple[dict[str, float], str | None]:
    """The metrics and where they come from: the held-out rows when given, else the packaging rows (in-sample)."""
    if eval_data is not None:
        rows, truth, file_name = eval_data
        return _score(estimator, spec, rows, truth, where=f" in {file_name} (--eval-data)"), f"held-out: {file_name}, {len(rows)} rows"
    if target is None:
        return {}, None
    return _score(estimator, spec, frame, target), f"in-sample: the packaging data, {len(frame)} rows"


def _score(estimator: Any, spec: EstimatorSpec, values: pd.DataFrame, target: Any | None, where: str = "") -> dict[str, float]:
    """Accuracy and F1 (binary F1 of the second class; macro F1 for more classes) for a classifier, or r2, mae,
    rmse for a regressor, on the given rows; none without a target."""
    if target is None:
        return {}
    truth = np.asarray(target).reshape(-1)
    if len(truth) != len(values):
        raise PackagingError(f"The target has {len(truth)} values for {len(values)} rows.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predicted = estimator.predict(onnx_export.sklearn_input(estimator, values))
    except Exception as exc:  # noqa: BLE001 - the model refusing a held-out row (an unseen category, a gap)
        if not where:
            raise
        raise PackagingError(f"Cannot score {spec.label} on the rows{where}: {type(exc).__name__}: {one_line(exc)}") from None
    if spec.task == "classification":
        classes = np.asarray(estimator.classes_)
        unknown = pd.unique(truth[~np.isin(truth, classes)])
        if len(unknown):
            raise PackagingError(
                f"The target{where} holds {listed(list(unknown))}, which {spec.label} does not predict (its classes: {listed(list(classes))})."
            )
        if len(classes) == 2:
            f1 = {"f1": float(f1_score(truth, predicted, pos_label=classes[1], average="binary", zero_division=0))}
        else:
            f1 = {"f1_macro": float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0))}
        return {"accuracy": float(accuracy_score(truth, predicted)), **f1}
    if not pd.api.types.is_numeric_dtype(truth) or not np.isfinite(truth.astype(np.float64)).all():
        raise PackagingError(f"A regressor's target{where} must be finite numbers; fill or drop the rows with missing targets.")
    return {
        "r2": float(r2_score(truth, predicted)),
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(root_mean_squared_error(truth, predicted)),
    }


def _export(
    estimator: Any, spec: EstimatorSpec, n_features: int, graph_name: str, columns: list[tuple[str, onnx_export.InputType]] | None
) -> tuple[bytes, dict[str, str]]:
    """The ONNX bytes, and the manifest's name for the output the server reads."""
    classifier = spec.final if spec.task == "classification" else None
    try:
        model = onnx_export.convert(estimator, n_features=n_features, classifier=classifier, graph_name=graph_name, columns=columns)
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many types, often with the whole node attached
        text = [column for column, kind in columns or [] if kind == "string"]
        hint = (
            f" Columns {listed(text)} hold text: the model must encode them itself (a Pipeline whose ColumnTransformer "
            "one-hot or ordinal encodes them)." if text else ""
        )
        raise PackagingError(
            f"Cannot package {spec.label}: skl2onnx {skl2onnx.__version__} failed to convert it ({root_cause(exc)}).{hint}"
        ) from None
    output_names = [output.name for output in model.graph.output]
    if classifier is not None:
        if onnx_export.PROBABILITIES_OUTPUT not in output_names:
            raise PackagingError(
                f"Cannot package {spec.label}: its ONNX graph has outputs {output_names}, "
                f"without {onnx_export.PROBABILITIES_OUTPUT!r}."
            )
        return model.SerializeToString(), {"probabilities": onnx_export.PROBABILITIES_OUTPUT}
    if len(output_names) != 1:
        raise PackagingError(f"Cannot package {spec.label}: its ONNX graph has outputs {output_names}, not one prediction.")
    return model.SerializeToString(), {"prediction": output_names[0]}


def _check_export(
    estimator: Any,
    spec: EstimatorSpec,
    onnx_bytes: bytes,
    outputs: Mapping[str, str],
    frame: pd.DataFrame,
    profiles: Sequence[Mapping[str, Any]],
    columns: list[tuple[str, onnx_export.InputType]] | None,
    check_size: int,
) -> onnx_export.ExportCheck:
    """ONNX Runtime vs scikit-learn on every row and on random points around them; refuse any disagreement."""
    try:
        session = onnx_export.new_session(onnx_bytes)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise PackagingError(f"Cannot package {spec.label}: ONNX Runtime cannot load its graph ({one_line(exc)}).") from None
    points = onnx_export.check_frame(frame, profiles, check_size)
    matrix, texts = onnx_export.encode_frame(points, profiles)
    feed = onnx_feed([name for name, _ in columns] if columns else None, onnx_export.ONNX_INPUT, matrix, texts)
    gaps = [entry["name"] for entry in profiles if entry.get("nullable")]
    hint = f" The data has missing values in {listed(gaps)}: fill them, or add an imputer to the pipeline." if gaps else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an encoder's "unknown categories" warning, once per point
            return _compare(estimator, spec, session, outputs, points, feed, len(frame), hint)
    except PackagingError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model itself refusing a point: a missing value it cannot take
        raise PackagingError(f"Cannot package {spec.label}: it fails on the check points ({type(exc).__name__}: {one_line(exc)}).{hint}") from None


def _compare(
    estimator: Any,
    spec: EstimatorSpec,
    session: Any,
    outputs: Mapping[str, str],
    points: pd.DataFrame,
    feed: dict[str, np.ndarray],
    data_rows: int,
    hint: str,
) -> onnx_export.ExportCheck:
    if spec.task == "classification":
        check = onnx_export.compare_classifier(estimator, session, points, feed)
        figures = (
            f"{check.label_mismatches} label mismatches, largest probability difference "
            f"{check.max_probability_difference:.2e} (allowed {check.tolerance:.0e})"
        )
    else:
        check = onnx_export.compare_regressor(estimator, session, outputs["prediction"], points, data_rows, feed)
        figures = f"largest difference {check.max_abs_difference:.3g} (allowed {check.tolerance:.3g})"
    if not check.passed:
        raise PackagingError(
            f"Cannot package {spec.label}: its ONNX export disagrees with scikit-learn on {check.rows_checked} points: "
            f"{figures}. Nothing was written.{hint}"
        )
    return check


def _pickle(estimator: Any, spec: EstimatorSpec) -> bytes:
    buffer = io.BytesIO()
    try:
        joblib.dump(estimator, buffer)
    except Exception as exc:  # noqa: BLE001 - pickling fails on whatever the estimator holds (a lambda, a lock)
        raise PackagingError(f"Cannot package {spec.label}: joblib cannot pickle it ({one_line(exc)}).") from None
    return buffer.getvalue()


def _check_identity(name: str, version: str) -> None:
    problem = identity_problem(name, version)
    if problem:
        raise PackagingError(problem[:1].upper() + problem[1:] + ".")


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions.update({library: package_version(library) for library in LIBRARIES})
    return versions
