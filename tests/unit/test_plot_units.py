"""The report plots say what they show: every axis carries its unit, thresholds are in the
legend, empty panels say why, and nothing pretends (a replaced model at 0, a zoomed memory
axis, cumulative percentiles drawn as if they were current)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from tools import report
from tools.loadtest import plot

UNIT = re.compile(r"\(.+\)|/s\b")
T0 = 1_800_000_000.0


def _points(*values: float) -> list[tuple[float, float]]:
    return [(T0 + 5 * i, v) for i, v in enumerate(values)]


def _views() -> dict[str, report.Series]:
    views: dict[str, report.Series] = {panel["title"]: {} for panel in report.dashboard_panels()}
    views["Request rate"] = {"/predict": _points(10, 12, 11)}
    views["Memory (resident, per API worker max)"] = {"value": _points(0, 291, 295, 299)}
    # a service without a challenger exports these series at 0
    views["Canary share"] = {"answered by the challenger": _points(0, 0, 0)}
    views["Shadow agreement"] = {"agree": _points(0, 0), "not shadowed: no_challenger": []}
    views["Data drift (PSI per feature)"] = {"petal_length": _points(0.02, 3.5, 7.0)}
    views["Models in service"] = {
        "champion: iris-classifier:old": _points(0, 0, 0),
        "champion: iris-classifier:new": _points(1, 1, 1),
    }
    views["Labelled predictions (live window)"] = {
        "iris-classifier:new": _points(10, 20, 30),
        "labels/s: accepted": _points(1.5, 2.0, 1.0),
    }
    return views


@pytest.fixture(scope="module")
def overview():
    figure = report.overview_figure(_views(), "test")
    yield figure
    plt.close(figure)


def _panel(figure, title: str):
    return next(axes for axes in figure.axes if axes.get_title() == title)


def test_every_axis_of_the_monitoring_overview_carries_its_unit(overview) -> None:
    drawn = [axes for axes in overview.axes if axes.axison]
    assert len([a for a in drawn if a.get_title()]) == len(report.dashboard_panels())
    for axes in drawn:
        assert UNIT.search(axes.get_ylabel()), (axes.get_title(), axes.get_ylabel())
        if axes.get_title():  # a twin axis shares the time axis of its panel
            assert axes.get_xlabel() == "time (UTC)"


def test_the_drift_thresholds_are_drawn_and_in_the_legend(overview) -> None:
    drift = _panel(overview, "Data drift (PSI per feature)")
    legend = [text.get_text() for text in drift.get_legend().get_texts()]
    assert "moderate drift (PSI 0.1)" in legend and "significant (0.25)" in legend
    assert drift.get_yscale() == "symlog"


def test_memory_starts_at_zero_and_names_its_series(overview) -> None:
    memory = _panel(overview, "Memory (resident, per API worker max)")
    assert memory.get_ylim()[0] == 0
    legend = [text.get_text() for text in memory.get_legend().get_texts()]
    assert legend == ["API worker (largest resident set)"]
    (line,) = memory.get_lines()
    assert list(line.get_ydata()) == [291, 295, 299]  # not the gauge's 0 before a reading


def test_a_replaced_model_at_zero_is_not_a_second_series(overview) -> None:
    models = _panel(overview, "Models in service")
    assert [line.get_label() for line in models.get_lines()] == ["champion: iris-classifier:new"]


def test_empty_canary_and_shadow_panels_say_not_enabled(overview) -> None:
    for title in ("Canary share", "Shadow agreement"):
        notes = [text.get_text() for text in _panel(overview, title).texts]
        assert any(note.startswith("not enabled") for note in notes), (title, notes)


def test_a_count_and_a_rate_sit_on_separate_axes(overview) -> None:
    labelled = _panel(overview, "Labelled predictions (live window)")
    twins = [
        a for a in overview.axes if a is not labelled and a.bbox.bounds == labelled.bbox.bounds
    ]
    assert len(twins) == 1
    assert [line.get_label() for line in labelled.get_lines()] == ["iris-classifier:new"]
    assert [line.get_label() for line in twins[0].get_lines()] == ["labels/s: accepted"]
    assert labelled.get_ylabel() == "labelled predictions (count)"
    assert twins[0].get_ylabel() == "labels received/s"


def _history(path: Path, full: bool) -> Path:
    fields = ["Timestamp", "User Count", "Name", "Total Request Count", "Total Failure Count"]
    fields += ["50%", "95%", "99%"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for second, p95 in ((0, 37), (5, 9), (10, 6)):
            row = {
                "Timestamp": 1000 + second,
                "User Count": 50,
                "Total Request Count": 100 * second,
            }
            row |= {"Total Failure Count": 0, "50%": 3, "95%": p95, "99%": p95 + 5}
            if full:
                writer.writerow({**row, "Name": "/predict"})
            writer.writerow({**row, "Name": "Aggregated"})
    return path


@pytest.mark.parametrize("full", [True, False])
def test_the_locust_plot_has_units_and_says_which_percentiles(tmp_path: Path, full: bool) -> None:
    history = _history(tmp_path / "h.csv", full)
    assert plot.is_per_window(history) is full
    figure = plot.history_figure(plot.read_history(history), "t", plot.is_per_window(history))
    try:
        for axes in figure.axes:
            assert UNIT.search(axes.get_ylabel()), axes.get_ylabel()
        latency = figure.axes[1]
        assert latency.get_xlabel() == "time since start (s)"
        expected = plot.WINDOW_LABEL if full else plot.CUMULATIVE_LABEL
        assert all(expected in line.get_label() for line in latency.get_lines())
    finally:
        plt.close(figure)
