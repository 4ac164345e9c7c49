"""The model repository (issue 17), with real processes: `irisserve serve --models DIR` serving Iris 1.0.0, Iris 1.1.0
(another seed) and wine 1.0.0 at their URLs and V2 paths; the repository API behind the key; a tampered version
refused while the live one keeps answering; SIGHUP rescans; 20 live switches under load with one and two workers,
and on the function (SIGHUP: gunicorn's graceful reload, each new worker rescanning)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from irisserve.core import startup
from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.registry import ModelRegistry
from support import SEED_EXAMPLE, VENV_BIN, RunningServer, build_repository, free_port, function_command, run_server

API_KEY = "repository-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
VERSIONS = ("1.0.0", "1.1.0")
SWITCHES = 20


@pytest.fixture(scope="module")
def repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris/1.0.0 (the session's artifact), iris/1.1.0 (another random_state), wine/1.0.0."""
    return build_repository(tmp_path_factory.mktemp("repository"), model_dir)


@pytest.fixture
def own_repository(repository: Path, tmp_path: Path) -> Path:
    """A copy a test may change."""
    return Path(shutil.copytree(repository, tmp_path / "repository"))


def serve_command(repository: Path, port: int, *extra: str) -> list[str]:
    return [str(VENV_BIN / "irisserve"), "serve", "--models", str(repository), "--default-model", "iris", "--port", str(port), *extra]


@contextmanager
def repository_server(repository: Path, folder: Path, **env: str) -> Iterator[tuple[RunningServer, httpx.Client]]:
    port = free_port()
    with run_server(serve_command(repository, port), port=port, log_path=folder / "serve.log", env=env) as server, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield server, client


@pytest.fixture(scope="module")
def served(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with repository_server(repository, tmp_path_factory.mktemp("served"), IRISSERVE_API_KEY=API_KEY) as (_, client):
        client.headers.update(AUTH)
        yield client


def wine_row(repository: Path) -> dict[str, float]:
    return json.loads((repository / "wine" / "1.0.0" / "manifest.json").read_text())["examples"][0]


def test_every_model_answers_at_its_urls(served: httpx.Client, repository: Path) -> None:
    latest = served.post("/models/iris/predict", json=SEED_EXAMPLE)
    assert latest.status_code == 200 and latest.json()["model_version"] == "1.1.0"
    for version in VERSIONS:
        answer = served.post(f"/models/iris/versions/{version}/predict", json=SEED_EXAMPLE)
        assert answer.status_code == 200 and answer.json()["model_version"] == version
        batch = served.post(f"/models/iris/versions/{version}/predict/batch", json={"instances": [SEED_EXAMPLE] * 3})
        assert batch.status_code == 200 and batch.json()["model_version"] == version and len(batch.json()["predictions"]) == 3
        assert served.get(f"/models/iris/versions/{version}/info").json()["model_version"] == version
    wine = served.post("/models/wine/predict", json=wine_row(repository))
    assert wine.status_code == 200 and wine.json()["prediction"] in {"0", "1", "2"}
    assert served.get("/models/wine/info").json()["model_name"] == "wine"
    assert [f["name"] for f in served.get("/models/wine/inputs").json()["features"]][:2] == ["alcohol", "malic_acid"]
    listing = served.get("/models").json()
    assert listing["default_model"] == "iris"
    assert {(m["name"], m["serving_version"], tuple(m["versions"])) for m in listing["models"]} == {
        ("iris", "1.1.0", VERSIONS), ("wine", "1.0.0", ("1.0.0",))
    }
    wine_schema = served.get("/models/wine/openapi.json").json()
    assert "/models/wine/predict" in wine_schema["paths"] and "alcohol" in json.dumps(wine_schema["components"])


def test_the_default_model_answers_the_seed_routes_as_before(served: httpx.Client, live_server: RunningServer) -> None:
    """/predict is the default model's latest version, byte for byte what /models/iris/predict answers; its version
    1.0.0 answers exactly as the single-artifact server does."""
    default = served.post("/predict", json=SEED_EXAMPLE)
    assert default.content == served.post("/models/iris/predict", json=SEED_EXAMPLE).content
    single = httpx.post(f"{live_server.base_url}/predict", json=SEED_EXAMPLE, timeout=30)
    assert served.post("/models/iris/versions/1.0.0/predict", json=SEED_EXAMPLE).content == single.content
    assert served.get("/health").json()["model_version"] == "1.1.0"
    refused = served.post("/predict", json={"sepal_length": 1})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "sepal_width"]
    unknown = served.post("/models/nope/predict", json=SEED_EXAMPLE)
    assert unknown.status_code == 404 and "'iris', 'wine'" in unknown.json()["detail"]
    assert served.post("/models/iris/versions/9.9.9/predict", json=SEED_EXAMPLE).status_code == 404


def test_v2_paths_per_model_and_version(served: httpx.Client, repository: Path) -> None:
    iris = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [list(SEED_EXAMPLE.values())]}]}
    for path, version in (("/v2/models/iris", "1.1.0"), ("/v2/models/iris/versions/1.0.0", "1.0.0")):
        answer = served.post(f"{path}/infer", json=iris)
        assert answer.status_code == 200 and answer.json()["model_version"] == version
        assert served.get(f"{path}/ready").json() == {"name": "iris", "ready": True}
    assert served.get("/v2/models/iris").json()["versions"] == list(VERSIONS)
    row = wine_row(repository)
    wine = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": [list(row.values())]}]}
    answer = served.post("/v2/models/wine/infer", json=wine)
    assert answer.status_code == 200 and answer.json()["model_name"] == "wine"
    missing = served.post("/v2/models/nope/infer", json=wine)
    assert missing.status_code == 404 and "error" in missing.json()


def test_repository_api_needs_the_key(served: httpx.Client) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/wine/load", "/v2/repository/models/wine/unload"):
        refused = httpx.post(f"{served.base_url}{path}", timeout=30)
        assert refused.status_code == 401, path
    index = served.post("/v2/repository/index").json()
    assert [(e["name"], e["version"], e["state"]) for e in index] == [
        ("iris", "1.0.0", "READY"), ("iris", "1.1.0", "READY"), ("wine", "1.0.0", "READY")
    ]


def test_metrics_logs_and_live_figures_per_model(own_repository: Path, tmp_path: Path) -> None:
    with repository_server(own_repository, tmp_path) as (server, client):
        for _ in range(3):
            assert client.post("/models/wine/predict", json=wine_row(own_repository)).status_code == 200
        assert client.post("/predict", json=SEED_EXAMPLE).status_code == 200
        metrics = client.get("/metrics").text
        assert 'irisserve_inference_duration_seconds_count{model="wine",version="1.0.0"} 3.0' in metrics
        assert 'irisserve_inference_duration_seconds_count{model="iris",version="1.1.0"} 1.0' in metrics
        wine_stats = client.get("/models/wine/stats").json()
        assert wine_stats["predictions"]["rows"] == 3 and client.get("/model/stats").json()["predictions"]["rows"] == 1
        assert client.get("/models/iris/versions/1.0.0/stats").json()["predictions"]["rows"] == 0
        wait_for(lambda: '"model":"wine","model_version":"1.0.0"' in server.log())
        assert client.post("/v2/repository/models/wine/unload").status_code == 200
        assert 'model="wine"' not in client.get("/metrics").text  # an unloaded version's series go away


def test_load_unload_and_pin(own_repository: Path, tmp_path: Path) -> None:
    with repository_server(own_repository, tmp_path) as (_, client):
        pinned = client.post("/v2/repository/models/iris/load", json={"parameters": {"version": "1.0.0"}})
        assert pinned.status_code == 200 and pinned.json()["serving_version"] == "1.0.0"
        assert client.post("/predict", json=SEED_EXAMPLE).json()["model_version"] == "1.0.0"
        unpinned = client.post("/v2/repository/models/iris/load")
        assert unpinned.json()["serving_version"] == "1.1.0"
        assert client.post("/v2/repository/models/wine/unload").status_code == 200
        assert client.post("/models/wine/predict", json=wine_row(own_repository)).status_code == 404
        assert client.post("/v2/repository/index", json={"ready": True}).json()[-1]["name"] == "iris"
        wine_entry = client.post("/v2/repository/index").json()[-1]
        assert wine_entry == {"name": "wine", "version": "1.0.0", "state": "UNAVAILABLE", "reason": "unloaded"}
        assert client.post("/v2/repository/models/wine/load").json()["serving_version"] == "1.0.0"
        assert client.post("/models/wine/predict", json=wine_row(own_repository)).status_code == 200
        assert client.post("/v2/repository/models/iris/unload", json={"parameters": {"version": "1.1.0"}}).status_code == 200
        assert client.post("/predict", json=SEED_EXAMPLE).json()["model_version"] == "1.0.0"
        last = client.post("/v2/repository/models/iris/unload")
        assert last.status_code == 409 and "default model" in last.json()["error"]
        bad = client.post("/v2/repository/models/iris/load", json={"parameters": {"version": 1}})
        assert bad.status_code == 400 and "string" in bad.json()["error"]
        assert client.post("/v2/repository/models/iris/load", content=b"{").status_code == 400


def tamper_new_version(repository: Path, version: str) -> Path:
    """A copy of iris 1.1.0 as ``version`` whose model.onnx changed after packaging."""
    folder = repository / "iris" / version
    shutil.copytree(repository / "iris" / "1.1.0", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    with (folder / "model.onnx").open("ab") as model:
        model.write(b"\0")
    return folder


def test_a_tampered_version_is_refused_and_the_live_one_keeps_serving(own_repository: Path, tmp_path: Path) -> None:
    with repository_server(own_repository, tmp_path) as (server, client):
        tamper_new_version(own_repository, "1.2.0")
        refused = client.post("/v2/repository/models/iris/load", json={"parameters": {"version": "1.2.0"}})
        assert refused.status_code == 400
        assert "1.2.0" in refused.json()["error"] and "SHA-256" in refused.json()["error"]
        assert client.post("/predict", json=SEED_EXAMPLE).json()["model_version"] == "1.1.0"
        os.kill(server.process.pid, signal.SIGHUP)  # a rescan meets it too: logged, listed, never served
        wait_for(lambda: "Model iris version 1.2.0 was not loaded" in server.log())
        assert client.post("/predict", json=SEED_EXAMPLE).json()["model_version"] == "1.1.0"
        entry = client.post("/v2/repository/index").json()[2]
        assert entry["version"] == "1.2.0" and entry["state"] == "UNAVAILABLE" and "SHA-256" in entry["reason"]


def test_sighup_rescans_the_repository(own_repository: Path, tmp_path: Path) -> None:
    with repository_server(own_repository, tmp_path) as (server, client):
        wine = own_repository / "wine"
        shutil.copytree(wine / "1.0.0", wine / "1.1.0")
        manifest = json.loads((wine / "1.1.0" / "manifest.json").read_text())
        (wine / "1.1.0" / "manifest.json").write_text(json.dumps({**manifest, "version": "1.1.0"}))
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for(lambda: client.post("/models/wine/predict", json=wine_row(own_repository)).json()["model_version"] == "1.1.0")
        shutil.rmtree(own_repository / "iris" / "1.1.0")
        os.kill(server.process.pid, signal.SIGHUP)
        wait_for(lambda: client.post("/predict", json=SEED_EXAMPLE).json()["model_version"] == "1.0.0")
        assert server.process.poll() is None


def wait_for(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class Load:
    """Threads posting /predict until stopped: every status and model_version seen, and connection errors."""

    def __init__(self, base_url: str, threads: int = 4) -> None:
        self.base_url = base_url
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post("/predict", json=SEED_EXAMPLE)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    self.versions[answer.json()["model_version"]] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.mark.parametrize("workers", [1, 2])
def test_twenty_switches_under_load(repository: Path, tmp_path: Path, workers: int) -> None:
    """Each load call returns once every worker serves the version it loaded: from then on every answer, from any
    worker, carries it; before, the other live version's. Never a non-2xx or a connection error."""
    with repository_server(repository, tmp_path, IRISSERVE_WORKERS=str(workers)) as (_, client), Load(client.base_url) as load:
        for switch in range(SWITCHES):
            version = VERSIONS[switch % 2]
            answer = client.post("/v2/repository/models/iris/load", json={"parameters": {"version": version}})
            assert answer.status_code == 200, answer.text
            assert answer.json()["workers_switched"] == workers
            for _ in range(2 * workers):  # fresh connections: whichever worker takes them
                fresh = httpx.post(f"{client.base_url}/predict", json=SEED_EXAMPLE, timeout=30)
                assert fresh.json()["model_version"] == version
    assert load.errors == [] and set(load.statuses) == {200}
    assert set(load.versions) == set(VERSIONS) and sum(load.statuses.values()) > SWITCHES


def test_twenty_switches_under_load_on_the_function(own_repository: Path, tmp_path: Path) -> None:
    """The function rescans on SIGHUP: gunicorn starts new workers (each scans the repository on its first request)
    and lets the old ones finish; here each switch hides or restores iris/1.1.0."""
    port = free_port()
    env = {"IRISSERVE_MODEL_REPOSITORY": str(own_repository), "IRISSERVE_DEFAULT_MODEL": "iris"}
    newest, hidden = own_repository / "iris" / "1.1.0", own_repository / "iris" / ".1.1.0"
    with run_server(function_command(port), port=port, log_path=tmp_path / "function.log", env=env, ready_path="/") as server, \
            Load(server.base_url) as load:
        for switch in range(SWITCHES):
            version = VERSIONS[switch % 2]
            if version == "1.0.0":
                newest.rename(hidden)
            else:
                hidden.rename(newest)
            os.kill(server.process.pid, signal.SIGHUP)
            wait_for(lambda v=version: httpx.post(server.base_url, json=SEED_EXAMPLE, timeout=30).json()["model_version"] == v)
    assert load.errors == [] and set(load.statuses) == {200}, (load.errors[:3], load.statuses, server.log()[-3000:])
    assert set(load.versions) == set(VERSIONS)


def test_one_artifact_lists_itself_and_refuses_load(live_server: RunningServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        assert client.get("/models").json()["models"] == [
            {"name": "iris", "serving_version": "1.0.0", "versions": ["1.0.0"], "default": True}
        ]
        assert client.post("/v2/repository/index").json() == [{"name": "iris", "version": "1.0.0", "state": "READY", "serving": True}]
        refused = client.post("/v2/repository/models/iris/load")
        assert refused.status_code == 400 and "--models" in refused.json()["error"]
        assert client.post("/models/iris/predict", json=SEED_EXAMPLE).content == client.post("/predict", json=SEED_EXAMPLE).content


def test_serve_refuses_an_ambiguous_or_empty_repository(repository: Path, tmp_path: Path) -> None:
    import subprocess

    ambiguous = subprocess.run([str(VENV_BIN / "irisserve"), "serve", "--models", str(repository), "--port", str(free_port())],
                               capture_output=True, text=True, timeout=120)
    assert ambiguous.returncode == 2 and "'iris', 'wine'" in ambiguous.stderr and "--default-model" in ambiguous.stderr
    (tmp_path / "empty").mkdir()
    empty = subprocess.run([str(VENV_BIN / "irisserve"), "serve", "--models", str(tmp_path / "empty"), "--port", str(free_port())],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "holds no artifact" in empty.stderr


def test_a_misplaced_newest_version_is_refused_and_the_older_one_serves(own_repository: Path, tmp_path: Path) -> None:
    """iris/2.0.0 holding a manifest of version 1.1.0: listed UNAVAILABLE with the reason, 1.1.0 answers /predict."""
    shutil.copytree(own_repository / "iris" / "1.1.0", own_repository / "iris" / "2.0.0")
    with repository_server(own_repository, tmp_path) as (server, client):
        assert client.post("/predict", json=SEED_EXAMPLE).json()["model_version"] == "1.1.0"
        entry = next(e for e in client.post("/v2/repository/index").json() if e["version"] == "2.0.0")
        assert entry["state"] == "UNAVAILABLE" and "move it to iris/1.1.0/" in entry["reason"]
        assert "Model iris version 2.0.0 was not loaded" in server.log()


def test_an_unloaded_version_is_freed_though_start_up_froze_the_heap(own_repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server freezes its start-up heap (startup.mark_ready): the cycle collector no longer looks at the models loaded
    then. Unloading one hands the heap back and collects, so what the model held in reference cycles (its generated
    request schema, a class, is one) is freed, and freezes the rest again."""
    monkeypatch.setattr(startup, "RECLAIM_AFTER_SECONDS", 0.05)
    limits = Limits(max_body_bytes=1 << 20, max_batch_size=1000)
    registry = ModelRegistry(root=own_repository, default="iris", build=lambda predictor: (RequestPipeline(predictor, limits), {}))
    registry.reconcile()
    request_schema = weakref.ref(registry.snapshot.loaded["wine"]["1.0.0"].spec.request_model)
    gc.collect()
    gc.freeze()
    try:
        registry.reconcile(registry.plan_unload("wine", None))
        deadline = time.monotonic() + 10
        while request_schema() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert request_schema() is None, "the unloaded version's request schema is still alive"
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gc.get_freeze_count() > 0, "the heap was not frozen again after the collection"
    finally:
        gc.unfreeze()
