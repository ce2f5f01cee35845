"""What the Swagger UI at / and the OpenAPI document at /docs.json say about the service.

BentoML 1.4 takes OpenAPI's `info.description` from the Bento's README (the decorator's
`description=` when the Bento is built) but, when served from source with
`bentoml serve service:IrisClassifier`, from a generic BentoML README, and reports the
version as "None". `DescribedService`, passed as `@bentoml.service(service_class=...)` (a
documented argument of the decorator), uses the service's own description and the API
version in both cases, so the page explains itself however the service runs. (BentoML's
Swagger UI hides `info.title`, hence the heading at the top of the description.)

It also makes the document and the page ours:
- /docs.json lists every route, also the Starlette routes mounted with `@bentoml.asgi_app`
  (GET /drift, /model, /live_quality, the V2 and MLflow scoring routes), which BentoML leaves
  out (iris_service/http/api_docs_paths.py); the contact is this service's, not BentoML's;
- the page at / is served by a route of ours (mounted before BentoML's own index): BentoML's
  page loads Google Tag Manager from googletagmanager.com, a tracker in the operator's
  browser and a request that fails on an offline network. Ours loads only the Swagger UI
  files BentoML bundles (/static_content/...), from the service itself, and turns off
  Swagger UI's online validator badge (another outside request).
"""

from __future__ import annotations

from typing import Any

import attrs
import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from iris_service.http.api_docs_paths import PATHS, SCHEMAS

API_VERSION = "1.0.0"

SERVICE_DESCRIPTION = """\
# Iris classifier

Classifies Iris flowers — **setosa**, **versicolor** or **virginica** — from four
measurements in centimetres (sepal length and width, petal length and width).

* `POST /predict` — one flower, e.g.
  `{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}`;
  answers the class, the probability of every class and the model's tag.
* `POST /predict_batch` — `{"flowers": [...]}`; answers in the order sent.
* `POST /explain` — one flower, as `/predict`; answers the prediction and, per class, each
  feature's exact Shapley value of the probability, with the base value (the mean
  probability over the model's background sample of training flowers); see
  docs/explanations.md.
* `GET /drift` — how far recent inputs have drifted from the training data
  (population stability index per feature; < 0.1 none, ≥ 0.25 significant);
  `GET /model` — the models in service; `GET /live_quality` — accuracy from labelled feedback.
* `GET /metrics` (Prometheus), `/livez`, `/readyz`.
* The same model over the **Open Inference Protocol V2** (`/v2/models/iris-classifier/infer`,
  JSON or binary tensors, e.g. with Triton's `tritonclient`) and **MLflow scoring**
  (`POST /invocations`, `/ping`, `/version`), as `mlflow models serve` answers; see
  docs/protocols.md.

Every error answer has the shape `{"error", "detail", "request_id"}`; the request id is also
in the `X-Request-ID` header, with the server's own id in `X-Server-Request-Id` and
`X-Latency-Ms` on each prediction. With an API key configured, every route but health,
metrics (and the docs, when opened) needs `Authorization: Bearer <key>`.
Open an endpoint below, press **Try it out**, then **Execute** to call the live service.
"""


CONTACT_NAME = "Iris classifier service team"
PAGE_TITLE = "Iris classifier — API"

# BentoML's Swagger page without its Google Tag Manager snippet and GitHub corner: only the
# Swagger UI files BentoML bundles, loaded from this service (relative URLs).
SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>{PAGE_TITLE}</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {{
        window.ui = SwaggerUIBundle({{
          url: "./docs.json",
          dom_id: "#swagger-ui",
          deepLinking: true,
          validatorUrl: null,
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          plugins: [SwaggerUIBundle.plugins.DownloadUrl],
          layout: "StandaloneLayout",
        }});
      }};
    </script>
  </body>
</html>
"""


async def swagger_page(_: Request) -> HTMLResponse:
    return HTMLResponse(SWAGGER_PAGE)


def docs_page_app() -> Starlette:
    """GET / : the Swagger UI page above (mounted before BentoML's index route)."""
    return Starlette(routes=[Route("/", swagger_page, methods=["GET"])])


def _structured(value: dict[str, Any], kind: type) -> Any:
    from bentoml._internal.utils.cattr import bentoml_cattr

    return bentoml_cattr.structure(value, kind)


class DescribedService(bentoml.Service[Any]):
    """A BentoML service whose OpenAPI document describes every route it serves, with its
    own description, API version and contact, and whose Swagger page loads nothing from
    another origin."""

    __slots__ = ()

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.mount_asgi_app(docs_page_app(), path="/", name="swagger-page")

    @property
    def doc(self) -> str:
        if self.bento is not None and self.bento.doc:
            return self.bento.doc  # a built Bento: its README, made from `description`
        return self.description or super().doc

    @property
    def openapi_spec(self) -> Any:
        from bentoml._internal.service.openapi.specification import Contact, PathItem, Schema

        spec = super().openapi_spec
        bento_version = self.bento.tag.version if self.bento is not None else None
        version = f"{API_VERSION} (bento {bento_version})" if bento_version else API_VERSION
        info = attrs.evolve(spec.info, version=version, contact=Contact(name=CONTACT_NAME))
        paths = {
            **spec.paths,
            **{path: _structured(item, PathItem) for path, item in PATHS.items()},
        }
        components = dict(spec.components or {})
        components["schemas"] = {
            **components.get("schemas", {}),
            **{name: _structured(schema, Schema) for name, schema in SCHEMAS.items()},
        }
        return attrs.evolve(spec, info=info, paths=paths, components=components)
