"""configuration.yaml against the code: what BentoML reads must match what the service assumes."""

from __future__ import annotations

import yaml
from opentelemetry.util.http import ExcludeList, parse_excluded_urls

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.names import PREDICTION_PATHS


def _services() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "configuration.yaml").read_text())["services"]


def _excluded() -> ExcludeList:
    """The exclusions as BentoML builds them from the configured string."""
    return parse_excluded_urls(_services()["tracing"]["excluded_urls"])


def _concrete(path: str) -> list[str]:
    """Example URLs of a route pattern (`*` is a path parameter such as a model name)."""
    if "*" not in path:
        return [f"http://127.0.0.1:3000{path}"]
    return [
        f"http://127.0.0.1:3000{path.replace('*', filler)}"
        for filler in ("iris-classifier", "iris-classifier/versions/3")
    ]


def test_every_prediction_route_is_excluded_from_tracing() -> None:
    """OpenTelemetry's middleware runs for every request not excluded; with no exporter its
    spans are pure cost on the hot path of every prediction transport."""
    excluded = _excluded()
    urls = [url for path in PREDICTION_PATHS for url in _concrete(path)]
    assert len(urls) == len(PREDICTION_PATHS) + 1
    assert [url for url in urls if not excluded.url_disabled(url)] == []


def test_health_and_feedback_routes_are_still_traced() -> None:
    """The exclusions name prediction routes only, not everything."""
    excluded = _excluded()
    for path in ("/feedback", "/readyz", "/v2/health/ready", "/metrics"):
        assert not excluded.url_disabled(f"http://127.0.0.1:3000{path}"), path
