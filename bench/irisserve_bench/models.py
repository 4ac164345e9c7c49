"""The artifacts a local run measures besides ``--model-dir`` (``--also-model``): a folder, or ``wine``.

``wine`` is scikit-learn's bundled wine data (178 rows, 13 features, 3 classes) with a random forest, packaged
by ``irisserve package``'s code into the output folder the first time and reused after: the README's recipe,
so the same ratios can be checked on a model other than Iris without preparing anything."""

from __future__ import annotations

from pathlib import Path

from irisserve_bench.errors import BenchError

WINE = "wine"
NONE = "none"
DEFAULT_ALSO = (WINE,)
WINE_VERSION = "1.0.0"


def wine_dir(out_dir: Path) -> Path:
    return out_dir / "models" / WINE / WINE_VERSION


def package_wine(out_dir: Path) -> Path:
    """``<out_dir>/models/wine/1.0.0``, packaged now unless a previous run left it there."""
    folder = wine_dir(out_dir)
    if (folder / "manifest.json").is_file():
        return folder
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    from irisserve.tools.packaging import package

    data = load_wine(as_frame=True)
    estimator = RandomForestClassifier(random_state=0).fit(data.data, data.target)
    package(estimator, data.data, target=data.target, name=WINE, version=WINE_VERSION, out_dir=folder)
    return folder


def also_model_dirs(values: list[str] | None, out_dir: Path) -> tuple[Path, ...]:
    """``--also-model`` values (default: wine) as artifact folders; ``none`` anywhere means none at all."""
    values = list(values or DEFAULT_ALSO)
    if NONE in values:
        return ()
    folders = []
    for value in values:
        folder = package_wine(out_dir) if value == WINE else Path(value)
        if not (folder / "manifest.json").is_file():
            raise BenchError(f"--also-model {value}: no model artifact there (manifest.json missing); give a folder "
                             f"written by `irisserve package`, {WINE!r} or {NONE!r}.")
        folders.append(folder)
    return tuple(folders)
