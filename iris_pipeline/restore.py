"""Bring the champion's model back into the BentoML store from the MLflow registry.

The registry is the source of truth for which version serves; the BentoML store is a copy
of the models that can be lost (a wiped `state/bentoml`, a new machine, CI) while the
registry stays. A champion whose model is missing is restored under its recorded BentoML tag
(so the serving aliases stay valid), never replaced by a newer version without the gate.
"""

from __future__ import annotations

from iris_pipeline import registry, tracking


class RestoreError(RuntimeError):
    """The champion's model could not be restored (no run, no artifacts, no tag)."""


def restore_version(name: str, version: str) -> str:
    """Import registry version `version` into the BentoML store under its recorded tag;
    returns that tag. Nothing happens when it is already there."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client = registry.client()
    try:
        found = mlflow_client.get_model_version(name, version)
        tag = found.tags.get(registry.BENTOML_TAG)
        if not tag:
            raise RestoreError(f"version {version} has no {registry.BENTOML_TAG} tag")
        if registry.in_bentoml_store(tag):
            return tag
        run = mlflow_client.get_run(found.run_id)
        stats = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/feature_statistics.json")
        experiment = mlflow_client.get_experiment(run.info.experiment_id).name
    except MlflowException as exc:
        raise RestoreError(f"version {version}: {exc}") from exc
    metrics = dict(run.data.metrics)
    try:
        tracking.import_run_model(
            found.run_id,
            found.tags.get("model_family", run.data.tags.get("model_family", "?")),
            metrics,
            stats,
            str(version),
            experiment,
            tag,
            metrics.get("gate_macro_f1"),
        )
    except (MlflowException, ValueError, RuntimeError, OSError) as exc:
        # No equivalent ONNX model logged, or its file differs from the one checked.
        raise RestoreError(f"version {version}: {exc}") from exc
    return tag


def restore_champion(name: str) -> str | None:
    """The champion's BentoML tag after restoring its model if it was missing; None when the
    registry has no champion. Raises RestoreError when it is missing and cannot be restored."""
    champion = registry.alias_version(name, registry.CHAMPION)
    if champion is None:
        return None
    return restore_version(name, champion)
