"""Which stored model computed a runner answer, and what the API says about it.

The runner returns the fingerprint of its model beside every row (model_loading.
model_fingerprint). The API worker maps the fingerprint to the stored model (tag, class
names, training statistics) through the BentoML store it shares with the runner (the Bento's
packed models inside the container), so `model_tag`, class names, the prediction log and the
drift reference always describe the model that computed the answer, even after the runner
restarted with another version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .model_loading import check_schema, model_fingerprint

logger = logging.getLogger("iris_service.models")


@dataclass(frozen=True)
class ServedModel:
    tag: str
    class_names: tuple[str, ...]
    metadata: Mapping[str, Any]
    path: str | None = None  # the model's folder in the store


class UnknownModelError(LookupError):
    """The runner answered with a model this API worker cannot find in the store."""


def stored_models(name: str) -> Callable[[], Iterable[Any]]:
    """Lists the versions of `name` in the BentoML store (read again on every call)."""

    def list_models() -> Iterable[Any]:
        import bentoml

        return bentoml.models.list(name)

    return list_models


class ModelDirectory:
    """Fingerprint -> ServedModel; the store is read again when an unknown fingerprint comes
    (a model imported after this worker started)."""

    def __init__(self, list_models: Callable[[], Iterable[Any]]) -> None:
        self._list_models = list_models
        self._known: dict[float, ServedModel] = {}
        self.refresh()

    def refresh(self) -> None:
        for stored in self._list_models():
            tag = str(stored.tag)
            fingerprint = model_fingerprint(tag)
            if fingerprint in self._known:
                continue
            metadata = stored.info.metadata
            class_names, _ = check_schema(tag, metadata)
            path = getattr(stored, "path", None)
            self._known[fingerprint] = ServedModel(
                tag, class_names, metadata, str(path) if path is not None else None
            )

    def versions(self) -> dict[str, ServedModel]:
        """Every stored version of the model, by the version part of its tag (re-read)."""
        self.refresh()
        return {model.tag.partition(":")[2]: model for model in self._known.values()}

    def lookup(self, fingerprint: float) -> ServedModel:
        model = self._known.get(fingerprint)
        if model is None:
            self.refresh()
            model = self._known.get(fingerprint)
        if model is None:
            raise UnknownModelError(f"no stored model has the fingerprint {fingerprint:.0f}")
        return model
