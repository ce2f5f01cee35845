"""`make report`: the Grafana dashboard's views as PNG plots, for users without Grafana.

Two sources, one set of views (the panels of deploy/monitoring/grafana-dashboard.json):
- `--prometheus-url URL`: every panel query of the dashboard, run as a query range over the
  last `--minutes` minutes on that Prometheus;
- otherwise `/metrics` snapshots of a running service (`--service-url`), or of a
  `bentoml serve` this command starts on 127.0.0.1 (`--start-service`), taken every
  `--interval` seconds while it sends a bounded mix of Iris traffic (in-distribution, then
  shifted, plus a few invalid requests); rates, percentiles and gauges are computed from
  consecutive snapshots the way PromQL's rate() and histogram_quantile() do.
Writes reports/monitoring-<panel>.png per panel and reports/monitoring.png with all of them,
and, from a service, reports/explanations.png: the contributions of a few flowers
(tools/explanation_plot.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from iris_pipeline.paths import PROJECT_ROOT, REPORTS_DIR
from iris_service.names import CLASS_NAMES, FEATURE_NAMES

from .explanation_plot import render_from_service

if TYPE_CHECKING:
    from .feedback_loop import LoopRun

LOOP_RETRAIN_ARGS = "--candidates logistic_regression random_forest svm --cv-folds 2"
DASHBOARD = PROJECT_ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"
RATE_WINDOW = "1m"

Series = dict[str, list[tuple[float, float]]]  # legend -> [(unix time, value)]


def dashboard_panels(path: Path = DASHBOARD) -> list[dict]:
    return json.loads(path.read_text())["panels"]


def promql(expr: str, rate_window: str = RATE_WINDOW) -> str:
    """A dashboard expression with Grafana's variables replaced, as Prometheus runs it."""
    return expr.replace("$__rate_interval", rate_window).replace("$__interval", rate_window)


def _legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text or ",".join(f"{k}={v}" for k, v in labels.items()) or "value"


# --- Prometheus query range ------------------------------------------------------------------


def panels_from_prometheus(url: str, minutes: float, step_seconds: float) -> dict[str, Series]:
    end = time.time()
    views: dict[str, Series] = {}
    for panel in dashboard_panels():
        series: Series = {}
        for target in panel["targets"]:
            response = requests.get(
                f"{url.rstrip('/')}/api/v1/query_range",
                params={
                    "query": promql(target["expr"]),
                    "start": end - minutes * 60,
                    "end": end,
                    "step": step_seconds,
                },
                timeout=30,
            )
            response.raise_for_status()
            for result in response.json()["data"]["result"]:
                points = [(float(t), float(v)) for t, v in result["values"]]
                series[_legend(target.get("legendFormat", ""), result["metric"])] = points
        views[panel["title"]] = series
    return views


# --- /metrics snapshots ----------------------------------------------------------------------

Sample = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


@dataclass
class Snapshot:
    time: float  # wall clock, for the plots
    elapsed: float  # monotonic seconds, for rates
    samples: dict[Sample, float]

    def select(self, name: str, **match: str) -> Iterator[tuple[dict[str, str], float]]:
        for (sample_name, labels), value in self.samples.items():
            if sample_name != name:
                continue
            label_map = dict(labels)
            if all(re.fullmatch(pattern, label_map.get(k, "")) for k, pattern in match.items()):
                yield label_map, value


def take_snapshot(service_url: str) -> Snapshot:
    text = requests.get(f"{service_url}/metrics", timeout=10).text
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return Snapshot(time.time(), time.monotonic(), samples)


Grouping = str | tuple[str, ...]  # one label, or several shown as "a → b"


def _key(labels: dict[str, str], by: Grouping) -> str:
    if isinstance(by, str):
        return labels.get(by, "")
    return " → ".join(labels.get(name, "") for name in by)


def _grouped(snapshot: Snapshot, name: str, by: Grouping, **match: str) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for labels, value in snapshot.select(name, **match):
        sums[_key(labels, by)] += value
    return sums


def _rates(snapshots: list[Snapshot], name: str, by: Grouping, **match: str) -> Series:
    """Per-second increase between consecutive snapshots, summed by one label (rate())."""
    series: Series = defaultdict(list)
    for before, after in itertools.pairwise(snapshots):
        old, new = _grouped(before, name, by, **match), _grouped(after, name, by, **match)
        for key, value in new.items():
            increase = value - old.get(key, 0.0)
            series[key or "value"].append(
                (after.time, max(increase, 0.0) / (after.elapsed - before.elapsed))
            )
    return dict(series)


def _ratio(numerator: Series, denominator: Series) -> Series:
    result: Series = {}
    for key, points in numerator.items():
        below = dict(denominator.get(key, []))
        result[key] = [(t, v / below[t]) for t, v in points if below.get(t)]
    return result


def histogram_quantile(quantile: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative bucket counts {upper bound: count}."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return bounds[-1]


def _latency_percentiles(snapshots: list[Snapshot]) -> Series:
    series: Series = defaultdict(list)
    for before, after in itertools.pairwise(snapshots):
        old = _grouped(before, "iris_request_latency_ms_bucket", "le", endpoint="/predict")
        new = _grouped(after, "iris_request_latency_ms_bucket", "le", endpoint="/predict")
        buckets = {float(le): new[le] - old.get(le, 0.0) for le in new}
        for q in (0.5, 0.95, 0.99):
            value = histogram_quantile(q, buckets)
            if not math.isnan(value):
                series[f"p{round(q * 100)}"].append((after.time, value))
    return dict(series)


def _gauge(snapshots: list[Snapshot], name: str, by: Grouping | None = None) -> Series:
    series: Series = defaultdict(list)
    for snapshot in snapshots:
        values: dict[str, float] = defaultdict(lambda: -math.inf)
        for labels, value in snapshot.select(name):
            key = _key(labels, by) if by else "value"
            values[key] = max(values[key], value)
        for key, value in values.items():
            series[key].append((snapshot.time, value))
    return dict(series)


SNAPSHOT_VIEWS: dict[str, Callable[[list[Snapshot]], Series]] = {
    "Request rate": lambda s: _rates(s, "iris_request_latency_ms_count", "endpoint"),
    "Errors": lambda s: _rates(s, "iris_errors_total", "error"),
    "Latency percentiles (POST /predict)": _latency_percentiles,
    "Memory (resident, per API worker max)": lambda s: _gauge(s, "iris_process_resident_memory_mb"),
    "CPU time per request": lambda s: _ratio(
        _rates(s, "iris_request_cpu_ms_sum", "endpoint"),
        _rates(s, "iris_request_cpu_ms_count", "endpoint"),
    ),
    "Data drift (PSI per feature)": lambda s: _gauge(s, "iris_feature_drift_psi", "feature"),
    "Class mix": lambda s: _rates(s, "iris_predictions_total", "class_name"),
    "Models in service": lambda s: {
        key.replace(" → ", ": "): points
        for key, points in _gauge(s, "iris_model_info", ("role", "model_tag")).items()
    },
    "Canary share": lambda s: {
        "answered by the challenger": _ratio(
            _rates(s, "iris_routed_requests_total", (), role="challenger"),
            _rates(s, "iris_routed_requests_total", ()),
        ).get("value", [])
    },
    "Shadow agreement": lambda s: {
        **_rates(s, "iris_shadow_predictions_total", "agreement"),
        **{
            f"not shadowed: {reason}": points
            for reason, points in _rates(s, "iris_shadow_skipped_total", "reason").items()
        },
    },
    "Shadow confusion (champion → challenger)": lambda s: _rates(
        s, "iris_shadow_confusion_total", ("champion_class", "challenger_class")
    ),
    "Live accuracy (labelled predictions)": lambda s: _gauge(
        s, "iris_live_accuracy", "model_version"
    ),
    "Live recall per class": lambda s: _gauge(
        s, "iris_live_recall", ("class_name", "model_version")
    ),
    "Labelled predictions (live window)": lambda s: {
        **_gauge(s, "iris_live_labelled", "model_version"),
        **{
            f"labels/s: {outcome}": points
            for outcome, points in _rates(s, "iris_feedback_total", "outcome").items()
        },
    },
    "Label delay": lambda s: _gauge(s, "iris_live_label_delay_seconds", "model_version"),
}


def panels_from_snapshots(snapshots: list[Snapshot]) -> dict[str, Series]:
    views = {}
    for panel in dashboard_panels():
        compute = SNAPSHOT_VIEWS.get(panel["title"])
        views[panel["title"]] = compute(snapshots) if compute else {}
    return views


def _flowers(
    count: int, shift_cm: float, rng: np.random.Generator
) -> tuple[list[dict[str, float]], list[str]]:
    """Iris flowers drawn at random (petals longer by `shift_cm`) and their true classes."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    rows = rng.integers(0, 150, count)
    data = iris.data[rows]
    data[:, 2:] += shift_cm  # petal length and width
    flowers = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in data.round(1)]
    return flowers, [CLASS_NAMES[target] for target in iris.target[rows]]


def traffic_with_snapshots(
    service_url: str,
    seconds: float,
    interval: float,
    max_requests: int,
    send_labels: bool = False,
) -> list[Snapshot]:
    """Bounded traffic (time and count): in-distribution, then shifted petals, some errors.
    With `send_labels`, the true class of every tenth flower sent alone goes back through
    POST /feedback: made-up ground truth that moves the service's live accuracy and that
    `make retrain` would train on, so only for a service this report started itself, or
    when asked explicitly (--send-labels)."""
    rng = np.random.default_rng(0)
    snapshots = [take_snapshot(service_url)]
    started = time.monotonic()
    sent = 0
    session = requests.Session()
    while time.monotonic() - started < seconds and sent < max_requests:
        shift_cm = 1.5 if time.monotonic() - started > seconds / 2 else 0.0
        if sent % 50 == 49:
            session.post(f"{service_url}/predict", json={"sepal_length": -1}, timeout=10)
        elif sent % 50 == 0:
            batch = {"flowers": _flowers(50, shift_cm, rng)[0]}
            session.post(f"{service_url}/predict_batch", json=batch, timeout=30)
        else:
            (flower,), (true_class,) = _flowers(1, shift_cm, rng)
            answer = session.post(f"{service_url}/predict", json=flower, timeout=10)
            if send_labels and sent % 10 == 1 and answer.status_code == 200:
                label = {"request_id": answer.headers["x-request-id"], "class_name": true_class}
                session.post(f"{service_url}/feedback", json=label, timeout=10)
        sent += 1
        if time.monotonic() - snapshots[-1].elapsed >= interval:
            snapshots.append(take_snapshot(service_url))
    if time.monotonic() - snapshots[-1].elapsed >= interval / 2:  # no tiny last interval
        snapshots.append(take_snapshot(service_url))
    return snapshots


# Where a service writes what it is told (predictions, labels): the scratch service of a
# report writes into its own folder, whatever the environment names.
SHARED_STORE_VARIABLE = re.compile(r"IRIS_(PREDICTION|FEEDBACK|RECORD)_\w*|IRIS_\w*_(URL|DSN)")


def scratch_store_env(log_dir: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """(variables to drop, variables to set) so that a scratch service keeps its prediction
    store under `log_dir`, never in a store shared through the environment."""
    import os

    from iris_service.records.store import sqlite_url

    unset = tuple(name for name in os.environ if SHARED_STORE_VARIABLE.fullmatch(name))
    return unset, {"IRIS_RECORD_STORE_URL": sqlite_url(log_dir / "service-records" / "records.db")}


@contextmanager
def started_service(log_dir: Path, port: int | None = None) -> Iterator[str]:
    """`make serve`'s service on 127.0.0.1 (`port`, else a free one), with the project's
    models and scratch logs (trains a model first if none)."""
    from .local_server import bento_server

    subprocess.run([sys.executable, "train.py", "--if-missing"], cwd=PROJECT_ROOT, check=True)
    unset, env = scratch_store_env(log_dir)
    with bento_server(None, log_dir, port=port, unset=unset, **env) as server:
        yield server.url


# --- plots -----------------------------------------------------------------------------------


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@dataclass(frozen=True)
class PanelStyle:
    """How one dashboard panel is drawn: the unit of its y axis, and what an empty panel
    means. `secondary` names series (by prefix) drawn on a right-hand axis with its own unit,
    so that a count and a rate never share one scale."""

    unit: str
    empty: str = "no data in this window"
    from_zero: bool = False
    ylim: tuple[float, float] | None = None
    secondary: tuple[str, str] | None = None  # (series prefix, unit of the right axis)


NOT_ENABLED = "not enabled: no challenger in {mode} mode (IRIS_CHALLENGER_MODE={mode})"
PANEL_STYLES: dict[str, PanelStyle] = {
    "Request rate": PanelStyle("requests/s", from_zero=True),
    "Errors": PanelStyle("errors/s", empty="no errors in this window", from_zero=True),
    "Latency percentiles (POST /predict)": PanelStyle("latency (ms)", from_zero=True),
    "Memory (resident, per API worker max)": PanelStyle("resident memory (MB)", from_zero=True),
    "CPU time per request": PanelStyle("CPU time per request (ms)", from_zero=True),
    "Data drift (PSI per feature)": PanelStyle("PSI (unitless, symlog scale)", from_zero=True),
    "Class mix": PanelStyle("predictions/s", from_zero=True),
    "Models in service": PanelStyle("in service (1 = yes)", ylim=(0, 1.3)),
    "Canary share": PanelStyle(
        "share of requests (%)", empty=NOT_ENABLED.format(mode="canary"), ylim=(0, 100)
    ),
    "Shadow agreement": PanelStyle(
        "predictions/s", empty=NOT_ENABLED.format(mode="shadow"), from_zero=True
    ),
    "Shadow confusion (champion → challenger)": PanelStyle(
        "predictions/s", empty=NOT_ENABLED.format(mode="shadow"), from_zero=True
    ),
    "Live accuracy (labelled predictions)": PanelStyle(
        "accuracy (share, 0-1)", empty="no labels received (POST /feedback)", ylim=(0, 1.05)
    ),
    "Live recall per class": PanelStyle(
        "recall (share, 0-1)", empty="no labels received (POST /feedback)", ylim=(0, 1.05)
    ),
    "Labelled predictions (live window)": PanelStyle(
        "labelled predictions (count)",
        empty="no labels received (POST /feedback)",
        from_zero=True,
        secondary=("labels/s", "labels received/s"),
    ),
    "Label delay": PanelStyle(
        "label delay (s)", empty="no labels received (POST /feedback)", from_zero=True
    ),
}
DRIFT_THRESHOLDS = (
    (0.1, "moderate drift (PSI 0.1)", "orange"),
    (0.25, "significant (0.25)", "red"),
)
DRIFT_TICKS = (0, 0.1, 0.25, 0.5, 1, 2, 5, 10)
TIME_AXIS = "time (UTC)"


def style_of(title: str) -> PanelStyle:
    return PANEL_STYLES.get(title, PanelStyle("value"))


def shown_series(title: str, series: Series) -> Series:
    """What a panel plots: the memory gauge named for what it is, canary shares in %, and
    a model's "in service" line only while it serves (the info gauge of a model replaced
    stays at 0, which read as a second champion)."""
    if style_of(title).empty.startswith("not enabled"):
        # a challenger's series exist at 0 while none serves: that is "not enabled", not data
        return {key: points for key, points in series.items() if any(v for _, v in points)}
    if title.startswith("Memory"):
        worker = "API worker (largest resident set)"
        return {  # 0 MB: the gauge before the worker's first reading
            (worker if key == "value" else key): [(t, v) for t, v in points if v > 0]
            for key, points in series.items()
        }
    if title == "Canary share":
        return {key: [(t, v * 100) for t, v in points] for key, points in series.items()}
    if title == "Models in service":
        return {
            key: [(t, v if v > 0 else math.nan) for t, v in points]
            for key, points in series.items()
            if any(v > 0 for _, v in points)
        }
    return series


def draw_panel(axes: Any, title: str, series: Series) -> None:
    """One panel: every axis labelled with its unit, thresholds in the legend, a note on an
    empty panel saying why it is empty."""
    from datetime import UTC, datetime

    import matplotlib
    import matplotlib.dates as mdates

    style = style_of(title)
    series = shown_series(title, series)
    right = axes.twinx() if style.secondary else None
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    plotted = 0
    for legend, points in sorted(series.items()):
        finite = [(datetime.fromtimestamp(t, UTC), v) for t, v in points if not math.isnan(v)]
        if not finite:
            continue
        on_right = right is not None and legend.startswith(style.secondary[0])
        (right if on_right else axes).plot(
            *zip(*finite, strict=True),
            label=legend,
            marker=".",
            markersize=3,
            color=colors[plotted % len(colors)],  # one cycle over both axes
            linestyle="--" if on_right else "-",
        )
        plotted += 1
    if title.startswith("Data drift"):
        axes.set_yscale("symlog", linthresh=1.0)
        axes.set_yticks(DRIFT_TICKS, [f"{tick:g}" for tick in DRIFT_TICKS])
        for value, label, color in DRIFT_THRESHOLDS:
            axes.axhline(value, color=color, linestyle="--", linewidth=1.2, label=label)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(style.unit, fontsize=8)
    axes.set_xlabel(TIME_AXIS, fontsize=8)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    axes.tick_params(labelsize=7)
    if style.ylim:
        axes.set_ylim(*style.ylim)
    elif style.from_zero and plotted:
        axes.set_ylim(bottom=0, top=axes.get_ylim()[1] * 1.1)  # headroom for the line
    if right is not None:
        right.set_ylabel(style.secondary[1], fontsize=8)
        right.tick_params(labelsize=7)
        if plotted:
            right.set_ylim(bottom=0)
    handles, labels = axes.get_legend_handles_labels()
    if right is not None:
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if plotted:
        axes.legend(handles, labels, fontsize=7, loc="upper left")
    else:
        axes.set_xticks([])  # no time range to show
        axes.text(
            0.5, 0.5, style.empty, ha="center", va="center", fontsize=8, color="dimgrey",
            transform=axes.transAxes, wrap=True,
        )  # fmt: skip


def overview_figure(views: dict[str, Series], source: str) -> Any:
    """All panels in one figure, two per row, the title above them (constrained layout, so
    the title never overlaps a panel)."""
    import matplotlib.pyplot as plt

    rows = math.ceil(len(views) / 2)
    figure, grid = plt.subplots(
        rows, 2, figsize=(13, 3.4 * rows), squeeze=False, layout="constrained"
    )
    for axes, (title, series) in zip(grid.flat, views.items(), strict=False):
        draw_panel(axes, title, series)
    for axes in list(grid.flat)[len(views) :]:
        axes.axis("off")
    figure.suptitle(f"Iris classifier — {source}", fontsize=13)
    return figure


def render(views: dict[str, Series], out_dir: Path, source: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for title, series in views.items():
        figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
        draw_panel(axes, title, series)
        path = out_dir / f"monitoring-{_slug(title)}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)

    figure = overview_figure(views, source)
    overview = out_dir / "monitoring.png"
    figure.savefig(overview, dpi=80)
    plt.close(figure)
    written.append(overview)
    return written


def render_feedback_loop(run: LoopRun, out_dir: Path) -> Path:
    """reports/feedback-loop.png: live accuracy per model version, drift (max PSI) and the
    champion against the flowers sent (predicted and labelled), with the loop's phases and the
    time each took marked (tools/feedback_loop.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    sent = [sample.flowers_sent for sample in run.samples]
    figure, (accuracy, drift, champion) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for tag in sorted({tag for sample in run.samples for tag in sample.accuracy}):
        points = [
            (x, s.accuracy[tag])
            for x, s in zip(sent, run.samples, strict=True)
            if tag in s.accuracy
        ]
        accuracy.plot(*zip(*points, strict=True), marker=".", label=tag)
    accuracy.axhline(0.9, color="red", linestyle="--", linewidth=1)
    accuracy.set_ylabel("live accuracy")
    accuracy.set_ylim(0, 1.1)
    accuracy.legend(fontsize=7, loc="lower left")
    psi = [(x, s.max_psi) for x, s in zip(sent, run.samples, strict=True) if s.max_psi is not None]
    if psi:
        drift.plot(*zip(*psi, strict=True), marker=".", color="purple")
    drift.axhline(0.1, color="orange", linestyle="--", linewidth=1)
    drift.axhline(0.25, color="red", linestyle="--", linewidth=1)
    drift.set_ylabel("max PSI")
    tags = list(dict.fromkeys(sample.champion for sample in run.samples))
    champion.step(sent, [tags.index(s.champion) for s in run.samples], where="post")
    champion.set_yticks(range(len(tags)), tags, fontsize=7)
    champion.set_ylabel("champion")
    champion.set_xlabel("flowers predicted and labelled")
    for axes in (accuracy, drift, champion):
        for phase in run.phases:
            axes.axvline(phase.flowers_before, color="grey", linewidth=0.5)
    labels: dict[int, list[str]] = defaultdict(list)
    for phase in run.phases:
        labels[phase.flowers_before].append(f"{phase.name} {phase.seconds:.1f} s")
    for x, names in labels.items():
        accuracy.annotate("\n".join(names), (x, 1.08), fontsize=7, va="top", ha="left")
    figure.suptitle("Feedback loop: shift, labels, retrain, promote, recovery")
    figure.tight_layout()
    path = out_dir / "feedback-loop.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--prometheus-url", help="render the dashboard queries from this Prometheus"
    )
    source.add_argument("--service-url", help="snapshot /metrics of this running service")
    parser.add_argument("--minutes", type=float, default=15, help="query range (Prometheus)")
    parser.add_argument("--step", type=float, default=5, help="query step in seconds")
    parser.add_argument("--seconds", type=float, default=20, help="traffic duration (snapshots)")
    parser.add_argument("--interval", type=float, default=2, help="seconds between snapshots")
    parser.add_argument("--max-requests", type=int, default=5000, help="traffic bound")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="127.0.0.1 port of the service this report starts (default: a free one)",
    )
    parser.add_argument(
        "--send-labels",
        action="store_true",
        help=(
            "with --service-url: also POST made-up labels to /feedback (they lower its live "
            "accuracy and `make retrain` trains on them); without it no label is sent there"
        ),
    )
    parser.add_argument(
        "--feedback-loop",
        action="store_true",
        help="also run the feedback loop in a scratch state and plot it (docs/feedback.md)",
    )
    args = parser.parse_args(argv)
    if args.feedback_loop:
        from .feedback_loop import scratch_loop

        run = scratch_loop(flowers_per_phase=150, retrain_args=LOOP_RETRAIN_ARGS, port=args.port)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "feedback-loop.json").write_text(json.dumps(run.record(), indent=2))
        print(render_feedback_loop(run, args.out_dir))
        print(args.out_dir / "feedback-loop.json")

    if args.prometheus_url:
        views = panels_from_prometheus(args.prometheus_url, args.minutes, args.step)
        label = f"Prometheus {args.prometheus_url}, last {args.minutes:g} min"
    elif args.service_url:
        if args.send_labels:
            print(
                f"WARNING: --send-labels: made-up labels go to {args.service_url}/feedback; "
                "they lower its live accuracy and `make retrain` will train on them.",
                file=sys.stderr,
            )
        else:
            print(f"Sending predictions only (no labels) to {args.service_url}.")
        snapshots = traffic_with_snapshots(
            args.service_url, args.seconds, args.interval, args.max_requests, args.send_labels
        )
        views, label = panels_from_snapshots(snapshots), f"/metrics of {args.service_url}"
        print(render_from_service(args.service_url, args.out_dir) or "no explanations.png")
    else:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="iris-report-"))
        with started_service(scratch, args.port) as url:
            snapshots = traffic_with_snapshots(
                url, args.seconds, args.interval, args.max_requests, send_labels=True
            )
            print(render_from_service(url, args.out_dir) or "no explanations.png")
        views, label = panels_from_snapshots(snapshots), "/metrics of a local bentoml serve"
    for path in render(views, args.out_dir, label):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
