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

Each call passes CallGuard (grpc_guard.py: API key with health open, request ids, the HTTP
metrics and request log with the protocol, admission places shared with HTTP, the timeout) and
reaches InferenceServicer (grpc_servicer.py: decode, core, encode, prediction record).
Messages are bounded by IRIS_MAX_BODY_BYTES (grpc answers RESOURCE_EXHAUSTED itself, before
any handler: such a refusal is not in the request log). The standard health service follows
the core's readiness; server reflection lists the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from bentoml.exceptions import BentoMLException
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from iris_service.http.admission import InFlight
from iris_service.inference.core import InferenceCore
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2 as pb
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2_grpc as pb_grpc
from iris_service.protocols.grpc_guard import SERVICE, CallGuard
from iris_service.protocols.grpc_servicer import InferenceServicer
from iris_service.records.writer import RecordWriter

logger = logging.getLogger("iris_service.api")

HEALTH_PERIOD_S = 0.5


class GrpcPortBusy(BentoMLException, RuntimeError):
    """The gRPC port is taken (another service, or an earlier one still running): the worker
    does not start, rather than serve HTTP without gRPC or share the port."""


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
    from iris_service.settings import API_TIMEOUT_SECONDS, settings

    if settings.grpc_port is None or not served_here(worker_index):
        return None
    guard = CallGuard(
        settings.api_keys, settings.max_concurrent_requests, in_flight, API_TIMEOUT_SECONDS
    )
    return await start_grpc_server(
        core_of,
        http_host(),
        settings.grpc_port,
        guard,
        settings.max_body_bytes,
        writer,
        settings.record_inputs,
        settings.grpc_port_file,
    )
