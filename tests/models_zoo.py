"""Small real scikit-learn models, each saved as a joblib file plus the CSV it was trained on (with a "target" column).

Every builder takes a folder and returns a ZooModel; they are quick (well under a second each) and
deterministic, for the packaging tests and for serving tests that need models other than Iris."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

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


# --- Typed tables (issue 15): categories, gaps, gradient-boosted trees from LightGBM, XGBoost and scikit-learn ---


def churn_table(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A churn-like table: plan and country (text, country with gaps), tenure in whole months, a fee with gaps."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "plan": rng.choice(["basic", "pro"], rows),
        "country": rng.choice(["DE", "FR", "US"], rows).astype(object),
        "tenure_months": rng.integers(0, 60, rows),
        "monthly_fee": rng.uniform(10, 100, rows).round(2),
    })
    table.loc[rng.random(rows) < 0.1, "country"] = np.nan
    table.loc[rng.random(rows) < 0.1, "monthly_fee"] = np.nan
    score = (table["plan"] == "pro") * 1.0 - table["tenure_months"] / 30 + table["monthly_fee"].fillna(50) / 50
    churned = pd.Series(np.where(score + rng.normal(0, 0.5, rows) > 0.5, "yes", "no"), name=TARGET)
    return table, churned


def churn(folder: Path) -> ZooModel:
    """Pipeline(ColumnTransformer([imputer + OneHotEncoder(handle_unknown="ignore") on text, imputer + scaler on
    numbers]), LogisticRegression), classes "no"/"yes"."""
    table, churned = churn_table()
    text = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="unknown")), ("onehot", OneHotEncoder(handle_unknown="ignore"))])
    numbers = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    columns = ColumnTransformer([("text", text, ["plan", "country"]), ("numbers", numbers, ["tenure_months", "monthly_fee"])])
    model = Pipeline([("columns", columns), ("logistic", LogisticRegression())]).fit(table, churned)
    return save(folder, "churn", model, table, churned)


def with_gaps(frame: pd.DataFrame, rate: float = 0.05, seed: int = 0) -> pd.DataFrame:
    return frame.mask(np.random.default_rng(seed).random(frame.shape) < rate)


def lgbm_classifier(folder: Path) -> ZooModel:
    """LGBMClassifier on the breast-cancer table, with gaps (LightGBM takes NaN)."""
    from lightgbm import LGBMClassifier

    data = load_breast_cancer(as_frame=True)
    table = with_gaps(data.data).rename(columns=lambda name: name.replace(" ", "_"))  # LightGBM renames "mean radius"
    model = LGBMClassifier(n_estimators=40, verbose=-1, random_state=0).fit(table, data.target)
    return save(folder, "lgbm", model, table, data.target)


def xgb_regressor(folder: Path) -> ZooModel:
    """XGBRegressor on the diabetes table, with gaps."""
    from xgboost import XGBRegressor

    data = load_diabetes(as_frame=True)
    table = with_gaps(data.data)
    model = XGBRegressor(n_estimators=40, random_state=0).fit(table, data.target)
    return save(folder, "xgb", model, table, data.target)


def hgb_classifier(folder: Path) -> ZooModel:
    """HistGradientBoostingClassifier on the wine table, with gaps."""
    data = load_wine(as_frame=True)
    table = with_gaps(data.data)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(table, data.target)
    return save(folder, "hgb", model, table, data.target)


def households_table(rows: int = 400, seed: int = 1) -> tuple[pd.DataFrame, pd.Series]:
    """Integer-coded categories beside integers and numbers: region coded 1..5, num_children 0..4, age and rooms
    whole numbers, income with gaps."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "region": rng.integers(1, 6, rows),
        "num_children": rng.integers(0, 5, rows),
        "age": rng.integers(18, 80, rows),
        "rooms": rng.integers(1, 8, rows),
        "income": rng.uniform(10, 150, rows).round(1),
    })
    table.loc[rng.random(rows) < 0.1, "income"] = np.nan
    score = np.isin(table["region"], [2, 4]) * 1.2 - table["num_children"] * 0.4 + table["income"].fillna(80) / 60 - table["age"] / 60
    bought = pd.Series(np.where(score + rng.normal(0, 0.5, rows) > 0.4, "yes", "no"), name=TARGET)
    return table, bought


def households(folder: Path) -> ZooModel:
    """Pipeline(ColumnTransformer([OneHotEncoder(handle_unknown="ignore") on region, imputer + OneHotEncoder() on
    num_children (a nested Pipeline), a scaler on age, an imputer + scaler on income; rooms passed through]),
    LogisticRegression): region and num_children are categories of integers, age and rooms stay integers."""
    table, bought = households_table()
    children = Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", OneHotEncoder())])
    income = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    columns = ColumnTransformer(
        [("region", OneHotEncoder(handle_unknown="ignore"), ["region"]), ("children", children, ["num_children"]),
         ("age", StandardScaler(), ["age"]), ("income", income, ["income"])],
        remainder="passthrough",
    )
    model = Pipeline([("columns", columns), ("logistic", LogisticRegression(max_iter=1000))]).fit(table, bought)
    return save(folder, "households", model, table, bought)


TYPED_BUILDERS = {"churn": churn, "lgbm": lgbm_classifier, "xgb": xgb_regressor, "hgb": hgb_classifier, "households": households}
