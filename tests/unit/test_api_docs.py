"""The OpenAPI info of the service when served from source (no Bento)."""

from iris_service.api_docs import API_VERSION, SERVICE_DESCRIPTION


def test_openapi_info_is_the_services_own() -> None:
    from service import IrisClassifier

    spec = IrisClassifier.openapi_spec.asdict()
    assert spec["info"]["description"] == SERVICE_DESCRIPTION
    assert spec["info"]["version"] == API_VERSION
    assert "/predict" in spec["paths"]
