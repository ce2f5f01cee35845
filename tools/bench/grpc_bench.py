"""python -m tools.bench.grpc_bench [--duration 8] [--concurrency 8] [--out-dir reports]

V2 over gRPC beside V2 over REST, on one `bentoml serve` of the shipped service (the model
store of `make serve`, shipped settings, gRPC on a free port): one flower and 1,000 flowers
per request, each sent by --concurrency callers in a closed loop for --duration seconds after
a warm-up, through the same Python asyncio client process for every variant (grpc.aio for
gRPC, aiohttp for REST): gRPC with raw contents (what tritonclient.grpc sends) and typed
contents; REST with JSON tensors and with binary tensors. wrk cannot speak gRPC, so this is a
Python client: its own CPU shares the 2 cores, and the figures compare the transports under
the same client rather than giving the server's peak (`make bench` does that for REST).
Before timing, each variant's probabilities are checked equal to REST JSON's. With
--mlserver, MLServer 1.7.1's gRPC (defaults, its own venv) serves the same model's MLflow
pickle and is measured the same way, raw and typed (it answers class ids).
Writes grpc-bench.json and grpc-bench.md into --out-dir; `make bench-grpc` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np

from iris_pipeline.paths import REPORTS_DIR
from iris_service.names import MODEL_NAME
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tools.bench.payloads import rows as iris_rows
from tools.grpc_requests import infer_request
from tools.local_server import HOST, bento_server, start_server

SIZES = (1, 1000)
VARIANTS = ("grpc-raw", "grpc-typed", "rest-json", "rest-binary")
Call = Callable[[], Awaitable[np.ndarray]]


def _grpc_call(
    stub: pb_grpc.GRPCInferenceServiceStub,
    flowers: np.ndarray,
    raw: bool,
    output: str | None = "predict_proba",
) -> Call:
    """One ModelInfer of `flowers` (raw or typed FP64) asking for `output` (None: the
    server's default outputs; MLServer's scikit-learn runtime answers `predict`, INT64)."""
    request = infer_request(flowers, "FP64", raw)
    if output is not None:
        request.outputs.add(name=output)

    async def call() -> np.ndarray:
        answer = await stub.ModelInfer(request, timeout=30)
        first = answer.outputs[0]
        if answer.raw_output_contents:
            dtype = "<i8" if first.datatype == "INT64" else "<f8"
            return np.frombuffer(answer.raw_output_contents[0], dtype)
        if first.datatype == "INT64":
            return np.array(first.contents.int64_contents)
        return np.array(first.contents.fp64_contents)

    return call


def _rest_call(session: aiohttp.ClientSession, url: str, flowers: np.ndarray, binary: bool) -> Call:
    tensor: dict[str, Any] = {"name": "input-0", "shape": list(flowers.shape), "datatype": "FP64"}
    output: dict[str, Any] = {"name": "predict_proba"}
    headers = {"Content-Type": "application/json"}
    if binary:
        blob = flowers.astype("<f8").tobytes()
        tensor["parameters"] = {"binary_data_size": len(blob)}
        output["parameters"] = {"binary_data": True}
        header = json.dumps({"inputs": [tensor], "outputs": [output]}).encode()
        body = header + blob
        headers = {"Inference-Header-Content-Length": str(len(header))}
    else:
        tensor["data"] = flowers.ravel().tolist()
        body = json.dumps({"inputs": [tensor], "outputs": [output]}).encode()

    async def call() -> np.ndarray:
        async with session.post(url, data=body, headers=headers) as response:
            content = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {content[:200]!r}")
            length = response.headers.get("Inference-Header-Content-Length")
            if length is not None:
                return np.frombuffer(content[int(length) :], "<f8")
            return np.array(json.loads(content)["outputs"][0]["data"])

    return call


async def _closed_loop(call: Call, concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` callers calling back to back for `seconds`: latencies and errors."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                await call()
            except (grpc.RpcError, aiohttp.ClientError, RuntimeError, TimeoutError):
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    cpu_before, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_before
    latencies.sort()
    answered = len(latencies)

    def pct(q: float) -> float:
        return round(latencies[min(answered - 1, int(q * answered))], 2) if answered else 0.0

    return {
        "requests_per_s": round(answered / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else 0.0,
        "errors": errors,
        "requests": answered,
        "client_cpu_ms_per_request": round(client_cpu * 1000 / max(answered, 1), 3),
    }


async def _measured(
    call: Call, variant: str, size: int, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    """One variant after its warm-up: the closed loop's figures, named and printed."""
    await _closed_loop(call, concurrency, warmup)
    run = await _closed_loop(call, concurrency, duration)
    run["flowers_per_s"] = round(run["requests_per_s"] * size, 1)
    print(f"{variant:20} {size:5} flowers: {run}", flush=True)
    return {"variant": variant, "flowers": size, **run}


async def measure(
    rest_url: str, grpc_address: str, duration: float, warmup: float, concurrency: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    async with (
        grpc.aio.insecure_channel(grpc_address, options=options) as channel,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        url = f"{rest_url}/v2/models/{MODEL_NAME}/infer"
        for size in SIZES:
            flowers = np.array(iris_rows(size), dtype=np.float64)
            calls = {
                "grpc-raw": _grpc_call(stub, flowers, raw=True),
                "grpc-typed": _grpc_call(stub, flowers, raw=False),
                "rest-json": _rest_call(session, url, flowers, binary=False),
                "rest-binary": _rest_call(session, url, flowers, binary=True),
            }
            reference = await calls["rest-json"]()
            for variant, call in calls.items():
                np.testing.assert_allclose(await call(), reference, rtol=0, atol=1e-12)
                results[f"{variant}/{size}"] = await _measured(
                    call, variant, size, concurrency, warmup, duration
                )
    return results


async def measure_mlserver(
    grpc_address: str, rest_url: str, duration: float, warmup: float, concurrency: int
) -> dict[str, Any]:
    """MLServer's gRPC (raw and typed) on the same flowers; its answers (class ids) are
    checked against our REST answer's argmax first."""
    results: dict[str, Any] = {}
    async with (
        grpc.aio.insecure_channel(grpc_address) as channel,
        aiohttp.ClientSession() as session,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        ours = f"{rest_url}/v2/models/{MODEL_NAME}/infer"
        for size in SIZES:
            flowers = np.array(iris_rows(size), dtype=np.float64)
            expected = (await _rest_call(session, ours, flowers, binary=False)()).reshape(size, -1)
            for variant, raw in (("mlserver-grpc-raw", True), ("mlserver-grpc-typed", False)):
                call = _grpc_call(stub, flowers, raw=raw, output=None)
                np.testing.assert_array_equal(await call(), expected.argmax(axis=1))
                results[f"{variant}/{size}"] = await _measured(
                    call, variant, size, concurrency, warmup, duration
                )
    return results


def _mlserver(out_dir: Path) -> tuple[list[str], dict[str, str], int, int, Path]:
    """MLServer 1.7.1 (its own venv, tools/bench/mlserver.py) serving the stored model's
    MLflow pickle: (command, env, HTTP port, gRPC port, log path)."""
    import bentoml

    from iris_service.settings import settings
    from tools.bench import mlserver
    from tools.local_server import free_port

    executable = mlserver.ensure_venv()
    port = free_port()
    folder = out_dir / "grpc-bench-mlserver"
    model_dir = Path(bentoml.models.get(settings.model_tag).path) / "mlflow_model"
    mlserver.write_config(folder, model_dir, port, mlserver.Batching())
    grpc_port = json.loads((folder / "settings.json").read_text())["grpc_port"]
    env = {**os.environ, "PATH": f"{executable.parent}:/usr/local/bin:/usr/bin:/bin"}
    return mlserver.command(executable, folder), env, port, grpc_port, folder / "mlserver.log"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# V2 over gRPC beside V2 over REST",
        "",
        f"One `bentoml serve` of the shipped service; {result['concurrency']} callers in a "
        f"closed loop per variant, {result['duration_s']:g} s each, from one Python asyncio "
        "client process (grpc.aio, aiohttp) on the same machine.",
        "",
        "| variant | flowers/request | req/s | flowers/s | p50 ms | p99 ms | errors "
        "| client CPU ms/req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"].values():
        lines.append(
            f"| {run['variant']} | {run['flowers']} | {run['requests_per_s']:,} "
            f"| {run['flowers_per_s']:,} | {run['p50_ms']} | {run['p99_ms']} | {run['errors']} "
            f"| {run['client_cpu_ms_per_request']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.grpc_bench", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("--duration", type=float, default=8, help="seconds per variant")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up seconds per variant")
    parser.add_argument("--concurrency", type=int, default=8, help="callers in flight")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument(
        "--mlserver",
        action="store_true",
        help="also MLServer 1.7.1's gRPC (builds its venv on first use)",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1:
        parser.error("--duration and --concurrency must be positive")
    logs = args.out_dir / "grpc-bench-logs"
    with bento_server(None, logs, IRIS_GRPC_PORT="0") as server:
        address = f"{HOST}:{server.grpc_port()}"
        runs = asyncio.run(
            measure(server.url, address, args.duration, args.warmup, args.concurrency)
        )
        if args.mlserver:
            command, env, port, grpc_port, log_path = _mlserver(args.out_dir)
            peer = start_server(command, env, port, log_path, ready_path="/v2/health/ready")
            try:
                runs.update(
                    asyncio.run(
                        measure_mlserver(
                            f"{HOST}:{grpc_port}",
                            server.url,
                            args.duration,
                            args.warmup,
                            args.concurrency,
                        )
                    )
                )
            finally:
                peer.stop()
    result = {
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "grpc-bench.json").write_text(json.dumps(result, indent=2))
    (args.out_dir / "grpc-bench.md").write_text(markdown(result))
    print(markdown(result))
    print(f"Wrote {args.out_dir / 'grpc-bench.json'}, {args.out_dir / 'grpc-bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
