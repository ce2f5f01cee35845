"""The service's own answers, built without Pydantic objects, have the documented shape."""

from __future__ import annotations

import json

import numpy as np

from iris_service import answers
from iris_service.schemas import BatchPrediction, Prediction
from iris_service.model_loading import ServedModel

MODEL = ServedModel("iris-classifier:abc", ("setosa", "versicolor", "virginica"), {})


def test_batch_answer_is_the_json_of_the_predictions() -> None:
    probabilities = np.random.default_rng(3).dirichlet([1, 1, 1], 200)
    body = json.loads(answers.batch_response(MODEL, probabilities).body)
    assert body == {
        "predictions": answers.predictions(MODEL, probabilities),
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
    (one,) = answers.predictions(MODEL, np.array([[0.1, 0.7, 0.2]]))
    assert Prediction(**one).class_name == "versicolor"
