"""The service's own answers (/predict, /predict_batch) built from class probabilities.

Built as plain dicts for all rows at once (one argmax, one rounding, one `tolist`, one
counter update per class) and serialised once: a batch of 1,000 flowers would otherwise make
1,000 Pydantic objects and 1,000 metric updates. The shape is exactly `schemas.Prediction`
and `schemas.BatchPrediction`, which stay the documented response models.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from starlette.responses import Response

from . import metrics
from .served_models import ServedModel

PROBABILITY_DIGITS = 6


def predictions(model: ServedModel, probabilities: np.ndarray) -> list[dict[str, Any]]:
    """One `Prediction` dict per row of `probabilities`; counted in the class metrics."""
    names = model.class_names
    class_ids = np.argmax(probabilities, axis=1)
    for class_id, count in enumerate(np.bincount(class_ids, minlength=len(names)).tolist()):
        if count:
            metrics.PREDICTIONS_TOTAL.labels(names[class_id]).inc(count)
    rounded = probabilities.round(PROBABILITY_DIGITS).tolist()
    return [
        {
            "class_id": class_id,
            "class_name": names[class_id],
            "probabilities": dict(zip(names, row, strict=True)),
            "model_tag": model.tag,
        }
        for class_id, row in zip(class_ids.tolist(), rounded, strict=True)
    ]


def batch_response(model: ServedModel, probabilities: np.ndarray) -> Response:
    """The /predict_batch answer, {"predictions": [...], "model_tag": ...}, as JSON."""
    body = {"predictions": predictions(model, probabilities), "model_tag": model.tag}
    return Response(json.dumps(body, separators=(",", ":")).encode(), media_type="application/json")
