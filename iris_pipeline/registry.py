"""The MLflow model registry as the source of truth for which version serves, and its mirror.

Aliases on the versions of the registered model (`models:/iris-classifier@champion`):

- `champion`: the version the service answers with;
- `challenger`: the newest trained version waiting for `make promote`;
- `previous-champion`: the version `make rollback` would bring back.

The registered model's tag `champion_history` (a JSON list of versions, the current champion
last) keeps every promotion in order: a promotion appends, a rollback removes the last, so
rolling back twice goes back two champions. Each version carries the tag `bentoml_tag` (its
model in the BentoML store) and `model_family`. After every change the aliases are mirrored,
as BentoML tags, into the serving aliases file that the runner watches
(iris_service.inference.model_aliases).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from iris_pipeline import tracking
from iris_service.inference.model_aliases import ServingAliases, write_aliases

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS_CHAMPION = "champion", "challenger", "previous-champion"
HISTORY_TAG = "champion_history"
BENTOML_TAG = "bentoml_tag"


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, with what `make models` prints about it."""

    version: str
    bentoml_tag: str | None
    family: str
    aliases: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def client() -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking.tracking_uri())


def alias_version(name: str, alias: str) -> str | None:
    """The version behind `alias`, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_history(name: str) -> list[str]:
    from mlflow.exceptions import MlflowException

    try:
        raw = client().get_registered_model(name).tags.get(HISTORY_TAG)
    except MlflowException:
        return []
    return [str(version) for version in json.loads(raw)] if raw else []


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    mlflow_client = client()
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)


def bentoml_tag(name: str, version: str) -> str | None:
    """The BentoML tag of a registered version (recorded at training)."""
    return client().get_model_version(name, version).tags.get(BENTOML_TAG)


def in_bentoml_store(tag: str | None) -> bool:
    return tag is not None and tracking.model_in_store(tag)


def _set_or_delete_alias(name: str, alias: str, version: str | None) -> None:
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    if version is not None:
        mlflow_client.set_registered_model_alias(name, alias, version)
        return
    with contextlib.suppress(MlflowException):  # it was not set
        mlflow_client.delete_registered_model_alias(name, alias)


def set_champions(name: str, history: list[str]) -> None:
    """Make history[-1] champion and history[-2] previous champion, keeping the history."""
    client().set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    _set_or_delete_alias(name, CHAMPION, history[-1] if history else None)
    _set_or_delete_alias(name, PREVIOUS_CHAMPION, history[-2] if len(history) > 1 else None)


def set_challenger(name: str, version: str | None) -> None:
    _set_or_delete_alias(name, CHALLENGER, version)


def mirror_aliases(name: str) -> ServingAliases:
    """Write the registry's champion and challenger, as BentoML tags, to the aliases file."""
    champion, challenger = alias_version(name, CHAMPION), alias_version(name, CHALLENGER)
    aliases = ServingAliases(
        champion=bentoml_tag(name, champion) if champion else None,
        challenger=bentoml_tag(name, challenger) if challenger else None,
    )
    write_aliases(name, aliases)
    return aliases


def enter_new_version(name: str, version: str, bento_tag: str) -> str:
    """A freshly trained version becomes `challenger`, or `champion` when the registry has no
    champion yet. An existing champion is never replaced here, not even when its model is
    missing from the BentoML store (train.py restores it, iris_pipeline/restore.py): only
    `make promote` replaces it, through the quality gate. Returns the role."""
    tag_version(name, version, {BENTOML_TAG: bento_tag})
    if alias_version(name, CHAMPION) is not None:
        set_challenger(name, version)
        role = CHALLENGER
    else:
        set_champions(name, [*champion_history(name), version])
        role = CHAMPION
    mirror_aliases(name)
    return role


def serving_champion(name: str) -> str | None:
    """The champion's BentoML tag when the champion's model is in the store, else None."""
    champion = alias_version(name, CHAMPION)
    tag = bentoml_tag(name, champion) if champion else None
    return tag if in_bentoml_store(tag) else None


def list_versions(name: str) -> list[VersionInfo]:
    """Every registered version, newest first, with its training run's metrics."""
    mlflow_client = client()
    versions = mlflow_client.search_model_versions(f"name = '{name}'")
    infos = []
    for found in sorted(versions, key=lambda v: int(v.version), reverse=True):
        # a search result does not carry the aliases; the version itself does
        item = mlflow_client.get_model_version(name, found.version)
        metrics = mlflow_client.get_run(item.run_id).data.metrics if item.run_id else {}
        infos.append(
            VersionInfo(
                version=str(item.version),
                bentoml_tag=item.tags.get(BENTOML_TAG),
                family=item.tags.get("model_family", "?"),
                aliases=tuple(sorted(item.aliases)),
                metrics=dict(metrics),
                tags=dict(item.tags),
            )
        )
    return infos


def actor() -> str:
    """Who ran a lifecycle command (recorded with it)."""
    try:
        return os.environ.get("IRIS_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_action(
    name: str,
    action: str,
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> str:
    """One MLflow run in the experiment `<name>-lifecycle` per promote or rollback: who, when,
    which versions, the gate's figures and thresholds, and the verdict. Returns the run id."""
    import mlflow

    experiment_id = tracking.ensure_experiment(f"{name}-lifecycle")
    with mlflow.start_run(experiment_id=experiment_id, run_name=action) as run:
        mlflow.set_tags({"action": action, "by": actor(), "at": now(), **tags})
        if params:
            mlflow.log_params(params)
        if metrics:
            mlflow.log_metrics(metrics)
        return run.info.run_id
