"""The parts of `make score` that need no Spark: the input rules (read from the served schema,
never copied), the model argument, the input and output folders, the --conf pairs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, ValidationError

from iris_pipeline.input_rules import FeatureRule, feature_rules, rule_of
from iris_pipeline.scoring_io import (
    ScoringError,
    check_output_free,
    csv_header,
    find_input,
    staged_output,
)
from iris_pipeline.scoring_model import parse_model
from iris_pipeline.spark_session import parse_conf
from iris_service.http.schemas import SETOSA_EXAMPLE, IrisFeatures
from iris_service.names import FEATURE_NAMES, MODEL_NAME, UPPER_BOUNDS_CM

PROBES = [-1.0, 0.0, 1e-9, 0.1, 5.0, 9.99, 10.0, 10.01, 15.0, 15.01, 20.0, 20.5, 1e300]
PROBES += [math.nan, math.inf, -math.inf]


def test_the_rules_are_the_served_schemas() -> None:
    rules = feature_rules()
    assert [rule.name for rule in rules] == list(FEATURE_NAMES)
    assert {rule.name: rule.at_most for rule in rules} == UPPER_BOUNDS_CM
    assert all(rule.greater_than == 0 and rule.finite for rule in rules)
    assert rules[0].range_text() == "(0, 20]"


@pytest.mark.parametrize("rule", feature_rules(), ids=lambda rule: rule.name)
def test_a_rule_refuses_exactly_what_the_service_refuses(rule: FeatureRule) -> None:
    for value in PROBES:
        try:
            IrisFeatures(**{**SETOSA_EXAMPLE, rule.name: value})
            service_accepts = True
        except ValidationError:
            service_accepts = False
        assert (rule.problem(value) is None) == service_accepts, (rule.name, value)
    assert rule.problem(None) == f"{rule.name} is missing"


def test_a_changed_schema_changes_the_rule() -> None:
    """Not a copy: other constraints on the field give another rule."""

    class Other(BaseModel):
        x: Annotated[float, Field(ge=1, lt=3, allow_inf_nan=True)]

    rule = rule_of("x", Other.model_fields["x"])
    assert (rule.at_least, rule.less_than, rule.finite) == (1, 3, False)
    assert rule.range_text() == "[1, 3)"
    assert rule.problem(3.0) == "x is out of range [1, 3)"
    assert rule.problem(math.inf) == "x is out of range [1, 3)"  # allowed inf, still too big


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("champion", (MODEL_NAME, "champion", None)),
        ("7", (MODEL_NAME, None, "7")),
        ("models:/iris-classifier@challenger", ("iris-classifier", "challenger", None)),
        ("models:/other/3", ("other", None, "3")),
    ],
)
def test_the_model_argument_takes_an_alias_a_version_or_a_uri(spec: str, parsed: tuple) -> None:
    assert parse_model(spec) == parsed


@pytest.mark.parametrize("spec", ["models:/", "models:/x/y/z", "runs:/abc/model", ""])
def test_a_malformed_model_argument_is_refused(spec: str) -> None:
    with pytest.raises(ScoringError):
        parse_model(spec)


def test_the_input_is_a_csv_or_parquet_file_or_a_folder_of_one_kind(tmp_path: Path) -> None:
    with pytest.raises(ScoringError, match="does not exist"):
        find_input(tmp_path / "none.csv")
    (tmp_path / "b.csv").write_text("a\n1\n")
    (tmp_path / "a.csv").write_text("a\n2\n")
    (tmp_path / "_SUCCESS").write_text("")
    found = find_input(tmp_path)
    assert (found.format, [f.name for f in found.files]) == ("csv", ["a.csv", "b.csv"])
    assert csv_header(found.files) == ["a"]
    (tmp_path / "c.csv").write_text("other\n3\n")
    with pytest.raises(ScoringError, match="different headers"):
        csv_header(find_input(tmp_path).files)
    (tmp_path / "d.parquet").write_bytes(b"")
    with pytest.raises(ScoringError, match="mixes"):
        find_input(tmp_path)
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(ScoringError, match=r"only \.csv and \.parquet"):
        find_input(tmp_path / "e.json")


def test_the_output_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    output = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output(output) as stage:
        (stage / "part").write_text("half")
        raise RuntimeError("the job failed")
    assert list(tmp_path.iterdir()) == []
    with staged_output(output) as stage:
        (stage / "part").write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (output / "part").read_text() == "whole"
    with pytest.raises(ScoringError, match="already exists"):
        check_output_free(output)
    check_output_free(tmp_path / "new")


def test_conf_pairs() -> None:
    assert parse_conf(["spark.a=1", "spark.b=x=y"]) == {"spark.a": "1", "spark.b": "x=y"}
    with pytest.raises(ValueError):
        parse_conf(["no-equals"])
