"""Train the Iris model and export the artifact; the only module (with the sklearn backend) that imports scikit-learn."""

from __future__ import annotations

import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

from irisserve.core.artifact import FORMAT_VERSION, ONNX_NAME, PICKLE_NAME, describe_file, write_manifest
from irisserve.core.errors import ArtifactError
from irisserve.core.predictor import decide
from irisserve.core.schemas import FEATURE_NAMES

MODEL_NAME = "iris"
DEFAULT_VERSION = "1.0.0"
RANDOM_STATE = 42
N_ESTIMATORS = 100
TEST_SIZE = 0.2
CV_FOLDS = 5
EXPORT_CHECK_POINTS = 100_000
EXPORT_PROBABILITY_TOLERANCE = 1e-5
ONNX_INPUT = "input"
ONNX_PROBABILITIES = "probabilities"
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "joblib")


@dataclass(frozen=True)
class ExportCheck:
    rows_checked: int
    label_mismatches: int
    max_probability_difference: float


def new_model() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=N_ESTIMATORS, random_state=RANDOM_STATE)


def evaluate(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Held-out accuracy on a stratified split and k-fold cross-validation accuracy."""
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=TEST_SIZE, stratify=labels, random_state=RANDOM_STATE
    )
    holdout = new_model().fit(train_x, train_y).score(test_x, test_y)
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=RANDOM_STATE)
    cv_scores = cross_val_score(new_model(), features, labels, cv=folds)
    return {
        "holdout_accuracy": float(holdout),
        "cv_accuracy_mean": float(cv_scores.mean()),
        "cv_accuracy_std": float(cv_scores.std()),
        "cv_folds": CV_FOLDS,
        "test_size": TEST_SIZE,
    }


def export_onnx(model: RandomForestClassifier) -> bytes:
    """The model as ONNX with a plain probability tensor (no ZipMap), byte-identical for an identical model."""
    onnx_model = convert_sklearn(
        model,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, len(FEATURE_NAMES)]))],
        options={id(model): {"zipmap": False}},
        name=f"{MODEL_NAME}_{N_ESTIMATORS}_trees",  # skl2onnx otherwise names the graph with a random UUID
    )
    output_names = [output.name for output in onnx_model.graph.output]
    if ONNX_PROBABILITIES not in output_names:
        raise ArtifactError(f"skl2onnx produced outputs {output_names}, without {ONNX_PROBABILITIES!r}.")
    return onnx_model.SerializeToString()


def check_points(features: np.ndarray, n_points: int, seed: int = RANDOM_STATE) -> np.ndarray:
    """Every training row plus random points spanning, and reaching half a range beyond, each feature's range."""
    low, high = features.min(axis=0), features.max(axis=0)
    span = high - low
    rng = np.random.default_rng(seed)
    random_points = rng.uniform(np.maximum(low - span / 2, 0.01), high + span / 2, size=(n_points, features.shape[1]))
    return np.vstack([features, random_points]).astype(np.float32)


def check_export(model: RandomForestClassifier, onnx_bytes: bytes, points: np.ndarray) -> ExportCheck:
    """Compare ONNX Runtime's answers with scikit-learn's; raise ArtifactError on any disagreement."""
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_probabilities = session.run([ONNX_PROBABILITIES], {ONNX_INPUT: points})[0]
    sklearn_probabilities = model.predict_proba(points)
    onnx_labels = [decide(row)[1] for row in onnx_probabilities.tolist()]
    mismatches = int((np.array(onnx_labels) != model.predict(points)).sum())
    difference = float(np.abs(onnx_probabilities - sklearn_probabilities).max())
    check = ExportCheck(len(points), mismatches, difference)
    if mismatches or difference > EXPORT_PROBABILITY_TOLERANCE:
        raise ArtifactError(
            f"The ONNX export disagrees with scikit-learn on {len(points)} points: {mismatches} label mismatches, "
            f"largest probability difference {difference:.2e} (allowed {EXPORT_PROBABILITY_TOLERANCE:.0e}). "
            "No artifact was written."
        )
    return check


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions.update({name: package_version(name) for name in LIBRARIES})
    return versions


def build_manifest(
    *,
    version: str,
    model: RandomForestClassifier,
    features: np.ndarray,
    target_names: list[str],
    metrics: dict[str, float],
    check: ExportCheck,
    folder: Path,
) -> dict[str, Any]:
    parameters = {key: value for key, value in model.get_params().items() if isinstance(value, (int, float, str, bool, type(None)))}
    return {
        "format_version": FORMAT_VERSION,
        "name": MODEL_NAME,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"type": type(model).__name__, "parameters": parameters},
        "features": [
            {"name": name, "min": float(features[:, i].min()), "max": float(features[:, i].max())}
            for i, name in enumerate(FEATURE_NAMES)
        ],
        "target_names": target_names,
        "metrics": metrics,
        "training_rows": int(features.shape[0]),
        "libraries": _library_versions(),
        "onnx": {
            "input_name": ONNX_INPUT,
            "probabilities_output": ONNX_PROBABILITIES,
            "export_check": {
                "rows_checked": check.rows_checked,
                "label_mismatches": check.label_mismatches,
                "max_probability_difference": check.max_probability_difference,
            },
        },
        "files": {name: describe_file(folder / name) for name in (ONNX_NAME, PICKLE_NAME)},
    }


def train(out_dir: Path, *, version: str = DEFAULT_VERSION, check_size: int = EXPORT_CHECK_POINTS) -> dict[str, Any]:
    """Train, check the export, and write the artifact to ``out_dir`` atomically; return the manifest."""
    iris = load_iris()
    features, labels = iris.data, iris.target
    metrics = evaluate(features, labels)
    model = new_model().fit(features, labels)
    onnx_bytes = export_onnx(model)
    check = check_export(model, onnx_bytes, check_points(features, check_size))

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a non-root server must read it
    try:
        (staging / ONNX_NAME).write_bytes(onnx_bytes)
        joblib.dump(model, staging / PICKLE_NAME)
        manifest = build_manifest(
            version=version,
            model=model,
            features=features,
            target_names=[str(name) for name in iris.target_names],
            metrics=metrics,
            check=check,
            folder=staging,
        )
        write_manifest(staging, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
