"""Compiled models end to end, against real MLflow and BentoML stores (isolated states):
a candidate whose ONNX model does not answer like scikit-learn is left out of the choice,
training fails with one line when none is left, and `make promote` refuses a version the
service cannot run, even with FORCE=1.

The non-equivalent models are made on purpose: train.py runs with skl2onnx's output
altered for the chosen estimator types (tests/onnx_graphs.tampered), nothing else changed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.inference.model_aliases import read_aliases
from iris_service.names import MODEL_NAME
from tests.integration.model_support import stored_versions
from tools.local_server import ProjectState

pytestmark = pytest.mark.timeout(600)

SMALL = ("--cv-folds", "2")
EXIT_REFUSED = 3

# train.py, with the ONNX model of the estimator types named in argv[1] altered (class 1
# gets 0.001 more probability) after conversion and before the equivalence check.
TAMPERED_TRAIN = """
import runpy, sys
from iris_pipeline import compiling
from tests.onnx_graphs import tampered

altered_types = set(sys.argv[1].split(","))
convert = compiling.convert

def altered_convert(model, sample):
    compiled = convert(model, sample)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    if type(final).__name__ in altered_types:
        return tampered(compiled, (0.0, 1e-3, 0.0))
    return compiled

compiling.convert = altered_convert
sys.argv = ["train.py", *sys.argv[2:]]
runpy.run_path("train.py", run_name="__main__")
"""


def _train_altered(
    state: ProjectState, altered: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return state.run_python("-c", TAMPERED_TRAIN, altered, *args, timeout=300)


def _runs_by_family(state: ProjectState) -> dict[str, object]:
    client = MlflowClient(state.mlflow_uri)
    experiment = client.get_experiment_by_name("iris-classifier")
    return {
        run.data.tags["model_family"]: run for run in client.search_runs([experiment.experiment_id])
    }


def test_a_non_equivalent_candidate_is_left_out_of_the_choice(tmp_path: Path) -> None:
    state = ProjectState(tmp_path)
    result = _train_altered(
        state,
        "LogisticRegression",
        "--candidates",
        "logistic_regression",
        "random_forest",
        *SMALL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    excluded = [line for line in result.stdout.splitlines() if "EXCLUDED" in line]
    assert len(excluded) == 1, result.stdout
    assert "EXCLUDED from the choice: ONNX NOT equivalent: max |dp| 1.0" in excluded[0]
    lines = result.stdout.splitlines()
    assert lines[lines.index(excluded[0]) - 1].lstrip().startswith("logistic_regression")
    assert "Registered random_forest as MLflow registry version 1" in result.stdout

    runs = _runs_by_family(state)
    refused, chosen = runs["logistic_regression"], runs["random_forest"]
    assert refused.data.tags["onnx_equivalent"] == "false"
    assert "max |dp|" in refused.data.tags["onnx_refusal"]
    assert 9e-4 < refused.data.metrics["onnx_max_abs_diff"] < 1.1e-3
    assert "selected" not in refused.data.tags
    assert chosen.data.tags["onnx_equivalent"] == "true"
    assert chosen.data.tags["selected"] == "true"
    client = MlflowClient(state.mlflow_uri)
    (version,) = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert version.run_id == chosen.info.run_id
    assert version.tags["onnx_equivalent"] == "true"


def test_training_fails_in_one_line_when_no_candidate_is_equivalent(tmp_path: Path) -> None:
    state = ProjectState(tmp_path)
    result = _train_altered(
        state,
        "LogisticRegression,RandomForestClassifier",
        "--candidates",
        "logistic_regression",
        "random_forest",
        *SMALL,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py: error")]
    assert errors == [
        line for line in result.stderr.splitlines() if "no candidate compiles" in line
    ]
    (error,) = errors
    assert "NoServableCandidateError" in error
    assert "logistic_regression: max |dp|" in error and "random_forest: max |dp|" in error
    assert stored_versions(state) == set()
    assert MlflowClient(state.mlflow_uri).search_model_versions(f"name = '{MODEL_NAME}'") == []


@dataclass(frozen=True)
class Registry:
    """A state whose registry has a champion; each test trains the challenger it needs, so
    the tests here pass in any order."""

    state: ProjectState

    def aliases(self) -> dict[str, str]:
        client = MlflowClient(self.state.mlflow_uri)
        return {
            alias: str(version.version)
            for found in client.search_model_versions(f"name = '{MODEL_NAME}'")
            for version in [client.get_model_version(MODEL_NAME, found.version)]
            for alias in version.aliases
        }

    def promote_runs(self) -> list:
        client = MlflowClient(self.state.mlflow_uri)
        experiment = client.get_experiment_by_name(f"{MODEL_NAME}-lifecycle")
        if experiment is None:
            return []
        return client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time ASC"]
        )

    def train(self, seed: str) -> str:
        """Train one more (equivalent) logistic regression; its version number."""
        result = self.state.train("--candidates", "logistic_regression", *SMALL, "--seed", seed)
        assert result.returncode == 0, result.stdout + result.stderr
        versions = MlflowClient(self.state.mlflow_uri).search_model_versions(
            f"name = '{MODEL_NAME}'"
        )
        return str(max(int(v.version) for v in versions))

    def onnx_file(self, version: str) -> Path:
        client = MlflowClient(self.state.mlflow_uri)
        tag = client.get_model_version(MODEL_NAME, version).tags["bentoml_tag"]
        return self.state.bentoml_home / "models" / MODEL_NAME / tag.split(":")[1] / "model.onnx"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A champion: a logistic regression."""
    registry = Registry(ProjectState(tmp_path_factory.mktemp("compiled-promote")))
    assert registry.train("1") == "1" and registry.aliases() == {"champion": "1"}
    return registry


def _make_promote(state: ProjectState, *variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "promote",
            f"BENTOML_HOME={state.bentoml_home}",
            *variables,
        ],
        cwd=PROJECT_ROOT,
        env=state.env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_promote_refuses_a_version_the_service_cannot_run_even_forced(
    registry: Registry,
) -> None:
    state, at_start = registry.state, registry.aliases()
    champion = at_start["champion"]
    v = registry.train("2")
    onnx_file = registry.onnx_file(v)
    before = read_aliases(MODEL_NAME, state.bentoml_home)
    assert registry.aliases() == {**at_start, "challenger": v}
    runs_before = len(registry.promote_runs())
    original = onnx_file.read_bytes()

    onnx_file.write_bytes(original + b"\0")  # altered after training
    altered = _make_promote(state, f"VERSION={v}", "FORCE=1")
    assert altered.returncode != 0, altered.stdout + altered.stderr
    assert f"Error {EXIT_REFUSED}" in altered.stderr  # make's report of the exit status
    assert f"Refused: version {v}'s model.onnx is not the file whose equivalence" in (
        altered.stderr
    )
    assert "FORCE cannot override this" in altered.stderr

    onnx_file.unlink()  # as a version trained before models were compiled
    missing = state.lifecycle("promote", "--force")
    assert missing.returncode == EXIT_REFUSED
    assert f"version {v} has no ONNX model" in missing.stderr
    onnx_file.write_bytes(original)

    client = MlflowClient(state.mlflow_uri)
    client.set_model_version_tag(MODEL_NAME, v, "onnx_equivalent", "false")
    recorded = state.lifecycle("promote", "--force")
    judged = state.lifecycle("gate")
    client.set_model_version_tag(MODEL_NAME, v, "onnx_equivalent", "true")
    assert recorded.returncode == EXIT_REFUSED
    assert f"version {v}'s ONNX model does not answer like its scikit-learn model" in (
        recorded.stderr
    )
    assert judged.returncode == EXIT_REFUSED
    assert f"Version {v} cannot be promoted" in judged.stderr

    assert registry.aliases() == {**at_start, "challenger": v}
    assert read_aliases(MODEL_NAME, state.bentoml_home) == before
    refusals = [run.data.tags for run in registry.promote_runs()[runs_before:]]
    assert [tags["verdict"] for tags in refusals] == ["not-servable"] * 3
    assert all(tags["forced"] == "true" and tags["version"] == v for tags in refusals)
    assert "SHA-256 differs" in refusals[0]["reason"]

    promoted = state.lifecycle("promote")  # the intact, equivalent version passes
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert registry.aliases() == {"champion": v, "previous-champion": champion}


def test_the_gate_judges_the_onnx_models_the_service_runs(registry: Registry) -> None:
    """The gate's figures come from model.onnx: a stored champion without one cannot be
    compared (promotion then needs FORCE, as for any champion the gate cannot judge)."""
    state = registry.state
    version = registry.train("3")
    onnx_file = registry.onnx_file(registry.aliases()["champion"])
    original = onnx_file.read_bytes()
    onnx_file.unlink()
    try:
        refused = state.lifecycle("promote")
    finally:
        onnx_file.write_bytes(original)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "the gate cannot compare with the champion" in refused.stderr
    assert "has no ONNX model" in refused.stderr
    passed = state.lifecycle("promote")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"Quality gate: version {version}" in passed.stdout
