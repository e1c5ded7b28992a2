"""The human side of the API: the docs page, with the model card and a prediction form."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, render_template

from skserve.features import REGRESSION
from skserve.web import loaded_model

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
    html = render_template(
        "docs.html",
        card=model.card,
        features=model.features,
        regression=model.task == REGRESSION,
        nonce=nonce,
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(nonce=nonce)
    return response
