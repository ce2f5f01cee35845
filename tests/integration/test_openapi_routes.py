"""/docs.json lists every route the service answers, with its own title and contact, and its
schemas are good enough for a fuzzer to make requests the service accepts."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.hypothesis.builder import add_examples

from iris_service.names import FEATURE_NAMES
from iris_service.settings import settings as service_settings
from tools.local_server import LocalServer

pytestmark = pytest.mark.server
CONFORMS = schemathesis.checks.response_schema_conformance

EVERY_ROUTE = {
    # BentoML's own routes and the @bentoml.api methods
    "/healthz", "/livez", "/readyz", "/metrics", "/feedback", "/predict", "/predict_batch",
    "/explain",
    # mounted Starlette routes: status
    "/drift", "/model", "/live_quality",
    # Open Inference Protocol V2
    "/v2", "/v2/health/live", "/v2/health/ready",
    "/v2/models/{name}", "/v2/models/{name}/ready", "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/versions/{version}/infer",
    # MLflow scoring
    "/invocations", "/ping", "/version",
}  # fmt: skip


def _document(server: LocalServer) -> dict:
    response = requests.get(f"{server.url}/docs.json", timeout=10)
    assert response.status_code == 200
    return response.json()


def test_docs_json_lists_every_route(server: LocalServer) -> None:
    assert set(_document(server)["paths"]) == EVERY_ROUTE


def test_the_document_is_the_services_not_bentomls(server: LocalServer) -> None:
    info = _document(server)["info"]
    assert info["title"] == "IrisClassifier"
    assert "BentoML" not in info["contact"]["name"] and "bentoml" not in str(info["contact"])
    page = requests.get(f"{server.url}/", timeout=10).text
    assert "googletagmanager" not in page and "BentoML Prediction Service" not in page
    assert "https://" not in page and "http://" not in page  # nothing from another origin


def _served_version(server: LocalServer) -> str:
    metadata = requests.get(f"{server.url}/v2/models/iris-classifier", timeout=10).json()
    return metadata["versions"][0]


@pytest.mark.timeout(240)
def _a_whole_v2_request(body: object) -> bool:
    """Whether a V2 infer body the schema allows is also one the service must answer. What
    JSON Schema cannot say (the schema bounds every other field): `data` holds exactly N * 4
    values for a shape [N, 4], N within the limit; an FP32 value stays above 0 as FP32; each
    output is asked for at most once."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return False
    tensor = body["inputs"][0]
    shape, data = tensor.get("shape"), tensor.get("data")
    if not (isinstance(shape, list) and len(shape) == 2 and isinstance(data, list)):
        return False
    explain = (body.get("parameters") or {}).get("explain") is True
    limit = service_settings.max_explain_flowers if explain else service_settings.max_batch_flowers
    if not (shape[1] == len(FEATURE_NAMES) and 1 <= shape[0] <= limit):
        return False
    if len(data) != shape[0] * shape[1]:
        return False
    if tensor.get("datatype") == "FP32" and not all(np.float32(value) > 0 for value in data):
        return False
    outputs = [output.get("name") for output in body.get("outputs") or []]
    return len(outputs) == len(set(outputs))


def test_a_fuzzer_generates_valid_requests_from_the_mounted_routes(server: LocalServer) -> None:
    """Positive cases generated from the schemas of the mounted routes are answered, every 200
    answer matches its documented schema, and a V2 request that is whole gets 200.

    The generation is derandomized (Hypothesis draws the same cases in every run): a case the
    service refuses fails every run, not one in twenty."""
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    version = _served_version(server)
    answered: dict[str, set[int]] = {}
    problems: list[str] = []

    def fuzz(operation: schemathesis.APIOperation, route: str) -> None:
        @settings(
            max_examples=8,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE))
        def call(case: schemathesis.Case) -> None:
            if case.path_parameters and "version" in case.path_parameters:
                case.path_parameters["version"] = version
            response = case.call(base_url=server.url, timeout=10)
            answered.setdefault(route, set()).add(response.status_code)
            if response.status_code >= 500:
                problems.append(f"{route}: {response.status_code} {response.text[:200]}")
            elif (
                route.endswith("/infer")
                and _a_whole_v2_request(case.body)
                and response.status_code != 200
            ):
                problems.append(f"{route}: a whole request got {response.status_code}")
            if response.status_code == 200:
                try:
                    case.validate_response(response, checks=[CONFORMS])
                except Exception as exc:  # an answer its documented schema does not allow
                    problems.append(f"{route}: {type(exc).__name__}: {str(exc)[:300]}")

        # The documented examples first (the explicit phase), then the generated cases.
        add_examples(call, operation, fill_missing=True)()

    for path in sorted(
        EVERY_ROUTE - {"/feedback", "/predict", "/predict_batch", "/explain", "/metrics"}
    ):
        for method in schema[path]:
            fuzz(schema[path][method], f"{method.upper()} {path}")
    assert problems == [], problems
    for route in ("POST /v2/models/{name}/infer", "POST /invocations", "GET /drift"):
        assert 200 in answered[route], answered
