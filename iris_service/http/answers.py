"""The service's own answers (/predict, /predict_batch) built from class probabilities.

Built for all rows at once (one argmax, one rounding, one encoding of the numbers, one
counter update per class): a batch of 1,000 flowers would otherwise make 1,000 Pydantic
objects and 1,000 metric updates. The shape is exactly `schemas.Prediction` and
`schemas.BatchPrediction`, which stay the documented response models.
"""

from __future__ import annotations

import json

import msgspec
import numpy as np
from starlette.responses import Response

from iris_service.inference.model_loading import ModelVersion
from iris_service.monitoring import metrics

PROBABILITY_DIGITS = 6


def _classified(model: ModelVersion, probabilities: np.ndarray) -> tuple[list[int], list[list]]:
    """(class id per row, rounded probabilities per row), counted in the class metrics."""
    class_ids = np.argmax(probabilities, axis=1)
    counts = np.bincount(class_ids, minlength=len(model.class_names)).tolist()
    for class_id, count in enumerate(counts):
        if count:
            metrics.PREDICTIONS_TOTAL.labels(model.class_names[class_id]).inc(count)
    return class_ids.tolist(), probabilities.round(PROBABILITY_DIGITS).tolist()


def _rows_json(model: ModelVersion, probabilities: np.ndarray) -> list[str]:
    """Each row's `Prediction` as JSON text.

    The numbers are written by msgspec in one call for all rows (the shortest text that reads
    back as the same float, as json.dumps writes them); each row then fills the template of
    its class, whose constant parts are prepared once per answer: cheaper than json.dumps
    over one dict per row, with the same JSON values (docs/performance.md, "Figures moved
    from the code").
    """
    class_ids, rounded = _classified(model, probabilities)
    numbers = msgspec.json.encode(rounded).decode()[2:-2].split("],[")
    tag = json.dumps(model.tag)
    keys = [json.dumps(name) for name in model.class_names]
    values = ",".join(f"{key}:%s" for key in keys)
    templates = [
        (
            f'{{"class_id":{class_id},"class_name":{key},"probabilities":{{{values}}},'
            f'"model_tag":{tag.replace("%", "%%")}}}'
        )
        for class_id, key in enumerate(keys)
    ]
    return [
        templates[class_id] % tuple(row.split(","))
        for class_id, row in zip(class_ids, numbers, strict=True)
    ]


def prediction_response(model: ModelVersion, probabilities: np.ndarray) -> Response:
    """The /predict answer (one `Prediction`) as JSON, encoded once."""
    (row,) = _rows_json(model, probabilities)
    return Response(row.encode(), media_type="application/json")


def batch_response(model: ModelVersion, probabilities: np.ndarray) -> Response:
    """The /predict_batch answer, {"predictions": [...], "model_tag": ...}, as JSON."""
    rows = _rows_json(model, probabilities)
    body = f'{{"predictions":[{",".join(rows)}],"model_tag":{json.dumps(model.tag)}}}'
    return Response(body.encode(), media_type="application/json")
