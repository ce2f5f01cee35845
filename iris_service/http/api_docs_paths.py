"""OpenAPI descriptions of the routes BentoML does not list by itself.

BentoML 1.4 builds /docs.json from the `@bentoml.api` methods and from mounted FastAPI apps
only; the Starlette routes mounted with `@bentoml.asgi_app` (GET /drift, /model,
/live_quality, the Open Inference Protocol V2 and MLflow scoring routes) are served but were
missing. Their paths and schemas are declared here, in OpenAPI 3.0 (what BentoML serves:
`nullable`, a boolean `exclusiveMinimum`), precise enough that a fuzzer (schemathesis)
generates requests the service accepts and checks the answers against them.
"""

from __future__ import annotations

from typing import Any

from iris_service.http.schemas import SETOSA_EXAMPLE
from iris_service.names import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME, UPPER_BOUNDS_CM
from iris_service.settings import settings

REF = "#/components/schemas/{}"
TAG = "Service APIs"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _json(schema: dict[str, Any], description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {JSON: media}}


_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_MEASUREMENT = {
    "type": "number",
    "minimum": 0,
    "exclusiveMinimum": True,
    "maximum": min(UPPER_BOUNDS_CM.values()),
}
_FLOWER_ROW = [SETOSA_EXAMPLE[name] for name in FEATURE_NAMES]

SCHEMAS: dict[str, dict[str, Any]] = {
    "FeatureDrift": _object(
        {
            "psi": _nullable(_NUMBER),
            "level": _nullable(_STRING),
            "expected_shares": {"type": "array", "items": _NUMBER},
            "window_shares": {"type": "array", "items": _NUMBER},
        },
        ("psi", "level", "expected_shares", "window_shares"),
    ),
    "DriftReport": _object(
        {
            "method": _STRING,
            "status": _STRING,
            "max_psi": _nullable(_NUMBER),
            "level": _nullable(_STRING),
            "thresholds": _object({"moderate": _NUMBER, "significant": _NUMBER}),
            "window_size": _INTEGER,
            "flowers_in_window": _INTEGER,
            "min_flowers": _INTEGER,
            "observed_total": _INTEGER,
            "features": {"type": "object", "additionalProperties": _ref("FeatureDrift")},
        },
        ("status", "max_psi", "level", "features"),
    ),
    "ServingModels": _object(
        {
            "champion": _STRING,
            "challenger": _nullable(_STRING),
            "mode": _STRING,
            "canary_share": _nullable(_NUMBER),
            "aliases_file": _nullable(_STRING),
            "aliases_updated_at": _nullable(_STRING),
            "last_refusal": _nullable(_STRING),
        },
        ("champion", "challenger", "mode"),
    ),
    "LiveQuality": _object(
        {
            "window": _INTEGER,
            "models": {"type": "object", "additionalProperties": {"type": "object"}},
        },
        ("window", "models"),
    ),
    "V2ServerMetadata": _object(
        {"name": _STRING, "version": _STRING, "extensions": {"type": "array", "items": _STRING}},
        ("name", "version", "extensions"),
    ),
    "V2Live": _object({"live": {"type": "boolean"}}, ("live",)),
    "V2Ready": _object({"ready": {"type": "boolean"}}, ("ready",)),
    "V2ModelReady": _object({"name": _STRING, "ready": {"type": "boolean"}}, ("name", "ready")),
    "V2TensorMetadata": _object(
        {"name": _STRING, "datatype": _STRING, "shape": {"type": "array", "items": _INTEGER}},
        ("name", "datatype", "shape"),
    ),
    "V2ModelMetadata": _object(
        {
            "name": _STRING,
            "versions": {"type": "array", "items": _STRING},
            "platform": _STRING,
            "inputs": {"type": "array", "items": _ref("V2TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("V2TensorMetadata")},
        },
        ("name", "platform", "inputs", "outputs"),
    ),
    "V2InputTensor": {
        **_object(
            {
                "name": _STRING,
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": f"[N, {len(FEATURE_NAMES)}]: N flowers (at most "
                    f"{settings.max_batch_flowers}), measurements in the order "
                    f"{', '.join(FEATURE_NAMES)}",
                },
                "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                "data": {
                    "type": "array",
                    "items": _MEASUREMENT,
                    "description": "N * 4 measurements in cm, row after row",
                },
            },
            ("name", "shape", "datatype", "data"),
        ),
        "additionalProperties": False,
    },
    "V2RequestedOutput": _object(
        {
            "name": {"type": "string", "enum": ["predict", "predict_proba"]},
            "parameters": _object({"binary_data": {"type": "boolean"}}),
        },
        ("name",),
    ),
    "V2InferRequest": {
        **_object(
            {
                "id": _STRING,
                "inputs": {
                    "type": "array",
                    "items": _ref("V2InputTensor"),
                    "minItems": 1,
                    "maxItems": 1,
                },
                "outputs": {
                    "type": "array",
                    "items": _ref("V2RequestedOutput"),
                    "minItems": 1,
                    "maxItems": 2,
                    "description": "The outputs to answer, each named at most once.",
                },
                "parameters": _object(
                    {
                        "explain": {
                            "type": "boolean",
                            "description": "Add the outputs `explanation` (FP32 [N, 3, 4], "
                            "Shapley values) and `base_value` (FP32 [3]); N at most "
                            f"{settings.max_explain_flowers}. See docs/explanations.md.",
                        },
                    }
                ),
            },
            ("inputs",),
        ),
        "example": {
            "inputs": [
                {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": _FLOWER_ROW}
            ]
        },
    },
    "V2OutputTensor": _object(
        {
            "name": _STRING,
            "datatype": _STRING,
            "shape": {"type": "array", "items": _INTEGER},
            "data": {"type": "array", "items": _NUMBER},
            "parameters": {"type": "object"},
        },
        ("name", "datatype", "shape"),
    ),
    "V2InferResponse": _object(
        {
            "model_name": _STRING,
            "model_version": _STRING,
            "id": _STRING,
            "outputs": {"type": "array", "items": _ref("V2OutputTensor")},
        },
        ("model_name", "outputs"),
    ),
    "V2Error": _object({"error": _STRING}, ("error",)),
    "MLflowScoringRequest": {
        **_object(
            {
                "dataframe_records": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": settings.max_batch_flowers,
                    "items": {
                        **_object(
                            {name: _MEASUREMENT for name in FEATURE_NAMES}, tuple(FEATURE_NAMES)
                        ),
                        "additionalProperties": False,
                    },
                },
            },
            ("dataframe_records",),
        ),
        "additionalProperties": False,
        "description": "MLflow's scoring body; `dataframe_split`, `instances` and `inputs` "
        "are accepted too, as `mlflow models serve` accepts them (docs/protocols.md).",
        "example": {"dataframe_records": [SETOSA_EXAMPLE]},
    },
    "MLflowPredictions": _object(
        {
            "predictions": {
                "type": "array",
                "description": "per flower, the probability of each of "
                f"{', '.join(CLASS_NAMES)} (or the class id, as the model's pyfunc predicts)",
                "items": {},
            }
        },
        ("predictions",),
    ),
    "MLflowError": _object({"error_code": _STRING, "message": _STRING}, ("error_code", "message")),
}


def _get(summary: str, schema: str, description: str, **extra: Any) -> dict[str, Any]:
    responses = {"200": _json(_ref(schema), description)}
    responses.update(extra.pop("responses", {}))
    return {"get": {"tags": [TAG], "summary": summary, "responses": responses, **extra}}


_V2_PARAMETERS = {
    "/v2/models/{name}": [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": [MODEL_NAME]},
        }
    ],
}
_V2_PARAMETERS["/v2/models/{name}/versions/{version}"] = [
    *_V2_PARAMETERS["/v2/models/{name}"],
    {
        "name": "version",
        "in": "path",
        "required": True,
        "description": "the version of a model in service (GET /v2/models/{name} lists them)",
        "schema": {"type": "string"},
    },
]
_V2_NOT_FOUND = {"404": _json(_ref("V2Error"), "No such model (or version) in service.")}
_V2_NOT_READY = {"503": _json(_ref("V2Error"), "The model runner is not ready.")}


def _model_paths(base: str) -> dict[str, dict[str, Any]]:
    parameters = _V2_PARAMETERS[base]
    return {
        base: _get(
            "Open Inference Protocol V2: model metadata",
            "V2ModelMetadata",
            "The model's name, versions and tensors.",
            parameters=parameters,
            responses=_V2_NOT_FOUND,
        ),
        f"{base}/ready": _get(
            "Open Inference Protocol V2: is the model ready",
            "V2ModelReady",
            "Whether the model answers.",
            parameters=parameters,
            responses=_V2_NOT_FOUND,
        ),
        f"{base}/infer": {
            "post": {
                "tags": [TAG],
                "summary": "Open Inference Protocol V2: classify flowers",
                "description": "A tensor of shape [N, 4]; answers `predict` (class ids) and "
                "`predict_proba`. The binary tensor extension is accepted too.",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("V2InferRequest")}},
                },
                "responses": {
                    "200": _json(_ref("V2InferResponse"), "The outputs asked for."),
                    "400": _json(_ref("V2Error"), "A request the protocol refuses."),
                    "409": _json(
                        _ref("V2Error"), "explain: the model was stored without a background."
                    ),
                    **_V2_NOT_FOUND,
                    **_V2_NOT_READY,
                },
            }
        },
    }


PATHS: dict[str, dict[str, Any]] = {
    "/drift": _get(
        "Data drift of recent inputs",
        "DriftReport",
        "Population stability index per feature over the recent window "
        "(< 0.1 none, >= 0.25 significant).",
    ),
    "/model": _get(
        "The models in service",
        "ServingModels",
        "Champion and challenger tags, the routing mode and the serving aliases followed.",
    ),
    "/live_quality": _get(
        "Live quality from labelled feedback",
        "LiveQuality",
        "Accuracy and recall per model version over the latest labelled predictions.",
    ),
    "/v2": _get(
        "Open Inference Protocol V2: server metadata", "V2ServerMetadata", "Server metadata."
    ),
    "/v2/health/live": _get("Open Inference Protocol V2: liveness", "V2Live", "Live."),
    "/v2/health/ready": _get(
        "Open Inference Protocol V2: readiness",
        "V2Ready",
        "Whether the model runner answers.",
        responses={"503": _json(_ref("V2Ready"), "Not ready.")},
    ),
    **_model_paths("/v2/models/{name}"),
    **_model_paths("/v2/models/{name}/versions/{version}"),
    "/invocations": {
        "post": {
            "tags": [TAG],
            "summary": "MLflow scoring: classify flowers as `mlflow models serve` does",
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": _ref("MLflowScoringRequest")},
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": f"{','.join(FEATURE_NAMES)}\n"
                        f"{','.join(str(v) for v in _FLOWER_ROW)}\n",
                    },
                },
            },
            "responses": {
                "200": _json(_ref("MLflowPredictions"), "One prediction per flower."),
                "400": _json(_ref("MLflowError"), "A body MLflow scoring refuses."),
                "503": _json(_ref("MLflowError"), "The model runner is not ready."),
            },
        }
    },
    "/ping": {
        "get": {
            "tags": [TAG],
            "summary": "MLflow scoring: readiness",
            "responses": {
                "200": {"description": "Ready (an empty body)."},
                "503": _json(_ref("MLflowError"), "The model runner is not ready."),
            },
        }
    },
    "/version": {
        "get": {
            "tags": [TAG],
            "summary": "MLflow scoring: the MLflow version of the model in service",
            "responses": {"200": {"description": "The version, as text."}},
        }
    },
}
