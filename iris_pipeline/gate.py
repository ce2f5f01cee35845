"""The quality gate: is a challenger at least as good as the champion on the gate set?

The gate set (training.gate_set) is the same 30 flowers in every run and no candidate is
fitted or selected on it, so two models trained at different times are compared on equal,
unseen ground. The rule, per metric, with figures that can be printed and recorded:

- macro-F1: the challenger's may not be lower than the champion's;
- recall of each class: the challenger's may not be lower than the champion's by more than
  `recall_margin` (so a model cannot buy a better average by giving up one species).

Figures are rounded to ROUND_DIGITS before comparing, so float noise (0.9 - 0.05 is
0.8500000000000001) never decides. MLflow's `MetricThreshold` cannot state these rules as a
comparison with a baseline (its `min_absolute_change` must be positive: it asks for an
improvement), so the comparison is made here and recorded in an MLflow run by
`registry.record_action`.

Before any figure, a version must be servable (compiled_check): the service runs its ONNX
model only, so a version without one, with one that does not answer like its scikit-learn
model, or whose file is not the one training checked, is refused even when forced.

Nothing here talks to MLflow or BentoML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iris_service.names import CLASS_NAMES

if TYPE_CHECKING:
    import numpy as np

DEFAULT_RECALL_MARGIN = 0.05
ROUND_DIGITS = 6
MACRO_F1 = "macro_f1"


def recall_metric(class_name: str) -> str:
    return f"recall_{class_name}"


def gate_metrics(model: Any, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """macro-F1, accuracy and each class's recall of `model` on the gate set."""
    # Imported here: scikit-learn (and SciPy under it) costs a second and a half to import,
    # which `models` and `rollback` would otherwise pay for a figure they never compute.
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    predicted = model.predict(features)
    recalls = recall_score(
        labels, predicted, labels=list(range(len(CLASS_NAMES))), average=None, zero_division=0
    )
    metrics = {
        MACRO_F1: float(f1_score(labels, predicted, average="macro")),
        "accuracy": float(accuracy_score(labels, predicted)),
    }
    metrics.update(
        {
            recall_metric(name): float(value)
            for name, value in zip(CLASS_NAMES, recalls, strict=True)
        }
    )
    return metrics


@dataclass(frozen=True)
class Check:
    """One rule: the challenger's figure must be at least `threshold`."""

    metric: str
    champion: float
    challenger: float
    threshold: float

    @property
    def passed(self) -> bool:
        return round(self.challenger, ROUND_DIGITS) >= round(self.threshold, ROUND_DIGITS)

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.metric:<20} challenger {self.challenger:.4f}  champion {self.champion:.4f}  "
            f"needs >= {self.threshold:.4f}  {verdict}"
        )


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]
    recall_margin: float

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.passed)


def judge(
    champion: dict[str, float],
    challenger: dict[str, float],
    recall_margin: float = DEFAULT_RECALL_MARGIN,
) -> Verdict:
    """Apply the rule to the gate metrics of both models (gate_metrics)."""
    if not 0.0 <= recall_margin <= 1.0:
        raise ValueError(f"the recall margin must be between 0 and 1, got {recall_margin}")
    checks = [Check(MACRO_F1, champion[MACRO_F1], challenger[MACRO_F1], champion[MACRO_F1])]
    for name in CLASS_NAMES:
        metric = recall_metric(name)
        threshold = max(champion[metric] - recall_margin, 0.0)
        checks.append(Check(metric, champion[metric], challenger[metric], threshold))
    return Verdict(tuple(checks), recall_margin)


@dataclass(frozen=True)
class CompiledCheck:
    """Can the service run this version? `reason` says why not."""

    passed: bool
    reason: str = ""


def compiled_check(
    version: str,
    version_tags: Mapping[str, str],
    metadata: Mapping[str, Any],
    onnx_bytes: bytes | None,
) -> CompiledCheck:
    """A version is servable when its BentoML model holds `model.onnx` with the SHA-256 that
    training recorded (in the model's metadata and in the registry version's tags), and both
    records say that it answers like its scikit-learn model (iris_pipeline/compiling.py)."""
    recorded = metadata.get("onnx_sha256")
    if onnx_bytes is None or not recorded:
        return CompiledCheck(
            False,
            f"version {version} has no ONNX model (no model.onnx in its BentoML model, as for "
            "versions trained before models were compiled), so the service cannot run it; "
            "train a new version with `make train`",
        )
    if (
        hashlib.sha256(onnx_bytes).hexdigest() != recorded
        or version_tags.get("onnx_sha256", recorded) != recorded
    ):
        return CompiledCheck(
            False,
            f"version {version}'s model.onnx is not the file whose equivalence training "
            "checked (SHA-256 differs: altered or corrupt); train a new version with "
            "`make train`",
        )
    equivalence = metadata.get("onnx_equivalence") or {}
    tagged = version_tags.get("onnx_equivalent")
    if equivalence.get("passed") is not True or tagged != "true":
        difference = equivalence.get("max_abs_diff", version_tags.get("onnx_max_abs_diff"))
        return CompiledCheck(
            False,
            f"version {version}'s ONNX model does not answer like its scikit-learn model "
            f"(onnx_equivalent={tagged or 'unrecorded'}, max |dp| {difference}), so what "
            "would serve is not the model that was judged",
        )
    return CompiledCheck(True)
