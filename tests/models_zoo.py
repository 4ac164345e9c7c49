"""Small real scikit-learn models, each saved as a joblib file plus the CSV it was trained on (with a "target" column).

Every builder takes a folder and returns a ZooModel; they are quick (well under a second each) and
deterministic, for the packaging tests and for serving tests that need models other than Iris."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import joblib
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

TARGET = "target"
WINE_TREES = 50  # enough for a realistic forest, few enough to keep the export check quick


class ZooModel(NamedTuple):
    model_path: Path
    csv_path: Path
    estimator: Any
    features: pd.DataFrame
    target: pd.Series


def save(folder: Path, name: str, estimator: Any, features: pd.DataFrame, target: pd.Series) -> ZooModel:
    """``estimator`` to <name>.joblib and the features plus a "target" column to <name>.csv (no index column)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path, csv_path = folder / f"{name}.joblib", folder / f"{name}.csv"
    joblib.dump(estimator, model_path)
    features.assign(**{TARGET: target}).to_csv(csv_path, index=False)
    return ZooModel(model_path, csv_path, estimator, features, target)


def wine(folder: Path) -> ZooModel:
    """RandomForestClassifier on the 13 wine measurements, classes 0, 1, 2."""
    data = load_wine(as_frame=True)
    model = RandomForestClassifier(n_estimators=WINE_TREES, random_state=0).fit(data.data, data.target)
    return save(folder, "wine", model, data.data, data.target)


def diabetes(folder: Path) -> ZooModel:
    """GradientBoostingRegressor on the 10 diabetes features (disease progression, 25 to 346)."""
    data = load_diabetes(as_frame=True)
    model = GradientBoostingRegressor(random_state=0).fit(data.data, data.target)
    return save(folder, "diabetes", model, data.data, data.target)


def breast_cancer_pipeline(folder: Path) -> ZooModel:
    """Pipeline(StandardScaler, LogisticRegression) on 30 features whose names have spaces ("mean radius")."""
    data = load_breast_cancer(as_frame=True)
    model = Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression(max_iter=1000))])
    model.fit(data.data, data.target)
    return save(folder, "breast_cancer", model, data.data, data.target)


BUILDERS = {"wine": wine, "diabetes": diabetes, "breast_cancer": breast_cancer_pipeline}
