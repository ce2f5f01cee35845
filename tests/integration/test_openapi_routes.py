"""/docs.json lists every route the service answers, with its own title and contact, and its
schemas are good enough for a fuzzer to make requests the service accepts."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

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
def test_a_fuzzer_generates_valid_requests_from_the_mounted_routes(server: LocalServer) -> None:
    """Positive cases generated from the schemas of the mounted routes are answered, and
    every 200 answer matches its documented schema."""
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    version = _served_version(server)
    answered: dict[str, set[int]] = {}
    problems: list[str] = []

    def fuzz(operation: schemathesis.APIOperation, route: str) -> None:
        @settings(
            max_examples=8,
            deadline=None,
            database=None,
            phases=[Phase.generate],
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
            elif response.status_code == 200:
                try:
                    case.validate_response(response, checks=[CONFORMS])
                except Exception as exc:  # an answer its documented schema does not allow
                    problems.append(f"{route}: {type(exc).__name__}: {str(exc)[:300]}")

        call()

    for path in sorted(
        EVERY_ROUTE - {"/feedback", "/predict", "/predict_batch", "/explain", "/metrics"}
    ):
        for method in schema[path]:
            fuzz(schema[path][method], f"{method.upper()} {path}")
    assert problems == [], problems
    for route in ("POST /v2/models/{name}/infer", "POST /invocations", "GET /drift"):
        assert 200 in answered[route], answered
