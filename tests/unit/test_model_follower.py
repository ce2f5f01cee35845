"""The runner's alias follower: what it serves at start, when it switches, what it refuses.

The loader is a stand-in for model_loading.load_stored_model (which the integration tests
exercise against a real store, damaged files included): it records every load and raises
ModelUnavailableError for the versions named "broken" or missing, the way the real one does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from iris_service.inference import model_follower
from iris_service.inference.model_aliases import ServingAliases, aliases_path, write_aliases
from iris_service.inference.model_follower import ModelFollower, publish_model_info
from iris_service.inference.model_loading import CompiledModel, ModelUnavailableError
from iris_service.names import CLASS_NAMES, FEATURE_NAMES

NAME = "iris-classifier"
DEFAULT = f"{NAME}:latest"


class Store:
    """Loads any tag except those containing "broken"; remembers what it loaded."""

    def __init__(self) -> None:
        self.loads: list[str] = []

    def load(self, tag: str) -> CompiledModel:
        self.loads.append(tag)
        if "broken" in tag:
            raise ModelUnavailableError(f"model {tag} is damaged: its file does not match")
        return CompiledModel(tag, CLASS_NAMES, {"feature_names": list(FEATURE_NAMES)})


def follower(home: Path, store: Store, with_challenger: bool = True, **kw) -> ModelFollower:
    return ModelFollower(NAME, DEFAULT, store.load, with_challenger, home=home, **kw)


def name(champion: str, challenger: str | None = None) -> ServingAliases:
    return ServingAliases(f"{NAME}:{champion}", challenger and f"{NAME}:{challenger}")


def served(f: ModelFollower) -> tuple[str, str | None]:
    challenger = f.models.challenger
    return f.models.champion.tag, challenger.tag if challenger else None


def test_without_an_aliases_file_the_default_tag_is_served(tmp_path: Path) -> None:
    store = Store()
    f = follower(tmp_path, store)
    assert served(f) == (DEFAULT, None)
    assert f.poll() is False and store.loads == [DEFAULT]


def test_without_an_aliases_file_an_image_serves_the_versions_it_pins(tmp_path: Path) -> None:
    """An image pins both versions (IRIS_MODEL_TAG, IRIS_CHALLENGER_TAG); the challenger is
    loaded only when a mode uses it; an aliases file, once written, names the champion, and
    the challenger when it names one."""
    pinned = f"{NAME}:pinned-challenger"
    store = Store()
    assert served(follower(tmp_path, store, default_challenger=pinned)) == (DEFAULT, pinned)
    unused = follower(tmp_path, Store(), with_challenger=False, default_challenger=pinned)
    assert served(unused) == (DEFAULT, None)
    f = follower(tmp_path, store, default_challenger=pinned)
    write_aliases(NAME, name("a"), tmp_path)  # names a champion but no challenger
    assert f.poll() is True and served(f) == (f"{NAME}:a", pinned)
    write_aliases(NAME, name("a", "b"), tmp_path)
    assert f.poll() is True and served(f) == (f"{NAME}:a", f"{NAME}:b")


def test_start_follows_the_file_and_a_change_switches_once(tmp_path: Path) -> None:
    write_aliases(NAME, name("a", "b"), tmp_path)
    store = Store()
    f = follower(tmp_path, store)
    assert served(f) == (f"{NAME}:a", f"{NAME}:b")
    write_aliases(NAME, name("c", "a"), tmp_path)
    assert f.poll() is True
    assert served(f) == (f"{NAME}:c", f"{NAME}:a")
    assert f.poll() is False  # unchanged file: nothing loaded again
    # a, b at start; c only: the old champion a becomes challenger without a second load
    assert store.loads == [f"{NAME}:a", f"{NAME}:b", f"{NAME}:c"]


def test_promoting_the_challenger_reuses_the_loaded_model(tmp_path: Path) -> None:
    write_aliases(NAME, name("a", "b"), tmp_path)
    store = Store()
    f = follower(tmp_path, store)
    challenger = f.models.challenger
    write_aliases(NAME, name("b", "a"), tmp_path)
    assert f.poll() is True
    assert f.models.champion is challenger
    assert len(store.loads) == 2


def test_a_broken_champion_is_refused_in_one_line_and_retried_only_after_a_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_aliases(NAME, name("a"), tmp_path)
    store = Store()
    f = follower(tmp_path, store)
    caplog.set_level(logging.INFO, logger="iris_service.models")
    write_aliases(NAME, name("broken"), tmp_path)
    assert f.poll() is False
    assert served(f) == (f"{NAME}:a", None)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"refused {NAME}:broken as champion: model {NAME}:broken is damaged: its file does not "
        f"match; still serving {NAME}:a"
    ]
    assert f.refused and f.refused.startswith(f"refused {NAME}:broken")
    for _ in range(3):
        assert f.poll() is False
    assert store.loads.count(f"{NAME}:broken") == 1
    write_aliases(NAME, name("broken"), tmp_path)  # the file changed again: tried again
    f.poll()
    assert store.loads.count(f"{NAME}:broken") == 2
    write_aliases(NAME, name("d"), tmp_path)
    assert f.poll() is True and served(f) == (f"{NAME}:d", None)


def test_a_broken_challenger_leaves_the_one_in_service(tmp_path: Path) -> None:
    write_aliases(NAME, name("a", "b"), tmp_path)
    f = follower(tmp_path, Store())
    write_aliases(NAME, name("a", "broken"), tmp_path)
    assert f.poll() is False
    assert served(f) == (f"{NAME}:a", f"{NAME}:b")
    write_aliases(NAME, name("a"), tmp_path)  # no challenger named any more
    assert f.poll() is True and served(f) == (f"{NAME}:a", None)


def test_the_challenger_is_not_loaded_when_no_mode_uses_it(tmp_path: Path) -> None:
    write_aliases(NAME, name("a", "b"), tmp_path)
    store = Store()
    f = follower(tmp_path, store, with_challenger=False)
    assert served(f) == (f"{NAME}:a", None) and store.loads == [f"{NAME}:a"]


def test_a_broken_champion_at_start_falls_back_to_the_default(tmp_path: Path) -> None:
    write_aliases(NAME, name("broken"), tmp_path)
    f = follower(tmp_path, Store())
    assert served(f) == (DEFAULT, None)
    assert f.refused and "broken" in f.refused


def test_a_malformed_file_keeps_the_models_in_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_aliases(NAME, name("a"), tmp_path)
    f = follower(tmp_path, Store())
    aliases_path(NAME, tmp_path).write_text("{not json")
    assert f.poll() is False and served(f) == (f"{NAME}:a", None)
    assert any("ignored the serving aliases" in r.getMessage() for r in caplog.records)


def test_a_file_replaced_between_the_look_and_the_read_is_refused_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline (or a person) replaces the file just after a poll looked at it: the poll
    reads the new file, and the next poll knows it read that one (the CI failure of
    2026-12-03: a worker logged the same refusal twice)."""
    write_aliases(NAME, name("a"), tmp_path)
    f = follower(tmp_path, Store())
    path = aliases_path(NAME, tmp_path)
    look = model_follower.file_identity

    def look_then_replace(at: Path) -> object:
        seen = look(at)
        replacement = path.with_suffix(".tmp")
        replacement.write_text("{not json")
        replacement.replace(path)
        return seen

    monkeypatch.setattr(model_follower, "file_identity", look_then_replace)
    assert f.poll() is False
    monkeypatch.setattr(model_follower, "file_identity", look)
    for _ in range(3):
        assert f.poll() is False and served(f) == (f"{NAME}:a", None)
    refusals = [r for r in caplog.records if "not valid JSON" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    write_aliases(NAME, name("b"), tmp_path)
    assert f.poll() is True and served(f) == (f"{NAME}:b", None)


def test_removing_the_file_returns_to_the_default(tmp_path: Path) -> None:
    write_aliases(NAME, name("a"), tmp_path)
    f = follower(tmp_path, Store())
    aliases_path(NAME, tmp_path).unlink()
    assert f.poll() is True and served(f) == (DEFAULT, None)


def test_the_thread_switches_within_a_few_polls(tmp_path: Path) -> None:
    write_aliases(NAME, name("a"), tmp_path)
    f = follower(tmp_path, Store())
    f.start(0.02)
    try:
        write_aliases(NAME, name("b"), tmp_path)
        deadline = time.monotonic() + 5
        while served(f)[0] != f"{NAME}:b" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert served(f) == (f"{NAME}:b", None)
    finally:
        f.stop()


def _info(tag: str, role: str) -> float | None:
    return REGISTRY.get_sample_value("iris_model_info", {"model_tag": tag, "role": role})


def test_model_info_marks_the_models_in_service(tmp_path: Path) -> None:
    write_aliases(NAME, name("info-a", "info-b"), tmp_path)
    f = follower(tmp_path, Store(), on_change=publish_model_info)
    assert _info(f"{NAME}:info-a", "champion") == 1
    assert _info(f"{NAME}:info-b", "challenger") == 1
    write_aliases(NAME, name("info-b"), tmp_path)
    f.poll()
    assert _info(f"{NAME}:info-b", "champion") == 1
    assert _info(f"{NAME}:info-a", "champion") == 0
    assert _info(f"{NAME}:info-b", "challenger") == 0


def test_another_models_tag_is_ignored_once_and_shown_without_paths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An aliases file naming another model is never loaded (its answers would name a model
    the API does not serve): the models in service keep serving, one error line says why,
    and the refusal for GET /model holds neither a path nor exception text."""
    write_aliases(NAME, name("a"), tmp_path)
    store = Store()
    f = follower(tmp_path, store)
    caplog.set_level(logging.INFO, logger="iris_service.models")
    aliases_path(NAME, tmp_path).write_text('{"champion": "other-model:v1"}')
    for _ in range(3):
        assert f.poll() is False
    assert served(f) == (f"{NAME}:a", None) and "other-model:v1" not in store.loads
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "other-model:v1 is not a version of" in errors[0], errors
    assert f.refusal == (
        f"ignored the serving aliases: the champion other-model:v1 is not a version of {NAME}"
    )


def test_a_refused_load_is_shown_without_its_exception_text(tmp_path: Path) -> None:
    write_aliases(NAME, name("a"), tmp_path)
    f = follower(tmp_path, Store())
    write_aliases(NAME, name("broken"), tmp_path)
    assert f.poll() is False
    assert f.refused and "damaged" in f.refused  # the log has the details
    assert f.refusal == f"refused {NAME}:broken as champion: it could not be loaded (see the log)"
