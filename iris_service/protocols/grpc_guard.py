"""What guards every gRPC call: an interceptor, so that no method can be added unguarded.

The gRPC counterpart of the HTTP middleware stack (auth.py, middleware.py, admission.py),
with their rules and their metrics:
- the API key, as on HTTP: `authorization: Bearer <key>` metadata on every method but the
  standard health service (`grpc.health.v1.Health`), the probes' one; UNAUTHENTICATED else
  (reflection too);
- for the inference service's methods: the request ids (`x-request-id` kept when safe, a
  server id always; both sent back as trailing metadata), the same latency/CPU/memory
  histograms and error counter as HTTP (endpoint = the gRPC method, status = the gRPC code's
  name) and one request-log line with `"protocol": "grpc"`;
- for ModelInfer: a place of the worker's admission limit, shared with HTTP
  (RESOURCE_EXHAUSTED when full), and the service's timeout (DEADLINE_EXCEEDED).
The call's ids and key are left in CURRENT_CALL for the servicer's prediction record.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from iris_service.http.admission import InFlight
from iris_service.http.auth import bearer_token, matching_key
from iris_service.http.middleware import ResidentMemory
from iris_service.http.request_ids import key_id, new_server_request_id, valid_client_id
from iris_service.http.request_log import RequestLog
from iris_service.monitoring import metrics

logger = logging.getLogger("iris_service.api")


SERVICE = "inference.GRPCInferenceService"
INFER_METHOD = f"/{SERVICE}/ModelInfer"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
PROTOCOL = "grpc"


@dataclass
class CallRecord:
    """One guarded call's ids and key; ModelInfer fills in what its record needs."""

    server_request_id: str
    client_request_id: str | None
    api_key_id: str | None
    started: float


CURRENT_CALL: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "iris_grpc_call", default=None
)


def _metadata(details: Any, name: str) -> bytes | None:
    for key, value in details.invocation_metadata or ():
        if key == name:
            return value.encode() if isinstance(value, str) else value
    return None


class CallGuard(grpc.aio.ServerInterceptor):
    """API key, request ids, measurements, request log, admission and timeout of every call
    (see the module's docstring)."""

    def __init__(
        self,
        api_keys: tuple[str, ...],
        admission_limit: int,
        in_flight: InFlight,
        timeout_s: float,
        request_log: RequestLog | None = None,
    ) -> None:
        self.keys = tuple(key.encode() for key in api_keys if key)
        self.key_ids = tuple(key_id(key) for key in self.keys)
        self.limit = admission_limit
        self.in_flight = in_flight
        self.timeout_s = timeout_s
        self.request_log = request_log or RequestLog()

    def _key(self, details: Any) -> tuple[bool, str | None]:
        """(accepted, the key's id) of a call's `authorization` metadata."""
        if not self.keys:
            return True, None
        authorization = _metadata(details, "authorization")
        token = bearer_token(authorization) if authorization is not None else None
        position = matching_key(token, self.keys) if token is not None else None
        if position is None:
            return False, None
        return True, self.key_ids[position]

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
        details: Any,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        accepted, api_key_id = self._key(details)
        if details.method.startswith(f"/{SERVICE}/") and handler.unary_unary is not None:
            # grpc's handlers are namedtuples (grpc._utilities.RpcMethodHandler).
            guarded = self._guarded(details, handler.unary_unary, accepted, api_key_id)
            return handler._replace(unary_unary=guarded)  # type: ignore[attr-defined]
        if accepted:
            return handler
        return _refusing(handler)

    def _guarded(
        self, details: Any, behaviour: Callable[..., Awaitable[Any]], accepted: bool, key: Any
    ) -> Callable[..., Awaitable[Any]]:
        method: str = details.method
        client_id_raw = _metadata(details, "x-request-id")
        client_id = valid_client_id(client_id_raw) if client_id_raw is not None else None
        admitted = method == INFER_METHOD

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = CallRecord(new_server_request_id(), client_id, key, time.perf_counter())
            CURRENT_CALL.set(call)
            cpu_before, rss_before = time.process_time(), _rss()
            code = grpc.StatusCode.OK
            context.set_trailing_metadata(
                (
                    ("x-request-id", client_id or call.server_request_id),
                    ("x-server-request-id", call.server_request_id),
                )
            )
            taken = False

            def give_back() -> None:
                """The admission place given back; before the guard's own refusal is sent,
                so a client that has seen it finds the place free if it retries at once."""
                nonlocal taken
                if taken:
                    self.in_flight.count -= 1
                    taken = False

            try:
                if not accepted:
                    code = grpc.StatusCode.UNAUTHENTICATED
                    await context.abort(
                        code,
                        "missing or invalid API key: send metadata authorization: Bearer <key>",
                    )
                if admitted:
                    if self.in_flight.count + 1 > self.limit:
                        code = grpc.StatusCode.RESOURCE_EXHAUSTED
                        await context.abort(
                            code,
                            f"more than {self.limit} prediction requests in flight; retry shortly",
                        )
                    self.in_flight.count += 1
                    taken = True
                try:
                    async with asyncio.timeout(self.timeout_s):
                        return await behaviour(request, context)
                except TimeoutError:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    give_back()
                    await context.abort(code, f"no answer within {self.timeout_s:g} s")
            except grpc.aio.AbortError:
                code = context.code() or code
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in gRPC call %s", call.server_request_id)
                give_back()
                await context.abort(code, "internal error")
            finally:
                give_back()
                self._measured(method, code, call, cpu_before, rss_before)

        return guarded

    def _measured(
        self,
        method: str,
        code: grpc.StatusCode,
        call: CallRecord,
        cpu_before: float,
        rss_before: int,
    ) -> None:
        latency_ms = (time.perf_counter() - call.started) * 1000
        cpu_ms = (time.process_time() - cpu_before) * 1000
        rss_after = _rss()
        memory_delta_mb = (rss_after - rss_before) / 1024 / 1024
        metrics.REQUEST_LATENCY_MS.labels(method, code.name).observe(latency_ms)
        metrics.REQUEST_CPU_MS.labels(method).observe(cpu_ms)
        metrics.REQUEST_MEMORY_DELTA_MB.labels(method).observe(memory_delta_mb)
        if code is not grpc.StatusCode.OK:
            metrics.ERRORS_TOTAL.labels(method, code.name.lower()).inc()
        self.request_log.write(
            call.client_request_id or call.server_request_id,
            method,
            code.value[0],
            latency_ms,
            cpu_ms,
            memory_delta_mb,
            call.server_request_id,
            protocol=PROTOCOL,
        )


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED (reflection)."""
    message = "missing or invalid API key: send metadata authorization: Bearer <key>"

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.stream_stream_rpc_method_handler(refuse)


_MEMORY = ResidentMemory()  # the middleware's cheap reader of this process's RSS


def _rss() -> int:
    return _MEMORY.bytes()
