"""The service's refusals as typed exceptions, and the first line of an exception's text.

A `Refusal` carries what a client is told: the HTTP status, the stable error code and the
detail. Any room raises one without knowing how answers are written; the http room shapes
it into the one error body, {"error": code, "detail": text, "request_id": id}
(iris_service/http/errors.py), and each protocol route into its protocol's own shape
(iris_service/protocols/routes.py, grpc_servicer.py).
"""

from __future__ import annotations


class Refusal(Exception):
    """A request the service refuses: `status`, `code` (None: the code of the status, from
    iris_service/http/errors.py ERROR_CODES) and `detail`, all for the client. A subclass
    names its status as a class argument: `class Gone(Refusal, status=410)`."""

    status = 400
    code: str | None = None

    def __init_subclass__(cls, status: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


# The kinds of refusal; 429 and 503 are answered with Retry-After.
class BadRequest(Refusal, status=400): ...  # the request breaks a rule of the API


class Unauthorized(Refusal, status=401): ...  # no valid API key


class NotFound(Refusal, status=404): ...  # it names something the service does not have


class Conflict(Refusal, status=409): ...  # valid, but not answerable in the current state


class TooLarge(Refusal, status=413): ...  # a body larger than the service reads


class Overloaded(Refusal, status=429): ...  # too many requests in flight


class Unavailable(Refusal, status=503): ...  # not now: no model, no runner, no store


def first_line(text: object, limit: int | None = 300) -> str:
    """The first line of `text` (an exception, usually), stripped, at most `limit` characters:
    enough to say what failed in a log line or an answer, never a traceback or a dump."""
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else ""
    return line if limit is None else line[:limit]
