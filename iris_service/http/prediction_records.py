"""The record of every successful prediction, handed to the prediction store's writer.

One record per 200 answer of a prediction route (names.PREDICTION_PATHS): the server's
request id (iris_service/http/request_ids.py, also in the answer's X-Server-Request-Id), the
client's X-Request-ID and the API key it came with, the time, route and protocol, the model
version, the latency, the request body ("inputs"; left out with IRIS_RECORD_INPUTS=false)
and the answer ("outputs"). Bodies are kept as JSON: a JSON body as it came; any other (MLflow's
CSV, a V2 binary tensor) as a JSON string, its text or base64 of its bytes.

The record is handed to the writer (iris_service/records/writer.py) before the answer's last
byte is sent, and that hand-over never blocks and never fails the request; the writer puts
records in the store (iris_service/records/store.py) in batches.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from iris_service.http.errors import protocol_of
from iris_service.http.request_ids import api_key_id, client_request_id, server_request_id
from iris_service.names import PREDICTION_PATHS, RoutePatterns
from iris_service.records.writer import RecordWriter
from iris_service.settings import settings

SERVICE_PROTOCOL = "service"


class PredictionRecordMiddleware:
    """Records each successful prediction through a RecordWriter; no-op without one."""

    def __init__(
        self,
        app: Any,
        writer: RecordWriter | None,
        paths: tuple[str, ...] = PREDICTION_PATHS,
        log_inputs: bool = settings.record_inputs,
    ) -> None:
        self.app = app
        self.writer = writer
        self.paths = RoutePatterns(paths)
        self.log_inputs = log_inputs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            self.writer is None
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        writer = self.writer
        started = time.perf_counter()
        request_chunks: list[bytes] = []
        response_chunks: list[bytes] = []
        response_headers: list[tuple[bytes, bytes]] = []
        status = 0

        async def receive_and_keep() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                request_chunks.append(message.get("body", b""))
            return message

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.extend(message.get("headers", []))
            elif message["type"] == "http.response.body" and status == 200:
                response_chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    inputs = b"".join(request_chunks) if self.log_inputs else None
                    record = _record(scope, inputs, response_chunks, response_headers, started)
                    writer.submit(record)
            await send(message)

        await self.app(scope, receive_and_keep if self.log_inputs else receive, send_and_record)


def _record(
    scope: dict[str, Any],
    inputs: bytes | None,
    response_chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    started: float,
) -> dict[str, Any]:
    """The store's row for one answer, its bodies kept as JSON bytes (never parsed and
    dumped again: both are valid JSON already, or made a JSON string)."""
    response = as_json(b"".join(response_chunks), _header(headers, b"content-type"))
    in_body = _MODEL_TAG.search(response)
    # Answers whose protocol has no room for it (MLflow scoring) name it in a header.
    tag = json.loads(in_body.group(1)) if in_body else _header(headers, b"x-model-tag")
    latency = _header(headers, b"x-latency-ms")
    if inputs is not None:
        # A V2 body with binary tensor data after its JSON header is not JSON, whatever its
        # content type says: kept as base64.
        binary = _header(scope["headers"], b"inference-header-content-length") is not None
        content_type = None if binary else _header(scope["headers"], b"content-type")
        inputs = as_json(inputs, content_type)
    return prediction_record(
        server_request_id=server_request_id(scope),
        client_request_id=client_request_id(scope),
        api_key_id=api_key_id(scope),
        endpoint=scope["path"],
        protocol=protocol_of(scope["path"]) or SERVICE_PROTOCOL,
        model_tag=tag or "",
        latency_ms=float(latency) if latency else (time.perf_counter() - started) * 1000,
        inputs=inputs,
        outputs=response,
    )


def prediction_record(
    *,
    server_request_id: str,
    client_request_id: str | None,
    api_key_id: str | None,
    endpoint: str,
    protocol: str,
    model_tag: str,
    latency_ms: float,
    inputs: bytes | None,
    outputs: bytes,
) -> dict[str, Any]:
    """The store's row for one answer of any transport (HTTP here, gRPC in
    protocols/grpc_server.py); `inputs` and `outputs` are JSON bytes (see `as_json`)."""
    return {
        "server_request_id": server_request_id,
        "client_request_id": client_request_id,
        "api_key_id": api_key_id,
        "ts": time.time(),
        "endpoint": endpoint,
        "protocol": protocol,
        "model_tag": model_tag,
        "latency_ms": latency_ms,
        "inputs": inputs,
        "outputs": outputs,
    }


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


_MODEL_TAG = re.compile(rb'"model_tag":("[^"\\]*")')


def _as_json_text(text: str | None) -> bytes:
    return json.dumps(text).encode()


def as_json(raw: bytes, content_type: str | None) -> bytes:
    """A body as JSON: a JSON body as it is, any other as a JSON string."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        return raw
    if kind.startswith("text/"):
        return _as_json_text(raw.decode("utf-8", "replace"))
    return _as_json_text(base64.b64encode(raw).decode())
