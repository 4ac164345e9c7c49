"""The artifacts a local run measures besides ``--model-dir`` (``--also-model``): a folder, or ``wine``.

``wine`` is scikit-learn's bundled wine data (178 rows, 13 features, 3 classes) with a random forest, packaged
by ``irisserve package``'s code into the output folder the first time and reused after: the README's recipe,
so the same ratios can be checked on a model other than Iris without preparing anything.

The model repositories (``irisserve serve --models DIR``) whose resident memory is compared are built here too, in a
folder the run gives and deletes: Iris 1.0.0 alone, then wine 1.0.0 beside it, then Iris 1.1.0 (another forest seed)
beside both, each ``DIR/<name>/<version>/`` a link to an artifact trained or packaged once for the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from irisserve_bench.errors import BenchError

WINE = "wine"
NONE = "none"
DEFAULT_ALSO = (WINE,)
WINE_VERSION = "1.0.0"
IRIS = "iris"
IRIS_VERSION = "1.0.0"  # `irisserve train`'s defaults: the project's artifact
EXTRA_IRIS_VERSION = "1.1.0"
EXTRA_IRIS_RANDOM_STATE = 7  # another forest, as a retrained version would be
EXPORT_CHECK_POINTS = 2_000  # the ONNX export's check against scikit-learn: enough to catch a wrong graph, quick


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


@dataclass(frozen=True)
class Artifact:
    """One model version of a repository: where it lies (``folder``) and the path it is served at."""

    name: str
    version: str
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class Repository:
    """A folder of ``<name>/<version>/`` artifacts, what ``irisserve serve --models`` serves."""

    root: Path
    artifacts: tuple[Artifact, ...]

    @property
    def label(self) -> str:
        return " + ".join(artifact.label for artifact in self.artifacts)


def repository_of(root: Path, artifacts: tuple[Artifact, ...]) -> Repository:
    """``root/<name>/<version>`` linked to each artifact's folder (nothing copied: a model of any size costs nothing)."""
    for artifact in artifacts:
        link = root / artifact.name / artifact.version
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(artifact.folder.resolve(), target_is_directory=True)
    return Repository(root, artifacts)


def one_model_repository(root: Path, model_dir: Path) -> Repository:
    """A repository holding ``model_dir`` alone, at the name and version its manifest gives."""
    from irisserve_bench.payloads import model_spec

    spec = model_spec(model_dir)
    return repository_of(root, (Artifact(spec.name, spec.version, model_dir),))


def growing_repositories(root: Path, wine: Path) -> tuple[Repository, ...]:
    """Iris 1.0.0 alone; + wine 1.0.0 (``wine``, the bench's packaged forest); + Iris 1.1.0: each one model more
    than the one before. The two Iris versions are trained into ``root/artifacts`` (a few seconds)."""
    from irisserve.tools.training import train

    iris = Artifact(IRIS, IRIS_VERSION, root / "artifacts" / IRIS / IRIS_VERSION)
    extra = Artifact(IRIS, EXTRA_IRIS_VERSION, root / "artifacts" / IRIS / EXTRA_IRIS_VERSION)
    train(iris.folder, version=iris.version, check_size=EXPORT_CHECK_POINTS)
    train(extra.folder, version=extra.version, check_size=EXPORT_CHECK_POINTS, random_state=EXTRA_IRIS_RANDOM_STATE)
    steps = (iris, Artifact(WINE, WINE_VERSION, wine), extra)
    return tuple(repository_of(root / f"repository-{count}", steps[:count]) for count in range(1, len(steps) + 1))
