"""The inference core: one object behind every transport (the BentoML routes, V2, MLflow).

Like MLServer's DataPlane, routes only decode, call `InferenceCore.infer`, and encode. The
core owns:
- the models in service (champion, challenger), loaded in this process from their compiled
  (ONNX) form and kept in line with the serving aliases by this process's own follower;
- routing: in canary mode a seeded share of requests is answered by the challenger; in shadow
  mode the champion answers and the challenger predicts the same flowers later, in batches,
  off the answer's path (ShadowComparer);
- where an answer is computed: here, in the API worker, unless the request's rows cost more
  than the hop to the runner (`runner_min_rows`), whose adaptive batching then merges them
  with other large requests; a runner that fails or is silent costs no answer (the rows are
  computed here, in a thread);
- the identity of the model that computed each answer (`Answer.model`, data, not a column);
- explanations: exact Shapley values of the routed model's answer (`explain`, maths in
  iris_service/inference/explanations.py), the one function every transport's explain calls;
- what observes answers: the drift monitor of the answering model, fed in batches of
  DRIFT_BATCH_ROWS flowers (one vectorised update instead of one per request; GET /drift
  counts what is still waiting first).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from bentoml.exceptions import NotFound as NotInStore
from bentoml.exceptions import ServiceUnavailable

from iris_service.errors import BadRequest, Conflict, Unavailable
from iris_service.inference import explanations
from iris_service.inference.explanations import Explanation
from iris_service.inference.model_follower import (
    CHALLENGER,
    CHAMPION,
    ChampionAndChallenger,
    ModelFollower,
)
from iris_service.inference.model_loading import CompiledModel, ModelVersion, model_version
from iris_service.monitoring import metrics
from iris_service.monitoring.drift import DriftMonitor, publish_to_prometheus
from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.settings import settings

logger = logging.getLogger("iris_service.inference.core")

# (role, rows) -> [{"tag", "probabilities"}]: the runner's answer for one request.
RunnerCall = Callable[[str, np.ndarray], Awaitable[dict[str, Any]]]
API_WORKER, RUNNER = "api_worker", "runner"
RUNNER_TIER_DOWN = "the model runner tier does not answer; retry shortly"
# Flowers gathered per model before they are counted in its drift window.
DRIFT_BATCH_ROWS = 64


@dataclass(frozen=True)
class Answer:
    """The class probabilities of some rows and the model version that computed them."""

    model: ModelVersion
    role: str  # champion or challenger
    probabilities: np.ndarray  # float64, [rows, classes]
    computed_in: str  # api_worker or runner


class ModelNotServed(Unavailable, LookupError):
    """A version was asked for that this service does not serve now (503)."""


class NoExplanation(Conflict, LookupError):
    """The model that would answer was stored without an explanation background (409)."""

    code = "explanation_unavailable"


class TooManyToExplain(BadRequest, ValueError):
    """More rows were sent to explain than one request may hold (400)."""


@dataclass(frozen=True)
class ExplainedAnswer:
    """The Shapley explanation of some rows and the model version that computed it."""

    model: ModelVersion
    role: str  # champion or challenger
    explanation: Explanation


class RunnerUnavailable(ModelNotServed, ServiceUnavailable):
    """Work that needs the runner tier while no runner replica answers (`runner_required`):
    503 with Retry-After on every route. Also BentoML's ServiceUnavailable, so that BentoML
    answers 503 too should it ever reach BentoML's own error handling."""


def runner_min_rows(model: CompiledModel, hop_seconds: float, largest: int) -> int:
    """The fewest rows worth sending to the runner: where computing them here would cost more
    than the hop (above `largest`: never)."""
    if model.seconds_per_row <= 0:
        return largest + 1
    return max(2, math.ceil(round(hop_seconds / model.seconds_per_row, 6)))


class ShadowComparer:
    """The challenger's shadow predictions, batched off the answers' path.

    Each champion answer in shadow mode leaves its rows and classes here; at most
    `max_rows` wait (more are dropped and counted: memory stays bounded whatever the load);
    `delay_s` after the first, the challenger predicts them all in one call and agreement is
    counted per flower (iris_shadow_predictions_total, iris_shadow_confusion_total).
    """

    def __init__(self, max_rows: int, delay_s: float = 0.05) -> None:
        self.max_rows = max_rows
        self.delay_s = delay_s
        self._rows: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._waiting = 0
        self._scheduled = False

    def add(
        self, rows: np.ndarray, champion_classes: np.ndarray, models: ChampionAndChallenger
    ) -> None:
        if models.challenger is None:
            metrics.SHADOW_SKIPPED_TOTAL.labels("no_challenger").inc(len(rows))
            return
        if self._waiting + len(rows) > self.max_rows:
            metrics.SHADOW_SKIPPED_TOTAL.labels("saturated").inc(len(rows))
            return
        self._rows.append(rows)
        self._classes.append(champion_classes)
        self._waiting += len(rows)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.delay_s, self.flush, models.challenger)

    def flush(self, challenger: CompiledModel) -> None:
        rows, classes = self._rows, self._classes
        self._rows, self._classes, self._waiting, self._scheduled = [], [], 0, False
        if not rows:
            return
        features = np.concatenate(rows)
        try:
            predicted = np.argmax(challenger.predict_proba(features), axis=1)
        except Exception as exc:  # noqa: BLE001 - a shadow failure never reaches a client
            metrics.SHADOW_SKIPPED_TOTAL.labels("failed").inc(len(features))
            logger.warning("shadow predictions failed: %s", type(exc).__name__)
            return
        count_shadow(np.concatenate(classes), predicted)


def count_shadow(champion_classes: np.ndarray, challenger_classes: np.ndarray) -> None:
    """Agreement and the confusion between the two models' classes, per flower."""
    pairs, counts = np.unique(
        np.stack([champion_classes, challenger_classes], axis=1), axis=0, return_counts=True
    )
    for (champion, challenger), count in zip(pairs.tolist(), counts.tolist(), strict=True):
        agreement = "agree" if champion == challenger else "disagree"
        metrics.SHADOW_PREDICTIONS_TOTAL.labels(agreement).inc(count)
        metrics.SHADOW_CONFUSION_TOTAL.labels(CLASS_NAMES[champion], CLASS_NAMES[challenger]).inc(
            count
        )


def _spells_a_stored_version(version: str) -> bool:
    """Whether `version` is spelled as BentoML stores a version (its own tag rule, lower
    case; "latest" names no version): anything else is no stored version, and is answered
    without touching the store."""
    from bentoml._internal.tag import validate_tag_str

    try:
        validate_tag_str(version)
    except ValueError:
        return False
    return version != "latest"


def _stored_model(tag: str) -> ModelVersion:
    import bentoml

    return model_version(bentoml.models.get(tag))


def _stored_models(name: str) -> dict[str, ModelVersion]:
    import bentoml

    return {str(m.tag.version): model_version(m) for m in bentoml.models.list(name)}


def _model_store_folder() -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.model_store_dir.get())


# A listing is kept only once the model's store folder has not changed for this long: a
# folder's modification time ticks coarsely, so a version added in the tick of a listing
# could otherwise leave it stale.
_SETTLED_NS = 1_000_000_000


class _PendingRows:
    """Flowers waiting to be counted by a drift monitor in one call (per DRIFT_BATCH_ROWS)."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self.count = 0

    def add(self, rows: np.ndarray) -> int:
        """Keep `rows`; the number of flowers now waiting."""
        self._rows.append(rows)
        self.count += len(rows)
        return self.count

    def flush_into(self, monitor: DriftMonitor) -> None:
        if self._rows:
            monitor.observe_many(np.concatenate(self._rows))
            self._rows.clear()
            self.count = 0


class InferenceCore:
    """Answers rows of measurements with class probabilities and the model that computed
    them; see the module's docstring."""

    def __init__(
        self,
        follower: ModelFollower,
        mode: str = "none",
        canary_share: float = 0.0,
        seed: int = 1,
        runner: RunnerCall | None = None,
        runner_usable: Callable[[], bool] = lambda: True,
        runner_hop_seconds: float = 0.002,
        runner_rows: int | None = None,
        largest_request_rows: int = 1000,
        shadow_max_rows: int = 4096,
        stored: Callable[[str], ModelVersion] | None = None,
        listed: Callable[[str], dict[str, ModelVersion]] = _stored_models,
        store_folder: str | None = None,
        max_explain_rows: int = settings.max_explain_flowers,
        runner_required: bool = False,
    ) -> None:
        self.follower = follower
        self.mode = mode
        self.canary_share = canary_share
        self._rng = random.Random(seed)
        self._runner = runner
        self._runner_usable = runner_usable
        self._hop_seconds = runner_hop_seconds
        self._runner_rows = runner_rows
        self._largest = largest_request_rows
        self.shadow = ShadowComparer(shadow_max_rows)
        self._drift_monitors: dict[str, DriftMonitor] = {}
        self._drift_waiting: dict[str, _PendingRows] = {}
        self._stored: dict[str, ModelVersion] = {}
        self._read_stored = stored or _stored_model
        self._list_stored = listed
        self._store_folder = store_folder
        self._listing: tuple[int, dict[str, ModelVersion]] | None = None
        self._drift = self._drift_monitor(follower.models.champion)
        self._runner_failed_at = -math.inf
        self.max_explain_rows = max_explain_rows
        # The runner is another tier (docs/deployment.md): the rows it should compute are not
        # computed here when it fails (an API pod is sized for cheap work), but refused.
        self._runner_required = runner_required

    @property
    def models(self) -> ChampionAndChallenger:
        return self.follower.models

    def ready(self) -> bool:
        return self.follower.models is not None

    def runner_min_rows(self, model: CompiledModel) -> int:
        """Requests of at least this many rows are computed by the runner."""
        if self._runner_rows is not None:
            return self._runner_rows
        return runner_min_rows(model, self._hop_seconds, self._largest)

    async def infer(self, rows: np.ndarray, version: str | None = None) -> Answer:
        """The answer for `rows` (float64, [rows, features]) from the model routed to, or from
        the served `version` when one is named (ModelNotServed when it is not served now)."""
        models = self.follower.models  # read once: one model answers the whole request
        role, model = self._route(models, version)
        answer = await self._compute(role, model, rows)
        metrics.INFERENCES_TOTAL.labels(answer.computed_in).inc()
        metrics.ROUTED_REQUESTS_TOTAL.labels(role).inc()
        self._observe_drift(answer.model, rows)
        if self.mode == "shadow" and role == CHAMPION:
            self.shadow.add(rows, np.argmax(answer.probabilities, axis=1), models)
        return answer

    def _route(
        self, models: ChampionAndChallenger, version: str | None
    ) -> tuple[str, CompiledModel]:
        """(role, model) that answers a request: the served `version` when one is named, else
        the champion, or in canary mode the challenger for a seeded share of requests."""
        if version is not None:
            model = self.served(version, models)
            return (CHAMPION if model is models.champion else CHALLENGER), model
        if (
            self.mode == "canary"
            and models.challenger is not None
            and self._rng.random() < self.canary_share
        ):
            return CHALLENGER, models.challenger
        return CHAMPION, models.champion

    async def explain(self, rows: np.ndarray, version: str | None = None) -> ExplainedAnswer:
        """The Shapley explanation of `rows` (at most `max_explain_rows`) by the model routed
        to, as `infer` routes; computed in a thread (16 coalitions times the background: 800
        model rows per flower), never by the runner, and not counted in drift (the flowers
        asked about are not traffic). TooManyToExplain, NoExplanation (the model was stored
        without a background) or ModelNotServed otherwise."""
        if len(rows) > self.max_explain_rows:
            raise TooManyToExplain(
                f"at most {self.max_explain_rows} flowers can be explained in one request, "
                f"got {len(rows)}"
            )
        role, model = self._route(self.follower.models, version)
        if model.background is None:
            raise NoExplanation(
                f"model {model.tag} was stored without an explanation background (trained "
                "before explanations); retrain it with `make train` to explain its answers"
            )
        explanation = await asyncio.to_thread(
            explanations.explain, model.predict_proba, rows, model.background
        )
        metrics.EXPLAINED_FLOWERS_TOTAL.inc(len(rows))
        return ExplainedAnswer(model, role, explanation)

    async def _compute(self, role: str, model: CompiledModel, rows: np.ndarray) -> Answer:
        if (
            self._runner_required
            and self._runner is not None
            and len(rows) >= self.runner_min_rows(model)
        ):
            return await self._from_runner_tier(role, model, rows)
        if (
            self._runner is not None
            and len(rows) >= self.runner_min_rows(model)
            and self._runner_usable()
        ):
            try:
                answer = await self._runner(role, rows)
            except Exception as exc:  # noqa: BLE001 - computed here instead, logged once a while
                self._runner_failed(exc)
            else:
                if answer["tag"] is not None:
                    return Answer(self.model(answer["tag"]), role, answer["probabilities"], RUNNER)
            # The runner failed, or holds no such model now: computed here, off the loop.
            probabilities = await asyncio.to_thread(model.predict_proba, rows)
            return Answer(model, role, probabilities, API_WORKER)
        return Answer(model, role, model.predict_proba(rows), API_WORKER)

    async def _from_runner_tier(self, role: str, model: CompiledModel, rows: np.ndarray) -> Answer:
        """The runner tier's answer, or RunnerUnavailable when it is silent or the call
        failed (after the runner client's retry)."""
        if not self._runner_usable():
            raise RunnerUnavailable(RUNNER_TIER_DOWN)
        assert self._runner is not None
        try:
            answer = await self._runner(role, rows)
        except Exception as exc:  # noqa: BLE001 - refused with 503, logged once a while
            self._runner_failed(exc)
            raise RunnerUnavailable(RUNNER_TIER_DOWN) from None
        if answer["tag"] is None:  # the runner holds no such model now: cheap, computed here
            probabilities = await asyncio.to_thread(model.predict_proba, rows)
            return Answer(model, role, probabilities, API_WORKER)
        return Answer(self.model(answer["tag"]), role, answer["probabilities"], RUNNER)

    def _runner_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._runner_failed_at > 10:
            then = "answering 503" if self._runner_required else "computing in the API worker"
            logger.warning("runner call failed (%s): %s", type(exc).__name__, then)
        self._runner_failed_at = now

    def model(self, tag: str) -> ModelVersion:
        """The version `tag`: a model in service, else read from the store (once)."""
        for loaded in self.follower.models.roles_models():
            if loaded is not None and loaded.tag == tag:
                return loaded
        found = self._stored.get(tag)
        if found is None:
            found = self._stored[tag] = self._read_stored(tag)
        return found

    def version(self, version: str) -> ModelVersion | None:
        """The stored version `version` of the served model, or None. A version in service is
        answered from memory; another is looked up by its tag (a missing one costs a folder
        lookup) and kept while its folder exists. Never a listing of the store: `versions()`
        reads every version's metadata (tens of ms each), which any client naming a version
        in a path would otherwise cost the worker's event loop per request."""
        for loaded in self.follower.models.roles_models():
            if loaded is not None and loaded.version == version:
                return loaded
        if not _spells_a_stored_version(version):
            return None
        tag = f"{self.follower.model_name}:{version}"
        found = self._stored.get(tag)
        if found is not None and (found.path is None or os.path.isdir(found.path)):
            return found
        self._stored.pop(tag, None)
        try:
            found = self._read_stored(tag)
        except (LookupError, NotInStore):
            return None
        if found.tag != tag:
            return None
        self._stored[tag] = found
        return found

    def versions(self) -> dict[str, ModelVersion]:
        """Every stored version of the served model, by version. Listing the store reads
        every version's metadata (tens of ms each), so the listing is kept while the model's
        folder in the store is unchanged (a version added or deleted changes its modification
        time): a metadata request, which any client may send, costs one stat."""
        name = self.follower.model_name
        folder = os.path.join(self._store_folder or _model_store_folder(), name)
        try:
            stamp = os.stat(folder).st_mtime_ns
        except OSError:
            return self._list_stored(name)
        if self._listing is not None and self._listing[0] == stamp:
            return self._listing[1]
        listing = self._list_stored(name)
        settled = time.time_ns() - stamp > _SETTLED_NS
        self._listing = (stamp, listing) if settled else None
        return listing

    def served(self, version: str, models: ChampionAndChallenger | None = None) -> CompiledModel:
        """The model in service with this version (ModelNotServed: stored but not served)."""
        models = models or self.follower.models
        for model in models.roles_models():
            if model is not None and model.version == version:
                return model
        raise ModelNotServed(
            f"version {version} is stored but not served now; the served version is "
            f"{models.champion.version}"
        )

    def status(self) -> dict[str, Any]:
        """The models in service, for GET /model."""
        models = self.follower.models
        aliases = self.follower.aliases
        return {
            "champion": models.champion.tag,
            "challenger": models.challenger.tag if models.challenger else None,
            "mode": self.mode,
            "canary_share": self.canary_share if self.mode == "canary" else None,
            "aliases_updated_at": aliases.updated_at if aliases else None,
            "last_refusal": self.follower.refusal,  # no paths, no exception text
        }

    @property
    def drift(self) -> DriftMonitor:
        """The drift monitor of the model that answered last, with every flower counted."""
        for tag, waiting in self._drift_waiting.items():
            waiting.flush_into(self._drift_monitors[tag])
        return self._drift

    def _observe_drift(self, model: ModelVersion, rows: np.ndarray) -> None:
        monitor = self._drift_monitor(model)
        waiting = self._drift_waiting.setdefault(model.tag, _PendingRows())
        if waiting.add(rows) >= DRIFT_BATCH_ROWS:
            waiting.flush_into(monitor)

    def _drift_monitor(self, model: ModelVersion) -> DriftMonitor:
        """The drift monitor against `model`'s training statistics; it also becomes the one
        that GET /drift reports."""
        monitor = self._drift_monitors.get(model.tag)
        if monitor is None:
            monitor = DriftMonitor.from_model_metadata(
                model.metadata,
                FEATURE_NAMES,
                window=settings.drift_window_flowers,
                min_flowers=settings.drift_min_flowers,
                publish=publish_to_prometheus,
            )
            self._drift_monitors[model.tag] = monitor
        self._drift = monitor
        return monitor
