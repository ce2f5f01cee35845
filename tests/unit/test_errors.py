import json

from iris_service.http import errors


def _body(code_and_body: tuple[str, bytes]) -> bytes:
    code, body = code_and_body
    assert json.loads(body)["error"] == code
    return body


def _decoded(body: bytes) -> dict:
    decoded = json.loads(body)
    assert set(decoded) == {"error", "detail", "request_id"}
    return decoded


def test_pydantic_detail_list_becomes_one_readable_line() -> None:
    bentoml_body = json.dumps(
        {
            "error": "2 validation errors for IrisFeatures",
            "detail": [
                {"loc": ["sepal_length"], "msg": "Input should be a valid number", "type": "x"},
                {"loc": ["colour"], "msg": "Extra inputs are not permitted", "type": "y"},
            ],
        }
    ).encode()
    decoded = _decoded(_body(errors.normalise(400, bentoml_body, "abc")))
    assert decoded == {
        "error": "validation_error",
        "detail": "sepal_length: Input should be a valid number; "
        "colour: Extra inputs are not permitted",
        "request_id": "abc",
    }


def test_server_errors_never_leak_their_text() -> None:
    leaky = b'{"error": "Traceback (most recent call last): File /secret/path.py"}'
    decoded = _decoded(_body(errors.normalise(500, leaky, "r1")))
    assert "Traceback" not in decoded["detail"] and "/secret" not in decoded["detail"]
    assert decoded["error"] == "internal_error"


def test_plain_text_and_bentoml_list_bodies_are_wrapped() -> None:
    assert _decoded(_body(errors.normalise(404, b"Not Found", "r")))["detail"] == "Not Found"
    wrapped = _body(errors.normalise(415, b'[{"error": "pickle is not allowed"}]', "r"))
    assert _decoded(wrapped)["detail"] == "pickle is not allowed"
    assert _decoded(wrapped)["error"] == "unsupported_media_type"


def test_our_own_shape_keeps_its_code_and_gets_the_request_id() -> None:
    ours = errors.error_response(503, "runner restarting", "model_not_ready")
    decoded = _decoded(_body(errors.normalise(503, ours.body, "rid")))
    assert decoded == {
        "error": "model_not_ready",
        "detail": "runner restarting",
        "request_id": "rid",
    }
    assert ours.headers["retry-after"] == str(errors.RETRY_AFTER_SECONDS)


def test_retry_after_only_on_retryable_statuses() -> None:
    body = errors.error_body(429, "slow down", "r")
    assert (b"retry-after", b"1") in errors.error_headers(429, body, "r")
    assert not any(name == b"retry-after" for name, _ in errors.error_headers(400, body, "r"))


def test_protocol_routes_keep_their_protocol_error_shape() -> None:
    assert errors.protocol_of("/v2/models/x/infer") == errors.V2
    assert errors.protocol_of("/invocations") == errors.MLFLOW
    assert errors.protocol_of("/predict") is None and errors.protocol_of("/v2x") is None
    own = b'{"error": "bad shape"}'
    assert errors.normalise(400, own, "r", errors.V2)[1] == own
    bentoml_429 = b'{"detail": "more than 64 prediction requests in flight"}'
    assert json.loads(errors.normalise(429, bentoml_429, "r", errors.V2)[1]) == {
        "error": "more than 64 prediction requests in flight"
    }
    ours = errors.error_response(503, "runner restarting", "model_not_ready").body
    assert json.loads(errors.normalise(503, ours, "r", errors.MLFLOW)[1]) == {
        "error_code": "TEMPORARILY_UNAVAILABLE",
        "message": "runner restarting",
    }
    leaky = b'{"error": "Traceback (most recent call last): /secret.py"}'
    assert "Traceback" not in errors.normalise(500, leaky, "r", errors.V2)[1].decode()
    own_refusal = b'{"error": "version 3 is stored but not served now; the served version is 4"}'
    assert errors.normalise(503, own_refusal, "r", errors.V2)[1] == own_refusal
    assert errors.normalise(502, own_refusal, "r", errors.V2)[1] != own_refusal
