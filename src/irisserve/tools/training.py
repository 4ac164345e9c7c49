"""The Iris recipe: train the default RandomForest, score it, and package it like any other model.

The only module that names the Iris features; packaging (ONNX export, export check, manifest, atomic
write) is ``irisserve.tools.packaging``, the same path `irisserve package` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

from irisserve.tools.atomic_write import check_destination
from irisserve.tools.onnx_export import EXPORT_CHECK_POINTS
from irisserve.tools.packaging import DEFAULT_VERSION, FeatureNote, package

MODEL_NAME = "iris"
RANDOM_STATE = 42
N_ESTIMATORS = 100
TEST_SIZE = 0.2
CV_FOLDS = 5
METRICS_SOURCE = (
    f"held-out: a stratified {TEST_SIZE:.0%} of Iris (accuracy, holdout_accuracy); {CV_FOLDS}-fold cross-validation "
    "on all 150 rows (cv_accuracy_*)"
)
GRAPH_NAME = f"{MODEL_NAME}_{N_ESTIMATORS}_trees"  # today's graph name: the ONNX bytes stay identical
FEATURE_NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
FEATURE_NOTES: dict[str, FeatureNote] = {
    name: {"description": f"{name.replace('_', ' ').capitalize()} in centimetres (> 0).", "exclusive_minimum": 0}
    for name in FEATURE_NAMES
}
# The seed's examples: a setosa for /predict, and with a virginica for /predict/batch.
EXAMPLES = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
]


def new_model(random_state: int = RANDOM_STATE) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=N_ESTIMATORS, random_state=random_state)


def evaluate(features: np.ndarray, labels: np.ndarray, random_state: int = RANDOM_STATE) -> dict[str, float]:
    """Held-out accuracy on a stratified split (also as "accuracy", which every classifier has) and k-fold CV accuracy."""
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=TEST_SIZE, stratify=labels, random_state=RANDOM_STATE
    )
    holdout = float(new_model(random_state).fit(train_x, train_y).score(test_x, test_y))
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=RANDOM_STATE)
    cv_scores = cross_val_score(new_model(random_state), features, labels, cv=folds)
    return {
        "accuracy": holdout,
        "holdout_accuracy": holdout,
        "cv_accuracy_mean": float(cv_scores.mean()),
        "cv_accuracy_std": float(cv_scores.std()),
        "cv_folds": CV_FOLDS,
        "test_size": TEST_SIZE,
    }


def train(
    out_dir: Path, *, version: str = DEFAULT_VERSION, check_size: int = EXPORT_CHECK_POINTS, force: bool = False,
    random_state: int = RANDOM_STATE,
) -> dict[str, Any]:
    """Train on all of Iris (the forest seeded with ``random_state``), package it to ``out_dir`` (checked, atomic; an
    earlier artifact there is replaced only with ``force``), and return the manifest."""
    check_destination(Path(out_dir), name=MODEL_NAME, version=version, force=force)  # before the training
    iris = load_iris()
    metrics = evaluate(iris.data, iris.target, random_state)
    model = new_model(random_state).fit(iris.data, iris.target)
    # Fitted on the integer ids, as always: string labels would change the ONNX graph's bytes.
    return package(
        model,
        iris.data,
        feature_names=FEATURE_NAMES,
        target_names=[str(name) for name in iris.target_names],
        name=MODEL_NAME,
        version=version,
        out_dir=out_dir,
        feature_notes=FEATURE_NOTES,
        examples=EXAMPLES,
        metrics=metrics,
        metrics_source=METRICS_SOURCE,
        graph_name=GRAPH_NAME,
        check_size=check_size,
        force=force,
    )
