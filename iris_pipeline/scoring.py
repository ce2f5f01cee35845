"""`make score`: a registered model version over a CSV or Parquet file or folder, on Spark.

python -m iris_pipeline.scoring --input PATH --output FOLDER [--model champion|N|models:/…]
                                [--master local[*]|spark://HOST:PORT|k8s://…] [--conf K=V]…

OUTPUT receives `scored/` (Parquet: the input columns, class_id, class_name, one
probability_<class> per class, model_version, row_position, source_file), `rejects/` (rows
that break the service's input rules, as read, with reject_reason) and `summary.json`. It
appears whole when the job succeeds and not at all otherwise. Rows in = scored + rejected is
checked on what was written, printed, and recorded in an MLflow run. See docs/batch-scoring.md.

Exit status: 0 done, 1 the job failed (one line on stderr says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from iris_pipeline import scoring_model, tracking
from iris_pipeline.scoring_io import (
    InputFiles,
    ScoringError,
    check_output_free,
    files_digest,
    find_input,
    parquet_rows,
    staged_output,
)
from iris_pipeline.scoring_model import DEFAULT_MODEL, ModelVersion
from iris_pipeline.scoring_record import EXPERIMENT, DatasetRecord, log_dataset
from iris_pipeline.spark_session import DEFAULT_MASTER, parse_conf, start_session

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SCORED, REJECTS, SUMMARY = "scored", "rejects", "summary.json"


@dataclass(frozen=True)
class JobSummary:
    """What a finished job did; also OUTPUT/summary.json and the MLflow run's metrics."""

    model: str
    model_version: str
    input: str
    output: str
    master: str
    rows_in: int
    rows_scored: int
    rows_rejected: int
    duration_s: float
    rows_per_s: float
    mlflow_run_id: str

    def line(self) -> str:
        return (
            f"rows in {self.rows_in:,} = scored {self.rows_scored:,} + rejected "
            f"{self.rows_rejected:,}; {self.duration_s:.1f} s, {self.rows_per_s:,.0f} rows/s; "
            f"model version {self.model_version}; MLflow run {self.mlflow_run_id}"
        )


_STARTED = time.monotonic()


def say(message: str) -> None:
    """One progress line, with the seconds since the job started."""
    print(f"score: [{time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet"))


def _run_spark(
    source: InputFiles, stage: Path, model: ModelVersion, master: str, conf: dict[str, str]
) -> tuple[int, int, int, dict]:
    from iris_pipeline import scoring_frames

    say(f"starting Spark on {master}")
    spark = start_session(master, conf)
    try:
        frame = scoring_frames.read_input(spark, source)
        say(f"reading and checking {source.path} ({source.format}, {len(source.files)} file(s))")
        checked = scoring_frames.check_rows(frame)
        say(f"{checked.rows_in:,} rows; writing rejects")
        scoring_frames.rejects(checked).write.parquet(str(stage / REJECTS))
        say(f"scoring with {model.uri}")
        scored = scoring_frames.scored(checked, model.uri, model.version)
        scored.write.parquet(str(stage / SCORED))
        rows_scored = parquet_rows(stage / SCORED)
        rows_rejected = parquet_rows(stage / REJECTS)
        schemas = {"input": frame.schema, SCORED: scored.schema}
        schemas[REJECTS] = scoring_frames.rejects(checked).schema
        return checked.rows_in, rows_scored, rows_rejected, schemas
    finally:
        spark.stop()


def run_job(
    input_path: Path,
    output: Path,
    model_spec: str = DEFAULT_MODEL,
    master: str = DEFAULT_MASTER,
    conf: dict[str, str] | None = None,
) -> JobSummary:
    """Check everything that can be checked before writing anything, then run the job."""
    import mlflow

    started = time.monotonic()
    source = find_input(input_path)
    check_output_free(output)
    model = scoring_model.resolve_model(model_spec)
    scoring_model.check_pyfunc(model)
    say(f"model {model.asked} is version {model.version}")
    experiment_id = tracking.ensure_experiment(EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"score-{input_path.name}") as run:
        mlflow.set_tags({"model_name": model.name, "model_version": model.version})
        mlflow.log_params(
            {
                "model": model.asked,
                "model_uri": model.uri,
                "model_version": model.version,
                "input": str(input_path.resolve()),
                "input_format": source.format,
                "output": str(output.resolve()),
                "spark_master": master,
            }
        )
        with staged_output(output) as stage:
            rows_in, rows_scored, rows_rejected, schemas = _run_spark(
                source, stage, model, master, conf or {}
            )
            if rows_in != rows_scored + rows_rejected:
                raise ScoringError(
                    f"rows in {rows_in} != scored {rows_scored} + rejected {rows_rejected}"
                )
            duration = time.monotonic() - started
            summary = JobSummary(
                model=model.asked,
                model_version=model.version,
                input=str(input_path.resolve()),
                output=str(output.resolve()),
                master=master,
                rows_in=rows_in,
                rows_scored=rows_scored,
                rows_rejected=rows_rejected,
                duration_s=round(duration, 3),
                rows_per_s=round(rows_in / duration, 1),
                mlflow_run_id=run.info.run_id,
            )
            (stage / SUMMARY).write_text(json.dumps(asdict(summary), indent=2) + "\n")
            digests = {
                name: files_digest(_parquet_files(stage / name)) for name in (SCORED, REJECTS)
            }
        mlflow.log_metrics(
            {
                "rows_in": rows_in,
                "rows_scored": rows_scored,
                "rows_rejected": rows_rejected,
                "duration_s": summary.duration_s,
                "rows_per_s": summary.rows_per_s,
            }
        )
        log_dataset(DatasetRecord("input", source.path, source.digest(), rows_in, schemas["input"]))
        for name, rows in ((SCORED, rows_scored), (REJECTS, rows_rejected)):
            log_dataset(DatasetRecord(name, output / name, digests[name], rows, schemas[name]))
        mlflow.log_artifact(str(output / SUMMARY))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iris_pipeline.scoring", description=__doc__)
    parser.add_argument("--input", required=True, help="CSV/Parquet file or folder")
    parser.add_argument("--output", required=True, help="a new folder")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="alias, version or models:/ URI")
    parser.add_argument("--master", default=DEFAULT_MASTER, help="Spark master URL")
    parser.add_argument("--conf", action="append", default=[], help="spark KEY=VALUE, repeatable")
    args = parser.parse_args(argv)
    if not args.input.strip() or not args.output.strip():
        parser.error("--input and --output must not be empty (make score INPUT=... OUTPUT=...)")
    try:
        conf = parse_conf(args.conf)
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = run_job(Path(args.input), Path(args.output), args.model, args.master, conf)
    except ScoringError as error:
        print(f"score: error: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    say(summary.line())
    say(f"output in {summary.output}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
