import json

import pytest
from pydantic import ValidationError

from iris_service.http.schemas import IrisBatch, IrisFeatures, Prediction
from iris_service.names import FEATURE_NAMES
from iris_service.settings import settings
from tests.support import SETOSA


def test_a_valid_flower_is_accepted_and_ints_are_numbers() -> None:
    flower = IrisFeatures.model_validate_json(json.dumps({**SETOSA, "sepal_length": 5}))
    assert flower.as_row() == [5.0, 3.5, 1.4, 0.2]


@pytest.mark.parametrize(
    "change",
    [
        {"sepal_length": "5.1"},  # numeric string
        {"sepal_width": True},
        {"petal_length": None},
        {"petal_width": [0.2]},
        {"sepal_length": 0},  # not positive
        {"sepal_length": -1.0},
        {"sepal_length": 1e9},  # absurd size
        {"petal_width": 10.5},  # above the physical bound
        {"colour": "blue"},  # unknown field
    ],
)
def test_invalid_flowers_are_rejected(change: dict) -> None:
    with pytest.raises(ValidationError):
        IrisFeatures.model_validate_json(json.dumps({**SETOSA, **change}))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_are_rejected(literal: str) -> None:
    body = json.dumps({**SETOSA, "sepal_length": 0}).replace(
        '"sepal_length": 0', f'"sepal_length": {literal}'
    )
    with pytest.raises(ValidationError, match=r"finite|valid"):
        IrisFeatures.model_validate_json(body)


@pytest.mark.parametrize("missing", FEATURE_NAMES)
def test_every_field_is_required(missing: str) -> None:
    body = {key: value for key, value in SETOSA.items() if key != missing}
    with pytest.raises(ValidationError, match=missing):
        IrisFeatures.model_validate(body)


def test_batch_size_is_bounded() -> None:
    IrisBatch.model_validate({"flowers": [SETOSA] * settings.max_batch_flowers})
    with pytest.raises(ValidationError):
        IrisBatch.model_validate({"flowers": [SETOSA] * (settings.max_batch_flowers + 1)})
    with pytest.raises(ValidationError):
        IrisBatch.model_validate({"flowers": []})


def test_schema_examples_are_themselves_valid() -> None:
    IrisFeatures.model_validate(IrisFeatures.model_json_schema()["example"])
    IrisBatch.model_validate(IrisBatch.model_json_schema()["example"])
    Prediction.model_validate(Prediction.model_json_schema()["example"])
