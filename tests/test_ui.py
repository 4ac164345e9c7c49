"""The model page as served (self-contained, relative URLs, public, off with IRISSERVE_UI=false), the JSON it
reads (/model/inputs, /model/stats; the function's GET) and the live figures behind its panel. The page in a
real browser: test_ui_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from irisserve.core.predictor import ClassPredictions, Predictor, ValuePredictions
from irisserve.core.schemas import StatsResponse
from irisserve.core.settings import Settings
from irisserve.core.spec import Feature, ModelSpec
from irisserve.ops.drift import DriftMonitor
from irisserve.ops.live import LiveStats, percentile
from irisserve.ui import render_page
from irisserve.web.app import create_app
from support import SEED_EXAMPLE, build_repository, with_value
from test_function import function_app, function_env

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
API_KEY = "page-key"
OUT_OF_RANGE_ROW = {**SEED_EXAMPLE, "sepal_length": 9.5}


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir, log_level="warning"))) as test_client:
        yield test_client


def config_of(html: str) -> dict[str, object]:
    match = re.search(r'<script id="config" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no config block"
    return json.loads(match.group(1))


def assert_self_contained(response: httpx.Response) -> None:
    """One HTML file: no external resource, no absolute URL, and a CSP allowing exactly its inline code."""
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9]", html), "an absolute URL"
    assert not re.search(r"""(?i)<(?:script|link|img|iframe)[^>]*\b(?:src|href)=(?!["']data:)""", html), "an external resource"
    assert not re.search(r"""fetch\(\s*["'`]/|["'`]/(?:predict|model|docs|metrics)""", html), "a root-relative URL"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


# -- the page on the web service --------------------------------------------------------------------


def test_get_root_serves_the_self_contained_page(client: TestClient) -> None:
    response = client.get("/")
    assert_self_contained(response)
    assert config_of(response.text) == {"door": "web", "auth": False, "refresh_seconds": 3.0}
    for relative in ('"model/info"', '"model/inputs"', '"model/stats"', '"predict"', '"predict/batch"'):
        assert relative in response.text


def test_the_picker_is_hidden_until_the_page_finds_several_models(client: TestClient) -> None:
    """The page asks ``models`` (relative, like its other calls) and shows its select only when there is a choice."""
    html = client.get("/").text
    assert re.search(r'<p id="picker" hidden>\s*<label for="model-picker">Model</label>\s*<select id="model-picker"></select>', html)
    assert 'call("GET", "models")' in html
    listing = client.get("/models").json()  # one model at one version: nothing to pick, the page as before
    assert [(m["name"], m["versions"], m["default"]) for m in listing["models"]] == [("iris", ["1.0.0"], True)]


def page_routes(html: str, name: str) -> dict[str, str]:
    """The page's table of routes (``SEED_ROUTES`` or ``MODEL_ROUTES``): what it calls for info, inputs, stats, predict, batch."""
    match = re.search(rf"const {name} = (\{{.*?\}});", html)
    assert match, name
    return json.loads(re.sub(r"(\w+):", r'"\1":', match.group(1)))


@pytest.fixture(scope="module")
def repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("ui-repository") / "models", model_dir)


def test_every_entry_the_picker_can_offer_answers_the_pages_calls(repository: Path) -> None:
    """Each base the picker points the page at (a name's serving version, a pinned version) answers every call the page
    makes under it, for that model and version; the seed routes, the default entry's, answer as models/iris."""
    settings = Settings(model_repository=repository, default_model="iris", log_level="warning")
    with TestClient(create_app(settings)) as client:
        html = client.get("/").text
        seed, routes = page_routes(html, "SEED_ROUTES"), page_routes(html, "MODEL_ROUTES")
        assert set(seed) == set(routes) == {"info", "inputs", "stats", "predict", "batch"}
        listing = client.get("/models").json()
        assert listing["default_model"] == "iris"
        bases = {"": ("iris", "1.1.0")}
        for model in listing["models"]:
            bases[f"models/{model['name']}"] = (model["name"], model["serving_version"])
            for version in model["versions"]:
                bases[f"models/{model['name']}/versions/{version}"] = (model["name"], version)
        assert len(bases) == 6  # the page pins only versions not serving; every one answers all the same
        for base, (name, version) in bases.items():
            def at(kind: str, base: str = base) -> str:
                return "/" + (f"{base}/{routes[kind]}" if base else seed[kind])

            info = client.get(at("info")).json()
            assert (info["model_name"], info["model_version"]) == (name, version), base
            inputs = client.get(at("inputs")).json()
            row = inputs["examples"][0]
            assert client.post(at("predict"), json=row).json()["model_version"] == version, base
            batch = client.post(at("batch"), json={"instances": [row, row]}).json()
            assert batch["model_version"] == version and len(batch["predictions"]) == 2, base
            stats = client.get(at("stats")).json()
            assert (stats["model_name"], stats["model_version"]) == (name, version), base
        assert client.get("/model/info").json() == client.get("/models/iris/info").json()


def test_the_page_can_be_turned_off(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, ui=False, log_level="warning"))) as client:
        assert client.get("/").status_code == 404
        assert "/" not in client.get("/openapi.json").json()["paths"]
        assert client.get("/model/stats").status_code == 200  # the JSON stays: it is the API's, not the page's


def test_with_an_api_key_the_page_is_open_and_what_it_reads_is_not(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, api_key=API_KEY, log_level="warning"))) as client:
        page = client.get("/")
        assert page.status_code == 200 and config_of(page.text)["auth"] is True
        assert API_KEY not in page.text
        for path in ("/model/info", "/model/inputs", "/model/stats", "/model/drift"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200, path


def test_openapi_documents_the_new_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "text/html" in paths["/"]["get"]["responses"]["200"]["content"]
    for path, schema in [("/model/inputs", "ModelInputs"), ("/model/stats", "StatsResponse"), ("/model/drift", "DriftReport")]:
        assert paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(schema)


def test_model_inputs_are_the_manifests_features_and_examples(client: TestClient, model_dir: Path) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    body = client.get("/model/inputs").json()
    assert body["examples"] == manifest["examples"]
    assert [feature["name"] for feature in body["features"]] == [feature["name"] for feature in manifest["features"]]
    first = body["features"][0]
    assert first == {
        "name": "sepal_length", "description": manifest["features"][0]["description"], "exclusive_minimum": 0,
        "min": manifest["features"][0]["min"], "max": manifest["features"][0]["max"],
        # typed features (issue 15): a number, not nullable, no categories
        "kind": "number", "nullable": False, "categories": None, "unknown": "error",
    }


def test_stats_count_requests_predictions_and_flags(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, log_level="warning"))) as client:
        for _ in range(3):
            assert client.post("/predict", json=SEED_EXAMPLE).status_code == 200
        assert client.post("/predict", json=OUT_OF_RANGE_ROW).status_code == 200
        assert client.post("/predict", json=with_value("petal_length", -1)).status_code == 422
        assert client.post("/predict/batch", json={"instances": [SEED_EXAMPLE] * 5}).status_code == 200
        stats = client.get("/model/stats").json()
    StatsResponse.model_validate(stats)
    requests = stats["requests"]
    predict = requests["routes"]["POST /predict"]
    assert predict["requests"] == 5 and predict["errors"] == 1 and predict["statuses"] == {"200": 4, "422": 1}
    assert requests["routes"]["POST /predict/batch"]["requests"] == 1
    assert requests["total"] == 6 and requests["errors"] == 1  # this GET is counted once answered
    assert 0 < requests["p50_ms"] <= requests["p99_ms"]
    assert stats["predictions"] == {"rows": 9, "by_class": {"setosa": 9, "versicolor": 0, "virginica": 0}, "values": None}
    assert stats["out_of_range"] == {"rows": 1, "by_feature": {"sepal_length": 1, "sepal_width": 0, "petal_length": 0, "petal_width": 0}}
    assert stats["drift"]["rows"] == 9


# -- the function: the page for a browser, the JSON for everyone else ---------------------------------


@pytest.fixture(scope="module")
def function(model_dir: Path) -> Iterator[httpx.Client]:
    with function_app(function_env(model_dir)) as in_process:
        yield in_process


def test_a_browser_gets_the_page_from_the_function(function: httpx.Client) -> None:
    response = function.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert_self_contained(response)
    assert config_of(response.text) == {"door": "function", "auth": False, "refresh_seconds": 3.0}
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, text/html", "text/html;q=0.5, application/json"])
def test_other_gets_keep_the_json(function: httpx.Client, accept: str | None) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    response = function.get("/", headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "healthy"


def test_the_function_json_holds_inputs_and_stats(function: httpx.Client, client: TestClient) -> None:
    assert function.post("/", json=SEED_EXAMPLE).status_code == 200
    assert function.post("/", json={"instances": [OUT_OF_RANGE_ROW] * 2}).status_code == 200
    body = function.get("/").json()
    assert body["inputs"] == client.get("/model/inputs").json()
    stats = StatsResponse.model_validate(body["stats"])
    assert stats.requests.routes["POST /"].requests >= 2
    assert stats.predictions.rows >= 3 and stats.out_of_range.by_feature["sepal_length"] >= 2


def test_ui_off_the_function_answers_json_to_a_browser(model_dir: Path) -> None:
    with function_app(function_env(model_dir, IRISSERVE_UI="false")) as client:
        response = client.get("/", headers={"Accept": BROWSER_ACCEPT})
        assert response.headers["content-type"] == "application/json" and response.json()["model_loaded"] is True


def test_both_doors_serve_the_same_page_but_for_its_config() -> None:
    web, function = render_page(door="web", auth=False), render_page(door="function", auth=False)
    assert web.body.replace(b'"door":"web"', b'"door":"function"') == function.body
    assert web.headers == function.headers


# -- the live figures, directly ----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def iris_live(model_dir: Path, **options: object) -> tuple[LiveStats, FakeClock]:
    spec = Predictor(model_dir).spec
    clock = FakeClock()
    return LiveStats(spec, DriftMonitor(spec, clock=clock), clock=clock, **options), clock  # type: ignore[arg-type]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99 and percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7 and percentile([], 0.5) is None


def test_requests_leave_the_window_after_a_minute(model_dir: Path) -> None:
    live, clock = iris_live(model_dir)
    for ms in range(1, 11):
        live.record_request("POST", "/predict", 200, ms / 1000)
    clock.now += 30
    live.record_request("POST", "/predict", 422, 0.5)
    requests = live.body()["requests"]
    assert requests["total"] == 11 and requests["errors"] == 1 and requests["p50_ms"] == 6.0 and requests["p99_ms"] == 500.0
    clock.now += 31
    requests = live.body()["requests"]
    assert requests["total"] == 1 and requests["routes"]["POST /predict"]["statuses"] == {"422": 1}
    clock.now += 30
    assert live.body()["requests"]["total"] == 0 and live.body()["requests"]["p50_ms"] is None


def test_requests_are_counted_over_a_real_minute_at_any_rate_in_bounded_memory(model_dir: Path) -> None:
    live, clock = iris_live(model_dir, max_durations_per_second=100)
    for _ in range(60):  # 60 s at 1,000 requests a second: every one counted, 100 durations kept per second
        clock.now += 1
        for ms in range(1000):
            live.record_request("POST", "/predict", 200 if ms % 100 else 422, (ms + 1) / 1000)
    requests = live.body()["requests"]
    assert requests["total"] == 60_000 and requests["errors"] == 600 and requests["covered_seconds"] == 60
    assert requests["routes"]["POST /predict"]["statuses"] == {"200": 59_400, "422": 600}
    assert 0.35 < requests["p50_ms"] / 1000 < 0.65  # from the uniform sample: the true p50 is 0.5 s
    assert sum(len(counts.durations) for _, routes in live._seconds for counts in routes.values()) <= 61 * 100


def test_a_regressor_reports_its_values(model_dir: Path) -> None:
    spec = ModelSpec(name="r", version="1", task="regression", targets=("y",), examples=({"a": 1.0},),
                     features=(Feature("a", 0.0, 2.0),))
    live = LiveStats(spec, DriftMonitor(spec))
    live.observe(spec, np.ones((2, 1), dtype=np.float32), ValuePredictions([10.0, 30.0]), [[], ["a"]], 0.001)
    live.observe(spec, np.ones((1, 1), dtype=np.float32), ValuePredictions([-4.0]), [[]], 0.001)
    body = live.body()
    assert body["predictions"] == {"rows": 3, "by_class": None, "values": {"mean": 12.0, "min": -4.0, "max": 30.0}}
    assert body["out_of_range"] == {"rows": 1, "by_feature": {"a": 1}}
    StatsResponse.model_validate(body)


def test_a_classifier_counts_rows_by_class(model_dir: Path) -> None:
    live, _ = iris_live(model_dir)
    live.observe(live.spec, np.ones((4, 4), dtype=np.float32), ClassPredictions([0, 2, 2, 1], [[1.0, 0.0, 0.0]] * 4), [[]] * 4, 0.001)
    assert live.body()["predictions"]["by_class"] == {"setosa": 1, "versicolor": 1, "virginica": 2}
