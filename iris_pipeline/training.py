"""Training helpers: data, candidate models, evaluation, feature statistics, selection.

Nothing here talks to MLflow or BentoML; `tracking.py` does. That keeps these pieces
pure and unit-testable.

Models are fitted on plain arrays whose columns are in FEATURE_NAMES order: the service
builds its rows from named, validated fields in that order, so the serving path needs no
pandas (which would add a second of cold start and a DataFrame per batch). The MLflow
signature still names the columns, so MLflow's own pyfunc maps DataFrames by name.

scikit-learn is imported by the functions that use it, not here: importing it (and SciPy)
takes about a second and a half, which `train.py --if-missing` would pay for the names of
the candidates alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from iris_service.names import CLASS_NAMES, FEATURE_NAMES

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from .compiling import Compilation

QUANTILE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _logistic_regression(seed: int) -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def _random_forest(seed: int) -> RandomForestClassifier:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, random_state=seed)


def _svm(seed: int) -> Pipeline:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    calibrated = CalibratedClassifierCV(SVC(random_state=seed), ensemble=False)
    return make_pipeline(StandardScaler(), calibrated)


def _gradient_boosting(seed: int) -> GradientBoostingClassifier:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(random_state=seed)


CANDIDATES: dict[str, Callable[[int], BaseEstimator]] = {
    "logistic_regression": _logistic_regression,
    "random_forest": _random_forest,
    "svm": _svm,
    "gradient_boosting": _gradient_boosting,
}


# The quality gate's evaluation set (iris_pipeline/gate.py): a fixed, stratified share of
# Iris carved out with its own seed before anything else, so it is the same flowers whatever
# `--seed` a training uses, and no candidate is fitted, cross-validated or selected on it.
GATE_SHARE = 0.2
GATE_SEED = 20261201


@dataclass(frozen=True)
class Dataset:
    """Train and test splits for fitting and choosing among candidates; the gate set apart."""

    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    x_gate: pd.DataFrame
    y_gate: np.ndarray


@dataclass
class CandidateResult:
    """Everything measured about one trained candidate."""

    family: str
    model: BaseEstimator
    metrics: dict[str, float]
    confusion: np.ndarray
    params: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    compilation: Compilation | None = None  # its ONNX form and equivalence (compiling.py)
    # The logged model (`models:/m-...`), registered as it is (tracking.register_best).
    model_uri: str | None = None


def gate_set() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    """(features, labels) of the rest of Iris and of the gate set, split the same way always."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    features = pd.DataFrame(iris.data, columns=list(FEATURE_NAMES))
    x_rest, x_gate, y_rest, y_gate = train_test_split(
        features, iris.target, test_size=GATE_SHARE, stratify=iris.target, random_state=GATE_SEED
    )
    return x_rest, np.asarray(y_rest), x_gate, np.asarray(y_gate)


def load_dataset(
    seed: int,
    test_size: float = 0.2,
    label_noise: float = 0.0,
    extra: tuple[pd.DataFrame, np.ndarray] | None = None,
) -> Dataset:
    """Iris (shipped with scikit-learn, no download) without the gate set, plus the `extra`
    labelled flowers (feedback, for `make retrain`), split with stratification into train
    and test; `label_noise` corrupts that share of the training labels (see corrupt_labels)."""
    from sklearn.model_selection import train_test_split

    x_rest, y_rest, x_gate, y_gate = gate_set()
    if extra is not None and len(extra[1]):
        x_rest = pd.concat([x_rest, extra[0]], ignore_index=True)
        y_rest = np.concatenate([y_rest, extra[1]])
    x_train, x_test, y_train, y_test = train_test_split(
        x_rest, y_rest, test_size=test_size, stratify=y_rest, random_state=seed
    )
    y_train = corrupt_labels(np.asarray(y_train), label_noise, seed)
    return Dataset(x_train, x_test, y_train, np.asarray(y_test), x_gate, y_gate)


def corrupt_labels(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A copy of `labels` where `share` of them (chosen at random) name another class.

    A test and demo aid, never a training option for a model meant to serve: it makes a
    deliberately worse model that the quality gate must refuse.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"label noise must be between 0 and 1, got {share}")
    corrupted = labels.copy()
    if share == 0.0:
        return corrupted
    rng = np.random.default_rng(seed)
    chosen = rng.choice(labels.size, size=round(share * labels.size), replace=False)
    shift = rng.integers(1, len(CLASS_NAMES), size=chosen.size)
    corrupted[chosen] = (corrupted[chosen] + shift) % len(CLASS_NAMES)
    return corrupted


def build_candidate(family: str, seed: int) -> BaseEstimator:
    try:
        factory = CANDIDATES[family]
    except KeyError:
        known = ", ".join(CANDIDATES)
        raise ValueError(f"unknown candidate {family!r}; choose from: {known}") from None
    return factory(seed)


def single_row_latency_ms(
    model: Any, row: np.ndarray, repeats: int = 200, budget_s: float = 0.5
) -> float:
    """Median wall time of predict_proba on one row: the serving cost of the model itself
    (a scikit-learn estimator, or the ONNX Runtime session of compiling.OnnxPredictor).
    `repeats` calls, or as many as fit in `budget_s` (at least 11): a median of tens of
    calls of a slow model says as much as 200, which would take seconds."""
    model.predict_proba(row)  # warm-up
    timings: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(timings) < repeats and (len(timings) < 11 or time.perf_counter() < deadline):
        start = time.perf_counter()
        model.predict_proba(row)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) * 1000)


def evaluate_candidate(family: str, data: Dataset, seed: int, cv_folds: int = 5) -> CandidateResult:
    """Cross-validate on the training split, then fit on it and score the held-out split."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_validate

    estimator = build_candidate(family, seed)
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    x_train, x_test = data.x_train.to_numpy(), data.x_test.to_numpy()
    cv = cross_validate(
        clone(estimator), x_train, data.y_train, cv=folds, scoring=("accuracy", "f1_macro")
    )
    model = estimator.fit(x_train, data.y_train)
    predicted = model.predict(x_test)
    metrics = {
        "cv_accuracy_mean": float(np.mean(cv["test_accuracy"])),
        "cv_accuracy_std": float(np.std(cv["test_accuracy"])),
        "cv_macro_f1_mean": float(np.mean(cv["test_f1_macro"])),
        "cv_macro_f1_std": float(np.std(cv["test_f1_macro"])),
        "test_accuracy": float(accuracy_score(data.y_test, predicted)),
        "test_macro_f1": float(f1_score(data.y_test, predicted, average="macro")),
        # The served latency, `predict_latency_ms`, is ONNX Runtime's (compiling.py).
        "sklearn_predict_latency_ms": single_row_latency_ms(model, x_test[:1]),
    }
    params = {key: str(value) for key, value in model.get_params(deep=False).items()}
    params.update({"family": family, "seed": str(seed), "cv_folds": str(cv_folds)})
    confusion = confusion_matrix(data.y_test, predicted, labels=list(range(len(CLASS_NAMES))))
    return CandidateResult(family, model, metrics, confusion, _flat_params(params))


def _flat_params(params: dict[str, str]) -> dict[str, str]:
    """MLflow caps parameter values at 6000 characters; pipelines print long reprs."""
    return {key: value[:500] for key, value in params.items()}


def selection_key(result: CandidateResult) -> tuple[float, float, float, str]:
    """Order used to pick the best run: higher is better for every element.

    1. test macro-F1 (rounded to 4 decimals so float noise does not decide);
    2. on a tie, cross-validated macro-F1 (steadier than a 30-flower test split);
    3. then the faster single-row predict of what serves, the ONNX Runtime session
       (`predict_latency_ms`, set by compiling.compile_candidate): cheaper to serve;
    4. then the family name, so the choice is always deterministic.
    """
    return (
        round(result.metrics["test_macro_f1"], 4),
        round(result.metrics["cv_macro_f1_mean"], 4),
        -round(result.metrics["predict_latency_ms"], 2),
        result.family,
    )


# What each element of selection_key compares, in order, and how to print its value.
SELECTION_CRITERIA = (
    ("test macro-F1", "test_macro_f1", "{:.4f}"),
    ("cross-validated macro-F1", "cv_macro_f1_mean", "{:.4f}"),
    ("single-row predict time", "predict_latency_ms", "{:.2f} ms"),
)


def explain_choice(results: Sequence[CandidateResult], best: CandidateResult) -> str:
    """One sentence saying which criterion of selection_key decided, and against whom."""
    contenders = list(results)
    if len(contenders) == 1:
        return f"{best.family} is the only candidate."
    best_key = selection_key(best)
    tied_on: list[str] = []
    for index, (label, metric, shape) in enumerate(SELECTION_CRITERIA):
        tied = [r for r in contenders if selection_key(r)[index] == best_key[index]]
        if len(tied) == 1:
            others = [r for r in contenders if r is not best]
            runner_up = max(others, key=selection_key)
            value = shape.format(best.metrics[metric])
            against = shape.format(runner_up.metrics[metric])
            lead = (
                f"{len(contenders)} candidates tie on {' and '.join(tied_on)}, so "
                if tied_on
                else ""
            )
            better = "lowest" if metric == "predict_latency_ms" else "highest"
            return (
                f"{lead}{best.family} has the {better} {label}: {value} "
                f"(next: {runner_up.family}, {against})."
            )
        tied_on.append(f"{label} {shape.format(best.metrics[metric])}")
        contenders = tied
    return (
        f"{len(contenders)} candidates tie on {' and '.join(tied_on)}; "
        f"{best.family} comes last in alphabetical order."
    )


def select_best(results: Sequence[CandidateResult]) -> CandidateResult:
    if not results:
        raise ValueError("no candidates were trained")
    return max(results, key=selection_key)


def feature_statistics(features: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Per-feature training statistics that drift monitoring compares live traffic with."""
    stats: dict[str, dict[str, object]] = {}
    for name in features.columns:
        column = features[name].to_numpy(dtype=float)
        stats[name] = {
            "count": int(column.size),
            "mean": float(np.mean(column)),
            "std": float(np.std(column, ddof=1)),
            "min": float(np.min(column)),
            "max": float(np.max(column)),
            "quantile_levels": list(QUANTILE_LEVELS),
            "quantiles": [float(q) for q in np.quantile(column, QUANTILE_LEVELS)],
            **drift_bins(column),
        }
    return stats


def drift_bins(column: np.ndarray) -> dict[str, list[float]]:
    """Bins for drift monitoring (iris_service/monitoring/drift.py): the distinct inner
    deciles as cut points, bin i = (cut[i-1], cut[i]], and the exact share of training values
    in each bin (measurements repeat, so a decile's own value can hold far more than 10 %)."""
    cut_points = np.unique(np.quantile(column, QUANTILE_LEVELS[1:-1]))
    bins = np.searchsorted(cut_points, column, side="left")
    shares = np.bincount(bins, minlength=cut_points.size + 1) / column.size
    return {"bin_cut_points": cut_points.tolist(), "bin_shares": shares.tolist()}
