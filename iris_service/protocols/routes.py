"""The routes of the Open Inference Protocol V2 and of MLflow scoring, mounted on the
service beside its own routes (same port, same middleware).

Routes only glue the codecs (`v2`, `mlflow_scoring`) to the inference core: every inference
goes through `InferenceCore.infer`, the path /predict takes, and health, readiness and model
metadata are answered from the core's state (no call to the runner). `core_of()` gives the
running service's core. A refusal (iris_service/errors.py) raised in a route is answered in
its protocol's error shape by `_answering`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from iris_service.errors import NotFound, Refusal, Unavailable
from iris_service.http import errors
from iris_service.http.api_docs import API_VERSION
from iris_service.inference.core import InferenceCore
from iris_service.inference.model_loading import ModelVersion
from iris_service.names import MODEL_NAME
from iris_service.protocols import mlflow_scoring, v2, v2_explain
from iris_service.settings import settings

RETRY_AFTER_SECONDS = settings.retry_after_seconds  # read once: used per refusal

logger = logging.getLogger("iris_service.api")
SERVER_NAME = "IrisClassifier"
MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")


Handler = Callable[[Request], Awaitable[Response]]


def _answering(protocol: str) -> Callable[[Handler], Handler]:
    """A route whose refusals are answered in `protocol`'s error shape (errors.V2, MLFLOW)."""

    def answering(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except Refusal as refusal:
                status = refusal.status
                headers = None
                if status in errors.RETRYABLE_STATUSES:
                    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
                return Response(
                    errors.protocol_error_body(protocol, status, refusal.detail),
                    status_code=status,
                    media_type="application/json",
                    headers=headers,
                )

        return answered

    return answering


def protocol_app(core_of: Callable[[], InferenceCore]) -> Starlette:
    """The V2 and MLflow scoring routes as one ASGI app, to mount at /."""

    def resolve(request: Request) -> ModelVersion:
        """The model a /v2/models/... path names: 404 for another name or version."""
        name = request.path_params["name"]
        version = request.path_params.get("version")
        core = core_of()
        if name != MODEL_NAME:
            raise NotFound(f"unknown model {name!r}; this server serves {MODEL_NAME!r}")
        if version is None:
            return core.models.champion
        model = core.version(version)
        if model is None:
            raise NotFound(f"model {name!r} has no version {version!r}")
        return model

    async def server_metadata(_: Request) -> JSONResponse:
        return JSONResponse(
            {"name": SERVER_NAME, "version": API_VERSION, "extensions": ["binary_tensor_data"]}
        )

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def server_ready(_: Request) -> JSONResponse:
        if core_of().ready():
            return JSONResponse({"ready": True})
        raise Unavailable("no model is loaded yet")

    async def model_metadata(request: Request) -> JSONResponse:
        model = resolve(request)
        versions = sorted(core_of().versions())
        metadata = v2.model_metadata(MODEL_NAME, versions)
        if "version" in request.path_params:
            metadata["versions"] = [model.version]
        return JSONResponse(metadata)

    async def model_ready(request: Request) -> JSONResponse:
        """Ready when a model is loaded; a version must also be one served now (503 naming
        the served version otherwise: ModelNotServed)."""
        model = resolve(request)
        if not core_of().ready():
            raise Unavailable("no model is loaded yet")
        if "version" in request.path_params:
            core_of().served(model.version)
        return JSONResponse({"name": MODEL_NAME, "ready": True})

    async def infer(request: Request) -> Response:
        """Inference; with a version, that version computes the answer when it is served
        (champion or challenger), else 503 naming the served version. With
        `parameters.explain`, the core's explanation of the rows (v2_explain.py)."""
        resolve(request)
        body = await request.body()
        parsed = v2.parse_infer_request(body, request.headers.get(v2.HEADER_LENGTH))
        version = request.path_params.get("version")
        if parsed.explain:
            explained = await core_of().explain(parsed.rows, version)
            answered_by, probabilities = explained.model, explained.explanation.probabilities
            extra = v2_explain.explanation_tensors(explained.explanation)
        else:
            answer = await core_of().infer(parsed.rows, version)
            answered_by, probabilities, extra = answer.model, answer.probabilities, None
        content, header_length = v2.encode_infer_response(
            parsed, MODEL_NAME, answered_by.version, probabilities, extra
        )
        headers = {"X-Model-Tag": answered_by.tag}
        if header_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers[v2.HEADER_LENGTH] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def invocations(request: Request) -> Response:
        kind = mlflow_scoring.media_type(request.headers.get("content-type"))
        rows = mlflow_scoring.parse_scoring_request(await request.body(), kind)
        answer = await core_of().infer(rows)  # tiers: RunnerUnavailable when it does not answer
        answered_by = answer.model
        predict_fn, _ = _flavour(answered_by)
        return Response(
            mlflow_scoring.encode_predictions(answer.probabilities, predict_fn),
            media_type="application/json",
            headers={"X-Model-Tag": answered_by.tag},
        )

    async def ping(_: Request) -> Response:
        if core_of().ready():
            return Response("\n", media_type="application/json")
        raise Unavailable("no model is loaded yet")

    async def version(_: Request) -> Response:
        _, mlflow_version = _flavour(core_of().models.champion)
        return PlainTextResponse(mlflow_version, media_type="application/json")

    in_v2, in_mlflow = _answering(errors.V2), _answering(errors.MLFLOW)
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", in_v2(server_ready), methods=["GET"]),
        *(Route(path, in_v2(model_metadata), methods=["GET"]) for path in MODEL_PATHS),
        *(Route(f"{path}/ready", in_v2(model_ready), methods=["GET"]) for path in MODEL_PATHS),
        *(Route(f"{path}/infer", in_v2(infer), methods=["POST"]) for path in MODEL_PATHS),
        Route("/invocations", in_mlflow(invocations), methods=["POST"]),
        Route("/ping", in_mlflow(ping), methods=["GET"]),
        Route("/version", version, methods=["GET"]),
    ]
    return Starlette(routes=routes)


_FLAVOURS: dict[str, tuple[str, str]] = {}


def _flavour(model: ModelVersion) -> tuple[str, str]:
    """The pyfunc predict function and MLflow version of a stored model (read once)."""
    found = _FLAVOURS.get(model.tag)
    if found is None:
        if model.path is None:
            found = ("predict", "unknown")
        else:
            found = mlflow_scoring.pyfunc_flavour(Path(model.path) / "mlflow_model" / "MLmodel")
        _FLAVOURS[model.tag] = found
    return found
