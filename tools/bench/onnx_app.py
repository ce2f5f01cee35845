"""FastAPI + ONNX Runtime: the plain FastAPI peer running the compiled model, no BentoML.

The same app as baseline_app.py (its schema, its answer), but the model is the model.onnx our
service serves, in ONNX Runtime with one thread, and it runs with as many uvicorn workers as
our service has API workers. Reported beside the targets: it shows what BentoML itself costs.
Run with `IRIS_BENCH_ONNX_MODEL=<model folder>/model.onnx uvicorn tools.bench.onnx_app:app`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI

from iris_service.http.schemas import IrisFeatures
from iris_service.names import CLASS_NAMES
from tools.bench.onnx_model import from_environment

app = FastAPI(title="Iris peer (FastAPI + ONNX Runtime)")

_model = from_environment()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(features: IrisFeatures) -> dict[str, Any]:
    probabilities = _model.predict_proba(np.array([features.as_row()]))[0]
    class_id = int(np.argmax(probabilities))
    return {
        "class_id": class_id,
        "class_name": CLASS_NAMES[class_id],
        "probabilities": dict(zip(CLASS_NAMES, probabilities.round(6).tolist(), strict=True)),
    }
