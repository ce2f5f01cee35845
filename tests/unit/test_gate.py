"""The quality gate's rule: macro-F1 not lower, no class's recall lower by more than a margin."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from iris_pipeline import gate, training
from iris_service.names import CLASS_NAMES


def _figures(macro_f1: float, *recalls: float) -> dict[str, float]:
    figures = {gate.MACRO_F1: macro_f1}
    figures.update(
        {gate.recall_metric(name): value for name, value in zip(CLASS_NAMES, recalls, strict=True)}
    )
    return figures


CHAMPION = _figures(0.95, 1.0, 0.9, 0.95)


def test_an_equal_or_better_challenger_passes() -> None:
    assert gate.judge(CHAMPION, dict(CHAMPION)).passed
    assert gate.judge(CHAMPION, _figures(0.97, 1.0, 0.95, 0.95)).passed


def test_a_lower_macro_f1_is_refused_even_by_a_hair() -> None:
    verdict = gate.judge(CHAMPION, _figures(0.9499, 1.0, 0.9, 0.95))
    assert not verdict.passed
    assert [check.metric for check in verdict.failed] == [gate.MACRO_F1]
    failed = verdict.failed[0]
    assert (failed.challenger, failed.threshold, failed.champion) == (0.9499, 0.95, 0.95)


def test_a_recall_drop_within_the_margin_passes_and_beyond_it_fails() -> None:
    # 0.9 - 0.05 is 0.8500000000000001 in floats: a drop of exactly the margin must pass.
    assert gate.judge(CHAMPION, _figures(0.96, 1.0, 0.85, 1.0), recall_margin=0.05).passed
    verdict = gate.judge(CHAMPION, _figures(0.96, 1.0, 0.84, 1.0), recall_margin=0.05)
    assert [check.metric for check in verdict.failed] == ["recall_versicolor"]
    assert "recall_versicolor" in verdict.failed[0].describe()
    assert "FAILED" in verdict.failed[0].describe()


def test_the_margin_is_configurable() -> None:
    challenger = _figures(0.96, 1.0, 0.8, 1.0)
    assert not gate.judge(CHAMPION, challenger, recall_margin=0.05).passed
    assert gate.judge(CHAMPION, challenger, recall_margin=0.1).passed
    assert not gate.judge(CHAMPION, _figures(0.96, 1.0, 0.89, 1.0), recall_margin=0.0).passed
    with pytest.raises(ValueError, match="recall margin"):
        gate.judge(CHAMPION, challenger, recall_margin=-0.1)


def test_every_rule_is_checked_and_reported() -> None:
    verdict = gate.judge(CHAMPION, _figures(0.5, 0.2, 0.2, 0.2))
    assert {check.metric for check in verdict.failed} == {
        gate.MACRO_F1,
        *(gate.recall_metric(name) for name in CLASS_NAMES),
    }


def test_gate_metrics_of_real_models() -> None:
    x_rest, y_rest, x_gate, y_gate = training.gate_set()
    model = training.build_candidate("logistic_regression", seed=0).fit(x_rest.to_numpy(), y_rest)
    good = gate.gate_metrics(model, x_gate.to_numpy(), y_gate)
    assert good[gate.MACRO_F1] > 0.9 and good["accuracy"] > 0.9
    always_setosa = DummyClassifier(strategy="constant", constant=0).fit(x_rest, y_rest)
    poor = gate.gate_metrics(always_setosa, x_gate.to_numpy(), y_gate)
    assert poor["recall_setosa"] == 1.0
    assert poor["recall_versicolor"] == poor["recall_virginica"] == 0.0
    assert poor["accuracy"] == pytest.approx(np.mean(y_gate == 0))
    assert not gate.judge(good, poor).passed


ONNX = b"an onnx model's bytes"
RECORDED = {
    "onnx_sha256": hashlib.sha256(ONNX).hexdigest(),
    "onnx_equivalence": {"passed": True, "max_abs_diff": 1.6e-07, "rows": 150},
}
TAGS = {
    "onnx_equivalent": "true",
    "onnx_max_abs_diff": "1.6e-07",
    "onnx_sha256": RECORDED["onnx_sha256"],
}


def test_a_compiled_equivalent_version_is_servable() -> None:
    check = gate.compiled_check("4", TAGS, RECORDED, ONNX)
    assert check.passed and check.reason == ""


@pytest.mark.parametrize(
    ("tags", "metadata", "onnx", "reason"),
    [
        (TAGS, RECORDED, None, "version 4 has no ONNX model"),
        ({}, {"model_file_sha256": "ab"}, None, "version 4 has no ONNX model"),
        (TAGS, RECORDED, ONNX + b"x", "is not the file whose equivalence training checked"),
        (
            {**TAGS, "onnx_sha256": "0" * 64},
            RECORDED,
            ONNX,
            "is not the file whose equivalence training checked",
        ),
        (
            {**TAGS, "onnx_equivalent": "false"},
            RECORDED,
            ONNX,
            "does not answer like its scikit-learn model (onnx_equivalent=false",
        ),
        (
            {"onnx_sha256": RECORDED["onnx_sha256"]},
            RECORDED,
            ONNX,
            "(onnx_equivalent=unrecorded",
        ),
        (
            TAGS,
            {**RECORDED, "onnx_equivalence": {"passed": False, "max_abs_diff": 0.2, "rows": 150}},
            ONNX,
            "max |dp| 0.2)",
        ),
    ],
)
def test_a_version_the_service_cannot_run_is_refused_with_the_reason(
    tags: dict, metadata: dict, onnx: bytes | None, reason: str
) -> None:
    check = gate.compiled_check("4", tags, metadata, onnx)
    assert not check.passed
    assert reason in check.reason
