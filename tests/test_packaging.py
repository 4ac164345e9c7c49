"""`irisserve package`: any fitted classifier or single-output regressor to a served artifact, as real processes.

The zoo (wine forest, diabetes boosting, breast-cancer Pipeline) is packaged once per module by the CLI;
refusals run the CLI too, since their promise is about the process: one stderr line, exit 2, no folder.
`irisserve train` goes through the same code and must still give today's ONNX bytes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import models_zoo
import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from irisserve.core.artifact import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ONNX_NAME,
    PICKLE_NAME,
    sha256_file,
)
from irisserve.core.predictor import Predictor, decide
from irisserve.tools import atomic_write, onnx_export
from irisserve.tools.estimators import encoded_columns
from irisserve.tools.errors import PackagingError
from irisserve.tools.features import bins
from irisserve.tools.packaging import default_name, package
from support import run_cli

IRISSERVE = Path(sys.executable).parent / "irisserve"
# sha256 of models/iris/1.0.0/model.onnx as `irisserve train` wrote it before packaging existed.
GOLDEN_IRIS_ONNX_SHA256 = "37be48b594444bf1eab8f18094b6a8544933bbc334ef9038a3f7f31832887c19"
CLI_TIMEOUT_S = 120
SMALL_CHECK = 2_000  # in-process tests only: the CLI runs always check >= 100,000 points


@dataclass
class Packaged:
    zoo: models_zoo.ZooModel
    out: Path
    result: subprocess.CompletedProcess[str]

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.out / MANIFEST_NAME).read_text())


def run_irisserve(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script itself, as a user runs it."""
    return subprocess.run(
        [str(IRISSERVE), *map(str, args)], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=cwd, check=False
    )


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, models_zoo.ZooModel]:
    folder = tmp_path_factory.mktemp("zoo")
    return {name: build(folder) for name, build in models_zoo.BUILDERS.items()}


@pytest.fixture(scope="module")
def packaged(zoo: dict[str, models_zoo.ZooModel], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Packaged]:
    """Each zoo model packaged by its own `irisserve package` process, the three running side by side."""
    root = tmp_path_factory.mktemp("packaged")
    processes = {
        name: (
            root / "models" / name / "1.0.0",
            subprocess.Popen(
                [str(IRISSERVE), "package", "--model", str(model.model_path), "--data", str(model.csv_path), "--target", "target"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
            ),
        )
        for name, model in zoo.items()
    }
    results = {}
    for name, (out, process) in processes.items():
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
        results[name] = Packaged(zoo[name], out, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


ZOO = ["wine", "diabetes", "breast_cancer"]


@pytest.mark.parametrize("name", ZOO)
def test_package_writes_the_artifact_and_one_summary_line(packaged: dict[str, Packaged], name: str) -> None:
    run = packaged[name]
    assert run.result.returncode == 0, run.result.stderr
    assert "Traceback" not in run.result.stderr
    lines = run.result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Wrote models/{name}/1.0.0: {name} 1.0.0, ")
    assert "ONNX checked on" in lines[0] and lines[0].endswith(" s")
    assert sorted(path.name for path in run.out.iterdir()) == [MANIFEST_NAME, ONNX_NAME, PICKLE_NAME]
    assert [path.name for path in run.out.parent.iterdir()] == ["1.0.0"]  # no staging folder left beside it


@pytest.mark.parametrize("name", ZOO)
def test_manifest_describes_model_data_and_files(packaged: dict[str, Packaged], name: str) -> None:
    run, manifest = packaged[name], packaged[name].manifest
    features, target = run.zoo.features, run.zoo.target
    assert manifest["format_version"] == FORMAT_VERSION
    assert (manifest["name"], manifest["version"]) == (name, "1.0.0")
    assert [f["name"] for f in manifest["features"]] == list(features.columns)
    for entry in manifest["features"]:
        column = features[entry["name"]].to_numpy(dtype=float)
        assert entry["type"] == "number"
        assert (entry["min"], entry["max"]) == (column.min(), column.max())
        edges, shares = entry["bins"]["edges"], entry["bins"]["shares"]
        assert 1 <= len(edges) <= 9 and np.all(np.diff(edges) > 0)
        assert len(shares) == len(edges) + 1 and sum(shares) == pytest.approx(1.0)
        placed = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(shares))
        assert shares == pytest.approx(list(placed / len(column)))
    assert manifest["examples"] == [{column: float(value) for column, value in row.items()} for _, row in features.iloc[:2].iterrows()]
    assert manifest["training_rows"] == len(features)
    assert {"python", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "joblib"} <= set(manifest["libraries"])
    for file_name in (ONNX_NAME, PICKLE_NAME):
        path = run.out / file_name
        assert manifest["files"][file_name] == {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    assert manifest["onnx"]["input_name"] == "input"
    assert manifest["onnx"]["export_check"]["rows_checked"] >= 100_000 + len(features)

    predicted = run.zoo.estimator.predict(features)
    check = manifest["onnx"]["export_check"]
    if name == "diabetes":
        assert manifest["task"] == "regression" and manifest["targets"] == ["target"]
        assert manifest["onnx"]["outputs"] == {"prediction": "variable"}
        assert manifest["metrics"] == pytest.approx(
            {"r2": r2_score(target, predicted), "mae": mean_absolute_error(target, predicted),
             "rmse": root_mean_squared_error(target, predicted)}
        )
        assert manifest["metrics_source"] == f"in-sample: the packaging data, {len(features)} rows"
        assert check["label_mismatches"] is None and check["max_probability_difference"] is None
        scale = max(1.0, float(np.abs(predicted).max()))
        assert check["tolerance"] == pytest.approx(onnx_export.REGRESSION_RELATIVE_TOLERANCE * scale, rel=0.01)
        assert 0 <= check["max_abs_difference"] <= check["tolerance"]
    else:
        assert manifest["task"] == "classification"
        assert manifest["targets"] == [str(label) for label in run.zoo.estimator.classes_]
        assert manifest["onnx"]["outputs"] == {"probabilities": "probabilities"}
        f1 = (
            {"f1": f1_score(target, predicted, pos_label=run.zoo.estimator.classes_[1])}
            if len(run.zoo.estimator.classes_) == 2
            else {"f1_macro": f1_score(target, predicted, average="macro")}
        )
        assert manifest["metrics"] == pytest.approx({"accuracy": accuracy_score(target, predicted), **f1})
        assert manifest["metrics_source"] == f"in-sample: the packaging data, {len(features)} rows"
        assert check["label_mismatches"] == 0 and check["max_abs_difference"] is None
        assert check["tolerance"] == onnx_export.PROBABILITY_TOLERANCE
        assert 0 <= check["max_probability_difference"] <= check["tolerance"]


def test_manifest_records_model_type_steps_and_scalar_parameters(packaged: dict[str, Packaged]) -> None:
    wine, pipeline = packaged["wine"].manifest["model"], packaged["breast_cancer"].manifest["model"]
    assert wine["type"] == "RandomForestClassifier" and wine["steps"] == ["RandomForestClassifier"]
    assert wine["parameters"]["n_estimators"] == models_zoo.WINE_TREES and wine["parameters"]["random_state"] == 0
    assert pipeline["type"] == "Pipeline" and pipeline["steps"] == ["StandardScaler", "LogisticRegression"]
    assert pipeline["parameters"]["max_iter"] == 1000  # the final step's own parameters
    assert all(isinstance(value, (int, float, str, bool, type(None))) for value in pipeline["parameters"].values())


@pytest.mark.parametrize("name", ZOO)
def test_onnx_runtime_on_the_csv_rows_agrees_with_the_estimator(packaged: dict[str, Packaged], name: str) -> None:
    run, manifest = packaged[name], packaged[name].manifest
    rows = pd.read_csv(run.zoo.csv_path).drop(columns="target")
    session = onnxruntime.InferenceSession(str(run.out / ONNX_NAME), providers=["CPUExecutionProvider"])
    output = next(iter(manifest["onnx"]["outputs"].values()))
    answers = session.run([output], {"input": rows.to_numpy(dtype=np.float32)})[0]
    expected = run.zoo.estimator.predict(rows)
    if manifest["task"] == "regression":
        difference = np.abs(answers.reshape(-1) - expected).max()
        assert difference <= manifest["onnx"]["export_check"]["tolerance"]
    else:
        labels = [manifest["targets"][decide(row)[1]] for row in answers.tolist()]
        assert labels == [str(label) for label in expected]
        assert np.abs(answers - run.zoo.estimator.predict_proba(rows)).max() <= 1e-5


def test_pipeline_graph_has_no_zipmap_and_is_named_after_the_model(packaged: dict[str, Packaged]) -> None:
    graph = onnx.load(str(packaged["breast_cancer"].out / ONNX_NAME)).graph
    assert [output.name for output in graph.output] == ["label", "probabilities"]
    assert "ZipMap" not in {node.op_type for node in graph.node}
    assert graph.name == "breast_cancer"


def test_pickle_is_the_fitted_estimator(packaged: dict[str, Packaged]) -> None:
    run = packaged["diabetes"]
    copy = joblib.load(run.out / PICKLE_NAME)
    assert np.array_equal(copy.predict(run.zoo.features), run.zoo.estimator.predict(run.zoo.features))


def test_manifest_is_accepted_by_the_servers_reader(packaged: dict[str, Packaged]) -> None:
    from irisserve.core.artifact import load_verified_manifest

    for run in packaged.values():
        load_verified_manifest(run.out)


def test_csv_without_target_packages_without_metrics_into_the_default_folder(
    zoo: dict[str, models_zoo.ZooModel], tmp_path: Path
) -> None:
    csv_path = tmp_path / "Wine Features.csv"
    zoo["wine"].features.to_csv(csv_path, index=False)
    model_path = tmp_path / "Wine Model (v2).joblib"
    model_path.write_bytes(zoo["wine"].model_path.read_bytes())
    result = run_irisserve("package", "--model", model_path, "--data", csv_path, "--version", "2.0.0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no metrics" in result.stdout
    manifest = json.loads((tmp_path / "models" / "wine_model_v2" / "2.0.0" / MANIFEST_NAME).read_text())
    assert manifest["metrics"] == {} and manifest["targets"] == ["0", "1", "2"] and "metrics_source" not in manifest
    assert (manifest["name"], manifest["version"]) == ("wine_model_v2", "2.0.0")


# --- refusals: one line on stderr, exit 2, no folder -----------------------------------------------------


def _multi_output(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["diabetes"]
    model = LinearRegression().fit(data.features, np.c_[data.target, data.target * 2])
    joblib.dump(model, folder / "two_targets.joblib")
    return ["--model", str(folder / "two_targets.joblib"), "--data", str(data.csv_path), "--target", "target"]


def _no_converter(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["diabetes"]
    model = Pipeline([("scale", StandardScaler()), ("kr", KernelRidge())]).fit(data.features, data.target)
    joblib.dump(model, folder / "kernel_ridge.joblib")
    return ["--model", str(folder / "kernel_ridge.joblib"), "--data", str(data.csv_path), "--target", "target"]


def _clustering(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    joblib.dump(KMeans(n_clusters=3, n_init=1, random_state=0).fit(data.features), folder / "kmeans.joblib")
    return ["--model", str(folder / "kmeans.joblib"), "--data", str(data.csv_path), "--target", "target"]


def _feature_mismatch(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["diabetes"]
    data.features.rename(columns={"bmi": "BMI"}).assign(target=data.target).to_csv(folder / "renamed.csv", index=False)
    return ["--model", str(data.model_path), "--data", str(folder / "renamed.csv"), "--target", "target"]


def _missing_target(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--target", "quality"]


def _eval_missing_column(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    data.features.drop(columns="alcohol").assign(target=data.target).to_csv(folder / "held_out.csv", index=False)
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--target", "target", "--eval-data", str(folder / "held_out.csv")]


def _eval_missing_target(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    data.features.assign(label=data.target).to_csv(folder / "held_out.csv", index=False)
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--target", "target", "--eval-data", str(folder / "held_out.csv")]


def _eval_wrong_target(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    data.features.assign(target=data.target + 7).to_csv(folder / "held_out.csv", index=False)
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--target", "target", "--eval-data", str(folder / "held_out.csv")]


def _eval_text_for_numbers(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["diabetes"]
    data.features.assign(bmi="high", target=data.target).to_csv(folder / "held_out.csv", index=False)
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--target", "target", "--eval-data", str(folder / "held_out.csv")]


def _eval_unreadable(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    (folder / "held_out.csv").write_bytes(b"\xff\xfe\x00not a csv")
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--target", "target", "--eval-data", str(folder / "held_out.csv")]


def _eval_absent(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--target", "target", "--eval-data", str(folder / "none.csv")]


def _eval_without_target(folder: Path, zoo: dict[str, models_zoo.ZooModel]) -> list[str]:
    data = zoo["wine"]
    return ["--model", str(data.model_path), "--data", str(data.csv_path), "--eval-data", str(data.csv_path)]


REFUSALS: dict[str, tuple[Callable[[Path, dict[str, models_zoo.ZooModel]], list[str]], list[str]]] = {
    "multi-output regressor": (_multi_output, ["LinearRegression", "2 outputs per row"]),
    "no skl2onnx converter": (_no_converter, ["KernelRidge (step 'kr' of the Pipeline)", "no converter"]),
    "clustering model": (_clustering, ["KMeans", "clustering"]),
    "feature names differ": (_feature_mismatch, ["GradientBoostingRegressor", "missing 'bmi'", "unexpected 'BMI'"]),
    "missing target column": (_missing_target, ["no column 'quality'", "--target"]),
    "eval data lacks a feature": (_eval_missing_column, ["held_out.csv (--eval-data)", "lacks", "'alcohol'"]),
    "eval data lacks the target": (_eval_missing_target, ["held_out.csv (--eval-data)", "no column 'target'", "its columns are"]),
    "eval data has other classes": (_eval_wrong_target, ["held_out.csv (--eval-data)", "holds '7', '8', '9'", "its classes: '0', '1', '2'"]),
    "eval data has text for a number": (_eval_text_for_numbers, ["held_out.csv (--eval-data)", "'bmi'", "text"]),
    "eval data unreadable": (_eval_unreadable, ["Cannot read", "held_out.csv"]),
    "eval data absent": (_eval_absent, ["No CSV file", "none.csv"]),
    "eval data without --target": (_eval_without_target, ["--eval-data needs --target"]),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_package_refuses_with_one_line_and_writes_nothing(
    zoo: dict[str, models_zoo.ZooModel], tmp_path: Path, case: str
) -> None:
    make_args, phrases = REFUSALS[case]
    out = tmp_path / "refused" / "model" / "1.0.0"
    result = run_cli("package", *make_args(tmp_path, zoo), "--out", out, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("irisserve: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0]
    assert not (tmp_path / "refused").exists()


# --- in process: the refusals and guarantees that need no separate process ---------------------------------


def _wine(zoo: dict[str, models_zoo.ZooModel]) -> tuple[Any, pd.DataFrame]:
    return zoo["wine"].estimator, zoo["wine"].features


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda f: f.assign(ash=f["ash"].where(f.index != 3, np.nan)), "missing values in 'ash': fill them, or add an imputer"),
        (lambda f: f.assign(hue=np.inf), "'hue' have infinite values"),
        (lambda f: f.assign(color_intensity=f["color_intensity"].astype(str)), "Columns 'color_intensity' hold text: the model must encode them itself"),
        (lambda f: f[list(f.columns[::-1])], "same columns in another order"),
    ],
)
def test_bad_feature_tables_are_refused(
    zoo: dict[str, models_zoo.ZooModel], tmp_path: Path, change: Callable[[pd.DataFrame], pd.DataFrame], phrase: str
) -> None:
    estimator, features = _wine(zoo)
    with pytest.raises(PackagingError, match=re.escape(phrase)):
        package(estimator, change(features), name="wine", out_dir=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_that_disagrees_is_refused_before_anything_is_written(
    zoo: dict[str, models_zoo.ZooModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    diabetes = zoo["diabetes"]
    impostor = LinearRegression().fit(diabetes.features, diabetes.target)
    real_convert = onnx_export.convert
    monkeypatch.setattr(onnx_export, "convert", lambda estimator, **kw: real_convert(impostor, **kw))
    with pytest.raises(PackagingError, match=r"GradientBoostingRegressor: its ONNX export disagrees .* largest difference"):
        package(diabetes.estimator, diabetes.features, name="diabetes", out_dir=tmp_path / "a" / "b", check_size=SMALL_CHECK)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_folder_staging_or_new_parents(
    zoo: dict[str, models_zoo.ZooModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(folder: Path, data: dict[str, Any]) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_write, "write_manifest", disk_full)
    estimator, features = _wine(zoo)
    with pytest.raises(PackagingError, match="No space left on device"):
        package(estimator, features, name="wine", out_dir=tmp_path / "new" / "wine" / "1.0.0", check_size=SMALL_CHECK)
    assert list(tmp_path.iterdir()) == []


def test_packaging_again_needs_force_and_replaces_only_its_own_files(zoo: dict[str, models_zoo.ZooModel], tmp_path: Path) -> None:
    estimator, features = _wine(zoo)
    out = tmp_path / "wine" / "1.0.0"
    first = package(estimator, features, name="wine", out_dir=out, check_size=SMALL_CHECK)
    with pytest.raises(PackagingError, match="pass --force"):
        package(estimator, features, name="wine", out_dir=out, check_size=SMALL_CHECK)
    manifest = package(estimator, features, name="wine", out_dir=out, metrics={"accuracy": 0.5}, check_size=SMALL_CHECK, force=True)
    assert sorted(path.name for path in out.iterdir()) == [MANIFEST_NAME, ONNX_NAME, PICKLE_NAME]
    assert [path.name for path in out.parent.iterdir()] == ["1.0.0"]
    assert json.loads((out / MANIFEST_NAME).read_text())["metrics"] == manifest["metrics"] == {"accuracy": 0.5}
    assert manifest["supersedes"] == "1.0.0" and "supersedes" not in first
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(PackagingError, match="irisserve did not write .*'notes.txt'"):
        package(estimator, features, name="wine", out_dir=out, check_size=SMALL_CHECK, force=True)
    assert (out / "notes.txt").read_text() == "the user's"


@pytest.mark.parametrize(
    ("file_name", "name"),
    [("wine.joblib", "wine"), ("My Wine Model (v2).pkl", "my_wine_model_v2"), ("__RF-2024.07__.joblib", "rf-2024.07")],
)
def test_default_name_is_the_file_stem_reduced_to_a_model_name(file_name: str, name: str) -> None:
    assert default_name(Path("somewhere") / file_name) == name


def test_bins_are_deciles_with_shares_by_the_right_side_rule() -> None:
    assert bins(np.arange(100.0)) == {
        "edges": pytest.approx([9.9, 19.8, 29.7, 39.6, 49.5, 59.4, 69.3, 79.2, 89.1]),
        "shares": pytest.approx([0.1] * 10),
    }
    assert bins(np.full(20, 3.0)) == {"edges": [3.0], "shares": [0.0, 1.0]}  # duplicates removed; x >= edge


def test_check_points_respect_exclusive_minimums_and_exceed_the_range() -> None:
    data = load_diabetes().data
    data = data - data.min(axis=0) + 0.001  # all positive, close to 0: the half-range below would cross it
    points = onnx_export.check_points(data, 20_000, exclusive_minimums=[0.0] * 5 + [None] * 5)
    assert points.dtype == np.float32 and len(points) == 20_000 + len(data)
    assert (points[:, :5] > 0).all() and (points[:, 5:] < 0).any()
    assert (points.max(axis=0) > data.max(axis=0)).all()


def test_vectorised_labels_follow_decide_on_ties_and_near_ties() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=5_000).astype(np.float32)
    probabilities[:500] = [0.5, 0.5, 0.0]
    probabilities[500:1000] = [0.3333333, 0.3333334, 0.3333333]
    probabilities[1000:1500] = [0.1, 0.4499999, 0.45]
    expected = [decide(row)[1] for row in probabilities.tolist()]
    assert onnx_export.decided_labels(probabilities).tolist() == expected


# --- Iris: the default artifact, through the same path -----------------------------------------------------


def test_train_writes_todays_iris_onnx_bytes_through_packaging(tmp_path: Path) -> None:
    out = tmp_path / "iris" / "1.0.0"
    result = run_irisserve("train", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ONNX checked on 100150 points: 0 label mismatches" in result.stdout
    assert hashlib.sha256((out / ONNX_NAME).read_bytes()).hexdigest() == GOLDEN_IRIS_ONNX_SHA256
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["targets"] == [str(name) for name in load_iris().target_names]
    assert manifest["metrics"]["accuracy"] == manifest["metrics"]["holdout_accuracy"]


@pytest.mark.parametrize("name", ["wine", "diabetes"])
def test_eval_data_metrics_are_computed_on_the_held_out_rows_and_say_so(
    zoo: dict[str, models_zoo.ZooModel], tmp_path: Path, name: str
) -> None:
    """--eval-data: the metrics are the model's on the held-out file (not the packaging CSV), recorded with their
    source in the manifest, /model/info's body and the summary line."""
    from irisserve.core.artifact import read_manifest
    from irisserve.core.predictor import Predictor
    from irisserve.core.schemas import model_info_body

    model = zoo[name]
    held_out = model.features.sample(frac=0.4, random_state=1)
    held_out = held_out + np.random.default_rng(0).normal(0, held_out.std() / 4, held_out.shape)  # not the training rows
    truth = model.target.loc[held_out.index]
    held_out.assign(target=truth).to_csv(tmp_path / "Held Out.csv", index=False)
    out = tmp_path / "artifact"
    result = run_cli("package", "--model", model.model_path, "--data", model.csv_path, "--target", "target",
                     "--eval-data", tmp_path / "Held Out.csv", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    source = f"held-out: Held Out.csv, {len(held_out)} rows"
    assert f"({source})" in result.stdout
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    predicted = model.estimator.predict(held_out)
    if name == "wine":
        want = {"accuracy": accuracy_score(truth, predicted), "f1_macro": f1_score(truth, predicted, average="macro")}
        assert want["accuracy"] < 1.0  # the in-sample figure is 1.0: these are the held-out rows'
    else:
        want = {"r2": r2_score(truth, predicted), "mae": mean_absolute_error(truth, predicted),
                "rmse": root_mean_squared_error(truth, predicted)}
    assert manifest["metrics"] == pytest.approx(want)
    assert manifest["metrics_source"] == source
    assert read_manifest(out).data.metrics_source == source
    info = model_info_body(Predictor(out))
    assert info["metrics"] == pytest.approx(want) and info["metrics_source"] == source


# --- Integer columns the model one-hot (or ordinal) encodes are categories of integers -----------------------------


def integer_table(rows: int = 300, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "region": rng.integers(1, 6, rows), "kids": rng.integers(0, 5, rows), "floor": rng.integers(0, 4, rows),
        "level": rng.integers(1, 4, rows), "age": rng.integers(18, 80, rows), "rooms": rng.integers(1, 8, rows),
        "income": rng.uniform(10, 150, rows).round(1),
    })
    score = np.isin(table["region"], [2, 4]) - table["kids"] * 0.3 + table["income"] / 100 + table["floor"] * 0.2
    return table, np.where(score + rng.normal(0, 0.4, rows) > 0.6, "yes", "no")


def test_encoded_integers_become_categories_and_the_rest_stay_integers(tmp_path: Path) -> None:
    """OneHotEncoder (directly, or after an imputer in a nested Pipeline) and OrdinalEncoder make categories of the
    encoder's integers; a column also read as a number, or passed through, stays an integer. Both backends answer as
    the forest does, unseen values included."""
    table, target = integer_table()
    kids = Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", OneHotEncoder(drop="first"))])
    columns = ColumnTransformer(
        [("region", OneHotEncoder(handle_unknown="ignore"), ["region"]), ("kids", kids, ["kids"]),
         ("floor", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["floor"]),
         ("level", OneHotEncoder(handle_unknown="ignore"), ["level"]), ("level_as_number", "passthrough", ["level"])],
        remainder="passthrough",  # age, rooms, income: a forest needs no scaling (test_typed_models' households scales)
    )
    model = Pipeline([("columns", columns), ("forest", RandomForestClassifier(n_estimators=20, random_state=0))]).fit(table, target)
    manifest = package(model, table, name="households", out_dir=tmp_path / "artifact", check_size=SMALL_CHECK)
    kinds = {f["name"]: (f["type"], f.get("categories"), f.get("unknown")) for f in manifest["features"]}
    assert kinds == {
        "region": ("category", [1, 2, 3, 4, 5], "ignore"), "kids": ("category", [0, 1, 2, 3, 4], "error"),
        "floor": ("category", [0, 1, 2, 3], "ignore"), "level": ("integer", None, None), "age": ("integer", None, None),
        "rooms": ("integer", None, None), "income": ("number", None, None),
    }
    assert manifest["onnx"]["export_check"]["label_mismatches"] == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "artifact" / ONNX_NAME), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(int64)"] * 3 + ["tensor(float)"] * 4
    rows = table.head(20).assign(region=[9] * 5 + list(table["region"][5:20]), floor=[7] * 3 + list(table["floor"][3:20]))
    for backend in ("onnx", "sklearn"):
        predictor = Predictor(tmp_path / "artifact", backend=backend)  # type: ignore[arg-type]
        predictor.load()
        matrix, categories = predictor.spec.encode(rows.astype(object).values.tolist())
        answers = predictor.predict(matrix, categories)
        assert np.abs(np.asarray(answers.probabilities) - model.predict_proba(rows)).max() <= 1e-5  # type: ignore[union-attr]


def test_integers_read_as_numbers_stay_integers(tmp_path: Path) -> None:
    """A forest fed the integers directly, and a scaler before a logistic regression: integers, one float32 input."""
    table, target = integer_table()
    for name, model in [("forest", RandomForestClassifier(n_estimators=10, random_state=0)),
                        ("logistic", Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression())]))]:
        manifest = package(model.fit(table, target), table, name=name, out_dir=tmp_path / name, check_size=SMALL_CHECK)
        assert [f["type"] for f in manifest["features"]] == ["integer"] * 6 + ["number"]
        assert "inputs" not in manifest["onnx"]


def test_encoded_columns_follow_every_column_selection() -> None:
    """Which raw columns a fitted Pipeline reads only through encoders, however its ColumnTransformer selects them."""
    table = pd.DataFrame({"a": [1, 2, 3, 1, 2, 3], "b": [0, 1, 0, 1, 0, 1], "c": [5, 6, 7, 5, 6, 7], "x": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    target = [0, 1, 0, 1, 0, 1]
    a, b, c = [1, 2, 3], [0, 1], [5, 6, 7]
    cases: list[tuple[Any, bool, dict[str, list[int]]]] = [
        (ColumnTransformer([("e", OneHotEncoder(), ["a", "b"]), ("n", StandardScaler(), ["x"])]), True, {"a": a, "b": b}),
        (ColumnTransformer([("e", OneHotEncoder(), [0, 2])], remainder="passthrough"), False, {"a": a, "c": c}),  # positions, no names
        (ColumnTransformer([("e", OneHotEncoder(), [True, False, True, False])]), False, {"a": a, "c": c}),
        (ColumnTransformer([("e", OneHotEncoder(), slice("a", "b"))]), True, {"a": a, "b": b}),
        (ColumnTransformer([("e", OneHotEncoder(), make_column_selector(dtype_include=np.int64))]), True, {"a": a, "b": b, "c": c}),
        (ColumnTransformer([("n", StandardScaler(), ["x"])], remainder=OneHotEncoder()), True, {"a": a, "b": b, "c": c}),
        (ColumnTransformer([("e", OneHotEncoder(), ["a"]), ("o", OrdinalEncoder(), ["a"])]), True, {"a": a}),  # two encoders agreeing
        (ColumnTransformer([("e", OneHotEncoder(), ["a"]), ("n", StandardScaler(), ["a", "x"])]), True, {}),  # also a number
        (ColumnTransformer([("e", OneHotEncoder(), ["a"]), ("d", "drop", ["b"])], remainder="passthrough"), True, {"a": a}),
        # after an imputer: followed where what it fills in is whole (b's mean, 0.5, is not: skl2onnx's int64 imputer refuses it)
        (ColumnTransformer([("e", Pipeline([("impute", SimpleImputer()), ("onehot", OneHotEncoder())]), ["a", "b"])]), True, {"a": a}),
        (OneHotEncoder(), True, {"a": a, "b": b, "c": c, "x": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}),  # at the head of the Pipeline
        (StandardScaler(), True, {}),
    ]
    for head, named, want in cases:
        model = Pipeline([("head", head), ("logistic", LogisticRegression())]).fit(table if named else table.to_numpy(), target)
        found = encoded_columns(model, list(table.columns))
        assert {name: [v.item() if hasattr(v, "item") else v for v in values] for name, values in found.items()} == want, head
    assert encoded_columns(LogisticRegression().fit(table, target), list(table.columns)) == {}
