"""The API's error family: each error knows its HTTP status and a stable machine-readable code."""

from __future__ import annotations


class APIError(Exception):
    """An error the client can act on; `message` says what was expected and what arrived."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(APIError):
    code = "invalid_input"


class PayloadTooLarge(APIError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(APIError):
    status = 415
    code = "unsupported_media_type"
