"""API key that fails closed: with a key configured, every route needs it but a short open list.

Without any key (IRIS_API_KEY and IRIS_API_KEYS unset) the service is open, unless
IRIS_API_KEYS_REQUIRED=true (the image's default): then it refuses to start, as it does with
a key shorter than settings.API_KEY_MIN_LENGTH, in one line (`check_api_keys`, run when this
module is imported, so by every process of `bentoml serve`). With one or more keys,
every request must send `Authorization: Bearer <key>` with one of them, whatever its path:
routes added later (a protocol's, a debugging one such as /drift) are protected the moment
they exist, instead of public until someone remembers to list them. The open list is what
must work without a key: liveness and readiness for the orchestrator's probes, /metrics for
the scraper, and the docs (Swagger UI, OpenAPI document, their assets) only with
IRIS_API_KEY_OPEN_DOCS=true.

Several keys are valid at once, so a key is rotated without downtime: add the new one, move
the clients, remove the old one. Each presented token is compared with every key in constant
time (hmac.compare_digest, no early exit), so neither the answer time nor the order of the
keys tells how much of a key was right. Refusals are 401 with `WWW-Authenticate: Bearer`,
rewritten into the one error shape by the monitoring middleware; a key is never logged or
echoed. An accepted request carries the id of its key (iris_service/http/request_ids.py) into its
prediction record, so that labels by a client's own request id stay with that key.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from bentoml.exceptions import BentoMLException

from iris_service.errors import Unauthorized
from iris_service.http.request_ids import key_id, set_api_key_id
from iris_service.settings import API_KEY_MIN_LENGTH, settings

_BEARER = b"bearer "
# Probes and the scraper reach these without a key: BentoML's health routes, /metrics, and the
# health routes of the protocols we speak (Open Inference Protocol V2, MLflow scoring's /ping),
# which KServe-style and SageMaker-style orchestrators probe. Their metadata needs the key.
OPEN_PATHS: frozenset[str] = frozenset(
    {"/livez", "/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/ping"}
)
# The Swagger UI at /, the OpenAPI document and the UI's assets: open only when configured.
DOCS_PATHS: frozenset[str] = frozenset({"/", "/docs.json", "/schema.json"})
DOCS_PREFIXES: tuple[str, ...] = ("/static_content/", "/assets/")


class ApiKeyConfigError(BentoMLException, ValueError):
    """The keys configured cannot protect the service: `bentoml serve` prints this one line
    (`Error: [serve] serve failed: ...`) and exits 1 instead of serving."""


def check_api_keys(
    keys: Iterable[str], required: bool, min_length: int = API_KEY_MIN_LENGTH
) -> tuple[str, ...]:
    """`keys` when they are usable; ApiKeyConfigError when none is set but keys are required,
    or when one is shorter than `min_length` (a blank or placeholder Secret fails the start
    instead of serving open or with a guessable key). A key is never part of the message."""
    keys = tuple(keys)
    if required and not keys:
        raise ApiKeyConfigError(
            "API keys are required (IRIS_API_KEYS_REQUIRED=true) but IRIS_API_KEY and "
            "IRIS_API_KEYS are empty: set a key, or IRIS_API_KEYS_REQUIRED=false to serve open"
        )
    short = [number for number, key in enumerate(keys, 1) if len(key) < min_length]
    if short:
        raise ApiKeyConfigError(
            f"API key number {', '.join(map(str, short))} of {len(keys)} is shorter than "
            f"{min_length} characters: use long random keys (e.g. `openssl rand -hex 32`)"
        )
    return keys


# Checked once, when the service imports this module: a misconfigured service never starts.
check_api_keys(settings.api_keys, settings.api_keys_required)


def bearer_token(authorization: bytes) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value (HTTP header or gRPC metadata),
    or None for another scheme."""
    if authorization[: len(_BEARER)].lower() == _BEARER:
        return authorization[len(_BEARER) :].strip()
    return None


def _bearer_token(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(value)
    return None


def is_open_path(path: str, open_docs: bool) -> bool:
    """Whether `path` is answered without a key."""
    if path in OPEN_PATHS:
        return True
    return open_docs and (path in DOCS_PATHS or path.startswith(DOCS_PREFIXES))


def matching_key(token: bytes, keys: Sequence[bytes]) -> int | None:
    """The position of the key `token` is, or None. Constant-time comparison with every
    key: the loop never stops at the first match."""
    found = None
    for position, key in enumerate(keys):
        if hmac.compare_digest(token, key):
            found = position
    return found


class ApiKeyMiddleware:
    """401 for any request outside the open list without a valid bearer token; a no-op
    without keys."""

    def __init__(
        self,
        app: Any,
        api_keys: Iterable[str] = settings.api_keys,
        open_docs: bool = settings.api_key_open_docs,
    ) -> None:
        self.app = app
        self.keys = tuple(key.encode() for key in api_keys if key)
        self.key_ids = tuple(key_id(key) for key in self.keys)
        self.open_docs = open_docs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            not self.keys
            or scope["type"] not in ("http", "websocket")
            or is_open_path(scope["path"], self.open_docs)
        ):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        position = matching_key(token, self.keys) if token is not None else None
        if position is not None:
            set_api_key_id(scope, self.key_ids[position])
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        detail = "missing API key" if token is None else "invalid API key"
        # The monitoring middleware answers it in the error shape (and the protocols' shapes).
        raise Unauthorized(f"{detail}: send Authorization: Bearer <key>")
