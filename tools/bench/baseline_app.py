"""The plain FastAPI + uvicorn baseline: the same estimator behind a minimal app.

This is what a user would write without BentoML (the original project's stack): Pydantic
validation with the service's own schemas, `predict_proba` on a one-row array in the event
loop (the estimator was fitted on arrays in FEATURE_NAMES order, as the runner calls it), no
runner, no middleware. Its V2 route is the peer of our V2 batches: it parses the Open
Inference Protocol's JSON tensor into a numpy array (`np.asarray(data).reshape(shape)`, no
checks beyond what numpy does) and answers `predict_proba` as a V2 FP64 output. Run with
`IRIS_BASELINE_MODEL_DIR=<bento model>/mlflow_model uvicorn tools.bench.baseline_app:app`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException

from iris_service.http.schemas import IrisBatch, IrisFeatures, flower_rows
from iris_service.names import CLASS_NAMES, MODEL_NAME
from tools.bench.sklearn_model import load_sklearn_estimator

MODEL_DIR_ENV = "IRIS_BASELINE_MODEL_DIR"

app = FastAPI(title="Iris baseline (plain FastAPI)")


_estimator = load_sklearn_estimator(Path(os.environ[MODEL_DIR_ENV]))


def _prediction(probabilities: np.ndarray) -> dict[str, Any]:
    class_id = int(np.argmax(probabilities))
    return {
        "class_id": class_id,
        "class_name": CLASS_NAMES[class_id],
        "probabilities": dict(zip(CLASS_NAMES, probabilities.round(6).tolist(), strict=True)),
    }


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(features: IrisFeatures) -> dict[str, Any]:
    return _prediction(_estimator.predict_proba(np.array([features.as_row()]))[0])


@app.post("/predict_batch")
async def predict_batch(batch: IrisBatch) -> dict[str, Any]:
    rows = flower_rows(batch.flowers)
    return {"predictions": [_prediction(row) for row in _estimator.predict_proba(rows)]}


@app.post("/v2/models/{name}/infer")
async def v2_infer(name: str, request: dict[str, Any]) -> dict[str, Any]:
    if name != MODEL_NAME:
        raise HTTPException(404, f"unknown model {name!r}")
    (tensor,) = request["inputs"]
    rows = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
    probabilities = _estimator.predict_proba(rows)
    output = {
        "name": "predict_proba",
        "datatype": "FP64",
        "shape": list(probabilities.shape),
        "data": probabilities.ravel().tolist(),
    }
    return {"model_name": name, "outputs": [output]}
