"""Which model versions a Bento (and so an image) packs: explicit versions, never `latest`.

An image cannot follow the serving aliases file (it is not in the image), so it pins what it
serves when it is built: the champion named by the aliases file of the build's BentoML home
(or, before any promotion, the one version `iris-classifier:latest` resolves to, written out
as its explicit version), and the challenger when the build's IRIS_CHALLENGER_MODE uses one.
The versions go into the Bento's environment (IRIS_MODEL_TAG, IRIS_CHALLENGER_TAG,
IRIS_CHALLENGER_MODE) and labels, so the runner's `bentoml.models.BentoModel` attributes
resolve to exactly them at build time (packing them) and in the container.

Rolling back a deployment is therefore a rollout of the previous image (`kubectl rollout
undo`), or `make rollback` followed by `make container` (docs/lifecycle.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from iris_service.inference.model_aliases import read_aliases
from iris_service.names import MODEL_NAME
from iris_service.settings import CHALLENGER_MODES


@dataclass(frozen=True)
class PinnedModels:
    champion: str
    challenger: str | None
    mode: str

    def environment(self) -> dict[str, str]:
        """The variables that make the service serve exactly these versions."""
        env = {"IRIS_MODEL_TAG": self.champion, "IRIS_CHALLENGER_MODE": self.mode}
        if self.challenger:
            env["IRIS_CHALLENGER_TAG"] = self.challenger
        return env

    def labels(self) -> dict[str, str]:
        labels = {"champion": self.champion}
        if self.challenger:
            labels["challenger"] = self.challenger
        return labels


def _explicit(tag: str) -> str:
    """`tag` with `latest` resolved to the stored version it names."""
    import bentoml

    return str(bentoml.models.get(tag).tag)


def pinned_models(model_name: str = MODEL_NAME, mode: str | None = None) -> PinnedModels:
    """The versions a Bento built now should pack (see the module docstring)."""
    mode = (mode or os.environ.get("IRIS_CHALLENGER_MODE") or "none").strip().lower()
    if mode not in CHALLENGER_MODES:
        raise ValueError(f"IRIS_CHALLENGER_MODE must be one of {', '.join(CHALLENGER_MODES)}")
    aliases = read_aliases(model_name)
    challenger = aliases.challenger if aliases and mode != "none" else None
    if mode != "none" and challenger is None:
        raise ValueError(
            f"IRIS_CHALLENGER_MODE={mode} but the serving aliases name no challenger: "
            "`make train` registers one"
        )
    champion = _explicit((aliases and aliases.champion) or f"{model_name}:latest")
    return PinnedModels(champion, challenger and _explicit(challenger), mode)
