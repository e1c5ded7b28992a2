"""deploy/prometheus: promtool accepts the configuration and rules, their unit tests pass, and a real
Prometheus beside two replicas on a Docker network finds both and adds up their request counts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from tests.live_server import REPO, free_port
from tests.test_docker import (  # noqa: F401 (engine and base_image: fixtures, used by name)
    CONTAINER_PORT,
    READ_ONLY,
    Container,
    base_image,
    docker,
    engine,
    make,
)

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
ROW = [5.1, 3.5, 1.4, 0.2]


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    return document


def alert_names() -> set[str]:
    return {
        rule["alert"] for group in load("rules.yml")["groups"] for rule in group["rules"] if "alert" in rule
    }


# --- promtool ------------------------------------------------------------------------------------


def test_promtool_accepts_the_configuration_and_the_rule_file_it_names() -> None:
    run = promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 1 rule files found" in run.stdout
    assert "SUCCESS: prometheus.yml is valid prometheus config file syntax" in run.stdout


def test_promtool_accepts_the_rules() -> None:
    run = promtool("check", "rules", "rules.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 10 rules found" in run.stdout


def test_the_rules_unit_tests_pass() -> None:
    run = promtool("test", "rules", "tests.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_the_rules_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    """promtool really compares: a looser threshold makes an expected alert go missing."""
    rules = (PROMETHEUS_DIR / "rules.yml").read_text()
    assert "ratio_rate1m > 0.05" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("ratio_rate1m > 0.05", "ratio_rate1m > 0.5"))
    shutil.copy(PROMETHEUS_DIR / "tests.yml", tmp_path)
    run = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert run.returncode != 0
    assert "alertname: SkserveHighErrorRatio" in run.stdout + run.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    expectations: dict[str, set[bool]] = {}
    for test in load("tests.yml")["tests"]:
        for case in test.get("alert_rule_test", []):
            expectations.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert expectations == {name: {True, False} for name in alert_names()}


def test_the_rules_use_only_metrics_the_server_exposes(client: FlaskClient) -> None:
    client.post("/predict", json={"instances": [ROW]})  # so every labelled series has a sample
    exposed = set(re.findall(r"^(skserve_\w+?)(?:\{| )", client.get("/metrics").get_data(as_text=True), re.M))
    used = set(
        re.findall(r"\b(skserve_[a-z_]+_(?:total|bucket|info))\b", (PROMETHEUS_DIR / "rules.yml").read_text())
    )
    assert used
    assert used <= exposed


# --- a real Prometheus beside two replicas -------------------------------------------------------

SERVICE_PORT = load("prometheus.yml")["scrape_configs"][0]["dns_sd_configs"][0]["port"]
GOOD, BAD, REFUSED = 200, 400, 401
# Requests per replica: (answered, refused as invalid, refused without a key).
SENT = {"a": (30, 5, 4), "b": (20, 3, 2)}
PROMETHEUS_TIMEOUT_S = 90.0


def scraped_name() -> str:
    """The DNS name Prometheus asks for the replicas (tasks.<service> in a Swarm)."""
    (name,) = load("prometheus.yml")["scrape_configs"][0]["dns_sd_configs"][0]["names"]
    return str(name)


@pytest.fixture(scope="module")
def images(base_image: str) -> Iterator[tuple[str, str]]:  # noqa: F811 (the imported fixture)
    """skserve's image (`make docker-build`, layers cached) and Prometheus's, both on the local base;
    removed afterwards (their layers stay in the build cache)."""
    skserve, prometheus = "ops-skserve:test", "ops-prometheus:test"
    make("docker-build", f"IMAGE={skserve}", f"BASE_IMAGE={base_image}")
    built = subprocess.run(
        ["docker", "build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image}", "-t", prometheus, "."],
        cwd=PROMETHEUS_DIR,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the classic builder: no BuildKit feature is needed
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        assert built.returncode == 0, built.stderr[-5000:]
        yield skserve, prometheus
    finally:
        docker("image", "rm", skserve, prometheus, check=False)


class Replicas:
    """Two skserve containers and a Prometheus on one user-defined network, removed at the end."""

    def __init__(self, skserve: str, prometheus: str, keys_file: Path) -> None:
        self.network = f"ops-prometheus-{uuid.uuid4().hex[:8]}"
        self.containers: dict[str, Container] = {}
        docker("network", "create", self.network)
        for name in SENT:
            self.containers[name] = self._run(
                skserve,
                f"{self.network}-{name}",
                *READ_ONLY,
                # Both answer to one name, as a Swarm's tasks do: Docker's DNS returns both addresses.
                "--network-alias",
                scraped_name(),
                "--publish",
                f"127.0.0.1::{CONTAINER_PORT}",
                "--mount",
                f"type=bind,source={keys_file},target=/run/secrets/skserve-api-keys,readonly",
                "--env",
                "SKSERVE_API_KEYS_FILE=/run/secrets/skserve-api-keys",
            )
        self.prometheus_port = free_port()
        self.containers["prometheus"] = self._run(
            prometheus, f"{self.network}-prometheus", "--publish", f"127.0.0.1:{self.prometheus_port}:9090"
        )

    def _run(self, image: str, name: str, *flags: str) -> Container:
        container = Container(
            docker("run", "--detach", "--name", name, "--network", self.network, *flags, image).stdout.strip()
        )
        return container

    def url(self, name: str) -> str:
        address = docker("port", self.containers[name].id, f"{CONTAINER_PORT}/tcp").stdout.splitlines()[0]
        return f"http://{address}"

    def address(self, name: str) -> str:
        networks = self.containers[name].inspect()["NetworkSettings"]["Networks"]
        return f"{networks[self.network]['IPAddress']}:{SERVICE_PORT}"

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query of Prometheus's HTTP API, through its port published on 127.0.0.1."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=10) as reply:
            answer = json.loads(reply.read())
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def remove(self) -> None:
        for container in self.containers.values():
            docker("rm", "--force", "--volumes", container.id, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def replicas(images: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys"
    keys_file.write_text("ops-test-key\n")
    keys_file.chmod(0o644)  # the server runs as uid 10001
    running = Replicas(*images, keys_file)
    try:
        yield running
    finally:
        running.remove()


def wait_for(check: Any, what: str, replicas: Replicas) -> Any:
    """Poll `check()` until it returns something true; fail naming `what` after the timeout."""
    deadline = time.monotonic() + PROMETHEUS_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    logs = "\n".join(f"--- {name}\n{c.logs()[-3000:]}" for name, c in replicas.containers.items())
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def post(url: str, body: Any, key: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{url}/predict", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.docker
def test_prometheus_finds_both_replicas_by_dns_and_adds_up_their_request_counts(replicas: Replicas) -> None:
    def both_up() -> bool:
        return {sample["metric"]["instance"] for sample in replicas.query('up{job="skserve"} == 1')} == {
            replicas.address(name) for name in SENT
        }

    wait_for(both_up, "Prometheus to scrape both replicas", replicas)

    for name, (good, bad, refused) in SENT.items():
        url = replicas.url(name)
        statuses = [post(url, {"instances": [ROW]}, "ops-test-key") for _ in range(good)]
        statuses += [post(url, {"instances": [["x", 1, 2, 3]]}, "ops-test-key") for _ in range(bad)]
        statuses += [post(url, {"instances": [ROW]}, None) for _ in range(refused)]
        assert statuses == [GOOD] * good + [BAD] * bad + [REFUSED] * refused

    expected = {
        str(status): sum(counts[index] for counts in SENT.values())
        for index, status in enumerate((GOOD, BAD, REFUSED))
    }

    def totals() -> dict[str, float] | None:
        found = {
            sample["metric"]["status"]: float(sample["value"][1])
            for sample in replicas.query('sum by (status) (skserve_requests_total{endpoint="/predict"})')
        }
        return found if found == expected else None

    assert (
        wait_for(totals, f"sum(skserve_requests_total) by status to reach {expected}", replicas) == expected
    )
    by_replica = {
        sample["metric"]["instance"]: float(sample["value"][1])
        for sample in replicas.query('sum by (instance) (skserve_requests_total{endpoint="/predict"})')
    }
    assert by_replica == {replicas.address(name): float(sum(counts)) for name, counts in SENT.items()}
    refusals = replicas.query('sum(skserve_errors_total{code="unauthorized"})')
    assert float(refusals[0]["value"][1]) == sum(counts[2] for counts in SENT.values())
    # Both serve one model, so the skew alert's expression finds one.
    assert (
        float(
            replicas.query('count(count by (version, sha256) (skserve_model_info{job="skserve"}))')[0][
                "value"
            ][1]
        )
        == 1
    )
    # The rules loaded and evaluate: the recording rule across replicas has a value.
    wait_for(lambda: replicas.query("job:skserve_requests:rate1m"), "the recording rule", replicas)
