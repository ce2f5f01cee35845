"""The serving-aliases file: round trip, atomic replacement, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from iris_service.model_aliases import ServingAliases, aliases_path, read_aliases, write_aliases


def test_no_file_means_no_aliases(tmp_path: Path) -> None:
    assert read_aliases("iris-classifier", tmp_path) is None


def test_round_trip_and_replacement(tmp_path: Path) -> None:
    write_aliases("iris-classifier", ServingAliases("iris-classifier:a"), tmp_path)
    path = write_aliases(
        "iris-classifier", ServingAliases("iris-classifier:b", "iris-classifier:c"), tmp_path
    )
    aliases = read_aliases("iris-classifier", tmp_path)
    assert aliases is not None and aliases.updated_at
    assert (aliases.champion, aliases.challenger) == ("iris-classifier:b", "iris-classifier:c")
    assert path == aliases_path("iris-classifier", tmp_path)
    assert [p.name for p in path.parent.iterdir()] == ["iris-classifier.json"]  # no temp left


@pytest.mark.parametrize("content", ["{not json", '["iris-classifier:a"]', '{"champion": 3}'])
def test_a_malformed_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = aliases_path("iris-classifier", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ValueError, match="serving aliases"):
        read_aliases("iris-classifier", tmp_path)
