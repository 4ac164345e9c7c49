"""The shared prediction core: artifact verification, both backends, vectorised batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from irisserve.core.artifact import MANIFEST_NAME, ONNX_NAME, PICKLE_NAME
from irisserve.core.errors import ArtifactError, ModelNotReadyError
from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.predictor import Backend, Predictor, decide, decide_rows
from support import SEED_ANSWER

IRIS = load_iris()


def loaded_pipeline(model_dir: Path, backend: Backend) -> RequestPipeline:
    """A loaded predictor inside the shared pipeline, whose ``answers`` are the /predict response objects."""
    predictor = Predictor(model_dir, backend=backend)
    predictor.load()
    return RequestPipeline(predictor, Limits(max_body_bytes=1 << 20, max_batch_size=1000))


@pytest.fixture(scope="module")
def onnx_predictor(model_dir: Path) -> RequestPipeline:
    return loaded_pipeline(model_dir, "onnx")


@pytest.fixture(scope="module")
def sklearn_predictor(model_dir: Path) -> RequestPipeline:
    return loaded_pipeline(model_dir, "sklearn")


def test_seed_example_is_setosa_with_full_confidence(onnx_predictor: RequestPipeline) -> None:
    (result,) = onnx_predictor.answers([[5.1, 3.5, 1.4, 0.2]])
    assert result == SEED_ANSWER


def test_both_backends_agree_on_every_iris_row(onnx_predictor: RequestPipeline, sklearn_predictor: RequestPipeline) -> None:
    onnx_results = onnx_predictor.answers(IRIS.data.tolist())
    sklearn_results = sklearn_predictor.answers(IRIS.data.tolist())
    for onnx_row, sklearn_row in zip(onnx_results, sklearn_results, strict=True):
        assert onnx_row["prediction"] == sklearn_row["prediction"]
        for name, probability in onnx_row["probabilities"].items():
            assert probability == pytest.approx(sklearn_row["probabilities"][name], abs=1e-5)


def test_backends_agree_with_scikit_learn_predict(model_dir: Path, onnx_predictor: Predictor) -> None:
    import joblib

    model = joblib.load(model_dir / PICKLE_NAME)
    expected = model.predict(IRIS.data)
    got = [row["prediction_id"] for row in onnx_predictor.answers(IRIS.data.tolist())]
    assert got == expected.tolist()


def test_batch_equals_rows_one_at_a_time(onnx_predictor: RequestPipeline) -> None:
    rows = IRIS.data[::7].tolist()
    assert onnx_predictor.answers(rows) == [onnx_predictor.answers([row])[0] for row in rows]


def test_probabilities_sum_to_one(onnx_predictor: RequestPipeline) -> None:
    for result in onnx_predictor.answers(IRIS.data.tolist()):
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["confidence"] == max(result["probabilities"].values())


def test_ties_resolve_to_the_lowest_class_like_scikit_learn() -> None:
    probabilities, class_id = decide([0.4999997, 0.5000001, 0.0])
    assert class_id == 0 and probabilities == [0.5, 0.5, 0.0]
    assert decide([0.0, 0.49999964, 0.49999964]) == ([0.0, 0.5, 0.5], 1)
    assert decide([0.0, 0.8399995, 0.16]) == ([0.0, 0.84, 0.16], 1)


def test_a_batch_decides_exactly_as_one_row_at_a_time() -> None:
    """decide_rows (NumPy, for batches) against decide (Python, per row): equal floats and class ids, on random rows,
    rows of ties, and rows whose shares sit on or next to a rounding half, where NumPy's rounding alone would differ."""
    generator = np.random.default_rng(0)
    halves = np.asarray([[0.0000005, 0.9999995], [0.1234565, 0.8765435], [0.2500005, 0.7499995]], dtype=np.float64)
    nudged = np.concatenate([halves, np.nextafter(halves, 1.0), np.nextafter(halves, 0.0)])
    batches = [
        generator.random((2000, 3)).astype(np.float32),
        generator.random((2000, 11)).astype(np.float32),
        (generator.integers(0, 8, (2000, 4)) / 8 + 1e-9).astype(np.float32),  # many exact ties
        np.asarray([[0.4999997, 0.5000001, 0.0], [0.0, 0.49999964, 0.49999964], [0.0, 0.8399995, 0.16]], dtype=np.float32),
        nudged,
    ]
    for output in batches:
        probabilities, class_ids = decide_rows(output)
        expected = [decide(row) for row in output.tolist()]
        assert probabilities == [rounded for rounded, _ in expected]
        assert class_ids == [class_id for _, class_id in expected]


def test_out_of_range_features_are_named(onnx_predictor: RequestPipeline) -> None:
    (result,) = onnx_predictor.answers([[9.5, 3.0, 0.5, 1.0]])
    assert result["out_of_range_features"] == ["sepal_length", "petal_length"]


def test_not_loaded_predictor_refuses_to_predict(model_dir: Path) -> None:
    with pytest.raises(ModelNotReadyError):
        Predictor(model_dir).predict(np.asarray([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))


def test_load_reports_timings_and_warms_up(onnx_predictor: RequestPipeline) -> None:
    predictor = onnx_predictor.predictor
    assert predictor.ready
    assert 0 < predictor.load_seconds < 60
    assert 0 < predictor.warmup_seconds < 60


@pytest.mark.parametrize("file_name", [ONNX_NAME, PICKLE_NAME])
def test_tampered_file_is_refused_by_name(artifact_copy: Path, file_name: str) -> None:
    with (artifact_copy / file_name).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match=f"{file_name}.*fails its integrity check"):
        Predictor(artifact_copy).load()


@pytest.mark.parametrize("file_name", [ONNX_NAME, PICKLE_NAME])
def test_missing_file_is_refused_by_name(artifact_copy: Path, file_name: str) -> None:
    (artifact_copy / file_name).unlink()
    with pytest.raises(ArtifactError, match=f"{file_name} is missing"):
        Predictor(artifact_copy, backend="onnx").load()


def test_missing_manifest_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="irisserve train"):
        Predictor(tmp_path).load()


def test_manifest_path_outside_the_folder_is_refused(artifact_copy: Path) -> None:
    manifest = json.loads((artifact_copy / MANIFEST_NAME).read_text())
    manifest["files"]["../escape.onnx"] = {"sha256": "0" * 64, "bytes": 1}
    (artifact_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a plain file name"):
        Predictor(artifact_copy).load()


def test_pickle_from_another_scikit_learn_version_is_refused(artifact_copy: Path) -> None:
    manifest = json.loads((artifact_copy / MANIFEST_NAME).read_text())
    manifest["libraries"]["scikit-learn"] = "0.24.2"
    (artifact_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="pickled by scikit-learn 0.24.2"):
        Predictor(artifact_copy, backend="sklearn").load()


def test_onnx_serving_path_never_imports_scikit_learn_scipy_or_pandas(model_dir: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from irisserve.web.app import create_app\n"
        "from irisserve.core.settings import Settings\n"
        f"app = create_app(Settings(model_dir={str(model_dir)!r}))\n"
        "with TestClient(app) as client:\n"
        "    assert client.post('/predict', json={'sepal_length': 5.1, 'sepal_width': 3.5,"
        " 'petal_length': 1.4, 'petal_width': 0.2}).status_code == 200\n"
        "    assert client.post('/predict/batch', json={'instances': []}).status_code == 422\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'joblib', 'pandas', 'skl2onnx', 'lightgbm', 'xgboost', 'onnxmltools')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
