"""Request and response bodies of the public API (validated by Pydantic, shown in OpenAPI).

Examples use OpenAPI 3.0's singular `example` key: BentoML's OpenAPI generator rejects
the plural `examples` (the /docs.json page would answer 500), and Swagger UI's
"Try it out" pre-fills the body from it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Annotated, Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from iris_service.names import CLASS_NAMES, FEATURE_NAMES, UPPER_BOUNDS_CM
from iris_service.settings import settings

SETOSA_EXAMPLE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VERSICOLOR_EXAMPLE = {
    "sepal_length": 6.4,
    "sepal_width": 3.2,
    "petal_length": 4.5,
    "petal_width": 1.5,
}
VIRGINICA_EXAMPLE = {
    "sepal_length": 6.3,
    "sepal_width": 3.3,
    "petal_length": 6.0,
    "petal_width": 2.5,
}


def _centimetres(description: str, upper_bound: float) -> object:
    """A measurement in cm: a finite JSON number in (0, upper_bound]; strings are refused."""
    return Field(
        gt=0,
        le=upper_bound,
        allow_inf_nan=False,
        strict=True,
        description=f"{description}, in centimetres (0 < value <= {upper_bound}).",
        # OpenAPI 3.0 (what BentoML serves on /docs.json) spells "> 0" as a boolean
        # exclusiveMinimum next to minimum; Pydantic emits the JSON Schema 2020 number form,
        # which 3.0 validators and fuzzers reject as an invalid document.
        json_schema_extra={"minimum": 0, "exclusiveMinimum": True},
    )


SepalLength = Annotated[float, _centimetres("Sepal length", UPPER_BOUNDS_CM["sepal_length"])]
SepalWidth = Annotated[float, _centimetres("Sepal width", UPPER_BOUNDS_CM["sepal_width"])]
PetalLength = Annotated[float, _centimetres("Petal length", UPPER_BOUNDS_CM["petal_length"])]
PetalWidth = Annotated[float, _centimetres("Petal width", UPPER_BOUNDS_CM["petal_width"])]


class IrisFeatures(BaseModel):
    """One flower: four measurements in centimetres."""

    model_config = ConfigDict(
        extra="forbid",
        title="IrisFeatures",
        json_schema_extra={"example": SETOSA_EXAMPLE},
    )

    sepal_length: SepalLength
    sepal_width: SepalWidth
    petal_length: PetalLength
    petal_width: PetalWidth

    def as_row(self) -> list[float]:
        return [self.sepal_length, self.sepal_width, self.petal_length, self.petal_width]


class IrisFlower(TypedDict):
    """One flower of a batch: the fields and rules of IrisFeatures, validated as a dict.

    Pydantic checks a TypedDict without creating an object per flower, so a large batch
    validates faster than as IrisFeatures, with the same errors (docs/performance.md,
    "Figures moved from the code").
    """

    __pydantic_config__ = ConfigDict(  # type: ignore[misc]
        extra="forbid", title="IrisFlower", json_schema_extra={"example": SETOSA_EXAMPLE}
    )

    sepal_length: SepalLength
    sepal_width: SepalWidth
    petal_length: PetalLength
    petal_width: PetalWidth


_MEASUREMENTS = itemgetter(*FEATURE_NAMES)


def flower_rows(flowers: list[IrisFlower]) -> np.ndarray:
    """The flowers of a validated batch as a float64 array [N, 4], in FEATURE_NAMES order
    (already one when the fast path of `IrisBatch.model_validate_json` read them)."""
    rows = getattr(flowers, "rows", None)
    if isinstance(rows, np.ndarray):
        return rows
    return np.array(list(map(_MEASUREMENTS, flowers)), dtype=np.float64)


class IrisBatch(BaseModel):
    """Several flowers classified in one call."""

    model_config = ConfigDict(
        extra="forbid",
        title="IrisBatch",
        json_schema_extra={"example": {"flowers": [SETOSA_EXAMPLE, VIRGINICA_EXAMPLE]}},
    )

    flowers: list[IrisFlower] = Field(
        min_length=1,
        max_length=settings.max_batch_flowers,
        description=f"Between 1 and {settings.max_batch_flowers} flowers.",
    )

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        """What BentoML calls with a /predict_batch body: a valid body is read by the fast
        path (iris_service/http/batch_bodies.py: msgspec, then the array rules), anything else by
        Pydantic, which words the refusal."""
        from iris_service.http.batch_bodies import fast_flowers  # it reads this module's bounds

        flowers = fast_flowers(json_data) if not options else None
        if flowers is None:
            return super().model_validate_json(json_data, **options)
        return cls.model_construct(flowers=flowers)


class Prediction(BaseModel):
    """The class of one flower, with the probability of every class."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "class_id": 0,
                "class_name": "setosa",
                "probabilities": {"setosa": 0.98, "versicolor": 0.02, "virginica": 0.0},
                "model_tag": "iris-classifier:abc123",
            }
        }
    )

    class_id: int = Field(description="Index of the predicted class.")
    class_name: str = Field(description="Name of the predicted class.")
    probabilities: dict[str, float] = Field(description="Probability of each class.")
    model_tag: str = Field(description="BentoML tag of the model that answered.")


class BatchPrediction(BaseModel):
    """Predictions in the order of the flowers sent."""

    predictions: list[Prediction]
    model_tag: str


ClassName = Literal[CLASS_NAMES]  # type: ignore[valid-type]
RequestIdText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=80,
        description="The prediction's X-Server-Request-Id, or the X-Request-ID you sent with "
        "it (with the same API key); <request id>/<index> for a flower of a /predict_batch "
        "answer (0-based).",
    ),
]


LABEL_EXAMPLE = {"request_id": "4f0c9d1e2b3a4c5d", "class_name": "versicolor"}


class FeedbackLabel(BaseModel):
    """The true class of one predicted flower."""

    model_config = ConfigDict(
        extra="forbid",
        title="FeedbackLabel",
        json_schema_extra={"example": LABEL_EXAMPLE},
    )

    request_id: RequestIdText
    class_name: ClassName = Field(description="The true class of the flower.")


class FeedbackRequest(BaseModel):
    """One label (`request_id`, `class_name`) or several (`feedback`), not both."""

    model_config = ConfigDict(
        extra="forbid",
        title="FeedbackRequest",
        json_schema_extra={"example": LABEL_EXAMPLE},
    )

    request_id: RequestIdText | None = None
    class_name: ClassName | None = Field(default=None, description="The true class.")
    feedback: list[FeedbackLabel] | None = Field(
        default=None,
        min_length=1,
        max_length=settings.max_feedback_labels,
        description=f"Between 1 and {settings.max_feedback_labels} labels.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        single = self.request_id is not None or self.class_name is not None
        if self.feedback is not None and single:
            raise ValueError("send either request_id and class_name, or feedback, not both")
        if self.feedback is None and (self.request_id is None or self.class_name is None):
            raise ValueError("send request_id and class_name, or feedback: [...]")
        return self

    def labels(self) -> list[tuple[str, str]]:
        if self.feedback is not None:
            return [(item.request_id, item.class_name) for item in self.feedback]
        assert self.request_id is not None and self.class_name is not None
        return [(self.request_id, self.class_name)]


class AcceptedLabel(BaseModel):
    request_id: str = Field(description="As sent.")
    class_name: str = Field(description="The true class.")
    predicted: str = Field(description="The class the service answered.")
    correct: bool
    model_tag: str = Field(description="The model that made the prediction.")


class FeedbackAnswer(BaseModel):
    """The labels recorded, joined with the predictions they name."""

    accepted: int
    labels: list[AcceptedLabel]
