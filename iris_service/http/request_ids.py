"""The two ids of a request: the client's X-Request-ID and the server's own.

A client may send any X-Request-ID, the same one twice, or another client's: it is kept (for
the client's tracing, echoed in X-Request-ID) but it identifies nothing on the server. Every
request also gets a server id, random and never taken from the client, stored in the ASGI
scope so that every middleware of the request (monitoring, prediction log) uses the same one
whichever runs first. Records keyed by it can never collide or overwrite each other.

With API keys on, the request also carries the id of the key it was sent with (a digest,
never the key): a client's X-Request-ID names a prediction only for labels sent with the
same key (iris_service/records/feedback.py), so one client cannot label another's predictions.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

_VALID_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
_SCOPE_KEY = "iris.server_request_id"
_KEY_ID_SCOPE_KEY = "iris.api_key_id"


def server_request_id(scope: dict[str, Any]) -> str:
    """This request's server id (32 hex characters), made on first use."""
    found = scope.get(_SCOPE_KEY)
    if found is None:
        found = scope[_SCOPE_KEY] = new_server_request_id()
    return found


def client_request_id(scope: dict[str, Any]) -> str | None:
    """The client's X-Request-ID when it is a safe token (letters, digits, . _ -; at most 64),
    else None: an unsafe one is dropped, never logged."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return valid_client_id(value)
    return None


def valid_client_id(value: bytes) -> str | None:
    """A client's request id (HTTP header or gRPC metadata) when it is a safe token."""
    return value.decode() if _VALID_CLIENT_ID.match(value) else None


def new_server_request_id() -> str:
    """A fresh server id (32 hex characters), for a request without an ASGI scope (gRPC)."""
    return os.urandom(16).hex()


def key_id(key: bytes) -> str:
    """The id of an API key in records: 16 hex characters of its SHA-256 (not reversible
    for keys of settings.API_KEY_MIN_LENGTH or more random characters)."""
    return hashlib.sha256(key).hexdigest()[:16]


def set_api_key_id(scope: dict[str, Any], key: str) -> None:
    scope[_KEY_ID_SCOPE_KEY] = key


def api_key_id(scope: dict[str, Any]) -> str | None:
    """The id of the API key this request was accepted with; None when keys are off."""
    return scope.get(_KEY_ID_SCOPE_KEY)
