"""API keys: a Bearer key on /predict and V2 inference, 401 in the API's error shapes, never logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from skserve import create_app
from skserve.auth import ApiKeysError, read_keys
from skserve.web import loaded_model
from tests.live_server import failed_start, running
from tests.test_metrics import Delta
from tests.test_openapi import response_validator
from tests.test_openapi_conformance import schemathesis
from tests.test_request_log import JsonLog, json_log  # noqa: F401 (the fixture, used by name)

KEY = "k3y-Of_the.first~client+/="
OTHER_KEY = "second-client-key"
KEYS_FILE = f"# one key a line\n\n  {KEY}  \n# retired: old-key\n{OTHER_KEY}\n"
ROW = [5.1, 3.5, 1.4, 0.2]
CHALLENGE = "Bearer realm=skserve"  # RFC 7235 allows a token unquoted, as Werkzeug writes it
INVALID_TOKEN = "Bearer realm=skserve, error=invalid_token"  # noqa: S105 (RFC 6750's error code)
ASK = "send the header Authorization: Bearer <key>"

# (Authorization header, expected status, message of the 401, WWW-Authenticate)
CASES = [
    (None, 401, f"this route needs an API key: {ASK}", CHALLENGE),
    ("Basic dXNlcjpwYXNz", 401, f"the Authorization header is not a Bearer token: {ASK}", CHALLENGE),
    (KEY, 401, f"the Authorization header is not a Bearer token: {ASK}", CHALLENGE),  # no scheme
    ("Bearer", 401, f"the Authorization header is not a Bearer token: {ASK}", CHALLENGE),
    ("Bearer not-a-key", 401, "the API key is not valid", INVALID_TOKEN),
    (f"Bearer {KEY}x", 401, "the API key is not valid", INVALID_TOKEN),
    (f"Bearer {KEY[:-1]}", 401, "the API key is not valid", INVALID_TOKEN),
    (f"Bearer {KEY}", 200, None, None),
    (f"bearer {OTHER_KEY}", 200, None, None),  # the scheme is case-insensitive (RFC 7235)
]


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(KEYS_FILE)
    return path


def keyed_app(model_dir: Path, keys_file: Path, **config: Any) -> Flask:
    return create_app(
        {"TESTING": True, "MODEL_DIR": str(model_dir), "API_KEYS_FILE": str(keys_file), **config}
    )


@pytest.fixture
def keyed(model_dir: Path, keys_file: Path) -> FlaskClient:
    return keyed_app(model_dir, keys_file).test_client()


def guarded_requests(app: Flask) -> list[tuple[str, Any]]:
    """(path, JSON body) of each guarded route, with a body it answers 200."""
    model = loaded_model(app)
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}
    return [
        ("/predict", {"instances": [ROW]}),
        (f"/v2/models/{model.name}/infer", {"inputs": [tensor]}),
        (f"/v2/models/{model.name}/versions/{model.version}/infer", {"inputs": [tensor]}),
    ]


@pytest.mark.parametrize("route", range(3), ids=["predict", "v2-infer", "v2-infer-at-version"])
@pytest.mark.parametrize("case", CASES, ids=[str(case[0]) for case in CASES])
def test_guarded_routes_answer_only_a_bearer_key_from_the_file(
    keyed: FlaskClient, route: int, case: tuple[str | None, int, str | None, str | None]
) -> None:
    header, status, message, challenge = case
    path, body = guarded_requests(keyed.application)[route]
    headers = {} if header is None else {"Authorization": header}
    response = keyed.post(path, json=body, headers=headers)
    assert response.status_code == status
    assert response.headers.get("WWW-Authenticate") == challenge
    if status == 200:
        assert "error" not in response.get_json()
    elif path == "/predict":
        assert response.get_json() == {
            "error": {
                "code": "unauthorized",
                "message": message,
                "request_id": response.headers["X-Request-ID"],
            }
        }
    else:  # the Open Inference Protocol's shape, as every other error under /v2
        assert response.get_json() == {"error": message}


def test_a_refused_request_is_refused_before_its_body_is_read(keyed: FlaskClient) -> None:
    response = keyed.post("/predict", data=b"not json", content_type="text/plain")
    assert response.status_code == 401  # not 415: who may ask comes before what they ask


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/ready",
        "/model",
        "/metrics",
        "/openapi.json",
        "/",
        "/docs",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
    ],
)
def test_health_readiness_metadata_and_metrics_stay_open(keyed: FlaskClient, path: str) -> None:
    response = keyed.get(path)
    assert response.status_code == 200
    assert "WWW-Authenticate" not in response.headers


def test_v2_model_metadata_and_readiness_stay_open(keyed: FlaskClient) -> None:
    model = loaded_model(keyed.application)
    assert keyed.get(f"/v2/models/{model.name}").status_code == 200
    assert keyed.get(f"/v2/models/{model.name}/ready").status_code == 200


def test_an_unknown_route_is_still_404_not_401(keyed: FlaskClient) -> None:
    assert keyed.post("/v2/models/nope/infer", json={}).status_code == 401  # a guarded route: key first
    assert keyed.post("/predictions", json={}).status_code == 404


def test_metrics_can_be_protected_too(model_dir: Path, keys_file: Path) -> None:
    client = keyed_app(model_dir, keys_file, PROTECT_METRICS=True).test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == CHALLENGE
    assert refused.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_without_a_keys_file_every_route_is_open(client: FlaskClient) -> None:
    body = {"instances": [ROW]}
    assert client.post("/predict", json=body).status_code == 200
    assert client.post("/predict", json=body, headers={"Authorization": "Bearer x"}).status_code == 200


def test_refusals_are_counted_as_errors_and_requests(keyed: FlaskClient) -> None:
    delta = Delta(keyed)
    keyed.post("/predict", json={"instances": [ROW]})
    keyed.post("/predict", json={"instances": [ROW]}, headers={"Authorization": "Bearer wrong"})
    assert delta("skserve_errors_total", code="unauthorized") == 2
    assert delta("skserve_requests_total", endpoint="/predict", status="401") == 2


def test_neither_the_key_nor_the_header_reaches_a_log_line(
    keyed: FlaskClient,
    json_log: JsonLog,  # noqa: F811 (the imported fixture)
) -> None:
    wrong = "wrong-key-that-must-not-be-logged"
    keyed.post("/predict", json={"instances": [ROW]}, headers={"Authorization": f"Bearer {KEY}"})
    keyed.post("/predict", json={"instances": [ROW]}, headers={"Authorization": f"Bearer {wrong}"})
    keyed.post("/predict", json={"instances": [ROW]}, headers={"Authorization": KEY})
    statuses = [line["status"] for line in json_log.access()]
    assert statuses == [200, 401, 401]
    assert [line.get("error") for line in json_log.access()] == [None, "unauthorized", "unauthorized"]
    for secret in (KEY, wrong, "Authorization", "Bearer"):
        assert secret not in json_log.text()


def test_the_openapi_document_declares_the_key_on_the_guarded_operations_only(keyed: FlaskClient) -> None:
    document = keyed.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"] == {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "One of the server's API keys"}
    }
    secured = {
        (path, method): operation["responses"]["401"]["$ref"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == [{"apiKey": []}]
    }
    assert secured == {
        ("/predict", "post"): "#/components/responses/Unauthorized",
        ("/v2/models/{name}/infer", "post"): "#/components/responses/V2Unauthorized",
        ("/v2/models/{name}/versions/{version}/infer", "post"): "#/components/responses/V2Unauthorized",
    }


def test_the_secured_document_is_valid_and_its_401_schemas_match_the_bodies(keyed: FlaskClient) -> None:
    document = keyed.get("/openapi.json").get_json()
    validate(document)
    documented = ["/predict", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]
    for (path, body), documented_path in zip(guarded_requests(keyed.application), documented, strict=True):
        refused = keyed.post(path, json=body)
        response_validator(document, documented_path, "post", 401).validate(refused.get_json())


def test_without_keys_the_document_declares_no_security(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert "securitySchemes" not in document["components"]
    assert not any("security" in op for item in document["paths"].values() for op in item.values())


# --- the keys file -------------------------------------------------------------------------------


def test_the_file_holds_one_key_a_line_with_blank_lines_and_comments(keys_file: Path) -> None:
    assert len(read_keys(keys_file)) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"cannot read the API keys file .*/api-keys: No such file or directory"),
        ("", r"the API keys file .*/api-keys holds no key \(only blank lines and # comments\)"),
        ("# nothing yet\n\n   \n", r"the API keys file .*/api-keys holds no key"),
        (b"\xff\xfe key", r"cannot read the API keys file .*/api-keys: it is not UTF-8 text"),
        (f"{KEY}\nkey with spaces\n", r"api-keys, line 2: a key may hold only letters, digits and -._~\+/"),
        ('key"quoted"\n', r"api-keys, line 1: a key may hold only"),
    ],
    ids=["missing", "empty", "only-comments", "not-utf8", "spaces", "quotes"],
)
def test_an_unusable_keys_file_stops_start_up_naming_no_key(
    model_dir: Path, tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "api-keys"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ApiKeysError, match=message) as raised:
        keyed_app(model_dir, path)
    assert KEY not in str(raised.value)
    assert "spaces" not in str(raised.value)


def test_a_directory_is_not_a_keys_file(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ApiKeysError, match=r"cannot read the API keys file .*: Is a directory"):
        keyed_app(model_dir, tmp_path)


# --- over real gunicorn --------------------------------------------------------------------------


@pytest.mark.e2e
def test_live_keys_from_the_environment_guard_predict_and_stay_out_of_the_log(
    model_dir: Path, keys_file: Path, tmp_path: Path
) -> None:
    wrong = "a-wrong-key-to-keep-out-of-logs"
    body = {"instances": [ROW]}
    with running(model_dir, tmp_path / "server.log", SKSERVE_API_KEYS_FILE=str(keys_file)) as server:
        refused = server.request("POST", "/predict", body)
        wrong_key = server.request("POST", "/predict", body, {"Authorization": f"Bearer {wrong}"})
        no_scheme = server.request("POST", "/predict", body, {"Authorization": KEY})
        allowed = server.request("POST", "/predict", body, {"Authorization": f"Bearer {KEY}"})
        health = server.request("GET", "/health")
        metrics = server.request("GET", "/metrics")
    assert (refused.status, wrong_key.status, no_scheme.status, allowed.status) == (401, 401, 401, 200)
    assert refused.headers["WWW-Authenticate"] == CHALLENGE
    assert wrong_key.headers["WWW-Authenticate"] == INVALID_TOKEN
    assert refused.json()["error"]["code"] == "unauthorized"
    assert KEY not in no_scheme.body.decode()
    assert (health.status, metrics.status) == (200, 200)
    log = server.log()
    assert log.count('"status":401') == 3
    for secret in (KEY, OTHER_KEY, wrong):
        assert secret not in log


@pytest.mark.e2e
def test_live_a_missing_keys_file_stops_start_up_with_one_line(model_dir: Path, tmp_path: Path) -> None:
    exit_status, log = failed_start(
        model_dir, tmp_path / "server.log", SKSERVE_API_KEYS_FILE=str(tmp_path / "absent")
    )
    assert exit_status == 1
    assert f"cannot read the API keys file {tmp_path / 'absent'}: No such file or directory" in log
    assert "Traceback" not in log
    assert "Listening at" not in log


@pytest.mark.e2e
def test_live_schemathesis_finds_no_issue_with_a_key_against_the_secured_document(
    model_dir: Path, keys_file: Path, tmp_path: Path
) -> None:
    """The document with its security scheme, fuzzed by a client that sends a key (as users' must)."""
    env = {"SKSERVE_API_KEYS_FILE": str(keys_file), "SKSERVE_MAX_ROWS": "20"}
    with running(model_dir, tmp_path / "server.log", **env) as server:
        document = server.request("GET", "/openapi.json").json()
        assert "securitySchemes" in document["components"]
        run = schemathesis(server.url, tmp_path, "--header", f"Authorization: Bearer {KEY}")
    operations = sum(len(item) for item in document["paths"].values())
    assert f"Tested: {operations - 1}\n" in run.stdout  # all but the document's own URL
