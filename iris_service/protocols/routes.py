"""The routes of the Open Inference Protocol V2 and of MLflow scoring, mounted on the
service beside its own routes (same port, same middleware).

Routes only glue the codecs (`v2`, `mlflow_scoring`) to the service: every inference goes
through `IrisClassifier._infer`, the path /predict takes (request coalescing, the runner,
the fingerprint of the model that answered, drift monitoring, runner failures as 503/504).
`service_of()` gives the running service instance (bentoml.get_current_service()).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..api_docs import API_VERSION
from ..served_models import ServedModel
from ..settings import MODEL_NAME
from . import mlflow_scoring, v2

logger = logging.getLogger("iris_service.api")
SERVER_NAME = "IrisClassifier"
MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")


def _v2_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _version_of(model: ServedModel) -> str:
    return model.tag.partition(":")[2]


async def _ready(service: Any) -> bool:
    """The runner answers its readiness probe (in-process, without a runner, always)."""
    is_ready = getattr(service.runner, "is_ready", None)
    if is_ready is None:
        return True
    try:
        return bool(await is_ready(5))
    except Exception:  # noqa: BLE001 - an unreachable runner is simply not ready
        return False


def protocol_app(service_of: Callable[[], Any]) -> Starlette:
    """The V2 and MLflow scoring routes as one ASGI app, to mount at /."""

    def resolve(request: Request) -> ServedModel | JSONResponse:
        """The model a /v2/models/... path names: 404 for another name or version."""
        name = request.path_params["name"]
        version = request.path_params.get("version")
        service = service_of()
        if name != MODEL_NAME:
            return _v2_error(404, f"unknown model {name!r}; this server serves {MODEL_NAME!r}")
        if version is None:
            return service.serving
        model = service.models.versions().get(version)
        if model is None:
            return _v2_error(404, f"model {name!r} has no version {version!r}")
        return model

    def not_served(model: ServedModel, serving_tag: str) -> JSONResponse | None:
        if model.tag == serving_tag:
            return None
        return _v2_error(
            503,
            f"version {_version_of(model)} is stored but not served now; "
            f"the served version is {serving_tag.partition(':')[2]}",
        )

    async def server_metadata(_: Request) -> JSONResponse:
        return JSONResponse(
            {"name": SERVER_NAME, "version": API_VERSION, "extensions": ["binary_tensor_data"]}
        )

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def server_ready(_: Request) -> JSONResponse:
        if await _ready(service_of()):
            return JSONResponse({"ready": True})
        return _v2_error(503, "the model runner is not ready")

    async def model_metadata(request: Request) -> JSONResponse:
        model = resolve(request)
        if isinstance(model, JSONResponse):
            return model
        versions = sorted(service_of().models.versions())
        metadata = v2.model_metadata(MODEL_NAME, versions)
        if "version" in request.path_params:
            metadata["versions"] = [_version_of(model)]
        return JSONResponse(metadata)

    async def model_ready(request: Request) -> JSONResponse:
        """Ready when the runner answers; a version must also be the one the runner serves
        now (asked of the runner: this API worker's last answer may be older than a switch)."""
        model = resolve(request)
        if isinstance(model, JSONResponse):
            return model
        service = service_of()
        if not await _ready(service):
            return _v2_error(503, "the model runner is not ready")
        if "version" in request.path_params:
            try:
                champion = (await service.runner.to_async.serving_models())["champion"]
            except Exception:  # noqa: BLE001 - a runner that does not answer is not ready
                return _v2_error(503, "the model runner is not ready")
            refusal = not_served(model, champion)
            if refusal is not None:
                return refusal
        return JSONResponse({"name": MODEL_NAME, "ready": True})

    async def infer(request: Request) -> Response:
        """Inference; with a version, the answer must come from it (checked on the answer,
        which names the model that computed it), else 503 naming the served version."""
        model = resolve(request)
        if isinstance(model, JSONResponse):
            return model
        service = service_of()
        body = await request.body()
        try:
            parsed = v2.parse_infer_request(body, request.headers.get(v2.HEADER_LENGTH))
        except v2.V2Error as exc:
            return _v2_error(exc.status, str(exc))
        answer = await service._infer(parsed.rows)
        if isinstance(answer, Response):
            return answer  # 503/504; the middleware puts it in the V2 shape
        answered_by, probabilities = answer
        refusal = not_served(model, answered_by.tag) if "version" in request.path_params else None
        if refusal is not None:
            return refusal
        content, header_length = v2.encode_infer_response(
            parsed, MODEL_NAME, _version_of(answered_by), probabilities
        )
        headers = {"X-Model-Tag": answered_by.tag}
        if header_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers[v2.HEADER_LENGTH] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def invocations(request: Request) -> Response:
        try:
            kind = mlflow_scoring.media_type(request.headers.get("content-type"))
            rows = mlflow_scoring.parse_scoring_request(await request.body(), kind)
        except mlflow_scoring.ScoringError as exc:
            body = {"error_code": "BAD_REQUEST", "message": str(exc)}
            return JSONResponse(body, status_code=exc.status)
        answer = await service_of()._infer(rows)
        if isinstance(answer, Response):
            return answer  # 503/504; the middleware puts it in MLflow's shape
        answered_by, probabilities = answer
        predict_fn, _ = _flavour(answered_by)
        return Response(
            mlflow_scoring.encode_predictions(probabilities, predict_fn),
            media_type="application/json",
            headers={"X-Model-Tag": answered_by.tag},
        )

    async def ping(_: Request) -> Response:
        if await _ready(service_of()):
            return Response("\n", media_type="application/json")
        return JSONResponse(
            {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the model runner is not ready"},
            status_code=503,
        )

    async def version(_: Request) -> Response:
        _, mlflow_version = _flavour(service_of().serving)
        return PlainTextResponse(mlflow_version, media_type="application/json")

    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", server_ready, methods=["GET"]),
        *(Route(path, model_metadata, methods=["GET"]) for path in MODEL_PATHS),
        *(Route(f"{path}/ready", model_ready, methods=["GET"]) for path in MODEL_PATHS),
        *(Route(f"{path}/infer", infer, methods=["POST"]) for path in MODEL_PATHS),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
    ]
    return Starlette(routes=routes)


_FLAVOURS: dict[str, tuple[str, str]] = {}


def _flavour(model: ServedModel) -> tuple[str, str]:
    """The pyfunc predict function and MLflow version of a stored model (read once)."""
    found = _FLAVOURS.get(model.tag)
    if found is None:
        if model.path is None:
            found = ("predict", "unknown")
        else:
            found = mlflow_scoring.pyfunc_flavour(Path(model.path) / "mlflow_model" / "MLmodel")
        _FLAVOURS[model.tag] = found
    return found
