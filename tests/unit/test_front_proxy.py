"""deploy/nginx/nginx.conf agrees with the service's settings, is valid for Debian's nginx
as shipped and as rendered, and its own error answers have the service's shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.http.errors import ERROR_CODES
from iris_service.names import PREDICTION_PATHS
from iris_service.settings import settings
from tools.front_proxy import NGINX_CONF, check, directive, nginx_size, render

UVICORN_KEEP_ALIVE_S = 5  # `bentoml serve --timeout-keep-alive` default


def _seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def _service_config() -> dict:
    config = yaml.safe_load((PROJECT_ROOT / "configuration.yaml").read_text())
    return config["services"]["IrisClassifier"]


def test_body_limit_is_the_services() -> None:
    assert nginx_size(directive("client_max_body_size")) == settings.max_body_bytes
    assert nginx_size(directive("client_body_buffer_size")) >= settings.max_body_bytes  # in memory
    assert f"larger than {settings.max_body_bytes} bytes" in NGINX_CONF.read_text()


def _api_workers() -> int:
    """The API workers of one pod: configured, or one per CPU of the pod's CPU limit."""
    workers = _service_config().get("workers", 1)
    if workers != "cpu_count":
        return int(workers)
    deployment = yaml.safe_load((PROJECT_ROOT / "deploy/k8s/base/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return int(container["resources"]["limits"]["cpu"])


def test_service_wide_slots_are_the_admission_limit_of_every_worker() -> None:
    workers = _api_workers()
    assert (
        int(directive("limit_conn iris_service_slots"))
        == settings.max_concurrent_requests * workers
    )
    text = NGINX_CONF.read_text()
    limited = [
        (re.compile(pattern), body)
        for pattern, body in re.findall(r"location ~ (\S+) \{(.*?)\}", text, re.S)
        if "limit_conn iris_service_slots" in body
    ]
    assert limited, "no location limits the service's slots"
    for route in PREDICTION_PATHS:  # each prediction route is limited
        for path in {route.replace("*", "iris-classifier"), route.replace("*", "iris/versions/3")}:
            bodies = [body for pattern, body in limited if pattern.fullmatch(path)]
            assert bodies, path
            # The flood brake delays (burst, no nodelay) before the slot check refuses.
            assert re.search(r"limit_req zone=iris_service_rate burst=\d+;", bodies[0]), path
    for path in ("/readyz", "/metrics", "/v2/models/iris-classifier", "/predict/x", "/v2"):
        assert not any(pattern.fullmatch(path) for pattern, _ in limited), path


def test_timeouts_fit_the_service() -> None:
    assert _seconds(directive("proxy_read_timeout")) > _service_config()["traffic"]["timeout"]
    assert _seconds(directive("keepalive_timeout", _upstream_block())) < UVICORN_KEEP_ALIVE_S
    assert _seconds(directive("client_header_timeout")) <= 10
    assert _seconds(directive("client_body_timeout")) <= 10


def _upstream_block() -> str:
    return re.search(r"upstream iris_service \{(.*?)\}", NGINX_CONF.read_text(), re.S).group(1)


def test_own_error_answers_have_the_services_shape() -> None:
    text = NGINX_CONF.read_text()
    answers = re.findall(r"return (\d{3}) '(\{.*?\})';", text)
    assert {int(status) for status, _ in answers} == {408, 413, 429, 503, 504}
    for status, body in answers:
        parsed = json.loads(body.replace("$iris_request_id", "0123abcd"))
        assert set(parsed) == {"error", "detail", "request_id"}
        assert parsed["error"] == ERROR_CODES[int(status)]
        assert parsed["request_id"] == "0123abcd"


@pytest.mark.timeout(900)  # may install Debian's nginx first
def test_rendered_configuration_is_valid_for_nginx(tmp_path: Path) -> None:
    conf = render(18080, 13000, tmp_path / "run", service_slots=8, per_client_limits=False)
    result = check(conf)
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "listen 127.0.0.1:18080;" in text and "server 127.0.0.1:13000;" in text
    assert "iris_per_client " not in text.split("upstream")[1]  # per-client limits removed
    assert directive("limit_conn iris_service_slots", text) == "8"
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("client_header_timeout 10s;", "client_header_timeout;"))
    assert check(broken).returncode != 0  # nginx -t really checks


def test_render_fails_when_the_shipped_file_changes_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = tmp_path / "nginx.conf"
    changed.write_text(NGINX_CONF.read_text().replace("listen 8080;", "listen 9090;"))
    monkeypatch.setattr("tools.front_proxy.NGINX_CONF", changed)
    with pytest.raises(ValueError, match="listen 8080"):
        render(18080, 13000, tmp_path / "run")


def test_the_front_does_not_pass_metrics_on() -> None:
    """/metrics is for Prometheus, which scrapes the service itself (as on Kubernetes, where
    the Ingress does not route it)."""
    text = NGINX_CONF.read_text()
    (body,) = re.findall(r"location = /metrics \{(.*?)\}", text, re.S)
    assert "return 404;" in body and "proxy_pass" not in body
