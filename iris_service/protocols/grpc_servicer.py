"""GRPCInferenceService: decode (grpc_v2.py), call the inference core, encode; the answers of
the REST routes (routes.py), with gRPC status codes, and the same prediction records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from iris_service.errors import Refusal
from iris_service.http.prediction_records import as_json, prediction_record
from iris_service.inference.core import InferenceCore, ModelNotServed
from iris_service.inference.model_loading import ModelVersion
from iris_service.names import MODEL_NAME
from iris_service.protocols import grpc_v2, v2, v2_explain
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2 as pb
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2_grpc as pb_grpc
from iris_service.protocols.grpc_guard import CURRENT_CALL, INFER_METHOD, PROTOCOL
from iris_service.protocols.routes import SERVER_NAME
from iris_service.records.writer import RecordWriter

logger = logging.getLogger("iris_service.api")


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
        from iris_service.http.api_docs import API_VERSION

        return pb.ServerMetadataResponse(name=SERVER_NAME, version=API_VERSION)

    async def _model(self, name: str, version: str, context: Any) -> ModelVersion:
        """The model a request names: NOT_FOUND for another name or an unknown version."""
        core = self.core_of()
        if name != MODEL_NAME:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown model {name!r}; this server serves {MODEL_NAME!r}",
            )
        if not version:
            return core.models.champion
        model = core.version(version)
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
        version = request.model_version or None
        core = self.core_of()
        try:
            parsed = grpc_v2.parse_infer_request(request)
            if parsed.explain:
                explained = await core.explain(parsed.rows, version)
                answered_by, probabilities = explained.model, explained.explanation.probabilities
                extra = v2_explain.explanation_tensors(explained.explanation)
            else:
                answer = await core.infer(parsed.rows, version)
                answered_by, probabilities, extra = answer.model, answer.probabilities, None
        except Refusal as refusal:  # the REST answer's status, as a gRPC code
            await context.abort(grpc_v2.status_code(refusal.status), refusal.detail)
        response = grpc_v2.encode_infer_response(
            parsed, MODEL_NAME, answered_by.version, probabilities, extra
        )
        self._record(request, parsed, answered_by, probabilities, extra)
        return response

    def _record(
        self,
        request: Any,
        parsed: v2.InferRequest,
        model: ModelVersion,
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
