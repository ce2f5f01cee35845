"""Versions, aliases, the quality gate, promotion and rollback against a real MLflow store and
a real BentoML store (an isolated ProjectState), through train.py, the lifecycle CLI and make.

One module fixture plays the whole story once, in order, and keeps what each step printed and
what the registry and the aliases file held after it; each test then checks one claim.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.inference.model_aliases import read_aliases
from iris_service.names import MODEL_NAME
from tools.local_server import ProjectState, bento_server, free_port

pytestmark = pytest.mark.timeout(900)

SMALL = ("--candidates", "logistic_regression", "--cv-folds", "2")
ACTOR = "lifecycle-test-operator"
EXIT_REFUSED = 3


@dataclass(frozen=True)
class Step:
    """One command of the story, and the state it left behind."""

    result: subprocess.CompletedProcess[str]
    aliases: dict[str, str]  # registry alias -> version
    file_champion: str | None
    file_challenger: str | None
    tags: dict[str, str]  # version -> BentoML tag

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def _snapshot(state: ProjectState, result: subprocess.CompletedProcess[str]) -> Step:
    client = MlflowClient(state.mlflow_uri)
    aliases: dict[str, str] = {}
    tags: dict[str, str] = {}
    for found in client.search_model_versions(f"name = '{MODEL_NAME}'"):
        version = client.get_model_version(MODEL_NAME, found.version)
        tags[str(version.version)] = version.tags.get("bentoml_tag", "")
        aliases.update(dict.fromkeys(version.aliases, str(version.version)))
    mirrored = read_aliases(MODEL_NAME, state.bentoml_home)
    assert mirrored is not None, "no aliases file after " + " ".join(result.args)
    return Step(result, aliases, mirrored.champion, mirrored.challenger, tags)


def _make(state: ProjectState, target: str, *variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",  # make test runs us inside make: no "Leaving directory"
            "-o",
            ".venv/.installed",  # the suite already runs inside the installed .venv
            target,
            f"BENTOML_HOME={state.bentoml_home}",
            *variables,
        ],
        cwd=PROJECT_ROOT,
        env=state.env(IRIS_ACTOR=ACTOR),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@dataclass(frozen=True)
class Story:
    state: ProjectState
    steps: dict[str, Step]

    def __getitem__(self, name: str) -> Step:
        return self.steps[name]

    def lifecycle_runs(self) -> list:
        """The MLflow runs recorded by promote and rollback, oldest first."""
        client = MlflowClient(self.state.mlflow_uri)
        experiment = client.get_experiment_by_name(f"{MODEL_NAME}-lifecycle")
        return client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time ASC"]
        )

    def run_with_verdict(self, verdict: str):
        return next(r for r in self.lifecycle_runs() if r.data.tags.get("verdict") == verdict)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    state = ProjectState(tmp_path_factory.mktemp("lifecycle-state"))
    steps: dict[str, Step] = {}

    def play(name: str, result: subprocess.CompletedProcess[str]) -> None:
        steps[name] = _snapshot(state, result)

    play("first train", state.train(*SMALL, "--seed", "1"))
    play("second train", state.train(*SMALL, "--seed", "2"))
    play("if missing", state.train(*SMALL, "--if-missing"))
    play("promote", state.lifecycle("promote"))
    play("noisy train", state.train(*SMALL, "--seed", "7", "--label-noise", "0.4"))
    play("refused promote", state.lifecycle("promote"))
    play("forced promote", _make(state, "promote", "VERSION=3", "FORCE=1"))
    play("rollback", _make(state, "rollback"))
    play("models", _make(state, "models", f"SERVICE_URL=http://127.0.0.1:{free_port()}"))
    play("train after rollback", state.train(*SMALL, "--seed", "4"))
    return Story(state, steps)


def test_every_command_of_the_story_succeeded_but_the_refusal(story: Story) -> None:
    for name, step in story.steps.items():
        expected = EXIT_REFUSED if name == "refused promote" else 0
        assert step.result.returncode == expected, f"{name}:\n{step.output}"
        assert "Traceback" not in step.output, f"{name}:\n{step.output}"


@pytest.mark.parametrize(
    "name",
    [
        "first train",
        "second train",
        "if missing",
        "promote",
        "noisy train",
        "refused promote",
        "forced promote",
        "rollback",
        "models",
        "train after rollback",
    ],
)
def test_the_aliases_file_mirrors_the_registry_after_each_step(story: Story, name: str) -> None:
    step = story[name]
    champion = step.aliases.get("champion")
    challenger = step.aliases.get("challenger")
    assert champion is not None
    assert step.file_champion == step.tags[champion]
    assert step.file_challenger == (step.tags[challenger] if challenger else None)
    assert all(tag.startswith(f"{MODEL_NAME}:") for tag in step.tags.values())


def test_the_first_model_of_an_empty_registry_is_champion(story: Story) -> None:
    step = story["first train"]
    assert step.aliases == {"champion": "1"}
    assert "Version 1 is the champion" in step.output


def test_a_second_training_is_challenger_and_leaves_the_champion(story: Story) -> None:
    step = story["second train"]
    assert step.aliases == {"champion": "1", "challenger": "2"}
    assert set(step.tags) == {"1", "2"} and step.tags["1"] != step.tags["2"]
    assert "challenger" in step.result.stdout


def test_if_missing_does_nothing_when_a_champion_is_stored(story: Story) -> None:
    step = story["if missing"]
    assert "is in the BentoML store; not training" in step.result.stdout
    assert set(step.tags) == {"1", "2"}


def test_promote_passes_an_equal_model_and_records_the_figures(story: Story) -> None:
    step = story["promote"]
    assert step.aliases == {"champion": "2", "previous-champion": "1"}
    assert "gate: passed" in step.result.stdout
    run = story.lifecycle_runs()[0]
    assert run.data.tags["action"] == "promote" and run.data.tags["verdict"] == "passed"
    metrics = run.data.metrics
    assert metrics["challenger_macro_f1"] >= metrics["threshold_macro_f1"]
    assert metrics["threshold_macro_f1"] == metrics["champion_macro_f1"]
    for name in ("setosa", "versicolor", "virginica"):
        assert metrics[f"threshold_recall_{name}"] == pytest.approx(
            max(metrics[f"champion_recall_{name}"] - 0.05, 0.0)
        )
    assert run.data.params["challenger_version"] == "2"
    assert run.data.params["champion_version"] == "1"


def test_the_gate_refuses_a_label_noise_model_with_its_figures(story: Story) -> None:
    assert story["noisy train"].aliases["challenger"] == "3"
    step = story["refused promote"]
    assert step.aliases == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    assert "Refused: version 3" in step.result.stderr
    failed = re.findall(r"(\w+) (\d\.\d{4}) < (\d\.\d{4})", step.result.stderr)
    assert failed, step.result.stderr
    assert "macro_f1" in {metric for metric, _, _ in failed}, failed
    for _, challenger, threshold in failed:
        assert float(challenger) < float(threshold)
    run = story.run_with_verdict("refused")
    printed = {metric: float(value) for metric, value, _ in failed}
    for metric, value in printed.items():
        assert run.data.metrics[f"challenger_{metric}"] == pytest.approx(value, abs=5e-5)
    assert run.data.metrics["challenger_macro_f1"] < run.data.metrics["champion_macro_f1"]


def test_force_promotes_and_is_recorded_with_who_and_when(story: Story) -> None:
    step = story["forced promote"]
    assert step.aliases == {"champion": "3", "previous-champion": "2"}
    assert "gate: forced" in step.result.stdout
    run = story.run_with_verdict("forced")
    assert run.data.tags["forced"] == "true" and run.data.tags["by"] == ACTOR
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", run.data.tags["at"])
    version = MlflowClient(story.state.mlflow_uri).get_model_version(MODEL_NAME, "3")
    assert version.tags["forced"] == "true" and version.tags["promoted_by"] == ACTOR


def test_rollback_restores_the_previous_champion(story: Story) -> None:
    step = story["rollback"]
    assert step.aliases == {"champion": "2", "previous-champion": "1"}
    assert step.file_champion == story["promote"].file_champion
    run = story.lifecycle_runs()[-1]
    assert run.data.tags["action"] == "rollback"
    assert (run.data.tags["from_version"], run.data.tags["to_version"]) == ("3", "2")


def test_make_models_lists_every_version_with_its_aliases(story: Story) -> None:
    step = story["models"]
    rows = {
        line.split()[0]: line
        for line in step.result.stdout.splitlines()
        if line.split() and line.split()[0].isdigit()
    }
    assert set(rows) == {"1", "2", "3"}
    for version, line in rows.items():
        assert step.tags[version] in line
        assert "logistic_regression" in line
        assert re.search(r"\b[01]\.\d{4}\b", line), line  # test and gate macro-F1
    assert "previous-champion" in rows["1"]
    assert re.search(r"\bchampion\b", rows["2"]) and "previous" not in rows["2"]
    assert "forced, rolled back" in rows["3"]
    assert "no running service at http://127.0.0.1:" in step.result.stdout


@pytest.fixture(scope="module")
def empty_state(tmp_path_factory: pytest.TempPathFactory) -> ProjectState:
    return ProjectState(tmp_path_factory.mktemp("empty-lifecycle-state"))


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("promote",), 1, "there is no challenger to promote"),
        (("promote", "--version", "7"), 1, "no version '7'"),
        (("rollback",), 1, "no previous champion to roll back to"),
        (("promote", "--recall-margin", "2"), 2, "--recall-margin must be between 0 and 1"),
        (("promote", "--version", "latest"), 2, "--version must be a registry version number"),
        (("models", "--service-url", "http://127.0.0.1:9"), 0, "No version of iris-classifier"),
        (("gate",), 0, "No challenger and champion to compare"),
        (("gate", "--recall-margin", "-1"), 2, "--recall-margin must be between 0 and 1"),
    ],
)
def test_commands_on_an_empty_registry_fail_clearly(
    empty_state: ProjectState,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    status: int,
    message: str,
) -> None:
    """The lifecycle CLI's entry point (`python -m iris_pipeline.lifecycle` is
    `sys.exit(main())`) on a real, empty registry, in this process: the story above runs the
    commands as processes; a process each here would only add its MLflow import."""
    from iris_pipeline import lifecycle

    for name in ("MLFLOW_TRACKING_URI", "BENTOML_HOME"):
        monkeypatch.setenv(name, empty_state.env()[name])
    try:
        returned = lifecycle.main(list(args))
    except SystemExit as exc:  # argparse refuses the arguments
        returned = exc.code
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert returned == status, output
    assert message in output
    assert "Traceback" not in output


@pytest.mark.server
def test_make_models_asks_a_real_running_service(story: Story, tmp_path: Path) -> None:
    """Against a real `bentoml serve`: the service answers, so the table either marks the
    version it reports in `iris_model_info` or says that it does not report one."""
    with bento_server(story.state, tmp_path) as server:
        result = _make(story.state, "models", f"SERVICE_URL={server.url}")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith(f"Running service: the service at {server.url} ")
    assert "no running service" not in summary
    used = re.findall(rf"{MODEL_NAME}:\w+", summary)
    assert used == [story["rollback"].file_champion], summary  # it serves the champion
    for tag in used:
        row = next(line for line in result.stdout.splitlines() if tag in line)
        assert row.split()[6] != "-", row  # the SERVED column


@pytest.mark.parametrize("mode", ["none", "shadow"])
def test_a_bento_pins_the_champion_and_challenger_never_latest(story: Story, mode: str) -> None:
    """After the story, the champion is version 2 (rollback) and `latest` is the challenger
    trained after it, version 4: a Bento built now packs and names exactly the aliased
    versions, not `latest` for the champion."""
    final = story["train after rollback"]
    latest = final.tags[max(final.tags, key=int)]
    assert final.file_champion == final.tags["2"] and final.file_challenger == latest, final
    env = story.state.env(IRIS_CHALLENGER_MODE=mode)
    result = subprocess.run(
        [sys.executable, "-m", "tools.containers", "bento"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    name, version = result.stdout.strip().splitlines()[-1].split(":")
    bento = yaml.safe_load(
        (story.state.bentoml_home / "bentos" / name / version / "bento.yaml").read_text()
    )
    packed = {m["tag"] for service in bento["services"] for m in service.get("models", [])}
    envs = {e["name"]: e["value"] for e in bento["envs"]}
    expected = {final.file_champion} | ({final.file_challenger} if mode != "none" else set())
    assert packed == expected, (packed, expected)
    assert envs["IRIS_MODEL_TAG"] == final.file_champion
    assert envs.get("IRIS_CHALLENGER_TAG") == (final.file_challenger if mode != "none" else None)
    assert envs["IRIS_CHALLENGER_MODE"] == mode
    assert bento["labels"]["champion"] == final.file_champion
