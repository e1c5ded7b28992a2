"""The docs page: the model card and a prediction form, self-contained, tested as a person would use it."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from flask.testing import FlaskClient

import train
from skserve import create_app
from skserve.artifact import MODEL_FILE, read_card, write_artifact
from tests.browser import CHROMIUM, Browser, chromium
from tests.live_server import LiveServer, running

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = [6.1, 2.8, 4.7, 1.2]
# `make screenshot` sets this to docs/screenshot.png; otherwise the picture stays in the test's tmp_path.
SCREENSHOT_ENV = "SKSERVE_SCREENSHOT"


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_page_shows_the_model_card_and_a_form_with_one_input_per_feature(
    client: FlaskClient, model_dir: Path, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    card = read_card(model_dir)
    for shown in [card["name"], card["version"], *card["classes"], str(card["metrics"]["accuracy"])]:
        assert shown in html
    for index, name in enumerate(FEATURES):
        assert f'<label for="feature-{index}">{name}</label>' in html
        assert f'id="feature-{index}" data-feature="{name}" type="number" step="any" required' in html
    assert html.count('type="number"') == len(FEATURES)
    assert '<button id="predict-button" type="submit">' in html


def test_page_loads_nothing_from_elsewhere(client: FlaskClient) -> None:
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert not re.search(r"https?:|//[a-z]|@import|url\(", html, re.IGNORECASE)
    assert set(re.findall(r'(?:src|href)="([^"]*)"', html)) == {"openapi.json", "model", "data:,"}
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert html.count(f'nonce="{nonce.group(1)}"') == 2  # the one <style> and the one <script>
    assert nonce.group(1) not in client.get("/").get_data(as_text=True)


def test_feature_names_and_card_values_are_escaped(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    lines = ['"<script>alert(1)</script>",b&b,label'] + [f"{i % 7},{i % 5},{i % 2}" for i in range(40)]
    csv.write_text("\n".join(lines) + "\n")
    estimator, card = train.train(train.load_csv(csv, "label"), "logistic_regression", 0, "<i>name</i>")
    write_artifact(tmp_path / "model", estimator, card)
    client = create_app({"TESTING": True, "MODEL_DIR": str(tmp_path / "model")}).test_client()
    html = client.get("/").get_data(as_text=True)
    assert "<script>alert" not in html
    assert "<i>name" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-feature="b&amp;b"' in html


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(model_dir, tmp_path_factory.mktemp("log") / "server.log") as live:
        yield live


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with chromium(tmp_path / "profile", tmp_path / "chromium.log") as running_browser:
        yield running_browser


@pytest.mark.e2e
def test_filling_the_form_and_clicking_predict_shows_the_model_answer(
    server: LiveServer, browser: Browser, model_dir: Path, tmp_path: Path
) -> None:
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    page = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
        browser.call(f"{domain}.enable", session=page)
    viewport = {"width": 1000, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    browser.call("Emulation.setDeviceMetricsOverride", viewport, session=page)
    before_navigation = len(browser.events)
    browser.call("Page.navigate", {"url": f"{server.url}/"}, session=page)
    browser.wait_for_event("Page.loadEventFired", since=before_navigation)

    def evaluate(expression: str) -> object:
        reply = browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, page)
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    for index, value in enumerate(ROW):
        evaluate(f"document.getElementById('feature-{index}').focus()")
        browser.call("Input.insertText", {"text": str(value)}, session=page)
    box = evaluate("JSON.stringify(document.getElementById('predict-button').getBoundingClientRect())")
    assert isinstance(box, str)
    x, y = (float(v) for v in re.findall(r'"[xy]":([-\d.]+)', box)[:2])
    click = {"x": x + 10, "y": y + 10, "button": "left", "clickCount": 1}
    browser.call("Input.dispatchMouseEvent", {"type": "mousePressed", **click}, session=page)
    browser.call("Input.dispatchMouseEvent", {"type": "mouseReleased", **click}, session=page)

    shown = ""
    for _ in range(100):  # up to 10 s for the answer to appear
        shown = str(evaluate("document.getElementById('prediction').textContent"))
        if shown:
            break
        pause = {"expression": "new Promise(r => setTimeout(r, 100))", "awaitPromise": True}
        browser.call("Runtime.evaluate", pause, page)
    model = joblib.load(model_dir / MODEL_FILE)
    assert shown == model.predict(np.array([ROW]))[0]
    table = evaluate(
        "[...document.querySelectorAll('#probabilities tr')].map(r => r.cells[0].textContent + '=' "
        "+ r.cells[2].textContent).sort().join(',')"
    )
    expected = zip(model.classes_, model.predict_proba(np.array([ROW]))[0], strict=True)
    assert table == ",".join(sorted(f"{name}={p:.4f}" for name, p in expected))
    assert evaluate("document.getElementById('error').hidden") is True

    requested = [
        e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"
    ]
    assert requested == [f"{server.url}/", f"{server.url}/predict"]
    problems = [e["params"]["entry"] for e in browser.events if e["method"] == "Log.entryAdded"]
    assert not [entry for entry in problems if entry["level"] == "error"], problems
    assert not [e for e in browser.events if e["method"] == "Runtime.exceptionThrown"]

    height = browser.call("Page.getLayoutMetrics", session=page)["cssContentSize"]["height"]
    clip = {"x": 0, "y": 0, "width": 1000, "height": height, "scale": 1}
    shot = browser.call(
        "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}, page
    )
    picture = base64.b64decode(shot["data"])
    assert picture.startswith(b"\x89PNG")
    (tmp_path / "docs-page.png").write_bytes(picture)
    if os.environ.get(SCREENSHOT_ENV):
        Path(os.environ[SCREENSHOT_ENV]).write_bytes(picture)
