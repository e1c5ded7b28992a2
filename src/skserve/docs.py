"""The human side of the API: the docs page (model card and a prediction form) and the OpenAPI document."""

from __future__ import annotations

import re
import secrets

from flask import Blueprint, Flask, Response, current_app, render_template

from skserve import auth
from skserve.api import json_response, loaded_model
from skserve.openapi import build_document

bp = Blueprint("docs", __name__, template_folder="templates")

# The page loads nothing from anywhere: its one script and one style sheet are inline and carry a
# per-response nonce, its icon is an empty data: URL (so browsers do not ask for /favicon.ico), and
# it may only talk to this server. Browsers enforce what the tests check.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/")
@bp.get("/docs")
def page() -> Response:
    model = loaded_model()
    nonce = secrets.token_urlsafe(16)
    html = render_template("docs.html", card=model.card, features=model.feature_names, nonce=nonce)
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(nonce=nonce)
    return response


@bp.get("/openapi.json")
def openapi_document() -> Response:
    app = current_app
    secured = {openapi_path(rule.rule) for rule in app.url_map.iter_rules() if auth.needs_key(rule.endpoint)}
    return json_response(
        build_document(
            loaded_model(),
            max_rows=app.config["MAX_ROWS"],
            served_paths=served_paths(app),
            secured_paths=secured,
        )
    )


def served_paths(app: Flask) -> set[str]:
    """The paths of the app's routes, in OpenAPI form."""
    # Flask routes /static/ for a static folder the package does not have: every request there is a 404.
    return {openapi_path(rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}


def openapi_path(rule: str) -> str:
    """A Flask rule in OpenAPI form: "/v2/models/<name>" becomes "/v2/models/{name}"."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)
