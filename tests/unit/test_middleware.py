"""The middleware around a small real Starlette app, driven through httpx's ASGI transport."""

import json

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from iris_service.http.middleware import RequestMonitoringMiddleware
from iris_service.http.request_log import RequestLog


async def predict(request: Request) -> JSONResponse:
    body = await request.json()
    if body.get("explode"):
        raise RuntimeError("secret internal detail")
    if body.get("invalid"):
        return JSONResponse(
            {"error": "1 validation error", "detail": [{"loc": ["x"], "msg": "bad"}]}, 400
        )
    return JSONResponse({"ok": True, "allocated": len(b"x" * body.get("allocate", 0))})


async def health(_: Request) -> PlainTextResponse:
    return PlainTextResponse("\n")


def _client(
    max_body_bytes: int = 1024, expose: bool = False, request_log: RequestLog | None = None
) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/livez", health)])
    wrapped = RequestMonitoringMiddleware(
        app, max_body_bytes=max_body_bytes, expose_measurements=expose, request_log=request_log
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


def _assert_error_shape(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_success_carries_measurements_and_a_request_id() -> None:
    async with _client(expose=True) as client:
        response = await client.post("/predict", json={"allocate": 10})
    assert response.status_code == 200
    assert float(response.headers["x-latency-ms"]) >= 0
    assert float(response.headers["x-cpu-time-ms"]) >= 0
    float(response.headers["x-memory-delta-mb"])  # a number, possibly negative
    assert len(response.headers["x-request-id"]) == 32
    assert response.headers["x-server-request-id"] == response.headers["x-request-id"]


async def test_process_measurements_stay_out_of_answers_unless_configured() -> None:
    before = REGISTRY.get_sample_value("iris_request_cpu_ms_count", {"endpoint": "/predict"})
    async with _client() as client:
        response = await client.post("/predict", json={})
    assert response.status_code == 200
    assert float(response.headers["x-latency-ms"]) >= 0  # the latency header is kept
    assert "x-cpu-time-ms" not in response.headers
    assert "x-memory-delta-mb" not in response.headers
    after = REGISTRY.get_sample_value("iris_request_cpu_ms_count", {"endpoint": "/predict"})
    assert after == (before or 0) + 1  # still measured, in the metrics


async def test_a_valid_incoming_request_id_is_kept_and_an_unsafe_one_replaced() -> None:
    async with _client() as client:
        kept = await client.post("/predict", json={}, headers={"x-request-id": "client-42"})
        replaced = await client.post("/predict", json={}, headers={"x-request-id": "bad id\x01"})
    assert kept.headers["x-request-id"] == "client-42"
    assert kept.headers["x-server-request-id"] not in ("client-42", "")
    assert replaced.headers["x-request-id"] != "bad id\x01"


async def test_errors_are_rewritten_into_the_one_shape() -> None:
    async with _client() as client:
        invalid = await client.post("/predict", json={"invalid": True})
        crashed = await client.post("/predict", json={"explode": True})
        missing = await client.get("/nowhere")
    assert _assert_error_shape(invalid, 400, "validation_error")["detail"] == "x: bad"
    assert "secret" not in _assert_error_shape(crashed, 500, "internal_error")["detail"]
    _assert_error_shape(missing, 404, "not_found")


async def test_oversized_bodies_get_413_whether_declared_or_streamed() -> None:
    async with _client(max_body_bytes=100) as client:
        declared = await client.post(
            "/predict",
            content=b"{" + b" " * 200 + b"}",
            headers={"content-type": "application/json"},
        )

        async def chunks():
            for _ in range(10):
                yield b" " * 50

        streamed = await client.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
    _assert_error_shape(declared, 413, "payload_too_large")
    _assert_error_shape(streamed, 413, "payload_too_large")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_bodies_get_415(content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with _client() as client:
        response = await client.post("/predict", content=b"{}", headers=headers)
    _assert_error_shape(response, 415, "unsupported_media_type")


async def test_metrics_are_recorded_for_predictions_only() -> None:
    def count(endpoint: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "iris_request_latency_ms_count", {"endpoint": endpoint, "status": "200"}
            )
            or 0.0
        )

    before_predict, before_health = count("/predict"), count("/livez")
    async with _client() as client:
        await client.post("/predict", json={})
        health = await client.get("/livez")
    assert count("/predict") == before_predict + 1
    assert count("/livez") == before_health
    assert "x-latency-ms" not in health.headers


def test_success_series_exist_at_zero_before_the_first_request() -> None:
    """A scrape before any traffic sees the series at 0, so increase() over the first burst
    has a starting point (a series born with its final count shows no increase)."""

    def count(endpoint: str) -> float | None:
        return REGISTRY.get_sample_value(
            "iris_request_latency_ms_count", {"endpoint": endpoint, "status": "200"}
        )

    assert count("/born-at-zero") is None and count("/v9/*/born") is None
    RequestMonitoringMiddleware(Starlette(), monitored_paths=("/born-at-zero", "/v9/*/born"))
    assert count("/born-at-zero") == 0.0
    assert count("/v9/*/born") == 0.0


async def test_one_json_log_line_per_request(capfd: pytest.CaptureFixture[str]) -> None:
    request_log = RequestLog()
    async with _client(request_log=request_log) as client:
        response = await client.post("/predict", json={}, headers={"x-request-id": "line-1"})
        await client.get("/livez")
    request_log.close()  # the writer thread's lines, all written (not a wait of fixed length)
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line]
    # Earlier tests' logs may still flush their own lines here: keep this client's.
    lines = [
        line for line in lines if line["request_id"] == "line-1" or line["endpoint"] == "/livez"
    ]
    assert len(lines) == 1
    assert lines[0]["request_id"] == response.headers["x-request-id"] == "line-1"
    assert lines[0]["status"] == 200 and lines[0]["latency_ms"] >= 0
    assert lines[0]["event"] == "request" and lines[0]["endpoint"] == "/predict"


def test_route_patterns_match_path_parameters_and_label_them_by_route() -> None:
    from iris_service.names import PREDICTION_PATHS, RoutePatterns

    routes = RoutePatterns(PREDICTION_PATHS)
    assert "/predict" in routes and "/invocations" in routes
    assert "/v2/models/iris-classifier/versions/abc/infer" in routes
    assert "/v2/models/iris-classifier/ready" not in routes and "/predictx" not in routes
    assert routes.label("/v2/models/made-up-name/infer") == "/v2/models/*/infer"
    assert routes.label("/predict_batch") == "/predict_batch"
