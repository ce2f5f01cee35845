"""The explanation tools: the cost bench (tools/bench/explain_cost.py) measures one
explanation against one prediction and writes its report; the plot of `make report`
(tools/explanation_plot.py) draws a waterfall per flower from /explain answers."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench import explain_cost
from tools.explanation_plot import FLOWERS, draw


def test_the_cost_bench_measures_an_explanation_against_a_prediction(tmp_path: Path) -> None:
    code = explain_cost.main(
        ["--families", "logistic_regression", "--repeats", "5", "--out-dir", str(tmp_path)]
    )
    assert code == 0
    result = json.loads((tmp_path / "explain-cost.json").read_text())
    (row,) = result["families"]
    assert row["family"] == "logistic_regression" and row["background_rows"] == 50
    assert 0 < row["prediction"]["median_ms"] <= row["prediction"]["p90_ms"]
    # 800 model rows and the Shapley sums cost more than one row.
    assert row["explanation"]["median_ms"] > row["prediction"]["median_ms"]
    assert row["explanation_of_100"]["median_ms"] > row["explanation"]["median_ms"]
    assert "| logistic_regression |" in (tmp_path / "explain-cost.md").read_text()


def _answer(flower: dict[str, float]) -> dict:
    contributions = {"sepal_length": 0.05, "sepal_width": -0.02, "petal_length": 0.3}
    return {
        "flower": flower,
        "class_name": "versicolor",
        "probabilities": {"setosa": 0.02, "versicolor": 0.9, "virginica": 0.08},
        "base_value": {"setosa": 0.33, "versicolor": 0.34, "virginica": 0.33},
        "contributions": {
            name: {**contributions, "petal_width": 0.23} for name in ("setosa", "versicolor")
        }
        | {"virginica": {**contributions, "petal_width": 0.0}},
        "model_tag": "iris-classifier:abc",
        "background": {"rows": 50},
    }


def test_the_plot_draws_a_panel_per_flower(tmp_path: Path) -> None:
    path = draw([_answer(flower) for flower in FLOWERS], tmp_path / "explanations.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000  # four panels, not an empty canvas
