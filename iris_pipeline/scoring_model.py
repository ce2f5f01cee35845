"""Which registered version a batch job scores with, and whether its pyfunc gives what the
job needs.

The job accepts what the serving aliases accept: an alias (`champion`), a version number,
or a full `models:/name@alias` / `models:/name/version` URI. The alias is resolved once, at
the start: the job then scores with `models:/name/<version>`, so a promotion during the job
cannot mix two models in one output, and every row carries the version that scored it.

The registered versions log the scikit-learn flavour with `pyfunc_predict_fn="predict_proba"`
(iris_pipeline/tracking.py), so the version's own pyfunc, what `mlflow.pyfunc.spark_udf`
calls, returns one probability per class: the job reads the class from them the way the
service does (the first largest probability). A version whose pyfunc answers anything else is
refused before Spark starts, rather than scored wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iris_pipeline import registry
from iris_pipeline.scoring_io import ScoringError
from iris_service.names import CLASS_NAMES, MODEL_NAME

DEFAULT_MODEL = f"models:/{MODEL_NAME}@{registry.CHAMPION}"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
PREDICT_FN = "predict_proba"


@dataclass(frozen=True)
class ModelVersion:
    asked: str  # as given, e.g. models:/iris-classifier@champion
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model(spec: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of MODEL: an alias, a version number or a models:/ URI."""
    spec = spec.strip()
    if spec.startswith("models:/"):
        match = _URI.match(spec)
        if not match:
            raise ScoringError(f"model {spec!r}: use models:/NAME@ALIAS or models:/NAME/VERSION")
        return match["name"], match["alias"], match["version"]
    if spec.isdigit():
        return MODEL_NAME, None, spec
    if not spec or "/" in spec:
        raise ScoringError(f"model {spec!r}: give an alias, a version number or a models:/ URI")
    return MODEL_NAME, spec, None


def resolve_model(spec: str) -> ModelVersion:
    """The registered version behind MODEL; fails in one line when there is none."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model(spec)
    if alias is not None:
        version = registry.alias_version(name, alias)
        if version is None:
            raise ScoringError(
                f"model {spec}: the registry has no alias {alias!r} on {name!r} (see `make models`)"
            )
    assert version is not None
    try:
        registry.client().get_model_version(name, version)
    except MlflowException:
        raise ScoringError(f"model {spec}: {name!r} has no version {version}") from None
    return ModelVersion(spec, name, version)


def check_pyfunc(model: ModelVersion) -> None:
    """The version's pyfunc must answer predict_proba with one column per class."""
    from mlflow.models import get_model_info

    info = get_model_info(model.uri)
    predict_fn = info.flavors.get("python_function", {}).get("predict_fn", "predict")
    if predict_fn != PREDICT_FN:
        raise ScoringError(
            f"model {model.asked} (version {model.version}): its pyfunc answers {predict_fn}, "
            f"not {PREDICT_FN}; log it with pyfunc_predict_fn={PREDICT_FN!r}"
        )
    outputs = info.signature.outputs if info.signature is not None else None
    shape = getattr(outputs.inputs[0], "shape", None) if outputs is not None else None
    if shape is not None and shape[-1] != len(CLASS_NAMES):
        raise ScoringError(
            f"model {model.asked} (version {model.version}) answers {shape[-1]} probabilities, "
            f"the service's classes are {len(CLASS_NAMES)}"
        )
