"""What the Swagger UI at / and the OpenAPI document at /docs.json say about the service.

BentoML 1.4 takes OpenAPI's `info.description` from the Bento's README (the decorator's
`description=` when the Bento is built) but, when served from source with
`bentoml serve service:IrisClassifier`, from a generic BentoML README, and reports the
version as "None". `DescribedService`, passed as `@bentoml.service(service_class=...)` (a
documented argument of the decorator), uses the service's own description and the API
version in both cases, so the page explains itself however the service runs. (BentoML's
Swagger UI hides `info.title`, hence the heading at the top of the description.)
"""

from __future__ import annotations

from typing import Any

import attrs
import bentoml

API_VERSION = "1.0.0"

SERVICE_DESCRIPTION = """\
# Iris classifier

Classifies Iris flowers — **setosa**, **versicolor** or **virginica** — from four
measurements in centimetres (sepal length and width, petal length and width).

* `POST /predict` — one flower, e.g.
  `{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}`;
  answers the class, the probability of every class and the model's tag.
* `POST /predict_batch` — `{"flowers": [...]}`; answers in the order sent.
* `GET /drift` — how far recent inputs have drifted from the training data
  (population stability index per feature; < 0.1 none, ≥ 0.25 significant).
* `GET /metrics` (Prometheus), `/livez`, `/readyz`.
* The same model over the **Open Inference Protocol V2** (`/v2/models/iris-classifier/infer`,
  JSON or binary tensors, e.g. with Triton's `tritonclient`) and **MLflow scoring**
  (`POST /invocations`, `/ping`, `/version`), as `mlflow models serve` answers; see
  docs/protocols.md (these routes are not listed below).

Every error answer has the shape `{"error", "detail", "request_id"}`; the request id is also
in the `X-Request-ID` header, with the server's own id in `X-Server-Request-Id` and
`X-Latency-Ms` on each prediction. With an API key configured, every route but health,
metrics (and the docs, when opened) needs `Authorization: Bearer <key>`.
Open an endpoint below, press **Try it out**, then **Execute** to call the live service.
"""


class DescribedService(bentoml.Service[Any]):
    """A BentoML service whose OpenAPI info is its own description and API version."""

    __slots__ = ()

    @property
    def doc(self) -> str:
        if self.bento is not None and self.bento.doc:
            return self.bento.doc  # a built Bento: its README, made from `description`
        return self.description or super().doc

    @property
    def openapi_spec(self) -> Any:
        spec = super().openapi_spec
        bento_version = self.bento.tag.version if self.bento is not None else None
        version = f"{API_VERSION} (bento {bento_version})" if bento_version else API_VERSION
        return attrs.evolve(spec, info=attrs.evolve(spec.info, version=version))
