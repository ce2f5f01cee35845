"""`make score`: the registry's champion over 1,000,000 generated flowers on real Spark.

One local-mode job (`local[2]`) on a generated CSV with 1,000 invalid rows is checked for
counts, reasons, positions and its MLflow record; its probabilities are compared with a real
`bentoml serve`'s /predict_batch answers; the job over the file's first 100,000 rows on a
real standalone cluster (one master, two workers, all on 127.0.0.1) must give the local job's
output for those rows; a bad alias or a missing input fails in one line and writes nothing.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from iris_pipeline.scoring_frames import SOURCE_FILE
from iris_pipeline.scoring_record import EXPERIMENT
from iris_service.names import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME
from tools.flower_file import ID_COLUMN, FlowerFile, expected_reason, write_flower_csv
from tools.local_server import LocalServer, ProjectState
from tools.spark_cluster import standalone_cluster
from tools.spark_jvm import class_archive, java_options

# A Spark job on 1,000,000 rows takes minutes on 2 cores shared with other work.
pytestmark = pytest.mark.timeout(600)
ROWS, INVALID = 1_000_000, 1_000
# The two-worker cluster scores the file's first rows (its output is compared row for row).
CLUSTER_ROWS = 100_000
JOB_TIMEOUT_S = 600
# Small and bounded: no Spark UI port, few shuffle partitions (the job's defaults keep the rest).
QUIET = ("--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=2")
PROBABILITY_COLUMNS = [f"probability_{name}" for name in CLASS_NAMES]


def score(state: ProjectState, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m iris_pipeline.scoring` (what `make score` runs) on the state's stores."""
    return state.run_python("-m", "iris_pipeline.scoring", *args, *QUIET, timeout=JOB_TIMEOUT_S)


def jvm_conf(options: str) -> tuple[str, ...]:
    """HotSpot options of the job's driver and executors (tools/spark_jvm.py): the same Spark
    work, a cheaper JVM start."""
    return (
        *("--conf", f"spark.driver.extraJavaOptions={options}"),
        *("--conf", f"spark.executor.extraJavaOptions={options}"),
    )


def read_output(folder: Path, part: str) -> pd.DataFrame:
    return pd.read_parquet(folder / part).sort_values("row_position", ignore_index=True)


@pytest.fixture(scope="module")
def class_archive_path() -> Path | None:
    """The Spark JVMs' class-data-sharing archive, written once per Java and pyspark."""
    return class_archive()


@pytest.fixture(scope="module")
def flowers(tmp_path_factory: pytest.TempPathFactory) -> FlowerFile:
    path = tmp_path_factory.mktemp("batch-input") / "flowers.csv"
    return write_flower_csv(path, ROWS, invalid=INVALID, seed=24)


@pytest.fixture(scope="module")
def local_job(
    trained_state: ProjectState,
    flowers: FlowerFile,
    class_archive_path: Path | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("batch-local") / "out"
    result = score(
        trained_state,
        *("--input", str(flowers.path), "--output", str(output)),
        *jvm_conf(java_options(class_archive_path, short=False)),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return output, result.stdout


@pytest.fixture(scope="module")
def local_output(local_job: tuple[Path, str]) -> dict[str, pd.DataFrame]:
    """The local job's scored rows and rejects, read once (tests must not modify them)."""
    output, _ = local_job
    return {part: read_output(output, part) for part in ("scored", "rejects")}


def test_local_job_counts_add_up_and_rejects_carry_reasons(
    local_job: tuple[Path, str], local_output: dict[str, pd.DataFrame], flowers: FlowerFile
) -> None:
    output, stdout = local_job
    scored, rejected = local_output["scored"], local_output["rejects"]
    assert (len(scored), len(rejected)) == (ROWS - INVALID, INVALID)
    assert "rows in 1,000,000 = scored 999,000 + rejected 1,000" in stdout
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_rejected"]) == (
        ROWS,
        ROWS - INVALID,
        INVALID,
    )
    # Every row once, at its place in the file (flower_id f00000042 is row 42).
    positions = np.sort(np.concatenate([scored.row_position, rejected.row_position]))
    assert np.array_equal(positions, np.arange(ROWS))
    for frame in (scored, rejected):
        assert (frame[ID_COLUMN].str[1:].astype(int) == frame.row_position).all()
    # Each invalid row is rejected with the rule it breaks, in the service's terms.
    reasons = dict(zip(rejected.row_position, rejected.reject_reason, strict=True))
    assert reasons == {p: expected_reason(kind) for p, kind in flowers.invalid.items()}
    assert "sepal_length is out of range (0, 20]" in reasons.values()
    assert (
        rejected.loc[rejected.reject_reason.str.contains("not a number"), "sepal_length"]
        .eq("abc")
        .all()
    )
    # Scored rows: the input columns, the class, a probability per class, the version.
    assert list(scored.columns[: 1 + len(FEATURE_NAMES)]) == [ID_COLUMN, *FEATURE_NAMES]
    probabilities = scored[PROBABILITY_COLUMNS].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert (scored.class_id.to_numpy() == probabilities.argmax(axis=1)).all()
    assert (scored.class_name == scored.class_id.map(dict(enumerate(CLASS_NAMES)))).all()
    assert set(scored.model_version) == {summary["model_version"]}
    assert set(scored.class_name) == set(CLASS_NAMES)


def test_local_job_is_recorded_in_mlflow(
    local_job: tuple[Path, str], trained_state: ProjectState, flowers: FlowerFile
) -> None:
    output, _ = local_job
    summary = json.loads((output / "summary.json").read_text())
    client = MlflowClient(trained_state.mlflow_uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model_version"] == summary["model_version"]
    assert run.data.params["model_uri"] == f"models:/{MODEL_NAME}/{summary['model_version']}"
    metrics = run.data.metrics
    assert (metrics["rows_in"], metrics["rows_scored"], metrics["rows_rejected"]) == (
        ROWS,
        ROWS - INVALID,
        INVALID,
    )
    assert metrics["duration_s"] > 0 and metrics["rows_per_s"] > 0
    datasets = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(datasets) == {"input", "scored", "rejects"}
    rows = {name: {t.key: t.value for t in d.tags}["rows"] for name, d in datasets.items()}
    assert rows == {"input": str(ROWS), "scored": str(ROWS - INVALID), "rejects": str(INVALID)}
    assert str(flowers.path) in datasets["input"].dataset.source
    assert all(re.fullmatch(r"[0-9a-f]{16}", d.dataset.digest) for d in datasets.values())


@pytest.mark.server
def test_probabilities_equal_the_services_predict_batch(
    local_output: dict[str, pd.DataFrame], server: LocalServer, trained_state: ProjectState
) -> None:
    scored = local_output["scored"]
    sample = scored.sample(n=1000, random_state=24)
    flowers = sample[list(FEATURE_NAMES)].to_dict(orient="records")
    response = requests.post(f"{server.url}/predict_batch", json={"flowers": flowers}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    version = str(sample.model_version.iloc[0])
    tag = MlflowClient(trained_state.mlflow_uri).get_model_version(MODEL_NAME, version).tags
    assert body["model_tag"] == tag["bentoml_tag"], "the service must answer with the same version"
    answered = np.array([[p["probabilities"][c] for c in CLASS_NAMES] for p in body["predictions"]])
    assert np.abs(answered - sample[PROBABILITY_COLUMNS].to_numpy()).max() <= 1e-5
    assert [p["class_name"] for p in body["predictions"]] == sample.class_name.tolist()


def test_two_worker_standalone_cluster_gives_the_same_output(
    local_output: dict[str, pd.DataFrame],
    trained_state: ProjectState,
    flowers: FlowerFile,
    class_archive_path: Path | None,
    tmp_path: Path,
) -> None:
    """The cluster scores the first CLUSTER_ROWS lines of the local job's file (the same
    rows and ids, about a tenth of its invalid ones): its output must be the local job's for
    those flowers, row for row (the source file's name aside). Every JVM of it (master,
    workers, driver, executors) runs a short while: class archive, C1 only, serial GC."""
    prefix, output = tmp_path / "first-flowers.csv", tmp_path / "out"
    with flowers.path.open() as whole, prefix.open("w") as first:
        first.writelines(itertools.islice(whole, CLUSTER_ROWS + 1))  # the header too
    options = java_options(class_archive_path)
    with standalone_cluster(tmp_path / "cluster", workers=2, java_options=options) as cluster:
        result = score(
            trained_state,
            *("--input", str(prefix), "--output", str(output)),
            *("--master", cluster.master_url),
            *jvm_conf(options),
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        worker_logs = [daemon.log() for daemon in cluster.daemons[1:]]
    assert f"on {cluster.master_url}" in result.stdout
    assert all("Asked to launch executor" in log for log in worker_logs), "both workers ran"
    last_id = f"f{CLUSTER_ROWS - 1:08d}"
    rows = 0
    for part in ("scored", "rejects"):
        on_cluster = read_output(output, part).drop(columns=SOURCE_FILE)
        local = local_output[part].drop(columns=SOURCE_FILE)
        local = local[local[ID_COLUMN] <= last_id].reset_index(drop=True)
        assert len(on_cluster) > 0, part
        pd.testing.assert_frame_equal(on_cluster, local)
        rows += len(on_cluster)
    assert rows == CLUSTER_ROWS


@pytest.mark.parametrize("case", ["missing alias", "missing input"])
def test_a_bad_alias_or_a_missing_input_fails_in_one_line_and_writes_nothing(
    case: str, trained_state: ProjectState, flowers: FlowerFile, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    args = ["--input", str(flowers.path), "--output", str(output)]
    if case == "missing alias":
        args += ["--model", "models:/iris-classifier@no-such-alias"]
    else:
        args[1] = str(tmp_path / "no-such-file.csv")
    client = MlflowClient(trained_state.mlflow_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs_before = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    result = score(trained_state, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("score: error: "), result.stderr
    assert ("no-such-alias" if case == "missing alias" else "does not exist") in lines[0]
    assert list(tmp_path.iterdir()) == [], "nothing written, not even a partial folder"
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs_after = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    assert runs_after == runs_before, "no MLflow run for a job that did not start"
