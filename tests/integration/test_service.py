"""The shipped service under a real `bentoml serve` on 127.0.0.1."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import re
import shlex
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest
import requests
from sklearn.datasets import load_iris

from iris_service.http.api_docs import API_VERSION, SERVICE_DESCRIPTION
from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.settings import settings
from tests.documented_commands import (
    LOCAL_URL,
    README,
    documented_commands,
    fenced_blocks,
    is_local_curl,
)
from tests.support import SETOSA, VERSICOLOR, VIRGINICA, ensure_debian_packages
from tools.local_server import LocalServer, ProjectState, bento_server
from tools.report import take_snapshot

pytestmark = pytest.mark.server


def _post(server: LocalServer, path: str, body: object, **kwargs) -> requests.Response:
    return requests.post(f"{server.url}{path}", json=body, timeout=10, **kwargs)


def _assert_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


@pytest.mark.parametrize(
    ("flower", "expected"),
    [(SETOSA, "setosa"), (VERSICOLOR, "versicolor"), (VIRGINICA, "virginica")],
)
def test_known_flowers_are_classified(server: LocalServer, flower: dict, expected: str) -> None:
    response = _post(server, "/predict", flower)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["class_name"] == expected
    assert body["class_id"] == CLASS_NAMES.index(expected)
    assert set(body["probabilities"]) == set(CLASS_NAMES)
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-3
    assert body["probabilities"][expected] == max(body["probabilities"].values())
    assert re.fullmatch(r"iris-classifier:\w+", body["model_tag"])


def test_batch_answers_every_flower_in_order(server: LocalServer) -> None:
    iris = load_iris()
    flowers = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in iris.data]
    response = _post(server, "/predict_batch", {"flowers": flowers})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(flowers)
    correct = sum(p["class_id"] == t for p, t in zip(predictions, iris.target, strict=True))
    assert correct / len(flowers) > 0.95
    single = _post(server, "/predict", flowers[120]).json()
    assert predictions[120]["class_name"] == single["class_name"]


def test_latency_and_ids_on_every_prediction_process_measurements_not(
    server: LocalServer,
) -> None:
    """By default (IRIS_EXPOSE_MEASUREMENT_HEADERS unset) the CPU time and memory change of
    the worker stay in the metrics and the request log, out of the answers."""
    response = _post(server, "/predict", SETOSA, headers={"X-Request-ID": "trace-me-1"})
    assert response.headers["x-request-id"] == "trace-me-1"
    assert len(response.headers["x-server-request-id"]) == 32
    assert float(response.headers["x-latency-ms"]) > 0
    assert "x-cpu-time-ms" not in response.headers
    assert "x-memory-delta-mb" not in response.headers
    deadline = time.monotonic() + 10  # the supervisor relays the worker's output
    lines: list[str] = []
    while not lines and time.monotonic() < deadline:
        lines = [line for line in server.log().splitlines() if '"request_id": "trace-me-1"' in line]
        time.sleep(0.1)
    assert float(json.loads(lines[0])["cpu_ms"]) >= 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**SETOSA, "sepal_length": "5.1"}, 400, "validation_error"),
        ({**SETOSA, "colour": "blue"}, 400, "validation_error"),
        ({"sepal_length": 5.1}, 400, "validation_error"),
        ({**SETOSA, "petal_width": -1}, 400, "validation_error"),
        ([1, 2, 3, 4], 400, "validation_error"),
    ],
)
def test_invalid_flowers_get_400(server: LocalServer, body: object, status: int, code: str) -> None:
    _assert_error(_post(server, "/predict", body), status, code)


def test_malformed_json_and_non_finite_literals_get_400(server: LocalServer) -> None:
    headers = {"content-type": "application/json"}
    for raw in (b"{not json", b"", b"\xff\xfe", json.dumps(SETOSA).replace("5.1", "NaN").encode()):
        response = requests.post(f"{server.url}/predict", data=raw, headers=headers, timeout=10)
        _assert_error(response, 400, "validation_error")


def test_batch_over_the_limit_gets_400(server: LocalServer) -> None:
    too_many = {"flowers": [SETOSA] * (settings.max_batch_flowers + 1)}
    body = _assert_error(_post(server, "/predict_batch", too_many), 400, "validation_error")
    assert "flowers" in body["detail"]


def test_transport_errors_have_the_same_shape(server: LocalServer) -> None:
    _assert_error(requests.get(f"{server.url}/predict", timeout=10), 405, "method_not_allowed")
    _assert_error(requests.get(f"{server.url}/no-such-path", timeout=10), 404, "not_found")
    plain = requests.post(
        f"{server.url}/predict", data="5.1", timeout=10, headers={"content-type": "text/plain"}
    )
    _assert_error(plain, 415, "unsupported_media_type")
    huge = requests.post(
        f"{server.url}/predict_batch",
        data=b"[" + b" " * 400_000 + b"]",
        headers={"content-type": "application/json"},
        timeout=10,
    )
    _assert_error(huge, 413, "payload_too_large")


def test_health_endpoints(server: LocalServer) -> None:
    assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200


def test_metrics_expose_the_middleware_histograms_and_the_configured_buckets(
    server: LocalServer,
) -> None:
    _post(server, "/predict", VIRGINICA)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for series in (
        'iris_request_latency_ms_bucket{endpoint="/predict"',
        'iris_request_cpu_ms_count{endpoint="/predict"}',
        'iris_request_memory_delta_mb_count{endpoint="/predict"}',
        "iris_process_resident_memory_mb",
        'iris_predictions_total{class_name="virginica"}',
    ):
        assert series in text, series
    # The bucket 0.0025 s is not a BentoML default: configuration.yaml really took effect.
    assert re.search(r'bentoml_service_request_duration_seconds_bucket\{[^}]*le="0\.0025"', text)


def test_swagger_ui_and_openapi_examples(server: LocalServer) -> None:
    page = requests.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    spec = requests.get(f"{server.url}/docs.json", timeout=10).json()
    assert {"/predict", "/predict_batch"} <= set(spec["paths"])
    assert spec["info"]["title"] == "IrisClassifier"
    assert spec["info"]["description"] == SERVICE_DESCRIPTION  # not BentoML's generic README
    assert spec["info"]["version"] == API_VERSION
    one = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert one["schema"]["example"] == SETOSA
    batch_item = spec["components"]["schemas"]["IrisFlower"]  # a flower of /predict_batch
    assert batch_item["example"] == SETOSA


def test_runner_is_its_own_process(server: LocalServer) -> None:
    processes = psutil.Process(server.process.pid).children(recursive=True)
    commands = {p.pid: " ".join(p.cmdline()) for p in processes}
    runner = [pid for pid, cmd in commands.items() if "--service-name IrisModelRunner" in cmd]
    api = [pid for pid, cmd in commands.items() if "--service-name IrisClassifier" in cmd]
    # One API worker per CPU (`workers: cpu_count`), as BentoML counts them here.
    from bentoml._internal.resource import system_resources

    assert len(runner) == 1 and len(api) == max(1, int(system_resources()["cpu"])), commands
    assert not set(runner) & set(api)


async def _hammer(url: str, total: int, concurrency: int) -> list[int]:
    statuses: list[int] = []
    queue = iter(range(total))
    body = json.dumps(VERSICOLOR)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for _ in queue:
                async with session.post(
                    url, data=body, headers={"content-type": "application/json"}
                ) as response:
                    await response.read()
                    statuses.append(response.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


@pytest.mark.timeout(240)
def test_every_request_succeeds_at_50_concurrent_connections(server: LocalServer) -> None:
    """Regression test for the runner-connection recycling bug (see configuration.yaml)."""
    statuses = asyncio.run(_hammer(f"{server.url}/predict", total=3000, concurrency=50))
    assert len(statuses) == 3000
    failures = {status: statuses.count(status) for status in set(statuses) if status != 200}
    assert failures == {}


def _inferences(server: LocalServer) -> dict[str, float]:
    """iris_inferences_total by where the champion's prediction was computed."""
    samples = take_snapshot(server.url).select("iris_inferences_total")
    return {labels["computed_in"]: value for labels, value in samples}


def _until_every_worker_uses_the_runner(server: LocalServer, url: str, body: object) -> None:
    """The service is ready before its runner is (a worker answers without it), and each API
    worker sends work to the runner only once its own heartbeat has seen it ready (within a
    ping period of the runner's start). Wait, bounded, for three rounds in a row of
    concurrent large batches all taken by the runner."""
    deadline = time.monotonic() + 60
    in_a_row = 0
    while in_a_row < 3:
        assert time.monotonic() < deadline, f"the runner never took them: {_inferences(server)}"
        before = _inferences(server).get("runner", 0.0)
        asyncio.run(_concurrent_answers(url, 8, 8, body))
        in_a_row = in_a_row + 1 if _inferences(server).get("runner", 0.0) - before == 8 else 0
        time.sleep(0.5)


async def _concurrent_answers(
    url: str, total: int, concurrency: int, body: object = VERSICOLOR
) -> list[dict]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> dict:
            async with session.post(url, json=body) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        return await asyncio.gather(*(one() for _ in range(total)))


@pytest.mark.timeout(120)
def test_one_flower_is_computed_in_the_api_worker_alone_or_concurrent(
    server: LocalServer,
) -> None:
    """A compiled model answers one flower in microseconds: no request of the shipped
    configuration takes the hop to the runner, and every answer is the same model's."""
    before = _inferences(server)
    answers = [_post(server, "/predict", VERSICOLOR).json() for _ in range(20)]
    answers += asyncio.run(_concurrent_answers(f"{server.url}/predict", 400, 16))
    after = _inferences(server)
    assert after["api_worker"] - before["api_worker"] == 420, (before, after)
    assert after["runner"] == before["runner"], (before, after)
    first = answers[0]
    for body in answers:
        assert body["model_tag"] == first["model_tag"], body
        assert body["probabilities"] == first["probabilities"], body


@pytest.mark.timeout(180)
def test_large_batches_are_batched_by_the_runner_with_the_same_answers(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    """With IRIS_RUNNER_MIN_ROWS=50, a batch of 60 flowers goes to the runner, whose adaptive
    batching merges concurrent ones; smaller ones are computed in the API worker; both give
    the same model's answer, named alike."""
    rows = load_iris().data
    small = {"flowers": [dict(zip(FEATURE_NAMES, map(float, r), strict=True)) for r in rows[:49]]}
    large = {"flowers": [dict(zip(FEATURE_NAMES, map(float, r), strict=True)) for r in rows[:60]]}
    with bento_server(trained_state, tmp_path, IRIS_RUNNER_MIN_ROWS="50") as running:
        url = f"{running.url}/predict_batch"
        _until_every_worker_uses_the_runner(running, url, large)
        before = _inferences(running)
        in_worker = requests.post(url, json=small, timeout=10).json()
        by_runner = asyncio.run(_concurrent_answers(url, 64, 16, large))
        after = _inferences(running)
        batches = take_snapshot(running.url).select("bentoml_service_adaptive_batch_size_count")
    assert after["api_worker"] - before["api_worker"] == 1, (before, after)
    assert after["runner"] - before["runner"] == 64, (before, after)
    assert sum(value for _, value in batches) >= 1  # the runner's batching saw the calls
    for answer in by_runner:
        assert answer["model_tag"] == in_worker["model_tag"]
        assert answer["predictions"][:49] == in_worker["predictions"]


def test_each_prediction_writes_one_structured_log_line(server: LocalServer) -> None:
    response = _post(server, "/predict", SETOSA, headers={"X-Request-ID": "log-line-check-7"})
    assert response.status_code == 200
    deadline = time.monotonic() + 10  # the supervisor relays worker output asynchronously
    while True:
        lines = [
            json.loads(line)
            for line in server.log().splitlines()
            if line.startswith("{") and "log-line-check-7" in line
        ]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(lines) == 1
    assert lines[0]["endpoint"] == "/predict" and lines[0]["status"] == 200
    assert lines[0]["latency_ms"] > 0 and "memory_delta_mb" in lines[0] and "cpu_ms" in lines[0]


def _curl(command: str, url: str) -> tuple[int, object]:
    """Run a documented curl call with the real curl against `url`: (status, JSON answer)."""
    words = shlex.split(command.replace(LOCAL_URL, url))
    result = subprocess.run(
        [*words, "--max-time", "10", "--write-out", "\n%{http_code}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


def _flowers_sent(command: str) -> list[dict]:
    """The flowers in the body of a documented curl call (none for a call without a body)."""
    words = shlex.split(command)
    bodies = [json.loads(words[i + 1]) for i, w in enumerate(words) if w in ("-d", "--data")]
    return [flower for body in bodies for flower in body.get("flowers", [body])]


def test_the_documented_curl_calls_answer(server: LocalServer) -> None:
    """Every curl call of the README and docs/, as shown, against a real server; the class
    names answered are those of the known flowers the calls send."""
    ensure_debian_packages("curl")
    names = {"setosa": SETOSA, "versicolor": VERSICOLOR, "virginica": VIRGINICA}
    known = {json.dumps(flower, sort_keys=True): name for name, flower in names.items()}
    calls = [command for command in documented_commands() if is_local_curl(command.text)]
    readme_routes = [
        urlsplit(next(w for w in shlex.split(c.text) if w.startswith(LOCAL_URL))).path
        for c in calls
        if c.path == README
    ]
    assert readme_routes == ["/predict", "/predict_batch"]
    for call in calls:
        status, answer = _curl(call.text, server.url)
        assert status == 200, (call.where(), answer)
        assert isinstance(answer, dict), call.where()
        flowers = _flowers_sent(call.text)
        expected = [known[json.dumps(flower, sort_keys=True)] for flower in flowers]
        predictions = answer.get("predictions", [answer]) if flowers else []
        assert [p["class_name"] for p in predictions] == expected, call.where()
        if not flowers:
            assert "status" in answer, call.where()  # GET /drift


def test_the_readme_python_client_example_works(server: LocalServer) -> None:
    """The README's BentoML client example, run as shown (only the address changes)."""
    [example] = [b for b in fenced_blocks(README.read_text()) if b.tag == "python"]
    assert LOCAL_URL in example.text
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example.text.replace(LOCAL_URL, server.url), str(README), "exec"), {})
    class_name, _, probabilities = printed.getvalue().strip().partition(" ")
    assert class_name == "setosa"
    assert set(ast.literal_eval(probabilities)) == set(CLASS_NAMES)
