"""Models `irisserve package` refuses with the reason and the replacement, one line, exit 2, nothing written."""

from __future__ import annotations

import warnings
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.svm import SVC

from support import run_cli


def test_svc_with_probability_is_refused_naming_the_replacement(tmp_path: Path) -> None:
    data = load_iris(as_frame=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9 deprecates probability=True: the point
        joblib.dump(SVC(probability=True, random_state=0).fit(data.data, data.target), tmp_path / "svc.joblib")
    data.data.assign(y=data.target).to_csv(tmp_path / "iris.csv", index=False)
    result = run_cli("package", "--model", "svc.joblib", "--data", "iris.csv", "--target", "y", "--name", "svc", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "decision function" in result.stderr and "CalibratedClassifierCV(SVC(), ensemble=False)" in result.stderr
    assert not (tmp_path / "models").exists()
