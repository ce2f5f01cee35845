"""Cheaper JVM starts for the short Spark runs of tests and benchmarks on this machine.

A Spark JVM spends most of its start loading and verifying some ten thousand classes and
JIT-compiling them with C2 on every core: on 2 busy cores, a local session and one tiny job
cost about 28 s of CPU. Three standard HotSpot options cut that to about 7 s without changing
what Spark runs:

- a dynamic class-data-sharing archive (`-XX:SharedArchiveFile`, JDK 13+) of the classes a
  Spark JVM loads, written once by a small warm-up job (`-XX:ArchiveClassesAtExit`) in
  `make test`'s set-up (tools/test_setup.py) and kept under ~/.cache/iris-service/spark-cds,
  named after the Java and pyspark versions and the jar list (a JVM that cannot map it, say
  after an upgrade, ignores it and loads classes the ordinary way);
- the C1 compiler only (`-XX:TieredStopAtLevel=1`) for short-lived JVMs: for a run of
  seconds, C2's compile work costs more than its faster code saves;
- the serial garbage collector: small heaps, no parallel GC threads fighting for 2 cores.

`java_options()` gives them as one string, for `spark.driver.extraJavaOptions`,
`spark.executor.extraJavaOptions` and a standalone cluster's SPARK_DAEMON_JAVA_OPTS.
Used by tests/integration/test_batch_scoring.py; `make score` keeps Java's defaults.

python -m tools.spark_jvm   # writes the archive if missing, prints the options
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from iris_pipeline.paths import USER_CACHE_DIR

JIT_AND_GC = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
ARCHIVE_TIMEOUT_S = 300

# The warm-up job: a local session that reads a CSV, aggregates, runs a pandas UDF over Arrow
# and writes Parquet, so the archive holds the classes the scoring job loads.
_WARM_UP = """
import sys
from pyspark.sql import SparkSession, functions as F
from pyspark.sql.functions import pandas_udf
folder, options = sys.argv[1], sys.argv[2]
spark = (
    SparkSession.builder.master("local[1]")
    .config("spark.ui.enabled", "false")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.driver.extraJavaOptions", options)
    .getOrCreate()
)
with open(folder + "/in.csv", "w") as handle:
    handle.write("a,b\\n" + "".join(f"{i},{i / 3}\\n" for i in range(1000)))
frame = spark.read.option("header", True).schema("a string, b string").csv(folder + "/in.csv")
frame = frame.select(F.col("a"), F.col("b").try_cast("double").alias("b")).persist()
frame.groupBy((F.col("a") % 7).alias("k")).agg(F.count(F.lit(1))).collect()
@pandas_udf("double")
def twice(values):
    return values * 2
frame.withColumn("c", twice("b")).write.parquet(folder + "/out")
spark.stop()
"""


def cache_dir() -> Path:
    return USER_CACHE_DIR / "spark-cds"


def _java_version() -> str:
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if "JAVA_HOME" in os.environ else "java"
    result = subprocess.run(
        [str(java), "-version"], capture_output=True, text=True, check=False, timeout=60
    )
    return result.stderr + result.stdout


def archive_key() -> str:
    """Java's version, pyspark's version and its jars: what a CDS archive is valid for."""
    import pyspark

    jars = sorted(p.name for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar"))
    text = "\n".join([_java_version(), pyspark.__version__, sys.version, *jars])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def class_archive() -> Path | None:
    """The CDS archive for this Java and pyspark, written first if missing; None if the JVM
    could not write one (the options then leave it out)."""
    folder = cache_dir()
    path = folder / f"spark-{archive_key()}.jsa"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    # Written under a name of its own, then renamed: two writers at once never mix.
    partial = folder / f".{path.stem}.{os.getpid()}.partial.jsa"
    options = " ".join([f"-XX:ArchiveClassesAtExit={partial}", *JIT_AND_GC])
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
        subprocess.run(
            [sys.executable, "-c", _WARM_UP, work, options],
            env=env,
            capture_output=True,
            check=False,
            timeout=ARCHIVE_TIMEOUT_S,
        )
    if not partial.exists():
        return None
    os.replace(partial, path)
    return path


def java_options(archive: Path | None = None, *, short: bool = True) -> str:
    """HotSpot options for a Spark JVM (driver, executor or standalone daemon). `short=False`
    keeps C2 for a JVM that runs long enough to gain from it (measured: a local job over
    1,000,000 rows spent 51 s of JVM CPU with C2, 59 s with C1 only)."""
    shared = [f"-XX:SharedArchiveFile={archive}"] if archive is not None else []
    jit = [option for option in JIT_AND_GC if short or "Tiered" not in option]
    return " ".join([*shared, *jit])


def main() -> None:
    print(java_options(class_archive()))


if __name__ == "__main__":
    main()
