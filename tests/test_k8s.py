"""deploy/k8s: the kustomize base passes kubernetes-validate --strict and yamllint, and holds together.

No Kubernetes API server can run here, so what the schemas cannot see (labels that select the
pods, probes on real routes, a grace period that covers the stop) is asserted on the parsed files.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from skserve.auth import ApiKeysError, read_keys
from tests.live_server import REPO

K8S = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent
YAMLLINT_CONFIG = REPO / "deploy" / ".yamllint.yaml"
# The oldest Kubernetes still widely run, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.28.0", "1.37.0"]
KUBECTL = shutil.which("kubectl")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


def validate(*paths: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--kubernetes-version", version, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return load("kustomization.yaml")


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[Path]:
    return [K8S / name for name in kustomization["resources"]]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return load("deployment.yaml")


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return dict(only)


def env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


# --- the tools -----------------------------------------------------------------------------------


def test_yamllint_passes_on_every_deploy_file() -> None:
    run = subprocess.run(
        [
            str(BIN / "yamllint"),
            "--strict",
            "-c",
            str(YAMLLINT_CONFIG),
            "-f",
            "parsable",
            str(REPO / "deploy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_kubernetes_validate_strict(manifests: list[Path], version: str) -> None:
    run = validate(*manifests, version=version)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" passed for resource ") == len(manifests)


def test_kubernetes_validate_as_run_here_rejects_a_misspelt_field(tmp_path: Path) -> None:
    misspelt = tmp_path / "deployment.yaml"
    misspelt.write_text((K8S / "deployment.yaml").read_text().replace("periodSeconds:", "periodSecond:", 1))
    run = validate(misspelt, version=KUBERNETES_VERSIONS[-1])
    assert run.returncode != 0
    assert "periodSecond" in run.stdout + run.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kubectl kustomize deploy/k8s`: what `kubectl apply -k` would send, generated Secret included."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (apt-get install kubernetes-client): kustomize runs in it")
    output = tmp_path_factory.mktemp("kustomize") / "built.yaml"
    run = subprocess.run(
        [KUBECTL, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    output.write_text(run.stdout)
    return output


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kustomize_output_passes_kubernetes_validate_strict(built: Path, version: str) -> None:
    run = validate(built, version=version)
    assert run.returncode == 0, run.stdout + run.stderr
    kinds = re.findall(r"passed for resource (\w+)/", run.stdout)
    assert sorted(kinds) == [
        "deployment",
        "horizontalpodautoscaler",
        "poddisruptionbudget",
        "secret",
        "service",
    ]


def test_the_kustomize_output_mounts_the_generated_secret(built: Path) -> None:
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(built.read_text())}
    secret_name = documents["Secret"]["metadata"]["name"]
    assert re.fullmatch(r"skserve-api-keys-[a-z0-9]{10}", secret_name)  # hashed: new keys roll the pods
    volumes = documents["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": secret_name}} in volumes


# --- what the schemas cannot see -----------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_its_secret_file(kustomization: dict[str, Any]) -> None:
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    (generator,) = kustomization["secretGenerator"]
    assert all((K8S / name).is_file() for name in generator["files"])


def test_the_base_keys_file_holds_no_key_so_the_base_alone_does_not_start(
    kustomization: dict[str, Any],
) -> None:
    (generator,) = kustomization["secretGenerator"]
    with pytest.raises(ApiKeysError, match="holds no key"):
        read_keys(K8S / generator["files"][0])


def test_every_selector_matches_the_pods_labels(deployment: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels
    assert load("service.yaml")["spec"]["selector"].items() <= labels
    assert load("pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= labels
    target = load("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (deployment["kind"], deployment["metadata"]["name"])


def test_the_service_targets_the_port_gunicorn_listens_on(container: dict[str, Any]) -> None:
    (port,) = container["ports"]
    (service_port,) = load("service.yaml")["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    assert port["containerPort"] == 8000  # the image's PORT (Dockerfile)


def test_probes_ask_the_real_routes_which_answer_200(container: dict[str, Any], app: Flask) -> None:
    probes = {
        kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/ready",
        "readinessProbe": "/ready",
        "livenessProbe": "/health",
    }
    assert {probe["port"] for probe in probes.values()} == {container["ports"][0]["name"]}
    client = app.test_client()
    assert all(client.get(probe["path"]).status_code == 200 for probe in probes.values())


def test_rolling_updates_never_take_a_replica_away_and_disruptions_leave_one(
    deployment: dict[str, Any],
) -> None:
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert load("hpa.yaml")["spec"]["minReplicas"] >= 2
    assert load("pdb.yaml")["spec"]["maxUnavailable"] == 1


def test_the_grace_period_covers_the_pause_the_drain_and_gunicorns_graceful_timeout(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "python"  # the image's own interpreter (its HEALTHCHECK runs it too)
    (pause,) = re.findall(r"time\.sleep\((\d+)\)", command[-1])
    drain = int(env(container)["SKSERVE_DRAIN_SECONDS"])
    needed = int(pause) + drain + graceful_timeout()
    assert pod["terminationGracePeriodSeconds"] > needed
    assert f"{pause} + {drain} + {graceful_timeout()} + " in (K8S / "deployment.yaml").read_text()


def graceful_timeout() -> int:
    """gunicorn's graceful_timeout, read from its settings module's source (importing it has effects)."""
    tree = ast.parse((REPO / "src" / "skserve" / "gunicorn_config.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "graceful_timeout":
            return int(ast.literal_eval(node.value))
    raise AssertionError("gunicorn_config.py sets no graceful_timeout")


def test_the_pod_runs_unprivileged_on_a_read_only_root(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    assert pod["automountServiceAccountToken"] is False
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == tuple(
        map(int, dockerfile_user.groups())
    )
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    # gunicorn's metrics files go to /tmp, on a read-only root: it must be a volume of its own.
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 (a path inside the pod)


def test_requests_and_limits_are_set_for_cpu_and_memory(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_the_api_keys_file_is_the_secret_mounted_read_only(
    container: dict[str, Any], pod: dict[str, Any], kustomization: dict[str, Any]
) -> None:
    keys_file = Path(env(container)["SKSERVE_API_KEYS_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == keys_file.parent]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    (generator,) = kustomization["secretGenerator"]
    assert volume["secret"]["secretName"] == generator["name"]
    assert keys_file.name in generator["files"]  # a generated Secret's key is the file's name
