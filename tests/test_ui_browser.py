"""The model page in a real browser: Debian's Chromium (/usr/bin/chromium, headless) driven by Playwright for
Python, against live uvicorn and functions-framework processes on loopback.

Marked ``browser`` and left out of the default run; ``make browser-test`` installs Chromium with apt-get when it
is missing and runs them. Never ``playwright install``: it downloads a browser build, which this network refuses.
The Iris page's screenshot is saved to docs/ui.png for the README.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pandas as pd
import playwright.sync_api as playwright_api  # requirements-dev.txt; its browser is Debian's, never `playwright install`
import pytest
from playwright.sync_api import Page
from sklearn.datasets import load_iris

import models_zoo
from support import REPO_ROOT, SEED_EXAMPLE, VIRGINICA, RunningServer, build_repository, free_port, run_server, uvicorn_command
from ui_prefix_app import PREFIX

pytestmark = pytest.mark.browser

expect = playwright_api.expect

CHROMIUM = Path(os.environ.get("IRISSERVE_CHROMIUM", "/usr/bin/chromium"))
# As root Chromium needs --no-sandbox; the others stop it calling Google's hosts, which this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = REPO_ROOT / "docs" / "ui.png"
IRISSERVE = str(Path(sys.executable).parent / "irisserve")
API_KEY = "browser-key"
WAIT_MS = 15_000
VERSICOLOR = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5}
BORDERLINE = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.6}


class Site(NamedTuple):
    url: str  # the page's URL
    api: str  # where the JSON routes are (the page's URL less the trailing slash, or the function's one URL)
    manifest: dict[str, Any]
    model_dir: Path


def js(value: float) -> str:
    """A number as JavaScript's String() writes it: 2.0 is "2"."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def csv_line(row: dict[str, float]) -> str:
    return ",".join(str(value) for value in row.values())


# -- browser and servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make browser-test` installs Debian's chromium (apt-get) and runs these tests.")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A fresh tab, 1280 wide; fails the test on a script error or a Content-Security-Policy refusal."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", lambda message: problems.append(message.text) if "Refused" in message.text else None)
    yield tab
    context.close()
    assert problems == []


def served(model_dir: Path, tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[Site]:
    port = free_port()
    log = tmp_path_factory.mktemp(name) / "web.log"
    environment = {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_LOG_LEVEL": "warning", **env}
    with run_server(uvicorn_command(port), port=port, log_path=log, env=environment) as server:
        manifest = json.loads((model_dir / "manifest.json").read_text())
        yield Site(server.base_url + "/", server.base_url, manifest, model_dir)


@pytest.fixture(scope="module")
def iris(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from served(model_dir, tmp_path_factory, "iris")


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The diabetes GradientBoostingRegressor, packaged by the CLI and served."""
    folder = tmp_path_factory.mktemp("diabetes")
    zoo = models_zoo.diabetes(folder / "source")
    out = folder / "artifact"
    result = subprocess.run(
        [IRISSERVE, "package", "--model", str(zoo.model_path), "--data", str(zoo.csv_path), "--target", models_zoo.TARGET,
         "--name", "diabetes", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    yield from served(out, tmp_path_factory, "diabetes-web")


@pytest.fixture(scope="module")
def keyed(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from served(model_dir, tmp_path_factory, "keyed", IRISSERVE_API_KEY=API_KEY)


@pytest.fixture(scope="module")
def prefixed(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The web service mounted under /iris/, as behind a path-prefix proxy."""
    port = free_port()
    command = [*uvicorn_command(port, "ui_prefix_app:create"), "--factory", "--app-dir", str(REPO_ROOT / "tests")]
    log = tmp_path_factory.mktemp("prefixed") / "web.log"
    env = {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_LOG_LEVEL": "warning"}
    with run_server(command, port=port, log_path=log, env=env, ready_path=f"{PREFIX}/health") as server:
        manifest = json.loads((model_dir / "manifest.json").read_text())
        yield Site(f"{server.base_url}{PREFIX}/", f"{server.base_url}{PREFIX}", manifest, model_dir)


@pytest.fixture(scope="module")
def function(live_function: RunningServer, model_dir: Path) -> Site:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    return Site(live_function.base_url + "/", live_function.base_url + "/", manifest, model_dir)


# -- page helpers --------------------------------------------------------------------------------------


def open_page(page: Page, site: Site) -> None:
    page.goto(site.url)
    expect(page.locator("#card-facts")).to_be_visible()
    expect(page.locator("#f-0")).not_to_have_value("")


def predict_form(page: Page) -> None:
    page.click("#predict-button")
    expect(page.locator("#prediction")).to_be_visible()


def fill_row(page: Page, row: dict[str, float]) -> None:
    for index, value in enumerate(row.values()):
        page.fill(f"#f-{index}", str(value))


def live_requests(page: Page) -> int:
    text = page.inner_text("#live-requests")
    return int(text) if text.isdigit() else -1


def send_predictions(site: Site, rows: list[dict[str, float]], *, function: bool = False, batch: int = 250) -> None:
    with httpx.Client(timeout=30) as client:
        url = site.api if function else site.api + "/predict/batch"
        for start in range(0, len(rows), batch):
            response = client.post(url, json={"instances": rows[start : start + batch]})
            assert response.status_code == 200, response.text


def check_try_it(page: Page) -> None:
    """The seed example pre-filled: setosa, three bars, the setosa bar full."""
    for index, value in enumerate(SEED_EXAMPLE.values()):
        expect(page.locator(f"#f-{index}")).to_have_value(js(value))
    predict_form(page)
    expect(page.locator("#prediction")).to_contain_text("setosa")
    bars = page.locator("#result .bar")
    expect(bars).to_have_count(3)
    assert page.locator('#result .bar[data-label="setosa"]').evaluate("bar => bar.style.width") == "100%"
    expect(page.locator("#result")).to_contain_text("Every feature is within its training range")


def check_batch(page: Page, rows: list[dict[str, float]], expected: list[str], *, header: str | None = None) -> None:
    lines = ([header] if header else []) + [csv_line(row) for row in rows]
    page.fill("#batch-input", "\n".join(lines))
    page.click("#batch-button")
    body_rows = page.locator("#batch-table tr")
    expect(body_rows).to_have_count(len(rows) + 1)  # and the header row
    predicted = [body_rows.nth(i + 1).locator("td").nth(1).inner_text() for i in range(len(rows))]
    assert predicted == expected


def check_live_count_rises(page: Page, site: Site, *, function: bool = False) -> None:
    """The panel refreshes by itself (every 3 s): after 10 more predictions its count has risen by 10 or more."""
    page.wait_for_function("() => /^[0-9]+$/.test(document.getElementById('live-requests').textContent)")
    before = live_requests(page)
    with httpx.Client(timeout=10) as client:
        for _ in range(10):
            assert client.post(site.api if function else site.api + "/predict", json=SEED_EXAMPLE).status_code == 200
    page.wait_for_function(
        "least => Number(document.getElementById('live-requests').textContent) >= least", arg=before + 10, timeout=WAIT_MS
    )
    expect(page.locator("#live-routes")).to_contain_text("POST /" if function else "POST /predict")


# -- the Iris page on the web service --------------------------------------------------------------------


def test_the_card_shows_the_manifests_values(page: Page, iris: Site) -> None:
    open_page(page, iris)
    manifest = iris.manifest
    facts = page.inner_text("#card-facts")
    for value in (manifest["name"], manifest["version"], manifest["task"], manifest["model"]["type"], manifest["created_at"]):
        assert value in facts
    assert "setosa, versicolor, virginica" in facts
    expect(page.locator("#title")).to_have_text(f"{manifest['name']} {manifest['version']}")
    expect(page.locator("#picker")).to_be_hidden()  # one model at one version: nothing to pick
    parameters = page.inner_text("#card-parameters")
    assert re.search(r"n_estimators\s+100", parameters)
    metrics = page.inner_text("#card-metrics")
    for name, value in manifest["metrics"].items():
        assert re.search(rf"{re.escape(name)}\s+{re.escape(js(value))}", metrics), (name, value)
    rows = page.locator("#card-features tr")
    expect(rows).to_have_count(len(manifest["features"]) + 1)
    for index, feature in enumerate(manifest["features"]):
        cells = rows.nth(index + 1).locator("td").all_inner_texts()
        assert cells == [feature["name"], js(feature["min"]), js(feature["max"])]
    libraries = page.inner_text("#card-libraries")
    for library, version in manifest["libraries"].items():
        assert re.search(rf"{re.escape(library)}\s+{re.escape(version)}", libraries)
    files = page.inner_text("#card-files")
    for name, entry in manifest["files"].items():
        assert name in files and entry["sha256"] in files and str(entry["bytes"]) in files
    assert hashlib.sha256((iris.model_dir / "manifest.json").read_bytes()).hexdigest() in files


def test_the_seed_example_shows_setosa_and_three_bars(page: Page, iris: Site) -> None:
    open_page(page, iris)
    check_try_it(page)
    page.click("text=Example 2")
    for index, value in enumerate(VIRGINICA.values()):
        expect(page.locator(f"#f-{index}")).to_have_value(js(value))
    predict_form(page)
    expect(page.locator("#prediction")).to_contain_text("virginica")


def test_an_invalid_value_shows_that_fields_message(page: Page, iris: Site) -> None:
    open_page(page, iris)
    page.fill("#f-2", "-1")  # petal_length must be > 0
    page.click("#predict-button")
    expect(page.locator("#e-2")).to_have_text("Input should be greater than 0")
    expect(page.locator("#f-2")).to_have_class(re.compile(r"\binvalid\b"))
    for other in (0, 1, 3):
        expect(page.locator(f"#e-{other}")).to_have_text("")
    page.fill("#f-2", "1.4")
    page.fill("#f-0", "five")
    page.fill("#f-3", "")
    page.click("#predict-button")
    expect(page.locator("#e-0")).to_have_text("Input should be a valid number")
    expect(page.locator("#e-3")).to_have_text("Field required")
    expect(page.locator("#e-2")).to_have_text("")


def test_an_out_of_range_value_is_flagged(page: Page, iris: Site) -> None:
    open_page(page, iris)
    page.fill("#f-0", "9.5")
    predict_form(page)
    expect(page.locator("#result .flag")).to_have_text(["sepal_length"])


def test_three_pasted_csv_rows_give_three_predictions(page: Page, iris: Site) -> None:
    open_page(page, iris)
    rows = [SEED_EXAMPLE, VERSICOLOR, VIRGINICA]
    check_batch(page, rows, ["setosa", "versicolor", "virginica"])
    header = ",".join(["target", *reversed(list(SEED_EXAMPLE))])  # a header: any column order, extra columns ignored
    page.fill("#batch-input", "\n".join([header, *(f"0,{csv_line(dict(reversed(list(row.items()))))}" for row in rows)]))
    page.click("#batch-button")
    expect(page.locator("#batch-table tr")).to_have_count(4)
    expect(page.locator("#batch-note")).to_have_text("ignored columns: target")
    page.fill("#batch-input", "5.1,3.5,1.4,0.2\n5.1,3.5,-1,0.2")
    page.click("#batch-button")
    expect(page.locator("#batch-message")).to_have_text("Row 2, petal_length: Input should be greater than 0")


def test_the_live_panel_count_rises_after_requests(page: Page, iris: Site) -> None:
    open_page(page, iris)
    check_live_count_rises(page, iris)
    expect(page.locator("#live-drift tr")).to_have_count(len(iris.manifest["features"]) + 1)
    expect(page.locator("#live-predictions")).to_contain_text("setosa")


def test_screenshot_for_the_readme(page: Page, iris: Site) -> None:
    """docs/ui.png: the Iris page after some traffic, one feature shifted so the drift table shows a flag."""
    data = load_iris().data
    rows = data[np.random.default_rng(7).integers(0, len(data), 600)]
    rows[300:, 3] += 2 * data[:, 3].std()
    send_predictions(iris, [dict(zip(SEED_EXAMPLE, map(float, row), strict=True)) for row in rows])
    open_page(page, iris)
    fill_row(page, BORDERLINE)
    predict_form(page)
    check_batch(page, [SEED_EXAMPLE, VERSICOLOR, VIRGINICA], ["setosa", "versicolor", "virginica"])
    page.click("#live-refresh")
    expect(page.locator("#live-drift")).to_contain_text("drifted")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- any model, any door, any prefix ----------------------------------------------------------------------


def test_a_regression_model_gets_its_own_form_and_a_number(page: Page, diabetes: Site) -> None:
    open_page(page, diabetes)
    manifest = diabetes.manifest
    names = [feature["name"] for feature in manifest["features"]]
    expect(page.locator("#fields input")).to_have_count(len(names))
    assert [page.locator(f"#f-{i}").get_attribute("data-feature") for i in range(len(names))] == names
    assert "Predicts" in page.inner_text("#card-facts") and "GradientBoostingRegressor" in page.inner_text("#card-facts")
    predict_form(page)
    expected = httpx.post(diabetes.api + "/predict", json=manifest["examples"][0], timeout=10).json()["prediction"]
    shown = page.inner_text("#prediction .prediction")
    assert float(shown) == pytest.approx(expected)
    expect(page.locator("#result .bar")).to_have_count(0)
    check_batch(page, manifest["examples"], [repr(float(
        httpx.post(diabetes.api + "/predict", json=row, timeout=10).json()["prediction"])) for row in manifest["examples"]])
    page.click("#live-refresh")
    expect(page.locator("#live-predictions")).to_contain_text("mean")
    expect(page.locator("#live-drift tr")).to_have_count(len(names) + 1)


def test_the_function_serves_the_same_page_at_its_one_url(page: Page, function: Site) -> None:
    open_page(page, function)
    assert "iris" in page.inner_text("#card-facts")
    check_try_it(page)
    check_batch(page, [SEED_EXAMPLE, VERSICOLOR, VIRGINICA], ["setosa", "versicolor", "virginica"])
    check_live_count_rises(page, function, function=True)
    expect(page.locator("#links a")).to_have_count(0)  # no Swagger or /metrics on the function
    expect(page.locator("#picker")).to_be_hidden()  # and no /models: one model at its one URL


def test_the_page_works_behind_a_path_prefix(page: Page, prefixed: Site) -> None:
    open_page(page, prefixed)
    check_try_it(page)
    check_batch(page, [SEED_EXAMPLE, VIRGINICA], ["setosa", "virginica"])
    check_live_count_rises(page, prefixed)
    assert page.locator("#links a").first.evaluate("link => new URL(link.href).pathname") == f"{PREFIX}/docs"


def test_with_an_api_key_the_page_asks_for_it_and_keeps_it_in_memory(page: Page, keyed: Site) -> None:
    page.goto(keyed.url)
    expect(page.locator("#key-box")).to_be_visible()
    expect(page.locator("#card-message")).to_contain_text("API key")
    page.fill("#api-key", "wrong")
    page.click("#key-apply")
    expect(page.locator("#key-status")).to_have_text("key refused")
    page.fill("#api-key", API_KEY)
    page.click("#key-apply")
    expect(page.locator("#card-facts")).to_be_visible()
    check_try_it(page)
    page.wait_for_function("() => /^[0-9]+$/.test(document.getElementById('live-requests').textContent)")
    stored = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie, location.href]")
    assert stored == [0, 0, "", keyed.url]


# -- /docs and /redoc -------------------------------------------------------------------------------------


def outside_requests(page: Page, origin: str) -> list[str]:
    """Every request the tab makes to another origin, recorded from now on."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if not request.url.startswith((origin, "data:", "blob:")) else None)
    return seen


@pytest.mark.parametrize("site_name", ["iris", "prefixed"])
def test_swagger_ui_renders_from_the_service_alone(page: Page, site_name: str, request: pytest.FixtureRequest) -> None:
    """No CDN: the page, its script and CSS come from the service (at the root and behind a prefix), under its CSP."""
    site: Site = request.getfixturevalue(site_name)
    outside = outside_requests(page, site.api.split("/iris")[0])
    page.goto(site.url + "docs")
    # exactly the seed route: /models/{model_name}/predict/batch and its version's end with it too
    expect(page.locator(".opblock-summary-path", has_text=re.compile(r"^/predict/batch$"))).to_be_visible()
    expect(page.locator(".information-container .title")).to_contain_text("irisserve")
    assert outside == []


def test_redoc_renders_from_the_service_alone(page: Page, iris: Site) -> None:
    outside = outside_requests(page, iris.api)
    page.goto(iris.url + "redoc")
    expect(page.get_by_text("/predict/batch").first).to_be_attached()
    assert outside == []


# -- a typed model: the churn pipeline (categories, gaps, an integer) ------------------------------------------

CHURN_HELD_OUT = "churn-held-out.csv"


class Churn(NamedTuple):
    site: Site
    estimator: Any


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Churn]:
    """The churn pipeline packaged by the CLI with a held-out CSV (--eval-data), and served."""
    folder = tmp_path_factory.mktemp("churn")
    zoo = models_zoo.churn(folder / "source")
    table, churned = models_zoo.churn_table(rows=120, seed=7)
    held_out = folder / CHURN_HELD_OUT
    table.assign(**{models_zoo.TARGET: churned}).to_csv(held_out, index=False)
    out = folder / "artifact"
    result = subprocess.run(
        [IRISSERVE, "package", "--model", str(zoo.model_path), "--data", str(zoo.csv_path), "--target", models_zoo.TARGET,
         "--eval-data", str(held_out), "--name", "churn", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for site in served(out, tmp_path_factory, "churn-web"):
        yield Churn(site, zoo.estimator)


def churn_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as the estimator reads them: a missing value is NaN."""
    return pd.DataFrame(rows, columns=["plan", "country", "tenure_months", "monthly_fee"]).fillna(np.nan)


def test_a_category_is_a_select_of_its_values_and_the_card_says_where_the_metrics_come_from(page: Page, churn: Churn) -> None:
    open_page(page, churn.site)
    plan, country = page.locator("#f-0"), page.locator("#f-1")
    assert plan.evaluate("node => node.tagName") == "SELECT"
    assert plan.locator("option").evaluate_all("options => options.map((o) => o.value)") == ["basic", "pro"]
    # country has gaps in the training data: an empty option sends null
    assert country.locator("option").evaluate_all("options => options.map((o) => o.value)") == ["", "DE", "FR", "US"]
    tenure = page.locator("#f-2")
    assert (tenure.get_attribute("type"), tenure.get_attribute("step")) == ("number", "1")
    assert page.locator("#f-3").get_attribute("type") == "text"
    expect(page.locator("#e-3").locator("xpath=..")).to_contain_text("may be left empty")
    expect(page.locator("#card-features")).to_contain_text("basic, pro")
    expect(page.locator("#card-metrics-source")).to_have_text(f"Computed on held-out: {CHURN_HELD_OUT}, 120 rows.")
    metrics = page.inner_text("#card-metrics")
    assert "accuracy" in metrics and "f1" in metrics


def test_a_prediction_with_empty_nullable_fields_is_the_models_own(page: Page, churn: Churn) -> None:
    open_page(page, churn.site)
    page.select_option("#f-0", "pro")
    page.select_option("#f-1", "")
    page.fill("#f-2", "12")
    page.fill("#f-3", "")
    predict_form(page)
    row = {"plan": "pro", "country": None, "tenure_months": 12, "monthly_fee": None}
    frame = churn_frame([row])
    label = str(churn.estimator.predict(frame)[0])
    confidence = float(churn.estimator.predict_proba(frame).max())
    expect(page.locator("#prediction .prediction")).to_have_text(label)
    expect(page.locator("#prediction")).to_contain_text(f"confidence {100 * confidence:.1f} %")
    expect(page.locator("#result .bar")).to_have_count(2)
    expect(page.locator("#predict-message")).to_have_text("")


def test_pasted_csv_with_strings_empty_cells_and_quoted_commas_gives_the_models_predictions(page: Page, churn: Churn) -> None:
    open_page(page, churn.site)
    rows = [
        {"plan": "pro", "country": None, "tenure_months": 12, "monthly_fee": None},
        {"plan": "basic", "country": "DE", "tenure_months": 30, "monthly_fee": 55.5},
        {"plan": "basic", "country": "US", "tenure_months": 0, "monthly_fee": None},
        {"plan": "pro", "country": "Paris, FR", "tenure_months": 2, "monthly_fee": 90.0},  # unseen: predicted, flagged
    ]
    lines = ["pro,,12,", '"basic",DE,30,55.5', 'basic,"US",0,', 'pro,"Paris, FR",2,90']
    expected = [str(label) for label in churn.estimator.predict(churn_frame(rows))]
    page.fill("#batch-input", "\n".join(lines))
    page.click("#batch-button")
    body_rows = page.locator("#batch-table tr")
    expect(body_rows).to_have_count(len(rows) + 1)
    expect(page.locator("#batch-message")).to_have_text("")
    assert [body_rows.nth(i + 1).locator("td").nth(1).inner_text() for i in range(len(rows))] == expected
    assert body_rows.nth(4).locator("td").nth(3).inner_text() == "country"
    # with a header in another order, the target column ignored
    page.fill("#batch-input", "\n".join(["monthly_fee,target,country,plan,tenure_months", ",yes,,pro,12", '55.5,no,"DE",basic,30']))
    page.click("#batch-button")
    expect(body_rows).to_have_count(3)
    assert [body_rows.nth(i + 1).locator("td").nth(1).inner_text() for i in range(2)] == expected[:2]
    # an empty cell where a value is required is named by the server
    page.fill("#batch-input", ",DE,30,55.5")
    page.click("#batch-button")
    expect(page.locator("#batch-message")).to_have_text("Row 1, plan: Field required")


# -- a model repository: the model/version picker ------------------------------------------------------------


class Repository(NamedTuple):
    url: str
    root: Path

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        return json.loads((self.root / name / version / "manifest.json").read_text())


@pytest.fixture(scope="module")
def repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    """`irisserve serve --models`: iris 1.0.0 and 1.1.0 (serving), wine 1.0.0; iris the default."""
    folder = tmp_path_factory.mktemp("repository")
    root = build_repository(folder / "models", model_dir)
    port = free_port()
    command = [IRISSERVE, "serve", "--models", str(root), "--default-model", "iris", "--port", str(port)]
    with run_server(command, port=port, log_path=folder / "serve.log", env={"IRISSERVE_LOG_LEVEL": "warning"}) as server:
        yield Repository(server.base_url + "/", root)


PICKER_LABELS = ["iris 1.1.0 (serving, default)", "iris 1.0.0", "wine 1.0.0"]


def pick(page: Page, label: str, title: str) -> None:
    page.select_option("#model-picker", label=label)
    expect(page.locator("#title")).to_have_text(title)
    expect(page.locator("#f-0")).not_to_have_value("")


def predicted_by(page: Page, click: str, path: str) -> dict[str, Any]:
    """The JSON answer to the request ``click`` makes the page send to ``path`` (relative to the page)."""
    with page.expect_response(lambda response: response.request.method == "POST" and response.url.endswith("/" + path)) as answer:
        page.click(click)
    assert answer.value.status == 200
    body: dict[str, Any] = answer.value.json()
    return body


def check_live_is(page: Page, repository: Repository, stats_path: str, features: int) -> None:
    """The live panel shows the figures ``stats_path`` answers: its rows predicted, one drift row per feature."""
    with page.expect_response(lambda response: response.url.endswith("/" + stats_path)):
        page.click("#live-refresh")
    rows = httpx.get(repository.url + stats_path, timeout=10).json()["predictions"]["rows"]
    expect(page.locator("#live-rows")).to_have_text(str(rows))
    expect(page.locator("#live-drift tr")).to_have_count(features + 1)


def test_the_picker_repoints_the_card_form_batch_and_live_panel(page: Page, repository: Repository) -> None:
    send_predictions(Site(repository.url, repository.url.rstrip("/"), {}, repository.root), [SEED_EXAMPLE] * 20)
    page.goto(repository.url)
    expect(page.locator("#picker")).to_be_visible()
    expect(page.locator("#model-picker option")).to_have_text(PICKER_LABELS)
    expect(page.locator("#title")).to_have_text("iris 1.1.0")
    check_try_it(page)  # the default entry: the seed routes, the page as it always was

    wine = repository.manifest("wine", "1.0.0")
    names = [feature["name"] for feature in wine["features"]]
    pick(page, "wine 1.0.0", "wine 1.0.0")
    assert page.evaluate("() => location.hash") == "#model=wine"
    expect(page.locator("#fields input")).to_have_count(len(names))
    assert [page.locator(f"#f-{i}").get_attribute("data-feature") for i in range(len(names))] == names
    expect(page.locator("#card-features")).to_contain_text("alcohol")
    answer = predicted_by(page, "#predict-button", "models/wine/predict")
    expected = httpx.post(repository.url + "models/wine/predict", json=wine["examples"][0], timeout=10).json()
    assert answer == expected and set(answer["probabilities"]) == {"0", "1", "2"}  # wine's answer, wine's classes
    expect(page.locator("#prediction .prediction")).to_have_text(expected["prediction"])
    page.fill("#batch-input", "\n".join(csv_line(row) for row in wine["examples"]))
    batch = predicted_by(page, "#batch-button", "models/wine/predict/batch")
    expect(page.locator("#batch-table tr")).to_have_count(len(wine["examples"]) + 1)
    assert [answer["prediction"] for answer in batch["predictions"]] == [
        httpx.post(repository.url + "models/wine/predict", json=row, timeout=10).json()["prediction"] for row in wine["examples"]
    ]
    check_live_is(page, repository, "models/wine/stats", len(names))
    expect(page.locator("#live-routes")).to_contain_text("/models/")
    assert page.inner_text("#live-rows") != str(httpx.get(repository.url + "model/stats", timeout=10).json()["predictions"]["rows"])

    pick(page, "iris 1.0.0", "iris 1.0.0")
    assert page.evaluate("() => location.hash") == "#model=iris@1.0.0"
    assert predicted_by(page, "#predict-button", "models/iris/versions/1.0.0/predict")["model_version"] == "1.0.0"
    expect(page.locator("#prediction")).to_contain_text("setosa")
    check_batch(page, [SEED_EXAMPLE, VERSICOLOR, VIRGINICA], ["setosa", "versicolor", "virginica"])
    check_live_is(page, repository, "models/iris/versions/1.0.0/stats", 4)

    page.reload()  # the pick is in the URL: it survives a reload
    expect(page.locator("#title")).to_have_text("iris 1.0.0")
    expect(page.locator("#model-picker")).to_have_value("iris@1.0.0")
    assert predicted_by(page, "#predict-button", "models/iris/versions/1.0.0/predict")["model_version"] == "1.0.0"

    pick(page, "iris 1.1.0 (serving, default)", "iris 1.1.0")  # back to the default: the seed routes, no fragment
    assert page.evaluate("() => location.href") == repository.url
    assert predicted_by(page, "#predict-button", "predict")["model_version"] == "1.1.0"


def test_a_link_with_a_pick_opens_on_it_and_an_unknown_one_on_the_default(page: Page, repository: Repository) -> None:
    page.goto(repository.url + "#model=wine")
    expect(page.locator("#title")).to_have_text("wine 1.0.0")
    expect(page.locator("#model-picker")).to_have_value("wine")
    page.goto(repository.url + "#model=iris@9.9.9")
    expect(page.locator("#title")).to_have_text("iris 1.1.0")
    expect(page.locator("#model-picker")).to_have_value("iris")
    assert page.evaluate("() => location.hash") == ""
    page.evaluate("() => { location.hash = 'model=iris@1.0.0'; }")  # typed into the address bar
    expect(page.locator("#title")).to_have_text("iris 1.0.0")


def test_model_names_from_the_server_are_shown_as_text(page: Page, iris: Site) -> None:
    """A listing with markup in its names (here faked): each is an option's text, never HTML, and its URL is encoded."""
    hostile = '<img src=x onerror="document.title=1">'
    listing = {"default_model": "iris", "models": [
        {"name": "iris", "serving_version": "1.0.0", "versions": ["1.0.0"], "default": True},
        {"name": hostile, "serving_version": "1&amp;2", "versions": ['0"><b>x</b>', "1&amp;2"], "default": False},
    ]}
    page.route("**/models", lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(listing)))
    open_page(page, iris)
    expect(page.locator("#model-picker option")).to_have_text(
        ["iris 1.0.0 (default)", f"{hostile} 1&amp;2 (serving)", f'{hostile} 0"><b>x</b>'])
    expect(page.locator("#picker img, #picker b")).to_have_count(0)
    name = "models/%3Cimg%20src%3Dx%20onerror%3D%22document.title%3D1%22%3E"
    with page.expect_response(lambda response: response.url.endswith("/info")) as answer:
        page.select_option("#model-picker", index=1)
    assert answer.value.url == f"{iris.url}{name}/info"
    expect(page.locator("#card-message")).to_contain_text("Unknown model '<img src=x")  # the server's 404, as text
    with page.expect_response(lambda response: response.url.endswith("/info")) as answer:
        page.select_option("#model-picker", index=2)
    assert answer.value.url == f"{iris.url}{name}/versions/0%22%3E%3Cb%3Ex%3C%2Fb%3E/info"
    expect(page.locator("#card-message")).to_have_text("Not Found")
    expect(page.locator("#picker img, #picker b, #card img, #card b")).to_have_count(0)
    assert page.title() != "1"


def test_without_a_models_list_the_page_is_as_before(page: Page, iris: Site) -> None:
    """A server or proxy that answers 404 for models (an older irisserve): no picker, no message, the page works."""
    page.route("**/models", lambda route: route.fulfill(status=404, content_type="application/json", body='{"detail": "Not Found"}'))
    open_page(page, iris)
    expect(page.locator("#picker")).to_be_hidden()
    expect(page.locator("#card-message")).to_have_text("")
    check_try_it(page)


# -- categories of integers: the households pipeline (region, num_children one-hot encoded integers) --------------


@pytest.fixture(scope="module")
def households(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Churn]:
    folder = tmp_path_factory.mktemp("households")
    zoo = models_zoo.households(folder / "source")
    out = folder / "artifact"
    result = subprocess.run(
        [IRISSERVE, "package", "--model", str(zoo.model_path), "--data", str(zoo.csv_path), "--target", models_zoo.TARGET,
         "--name", "households", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for site in served(out, tmp_path_factory, "households-web"):
        yield Churn(site, zoo.estimator)


def test_a_category_of_integers_is_a_select_sent_as_json_integers(page: Page, households: Churn) -> None:
    open_page(page, households.site)
    region = page.locator("#f-0")
    assert region.evaluate("node => node.tagName") == "SELECT"
    assert region.locator("option").evaluate_all("options => options.map((o) => o.value)") == ["1", "2", "3", "4", "5"]
    assert page.locator("#f-2").get_attribute("step") == "1"  # age: an integer
    page.select_option("#f-0", "4")
    page.select_option("#f-1", "2")
    page.fill("#f-2", "40")
    page.fill("#f-3", "3")
    page.fill("#f-4", "")
    predict_form(page)
    frame = pd.DataFrame([{"region": 4, "num_children": 2, "age": 40, "rooms": 3, "income": np.nan}])
    expect(page.locator("#prediction .prediction")).to_have_text(str(households.estimator.predict(frame)[0]))
    expect(page.locator("#predict-message")).to_have_text("")
    # pasted CSV: an unseen region is predicted and flagged, an unseen num_children named by the server
    page.fill("#batch-input", "9,2,40,3,\n1,0,30,2,80.5")
    page.click("#batch-button")
    body_rows = page.locator("#batch-table tr")
    expect(body_rows).to_have_count(3)
    assert body_rows.nth(1).locator("td").nth(3).inner_text() == "region"
    page.fill("#batch-input", "1,7,30,2,80.5")
    page.click("#batch-button")
    expect(page.locator("#batch-message")).to_contain_text("Row 1, num_children: Input should be one of the training data's categories: 0, 1, 2, 3, 4")
