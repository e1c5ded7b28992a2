"""The app factory: the verified model, the blueprints and the hooks around them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from skserve import api, auth, docs, metrics, openapi, request_log, v2, web
from skserve.model import LoadedModel

DEFAULTS: dict[str, Any] = {
    "MODEL_DIR": "models",
    "MAX_ROWS": 1000,
    "MAX_BODY_BYTES": 1024 * 1024,
    "ALLOW_VERSION_MISMATCH": False,
    # Unpickle the artifact without skserve.unpickle's allowlist (custom transformers); runs its code.
    "ALLOW_UNSAFE_PICKLE": False,
    "MODEL_NAME": None,  # None or empty: the name in the model card
    # Micro-batching of concurrent /predict requests (skserve.batching); BATCHING=false scores each alone.
    "BATCHING": True,
    "BATCH_WAIT_MS": 5.0,  # longest wait for more requests, and only after a batch of several
    "MAX_BATCH_ROWS": 1000,  # rows per model call; a larger request is scored alone
    # API keys (skserve.auth): a file of keys makes /predict and V2 inference ask for one.
    "API_KEYS_FILE": None,
    "PROTECT_METRICS": False,  # True: /metrics asks for a key too (health and readiness never do)
}


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app around the verified model; raises ArtifactError when it cannot be served.

    Settings come from `DEFAULTS`, then the environment (`MODEL_DIR`, and `SKSERVE_<NAME>`
    for the others), or from `test_config` alone when given.
    """
    app = Flask(__name__, static_folder=None)  # no static files; the docs page is self-contained
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        app.config["MODEL_DIR"] = os.environ.get("MODEL_DIR", DEFAULTS["MODEL_DIR"])
        app.config.from_prefixed_env("SKSERVE")
    else:
        app.config.from_mapping(test_config)
    model = LoadedModel.load(
        Path(app.config["MODEL_DIR"]),
        allow_version_mismatch=app.config["ALLOW_VERSION_MISMATCH"],
        allow_unsafe_pickle=app.config["ALLOW_UNSAFE_PICKLE"],
    )
    if app.config["MODEL_NAME"]:
        # SKSERVE_MODEL_NAME serves the model under another name (/model, the V2 routes) without retraining.
        model = model.renamed(str(app.config["MODEL_NAME"]))
    app.extensions[web.MODEL_EXTENSION] = model
    web.init_batching(app)
    request_log.init_app(app, model.version)
    auth.init_app(app)  # after request_log: a refused request is still timed, counted and logged
    metrics.init_app(app, model)
    app.register_blueprint(api.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(openapi.bp)
    web.register_error_handlers(app)
    app.register_blueprint(v2.bp)
    v2.register_error_handlers(app)
    return app
