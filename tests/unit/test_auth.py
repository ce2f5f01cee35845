"""The API key fails closed: every route but the open list needs one of the valid keys."""

from __future__ import annotations

import httpx
import pytest
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from iris_service.http import errors
from iris_service.http.auth import ApiKeyConfigError, ApiKeyMiddleware, check_api_keys, matching_key
from iris_service.http.middleware import RequestMonitoringMiddleware
from iris_service.settings import API_KEY_MIN_LENGTH, SettingsError, load_settings

KEYS = ("old-key-1", "new-key-2")
OPEN = ("/livez", "/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/ping")
DOCS = ("/", "/docs.json", "/schema.json", "/static_content/swagger-ui.css")
PROTECTED = ("/predict", "/drift", "/v2/models/iris/infer", "/invocations", "/not-a-route")

# Our routes answer in our error shape, a protocol's routes in the protocol's own.
ERROR_SHAPES = {
    None: {"error", "detail", "request_id"},
    errors.V2: {"error"},
    errors.MLFLOW: {"error_code", "message"},
}


async def _anything(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _client(keys: tuple[str, ...] = KEYS, open_docs: bool = False) -> httpx.AsyncClient:
    routes = [Route(path, _anything, methods=["GET", "POST"]) for path in (*OPEN, *DOCS)]
    routes += [Route(path, _anything, methods=["GET", "POST"]) for path in PROTECTED[:-1]]
    app = ApiKeyMiddleware(Starlette(routes=routes), api_keys=keys, open_docs=open_docs)
    wrapped = RequestMonitoringMiddleware(app)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_every_route_outside_the_open_list_needs_a_valid_key() -> None:
    async with _client() as client:
        for path in (*PROTECTED, *DOCS):
            for headers in (
                {},
                _bearer("wrong"),
                _bearer(KEYS[0][:-1]),
                {"authorization": KEYS[0]},
            ):
                refused = await client.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert set(refused.json()) == ERROR_SHAPES[errors.protocol_of(path)], path
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert KEYS[0] not in refused.text and KEYS[1] not in refused.text
            for key in KEYS:  # both keys of a rotation work at once
                expected = 404 if path == "/not-a-route" else 200
                assert (await client.get(path, headers=_bearer(key))).status_code == expected


async def test_health_and_metrics_are_open_docs_only_when_configured() -> None:
    async with _client() as closed, _client(open_docs=True) as opened:
        for path in OPEN:
            assert (await closed.get(path)).status_code == 200, path
        for path in DOCS:
            assert (await opened.get(path)).status_code == 200, path
            assert (await closed.get(path)).status_code == 401, path
        assert (await opened.get("/drift")).status_code == 401


async def test_without_keys_everything_is_open() -> None:
    async with _client(keys=()) as client:
        for path in PROTECTED[:-1]:
            assert (await client.get(path)).status_code == 200, path


def test_every_key_is_compared_and_only_exact_matches_count() -> None:
    keys = [key.encode() for key in KEYS]
    for position, key in enumerate(keys):
        assert matching_key(key, keys) == position
    for wrong in (b"", b"new-key-", b"new-key-22", b"NEW-KEY-2"):
        assert matching_key(wrong, keys) is None, wrong


def test_keys_come_from_iris_api_key_and_iris_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_API_KEY", "single")
    monkeypatch.setenv("IRIS_API_KEYS", " a , b,,single ")
    assert load_settings().api_keys == ("single", "a", "b")
    monkeypatch.delenv("IRIS_API_KEY")
    monkeypatch.setenv("IRIS_API_KEYS", " , ")
    assert load_settings().api_keys == ()


def test_boolean_settings_refuse_unclear_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_API_KEY_OPEN_DOCS", "TRUE")
    assert load_settings().api_key_open_docs is True
    monkeypatch.setenv("IRIS_RECORD_INPUTS", "off")  # true by default
    assert load_settings().record_inputs is False
    monkeypatch.setenv("IRIS_API_KEY_OPEN_DOCS", "maybe")
    with pytest.raises(SettingsError, match="IRIS_API_KEY_OPEN_DOCS must be true or false"):
        load_settings()


def test_keys_are_checked_at_start() -> None:
    """No key when required, or a short key: one ApiKeyConfigError (a BentoMLException, so
    `bentoml serve` prints one line), never naming the key; long keys pass."""
    long_key = "k" * API_KEY_MIN_LENGTH
    assert check_api_keys((), required=False) == ()
    assert check_api_keys((long_key,), required=True) == (long_key,)
    with pytest.raises(ApiKeyConfigError, match="API keys are required"):
        check_api_keys((), required=True)
    short = long_key[:-1]
    with pytest.raises(ApiKeyConfigError, match="number 2 of 2 is shorter than") as refused:
        check_api_keys((long_key, short), required=False)
    assert short not in str(refused.value)
    assert isinstance(refused.value, BentoMLException)
