"""Every process that holds a model follows the serving aliases, switched without a restart.

The pipeline names the champion (and the challenger) in the aliases file (model_aliases.py).
Each API worker and each runner worker looks at the file's
identity (mtime, inode, size) every `settings.alias_poll_seconds` in a thread of its own; when
it changed, it loads the newly named versions BESIDE the ones in service
(model_loading.load_model: checksum, schema, a test prediction), then replaces one reference,
`models`. A request reads that reference once, so each answer is computed by one model, which
the answer names. Loading runs in the follower's thread, never on the event loop.

A version that cannot be loaded (missing from the store, damaged) is refused with one log
line and the model in service keeps its role; the file is tried again only once it changes
again. Without the file (or with no champion in it) the process serves `default_tag`
(settings.model_tag); when it uses a challenger and the file names none, `default_challenger`
(settings.challenger_tag): that is how an image serves the versions it packs. At start the
file is read the same way, so a restarted process serves what the aliases say; a champion
that cannot be loaded at start falls back to `default_tag`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iris_service.errors import first_line
from iris_service.inference.model_aliases import (
    FileIdentity,
    InvalidAliases,
    ServingAliases,
    aliases_path,
    file_identity,
    read_aliases_file,
)
from iris_service.inference.model_loading import CompiledModel, load_stored_model
from iris_service.monitoring import metrics
from iris_service.settings import settings

logger = logging.getLogger("iris_service.models")

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ChampionAndChallenger:
    """The model versions a process serves now: the champion and, in canary or shadow mode,
    the challenger. Replaced whole, never changed in place."""

    champion: CompiledModel
    challenger: CompiledModel | None = None

    def roles_models(self) -> tuple[CompiledModel | None, ...]:
        return (self.champion, self.challenger)

    def roles(self) -> dict[str, str]:
        """role -> tag of the models in service."""
        roles = {CHAMPION: self.champion.tag}
        if self.challenger is not None:
            roles[CHALLENGER] = self.challenger.tag
        return roles


ModelsChanged = Callable[[ChampionAndChallenger | None, ChampionAndChallenger], None]


def _reason(exc: BaseException) -> str:
    return first_line(exc) or type(exc).__name__


class ModelFollower:
    """Holds `models` and keeps it in line with the aliases file of `model_name` in the
    BentoML home `home` (default: $BENTOML_HOME)."""

    def __init__(
        self,
        model_name: str,
        default_tag: str,
        load: Callable[[str], CompiledModel],
        with_challenger: bool,
        on_change: ModelsChanged | None = None,
        home: Path | None = None,
        default_challenger: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.home = home
        self.path = aliases_path(model_name, home)
        self.default_tag = default_tag
        self.default_challenger = default_challenger
        self._load = load
        self._with_challenger = with_challenger
        self._on_change = on_change
        self._seen: FileIdentity | str = "never"
        self.aliases: ServingAliases | None = None
        self.refused: str | None = None  # the latest refusal, as logged
        # The same for GET /model: what was refused and why, without paths or exception text.
        self.refusal: str | None = None
        self.models: ChampionAndChallenger = self._first_models()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _first_models(self) -> ChampionAndChallenger:
        """The models to start with: the aliases' when they load, else `default_tag`'s (whose
        failure to load is the runner's failure to start)."""
        champion_tag, challenger_tag = self._wanted() or (self.default_tag, None)
        champion = self._try_load(champion_tag, CHAMPION, serving=None)
        if champion is None:
            champion = self._load(self.default_tag)
        challenger = self._try_load(challenger_tag, CHALLENGER, serving=None)
        models = ChampionAndChallenger(champion, challenger)
        logger.info("serving %s", ", ".join(f"{t} as {r}" for r, t in models.roles().items()))
        if self._on_change:
            self._on_change(None, models)
        return models

    def _wanted(self) -> tuple[str, str | None] | None:
        """(champion tag, challenger tag or None) as the aliases file says now; None (after one
        log line) when the file cannot be read. The file read is marked seen by its own
        identity, so a file replaced just before this read is not read (and refused) twice."""
        try:
            self.aliases, self._seen = read_aliases_file(self.path, self.model_name)
        except InvalidAliases as exc:
            self._seen = exc.identity
            self.refused = f"ignored the serving aliases: {_reason(exc)}"
            self.refusal = f"ignored the serving aliases: {getattr(exc, 'reason', 'malformed')}"
            logger.error("%s; the models in service keep serving", self.refused)
            return None
        aliases = self.aliases
        if aliases is None:
            return self.default_tag, self.default_challenger if self._with_challenger else None
        champion = aliases.champion or self.default_tag
        challenger = (
            (aliases.challenger or self.default_challenger) if self._with_challenger else None
        )
        return champion, challenger

    def _try_load(
        self, tag: str | None, role: str, serving: CompiledModel | None
    ) -> CompiledModel | None:
        """The loaded model `tag` (a model in service when it already is `tag`: a promoted
        challenger is not loaded twice), or None (after one log line) when it cannot be
        loaded."""
        if tag is None:
            return None
        current = getattr(self, "models", None)
        for model in (serving, *(current.roles_models() if current else ())):
            if model is not None and model.tag == tag:
                return model
        started = time.monotonic()
        try:
            model = self._load(tag)
        except Exception as exc:  # noqa: BLE001 - any failure to load refuses this version
            kept = f"still serving {serving.tag}" if serving is not None else "not serving it"
            self.refused = f"refused {tag} as {role}: {_reason(exc)}"
            self.refusal = f"refused {tag} as {role}: it could not be loaded (see the log)"
            logger.error("%s; %s", self.refused, kept)
            return None
        logger.info("loaded %s as %s in %.2f s", model.tag, role, time.monotonic() - started)
        return model

    def poll(self) -> bool:
        """Apply the aliases file if it changed since the last look; True when `models` was
        replaced."""
        if file_identity(self.path) == self._seen:
            return False
        current = self.models
        wanted = self._wanted()
        if wanted is None:
            return False
        champion_tag, challenger_tag = wanted
        champion = self._try_load(champion_tag, CHAMPION, current.champion) or current.champion
        challenger = self._try_load(challenger_tag, CHALLENGER, current.challenger)
        if challenger is None and challenger_tag is not None:
            challenger = current.challenger  # refused: the one in service keeps its role
        if champion is current.champion and challenger is current.challenger:
            return False
        models = ChampionAndChallenger(champion, challenger)
        self.models = models  # the one switch: a batch reads `models` once
        logger.info(
            "switched to %s (was %s)",
            ", ".join(f"{t} as {r}" for r, t in models.roles().items()),
            ", ".join(f"{t} as {r}" for r, t in current.roles().items()),
        )
        if self._on_change:
            self._on_change(current, models)
        return True

    @classmethod
    def for_service(
        cls,
        bento_model: Any,
        challenger_model: Any | None,
        mode: str,
        on_change: ModelsChanged | None = None,
    ) -> ModelFollower:
        """The follower of a service whose packed models are `bento_model` (the default
        champion) and `challenger_model` (the default challenger, or None)."""
        return cls(
            bento_model.tag.name,
            str(bento_model.tag),
            load_stored_model,
            with_challenger=mode != "none",
            default_challenger=str(challenger_model.tag) if challenger_model else None,
            on_change=on_change,
        )

    def start(self, interval_s: float) -> None:
        """Poll in a daemon thread every `interval_s` until `stop()`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="alias-follower", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - the follower must outlive any surprise
                logger.error("could not follow the serving aliases: %s", _reason(exc))


def publish_model_info(before: ChampionAndChallenger | None, after: ChampionAndChallenger) -> None:
    """iris_model_info: 1 for the (tag, role) pairs in service, 0 for those no longer."""
    previous = before.roles() if before else {}
    current = after.roles()
    for role, tag in previous.items():
        if current.get(role) != tag:
            metrics.MODEL_INFO.labels(tag, role).set(0)
    for role, tag in current.items():
        metrics.MODEL_INFO.labels(tag, role).set(1)


def start_following(follower: ModelFollower) -> None:
    """Poll the aliases every settings.alias_poll_seconds in the follower's own thread."""
    follower.start(settings.alias_poll_seconds)
