"""The feedback loop, end to end, against a running service (docs/feedback.md).

Phases, each bounded by a count of flowers: Iris as it is (baseline); the shifted population
of iris_pipeline/population.py (shift); `make retrain`, then `make promote`, and the wait
until the running service answers with the new champion; the shifted population again
(recovered). In every traffic phase each flower is predicted (POST /predict_batch) and its
true class sent back (POST /feedback). After each phase the live accuracy of the model that
answered (iris_live_accuracy on /metrics) and the drift (max PSI on GET /drift) are read;
during the traffic, timed samples of accuracy, drift and champion feed the report's plot.

Used by tests/integration/test_feedback_loop.py and by `make report LOOP=1`.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from iris_pipeline.paths import PROJECT_ROOT
from iris_pipeline.population import Population, draw
from iris_service.records.store import sqlite_url
from tools.local_server import ProjectState
from tools.report import take_snapshot

BATCH_FLOWERS = 25
FOLLOW_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 30.0

RunCommand = Callable[..., subprocess.CompletedProcess[str]]  # make target, VARIABLE=value...


@dataclass(frozen=True)
class Sample:
    """One look at the service while the loop runs."""

    time: float
    flowers_sent: int  # predicted and labelled so far
    champion: str
    accuracy: dict[str, float]  # model tag -> live accuracy
    max_psi: float | None


@dataclass
class PhaseResult:
    name: str
    seconds: float
    started_at: float = 0.0  # unix time
    flowers_before: int = 0  # flowers sent before the phase began (the plot's x axis)
    flowers: int = 0
    model_tags: list[str] = field(default_factory=list)  # the models that answered
    accuracy: float | None = None  # live accuracy of the (last) answering model
    labelled: int | None = None
    max_psi: float | None = None
    output: str = ""  # what a command printed


@dataclass
class LoopRun:
    phases: list[PhaseResult] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def phase(self, name: str) -> PhaseResult:
        return next(p for p in self.phases if p.name == name)

    def summary(self) -> dict[str, Any]:
        """Each phase's figures (without the commands' output)."""
        return {p.name: {k: v for k, v in asdict(p).items() if k != "output"} for p in self.phases}

    def record(self) -> dict[str, Any]:
        """The summary and every sample, as reports/feedback-loop.json holds them."""
        return {"phases": self.summary(), "samples": [asdict(s) for s in self.samples]}


class LoopClient:
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers.update(headers or {})
        self.flowers_sent = 0

    def predict_and_label(self, population: Population, on_batch: Callable[[], None]) -> list[str]:
        """Predict every flower in batches and label each with its true class; the model
        tags that answered, in order."""
        tags = []
        for start in range(0, len(population.flowers), BATCH_FLOWERS):
            flowers = population.flowers[start : start + BATCH_FLOWERS]
            classes = population.classes[start : start + BATCH_FLOWERS]
            answer = self.session.post(
                f"{self.url}/predict_batch", json={"flowers": flowers}, timeout=HTTP_TIMEOUT_S
            )
            answer.raise_for_status()
            tags.append(answer.json()["model_tag"])
            request_id = answer.headers["x-request-id"]
            labels = [
                {"request_id": f"{request_id}/{index}", "class_name": name}
                for index, name in enumerate(classes)
            ]
            feedback = self.session.post(
                f"{self.url}/feedback", json={"feedback": labels}, timeout=HTTP_TIMEOUT_S
            )
            if feedback.status_code != 200:
                raise RuntimeError(f"POST /feedback: {feedback.status_code} {feedback.text}")
            self.flowers_sent += len(flowers)
            on_batch()
        return tags

    def live(self) -> tuple[dict[str, float], dict[str, float]]:
        """(live accuracy, labelled count) by model tag, from /metrics."""
        snapshot = take_snapshot(self.url)
        accuracy = {
            labels["model_version"]: v for labels, v in snapshot.select("iris_live_accuracy")
        }
        labelled = {
            labels["model_version"]: v for labels, v in snapshot.select("iris_live_labelled")
        }
        return accuracy, labelled

    def max_psi(self) -> float | None:
        report = self.session.get(f"{self.url}/drift", timeout=HTTP_TIMEOUT_S).json()
        return report["max_psi"]

    def champion(self) -> str:
        return self.session.get(f"{self.url}/model", timeout=HTTP_TIMEOUT_S).json()["champion"]

    def sample(self) -> Sample:
        accuracy, _ = self.live()
        return Sample(time.time(), self.flowers_sent, self.champion(), accuracy, self.max_psi())


def _traffic(client: LoopClient, run: LoopRun, name: str, population: Population) -> PhaseResult:
    started = time.monotonic()
    tags = client.predict_and_label(population, lambda: run.samples.append(client.sample()))
    accuracy, labelled = client.live()
    seconds = time.monotonic() - started
    result = PhaseResult(
        name,
        seconds,
        started_at=time.time() - seconds,
        flowers_before=client.flowers_sent - len(population.flowers),
        flowers=len(population.flowers),
    )
    result.model_tags = sorted(set(tags))
    result.accuracy = accuracy.get(tags[-1])
    result.labelled = int(labelled.get(tags[-1], 0))
    result.max_psi = client.max_psi()
    run.phases.append(result)
    return result


def _command(
    run: LoopRun, name: str, flowers_sent: int, command: RunCommand, *args: str
) -> PhaseResult:
    started = time.monotonic()
    done = command(*args)
    seconds = time.monotonic() - started
    result = PhaseResult(
        name,
        seconds,
        started_at=time.time() - seconds,
        flowers_before=flowers_sent,
        output=done.stdout + done.stderr,
    )
    run.phases.append(result)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{result.output}")
    return result


def run_loop(
    client: LoopClient,
    make: RunCommand,
    flowers_per_phase: int = 150,
    retrain_args: str = "",
    seed: int = 1,
) -> LoopRun:
    """The whole loop; `make(target, *variables)` runs a make target against the service's
    stores. Raises RuntimeError when a step fails (with what it printed)."""
    run = LoopRun()
    run.samples.append(client.sample())
    _traffic(client, run, "baseline", draw(flowers_per_phase, seed, shifted=False))
    _traffic(client, run, "shift", draw(flowers_per_phase, seed + 1, shifted=True))
    before = client.champion()
    sent = client.flowers_sent
    _command(run, "retrain", sent, make, "retrain", f"RETRAIN_ARGS={retrain_args}")
    promote = _command(run, "promote", sent, make, "promote")
    started = time.monotonic()
    while client.champion() == before:
        if time.monotonic() - started > FOLLOW_TIMEOUT_S:
            raise RuntimeError(f"the service still serves {before} after the promotion")
        time.sleep(0.2)
    seconds = time.monotonic() - started
    run.phases.append(
        PhaseResult(
            "follow",
            seconds,
            time.time() - seconds,
            flowers_before=client.flowers_sent,
            output=promote.output,
        )
    )
    run.samples.append(client.sample())
    _traffic(client, run, "recovered", draw(flowers_per_phase, seed + 2, shifted=True))
    return run


def service_env(state: ProjectState, window: int) -> dict[str, str]:
    """The server's (and the pipeline's) settings for the loop: a prediction store in the
    state, live-quality and drift windows of one phase (`window` flowers)."""
    return {
        "IRIS_RECORD_STORE_URL": sqlite_url(state.root / "service-records" / "records.db"),
        "IRIS_FEEDBACK_WINDOW": str(window),
        "IRIS_DRIFT_WINDOW_FLOWERS": str(window),
        "IRIS_DRIFT_MIN_FLOWERS": str(min(100, window)),
    }


def make_in(state: ProjectState, env: dict[str, str], timeout: float = 600) -> RunCommand:
    """`make <target> VARIABLE=value...` against `state`'s stores, with `env` added."""

    def make(target: str, *variables: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "make",
                "--no-print-directory",
                "-o",
                ".venv/.installed",  # we already run inside the installed .venv
                target,
                f"BENTOML_HOME={state.bentoml_home}",
                *variables,
            ],
            cwd=PROJECT_ROOT,
            env=state.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return make


def scratch_loop(flowers_per_phase: int, retrain_args: str, port: int | None = None) -> LoopRun:
    """The whole loop in a scratch state (its own stores, a first champion trained by
    train.py, its own `bentoml serve`), leaving the project's state alone (`make report
    LOOP=1`)."""
    from tools.local_server import bento_server

    root = Path(tempfile.mkdtemp(prefix="iris-feedback-loop-"))
    state = ProjectState(root)
    trained = state.train("--candidates", "logistic_regression", "--cv-folds", "2")
    if trained.returncode != 0:
        raise RuntimeError(f"train.py failed:\n{trained.stdout}{trained.stderr}")
    env = service_env(state, flowers_per_phase)
    with bento_server(state, root / "logs", port=port, **env) as server:
        return run_loop(
            LoopClient(server.url), make_in(state, env), flowers_per_phase, retrain_args
        )
