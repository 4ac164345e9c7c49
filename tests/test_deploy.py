"""The container image's recipe and the deployment files, checked offline and fast.

The image itself is built and run by `make image-test` (scripts/image_test.py); here: hadolint on the
Dockerfile, the pins it installs, kubernetes-validate and yamllint on deploy/, and the dry-run output
of the deploy scripts (no gcloud is run: a fake one on PATH fails the test if called): the Iris default,
a packaged wine model (its build argument, names and example row), the Cloud Run canary, promote and
rollback, and the inputs they refuse.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import models_zoo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IRISSERVE = str(BIN / "irisserve")
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
CLOUDRUN = ROOT / "deploy" / "cloudrun" / "service.yaml"
K8S_VERSION = "1.37.0"
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 120}}}"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")
TRAINING_ONLY = {"scikit-learn", "scipy", "skl2onnx", "onnx", "joblib"}
DEPLOY_VARIABLES = {"PROJECT_ID", "REGION", "SERVICE", "FUNCTION", "IMAGE", "TAG", "METHOD", "MODEL_DIR",
                    "CANARY", "CANARY_TAG", "STABLE_TAG", "PERCENT", "REVISION", "DRY_RUN"}
IRIS_EXAMPLE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
WHERE = ["--platform", "managed", "--region", "europe-west1", "--project", "demo-project"]


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not in the venv ({BIN}); it comes from requirements-dev.txt")
    return str(path)


def pins(path: Path) -> dict[str, str]:
    """Exact pins of a requirements file, following -r includes; names normalised."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip()))
        elif line and not line.startswith("#"):
            match = PIN.match(line)
            assert match, f"{path.name}: not an exact pin: {line!r}"
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- Dockerfile --------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_is_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip()
            assert above.startswith("#") and "hadolint" not in above, (
                f"line {number + 1}: say why above '# hadolint ignore='"
            )


def test_dockerfile_keeps_its_promises() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2, "build and final stage from the same base"
    final = final_stage(text)
    user = re.search(r"^USER (\S+)", final, re.MULTILINE)
    assert user and user[1].split(":")[0] not in {"0", "root"}, "final stage runs as non-root"
    assert re.search(r"^HEALTHCHECK .*CMD \[", final, re.MULTILINE | re.DOTALL)
    cmd = re.search(r"^CMD (\[.*\])$", final, re.MULTILINE)
    assert cmd and json.loads(cmd[1])[0] == "irisserve", "exec-form CMD: the server gets SIGTERM"
    assert "IRISSERVE_HOST=0.0.0.0" in final and "PORT=8080" in final
    assert re.search(r"IRISSERVE_MODEL_DIR=/\S+", final), "absolute model directory"
    assert "COPY --from=build /opt/venv" in final
    assert "pip install" not in final and "apt-get" not in final, "final stage installs nothing"


def test_image_installs_exact_pins_and_serving_has_no_training_libraries() -> None:
    serving = pins(ROOT / "requirements.txt")
    training = pins(ROOT / "requirements-train.txt")
    dev = pins(ROOT / "requirements-dev.txt")
    assert not TRAINING_ONLY & serving.keys(), "scikit-learn & co. never reach the final stage"
    assert TRAINING_ONLY <= training.keys()
    mismatched = {name: (version, dev.get(name)) for name, version in training.items()
                  if dev.get(name) != version}
    assert not mismatched, f"requirements-train.txt differs from requirements-dev.txt: {mismatched}"
    text = DOCKERFILE.read_text()
    assert "-r requirements.txt" in text and "-r requirements-train.txt" in text


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*", "allow-list: ignore everything, then re-include"
    assert {"!src/", "!pyproject.toml", "!requirements.txt", "!requirements-train.txt"} <= set(lines)


# --- Kubernetes and Cloud Run manifests --------------------------------------------------------


def test_k8s_manifests_validate_against_current_schema() -> None:
    files = sorted(str(path) for path in K8S.glob("*.yaml"))
    assert len(files) >= 4
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", K8S_VERSION, *files],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files), result.stdout


def test_kubernetes_validate_would_catch_a_typo(tmp_path: Path) -> None:
    (deployment,) = load_all(K8S / "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", K8S_VERSION, str(broken)],
        capture_output=True, text=True,
    )
    assert result.returncode != 0


def test_yamllint_passes_on_deploy() -> None:
    result = subprocess.run(
        [tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, str(ROOT / "deploy")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_deployment_is_hardened_and_probed() -> None:
    (deployment,) = load_all(K8S / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["enableServiceLinks"] is False, "IRISSERVE_PORT=tcp://... would be injected"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"requests", "limits"} <= container["resources"].keys()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "httpGet" in container[probe], f"{probe} is HTTP"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {port["name"] for port in container["ports"]} == {"http"}


def test_k8s_objects_point_at_each_other() -> None:
    (deployment,) = load_all(K8S / "deployment.yaml")
    (service,) = load_all(K8S / "service.yaml")
    (hpa,) = load_all(K8S / "hpa.yaml")
    (pdb,) = load_all(K8S / "pdb.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"], "drains can proceed"
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_cloudrun_service_has_http_startup_probe_and_limits() -> None:
    (service,) = load_all(CLOUDRUN)
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert {"autoscaling.knative.dev/minScale", "autoscaling.knative.dev/maxScale"} <= annotations.keys()
    assert all(isinstance(value, str) for value in annotations.values()), "annotations are strings"
    assert template["spec"]["containerConcurrency"] >= 1
    (container,) = template["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 8080
    assert container["startupProbe"]["httpGet"]["path"] == "/health", "not the default TCP probe"
    assert "tcpSocket" not in container["startupProbe"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert "PORT" not in {env["name"] for env in container.get("env", [])}, "Cloud Run sets PORT"


# --- deploy scripts, dry run -------------------------------------------------------------------


@pytest.fixture
def no_gcloud(tmp_path: Path) -> dict[str, str]:
    """An environment whose gcloud and curl fail loudly: a dry run must not call them."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("gcloud", "curl", "docker"):
        fake = fake_bin / name
        fake.write_text(f"#!/bin/sh\necho 'dry run called {name}' >&2\nexit 99\n")
        fake.chmod(0o755)
    env = {key: value for key, value in os.environ.items()
           if key not in DEPLOY_VARIABLES}
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    env["DRY_RUN"] = "1"
    return env


def dry_run(script: str, env: dict[str, str], *args: str, **variables: str) -> list[list[str]]:
    result = subprocess.run(
        [str(ROOT / "scripts" / script), *args], cwd=ROOT, env={**env, **variables},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run called" not in result.stderr
    return commands_of(result.stdout)


def commands_of(output: str) -> list[list[str]]:
    """The printed script's commands, each split as the shell would (comments left out)."""
    return [shlex.split(line) for line in output.splitlines() if line and not line.startswith("#")]


def find(commands: list[list[str]], *prefix: str) -> list[str]:
    matches = [command for command in commands if command[: len(prefix)] == list(prefix)]
    assert len(matches) == 1, f"expected one {' '.join(prefix)!r} in {commands}"
    return matches[0]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_deploy_cloudrun_dry_run(no_gcloud: dict[str, str]) -> None:
    commands = dry_run("deploy_cloudrun.sh", no_gcloud, PROJECT_ID="demo-project",
                       REGION="europe-west1", SERVICE="iris-web", TAG="t1")
    image = "europe-west1-docker.pkg.dev/demo-project/irisserve/iris-web:t1"
    build = find(commands, "gcloud", "builds", "submit")
    assert option(build, "--tag") == image and option(build, "--project") == "demo-project"
    replace = find(commands, "gcloud", "run", "services", "replace")
    assert replace[4] == "build/cloudrun/service.yaml"
    assert option(replace, "--region") == "europe-west1"
    (rendered,) = load_all(ROOT / replace[4])
    assert rendered["metadata"]["name"] == "iris-web"
    assert rendered["spec"]["template"]["spec"]["containers"][0]["image"] == image
    binding = find(commands, "gcloud", "run", "services", "add-iam-policy-binding")
    assert option(binding, "--member") == "allUsers"
    assert [command[:2] for command in commands if command[0] == "curl"] == [["curl", "-fsS"]] * 2
    assert json.loads(find(commands, "curl", "-fsS", "-X", "POST")[-1]) == IRIS_EXAMPLE


def test_deploy_cloudrun_dry_run_seed_method(no_gcloud: dict[str, str]) -> None:
    commands = dry_run("deploy_cloudrun.sh", no_gcloud, PROJECT_ID="demo-project",
                       REGION="us-east1", METHOD="deploy",
                       IMAGE="gcr.io/demo-project/iris-classifier")
    build = find(commands, "gcloud", "builds", "submit")
    assert option(build, "--tag") == "gcr.io/demo-project/iris-classifier"
    assert not any(command[:3] == ["gcloud", "artifacts", "repositories"] for command in commands)
    deploy = find(commands, "gcloud", "run", "deploy")
    assert deploy[3] == "iris-classifier"
    assert option(deploy, "--image") == "gcr.io/demo-project/iris-classifier"
    assert {"--allow-unauthenticated", "--platform"} <= set(deploy)
    assert (option(deploy, "--memory"), option(deploy, "--cpu")) == ("512Mi", "1")
    assert option(deploy, "--region") == "us-east1"


def test_deploy_function_dry_run_uploads_the_bundle(no_gcloud: dict[str, str]) -> None:
    commands = dry_run("deploy_function.sh", no_gcloud, PROJECT_ID="demo-project", REGION="europe-west1")
    bundle = next(index for index, command in enumerate(commands) if "bundle-function" in command)
    deploy_at = next(index for index, command in enumerate(commands)
                     if command[:3] == ["gcloud", "functions", "deploy"])
    assert bundle < deploy_at, "bundle, then deploy"
    assert option(commands[bundle], "--out") == "build/cloud_function"
    assert option(commands[bundle], "--model-dir") == "models/iris/1.0.0"
    deploy = commands[deploy_at]
    assert deploy[3] == "iris-predict"
    assert option(deploy, "--source") == "build/cloud_function", "the bundle, not the repository"
    assert option(deploy, "--runtime") == "python311"
    assert option(deploy, "--entry-point") == "predict"
    assert option(deploy, "--memory") == "512MB"
    assert option(deploy, "--region") == "europe-west1"
    assert {"--gen2", "--trigger-http", "--allow-unauthenticated"} <= set(deploy)
    assert json.loads(find(commands, "curl", "-fsS", "-X", "POST")[-1]) == IRIS_EXAMPLE


def test_make_passes_variables_to_the_deploy_script(no_gcloud: dict[str, str]) -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "deploy-cloudrun", "PROJECT_ID=from-make", "DRY_RUN=1",
         "TAG=t2"],
        cwd=ROOT, env=no_gcloud, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "us-central1-docker.pkg.dev/from-make/irisserve/iris-classifier:t2" in result.stdout


# --- a packaged model: wine, its canary, promote and rollback ----------------------------------


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A wine forest packaged by `irisserve package` under models/ (the image's build context), named
    wine in its manifest but not in its folder: the scripts must read the manifest, not the path."""
    zoo = models_zoo.wine(tmp_path_factory.mktemp("wine"))
    parent = ROOT / "models" / f"test-deploy-{os.getpid()}"
    out = parent / "1.0.0"
    result = subprocess.run(
        [IRISSERVE, "package", "--model", str(zoo.model_path), "--data", str(zoo.csv_path),
         "--target", models_zoo.TARGET, "--name", "wine", "--version", "1.0.0", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    yield out
    shutil.rmtree(parent, ignore_errors=True)


def wine_example(wine: Path) -> dict[str, float]:
    example: dict[str, float] = json.loads((wine / "manifest.json").read_text())["examples"][0]
    assert "alcohol" in example and "sepal_length" not in example
    return example


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_irisserve_example_prints_the_manifest_example(wine: Path, tmp_path: Path) -> None:
    result = subprocess.run([IRISSERVE, "example", "--model-dir", str(wine)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == wine_example(wine)
    missing = subprocess.run([IRISSERVE, "example", "--model-dir", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1 and "manifest.json" in missing.stderr


def test_make_deploy_cloudrun_builds_names_and_smoke_tests_the_model(no_gcloud: dict[str, str],
                                                                     wine: Path) -> None:
    model_dir = str(wine.relative_to(ROOT))
    result = make(no_gcloud, "deploy-cloudrun", f"MODEL_DIR={model_dir}", "DRY_RUN=1")  # no PROJECT_ID
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run called" not in result.stderr
    commands = commands_of(result.stdout)
    image = f"us-central1-docker.pkg.dev/your-project-id/irisserve/wine-classifier:1.0.0-{commit()}"
    build = find(commands, "gcloud", "builds", "submit")
    assert "--tag" not in build, "--tag cannot pass a build argument"
    assert option(build, "--config") == "deploy/cloudrun/cloudbuild.yaml"
    assert option(build, "--substitutions") == f"_IMAGE={image},_MODEL_DIR={model_dir}"
    assert option(build, "--ignore-file") == "deploy/cloudrun/gcloudignore"
    assert build[-1] == ".", "the repository is the build context"
    (recipe,) = load_all(ROOT / option(build, "--config"))
    (step,) = recipe["steps"]
    assert step["args"] == ["build", "--build-arg", "MODEL_DIR=${_MODEL_DIR}", "--tag", "${_IMAGE}", "."]
    assert recipe["images"] == ["${_IMAGE}"]
    replace = find(commands, "gcloud", "run", "services", "replace")
    (rendered,) = load_all(ROOT / replace[4])
    assert rendered["metadata"]["name"] == "wine-classifier"
    assert rendered["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert find(commands, "gcloud", "run", "services", "add-iam-policy-binding")[4] == "wine-classifier"
    url = next(line for line in result.stdout.splitlines() if line.startswith("URL="))
    assert "gcloud run services describe wine-classifier " in url and "'value(status.url)'" in url
    post = find(commands, "curl", "-fsS", "-X", "POST")
    assert post[4] == "$URL/predict"
    assert json.loads(option(post, "-d")) == wine_example(wine)


def test_the_upload_keeps_packaged_models() -> None:
    # gcloud's default upload list is .gitignore, which names models/: the build would not find the artifact.
    assert "models/" in (ROOT / ".gitignore").read_text().split()
    patterns = [line for line in (ROOT / "deploy/cloudrun/gcloudignore").read_text().splitlines()
                if line and not line.startswith("#")]
    assert ".git" in patterns and not [pattern for pattern in patterns if "model" in pattern or pattern == "*"]


def test_canary_deploys_a_tagged_revision_without_traffic(no_gcloud: dict[str, str], wine: Path) -> None:
    model_dir = str(wine.relative_to(ROOT))
    result = make(no_gcloud, "canary", f"MODEL_DIR={model_dir}", "DRY_RUN=1", "PROJECT_ID=demo-project",
                  "REGION=europe-west1", "TAG=t3")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    commands = commands_of(result.stdout)
    image = "europe-west1-docker.pkg.dev/demo-project/irisserve/wine-classifier:t3"
    assert option(find(commands, "gcloud", "builds", "submit"), "--substitutions") == (
        f"_IMAGE={image},_MODEL_DIR={model_dir}")
    assert not [command for command in commands if command[:4] == ["gcloud", "run", "services", "replace"]]
    stable_at = next(index for index, line in enumerate(lines) if line.startswith("STABLE=$("))
    tag_at = next(index for index, command in enumerate(commands) if "--update-tags" in command)
    deploy_at = next(index for index, command in enumerate(commands) if command[:3] == ["gcloud", "run", "deploy"])
    url_at = next(index for index, line in enumerate(lines) if line.startswith("URL=$("))
    assert stable_at < tag_at < deploy_at < url_at, "tag what serves now, deploy, then find the canary's URL"
    assert lines[tag_at] == ('gcloud run services update-traffic wine-classifier --update-tags "stable=$STABLE" '
                             + " ".join(WHERE))
    assert commands[deploy_at] == ["gcloud", "run", "deploy", "wine-classifier", "--image", image,
                                   "--no-traffic", "--tag", "canary", *WHERE]
    curls = [command for command in commands if command[0] == "curl"]
    assert [command[-1] if command[2] != "-X" else command[4] for command in curls] == ["$URL/health", "$URL/predict"]
    assert json.loads(option(curls[1], "-d")) == wine_example(wine)
    # The printed lookups, run on the service's description after such a deploy.
    described = json.dumps({"status": {"traffic": [
        {"revisionName": "wine-classifier-00001-old", "percent": 100, "tag": "stable",
         "url": "https://stable---wine-classifier-abc-ew.a.run.app"},
        {"revisionName": "wine-classifier-00002-new", "tag": "canary",
         "url": "https://canary---wine-classifier-abc-ew.a.run.app"},
    ]}})
    assert lookup(lines[stable_at], described) == "wine-classifier-00001-old"
    assert lookup(lines[url_at], described) == "https://canary---wine-classifier-abc-ew.a.run.app"


def lookup(line: str, described: str) -> str:
    """Run the part of a printed `VAR=$(gcloud ... | python3 -c '...' [arg])` line after the pipe."""
    words = shlex.split(line[line.index("| ") + 2 : -1])
    assert words[:2] == ["python3", "-c"]
    result = subprocess.run([sys.executable, *words[1:]], input=described, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(("percent", "to_tags"), [
    ("10", "canary=10,stable=90"), ("50", "canary=50,stable=50"), ("100", "canary=100"),
])
def test_promote_moves_traffic_to_the_canary(no_gcloud: dict[str, str], percent: str, to_tags: str) -> None:
    commands = dry_run("cloudrun_traffic.sh", no_gcloud, "promote", PERCENT=percent,
                       PROJECT_ID="demo-project", REGION="europe-west1", SERVICE="wine-classifier")
    assert commands[0] == ["gcloud", "run", "services", "update-traffic", "wine-classifier",
                           "--to-tags", to_tags, *WHERE]
    assert commands[1][:5] == ["gcloud", "run", "services", "describe", "wine-classifier"]


def test_make_promote_names_the_service_after_the_model(no_gcloud: dict[str, str], wine: Path) -> None:
    result = make(no_gcloud, "promote", "PERCENT=10", f"MODEL_DIR={wine}", "DRY_RUN=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert commands_of(result.stdout)[0][:7] == ["gcloud", "run", "services", "update-traffic",
                                                 "wine-classifier", "--to-tags", "canary=10,stable=90"]


def test_rollback_returns_traffic_to_the_stable_revision(no_gcloud: dict[str, str]) -> None:
    commands = dry_run("cloudrun_traffic.sh", no_gcloud, "rollback", PROJECT_ID="demo-project",
                       REGION="europe-west1", SERVICE="wine-classifier")
    assert commands[0] == ["gcloud", "run", "services", "update-traffic", "wine-classifier",
                           "--to-tags", "stable=100", *WHERE]
    named = dry_run("cloudrun_traffic.sh", no_gcloud, "rollback", PROJECT_ID="demo-project",
                    REGION="europe-west1", SERVICE="wine-classifier", REVISION="wine-classifier-00001-old")
    assert named[0] == ["gcloud", "run", "services", "update-traffic", "wine-classifier",
                        "--to-revisions", "wine-classifier-00001-old=100", *WHERE]


def test_deploy_function_smoke_tests_the_model_example(no_gcloud: dict[str, str], wine: Path) -> None:
    commands = dry_run("deploy_function.sh", no_gcloud, PROJECT_ID="demo-project",
                       REGION="europe-west1", MODEL_DIR=str(wine))
    bundle = next(command for command in commands if "bundle-function" in command)
    assert option(bundle, "--model-dir") == str(wine)
    assert not [command for command in commands if "train" in command]
    deploy = find(commands, "gcloud", "functions", "deploy")
    assert deploy[3] == "wine-predict"
    assert ["curl", "-fsS", "$URL"] in commands, "GET: the function's health"
    post = find(commands, "curl", "-fsS", "-X", "POST")
    assert post[4] == "$URL"
    assert json.loads(option(post, "-d")) == wine_example(wine)


@pytest.mark.parametrize(("name", "task", "service", "function"), [
    ("wine", "classification", "wine-classifier", "wine-predict"),
    ("diabetes", "regression", "diabetes-regressor", "diabetes-predict"),
    ("my_model.v2", "classification", "my-model-v2-classifier", "my-model-v2-predict"),
    ("9lives", "regression", "m-9lives-regressor", "m-9lives-predict"),
    ("a" * 60, "classification", "a" * 38 + "-classifier", "a" * 41 + "-predict"),
])
def test_names_after_the_model_are_valid_cloud_run_names(name: str, task: str, service: str, function: str) -> None:
    result = subprocess.run(
        ["bash", "-c", 'source scripts/deploy_lib.sh && service_name "$1" "$2" && cloud_name "$1" predict', "-",
         name, task], cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert result.stdout.split() == [service, function]
    assert all(re.fullmatch(r"[a-z]([a-z0-9-]{0,47}[a-z0-9])?", word) for word in (service, function))


def refused(env: dict[str, str], script: str, *args: str, **variables: str) -> str:
    """Run a script that must refuse its input: exit 2, one line on stderr, no command printed."""
    result = subprocess.run([str(ROOT / "scripts" / script), *args], cwd=ROOT, env={**env, **variables},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    return result.stderr


@pytest.mark.parametrize("percent", ["0", "101", "-5", "abc", "1.5", ""])
def test_promote_refuses_a_percent_outside_1_to_100(no_gcloud: dict[str, str], percent: str) -> None:
    stderr = refused(no_gcloud, "cloudrun_traffic.sh", "promote", PERCENT=percent, PROJECT_ID="demo-project")
    assert "PERCENT must be a whole number from 1 to 100" in stderr and f"'{percent}'" in stderr


@pytest.mark.parametrize(("script", "args"), [
    ("deploy_cloudrun.sh", ()), ("deploy_function.sh", ()), ("cloudrun_traffic.sh", ("rollback",)),
    ("cloudrun_traffic.sh", ("promote",)),
])
def test_deploy_scripts_need_a_project_unless_dry_run(no_gcloud: dict[str, str], script: str,
                                                     args: tuple[str, ...]) -> None:
    assert "PROJECT_ID" in refused(no_gcloud, script, *args, DRY_RUN="0", PERCENT="10")


@pytest.mark.parametrize(("script", "args"), [
    ("deploy_cloudrun.sh", ()), ("deploy_function.sh", ()), ("cloudrun_traffic.sh", ("rollback",)),
])
def test_deploy_scripts_refuse_a_model_dir_without_manifest(no_gcloud: dict[str, str], tmp_path: Path,
                                                            script: str, args: tuple[str, ...]) -> None:
    stderr = refused(no_gcloud, script, *args, MODEL_DIR=str(tmp_path), PROJECT_ID="demo-project")
    assert f"MODEL_DIR={tmp_path} has no manifest.json" in stderr


def test_deploy_cloudrun_refuses_a_model_outside_the_build_context(no_gcloud: dict[str, str], wine: Path,
                                                                   tmp_path: Path) -> None:
    outside = tmp_path / "wine"
    shutil.copytree(wine, outside)
    stderr = refused(no_gcloud, "deploy_cloudrun.sh", MODEL_DIR=str(outside), PROJECT_ID="demo-project")
    assert "outside this repository" in stderr


def test_make_refuses_with_the_scripts_line(no_gcloud: dict[str, str]) -> None:
    result = make(no_gcloud, "promote", "PERCENT=200", "DRY_RUN=1")
    assert result.returncode != 0
    assert "PERCENT must be a whole number from 1 to 100" in result.stderr.splitlines()[0]
