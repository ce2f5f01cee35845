"""A generated CSV of flowers to score in batch, with known invalid rows (seeded, repeatable).

Valid rows are Iris flowers with a little noise; a few rows at random positions break one of
the service's input rules in a known way (empty, NaN, infinite, text, out of range), so a test
or a benchmark knows which rows must be rejected and why. Used by tests/integration/
test_batch_scoring.py and tools/score_bench.py.

python -m tools.flower_file OUT.csv [--rows 1000000] [--invalid 1000] [--seed 24]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iris_pipeline.input_rules import FeatureRule, feature_rules
from iris_service.names import FEATURE_NAMES

# kind -> (feature, text written in the CSV)
INVALID_KINDS: dict[str, tuple[str, str]] = {
    "missing": ("sepal_width", ""),
    "nan": ("petal_length", "NaN"),
    "infinite": ("petal_width", "inf"),
    "text": ("sepal_length", "abc"),
    "too_large": ("sepal_length", "25.0"),
    "zero": ("petal_width", "0"),
}
ID_COLUMN = "flower_id"


def expected_reason(kind: str) -> str:
    """The reason the job must give for a row of this kind (the rule's own words)."""
    feature, _ = INVALID_KINDS[kind]
    rule: FeatureRule = {r.name: r for r in feature_rules()}[feature]
    return {
        "missing": rule.missing(),
        "nan": rule.not_finite(),
        "infinite": rule.not_finite(),
        "text": rule.not_a_number(),
        "too_large": rule.out_of_range(),
        "zero": rule.out_of_range(),
    }[kind]


@dataclass(frozen=True)
class FlowerFile:
    path: Path
    rows: int
    invalid: dict[int, str] = field(default_factory=dict)  # row position -> kind


def measurements(rows: int, seed: int) -> np.ndarray:
    """[rows, 4] plausible flowers: Iris samples plus noise, in cm with two decimals."""
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(seed)
    iris = load_iris().data
    picked = iris[rng.integers(0, len(iris), rows)] + rng.normal(0, 0.05, (rows, 4))
    return np.clip(picked, 0.1, None).round(2)


def write_flower_csv(path: Path, rows: int, invalid: int = 0, seed: int = 24) -> FlowerFile:
    """Write `rows` flowers (header: flower_id and the features), `invalid` of them broken."""
    import pandas as pd

    values = measurements(rows, seed)
    text = {
        name: np.char.mod("%.2f", values[:, i]).astype(object)
        for i, name in enumerate(FEATURE_NAMES)
    }
    rng = np.random.default_rng(seed + 1)
    positions = sorted(rng.choice(rows, size=invalid, replace=False).tolist()) if invalid else []
    kinds = list(INVALID_KINDS)
    broken: dict[int, str] = {}
    for index, position in enumerate(positions):
        kind = kinds[index % len(kinds)]
        feature, bad = INVALID_KINDS[kind]
        text[feature][position] = bad
        broken[position] = kind
    frame = pd.DataFrame({ID_COLUMN: [f"f{i:08d}" for i in range(rows)], **text})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return FlowerFile(path, rows, broken)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--invalid", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    written = write_flower_csv(args.out, args.rows, args.invalid, args.seed)
    print(f"{written.rows:,} flowers ({len(written.invalid):,} invalid) in {written.path}")


if __name__ == "__main__":
    main()
