"""deploy/prometheus: promtool accepts the configuration and rules, and their unit tests pass. A real
Prometheus in the Swarm stack, summing the replicas' request counts, is tests/test_cluster.py's."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from tests.live_server import REPO

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


def test_the_scrape_config_asks_for_the_tasks_of_the_stacks_api_service() -> None:
    """tests/test_cluster.py runs this Prometheus in the stack; here, without Docker, the one name."""
    stack = yaml.safe_load((REPO / "deploy" / "swarm" / "stack.yml").read_text())
    extra = yaml.safe_load((REPO / "deploy" / "swarm" / "prometheus.yml").read_text())
    (discovery,) = load("prometheus.yml")["scrape_configs"][0]["dns_sd_configs"]
    assert discovery["names"] == ["tasks.api"]
    assert "api" in stack["services"]
    assert extra["services"]["prometheus"]["networks"] == stack["services"]["api"]["networks"]
