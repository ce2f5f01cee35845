"""The MLflow record of a batch job: one run per job in the experiment `batch-scoring`.

The run holds the model version (params and tags), the counts, the duration and rows/s
(metrics), the input, the scored output and the rejects as datasets (source path, digest,
schema; rows as a dataset tag), and the job's summary.json as an artifact. A job that fails
after it started ends its run as FAILED.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

EXPERIMENT = "batch-scoring"


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset of the job: where, what it is, its rows and schema."""

    name: str  # input, scored, rejects
    path: Path
    digest: str
    rows: int
    schema: StructType | None = None


def _mlflow_schema(schema: StructType | None) -> Any:
    """The Spark schema as MLflow columns (their names and types), when it maps."""
    if schema is None:
        return None
    from mlflow.types import ColSpec, DataType, Schema

    spark_to_mlflow = {
        "string": DataType.string,
        "double": DataType.double,
        "float": DataType.float,
        "int": DataType.integer,
        "bigint": DataType.long,
        "boolean": DataType.boolean,
    }
    columns = []
    for field in schema.fields:
        kind = spark_to_mlflow.get(field.dataType.simpleString())
        if kind is None:
            return None
        columns.append(ColSpec(kind, field.name))
    return Schema(columns)


def log_dataset(record: DatasetRecord) -> None:
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        # A local path matches MLflow's local-artifact source twice over; either reads it.
        warnings.filterwarnings("ignore", message="The specified dataset source")
        source = resolve_dataset_source(str(record.path.resolve()))
    dataset = MetaDataset(
        source=source,
        name=record.name,
        digest=record.digest[:16],
        schema=_mlflow_schema(record.schema),
    )
    context = "input" if record.name == "input" else "output"
    mlflow.log_input(dataset, context=context, tags={"rows": str(record.rows)})
