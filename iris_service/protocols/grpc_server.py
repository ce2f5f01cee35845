"""The Open Inference Protocol V2 over gRPC: a `grpc.aio` server in the API worker's event loop.

BentoML 1.4 has no gRPC for new-style services, so this is ours, the way MLServer does it: a
`grpc.aio` server started by the API service's startup hook in the same event loop as its
HTTP server, calling the same inference core (`InferenceCore.infer` / `.explain`). The
servicer only decodes (grpc_v2.py), calls the core and encodes, as routes.py does for REST.

One API worker per pod serves it (the first; `served_here`): a gRPC port cannot be shared
between processes without SO_REUSEPORT, and SO_REUSEPORT would also let any other process on
the host join the port silently and take a share of the calls. grpc turns it on by default;
here it is off (`grpc.so_reuseport` = 0), so a second service started on the same port fails
to start, loudly (`GrpcPortBusy`), instead of splitting the traffic.

What every call gets (CallGuard, an interceptor, so that no method can be added unguarded):
- the API key, as on HTTP: `authorization: Bearer <key>` metadata on every method but the
  standard health service (`grpc.health.v1.Health`), the probes' one; UNAUTHENTICATED else;
- for the inference service's methods: the request ids (`x-request-id` kept when safe, a
  server id always; both sent back as trailing metadata), the same latency/CPU/memory
  histograms and error counter as HTTP (endpoint = the gRPC method, status = the gRPC code's
  name) and one request-log line with `"protocol": "grpc"`;
- for ModelInfer: a place of the worker's admission limit, shared with HTTP
  (RESOURCE_EXHAUSTED when full), and the service's timeout (DEADLINE_EXCEEDED); its
  message size is bounded by IRIS_MAX_BODY_BYTES (grpc answers RESOURCE_EXHAUSTED). Each
  answered inference is a prediction record, through the same writer as HTTP's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from bentoml.exceptions import BentoMLException
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import metrics
from ..admission import InFlight
from ..auth import bearer_token, matching_key
from ..inference import InferenceCore, ModelNotServed, NoExplanation, TooManyToExplain
from ..model_loading import ServedModel
from ..prediction_records import as_json, prediction_record
from ..record_writer import RecordWriter
from ..request_ids import key_id, new_server_request_id, valid_client_id
from ..request_log import RequestLog
from ..settings import MODEL_NAME
from . import grpc_v2, v2, v2_explain
from .grpc_generated import grpc_predict_v2_pb2 as pb
from .grpc_generated import grpc_predict_v2_pb2_grpc as pb_grpc
from .routes import SERVER_NAME

logger = logging.getLogger("iris_service.api")

SERVICE = "inference.GRPCInferenceService"
INFER_METHOD = f"/{SERVICE}/ModelInfer"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
PROTOCOL = "grpc"
HEALTH_PERIOD_S = 0.5


class GrpcPortBusy(BentoMLException, RuntimeError):
    """The gRPC port is taken (another service, or an earlier one still running): the worker
    does not start, rather than serve HTTP without gRPC or share the port."""


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
                await context.abort(code, "internal error")
            finally:
                if taken:
                    self.in_flight.count -= 1
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


_STATM: int | None = None


def _rss() -> int:
    """Resident memory of this process in bytes (/proc/self/statm, kept open; 0 elsewhere)."""
    global _STATM
    try:
        if _STATM is None:
            _STATM = os.open("/proc/self/statm", os.O_RDONLY)
        return int(os.pread(_STATM, 128, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService: decode (grpc_v2), call the core, encode; the same answers as
    the REST routes (routes.py), with gRPC status codes."""

    def __init__(
        self,
        core_of: Callable[[], InferenceCore],
        writer: RecordWriter | None = None,
        record_inputs: bool = True,
    ) -> None:
        self.core_of = core_of
        self.writer = writer
        self.record_inputs = record_inputs

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core_of().ready())

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        from ..api_docs import API_VERSION

        return pb.ServerMetadataResponse(name=SERVER_NAME, version=API_VERSION)

    async def _model(self, name: str, version: str, context: Any) -> ServedModel:
        """The model a request names: NOT_FOUND for another name or an unknown version."""
        core = self.core_of()
        if name != MODEL_NAME:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown model {name!r}; this server serves {MODEL_NAME!r}",
            )
        if not version:
            return core.models.champion
        model = core.versions().get(version)
        if model is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version {version!r}"
            )
        return model

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        model = await self._model(request.name, request.version, context)
        core = self.core_of()
        if not core.ready():
            return pb.ModelReadyResponse(ready=False)
        if request.version:
            try:
                core.served(model.version)
            except ModelNotServed:
                return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        model = await self._model(request.name, request.version, context)
        versions = [model.version] if request.version else sorted(self.core_of().versions())
        return grpc_v2.model_metadata(MODEL_NAME, versions)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        """Inference; with `model_version`, that version answers when it is served (else
        UNAVAILABLE naming the served one); `parameters.explain` adds the explanation."""
        await self._model(request.model_name, request.model_version, context)
        try:
            parsed = grpc_v2.parse_infer_request(request)
        except v2.V2Error as exc:
            await context.abort(grpc_v2.status_code(exc.status), str(exc))
        version = request.model_version or None
        core = self.core_of()
        try:
            if parsed.explain:
                explained = await core.explain(parsed.rows, version)
                answered_by, probabilities = explained.model, explained.explanation.probabilities
                extra = v2_explain.explanation_tensors(explained.explanation)
            else:
                answer = await core.infer(parsed.rows, version)
                answered_by, probabilities, extra = answer.model, answer.probabilities, None
        except ModelNotServed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except TooManyToExplain as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NoExplanation as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        response = grpc_v2.encode_infer_response(
            parsed, MODEL_NAME, answered_by.version, probabilities, extra
        )
        self._record(request, parsed, answered_by, probabilities, extra)
        return response

    def _record(
        self,
        request: Any,
        parsed: v2.InferRequest,
        model: ServedModel,
        probabilities: Any,
        extra: Any,
    ) -> None:
        """The prediction record of an answer, kept as HTTP's records keep a V2 answer: the
        request as base64 of its protobuf bytes, the answer as the REST V2 body of the same
        outputs (JSON, or base64 of the body when its outputs are binary, as raw ones are:
        no JSON of a thousand probabilities on the answer's path)."""
        call = CURRENT_CALL.get()
        if self.writer is None or call is None:
            return
        body, header_length = v2.encode_infer_response(
            parsed, MODEL_NAME, model.version, probabilities, extra
        )
        outputs = as_json(body, "application/json" if header_length is None else None)
        inputs = None
        if self.record_inputs:
            inputs = as_json(request.SerializeToString(), None)
        self.writer.submit(
            prediction_record(
                server_request_id=call.server_request_id,
                client_request_id=call.client_request_id,
                api_key_id=call.api_key_id,
                endpoint=INFER_METHOD,
                protocol=PROTOCOL,
                model_tag=model.tag,
                latency_ms=(time.perf_counter() - call.started) * 1000,
                inputs=inputs,
                outputs=outputs,
            )
        )


def served_here(worker_index: int | None) -> bool:
    """Whether this API worker serves gRPC: the first of `bentoml serve` (index 1); none
    in-process (Service.to_asgi, test clients), where no port should be taken."""
    return worker_index == 1


def http_host(argv: list[str] | None = None) -> str:
    """The address the worker's HTTP socket listens on (BentoML passes it as `--fd N`), so
    that gRPC listens where HTTP does (`bentoml serve --host`); 127.0.0.1 when unknown."""
    argv = sys.argv if argv is None else argv
    try:
        fd = int(argv[argv.index("--fd") + 1])
        with socket.socket(fileno=os.dup(fd)) as listening:
            host = listening.getsockname()[0]
    except (ValueError, IndexError, OSError):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def serve_command_host(argv: list[str] | None = None) -> str | None:
    """In the `bentoml serve` (or `start-http-server`) supervisor process, the host it was
    given (`--host`, BENTOML_HOST, else BentoML's default 0.0.0.0); None in any other
    process (workers, `bentoml build`, tests importing the service)."""
    argv = sys.argv if argv is None else argv
    if os.path.basename(argv[0]) != "bentoml" or argv[1:2] not in (
        ["serve"],
        ["start-http-server"],
    ):
        return None
    for position, arg in enumerate(argv):
        if arg == "--host" and position + 1 < len(argv):
            return argv[position + 1]
        if arg.startswith("--host="):
            return arg.partition("=")[2]
    return os.environ.get("BENTOML_HOST") or "0.0.0.0"


def check_port_free(host: str, port: int | None) -> None:
    """GrpcPortBusy when something already listens on host:port (checked by `bentoml serve`
    before it starts any worker, so that a second service on the same port exits with one
    line and status 1 instead of serving HTTP without gRPC)."""
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc's listener
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise GrpcPortBusy(
                f"the gRPC port {host}:{port} is taken (IRIS_GRPC_PORT): {exc.strerror}; stop "
                "the other server, choose another port, or IRIS_GRPC_PORT=off"
            ) from None


@dataclass
class GrpcServer:
    """A running gRPC server and its health-updating task."""

    server: grpc.aio.Server
    port: int
    health_task: asyncio.Task[None]

    async def stop(self, grace_s: float) -> None:
        self.health_task.cancel()
        await self.server.stop(grace_s)


async def start_grpc_server(
    core_of: Callable[[], InferenceCore],
    host: str,
    port: int,
    guard: CallGuard,
    max_message_bytes: int,
    writer: RecordWriter | None = None,
    record_inputs: bool = True,
    port_file: str | None = None,
) -> GrpcServer:
    """Start the gRPC server on host:port (0: a free port); GrpcPortBusy when it is taken.
    The port in use is logged and, with `port_file`, written there."""
    server = grpc.aio.server(
        interceptors=[guard],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max(max_message_bytes, 4 * 1024 * 1024)),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(core_of, writer, record_inputs), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise GrpcPortBusy(
            f"the gRPC port {host}:{port} is taken (IRIS_GRPC_PORT): {exc}; stop the other "
            "server, choose another port, or IRIS_GRPC_PORT=off"
        ) from None
    await server.start()
    task = asyncio.create_task(_follow_readiness(core_of, health_servicer))
    logger.warning("gRPC (Open Inference Protocol V2) listening on %s:%d", host, bound)
    if port_file:
        _publish(port_file, bound)
    return GrpcServer(server, bound, task)


async def _follow_readiness(
    core_of: Callable[[], InferenceCore], servicer: health.aio.HealthServicer
) -> None:
    """The health service says SERVING while the core holds a model (as /readyz)."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    last = None
    while True:
        try:
            status = serving if core_of().ready() else not_serving
            if status != last:
                for service in ("", SERVICE):
                    await servicer.set(service, status)
                last = status
        except Exception:
            logger.exception("the gRPC health status could not be updated")
        await asyncio.sleep(HEALTH_PERIOD_S)


def forget_published_port(path: str) -> None:
    """Remove the port an earlier server published (called by `bentoml serve` at start)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _publish(path: str, port: int) -> None:
    """Write the port to `path` atomically (tests and tools read it for IRIS_GRPC_PORT=0)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scratch = f"{path}.{os.getpid()}"
    with open(scratch, "w") as out:
        out.write(f"{port}\n")
    os.replace(scratch, path)


async def start_configured(
    core_of: Callable[[], InferenceCore],
    in_flight: InFlight,
    writer: RecordWriter | None,
    worker_index: int | None,
) -> GrpcServer | None:
    """The gRPC server as the settings configure it (IRIS_GRPC_PORT and the limits HTTP
    uses), started in this worker if it is the one that serves gRPC; None otherwise."""
    from ..settings import (
        API_KEYS,
        API_TIMEOUT_SECONDS,
        GRPC_PORT,
        GRPC_PORT_FILE,
        MAX_BODY_BYTES,
        MAX_CONCURRENT_REQUESTS,
        RECORD_INPUTS,
    )

    if GRPC_PORT is None or not served_here(worker_index):
        return None
    guard = CallGuard(API_KEYS, MAX_CONCURRENT_REQUESTS, in_flight, API_TIMEOUT_SECONDS)
    return await start_grpc_server(
        core_of,
        http_host(),
        GRPC_PORT,
        guard,
        MAX_BODY_BYTES,
        writer,
        RECORD_INPUTS,
        GRPC_PORT_FILE,
    )
