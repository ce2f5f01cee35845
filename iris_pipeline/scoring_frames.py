"""The Spark side of the batch job: read, check each row against the service's rules, number
the rows by their position in the input, score with the version's pyfunc.

Only Spark's own functions and `mlflow.pyfunc.spark_udf` run on the executors, so a cluster
needs the pipeline's pinned requirements (MLflow, scikit-learn, pandas, pyarrow), not this
package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from iris_pipeline.input_rules import FeatureRule, feature_rules
from iris_pipeline.scoring_io import InputFiles, ScoringError, csv_header
from iris_service.names import CLASS_NAMES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CLASS_ID, CLASS_NAME = "class_id", "class_name"
MODEL_VERSION, ROW_POSITION, SOURCE_FILE = "model_version", "row_position", "source_file"
REJECT_REASON = "reject_reason"
PROBABILITY_PREFIX = "probability_"
PROBABILITY_COLUMNS = tuple(PROBABILITY_PREFIX + name for name in CLASS_NAMES)
RESERVED = {CLASS_ID, CLASS_NAME, MODEL_VERSION, ROW_POSITION, SOURCE_FILE, REJECT_REASON}
RESERVED |= set(PROBABILITY_COLUMNS)
# Working columns, dropped before writing.
_VALUE, _MONO, _FILE, _BLOCK, _BASE = "__value_", "__mono", "__file", "__block", "__base"


@dataclass(frozen=True)
class CheckedRows:
    """Every input row once, with its position, source file and reason ("" when valid)."""

    frame: DataFrame
    input_columns: tuple[str, ...]
    rows_in: int


def read_input(spark: SparkSession, source: InputFiles) -> DataFrame:
    """The input as read; CSV columns stay text, so a bad value is seen, not lost."""
    paths = [str(file) for file in source.files]
    if source.format == "csv":
        header = csv_header(source.files)
        schema = ", ".join(f"`{name}` string" for name in header)
        frame = spark.read.option("header", True).schema(schema).csv(paths)
    else:
        frame = spark.read.parquet(*paths)
    columns = set(frame.columns)
    missing = [rule.name for rule in feature_rules() if rule.name not in columns]
    if missing:
        raise ScoringError(f"input {source.path} has no column {', '.join(missing)}")
    clashing = sorted(columns & RESERVED)
    if clashing:
        raise ScoringError(f"input {source.path} already has output columns {clashing}")
    return frame


def _value(frame: DataFrame, name: str) -> tuple[Column, Column]:
    """(is missing, value as double or null when not a number) of one input column."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    column = F.col(name)
    if isinstance(frame.schema[name].dataType, StringType):
        text = F.trim(column)
        return column.isNull() | (text == ""), text.try_cast("double")
    return column.isNull(), column.try_cast("double")


def _in_range(rule: FeatureRule, value: Column) -> Column:
    from pyspark.sql import functions as F

    condition = F.lit(True)
    if rule.greater_than is not None:
        condition = condition & (value > rule.greater_than)
    if rule.at_least is not None:
        condition = condition & (value >= rule.at_least)
    if rule.less_than is not None:
        condition = condition & (value < rule.less_than)
    if rule.at_most is not None:
        condition = condition & (value <= rule.at_most)
    return condition


def _problem(rule: FeatureRule, missing: Column, value: Column) -> Column:
    """The rule's words for the first check a value fails, else null (FeatureRule.problem)."""
    from pyspark.sql import functions as F

    not_finite = F.isnan(value) | value.isin(float("inf"), float("-inf"))
    problem = F.when(missing, F.lit(rule.missing())).when(
        value.isNull(), F.lit(rule.not_a_number())
    )
    if rule.finite:
        problem = problem.when(not_finite, F.lit(rule.not_finite()))
    # Spark orders NaN above every number: a NaN the schema allowed is still out of range.
    return problem.when(~_in_range(rule, value), F.lit(rule.out_of_range()))


def check_rows(frame: DataFrame) -> CheckedRows:
    """Each row's reject reason (every rule it breaks, `; `-joined) and its position.

    The position is the row's 0-based index in the input, files taken in path order: Spark
    reads a file in splits, a split's rows stay together and in order, so numbering the rows
    of each split (monotonically_increasing_id) and adding the rows of the splits before it
    gives every row its place. The frame is persisted so that the numbering, the counts and
    both outputs see the same rows.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    input_columns = tuple(frame.columns)
    problems, values = [], []
    for rule in feature_rules():
        missing, value = _value(frame, rule.name)
        problems.append(_problem(rule, missing, value))
        values.append(value.alias(_VALUE + rule.name))
    checked = frame.select(
        *input_columns,
        *values,
        F.concat_ws("; ", *problems).alias(REJECT_REASON),
        F.col("_metadata.file_path").alias(_FILE),
        F.col("_metadata.file_block_start").alias(_BLOCK),
        F.monotonically_increasing_id().alias(_MONO),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    splits = sorted(
        (row[_FILE], row[_BLOCK], row["rows"], row["first"])
        for row in checked.groupBy(_FILE, _BLOCK)
        .agg(F.count(F.lit(1)).alias("rows"), F.min(_MONO).alias("first"))
        .collect()
    )
    bases, offset = [], 0
    for path, block, rows, first in splits:
        bases.append((path, block, offset - first))
        offset += rows
    spark = frame.sparkSession
    base_frame = spark.createDataFrame(bases, f"{_FILE} string, {_BLOCK} long, {_BASE} long")
    positioned = (
        checked.join(F.broadcast(base_frame), on=[_FILE, _BLOCK])
        .withColumn(ROW_POSITION, F.col(_MONO) + F.col(_BASE))
        .withColumnRenamed(_FILE, SOURCE_FILE)
    )
    return CheckedRows(positioned, input_columns, offset)


def rejects(checked: CheckedRows) -> DataFrame:
    """Rows that break a rule, as read, with the reason."""
    from pyspark.sql import functions as F

    return checked.frame.where(F.col(REJECT_REASON) != "").select(
        *checked.input_columns, REJECT_REASON, ROW_POSITION, SOURCE_FILE
    )


def scored(checked: CheckedRows, model_uri: str, version: str) -> DataFrame:
    """Valid rows with class, probability per class, model version, position and file.

    The version's pyfunc (`mlflow.pyfunc.spark_udf`) answers predict_proba; the class is the
    first largest probability, as the service answers it.
    """
    import mlflow
    from pyspark.sql import functions as F

    spark = checked.frame.sparkSession
    predict = mlflow.pyfunc.spark_udf(
        spark, model_uri, result_type="array<double>", env_manager="local"
    )
    rules = feature_rules()
    valid = checked.frame.where(F.col(REJECT_REASON) == "")
    features = [F.col(_VALUE + rule.name).alias(rule.name) for rule in rules]
    probabilities = F.col("__probabilities")
    with_probabilities = valid.withColumn("__probabilities", predict(F.struct(*features)))
    class_id = F.array_position(probabilities, F.array_max(probabilities)) - 1
    names = F.array(*[F.lit(name) for name in CLASS_NAMES])
    passed = [
        F.col(_VALUE + name).alias(name) if name in {r.name for r in rules} else F.col(name)
        for name in checked.input_columns
    ]
    return with_probabilities.select(
        *passed,
        class_id.cast("int").alias(CLASS_ID),
        F.element_at(names, class_id.cast("int") + 1).alias(CLASS_NAME),
        *[
            F.element_at(probabilities, index + 1).alias(column)
            for index, column in enumerate(PROBABILITY_COLUMNS)
        ],
        F.lit(version).alias(MODEL_VERSION),
        ROW_POSITION,
        SOURCE_FILE,
    )
