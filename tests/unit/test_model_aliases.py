"""The serving-aliases file: round trip, atomic replacement, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from iris_service.inference.model_aliases import (
    MAX_FILE_BYTES,
    InvalidAliases,
    ServingAliases,
    aliases_path,
    read_aliases,
    write_aliases,
)


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


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"champion": "other-model:v1"}', "the champion other-model:v1 is not a version of"),
        ('{"champion": "iris-classifier"}', "the champion is not a tag"),
        ('{"champion": "iris-classifier:a", "challenger": "other:b"}', "the challenger other:b"),
        ('{"champion": "iris-classifier:a", "challenger": 7}', "challenger must be a tag"),
        ('{"champion": ["iris-classifier:a"]}', "champion must be a tag"),
        ('{"champion": "iris-classifier:../../etc"}', "is not a tag"),
        ('{"champion": "iris-classifier:' + "a" * 64 + '"}', "is not a tag"),
        ('{"champion": "Other:v1"}', "the champion is not a tag"),
        ('{"champion": "iris-classifier:a", "updated_at": 5}', "updated_at"),
        ("[" * 2000 + "]" * 2000, "not valid JSON"),
        ('{"champion": "iris-classifier:a"' + " " * MAX_FILE_BYTES + "}", "larger than"),
        ("\ufeff{}", "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_only_versions_of_this_model_are_accepted(
    tmp_path: Path, content: str, reason: str
) -> None:
    """Another model's tag, a path-like version, nesting deep enough to exhaust the parser, a
    huge file: each is one InvalidAliases whose reason names the fault, never the path."""
    path = aliases_path("iris-classifier", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(InvalidAliases) as refused:
        read_aliases("iris-classifier", tmp_path)
    assert reason in refused.value.reason, refused.value.reason
    assert str(tmp_path) not in refused.value.reason and str(path) in str(refused.value)


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    path = aliases_path("iris-classifier", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes('{"champion": "iris-classifier:a"}'.encode("utf-16"))
    with pytest.raises(InvalidAliases, match=r"not UTF-8|not valid JSON"):
        read_aliases("iris-classifier", tmp_path)
