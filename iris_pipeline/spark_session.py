"""The Spark session of the batch job: the same code for `local[*]`, `spark://…` and `k8s://…`.

Only the master URL changes between a laptop and a cluster. The defaults keep a job on this
machine small and on loopback: the driver binds 127.0.0.1 unless SPARK_LOCAL_IP says otherwise,
few shuffle partitions (the job's only shuffles are small aggregations), small executors, and
the Python that runs the driver for the Python workers (PYSPARK_PYTHON overrides it: on a
cluster, the interpreter of the Spark image). Any `spark.*` setting can be given on top.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
APP_NAME = "iris-batch-scoring"
LOOPBACK = "127.0.0.1"
# scikit-learn warns on every batch that the pyfunc hands it a DataFrame with column names
# while the estimator was fitted on an array; the columns are in the fitted order.
WORKER_WARNINGS = "ignore:X has feature names:UserWarning"


def default_conf(master: str) -> dict[str, str]:
    """Settings for a bounded job; every one can be overridden by `extra`."""
    local_ip = os.environ.get("SPARK_LOCAL_IP", LOOPBACK)
    conf = {
        "spark.driver.host": local_ip,
        "spark.driver.bindAddress": local_ip,
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.showConsoleProgress": "true",
        "spark.ui.port": "4040",
        "spark.executorEnv.PYTHONWARNINGS": WORKER_WARNINGS,
        # Arrow batches of 10,000 rows: the model sees large blocks, memory stays small.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    }
    if not master.startswith("local"):
        conf.update(
            {
                "spark.executor.memory": "512m",
                "spark.executor.cores": "1",
                "spark.python.worker.reuse": "true",
            }
        )
    return conf


def start_session(master: str, extra: Mapping[str, str] | None = None) -> SparkSession:
    """A Spark session on `master` with the job's defaults and `extra` on top."""
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Local mode's Python workers inherit the driver's environment.
    os.environ.setdefault("PYTHONWARNINGS", WORKER_WARNINGS)
    # PySpark 4.3 warns that it does not fully support pandas 3; the job only hands the
    # model float64 columns through Arrow, which the tests check against the service.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(APP_NAME).master(master)
    for key, value in {**default_conf(master), **(extra or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def parse_conf(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings (the job's repeatable --conf) as a dict."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--conf wants KEY=VALUE, got {pair!r}")
        conf[key.strip()] = value
    return conf
