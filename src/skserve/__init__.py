"""A small, fast, observable HTTP server for one scikit-learn model.

Importing the package imports nothing heavy: gunicorn's settings (skserve.gunicorn_config) must be
read before prometheus_client is first imported, so `create_app` is loaded on first use, and
`package` (skserve.packaging, which imports pandas) likewise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skserve.app import create_app
    from skserve.packaging import package

__all__ = ["create_app", "package"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from skserve.app import create_app  # noqa: PLC0415 (lazy on purpose, see above)

        return create_app
    if name == "package":
        from skserve.packaging import package  # noqa: PLC0415 (lazy on purpose, see above)

        return package
    raise AttributeError(f"module 'skserve' has no attribute {name!r}")
