"""The docs page: the model card and a prediction form, self-contained, tested as a person would use it."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class Page:
    """One browser tab, used as a person uses a page: type into fields, click, read what it shows."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=self.session)
        viewport = {"width": 1000, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        browser.call("Emulation.setDeviceMetricsOverride", viewport, session=self.session)
        before_navigation = len(browser.events)
        browser.call("Page.navigate", {"url": url}, session=self.session)
        browser.wait_for_event("Page.loadEventFired", since=before_navigation)

    def evaluate(self, expression: str) -> object:
        params = {"expression": expression, "returnByValue": True}
        reply = self.browser.call("Runtime.evaluate", params, self.session)
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    def type_into(self, element_id: str, text: str) -> None:
        self.evaluate(f"document.getElementById({element_id!r}).focus()")
        self.browser.call("Input.insertText", {"text": text}, session=self.session)

    def click(self, element_id: str) -> None:
        box = self.evaluate(
            f"JSON.stringify(document.getElementById({element_id!r}).getBoundingClientRect())"
        )
        assert isinstance(box, str)
        x, y = (float(v) for v in re.findall(r'"[xy]":([-\d.]+)', box)[:2])
        click = {"x": x + 10, "y": y + 10, "button": "left", "clickCount": 1}
        self.browser.call("Input.dispatchMouseEvent", {"type": "mousePressed", **click}, session=self.session)
        self.browser.call(
            "Input.dispatchMouseEvent", {"type": "mouseReleased", **click}, session=self.session
        )

    def predict(self) -> str:
        """Click Predict and wait (up to 10 s) for the answer to appear."""
        self.click("predict-button")
        shown = ""
        for _ in range(100):
            shown = str(self.evaluate("document.getElementById('prediction').textContent"))
            if shown:
                break
            pause = {"expression": "new Promise(r => setTimeout(r, 100))", "awaitPromise": True}
            self.browser.call("Runtime.evaluate", pause, self.session)
        return shown

    def probabilities(self) -> object:
        return self.evaluate(
            "[...document.querySelectorAll('#probabilities tr')].map(r => r.cells[0].textContent + '=' "
            "+ r.cells[2].textContent).sort().join(',')"
        )

    def assert_no_errors(self) -> None:
        assert self.evaluate("document.getElementById('error').hidden") is True
        events = self.browser.events
        problems = [e["params"]["entry"] for e in events if e["method"] == "Log.entryAdded"]
        assert not [entry for entry in problems if entry["level"] == "error"], problems
        assert not [e for e in events if e["method"] == "Runtime.exceptionThrown"]


def shown_probabilities(classes: Any, probabilities: Any) -> str:
    return ",".join(sorted(f"{name}={p:.4f}" for name, p in zip(classes, probabilities, strict=True)))


@pytest.mark.e2e
def test_filling_the_form_and_clicking_predict_shows_the_model_answer(
    server: LiveServer, browser: Browser, model_dir: Path, tmp_path: Path
) -> None:
    page = Page(browser, f"{server.url}/")
    for index, value in enumerate(ROW):
        page.type_into(f"feature-{index}", str(value))
    model = joblib.load(model_dir / MODEL_FILE)
    assert page.predict() == model.predict(np.array([ROW]))[0]
    assert page.probabilities() == shown_probabilities(
        model.classes_, model.predict_proba(np.array([ROW]))[0]
    )
    page.assert_no_errors()
    requested = [
        e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"
    ]
    assert requested == [f"{server.url}/", f"{server.url}/predict"]

    height = browser.call("Page.getLayoutMetrics", session=page.session)["cssContentSize"]["height"]
    clip = {"x": 0, "y": 0, "width": 1000, "height": height, "scale": 1}
    shot = browser.call(
        "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}, page.session
    )
    picture = base64.b64decode(shot["data"])
    assert picture.startswith(b"\x89PNG")
    (tmp_path / "docs-page.png").write_bytes(picture)
    if os.environ.get(SCREENSHOT_ENV):
        Path(os.environ[SCREENSHOT_ENV]).write_bytes(picture)


def test_categories_get_a_choice_list_and_a_missing_value_an_empty_field(mixed_classifier_dir: Path) -> None:
    app = create_app({"TESTING": True, "MODEL_DIR": str(mixed_classifier_dir)})
    html = app.test_client().get("/").get_data(as_text=True)
    assert re.search(
        r'<select id="feature-0" data-feature="island">\s*<option value="">\(missing\)</option>'
        r"<option>Biscoe</option><option>Dream</option><option>Torgersen</option>\s*</select>",
        html,
    )
    empty_means_missing = 'type="number" step="any" placeholder="empty: missing">'
    assert f'<input id="feature-1" data-feature="bill_length_mm" {empty_means_missing}' in html
    assert "required" not in html.split('id="predict-form"')[1].split("</form>")[0]


def test_a_regressors_page_shows_a_predicted_value_and_no_classes(mixed_regressor_dir: Path) -> None:
    app = create_app({"TESTING": True, "MODEL_DIR": str(mixed_regressor_dir)})
    html = app.test_client().get("/").get_data(as_text=True)
    assert "Predicted value: <output" in html
    assert "Predicted class" not in html
    assert 'id="classes"' not in html


@pytest.mark.e2e
def test_a_category_chosen_and_fields_left_empty_get_the_pipelines_answer(
    mixed_classifier_dir: Path, browser: Browser, tmp_path: Path
) -> None:
    with running(mixed_classifier_dir, tmp_path / "server.log") as server:
        page = Page(browser, f"{server.url}/")
        # Island and sex chosen from their lists with the keyboard, as a person would; of the
        # numbers only bill length and year are typed, the others left empty (missing).
        for element_id, steps in (("feature-0", 3), ("feature-5", 2)):
            page.evaluate(f"document.getElementById({element_id!r}).focus()")
            key = {"key": "ArrowDown", "code": "ArrowDown", "windowsVirtualKeyCode": 40}
            for _ in range(steps):
                browser.call("Input.dispatchKeyEvent", {"type": "keyDown", **key}, session=page.session)
                browser.call("Input.dispatchKeyEvent", {"type": "keyUp", **key}, session=page.session)
        page.type_into("feature-1", "39.1")
        page.type_into("feature-6", "2007")
        shown = page.predict()
        row = np.array([["Torgersen", 39.1, np.nan, np.nan, np.nan, "male", 2007.0]], dtype=object)
        pipeline = joblib.load(mixed_classifier_dir / MODEL_FILE)
        chosen = page.evaluate("[0, 5].map(i => document.getElementById('feature-' + i).value).join()")
        assert chosen == "Torgersen,male"
        assert shown == pipeline.predict(row)[0]
        assert page.probabilities() == shown_probabilities(pipeline.classes_, pipeline.predict_proba(row)[0])
        page.assert_no_errors()
