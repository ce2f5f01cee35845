"""Admission control, API key, prediction log and log filter, around small ASGI apps."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.http.admission import AdmissionControlMiddleware
from iris_service.http.auth import ApiKeyMiddleware
from iris_service.http.log_filters import ClientErrorTracebackFilter
from iris_service.http.middleware import RequestMonitoringMiddleware
from iris_service.http.prediction_records import PredictionRecordMiddleware
from iris_service.records.store import RecordStore, sqlite_url
from iris_service.records.writer import RecordWriter

RELEASE = asyncio.Event()


async def predict(request: Request) -> JSONResponse:
    body = await request.json()
    if body.get("wait"):
        await RELEASE.wait()
    return JSONResponse({"class_name": "setosa", "model_tag": "iris-classifier:t1"})


def _app(*middlewares: tuple[type, dict]) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    for cls, options in reversed(middlewares):
        app = cls(app, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_admission_refuses_over_the_limit_with_retry_after() -> None:
    RELEASE.clear()
    async with _app(
        (RequestMonitoringMiddleware, {}), (AdmissionControlMiddleware, {"limit": 2})
    ) as client:
        held = [asyncio.create_task(client.post("/predict", json={"wait": 1})) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = await client.post("/predict", json={})
        RELEASE.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        after = await client.post("/predict", json={})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "too_many_requests"
    assert after.status_code == 200  # slots are given back


async def test_a_request_holds_its_place_until_its_answer_is_sent_not_after() -> None:
    """Work an app does after the last byte of its answer (BentoML's, a background task) holds
    no admission place: a request in flight is one whose answer has not been sent."""
    from iris_service.http.admission import InFlight

    after_answer = asyncio.Event()
    counted: list[int] = []
    counter = InFlight()
    calls: list[int] = []

    async def app(scope: dict, receive, send) -> None:
        calls.append(1)
        first_call = len(calls) == 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        counted.append(counter.count)
        await send({"type": "http.response.body", "body": b"{}"})
        counted.append(counter.count)
        if first_call:
            await after_answer.wait()  # still running after the answer went out

    admission = AdmissionControlMiddleware(app, limit=1, counter=counter)
    scope = {"type": "http", "path": "/predict", "method": "POST", "headers": []}
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    first = asyncio.create_task(admission(scope, receive, send))
    await asyncio.sleep(0.01)
    assert counted == [1, 0] and counter.count == 0
    second_sent: list[dict] = []

    async def send_second(message: dict) -> None:
        second_sent.append(message)

    # Admitted while the first app still runs: the limit of 1 was given back with its answer.
    await admission(scope, receive, send_second)
    assert not first.done()
    after_answer.set()
    await first
    assert second_sent[0]["status"] == 200 and counter.count == 0


async def test_api_key_required_and_compared_exactly() -> None:
    async with _app(
        (RequestMonitoringMiddleware, {}), (ApiKeyMiddleware, {"api_keys": ("k-123",)})
    ) as client:
        missing = await client.post("/predict", json={})
        wrong = await client.post("/predict", json={}, headers={"authorization": "Bearer k-12"})
        right = await client.post("/predict", json={}, headers={"authorization": "bearer k-123"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert set(wrong.json()) == {"error", "detail", "request_id"}
    assert "k-123" not in wrong.text
    assert right.status_code == 200


async def test_no_key_means_open() -> None:
    async with _app((ApiKeyMiddleware, {"api_keys": ()})) as client:
        assert (await client.post("/predict", json={})).status_code == 200


def _writer(tmp_path: Path) -> RecordWriter:
    store = RecordStore(sqlite_url(tmp_path / "records.db"))
    store.migrate()
    return RecordWriter(store)


async def test_prediction_records_are_kept_for_successes_only(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    async with _app(
        (PredictionRecordMiddleware, {"writer": writer}), (RequestMonitoringMiddleware, {})
    ) as client:
        ok = await client.post("/predict", json={"a": 1}, headers={"x-request-id": "r-1"})
        bad = await client.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    assert ok.status_code == 200 and bad.status_code == 415
    assert writer.flush()
    [record] = list(writer.store.iter_predictions())
    assert record["server_request_id"] == ok.headers["x-server-request-id"] != "r-1"
    assert record["client_request_id"] == "r-1" and record["inputs"] == {"a": 1}
    assert record["model_tag"] == "iris-classifier:t1" and record["protocol"] == "service"
    assert record["outputs"] == {"class_name": "setosa", "model_tag": "iris-classifier:t1"}
    assert record["latency_ms"] >= 0
    writer.close()


async def test_inputs_can_be_left_out_of_the_records(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    async with _app(
        (PredictionRecordMiddleware, {"writer": writer, "log_inputs": False}),
        (RequestMonitoringMiddleware, {}),
    ) as client:
        assert (await client.post("/predict", json={"secret": 1})).status_code == 200
    assert writer.flush()
    [record] = list(writer.store.iter_predictions())
    assert record["inputs"] is None and "secret" not in json.dumps(record)
    assert record["outputs"]["class_name"] == "setosa"
    writer.close()


def test_client_error_tracebacks_are_dropped_server_errors_kept() -> None:
    class Model(BaseModel):
        x: int

    def record_for(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException as raised:
            info = (type(raised), raised, raised.__traceback__)
        return logging.LogRecord("b", logging.ERROR, "f", 1, "Exception on /predict", (), info)

    try:
        Model(x="nope")
    except ValidationError as exc:
        validation = exc
    log_filter = ClientErrorTracebackFilter()
    assert log_filter.filter(record_for(validation)) is False
    assert log_filter.filter(record_for(RuntimeError("bug"))) is True


def _audit_module():
    from tools import audit_dependencies

    return audit_dependencies


def test_audit_fails_only_on_vulnerabilities_with_a_fix(tmp_path: Path) -> None:
    audit = _audit_module()
    report = {
        "dependencies": [
            {"name": "a", "version": "1.0", "vulns": [{"id": "X-1", "fix_versions": ["1.1"]}]},
            {"name": "b", "version": "2.0", "vulns": [{"id": "X-2", "fix_versions": []}]},
            {"name": "c", "skip_reason": "not found"},
        ]
    }
    assert audit.fixable(report) == ["a 1.0: X-1 (fixed in 1.1)"]
    pins = tmp_path / "c.txt"
    pins.write_text("Foo_Bar==1.0\n# comment\nbaz>=2\nqux==3 ; python_version>'3'\n")
    assert audit.pinned_set([pins]) == {"foo-bar": "1.0", "qux": "3"}


def test_audit_tells_a_network_failure_from_other_failures() -> None:
    audit = _audit_module()
    refused = (
        "requests.exceptions.ProxyError: HTTPSConnectionPool(host='api.osv.dev', port=443): "
        "Max retries exceeded with url: /v1/query"
    )
    assert audit.classify_failure(refused) is audit.Unreachable
    assert audit.classify_failure("No address: Temporary failure in name resolution") is (
        audit.Unreachable
    )
    assert audit.classify_failure("pip_audit: error: unrecognized arguments: --x") is RuntimeError


def test_a_failed_audit_is_told_in_the_line_that_says_why() -> None:
    audit = _audit_module()
    traceback = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "    raise ConnectionError(e, request=request)\n"
        "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev', port=443)\n"
        "\n"
    )
    assert audit.last_line(traceback).startswith("requests.exceptions.ConnectionError: ")
    assert audit.last_line("usage: pip-audit\npip_audit: error: bad flag\n") == (
        "pip_audit: error: bad flag"
    )
    assert audit.last_line("") == "no output"


@pytest.mark.parametrize(("flags", "status"), [((), 2), (("--unreachable-ok",), 0)])
def test_an_unreachable_vulnerability_database_is_reported_as_not_run(
    flags: tuple[str, ...], status: int
) -> None:
    """The real audit with every HTTPS connection refused (a proxy on a closed port): it says
    the audit did not run, exits 2, and 0 only when told an unreachable database is fine."""
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        env = {**os.environ, "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": ""}
        for lower in ("https_proxy", "http_proxy", "no_proxy"):
            env.pop(lower, None)
        result = subprocess.run(
            [sys.executable, "-m", "tools.audit_dependencies", *flags],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == status, result.stdout + result.stderr
    assert "dependency audit NOT RUN: no vulnerability database reachable (osv, pypi)" in (
        result.stdout
    )


class _Stored:
    """A stored model version as the BentoML store describes it: a tag, metadata, a folder."""

    def __init__(self, folder: Path, metadata: dict) -> None:
        self.tag, self.path = "iris-classifier:v1", str(folder)
        self.info = type("Info", (), {"metadata": metadata})()

    def path_of(self, name: str) -> str:
        return str(Path(self.path) / name)


def _metadata(**extra: object) -> dict:
    from iris_service.names import CLASS_NAMES, FEATURE_NAMES

    return {"class_names": list(CLASS_NAMES), "feature_names": list(FEATURE_NAMES), **extra}


def test_a_model_without_a_compiled_form_is_refused_clearly(tmp_path: Path) -> None:
    """The service loads ONNX only: a version stored without it gets one clear error."""
    from iris_service.inference.model_loading import ModelUnavailableError, load_model

    (tmp_path / "mlflow_model").mkdir()
    (tmp_path / "mlflow_model" / "model.pkl").write_bytes(b"never unpickled")
    with pytest.raises(ModelUnavailableError, match=r"no compiled \(ONNX\) form.*make train"):
        load_model(_Stored(tmp_path, _metadata()))


def test_an_altered_onnx_file_is_refused_before_it_is_loaded(tmp_path: Path) -> None:
    import hashlib

    from iris_service.inference.model_loading import ModelUnavailableError, load_model

    (tmp_path / "model.onnx").write_bytes(b"altered")
    recorded = hashlib.sha256(b"the file training wrote").hexdigest()
    with pytest.raises(ModelUnavailableError, match="does not match the SHA-256"):
        load_model(_Stored(tmp_path, _metadata(onnx_sha256=recorded)))
