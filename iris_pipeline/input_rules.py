"""The service's input rules, read from the one place the served package defines them.

A batch job must refuse exactly the flowers the service refuses, so nothing here is a copy:
the feature names come from `iris_service.names.FEATURE_NAMES` and each feature's range and
its finiteness from the constraints Pydantic holds for that field of
`iris_service.http.schemas.IrisFeatures` (`gt`, `ge`, `lt`, `le`, `allow_inf_nan`). Change a bound
there and the job follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import annotated_types
from pydantic.fields import FieldInfo

from iris_service.http.schemas import IrisFeatures
from iris_service.names import FEATURE_NAMES


@dataclass(frozen=True)
class FeatureRule:
    """What one measurement must be: present, a number, finite (unless the schema allows
    inf/NaN) and within the schema's bounds (each None when the schema sets none)."""

    name: str
    greater_than: float | None = None
    at_least: float | None = None
    less_than: float | None = None
    at_most: float | None = None
    finite: bool = True

    def range_text(self) -> str:
        """The range in interval notation, e.g. `(0, 20]`."""
        low = self.greater_than if self.greater_than is not None else self.at_least
        high = self.less_than if self.less_than is not None else self.at_most
        opening = "(" if self.at_least is None else "["
        closing = ")" if self.at_most is None else "]"
        return f"{opening}{_number(low, '-inf')}, {_number(high, 'inf')}{closing}"

    def in_range(self, value: float) -> bool:
        """The bounds alone (a NaN is in no range)."""
        return (
            (self.greater_than is None or value > self.greater_than)
            and (self.at_least is None or value >= self.at_least)
            and (self.less_than is None or value < self.less_than)
            and (self.at_most is None or value <= self.at_most)
        )

    def missing(self) -> str:
        return f"{self.name} is missing"

    def not_a_number(self) -> str:
        return f"{self.name} is not a number"

    def not_finite(self) -> str:
        return f"{self.name} is not finite"

    def out_of_range(self) -> str:
        return f"{self.name} is out of range {self.range_text()}"

    def problem(self, value: float | None) -> str | None:
        """Why `value` breaks the rule (the words the batch job writes), or None."""
        if value is None:
            return self.missing()
        if self.finite and not math.isfinite(value):
            return self.not_finite()
        if not self.in_range(value):
            return self.out_of_range()
        return None


def _number(value: float | None, unbounded: str) -> str:
    if value is None:
        return unbounded
    return f"{value:g}"


def rule_of(name: str, field: FieldInfo) -> FeatureRule:
    """The rule Pydantic enforces for one field, from its constraint metadata."""
    bounds: dict[str, float] = {}
    finite = True
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Gt):
            bounds["greater_than"] = float(constraint.gt)  # type: ignore[arg-type]
        elif isinstance(constraint, annotated_types.Ge):
            bounds["at_least"] = float(constraint.ge)  # type: ignore[arg-type]
        elif isinstance(constraint, annotated_types.Lt):
            bounds["less_than"] = float(constraint.lt)  # type: ignore[arg-type]
        elif isinstance(constraint, annotated_types.Le):
            bounds["at_most"] = float(constraint.le)  # type: ignore[arg-type]
        elif getattr(constraint, "allow_inf_nan", None) is not None:
            finite = not constraint.allow_inf_nan
    return FeatureRule(name=name, finite=finite, **bounds)


def feature_rules() -> tuple[FeatureRule, ...]:
    """One rule per feature, in the order the model takes them (FEATURE_NAMES)."""
    fields = IrisFeatures.model_fields
    missing = [name for name in FEATURE_NAMES if name not in fields]
    if missing:
        raise LookupError(f"IrisFeatures has no field for {missing}")
    return tuple(rule_of(name, fields[name]) for name in FEATURE_NAMES)
