"""Replicas behind HAProxy on a real single-node Swarm, under load: rollouts, rollbacks, kills, scaling,
and a real Prometheus in the stack adding up the replicas' request counts.

One stack (`make cluster-up REPLICAS=3 PROMETHEUS=1`) serves the whole module, through the make verbs
users run, while a bounded load of concurrent /predict requests goes through the load balancer; every answer
is checked against the model of the version it names. Without a reachable engine these tests skip,
and with REQUIRE_DOCKER=1 (set by .ci/run) they fail instead (as tests/test_docker.py's do).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from skserve.artifact import MODEL_FILE
from tests.live_server import REPO, free_port
from tests.test_docker import base_image, docker, engine  # noqa: F401 (fixtures shared with the image's tests)

pytestmark = [pytest.mark.docker, pytest.mark.cluster]

STACK = "cluster-test"
REPOSITORY = "cluster-test-skserve"
API = f"{STACK}_api"
REPLICAS = 3
PORT = free_port()  # the load balancer's
PROMETHEUS_PORT = free_port()
NEW_SEED = "7"  # the update's training option: the default seed is 42
CLIENTS = 4
PAUSE_S = 0.01  # between a client's requests: a steady load that leaves the CPUs some room
MAX_REQUESTS = 100_000
MAX_LOAD_S = 300.0
VERB_TIMEOUT_S = 900
ROWS = np.random.default_rng(11).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(64, 4)).round(1).tolist()


# --- the stack, through the make verbs --------------------------------------------------------------


def make_verb(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a make cluster-* verb on the test's stack; fail with its output if `check` and it fails."""
    result = subprocess.run(
        ["make", "--no-print-directory", *args, f"CLUSTER_STACK={STACK}", f"CLUSTER_IMAGE={REPOSITORY}",
         f"CLUSTER_PORT={PORT}", f"PROMETHEUS_PORT={PROMETHEUS_PORT}"],
        cwd=REPO, capture_output=True, text=True, timeout=VERB_TIMEOUT_S, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        output = result.stdout + result.stderr
        raise AssertionError(f"make {' '.join(args)} failed ({result.returncode}):\n{output[-5000:]}")
    return result


@dataclass
class Cluster:
    base_image: str
    up_output: str
    made_swarm: bool
    # Each model version served so far, with its predictions for ROWS.
    expected: dict[str, list[str]] = field(default_factory=dict)

    def image(self) -> str:
        spec = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
        return docker("service", "inspect", "--format", spec, API).stdout.strip()

    def learn(self, image: str, tmp_path: Path) -> str:
        """Copy the model out of `image`, remember its answers for ROWS; return its version."""
        container = docker("create", image).stdout.strip()
        try:
            docker("cp", f"{container}:/app/models/.", str(tmp_path))
        finally:
            docker("rm", container)
        version: str = json.loads((tmp_path / "model.json").read_text())["version"]
        self.expected[version] = joblib.load(tmp_path / MODEL_FILE).predict(np.array(ROWS)).tolist()
        return version

    def running_tasks(self) -> list[str]:
        """The container ids of the api's tasks that are running (healthy, in Swarm's terms)."""
        service = f"label=com.docker.swarm.service.name={API}"
        return docker("ps", "--quiet", "--filter", service, "--filter", "health=healthy").stdout.split()

    def wait_for_replicas(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running_tasks()) != count:
            assert time.monotonic() < deadline, docker("service", "ps", API).stdout
            time.sleep(0.5)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


@pytest.fixture(scope="module")
def cluster(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # noqa: F811
    swarm_before = swarm_state()
    try:
        up = make_verb("cluster-up", f"REPLICAS={REPLICAS}", "PROMETHEUS=1", f"BASE_IMAGE={base_image}")
        built = Cluster(base_image, up.stdout + up.stderr, made_swarm=swarm_before != "active")
        built.learn(built.image(), tmp_path_factory.mktemp("first-model"))
        yield built
    finally:
        make_verb("cluster-down", check=False)
        if swarm_before != "active" and swarm_state() == "active":
            docker("swarm", "leave", "--force")  # the test made it; cluster-down should have left it


# --- the load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    row: int
    version: str
    predictions: list[str]


@dataclass
class Tally:
    """What the clients saw: the answers (checked afterwards, once every version's model is known)
    and every failed request."""

    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def versions(self) -> Counter[str]:
        return Counter(answer.version for answer in self.answers)

    def problems(self, cluster: Cluster) -> list[str]:
        """Every failed request and every answer that is not its named model's."""

        def right(answer: Answer) -> bool:
            expected = cluster.expected.get(answer.version)
            return expected is not None and answer.predictions == [expected[answer.row]]

        wrong = [
            f"row {answer.row}: model {answer.version} answered {answer.predictions}"
            for answer in self.answers
            if not right(answer)
        ]
        return self.failures + wrong


def post_row(connection: http.client.HTTPConnection, row: int) -> Answer | str:
    """POST ROWS[row] over a keep-alive connection: the answer, or what went wrong. The connection
    is closed (to reopen on the next request) when the server asks."""
    body = json.dumps({"instances": [ROWS[row]]})
    try:
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        status, answer = reply.status, reply.read()
        if reply.getheader("Connection", "").lower() == "close":
            connection.close()
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        return f"{type(error).__name__}: {error}"
    if status != 200:
        return f"status {status}: {answer[:200]!r}"
    decoded = json.loads(answer)
    return Answer(row, decoded["model_version"], decoded["predictions"])


def send_load(tally: Tally, stop: threading.Event, lock: threading.Lock) -> None:
    """One client: requests one after another until `stop` (at most MAX_LOAD_S and its share of
    MAX_REQUESTS)."""
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=15)
    deadline = time.monotonic() + MAX_LOAD_S
    for index in range(MAX_REQUESTS // CLIENTS):
        if stop.is_set() or time.monotonic() > deadline:
            break
        outcome = post_row(connection, index % len(ROWS))
        time.sleep(PAUSE_S)
        with lock:
            if isinstance(outcome, Answer):
                tally.answers.append(outcome)
            else:
                tally.failures.append(outcome)
    connection.close()


@contextmanager
def under_load() -> Iterator[Tally]:
    """CLIENTS concurrent clients through the load balancer for the block (bounded in count and time)."""
    tally, stop, lock = Tally(), threading.Event(), threading.Lock()
    clients = [threading.Thread(target=send_load, args=(tally, stop, lock)) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.0)  # the load is flowing before anything happens
        yield tally
        time.sleep(1.0)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    assert tally.answers


def versions_now(cluster: Cluster, requests: int = 60) -> Counter[str]:
    """Which versions answer a short burst of requests, every answer checked."""
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=15)
    tally = Tally()
    try:
        for index in range(requests):
            outcome = post_row(connection, index % len(ROWS))
            assert isinstance(outcome, Answer), outcome
            tally.answers.append(outcome)
    finally:
        connection.close()
    assert tally.problems(cluster) == []
    return tally.versions()


# --- Prometheus in the stack ---------------------------------------------------------------------------

PROMETHEUS_TIMEOUT_S = 60.0  # its scrape and discovery intervals are 5 s (deploy/prometheus)
GOOD, BAD = 45, 9


def query(expression: str) -> list[dict[str, Any]]:
    """An instant query of Prometheus's HTTP API, through its port published on the host."""
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as reply:
        answer = json.loads(reply.read())
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def by_label(label: str, expression: str) -> dict[str, float]:
    return {sample["metric"][label]: float(sample["value"][1]) for sample in query(expression)}


def wait_until(check: Any, what: str) -> Any:
    """Poll `check()` until it returns something true, for at most PROMETHEUS_TIMEOUT_S."""
    deadline = time.monotonic() + PROMETHEUS_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:  # Prometheus not answering yet
            found = None
        if found:
            return found
        time.sleep(0.5)
    logs = docker("service", "logs", f"{STACK}_prometheus", check=False)
    raise AssertionError(f"timed out waiting for {what}:\n{(logs.stdout + logs.stderr)[-3000:]}")


def task_addresses(cluster: Cluster) -> set[str]:
    """Each running replica's address on the stack's overlay network, as Prometheus names it."""
    addresses = set()
    for task in cluster.running_tasks():
        networks = json.loads(docker("inspect", task).stdout)[0]["NetworkSettings"]["Networks"]
        addresses.add(f"{networks[f'{STACK}_skserve']['IPAddress']}:8000")
    return addresses


def post_status(body: object) -> int:
    """POST /predict through the load balancer on a new connection (so HAProxy picks a replica)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/predict", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code


# --- the tests, in the order one stack goes through them ----------------------------------------------


def test_prometheus_in_the_stack_finds_every_replica_and_sums_their_request_counts(cluster: Cluster) -> None:
    """First, while no /predict has reached any replica yet: the counts start from nothing."""
    replicas = task_addresses(cluster)
    assert len(replicas) == REPLICAS
    wait_until(
        lambda: set(by_label("instance", 'up{job="skserve"} == 1')) == replicas,
        f"Prometheus to scrape {replicas}",
    )

    statuses = Counter(post_status({"instances": [ROWS[index % len(ROWS)]]}) for index in range(GOOD))
    statuses += Counter(post_status({"instances": [["x", 1, 2, 3]]}) for _ in range(BAD))
    assert statuses == Counter({200: GOOD, 400: BAD})
    sent_at = time.time()

    # Every replica scraped after the last request, then the counts are exact.
    wait_until(
        lambda: min(by_label("instance", 'timestamp(up{job="skserve"})').values(), default=0) > sent_at + 0.5,
        "a scrape of every replica after the last request",
    )
    predict = 'skserve_requests_total{endpoint="/predict"}'
    assert by_label("status", f"sum by (status) ({predict})") == {"200": GOOD, "400": BAD}
    per_replica = by_label("instance", f"sum by (instance) ({predict})")
    assert set(per_replica) <= replicas
    assert len([count for count in per_replica.values() if count > 0]) > 1, per_replica
    assert sum(per_replica.values()) == GOOD + BAD
    # One model everywhere, as the skew alert counts; the rules loaded and evaluate across replicas.
    assert (
        float(query('count(count by (version, sha256) (skserve_model_info{job="skserve"}))')[0]["value"][1])
        == 1
    )
    wait_until(lambda: query("job:skserve_requests:rate1m"), "the recording rule across replicas")


def test_cluster_up_waits_for_every_replica_healthy_and_prints_the_url(cluster: Cluster) -> None:
    assert f"http://127.0.0.1:{PORT}" in cluster.up_output
    assert f"{REPLICAS}/{REPLICAS} replicas healthy, serving {REPOSITORY}:cluster-" in cluster.up_output
    assert len(cluster.running_tasks()) == REPLICAS  # healthy when cluster-up returned, not later
    (first,) = cluster.expected
    assert versions_now(cluster) == Counter({first: 60})
    limits = json.loads(docker("service", "inspect", API).stdout)[0]["Spec"]["TaskTemplate"]["Resources"]
    assert limits["Limits"]["NanoCPUs"] == 1_000_000_000
    status = make_verb("cluster-status").stdout
    assert status.count(f"{REPOSITORY}:cluster-") >= REPLICAS
    assert f'"model_version":"{first}"' in status


def test_a_rolling_update_under_load_fails_no_request_and_ends_on_the_new_model(
    cluster: Cluster, tmp_path: Path
) -> None:
    (old,) = cluster.expected
    old_image = cluster.image()
    with under_load() as tally:
        began = time.monotonic()
        update = make_verb("cluster-update", f"TRAIN_SEED={NEW_SEED}", f"BASE_IMAGE={cluster.base_image}")
        took = time.monotonic() - began
    new_image = cluster.image()
    assert new_image != old_image
    new = cluster.learn(new_image, tmp_path)
    assert new != old
    assert tally.problems(cluster) == [], tally.problems(cluster)[:10]
    # Old and new answered side by side (the check of every answer allows only these two), then only new.
    assert set(tally.versions()) == {old, new}, tally.versions()
    assert f"updated: every replica serves {new_image}" in update.stdout
    assert versions_now(cluster) == Counter({new: 60})
    print(f"rolling update of {REPLICAS} replicas: {took:.0f} s with the build, {len(tally.answers)} answers")


def test_an_image_whose_model_is_corrupt_never_serves_and_is_rolled_back(cluster: Cluster) -> None:
    serving = cluster.image()
    corrupt = f"{REPOSITORY}:cluster-corrupt"
    dockerfile = f"FROM {serving}\nUSER 0\nRUN printf '\\0' >> /app/models/{MODEL_FILE}\nUSER 10001:10001\n"
    subprocess.run(
        ["docker", "build", "--quiet", "--tag", corrupt, "-"], input=dockerfile, text=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin"}, capture_output=True, check=True,
    )  # fmt: skip
    with under_load() as tally:
        update = make_verb("cluster-update", f"UPDATE_IMAGE={corrupt}", check=False)
    assert update.returncode != 0
    assert f"rolled back: {corrupt} failed" in update.stderr
    assert cluster.image() == serving
    assert tally.problems(cluster) == [], tally.problems(cluster)[:10]
    assert len(tally.versions()) == 1, tally.versions()  # only the serving version answered
    failed = docker("service", "ps", "--format", "{{.Image}} {{.Error}}", API).stdout.splitlines()
    assert any(line.startswith(corrupt) and "exit" in line for line in failed), failed
    cluster.wait_for_replicas(REPLICAS)


def test_docker_kill_of_a_replica_under_load_fails_no_request_and_swarm_replaces_it(cluster: Cluster) -> None:
    before = cluster.running_tasks()
    with under_load() as tally:
        docker("kill", before[0])
        time.sleep(3.0)
        cluster.wait_for_replicas(REPLICAS)
    after = cluster.running_tasks()
    assert tally.problems(cluster) == [], tally.problems(cluster)[:10]
    assert before[0] not in after
    assert len(after) == REPLICAS


WORKERS = """
import json, os
workers = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        with open(f'/proc/{pid}/stat') as stream:
            parent = int(stream.read().rsplit(')', 1)[1].split()[1])
        with open(f'/proc/{pid}/cmdline', 'rb') as stream:
            command = stream.read()
    except OSError:
        continue
    if parent == 1 and b'gunicorn' in command:
        workers.append(int(pid))
print(json.dumps(workers))
"""


def gunicorn_workers(container: str) -> list[int]:
    workers: list[int] = json.loads(docker("exec", container, "python", "-c", WORKERS).stdout)
    return workers


def test_a_worker_killed_inside_a_replica_is_restarted_and_no_request_fails(cluster: Cluster) -> None:
    container = cluster.running_tasks()[0]
    (worker,) = gunicorn_workers(container)  # one CPU each: one worker
    with under_load() as tally:
        docker("exec", container, "python", "-c", f"import os, signal; os.kill({worker}, signal.SIGKILL)")
        deadline = time.monotonic() + 30
        while (restarted := gunicorn_workers(container)) in ([], [worker]):
            assert time.monotonic() < deadline, "gunicorn did not start a new worker"
            time.sleep(0.2)
        time.sleep(2.0)
    assert tally.problems(cluster) == [], tally.problems(cluster)[:10]
    assert len(restarted) == 1
    assert container in cluster.running_tasks()  # the replica itself kept running


def test_scaling_1_3_1_under_load_fails_no_request(cluster: Cluster) -> None:
    with under_load() as tally:
        for replicas in (1, 3, 1):
            output = make_verb("cluster-scale", f"REPLICAS={replicas}").stdout
            assert f"{replicas}/{replicas} replicas healthy" in output
            assert len(cluster.running_tasks()) == replicas
    assert tally.problems(cluster) == [], tally.problems(cluster)[:10]


def test_cluster_down_removes_the_stack_and_its_images_and_the_swarm_it_made(cluster: Cluster) -> None:
    down = make_verb("cluster-down").stdout
    assert f"removed stack {STACK}" in down
    stack = f"label=com.docker.stack.namespace={STACK}"
    assert docker("ps", "--all", "--quiet", "--filter", stack).stdout == ""
    assert docker("network", "ls", "--quiet", "--filter", stack).stdout == ""
    assert docker("image", "ls", "--quiet", REPOSITORY).stdout == ""
    assert docker("image", "ls", "--quiet", f"{REPOSITORY}-haproxy").stdout == ""
    assert docker("image", "ls", "--quiet", f"{REPOSITORY}-prometheus").stdout == ""
    assert ("left the swarm that cluster-up made" in down) == cluster.made_swarm
    assert (swarm_state() == "active") != cluster.made_swarm
