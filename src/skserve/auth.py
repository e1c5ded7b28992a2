"""Optional API keys: `Authorization: Bearer <key>` on the prediction routes, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

EXTENSION = "skserve.api_keys"
REALM = "skserve"
# The routes that score: /predict and the two V2 inference routes (both served by one view).
GUARDED_ENDPOINTS = frozenset({"api.predict", "v2.infer"})
METRICS_ENDPOINT = "metrics.metrics"
# RFC 6750's b64token: what a client can send after "Bearer " without quoting or escaping.
KEY_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
ASK_FOR_KEY = "send the header Authorization: Bearer <key>"


class ApiKeysError(RuntimeError):
    """The API keys file cannot be used; the server does not start (like ArtifactError)."""


@dataclass(frozen=True)
class ApiKeys:
    digests: frozenset[bytes]  # of the keys (read_keys)
    endpoints: frozenset[str]  # the views that ask for one


def read_keys(path: Path) -> frozenset[bytes]:
    """The SHA-256 digests of the keys in `path`: one key a line; blank lines and `#` comments skipped.

    Raises ApiKeysError with one sentence that names the file (and line) but never a key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise ApiKeysError(f"cannot read the API keys file {path}: {reason}") from None
    digests = set()
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if not KEY_PATTERN.fullmatch(key):
            raise ApiKeysError(
                f"{path}, line {number}: a key may hold only letters, digits and -._~+/ "
                "(with = at the end), as a Bearer token does"
            )
        digests.add(_digest(key.encode("ascii")))
    if not digests:
        raise ApiKeysError(f"the API keys file {path} holds no key (only blank lines and # comments)")
    return frozenset(digests)


def init_app(app: Flask) -> None:
    """With API_KEYS_FILE set, ask every guarded request (and /metrics if PROTECT_METRICS) for a key.

    The file is read once, here: new keys take a restart.
    """
    path = app.config["API_KEYS_FILE"]
    if not path:
        return
    endpoints = GUARDED_ENDPOINTS | ({METRICS_ENDPOINT} if app.config["PROTECT_METRICS"] else frozenset())
    app.extensions[EXTENSION] = ApiKeys(read_keys(Path(path)), endpoints)

    def require_key() -> None:
        if needs_key(request.endpoint):
            check_authorization(request.headers.get("Authorization"))

    app.before_request(require_key)


def needs_key(endpoint: str | None) -> bool:
    """Whether the current app asks for an API key on `endpoint` (a view's name, e.g. "api.predict")."""
    keys: ApiKeys | None = current_app.extensions.get(EXTENSION)
    return keys is not None and endpoint in keys.endpoints


def check_authorization(header: str | None) -> None:
    """Raise 401 unless `header` is `Bearer <key>` with one of the app's keys.

    The error goes through the app's HTTP error handlers (the /predict shape, or V2's under /v2),
    so it is counted in skserve_errors{code="unauthorized"} like any other. No part of the header
    is echoed: a client that forgot the scheme would see its own key in the body.
    """
    if header is None:
        raise _unauthorized(f"this route needs an API key: {ASK_FOR_KEY}")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized(f"the Authorization header is not a Bearer token: {ASK_FOR_KEY}")
    digest = _digest(token.strip().encode("latin-1", "replace"))  # WSGI headers are latin-1
    matched = False
    # Every key is compared, so the time taken says nothing of which one matched, or how far.
    for key in current_app.extensions[EXTENSION].digests:
        matched |= hmac.compare_digest(digest, key)
    if not matched:
        raise _unauthorized("the API key is not valid", error="invalid_token")


def _digest(key: bytes) -> bytes:
    """Keys are compared as digests: equal lengths, so compare_digest's timing reveals no key length."""
    return hashlib.sha256(key).digest()


def _unauthorized(message: str, error: str | None = None) -> Unauthorized:
    # RFC 6750: a request with no credentials gets the challenge alone, a bad token error="invalid_token".
    challenge = WWWAuthenticate("bearer", {"realm": REALM, **({"error": error} if error else {})})
    return Unauthorized(message, www_authenticate=challenge)
