"""What guards every gRPC call (iris_service/protocols/grpc_guard.py), on a real in-process
`grpc.aio` server on 127.0.0.1 with a small servicer of the V2 service: the API key (health
open), the admission limit shared with HTTP (RESOURCE_EXHAUSTED, the place given back), the
service's timeout (DEADLINE_EXCEEDED); and the start-up checks of `bentoml serve`: a taken
port is refused in one line, the supervisor's host is read from its command line.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from iris_service.http.admission import InFlight
from iris_service.http.request_log import RequestLog
from iris_service.protocols import grpc_guard, grpc_server
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2 as pb
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2_grpc as pb_grpc

KEY = "unit-test-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
TIMEOUT_S = 0.5
pytestmark = pytest.mark.timeout(60)


class SlowServicer(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer waits until released (or forever, past the guard's timeout)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        self.entered.set()
        await self.release.wait()
        return pb.ModelInferResponse(model_name="m")


@pytest.fixture
async def served() -> AsyncIterator[tuple[pb_grpc.GRPCInferenceServiceStub, Any, Any, Any]]:
    in_flight = InFlight()
    guard = grpc_guard.CallGuard((KEY,), 1, in_flight, TIMEOUT_S, RequestLog(enabled=False))
    server = grpc.aio.server(interceptors=[guard], options=[("grpc.so_reuseport", 0)])
    servicer = SlowServicer()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel), channel, servicer, in_flight
    await server.stop(0)


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value.code()


async def test_the_key_is_needed_but_for_health(served: Any) -> None:
    stub, channel, _, _ = served
    live = pb.ServerLiveRequest()
    assert await _code(stub.ServerLive(live)) == grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer wrong-key-0123456789"),)
    assert await _code(stub.ServerLive(live, metadata=wrong)) == grpc.StatusCode.UNAUTHENTICATED
    assert (await stub.ServerLive(live, metadata=AUTH)).live
    check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert check.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_full_worker_refuses_and_gives_the_place_back(served: Any) -> None:
    stub, _, servicer, in_flight = served
    first = stub.ModelInfer(pb.ModelInferRequest(), metadata=AUTH)
    await asyncio.wait_for(servicer.entered.wait(), 5)
    assert in_flight.count == 1
    second = stub.ModelInfer(pb.ModelInferRequest(), metadata=AUTH)
    assert await _code(second) == grpc.StatusCode.RESOURCE_EXHAUSTED
    servicer.release.set()
    assert (await first).model_name == "m"
    assert in_flight.count == 0


async def test_a_call_past_the_timeout_is_deadline_exceeded(served: Any) -> None:
    stub, _, _, in_flight = served
    code = await _code(stub.ModelInfer(pb.ModelInferRequest(), metadata=AUTH))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert in_flight.count == 0


def test_a_taken_port_is_refused_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(grpc_server.GrpcPortBusy, match=f"127.0.0.1:{port} is taken"):
            grpc_server.check_port_free("127.0.0.1", port)
    grpc_server.check_port_free("127.0.0.1", port)  # free again
    grpc_server.check_port_free("127.0.0.1", 0)  # any free port: nothing to check


def test_only_the_serve_supervisor_checks_and_with_its_host() -> None:
    assert grpc_server.serve_command_host(["/v/bin/bentoml", "serve", "--host", "::1"]) == "::1"
    assert grpc_server.serve_command_host(["bentoml", "serve", "s:S", "--host=1.2.3.4"]) == (
        "1.2.3.4"
    )
    assert grpc_server.serve_command_host(["bentoml", "build"]) is None
    assert grpc_server.serve_command_host(["/x/_bentoml_impl/worker/service.py", "--fd"]) is None
    assert grpc_server.served_here(1) and not grpc_server.served_here(2)
    assert not grpc_server.served_here(None)
