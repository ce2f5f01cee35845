"""The one error shape of the API: {"error": code, "detail": text, "request_id": id}.

Every error answer, whoever produced it (Pydantic validation in BentoML, our API code, the
middleware itself), leaves the service in this shape, without stack traces or internals.
A refusal (iris_service/errors.py) raised in an API method is answered by
`refusals_answered`, one raised in a middleware by the monitoring middleware; both write
`error_body`.

The routes of the other protocols the service speaks answer in their protocol's shape
instead, because their clients parse it: the Open Inference Protocol V2 (/v2...) as
{"error": text}, MLflow scoring (/invocations, /ping, /version) as {"error_code", "message"}.
`protocol_of(path)` says which; the request id is then in the X-Request-ID header only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from starlette.responses import Response

from iris_service.errors import Refusal, first_line
from iris_service.settings import settings

RETRY_AFTER_SECONDS = settings.retry_after_seconds  # read once: used per refusal

P = ParamSpec("P")
T = TypeVar("T")

ERROR_CODES: dict[int, str] = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout",
}
GENERIC_DETAIL: dict[int, str] = {
    500: "An internal error occurred; it has been logged with this request id.",
    503: "The model is not ready to answer; retry shortly.",
    504: "The prediction took too long.",
}
RETRYABLE_STATUSES = frozenset({429, 503})


V2 = "v2"
MLFLOW = "mlflow"
MLFLOW_PATHS = frozenset({"/invocations", "/ping", "/version"})
MLFLOW_ERROR_CODES: dict[int, str] = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
}


def protocol_of(path: str) -> str | None:
    """The protocol whose error shape `path` answers in (V2, MLFLOW), or None: ours."""
    if path == "/v2" or path.startswith("/v2/"):
        return V2
    if path in MLFLOW_PATHS:
        return MLFLOW
    return None


def protocol_error_body(protocol: str, status: int, detail: str) -> bytes:
    """An error body in the shape of `protocol` (V2 or MLFLOW), compact as Starlette's
    JSONResponse writes it."""
    if protocol == V2:
        payload: dict[str, str] = {"error": detail}
    else:
        fallback = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        payload = {"error_code": MLFLOW_ERROR_CODES.get(status, fallback), "message": detail}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _in_protocol_shape(protocol: str, parsed: object) -> bool:
    if not isinstance(parsed, dict):
        return False
    if protocol == V2:
        return set(parsed) == {"error"} and isinstance(parsed["error"], str)
    return set(parsed) == {"error_code", "message"}


def error_code(status: int) -> str:
    return ERROR_CODES.get(status, "client_error" if status < 500 else "internal_error")


def error_body(status: int, detail: str, request_id: str, code: str | None = None) -> bytes:
    payload = {"error": code or error_code(status), "detail": detail, "request_id": request_id}
    return json.dumps(payload).encode()


def error_headers(status: int, body: bytes, request_id: str) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if status in RETRYABLE_STATUSES:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="iris"'))
    return headers


def error_response(status: int, detail: str, code: str | None = None) -> Response:
    """An error answer made inside the API service; the middleware adds the request id."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in RETRYABLE_STATUSES else None
    body = error_body(status, detail, "", code)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def refusals_answered(api: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T | Response]]:
    """An API method whose refusals are answered in the one shape. BentoML answers a method
    that takes the request context (`ctx`) with the context's status, whatever the returned
    response says, so both carry it."""

    @functools.wraps(api)
    async def answering(*args: P.args, **kwargs: P.kwargs) -> T | Response:
        try:
            return await api(*args, **kwargs)
        except Refusal as refusal:
            ctx: Any = kwargs.get("ctx")
            if ctx is not None:
                ctx.response.status_code = refusal.status
            return error_response(refusal.status, refusal.detail, refusal.code)

    return answering


MAX_DESCRIBED_ERRORS = 10


def _describe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """At most MAX_DESCRIBED_ERRORS messages: a body with 15,000 unknown keys must not get
    a 15,000-part answer (an amplification a hostile client could use)."""
    errors = list(errors)
    parts = []
    if len(errors) > MAX_DESCRIBED_ERRORS:
        hidden = len(errors) - MAX_DESCRIBED_ERRORS
        errors = errors[:MAX_DESCRIBED_ERRORS]
    else:
        hidden = 0
    for item in errors:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        message = str(item.get("msg", "invalid value"))
        parts.append(_safe_text(f"{location}: {message}" if location else message))
    if hidden:
        parts.append(f"... and {hidden} more errors")
    return "; ".join(parts) or "invalid request body"


# A protocol route's own error body is kept for its refusals (4xx) and for the deliberate
# 503/504 it writes (a version held but not served, a runner not ready); any other 5xx body is
# replaced by the generic text, so that nothing internal leaks.
_OWN_BODY_KEPT = frozenset(range(400, 500)) | {503, 504}


def normalise(
    status: int, body: bytes, request_id: str, protocol: str | None = None
) -> tuple[str, bytes]:
    """Rewrite any error body (BentoML's, Starlette's, ours) into the one shape, or into the
    shape of `protocol` (see protocol_of); a protocol route's own 4xx, 503 or 504 body is kept.

    Returns the error code and the new body.
    """
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    code = error_code(status)
    if protocol is not None and status in _OWN_BODY_KEPT and _in_protocol_shape(protocol, parsed):
        return code, body
    if isinstance(parsed, dict) and set(parsed) == {"error", "detail", "request_id"}:
        code, detail = str(parsed["error"]), str(parsed["detail"])
    elif status >= 500:
        detail = GENERIC_DETAIL.get(status, GENERIC_DETAIL[500])
    elif isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        detail = _describe_validation_errors(parsed["detail"])
    else:
        if isinstance(parsed, (list, tuple)) and parsed and isinstance(parsed[0], dict):
            parsed = parsed[0]  # BentoML wraps some client errors in a one-element list
        if isinstance(parsed, dict):
            detail = _safe_text(str(parsed.get("detail") or parsed.get("error") or code))
        else:
            detail = _safe_text(body.decode("utf-8", "replace")) or code
    if protocol is not None:
        return code, protocol_error_body(protocol, status, detail)
    return code, error_body(status, detail, request_id, code)


def _safe_text(text: str, limit: int = 300) -> str:
    return first_line(text, limit)
