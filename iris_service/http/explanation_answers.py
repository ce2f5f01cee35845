"""The POST /explain route's request and answer: its schemas (what /docs.json and the Swagger
UI show, with examples) and the encoding of the core's ExplainedAnswer.

The values are not rounded (the /predict answer rounds probabilities to 6 digits): the base
value plus the contributions of a class must give that class's probability within 1e-6,
which a client can check on the answer itself.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from iris_service.http.schemas import VERSICOLOR_EXAMPLE, IrisFeatures
from iris_service.inference.core import ExplainedAnswer
from iris_service.inference.explanations import PROBABILITY
from iris_service.names import CLASS_NAMES, FEATURE_NAMES

BACKGROUND_DESCRIPTION = (
    "a fixed sample of training flowers stored with the model version; every coalition value "
    "is the mean probability over it with the coalition's features set to the flower's"
)

EXAMPLE_ANSWER: dict[str, Any] = {
    "class_id": 1,
    "class_name": "versicolor",
    "probabilities": {"setosa": 0.0265, "versicolor": 0.8606, "virginica": 0.1129},
    "model_tag": "iris-classifier:abc123",
    "model_version": "abc123",
    "output": PROBABILITY,
    "base_value": {"setosa": 0.3313, "versicolor": 0.3384, "virginica": 0.3303},
    "contributions": {
        "setosa": {
            "sepal_length": -0.0311,
            "sepal_width": 0.0068,
            "petal_length": -0.1539,
            "petal_width": -0.1266,
        },
        "versicolor": {
            "sepal_length": 0.0115,
            "sepal_width": 0.0121,
            "petal_length": 0.2676,
            "petal_width": 0.2310,
        },
        "virginica": {
            "sepal_length": 0.0196,
            "sepal_width": -0.0189,
            "petal_length": -0.1137,
            "petal_width": -0.1044,
        },
    },
    "background": {"rows": 50, "description": BACKGROUND_DESCRIPTION},
}


class ExplainFeatures(IrisFeatures):
    """One flower to explain: four measurements in centimetres (the /predict body)."""

    model_config = ConfigDict(
        extra="forbid", title="ExplainFeatures", json_schema_extra={"example": VERSICOLOR_EXAMPLE}
    )


class Background(BaseModel):
    rows: int = Field(description="Training flowers in the background sample.")
    description: str


class ExplanationAnswer(BaseModel):
    """The class of one flower and why: exact Shapley values of each class's probability."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_ANSWER})

    class_id: int = Field(description="Index of the predicted class.")
    class_name: str = Field(description="Name of the predicted class.")
    probabilities: dict[str, float] = Field(description="Probability of each class.")
    model_tag: str = Field(description="BentoML tag of the model that answered.")
    model_version: str = Field(description="Version of the model that answered.")
    output: str = Field(description="The output space explained: probability.")
    base_value: dict[str, float] = Field(
        description="Per class, the mean probability over the background (the expected output)."
    )
    contributions: dict[str, dict[str, float]] = Field(
        description="Per class, each feature's Shapley value; base_value + their sum = the "
        "class's probability."
    )
    background: Background


def explanation_document(explained: ExplainedAnswer, row: int = 0) -> dict[str, Any]:
    """The answer for one explained flower (`row` of the explained rows), as a dict."""
    explanation = explained.explanation
    probabilities = explanation.probabilities[row].tolist()
    class_id = max(range(len(probabilities)), key=probabilities.__getitem__)
    contributions = explanation.contributions[row].tolist()  # [classes][features]
    return {
        "class_id": class_id,
        "class_name": CLASS_NAMES[class_id],
        "probabilities": dict(zip(CLASS_NAMES, probabilities, strict=True)),
        "model_tag": explained.model.tag,
        "model_version": explained.model.version,
        "output": explanation.output,
        "base_value": dict(zip(CLASS_NAMES, explanation.base_value.tolist(), strict=True)),
        "contributions": {
            name: dict(zip(FEATURE_NAMES, values, strict=True))
            for name, values in zip(CLASS_NAMES, contributions, strict=True)
        },
        "background": {"rows": explanation.background_rows, "description": BACKGROUND_DESCRIPTION},
    }


def explanation_response(explained: ExplainedAnswer) -> Response:
    """The /explain answer as compact JSON (the prediction record middleware reads its
    `"model_tag":` without spaces)."""
    body = json.dumps(explanation_document(explained), separators=(",", ":"))
    return Response(body.encode(), media_type="application/json")
