"""A small, fast, observable HTTP server for one scikit-learn model.

Importing the package imports nothing heavy: gunicorn's settings (skserve.gunicorn_config) must be
read before prometheus_client is first imported, so `create_app` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skserve.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from skserve.app import create_app  # noqa: PLC0415 (lazy on purpose, see above)

        return create_app
    raise AttributeError(f"module 'skserve' has no attribute {name!r}")
