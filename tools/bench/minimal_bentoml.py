"""The minimal BentoML service the benchmark compares ours with: what BentoML itself costs.

Written as BentoML's quickstarts write a service: the model (the same model.onnx our service
serves, in ONNX Runtime with one thread) loaded in `__init__`, one `@bentoml.api` async route
/predict taking the same flat JSON body as ours (validated by the same schema), no runner, no
middleware, no prediction log, drift or live quality. Its runtime configuration (workers,
access log, metrics, tracing) is ours, written by tools/bench/servers.py, so the difference
between the two is what our features cost on top of BentoML. Served with
`IRIS_BENCH_ONNX_MODEL=<model folder>/model.onnx bentoml serve
tools.bench.minimal_bentoml:MinimalIris`.
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np

from iris_service.http.schemas import IrisFeatures
from iris_service.names import CLASS_NAMES
from tools.bench.onnx_model import from_environment


@bentoml.service
class MinimalIris:
    def __init__(self) -> None:
        self.model = from_environment()

    @bentoml.api(input_spec=IrisFeatures)
    async def predict(self, **features: float) -> dict[str, Any]:
        row = np.array([[features[name] for name in IrisFeatures.model_fields]])
        probabilities = self.model.predict_proba(row)[0]
        class_id = int(np.argmax(probabilities))
        return {
            "class_id": class_id,
            "class_name": CLASS_NAMES[class_id],
            "probabilities": dict(zip(CLASS_NAMES, probabilities.round(6).tolist(), strict=True)),
        }
