"""Rows per second of batch scoring, four ways, on the same generated file and model version.

python -m tools.score_bench --rows 1000000

1. `make score`'s job in Spark local mode (`local[2]`);
2. the same job on a standalone cluster of two one-core workers on 127.0.0.1;
3. `mlflow models predict` (single process) on the file's valid rows, features only, since it
   has no reject path;
4. a plain pandas loop: the file read in chunks, the same input rules, the sklearn flavour's
   predict_proba, Parquet out.

Each is timed from its start to its output on disk (Spark's start-up and MLflow's imports
included, as a user waits for them). Writes reports/score-bench.{json,md}. Uses the MLflow
store of the environment (`make train` first); the machine may be shared, so the figures
are a floor. See docs/batch-scoring.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from iris_pipeline.input_rules import FeatureRule, feature_rules
from iris_pipeline.paths import PROJECT_ROOT, REPORTS_DIR, VENV_BIN
from iris_service.names import FEATURE_NAMES
from tools.flower_file import write_flower_csv
from tools.spark_cluster import standalone_cluster

CHUNK_ROWS = 100_000


def _run(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.monotonic() - started


def spark_job(input_csv: Path, output: Path, master: str, env: dict[str, str]) -> float:
    return _run(
        [
            sys.executable,
            *("-m", "iris_pipeline.scoring", "--input", str(input_csv)),
            *("--output", str(output), "--master", master),
            *("--conf", "spark.ui.enabled=false"),
        ],
        env,
    )


def mlflow_predict(features_csv: Path, output: Path, model_uri: str, env: dict[str, str]) -> float:
    return _run(
        [
            str(VENV_BIN / "mlflow"),
            *("models", "predict", "-m", model_uri, "-i", str(features_csv)),
            *("-o", str(output), "-t", "csv", "--env-manager", "local"),
        ],
        env,
    )


def _in_range(rule: FeatureRule, values: np.ndarray) -> np.ndarray:
    """FeatureRule.in_range over an array."""
    ok = np.ones(len(values), dtype=bool)
    if rule.greater_than is not None:
        ok &= values > rule.greater_than
    if rule.at_least is not None:
        ok &= values >= rule.at_least
    if rule.less_than is not None:
        ok &= values < rule.less_than
    if rule.at_most is not None:
        ok &= values <= rule.at_most
    return ok


def pandas_loop(input_csv: Path, output: Path, model_uri: str) -> float:
    """Chunks of the file through the same rules and the sklearn flavour's predict_proba."""
    import mlflow.sklearn
    import pandas as pd

    started = time.monotonic()
    model = mlflow.sklearn.load_model(model_uri)
    rules = feature_rules()
    output.mkdir(parents=True)
    for index, chunk in enumerate(pd.read_csv(input_csv, dtype=str, chunksize=CHUNK_ROWS)):
        values = chunk[list(FEATURE_NAMES)].apply(pd.to_numeric, errors="coerce").to_numpy()
        valid = np.ones(len(chunk), dtype=bool)
        for column, rule in enumerate(rules):
            feature = values[:, column]
            with np.errstate(invalid="ignore"):
                valid &= np.isfinite(feature) & _in_range(rule, feature)
        probabilities = model.predict_proba(values[valid])
        scored = chunk[valid].assign(
            **{f"probability_{i}": probabilities[:, i] for i in range(probabilities.shape[1])},
            class_id=probabilities.argmax(axis=1),
        )
        scored.to_parquet(output / f"part-{index:05d}.parquet")
        chunk[~valid].to_parquet(output / f"rejects-{index:05d}.parquet")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--invalid", type=int, default=1_000)
    parser.add_argument("--model", default="models:/iris-classifier@champion")
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    args = parser.parse_args()
    from iris_pipeline.scoring_model import resolve_model

    model_uri = resolve_model(args.model).uri
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="score-bench-") as scratch:
        work = Path(scratch)
        flowers = write_flower_csv(work / "flowers.csv", args.rows, args.invalid)
        import pandas as pd

        frame = pd.read_csv(flowers.path, dtype=str)
        valid = frame.drop(index=list(flowers.invalid))[list(FEATURE_NAMES)]
        valid.to_csv(work / "features.csv", index=False)
        timings = {
            "spark local[2]": (spark_job(flowers.path, work / "o1", "local[2]", env), args.rows)
        }
        with standalone_cluster(work / "cluster", workers=2) as cluster:
            seconds = spark_job(flowers.path, work / "o2", cluster.master_url, env)
            timings["spark standalone, 2 workers x 1 core"] = (seconds, args.rows)
        seconds = mlflow_predict(work / "features.csv", work / "o3.csv", model_uri, env)
        timings["mlflow models predict (valid rows)"] = (seconds, len(valid))
        timings["pandas loop, 100k-row chunks"] = (
            pandas_loop(flowers.path, work / "o4", model_uri),
            args.rows,
        )
    for name, (seconds, rows) in timings.items():
        results[name] = {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": rows / seconds}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "score-bench.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| how | rows | seconds | rows/s |", "|---|---:|---:|---:|"]
    lines += [
        f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} |"
        for name, r in results.items()
    ]
    (args.out_dir / "score-bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
