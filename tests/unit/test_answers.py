"""The service's own answers, built without Pydantic objects, have the documented shape."""

from __future__ import annotations

import json

import numpy as np

from iris_service.http import answers
from iris_service.http.schemas import BatchPrediction, Prediction
from iris_service.inference.model_loading import ModelVersion

MODEL = ModelVersion("iris-classifier:abc", ("setosa", "versicolor", "virginica"), {})


def test_batch_answer_is_the_json_of_the_predictions() -> None:
    probabilities = np.random.default_rng(3).dirichlet([1, 1, 1], 200)
    body = json.loads(answers.batch_response(MODEL, probabilities).body)
    assert body["model_tag"] == MODEL.tag
    for answer, row in zip(body["predictions"], probabilities, strict=True):
        class_id = int(row.argmax())
        assert answer == {
            "class_id": class_id,
            "class_name": MODEL.class_names[class_id],
            "probabilities": dict(zip(MODEL.class_names, row.round(6).tolist(), strict=True)),
            "model_tag": MODEL.tag,
        }
    parsed = BatchPrediction.model_validate(body)  # the documented response model
    assert [p.class_id for p in parsed.predictions] == probabilities.argmax(axis=1).tolist()
    first = parsed.predictions[0]
    assert first.probabilities == dict(
        zip(MODEL.class_names, probabilities[0].round(6), strict=True)
    )
    assert first.class_name == MODEL.class_names[first.class_id]


def test_single_prediction_has_the_prediction_shape() -> None:
    response = answers.prediction_response(MODEL, np.array([[0.1, 0.7, 0.2]]))
    assert response.media_type == "application/json"
    one = Prediction.model_validate_json(response.body)  # the documented response model
    assert (one.class_id, one.class_name, one.model_tag) == (1, "versicolor", MODEL.tag)
    assert one.probabilities == {"setosa": 0.1, "versicolor": 0.7, "virginica": 0.2}


def test_edge_probabilities_and_a_tag_with_a_percent_sign_keep_their_values() -> None:
    """Numbers are written by msgspec and placed by %-templates: exact ones, zeros, tiny
    values written in exponent form and a `%` in the tag must all read back unchanged."""
    model = ModelVersion("iris-classifier:a%sb", MODEL.class_names, {})
    probabilities = np.array([[1.0, 0.0, 0.0], [1e-06, 0.5, 0.499999], [2.5e-05, 1e-07, 0.999975]])
    body = json.loads(answers.batch_response(model, probabilities).body)
    assert body["model_tag"] == model.tag
    assert [p["model_tag"] for p in body["predictions"]] == [model.tag] * 3
    assert [list(p["probabilities"].values()) for p in body["predictions"]] == (
        probabilities.round(6).tolist()
    )
    assert [p["class_id"] for p in body["predictions"]] == [0, 1, 2]
