"""Training, export check and determinism (the artifact the whole service rests on)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from irisserve.tools import training
from irisserve.core.artifact import MANIFEST_NAME, ONNX_NAME, PICKLE_NAME, sha256_file
from irisserve.core.errors import ArtifactError
from irisserve.core.predictor import Predictor


def test_artifact_folder_holds_model_files_and_manifest(model_dir: Path) -> None:
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    assert {ONNX_NAME, PICKLE_NAME} == set(manifest["files"])
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(model_dir / name)
        assert entry["bytes"] == (model_dir / name).stat().st_size
    assert manifest["version"] == "1.0.0"
    assert manifest["model"]["type"] == "RandomForestClassifier"
    assert manifest["model"]["parameters"]["n_estimators"] == 100
    assert manifest["model"]["parameters"]["random_state"] == 42
    assert [f["name"] for f in manifest["features"]] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert manifest["features"][2] == {"name": "petal_length", "min": 1.0, "max": 6.9}
    assert manifest["target_names"] == ["setosa", "versicolor", "virginica"]
    assert 0.85 <= manifest["metrics"]["holdout_accuracy"] <= 1.0
    assert 0.85 <= manifest["metrics"]["cv_accuracy_mean"] <= 1.0
    assert manifest["metrics"]["cv_folds"] == 5
    assert {"scikit-learn", "skl2onnx", "onnxruntime", "numpy"} <= set(manifest["libraries"])
    check = manifest["onnx"]["export_check"]
    assert check["rows_checked"] >= 100_150 and check["label_mismatches"] == 0
    assert check["max_probability_difference"] <= 1e-5


def test_onnx_model_has_plain_probability_tensor_not_zipmap(model_dir: Path) -> None:
    import onnx

    model = onnx.load(str(model_dir / ONNX_NAME))
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert "ZipMap" not in {node.op_type for node in model.graph.node}


def test_check_points_span_and_exceed_training_ranges() -> None:
    features = load_iris().data
    points = training.check_points(features, 100_000)
    assert len(points) == 100_000 + len(features)
    assert (points.min(axis=0) < features.min(axis=0)).all()
    assert (points.max(axis=0) > features.max(axis=0)).all()


def test_export_refuses_an_onnx_model_that_disagrees(tmp_path: Path) -> None:
    iris = load_iris()
    model = training.new_model().fit(iris.data, iris.target)
    other = training.new_model().set_params(random_state=7).fit(iris.data[::2], iris.target[::2])
    wrong_onnx = training.export_onnx(other)
    with pytest.raises(ArtifactError, match="label mismatches"):
        training.check_export(model, wrong_onnx, training.check_points(iris.data, 1000))


def test_failed_export_writes_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disagree(*args: object) -> None:
        raise ArtifactError("disagrees")

    monkeypatch.setattr(training, "check_export", disagree)
    with pytest.raises(ArtifactError):
        training.train(tmp_path / "never", check_size=10)
    assert not (tmp_path / "never").exists()
    assert list(tmp_path.iterdir()) == []


def test_training_twice_gives_identical_predictions(tmp_path: Path, model_dir: Path) -> None:
    training.train(tmp_path / "again", check_size=1000)
    first, second = Predictor(model_dir), Predictor(tmp_path / "again")
    first.load()
    second.load()
    rows = training.check_points(load_iris().data, 2000).tolist()
    assert first.predict_rows(rows) == second.predict_rows(rows)
    assert sha256_file(model_dir / ONNX_NAME) == sha256_file(tmp_path / "again" / ONNX_NAME)


def test_artifact_folder_is_readable_by_other_users(model_dir: Path) -> None:
    assert model_dir.stat().st_mode & 0o005 == 0o005


def test_seed_train_script_writes_the_default_artifact(tmp_path: Path) -> None:
    import subprocess
    import sys

    from support import REPO_ROOT

    out = tmp_path / "seed"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train_model.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "0 label mismatches" in result.stdout
    assert (out / MANIFEST_NAME).is_file() and (out / PICKLE_NAME).is_file()
    assert np.isclose(json.loads((out / MANIFEST_NAME).read_text())["metrics"]["cv_folds"], 5)
