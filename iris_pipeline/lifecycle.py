"""`make promote`, `make rollback`, `make models`: move the registry's aliases, through the
quality gate, and mirror them to the file the running service follows.

python -m iris_pipeline.lifecycle models [--service-url URL]
python -m iris_pipeline.lifecycle promote [--version N] [--force] [--recall-margin 0.05]
python -m iris_pipeline.lifecycle rollback
python -m iris_pipeline.lifecycle gate [--recall-margin 0.05]   # judge only (make retrain)

Exit status: 0 done, 1 error, 2 bad usage, 3 the quality gate refused the promotion.
See docs/lifecycle.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from iris_pipeline import gate, registry
from iris_pipeline.served_version import DEFAULT_SERVICE_URL, ask_service
from iris_service.inference.model_aliases import aliases_path
from iris_service.names import MODEL_NAME

if TYPE_CHECKING:
    from iris_pipeline.feedback_data import EvaluationSet

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


class LifecycleError(RuntimeError):
    """A command that cannot be carried out, with what to do about it."""


def _stored_tag(name: str, version: str) -> str:
    """The version's BentoML tag, which must be in the store (the service loads it there)."""
    tag = registry.bentoml_tag(name, version)
    if not registry.in_bentoml_store(tag):
        raise LifecycleError(
            f"version {version} has no model in the BentoML store ({tag or 'no bentoml_tag'}); "
            "the service could not load it"
        )
    assert tag is not None
    return tag


def _stored_onnx(tag: str) -> tuple[dict, bytes | None]:
    """The stored model's metadata and the bytes of its `model.onnx` (None when absent)."""
    import bentoml

    from iris_pipeline.compiling import ONNX_FILE

    stored = bentoml.models.get(tag)
    onnx_file = Path(stored.path_of(ONNX_FILE))
    return dict(stored.info.metadata), onnx_file.read_bytes() if onnx_file.is_file() else None


def _compiled_check(name: str, version: str, tag: str) -> gate.CompiledCheck:
    """Whether the service can run the version's stored model (gate.compiled_check)."""
    metadata, onnx_bytes = _stored_onnx(tag)
    tags = registry.client().get_model_version(name, version).tags
    return gate.compiled_check(version, tags, metadata, onnx_bytes)


def _gate_figures(tag: str, evaluation: EvaluationSet) -> dict[str, float]:
    """The stored model's gate metrics, computed by ONNX Runtime from the very `model.onnx`
    the service loads."""
    import hashlib

    from iris_pipeline.compiling import CompiledModel, OnnxPredictor

    metadata, onnx_bytes = _stored_onnx(tag)
    if onnx_bytes is None:
        raise LifecycleError(f"{tag} has no ONNX model (trained before models were compiled)")
    if hashlib.sha256(onnx_bytes).hexdigest() != metadata.get("onnx_sha256"):
        raise LifecycleError(f"{tag}'s model.onnx does not match the SHA-256 recorded at training")
    compiled = CompiledModel(
        onnx_bytes, metadata["onnx_input"], metadata["onnx_probabilities_output"]
    )
    return gate.gate_metrics(OnnxPredictor(compiled), evaluation.x, evaluation.y)


def _refuse_uncompiled(
    name: str, candidate: str, champion: str | None, force: bool, check: gate.CompiledCheck
) -> int:
    """Refuse a version the service cannot run, FORCE or not, and record it."""
    run_id = registry.record_action(
        name,
        "promote",
        tags={
            "verdict": "not-servable",
            "forced": str(force).lower(),
            "version": candidate,
            "reason": check.reason[:5000],
        },
        params={
            "challenger_version": candidate,
            "champion_version": champion or "none",
            "forced": force,
        },
    )
    print(
        f"Refused: {check.reason}. FORCE cannot override this: the service could not serve "
        f"it. Recorded in MLflow run {run_id}.",
        file=sys.stderr,
    )
    return EXIT_REFUSED


def _check_version(name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        registry.client().get_model_version(name, version)
    except MlflowException:
        raise LifecycleError(f"{name} has no version {version!r} in the registry") from None


def _run_gate(
    name: str, champion: str, candidate: str, candidate_tag: str, recall_margin: float
) -> gate.Verdict:
    """Compare both stored models on the gate set (and the held-out recent feedback) and
    print every figure."""
    # Only the gate reads the prediction store (and needs the dataset and scikit-learn).
    from iris_pipeline import feedback_data

    champion_tag = _stored_tag(name, champion)
    evaluation = feedback_data.evaluation_set()
    verdict = gate.judge(
        _gate_figures(champion_tag, evaluation),
        _gate_figures(candidate_tag, evaluation),
        recall_margin,
    )
    print(
        f"Quality gate: version {candidate} ({candidate_tag}) against the champion, version "
        f"{champion} ({champion_tag}), on {evaluation.describe()}; recall margin "
        f"{recall_margin}"
    )
    for check in verdict.checks:
        print(f"  {check.describe()}")
    return verdict


def _gate_metrics_record(verdict: gate.Verdict | None) -> dict[str, float]:
    """Both models' figures and the thresholds, as MLflow metrics of the promote run."""
    metrics: dict[str, float] = {}
    for check in verdict.checks if verdict else ():
        metrics[f"champion_{check.metric}"] = check.champion
        metrics[f"challenger_{check.metric}"] = check.challenger
        metrics[f"threshold_{check.metric}"] = check.threshold
    return metrics


def _verdict_name(verdict: gate.Verdict | None, force: bool, champion: str | None) -> str:
    if verdict is None:
        return "no-champion" if champion is None else "forced-unchecked"
    if verdict.passed:
        return "passed"
    return "forced" if force else "refused"


def promote(name: str, version: str | None, force: bool, recall_margin: float) -> int:
    """Make `version` (default: the challenger) champion if the gate passes, or if forced."""
    candidate = version or registry.alias_version(name, registry.CHALLENGER)
    if candidate is None:
        raise LifecycleError(
            "there is no challenger to promote: train one with `make train`, "
            "or name a version with VERSION=n"
        )
    _check_version(name, candidate)
    champion = registry.alias_version(name, registry.CHAMPION)
    if candidate == champion:
        print(f"Version {candidate} is already the champion; nothing to do.")
        return EXIT_OK
    candidate_tag = _stored_tag(name, candidate)
    compiled = _compiled_check(name, candidate, candidate_tag)
    if not compiled.passed:
        return _refuse_uncompiled(name, candidate, champion, force, compiled)
    verdict = None
    if champion is not None:
        try:
            verdict = _run_gate(name, champion, candidate, candidate_tag, recall_margin)
        except LifecycleError as exc:
            if not force:
                raise LifecycleError(
                    f"the gate cannot compare with the champion: {exc}. "
                    f"To promote without the gate: make promote VERSION={candidate} FORCE=1"
                ) from None
            print(f"Quality gate skipped ({exc}); promoting because of FORCE.")
    outcome = _verdict_name(verdict, force, champion)
    run_id = registry.record_action(
        name,
        "promote",
        tags={"verdict": outcome, "forced": str(force).lower(), "version": candidate},
        params={
            "challenger_version": candidate,
            "champion_version": champion or "none",
            "recall_margin": recall_margin,
            "forced": force,
        },
        metrics=_gate_metrics_record(verdict),
    )
    if outcome == "refused":
        assert verdict is not None
        failed = "; ".join(
            f"{check.metric} {check.challenger:.4f} < {check.threshold:.4f} "
            f"(champion {check.champion:.4f})"
            for check in verdict.failed
        )
        print(
            f"Refused: version {candidate} is worse than the champion on the gate set: "
            f"{failed}. Recorded in MLflow run {run_id}. "
            f"To promote it anyway: make promote VERSION={candidate} FORCE=1",
            file=sys.stderr,
        )
        return EXIT_REFUSED

    _make_champion(name, candidate, champion)
    registry.tag_version(
        name,
        candidate,
        {
            "promoted_at": registry.now(),
            "promoted_by": registry.actor(),
            "promotion_run_id": run_id,
            "forced": str(force).lower(),
        },
    )
    registry.mirror_aliases(name)
    print(
        f"Version {candidate} ({candidate_tag}) is now the champion (gate: {outcome}); "
        f"previous champion: {champion or 'none'}. MLflow run {run_id}; "
        f"aliases file {aliases_path(name)}"
    )
    return EXIT_OK


def judge_challenger(name: str, recall_margin: float) -> int:
    """Run the quality gate for the challenger without promoting it (`make retrain`):
    0 when it passes (or nothing serves to compare with), EXIT_REFUSED when it fails."""
    candidate = registry.alias_version(name, registry.CHALLENGER)
    champion = registry.alias_version(name, registry.CHAMPION)
    if candidate is None or champion is None:
        print("No challenger and champion to compare; nothing for the gate to judge.")
        return EXIT_OK
    candidate_tag = _stored_tag(name, candidate)
    compiled = _compiled_check(name, candidate, candidate_tag)
    if not compiled.passed:
        print(f"Version {candidate} cannot be promoted: {compiled.reason}.", file=sys.stderr)
        return EXIT_REFUSED
    verdict = _run_gate(name, champion, candidate, candidate_tag, recall_margin)
    if verdict.passed:
        print(f"Version {candidate} passes the gate; promote it with `make promote`.")
        return EXIT_OK
    print(f"Version {candidate} does not pass the gate; the champion stays.", file=sys.stderr)
    return EXIT_REFUSED


def _make_champion(name: str, candidate: str, champion: str | None) -> None:
    """Append the candidate to the champion history (the current champion stays just before
    it) and move the aliases; a promoted challenger is no longer the challenger."""
    history = [v for v in registry.champion_history(name) if v != candidate]
    if champion is not None and (not history or history[-1] != champion):
        history.append(champion)
    registry.set_champions(name, [*history, candidate])
    if registry.alias_version(name, registry.CHALLENGER) == candidate:
        registry.set_challenger(name, None)


def rollback(name: str) -> int:
    """Make the previous champion champion again; the current one leaves the history."""
    history = registry.champion_history(name)
    current = registry.alias_version(name, registry.CHAMPION)
    if current is None or len(history) < 2 or history[-1] != current:
        raise LifecycleError(
            "there is no previous champion to roll back to "
            f"(champion history: {history or 'empty'})"
        )
    previous = history[-2]
    previous_tag = _stored_tag(name, previous)
    run_id = registry.record_action(
        name,
        "rollback",
        tags={"from_version": current, "to_version": previous},
        params={"from_version": current, "to_version": previous},
    )
    registry.set_champions(name, history[:-1])
    registry.tag_version(
        name,
        current,
        {"rolled_back_at": registry.now(), "rolled_back_by": registry.actor()},
    )
    registry.mirror_aliases(name)
    print(
        f"Rolled back: version {previous} ({previous_tag}) is the champion again, in place of "
        f"version {current}. MLflow run {run_id}; aliases file {aliases_path(name)}"
    )
    return EXIT_OK


def _notes(info: registry.VersionInfo) -> str:
    notes = []
    if info.tags.get("forced") == "true":
        notes.append("forced")
    if info.tags.get("rolled_back_at"):
        notes.append("rolled back")
    return ", ".join(notes)


def models(name: str, service_url: str) -> int:
    """Print every registered version and which one a running service uses."""
    versions = registry.list_versions(name)
    if not versions:
        print(f"No version of {name} in the registry yet: run `make train`.")
        return EXIT_OK
    served = ask_service(service_url, name)
    header = (
        "VERSION",
        "BENTOML TAG",
        "FAMILY",
        "TEST F1",
        "GATE F1",
        "ALIASES",
        "SERVED",
        "NOTES",
    )
    rows = [header]
    for info in versions:
        test_f1, gate_f1 = info.metrics.get("test_macro_f1"), info.metrics.get("gate_macro_f1")
        rows.append(
            (
                info.version,
                info.bentoml_tag or "-",
                info.family,
                f"{test_f1:.4f}" if test_f1 is not None else "-",
                f"{gate_f1:.4f}" if gate_f1 is not None else "-",
                ",".join(info.aliases) or "-",
                (served.tags[info.bentoml_tag] or "yes")
                if info.bentoml_tag in served.tags
                else "-",
                _notes(info) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    print(f"Running service: {served.summary()}")
    return EXIT_OK


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m iris_pipeline.lifecycle",
        description="Model versions, the quality gate, promotion and rollback (docs/lifecycle.md).",
    )
    parser.add_argument(
        "--model-name", default=MODEL_NAME, help="registered model (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("models", help="every version, its aliases, what serves")
    listing.add_argument(
        "--service-url",
        default=os.environ.get("SERVICE_URL") or DEFAULT_SERVICE_URL,
        help="running service to ask (default: $SERVICE_URL or %(default)s)",
    )
    promoting = commands.add_parser("promote", help="challenger -> champion through the gate")
    promoting.add_argument("--version", help="registry version to promote (default: challenger)")
    promoting.add_argument(
        "--force", action="store_true", help="promote even if the gate refuses (recorded)"
    )
    promoting.add_argument(
        "--recall-margin",
        type=float,
        default=gate.DEFAULT_RECALL_MARGIN,
        help="largest drop of any class's recall allowed (default: %(default)s)",
    )
    commands.add_parser("rollback", help="the previous champion becomes champion again")
    judging = commands.add_parser("gate", help="judge the challenger, promote nothing")
    judging.add_argument(
        "--recall-margin",
        type=float,
        default=gate.DEFAULT_RECALL_MARGIN,
        help="largest drop of any class's recall allowed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.command in ("promote", "gate"):
        if not 0.0 <= args.recall_margin <= 1.0:
            parser.error("--recall-margin must be between 0 and 1")
        if getattr(args, "version", None) is not None and not args.version.isdigit():
            parser.error("--version must be a registry version number")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "promote":
            return promote(args.model_name, args.version, args.force, args.recall_margin)
        if args.command == "rollback":
            return rollback(args.model_name)
        if args.command == "gate":
            return judge_challenger(args.model_name, args.recall_margin)
        return models(args.model_name, args.service_url)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except LifecycleError as exc:
        print(f"lifecycle: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # one clear line instead of a traceback
        print(f"lifecycle: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
