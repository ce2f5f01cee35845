"""Explanations through the inference core and their encodings: InferenceCore.explain with
real compiled models (the ones tests/unit/test_inference.py builds), the /explain answer
document and the V2 explain parameter and outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from iris_service.http.explanation_answers import ExplanationAnswer, explanation_document
from iris_service.inference.core import InferenceCore, NoExplanation, TooManyToExplain
from iris_service.inference.model_loading import CompiledModel
from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.protocols import v2
from iris_service.settings import settings
from tests.unit.test_inference import CHALLENGER, CHAMPION, _compiled, _follower, _rows


@pytest.fixture(scope="module")
def models() -> dict[str, CompiledModel]:
    """The champion with a background of 30 flowers; the challenger stored without one."""
    champion = dataclasses.replace(_compiled(CHAMPION, 1.0), background=_rows(30, seed=9))
    return {CHAMPION: champion, CHALLENGER: _compiled(CHALLENGER, 0.01)}


async def test_the_core_explains_rows_with_the_routed_model(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(_follower(tmp_path, models, challenger=True))
    rows = _rows(7, seed=3)
    explained = await core.explain(rows)
    explanation = explained.explanation
    assert explained.model.tag == CHAMPION and explained.role == "champion"
    assert explanation.contributions.shape == (7, len(CLASS_NAMES), len(FEATURE_NAMES))
    assert explanation.background_rows == 30 and explanation.output == "probability"
    expected = models[CHAMPION].predict_proba(rows)
    np.testing.assert_array_equal(explanation.probabilities, expected)
    rebuilt = explanation.base_value + explanation.contributions.sum(axis=2)
    assert np.abs(rebuilt - expected).max() <= 1e-6


async def test_a_model_without_background_and_too_many_rows_are_refused(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(_follower(tmp_path, models, challenger=True), max_explain_rows=5)
    with pytest.raises(NoExplanation, match="without an explanation background"):
        await core.explain(_rows(1), version="chall")
    with pytest.raises(TooManyToExplain, match="at most 5 flowers"):
        await core.explain(_rows(6))
    assert (await core.explain(_rows(5))).explanation.contributions.shape[0] == 5
    assert settings.max_explain_flowers == 100  # the documented default


async def test_the_explain_answer_document_matches_its_schema_and_adds_up(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(_follower(tmp_path, models, challenger=False))
    explained = await core.explain(_rows(1, seed=4))
    document = explanation_document(explained)
    ExplanationAnswer.model_validate(document)  # the documented response model
    assert document["model_tag"] == CHAMPION and document["model_version"] == "champ"
    assert document["background"]["rows"] == 30 and document["output"] == "probability"
    for name in CLASS_NAMES:
        total = document["base_value"][name] + sum(document["contributions"][name].values())
        assert abs(total - document["probabilities"][name]) <= 1e-6
    probabilities = document["probabilities"]
    assert document["class_name"] == max(probabilities, key=probabilities.get)


def _v2_body(rows: np.ndarray, **parameters: object) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    body = {"inputs": [{**tensor, "data": rows.ravel().tolist()}], "parameters": parameters}
    return json.dumps(body).encode()


def test_v2_reads_the_explain_parameter_and_refuses_a_non_boolean() -> None:
    rows = _rows(2)
    assert v2.parse_infer_request(_v2_body(rows, explain=True), None).explain is True
    assert v2.parse_infer_request(_v2_body(rows), None).explain is False
    with pytest.raises(v2.V2Error, match="must be true or false") as refused:
        v2.parse_infer_request(_v2_body(rows, explain="yes"), None)
    assert refused.value.status == 400


@pytest.mark.parametrize("binary", [False, True])
async def test_v2_adds_the_explanation_outputs_in_json_or_binary(
    tmp_path: Path, models: dict[str, CompiledModel], binary: bool
) -> None:
    from iris_service.protocols.v2_explain import explanation_tensors

    rows = _rows(3, seed=5)
    request = v2.parse_infer_request(_v2_body(rows, explain=True, binary_data_output=binary), None)
    explained = await InferenceCore(_follower(tmp_path, models, challenger=False)).explain(rows)
    content, header_length = v2.encode_infer_response(
        request,
        "iris-classifier",
        "champ",
        explained.explanation.probabilities,
        explanation_tensors(explained.explanation),
    )
    header = json.loads(content[:header_length] if binary else content)
    outputs = {output["name"]: output for output in header["outputs"]}
    assert list(outputs) == ["predict", "predict_proba", "explanation", "base_value"]
    assert outputs["explanation"]["shape"] == [3, 3, 4]
    assert outputs["base_value"]["shape"] == [3]
    assert outputs["explanation"]["datatype"] == outputs["base_value"]["datatype"] == "FP32"
    if binary:
        assert header_length is not None
        blobs, offset = {}, header_length
        for output in header["outputs"]:
            size = output["parameters"]["binary_data_size"]
            blobs[output["name"]] = content[offset : offset + size]
            offset += size
        contributions = np.frombuffer(blobs["explanation"], "<f4").reshape(3, 3, 4)
        base = np.frombuffer(blobs["base_value"], "<f4")
        probabilities = np.frombuffer(blobs["predict_proba"], "<f8").reshape(3, 3)
    else:
        assert header_length is None
        contributions = np.array(outputs["explanation"]["data"]).reshape(3, 3, 4)
        base = np.array(outputs["base_value"]["data"])
        probabilities = np.array(outputs["predict_proba"]["data"]).reshape(3, 3)
    assert np.abs(base + contributions.sum(axis=2) - probabilities).max() <= 1e-6


class _Stored:
    """What model_loading reads of a stored version: its tag, metadata and files."""

    def __init__(self, folder: Path, metadata: dict) -> None:
        self.tag, self.folder = "iris-classifier:v1", folder
        self.info = type("Info", (), {"metadata": metadata})()

    def path_of(self, name: str) -> str:
        return str(self.folder / name)


def _stored_with_background(tmp_path: Path, rows: list, sha256: str | None = None) -> _Stored:
    import hashlib

    from iris_service.inference.model_loading import BACKGROUND_FILE, BACKGROUND_METADATA

    content = json.dumps({"feature_names": list(FEATURE_NAMES), "rows": rows}).encode()
    (tmp_path / BACKGROUND_FILE).write_bytes(content)
    digest = sha256 or hashlib.sha256(content).hexdigest()
    return _Stored(tmp_path, {BACKGROUND_METADATA: {"rows": len(rows), "sha256": digest}})


def test_a_stored_background_is_read_checked_or_refused(tmp_path: Path) -> None:
    from iris_service.inference.model_loading import ModelUnavailableError, _background

    assert _background(_Stored(tmp_path, {})) is None  # stored before explanations
    rows = _rows(5).tolist()
    np.testing.assert_array_equal(_background(_stored_with_background(tmp_path, rows)), rows)
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        _background(_stored_with_background(tmp_path, rows, sha256="0" * 64))
    for bad in ([[1.0, 2.0]], [], [[1.0, 2.0, float("nan"), 4.0]]):
        with pytest.raises(ModelUnavailableError, match="damaged explanation background"):
            _background(_stored_with_background(tmp_path, bad))
