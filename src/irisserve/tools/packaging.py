"""Package a fitted scikit-learn classifier or single-output regressor as a served artifact (format_version 2).

The one path from an estimator to an artifact folder: `irisserve package` and the Iris trainer both come
here. Everything is checked, converted and compared before anything is written; the folder then appears
by one rename, or not at all."""

from __future__ import annotations

import io
import platform
import re
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
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)

from irisserve.core.artifact import (
    FORMAT_VERSION,
    ONNX_NAME,
    PICKLE_NAME,
    describe_file,
)
from irisserve.tools import onnx_export
from irisserve.tools.atomic_write import write_artifact
from irisserve.tools.errors import PackagingError, listed, one_line, root_cause
from irisserve.tools.estimators import (
    EstimatorSpec,
    check_single_output,
    inspect_estimator,
    scalar_parameters,
)
from irisserve.tools.features import (
    FeatureNote,
    check_examples,
    check_feature_names,
    check_notes,
    feature_frame,
    profile,
)

__all__ = ["DEFAULT_VERSION", "FeatureNote", "PackagingError", "default_name", "package", "package_files"]

DEFAULT_VERSION = "1.0.0"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]*")
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
REGRESSION_TARGET = "prediction"
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
    examples: Sequence[Mapping[str, float]] | None = None,
    metrics: Mapping[str, Any] | None = None,
    graph_name: str | None = None,
    check_size: int = onnx_export.EXPORT_CHECK_POINTS,
) -> dict[str, Any]:
    """Check, convert and compare ``estimator`` on ``features``, then write ``out_dir`` atomically; return the manifest.

    ``target`` (the rows' true values) adds metrics; ``target_names`` renames the classes (in ``classes_``
    order) or the regression output; ``metrics`` are added to, and override, the computed ones;
    ``graph_name`` defaults to ``name``."""
    _check_identity(name, version)
    spec = inspect_estimator(estimator)
    frame = feature_frame(features, feature_names)
    names = [str(column) for column in frame.columns]
    values = frame.to_numpy(dtype=np.float64)
    check_feature_names(estimator, spec.type_name, names)
    check_single_output(estimator, spec, onnx_export.sklearn_input(estimator, values))
    notes = check_notes(feature_notes, names, values)
    examples = check_examples(examples, names, values)
    targets = _targets(estimator, spec, target, target_names)
    scores = {**_score(estimator, spec, values, target), **(metrics or {})}

    onnx_bytes, outputs = _export(estimator, spec, len(names), graph_name or name)
    minimums = [notes.get(feature, {}).get("exclusive_minimum") for feature in names]
    check = _check_export(estimator, spec, onnx_bytes, outputs, values, minimums, check_size)
    pickle_bytes = _pickle(estimator, spec)

    def manifest_for(folder: Path) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "task": spec.task,
            "model": {"type": spec.type_name, "parameters": scalar_parameters(spec.final), "steps": spec.steps},
            "features": [profile(feature, values[:, i], notes.get(feature)) for i, feature in enumerate(names)],
            "targets": targets,
            "examples": examples,
            "metrics": scores,
            "training_rows": int(values.shape[0]),
            "libraries": _library_versions(),
            "onnx": {"input_name": onnx_export.ONNX_INPUT, "outputs": outputs, "export_check": check.as_manifest()},
            "files": {file_name: describe_file(folder / file_name) for file_name in (ONNX_NAME, PICKLE_NAME)},
        }

    try:
        return write_artifact(Path(out_dir), {ONNX_NAME: onnx_bytes, PICKLE_NAME: pickle_bytes}, manifest_for)
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
    check_size: int = onnx_export.EXPORT_CHECK_POINTS,
) -> dict[str, Any]:
    """`irisserve package`: a joblib/pickle file, and a CSV whose header names the features (plus the optional target)."""
    _check_identity(name, version)
    table = _read_csv(Path(csv_path))
    target = None
    if target_column is not None:
        if target_column not in table.columns:
            raise PackagingError(f"{csv_path} has no column {target_column!r} (--target); its columns are {listed(table.columns)}.")
        target = table.pop(target_column)
    estimator = _load_model(Path(model_path))
    return package(estimator, table, target=target, name=name, version=version, out_dir=out_dir, check_size=check_size)


def default_name(model_path: Path) -> str:
    """The model file's stem, lower-cased, each run of characters outside [a-z0-9_.-] turned into one "_"."""
    candidate = re.sub(r"[^a-z0-9_.-]+", "_", Path(model_path).stem.lower()).strip("_.-")
    if not NAME_PATTERN.fullmatch(candidate):
        raise PackagingError(f"Cannot make a model name from {Path(model_path).name!r}; pass --name (a-z, 0-9, _ . -).")
    return candidate


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise PackagingError(f"No CSV file at {path}.") from None
    except (OSError, ValueError) as exc:  # pandas' parser and decoding errors are ValueErrors
        raise PackagingError(f"Cannot read {path} as CSV: {one_line(exc)}") from None
    if table.empty:
        raise PackagingError(f"{path} has no data rows; packaging needs the training rows (or a sample of them).")
    return table


def _load_model(path: Path) -> Any:
    if not path.is_file():
        raise PackagingError(f"No model file at {path}.")
    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - unpickling raises whatever the pickled classes raise
        raise PackagingError(
            f"Cannot load {path} with joblib.load ({type(exc).__name__}: {one_line(exc)}); "
            "save the fitted estimator with joblib.dump, under the scikit-learn installed here."
        ) from None


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


def _score(estimator: Any, spec: EstimatorSpec, values: np.ndarray, target: Any | None) -> dict[str, float]:
    """Accuracy (classifier) or r2, mae, rmse (regressor) on the given rows; none without a target."""
    if target is None:
        return {}
    truth = np.asarray(target).reshape(-1)
    if len(truth) != len(values):
        raise PackagingError(f"The target has {len(truth)} values for {len(values)} rows.")
    predicted = estimator.predict(onnx_export.sklearn_input(estimator, values))
    if spec.task == "classification":
        classes = np.asarray(estimator.classes_)
        unknown = pd.unique(truth[~np.isin(truth, classes)])
        if len(unknown):
            raise PackagingError(
                f"The target holds {listed(list(unknown))}, which {spec.label} does not predict (its classes: {listed(list(classes))})."
            )
        return {"accuracy": float(accuracy_score(truth, predicted))}
    if not pd.api.types.is_numeric_dtype(truth) or not np.isfinite(truth.astype(np.float64)).all():
        raise PackagingError("A regressor's target must be finite numbers; fill or drop the rows with missing targets.")
    return {
        "r2": float(r2_score(truth, predicted)),
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(root_mean_squared_error(truth, predicted)),
    }


def _export(estimator: Any, spec: EstimatorSpec, n_features: int, graph_name: str) -> tuple[bytes, dict[str, str]]:
    """The ONNX bytes, and the manifest's name for the output the server reads."""
    classifier = spec.final if spec.task == "classification" else None
    try:
        model = onnx_export.convert(estimator, n_features=n_features, classifier=classifier, graph_name=graph_name)
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many types, often with the whole node attached
        raise PackagingError(
            f"Cannot package {spec.label}: skl2onnx {skl2onnx.__version__} failed to convert it ({root_cause(exc)})."
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
    values: np.ndarray,
    minimums: Sequence[float | None],
    check_size: int,
) -> onnx_export.ExportCheck:
    """ONNX Runtime vs scikit-learn on every row and on random points around them; refuse any disagreement."""
    try:
        session = onnx_export.new_session(onnx_bytes)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise PackagingError(f"Cannot package {spec.label}: ONNX Runtime cannot load its graph ({one_line(exc)}).") from None
    points = onnx_export.check_points(values, check_size, exclusive_minimums=minimums)
    if spec.task == "classification":
        check = onnx_export.compare_classifier(estimator, session, points)
        figures = (
            f"{check.label_mismatches} label mismatches, largest probability difference "
            f"{check.max_probability_difference:.2e} (allowed {check.tolerance:.0e})"
        )
    else:
        check = onnx_export.compare_regressor(estimator, session, outputs["prediction"], points, len(values))
        figures = f"largest difference {check.max_abs_difference:.3g} (allowed {check.tolerance:.3g})"
    if not check.passed:
        raise PackagingError(
            f"Cannot package {spec.label}: its ONNX export disagrees with scikit-learn on {check.rows_checked} points: "
            f"{figures}. Nothing was written."
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
    if not NAME_PATTERN.fullmatch(name):
        raise PackagingError(f"Model name {name!r} is not allowed; use [a-z0-9][a-z0-9_.-]* (it names the model in URLs).")
    if not VERSION_PATTERN.fullmatch(version):
        raise PackagingError(f"Version {version!r} is not allowed; use letters, digits and _ . + - (it names a folder).")


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions.update({library: package_version(library) for library in LIBRARIES})
    return versions
