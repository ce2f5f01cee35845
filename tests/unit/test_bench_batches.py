"""The benchmark's batch formats (issue 12): the bodies as the service parses them, wrk sending
binary bodies byte for byte, the FastAPI peer's V2 route, the batch table and the targets."""

from __future__ import annotations

import http.server
import importlib
import json
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from iris_service.protocols import v2
from tools.bench import __main__ as cli
from tools.bench import load, payloads, report, servers, targets

V2_PATH = "/v2/models/iris-classifier/infer"


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_v2_binary_body_round_trips_through_the_services_parser(size: int) -> None:
    body = payloads.batch_request("v2-binary", size, 3)
    headers = dict(body.headers)
    header_length = int(headers[payloads.HEADER_LENGTH])
    assert headers["Content-Type"] == "application/octet-stream"
    assert len(body.content) == header_length + size * 4 * 8  # float64 after the JSON header
    header = json.loads(body.content[:header_length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": size * 32}

    parsed = v2.parse_infer_request(body.content, headers[payloads.HEADER_LENGTH])
    expected = np.array(payloads.rows(size, 3))
    np.testing.assert_array_equal(parsed.rows, expected)
    assert [(o.name, o.binary) for o in parsed.outputs] == [
        ("predict", True), ("predict_proba", True),
    ]  # fmt: skip
    # The same flowers as the V2 JSON body of the same size and offset.
    as_json = payloads.batch_request("v2", size, 3)
    np.testing.assert_array_equal(v2.parse_infer_request(as_json.content, None).rows, expected)


def test_text_batch_formats_are_the_json_bodies_with_json_headers() -> None:
    for name in ("service", "v2", "dataframe_split"):
        body = payloads.batch_request(name, 10, 2)
        assert body.content == payloads.batch_body(name, 10, 2).encode()
        assert body.headers == payloads.JSON_HEADERS
    with pytest.raises(ValueError, match="unknown batch format"):
        payloads.batch_request("csv", 10)


def _unescape_lua(literal: str) -> bytes:
    assert literal.startswith('"') and literal.endswith('"') and literal.isascii()
    return re.sub(rb"\\(\d{3})", lambda m: bytes([int(m[1])]), literal[1:-1].encode())


def test_binary_bodies_become_ascii_lua_literals_of_the_same_bytes() -> None:
    data = bytes(range(256)) + b'\r\n"\\]]'
    literal = load.lua_bytes(data)
    assert "\n" not in literal and "\r" not in literal
    assert _unescape_lua(literal) == data
    binary = payloads.batch_request("v2-binary", 3)
    header = dict(binary.headers)[payloads.HEADER_LENGTH]
    assert load.lua_body(binary) == (
        "{{[ [=[Content-Type]=] ] = [=[application/octet-stream]=], "
        f"[ [=[Inference-Header-Content-Length]=] ] = [=[{header}]=]}}, "
        f"{load.lua_bytes(binary.content)}}}"
    )
    json_body = payloads.batch_body("v2", 3)
    assert load.lua_body(json_body) == (
        f"{{{{[ [=[Content-Type]=] ] = [=[application/json]=]}}, [=[{json_body}]=]}}"
    )


class _Capture(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append((dict(self.headers), self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_sends_binary_bodies_and_their_headers_byte_for_byte() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bodies = [payloads.batch_request("v2-binary", 100, offset) for offset in range(2)]
    bodies.append(payloads.Body(bytes(range(256)) + b"\r\n\n\r]]", (("X-Test", "1"),)))
    try:
        result = load.run_wrk(f"http://127.0.0.1:{server.server_port}", V2_PATH, bodies, 1, 1)
    finally:
        server.shutdown()
        server.server_close()
    assert result.requests > 3 and result.errors == 0
    received = {content: headers for headers, content in _Capture.received}
    assert set(received) == {body.content for body in bodies}
    first = received[bodies[0].content]
    parsed = v2.parse_infer_request(bodies[0].content, first[payloads.HEADER_LENGTH])
    np.testing.assert_array_equal(parsed.rows, np.array(payloads.rows(100, 0)))
    assert received[bodies[2].content]["X-Test"] == "1"


def test_fastapi_peer_parses_v2_json_into_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    estimator = LogisticRegression(max_iter=500).fit(data.data, data.target)
    monkeypatch.setenv("IRIS_BASELINE_MODEL_DIR", "unused")
    monkeypatch.setattr("tools.bench.sklearn_model.load_sklearn_estimator", lambda _path: estimator)
    monkeypatch.delitem(sys.modules, "tools.bench.baseline_app", raising=False)
    baseline = importlib.import_module("tools.bench.baseline_app")
    client = TestClient(baseline.app)
    body = payloads.batch_request("v2", 6, 1)
    answer = client.post(V2_PATH, content=body.content, headers=dict(body.headers))
    assert answer.status_code == 200
    (output,) = answer.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "predict_proba",
        "FP64",
        [6, 3],
    )
    expected = estimator.predict_proba(np.array(payloads.rows(6, 1)))
    np.testing.assert_allclose(np.array(output["data"]).reshape(6, 3), expected)
    assert client.post("/v2/models/other/infer", json={"inputs": []}).status_code == 404


def test_every_server_posts_each_batch_format_to_its_path() -> None:
    assert set(servers.BATCH_PATHS) == set(payloads.BATCH_FORMATS)
    assert servers.ENDPOINTS["bentoml"].batch_formats == payloads.BATCH_FORMATS
    assert servers.ENDPOINTS["fastapi"].batch_formats == ("service", "v2")
    assert servers.ENDPOINTS["mlflow"].batch_formats == ("dataframe_split",)
    measured_elsewhere = ("bentoml-v2", *servers.MODE_SERVERS)
    assert all(not servers.ENDPOINTS[name].batch_formats for name in measured_elsewhere)
    # MLServer's REST server refuses the binary extension.
    assert "v2-binary" not in servers.ENDPOINTS["mlserver"].batch_formats


def test_batch_sizes_default_to_ten_thousand_and_are_bounded() -> None:
    assert cli.parse_args([]).batch_sizes == [1, 100, 1000, 10000]
    with pytest.raises(SystemExit):
        cli.parse_args(["--batch-sizes", "10001"])


def _batch(server: str, name: str, size: int, rows_per_s: float | None, **extra: object) -> dict:
    entry = {
        "server": server,
        "model": "shipped",
        "workers": 1,
        "format": name,
        "path": servers.BATCH_PATHS[name],
        "batch_size": size,
        "connections": 8,
    }
    if rows_per_s is None:
        return entry | extra
    return (
        entry
        | {
            "requests_per_s": rows_per_s / size,
            "rows_per_s": rows_per_s,
            "latency_ms": {"p99": 20.0},
            "errors": 0,
            "cpu_us_per_row": 3.0,
        }
        | extra
    )


def _issue_12_batch() -> list[dict]:
    refused = {"refused": 'HTTP 400: {"error":"send between 1 and 1000 flowers, got 10000"}'}
    return [
        _batch("bentoml", "service", 1000, 90_000),
        _batch("bentoml", "service", 10000, None, **refused),
        _batch("bentoml", "v2", 1000, 95_000),
        _batch("bentoml", "v2-binary", 1000, 400_000),
        _batch("bentoml", "v2-binary", 10000, None, refused="HTTP 413: too large"),
        _batch("bentoml", "dataframe_split", 1000, 60_000),
        _batch("fastapi", "service", 1000, 40_000),
        _batch("fastapi", "v2", 1000, 50_000, errors=2),
        _batch("fastapi", "v2", 10000, 55_000),
        _batch("mlflow", "dataframe_split", 1000, 20_000),
        _batch("mlflow", "dataframe_split", 10000, None, failed="RuntimeError: wrk failed"),
    ]


def _targets(batch: list[dict]) -> dict[str, dict]:
    result = report.build("2026-12-02T00:00:00+00:00", {"cpus": 2}, {}, [], batch)
    return {t["name"]: t for t in result["targets"]}


def test_batch_targets_are_marked_from_the_batch_numbers() -> None:
    found = _targets(_issue_12_batch())
    prefix = "1,000-flower batches"
    binary = found[f"{prefix}, V2 binary: vs FastAPI parsing V2 JSON into numpy"]
    assert binary["value"] == 8.0 and binary["met"] is True  # 400,000 vs 50,000, >= 2x
    assert "fastapi v2 (shipped, 1,000 flowers x 8 conn) 50,000 flowers/s" in binary["evidence"]
    assert "400,000 flowers/s" in binary["evidence"]
    service = found[f"{prefix}, /predict_batch: vs FastAPI parsing V2 JSON into numpy"]
    assert service["value"] == 1.8 and service["met"] is False  # 90,000 vs 50,000 < 2x


def test_batch_targets_say_why_they_are_not_measured() -> None:
    prefix = "1,000-flower batches"
    batch = _issue_12_batch()
    batch[3] = _batch("bentoml", "v2-binary", 1000, None, refused="HTTP 413: too large")
    found = _targets(batch)
    binary = found[f"{prefix}, V2 binary: vs FastAPI parsing V2 JSON into numpy"]
    assert binary["met"] is None and binary["value"] is None
    assert "bentoml v2-binary shipped refused: HTTP 413" in binary["evidence"]
    service = found[f"{prefix}, /predict_batch: vs FastAPI parsing V2 JSON into numpy"]
    assert service["met"] is False  # measured: not affected by the binary refusal
    found = _targets([entry for entry in _issue_12_batch() if entry["server"] != "fastapi"])
    service = found[f"{prefix}, /predict_batch: vs FastAPI parsing V2 JSON into numpy"]
    assert service["met"] is None
    assert service["evidence"] == "fastapi v2 at 1,000 flowers per request not measured"


def test_batch_table_has_flowers_per_second_per_format_and_size(tmp_path: Path) -> None:
    result = report.build("2026-12-02T00:00:00+00:00", {"cpus": 2}, {}, [], _issue_12_batch())
    report.write_all(result, tmp_path)
    markdown = (tmp_path / "bench.md").read_text()
    assert "## Batch throughput (flowers/s per format and batch size)" in markdown
    assert "| Server | Format | Model | Workers | 1,000 / request | 10,000 / request |" in markdown
    service_row = (
        "| bentoml | service JSON `/predict_batch` | shipped | 1 | 90,000 | refused (HTTP 400) |"
    )
    assert service_row in markdown
    assert (
        f"| bentoml | V2 binary tensor `{V2_PATH}` | shipped | 1 | 400,000 | refused (HTTP 413) |"
    ) in markdown
    assert (
        f"| fastapi | V2 JSON tensor `{V2_PATH}` | shipped | 1 | 50,000 (2 errors) | 55,000 |"
        in (markdown)
    )
    assert "| mlflow | MLflow dataframe_split `/invocations` | shipped | 1 | 20,000 | failed |" in (
        markdown
    )
    assert "| fastapi | service JSON `/predict_batch` | shipped | 1 | 40,000 | - |" in markdown
    # The detail table keeps the refusal's answer.
    assert 'refused: HTTP 400: {"error":"send between 1 and 1000 flowers' in markdown
    assert "## Targets (issue 21)" in markdown
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["batch"] == _issue_12_batch()
    assert (tmp_path / "bench_batch.png").read_bytes().startswith(b"\x89PNG")
    assert len(targets.checks(50.0)) == 30


class _Limited(http.server.BaseHTTPRequestHandler):
    """Refuses bodies over 100 KB with 413, answers 500 to /broken, 200 otherwise."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.rfile.read(length)
        status = 500 if self.path == "/broken" else 413 if length > 100_000 else 200
        answer = json.dumps({"error": f"{length} | bytes"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_a_size_the_server_refuses_is_recorded_as_refused_not_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from tools.bench import runner

    def no_load(*_args: object) -> None:
        raise AssertionError("a refused or broken size must not be loaded")

    monkeypatch.setattr(runner, "measured_load", no_load)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Limited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    running = SimpleNamespace(
        server="bentoml",
        port=server.server_port,
        model=SimpleNamespace(family="shipped"),
        workers=1,
        endpoints=servers.Endpoints("/readyz", "/predict", ("v2-binary",)),
    )
    options = runner.Options(out_dir=Path("unused"), state_dir=Path("unused"))
    options.batch_sizes = (10000,)
    try:
        (entry,) = runner.batch_records(running, options)  # type: ignore[arg-type]
        monkeypatch.setitem(servers.BATCH_PATHS, "v2-binary", "/broken")
        options.batch_sizes = (10,)
        (broken,) = runner.batch_records(running, options)  # type: ignore[arg-type]
    finally:
        server.shutdown()
        server.server_close()
    length = len(payloads.batch_request("v2-binary", 10000).content)
    assert entry["refused"] == f'HTTP 413: {{"error": "{length} | bytes"}}'
    assert (entry["format"], entry["batch_size"], entry["path"]) == ("v2-binary", 10000, V2_PATH)
    assert "rows_per_s" not in entry and "errors" not in entry  # not an error of the service
    assert broken["failed"].startswith("one request answered 500") and "refused" not in broken
    markdown = "\n".join(report.batch_lines([entry]))
    assert f'refused: HTTP 413: {{"error": "{length} \\| bytes"}} |' in markdown
