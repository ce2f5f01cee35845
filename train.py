"""Train Iris candidates, compile them to ONNX, track them in MLflow, register and import
the best run's model.

Every candidate is converted to ONNX and checked against its scikit-learn model
(iris_pipeline/compiling.py); one that does not answer alike is left out of the choice.

The winner becomes a new version of the MLflow registered model and of the BentoML model,
and the `challenger`; it is made `champion` only by `make promote` (iris_pipeline.lifecycle),
except when the registry has no champion yet. A champion whose model is missing from the
BentoML store (a wiped state/bentoml) is restored from the MLflow registry, never replaced.
The stores are the project's (state/) unless the environment names them
(iris_pipeline/paths.py), whoever starts this script.

python train.py                      # all candidates, default seed
python train.py --candidates logistic_regression random_forest --seed 7
python train.py --if-missing         # do nothing when a champion is already in the store
python train.py --label-noise 0.4    # a deliberately worse model (test and demo aid)
python train.py --with-feedback      # `make retrain`: Iris plus the labelled feedback
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from iris_pipeline.training import CANDIDATES
from iris_service.names import MODEL_NAME

if TYPE_CHECKING:
    import numpy as np

    from iris_pipeline.training import CandidateResult, Dataset

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Train scikit-learn candidates on Iris, compile each to ONNX and check that it "
            "answers like scikit-learn (a candidate that does not is left out), track every "
            "run in MLflow, register the best run (test macro-F1, ties broken by CV macro-F1 "
            "then single-row ONNX Runtime latency) as the challenger (the champion when the "
            "registry has none) and import its models into the BentoML model store."
        )
    )
    parser.add_argument(
        "--experiment-name",
        default="iris-classifier",
        help="MLflow experiment (default: %(default)s)",
    )
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=list(CANDIDATES),
        metavar="FAMILY",
        help=f"model families to train (default: all of {', '.join(CANDIDATES)})",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--test-size", type=float, default=0.2, help="held-out share (default: %(default)s)"
    )
    parser.add_argument("--cv-folds", type=int, default=5, help="CV folds (default: %(default)s)")
    parser.add_argument(
        "--model-name",
        default=MODEL_NAME,
        help="name in the BentoML model store and the MLflow registry (default: %(default)s)",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help=(
            "exit successfully without training when the champion is in the BentoML store "
            "(restored from the MLflow registry when it was lost)"
        ),
    )
    parser.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="SHARE",
        help=(
            "test and demo aid: give this share of the training labels a wrong class, to make "
            "a deliberately worse model that `make promote` must refuse (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--with-feedback",
        action="store_true",
        help=(
            "`make retrain`: also train on the labelled feedback (POST /feedback), but for "
            "its newest share, which the quality gate judges on (docs/feedback.md)"
        ),
    )
    parser.add_argument(
        "--record-store",
        metavar="URL",
        help=(
            "the prediction store to read labels from (default: the service's, "
            "IRIS_RECORD_STORE_URL or the SQLite file under BENTOML_HOME)"
        ),
    )
    args = parser.parse_args(argv)
    unknown = [family for family in args.candidates if family not in CANDIDATES]
    if unknown:
        parser.error(
            f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}"
        )
    if not 0.05 <= args.test_size <= 0.5:
        parser.error("--test-size must be between 0.05 and 0.5")
    if not 2 <= args.cv_folds <= 20:
        parser.error("--cv-folds must be between 2 and 20")
    if not 0.0 <= args.label_noise < 1.0:
        parser.error("--label-noise must be at least 0 and below 1")
    return args


def run(args: argparse.Namespace) -> int:
    from iris_pipeline import gate, registry, tracking, training
    from iris_pipeline.compiling import compile_candidate, servable_candidates

    print(f"Stores: MLflow {tracking.tracking_uri()}, BentoML {os.environ['BENTOML_HOME']}")
    # The champion's tag once its model is in the BentoML store (restored if it was lost).
    restored = _restore_champion(args.model_name)
    if args.if_missing and restored is not None:
        print(f"Champion {restored} is in the BentoML store; not training.")
        return EXIT_OK

    feedback, extra = None, None
    if args.with_feedback:
        from iris_pipeline import feedback_data

        everything = feedback_data.load_feedback(args.record_store)
        feedback, held_out = everything.split_recent()
        extra = (feedback.x, feedback.y)
        print(
            f"Feedback {everything.source}: {len(everything)} labels; training on the "
            f"{len(feedback)} oldest, {len(held_out)} held out for the quality gate"
        )
    data = training.load_dataset(args.seed, args.test_size, args.label_noise, extra)
    stats = training.feature_statistics(data.x_train)
    experiment_id = tracking.ensure_experiment(args.experiment_name)
    families = list(dict.fromkeys(args.candidates))
    print(
        f"Training {len(families)} candidate(s) on {len(data.x_train)} flowers (seed "
        f"{args.seed}), scored on {len(data.x_test)} held-out test flowers and by "
        f"{args.cv_folds}-fold cross-validation; MLflow experiment {args.experiment_name!r}"
    )
    if args.label_noise:
        print(f"  label noise: {args.label_noise:.0%} of the training labels are wrong on purpose")
    print(
        f"  {'candidate':<20} {'test macro-F1':>13} {'CV macro-F1':>12} {'predict':>10}  MLflow run"
    )

    results = []
    for family in families:
        result = training.evaluate_candidate(family, data, args.seed, args.cv_folds)
        result.params["label_noise"] = str(args.label_noise)
        compile_candidate(result, data)
        result.run_id = tracking.log_candidate(result, data, stats, experiment_id, feedback)
        results.append(result)
        metrics = result.metrics
        print(
            f"  {family:<20} {metrics['test_macro_f1']:>13.4f} "
            f"{metrics['cv_macro_f1_mean']:>12.4f} {metrics['predict_latency_ms']:>7.2f} ms  "
            f"{result.run_id}"
        )
        _print_compilation(result)

    best = training.select_best(servable_candidates(results))
    assert best.run_id is not None
    print(f"Chosen: {training.explain_choice(servable_candidates(results), best)}")
    # Scored on the gate's flowers only now, after the choice, so they never pick a model.
    evaluation = _gate_evaluation(args, data)
    gate_figures = gate.gate_metrics(best.model, evaluation[0], evaluation[1])
    tracking.log_gate_metrics(best.run_id, gate_figures)
    version = tracking.register_best(best, args.model_name)
    bento_model = tracking.import_into_bentoml(
        best, stats, version, args.experiment_name, args.model_name, gate_figures[gate.MACRO_F1]
    )
    role = registry.enter_new_version(args.model_name, version, str(bento_model.tag))
    print(
        f"Registered {best.family} as MLflow registry version {version}, BentoML model "
        f"{bento_model.tag} (gate macro-F1 {gate_figures[gate.MACRO_F1]:.4f} on the "
        f"{len(evaluation[1])} gate flowers no candidate was chosen on)"
    )
    if role == registry.CHAMPION:
        print(f"Version {version} is the champion (the registry had none yet).")
    else:
        print(f"Version {version} is the challenger; `make promote` runs the quality gate.")
        if restored is None:
            print(
                "The champion's model is in neither store: `make promote` refuses until it "
                "is back (or FORCE=1 promotes without the gate)."
            )
    return EXIT_OK


def _print_compilation(result: CandidateResult) -> None:
    """Under a candidate's line: its ONNX model's equivalence, or why it is left out."""
    if result.compilation is None:
        return
    equivalence = result.compilation.equivalence
    if result.compilation.servable:
        print(
            f"  {'':<20} ONNX {equivalence.describe()}; ONNX Runtime "
            f"{result.metrics['predict_latency_ms']:.3f} ms, scikit-learn "
            f"{result.metrics['sklearn_predict_latency_ms']:.3f} ms"
        )
    else:
        print(f"  {'':<20} EXCLUDED from the choice: ONNX {equivalence.describe()}")


def _restore_champion(name: str) -> str | None:
    """The champion's BentoML tag, after bringing its model back from the MLflow registry
    when the BentoML store lost it (iris_pipeline/restore.py); None when there is no
    champion or it cannot be restored (said on stderr)."""
    from iris_pipeline import registry, restore

    before = registry.serving_champion(name)
    if before is not None:
        return before
    try:
        tag = restore.restore_champion(name)
    except restore.RestoreError as exc:
        print(f"train.py: warning: the champion's model cannot be restored: {exc}", file=sys.stderr)
        return None
    if tag is not None:
        print(f"Restored the champion's model {tag} from the MLflow registry into BentoML.")
    return tag


def _gate_evaluation(args: argparse.Namespace, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """What the quality gate judges on: the gate set, plus held-out feedback when retraining
    (iris_pipeline/feedback_data.py)."""
    if args.with_feedback:
        from iris_pipeline import feedback_data

        evaluation = feedback_data.evaluation_set(args.record_store)
        return evaluation.x, evaluation.y
    return data.x_gate.to_numpy(), data.y_gate


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return run(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as exc:  # a clear one-line error instead of a traceback
        print(f"train.py: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
