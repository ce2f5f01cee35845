"""What a Bento pins: the refusals come before any model is looked up, with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from iris_service.inference.model_aliases import ServingAliases, write_aliases
from tools.pinned_models import PinnedModels, pinned_models


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_a_challenger_mode_without_a_challenger_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    write_aliases("iris-classifier", ServingAliases("iris-classifier:abc", None), tmp_path)
    with pytest.raises(ValueError, match=f"IRIS_CHALLENGER_MODE={mode} but .* no challenger"):
        pinned_models("iris-classifier", mode)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="IRIS_CHALLENGER_MODE must be one of"):
        pinned_models("iris-classifier", "mirror")


def test_the_environment_and_labels_name_exactly_the_pinned_versions() -> None:
    both = PinnedModels("iris-classifier:a", "iris-classifier:b", "shadow")
    assert both.environment() == {
        "IRIS_MODEL_TAG": "iris-classifier:a",
        "IRIS_CHALLENGER_MODE": "shadow",
        "IRIS_CHALLENGER_TAG": "iris-classifier:b",
    }
    assert both.labels() == {"champion": "iris-classifier:a", "challenger": "iris-classifier:b"}
    alone = PinnedModels("iris-classifier:a", None, "none")
    assert "IRIS_CHALLENGER_TAG" not in alone.environment()
    assert alone.labels() == {"champion": "iris-classifier:a"}
