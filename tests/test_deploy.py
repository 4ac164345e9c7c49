"""The container image's recipe and the deployment files, checked offline and fast.

The image itself is built and run by `make image-test` (scripts/image_test.py); here: hadolint on the
Dockerfile, the pins it installs, kubernetes-validate and yamllint on deploy/, and the dry-run output
of both deploy scripts (no gcloud is run: a fake one on PATH fails the test if called).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
CLOUDRUN = ROOT / "deploy" / "cloudrun" / "service.yaml"
K8S_VERSION = "1.37.0"
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 120}}}"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")
TRAINING_ONLY = {"scikit-learn", "scipy", "skl2onnx", "onnx", "joblib"}


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
           if key not in {"PROJECT_ID", "REGION", "SERVICE", "FUNCTION", "IMAGE", "TAG", "METHOD"}}
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    env["DRY_RUN"] = "1"
    return env


def dry_run(script: str, env: dict[str, str], **variables: str) -> list[list[str]]:
    result = subprocess.run(
        [str(ROOT / "scripts" / script)], cwd=ROOT, env={**env, **variables},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run called" not in result.stderr
    commands = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    return [shlex.split(line) for line in commands]


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


def test_deploy_function_dry_run_uploads_the_bundle(no_gcloud: dict[str, str],
                                                    tmp_path: Path) -> None:
    commands = dry_run("deploy_function.sh", no_gcloud, PROJECT_ID="demo-project",
                       REGION="europe-west1", MODEL_DIR=str(tmp_path / "no-model"))
    train = next(index for index, command in enumerate(commands) if "train" in command)
    bundle = next(index for index, command in enumerate(commands) if "bundle-function" in command)
    deploy_at = next(index for index, command in enumerate(commands)
                     if command[:3] == ["gcloud", "functions", "deploy"])
    assert train < bundle < deploy_at, "train (no artifact yet), bundle, then deploy"
    assert option(commands[bundle], "--out") == "build/cloud_function"
    deploy = commands[deploy_at]
    assert deploy[3] == "iris-predict"
    assert option(deploy, "--source") == "build/cloud_function", "the bundle, not the repository"
    assert option(deploy, "--runtime") == "python311"
    assert option(deploy, "--entry-point") == "predict"
    assert option(deploy, "--memory") == "512MB"
    assert option(deploy, "--region") == "europe-west1"
    assert {"--gen2", "--trigger-http", "--allow-unauthenticated"} <= set(deploy)


@pytest.mark.parametrize("script", ["deploy_cloudrun.sh", "deploy_function.sh"])
def test_deploy_scripts_need_a_project(no_gcloud: dict[str, str], script: str) -> None:
    result = subprocess.run([str(ROOT / "scripts" / script)], cwd=ROOT, env=no_gcloud,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "PROJECT_ID" in result.stderr


def test_make_passes_variables_to_the_deploy_script(no_gcloud: dict[str, str]) -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "deploy-cloudrun", "PROJECT_ID=from-make", "DRY_RUN=1",
         "TAG=t2"],
        cwd=ROOT, env=no_gcloud, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "us-central1-docker.pkg.dev/from-make/irisserve/iris-classifier:t2" in result.stdout
