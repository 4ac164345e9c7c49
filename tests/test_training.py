"""Training, export check and determinism (the artifact the whole service rests on).

The artifact is trained here, into a temporary folder, rather than read from models/: these tests are
about what `train` writes now, whatever an older run left there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from sklearn.datasets import load_iris

from irisserve.core.artifact import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ONNX_NAME,
    PICKLE_NAME,
    sha256_file,
)
from irisserve.tools import onnx_export, training
from irisserve.tools.errors import PackagingError

IRIS_NOTES = {
    "sepal_length": "Sepal length in centimetres (> 0).",
    "sepal_width": "Sepal width in centimetres (> 0).",
    "petal_length": "Petal length in centimetres (> 0).",
    "petal_width": "Petal width in centimetres (> 0).",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trained") / "iris" / "1.0.0"
    training.train(folder)
    return folder


def test_artifact_folder_holds_model_files_and_manifest(trained: Path) -> None:
    manifest = json.loads((trained / MANIFEST_NAME).read_text())
    assert {ONNX_NAME, PICKLE_NAME} == set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(trained / name)
        assert entry["bytes"] == (trained / name).stat().st_size
    assert (manifest["format_version"], manifest["name"], manifest["version"]) == (FORMAT_VERSION, "iris", "1.0.0")
    assert manifest["task"] == "classification"
    assert manifest["model"]["type"] == "RandomForestClassifier"
    assert manifest["model"]["steps"] == ["RandomForestClassifier"]
    assert manifest["model"]["parameters"]["n_estimators"] == 100
    assert manifest["model"]["parameters"]["random_state"] == 42
    assert [f["name"] for f in manifest["features"]] == list(IRIS_NOTES)
    petal_length = manifest["features"][2]
    assert {key: petal_length[key] for key in ("name", "type", "description", "exclusive_minimum", "min", "max")} == {
        "name": "petal_length", "type": "number", "description": IRIS_NOTES["petal_length"],
        "exclusive_minimum": 0, "min": 1.0, "max": 6.9,
    }
    assert all(f["description"] == IRIS_NOTES[f["name"]] and f["exclusive_minimum"] == 0 for f in manifest["features"])
    assert sum(petal_length["bins"]["shares"]) == pytest.approx(1.0)
    assert manifest["targets"] == ["setosa", "versicolor", "virginica"]
    assert manifest["examples"][0] == {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    assert manifest["training_rows"] == 150
    assert 0.85 <= manifest["metrics"]["holdout_accuracy"] <= 1.0
    assert manifest["metrics"]["accuracy"] == manifest["metrics"]["holdout_accuracy"]
    assert 0.85 <= manifest["metrics"]["cv_accuracy_mean"] <= 1.0
    assert manifest["metrics"]["cv_folds"] == 5
    assert {"scikit-learn", "skl2onnx", "onnxruntime", "numpy"} <= set(manifest["libraries"])
    assert manifest["onnx"]["input_name"] == "input"
    assert manifest["onnx"]["outputs"] == {"probabilities": "probabilities"}
    check = manifest["onnx"]["export_check"]
    assert check["rows_checked"] >= 100_150 and check["label_mismatches"] == 0
    assert check["max_probability_difference"] <= check["tolerance"] == 1e-5


def test_onnx_model_has_plain_probability_tensor_not_zipmap(trained: Path) -> None:
    import onnx

    model = onnx.load(str(trained / ONNX_NAME))
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert "ZipMap" not in {node.op_type for node in model.graph.node}
    assert model.graph.name == training.GRAPH_NAME


def test_check_points_span_and_exceed_training_ranges_above_zero() -> None:
    features = load_iris().data
    points = onnx_export.check_points(features, 100_000, exclusive_minimums=[0] * 4)
    assert len(points) == 100_000 + len(features)
    assert (points.min(axis=0) < features.min(axis=0)).all()
    assert (points.max(axis=0) > features.max(axis=0)).all()
    assert (points > 0).all()  # Iris measurements are > 0: the check stays among requests the server accepts


def test_export_check_catches_an_onnx_model_that_disagrees() -> None:
    iris = load_iris()
    model = training.new_model().fit(iris.data, iris.target)
    other = training.new_model().set_params(random_state=7).fit(iris.data[::2], iris.target[::2])
    wrong_onnx = onnx_export.convert(other, n_features=4, classifier=other, graph_name="other").SerializeToString()
    check = onnx_export.compare_classifier(
        model, onnx_export.new_session(wrong_onnx), onnx_export.check_points(iris.data, 1000)
    )
    assert check.label_mismatches and not check.passed


def test_failed_export_writes_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disagree(estimator: object, session: object, points: np.ndarray, feed: object = None) -> onnx_export.ExportCheck:
        return onnx_export.ExportCheck(len(points), 1e-5, label_mismatches=3, max_probability_difference=0.5)

    monkeypatch.setattr(onnx_export, "compare_classifier", disagree)
    with pytest.raises(PackagingError, match="3 label mismatches"):
        training.train(tmp_path / "never", check_size=10)
    assert not (tmp_path / "never").exists()
    assert list(tmp_path.iterdir()) == []


def test_training_twice_gives_identical_predictions(tmp_path: Path, trained: Path) -> None:
    training.train(tmp_path / "again", check_size=1000)
    rows = onnx_export.check_points(load_iris().data, 2000)
    first, second = (
        onnxruntime.InferenceSession(str(folder / ONNX_NAME), providers=["CPUExecutionProvider"])
        for folder in (trained, tmp_path / "again")
    )
    assert np.array_equal(first.run(None, {"input": rows})[1], second.run(None, {"input": rows})[1])
    assert sha256_file(trained / ONNX_NAME) == sha256_file(tmp_path / "again" / ONNX_NAME)


def test_artifact_folder_is_readable_by_other_users(trained: Path) -> None:
    assert trained.stat().st_mode & 0o005 == 0o005


def test_seed_train_script_writes_the_default_artifact(tmp_path: Path) -> None:
    import subprocess
    import sys

    from support import REPO_ROOT

    out = tmp_path / "seed"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train_model.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "0 label mismatches" in result.stdout
    assert (out / MANIFEST_NAME).is_file() and (out / PICKLE_NAME).is_file()
    assert np.isclose(json.loads((out / MANIFEST_NAME).read_text())["metrics"]["cv_folds"], 5)
