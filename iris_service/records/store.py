"""The prediction store: every answered prediction and every label, in one SQL database.

One small interface over SQLAlchemy Core, for two engines:
- **SQLite** (the default, nothing to install): one file shared by the pod's API workers, in
  WAL mode (readers never wait for the writer), with a busy timeout for the writers;
- **PostgreSQL** (`IRIS_RECORD_STORE_URL=postgresql://…`, driver psycopg 3): one database for
  every replica, so a label is accepted by any replica and every replica computes the same
  live quality.

Two tables. `predictions`: one row per answered prediction (server request id, the client's
X-Request-ID and the API key it came with, time, route and protocol, model version, inputs,
outputs as JSON text). `labels`: one row per labelled flower, unique by `key` (the server id,
and `/<index>` for a flower of a batch): the database refuses a second label for the same
flower, whichever replica or worker takes it, and a request's labels are inserted in one
transaction, so all are recorded or none. A label keeps the flower's features and the
prediction it joins, so retention of predictions never changes a label.

Bounded by construction: `enforce_retention` deletes predictions and labels older than the
retention age and beyond the configured number of rows (oldest first); start-up reads only
the newest labels a live-quality window needs (`recent_labels`), never the history; nothing
is indexed in memory. The schema is versioned (`schema_version`) and created or migrated by
`migrate()` when the service starts; a store written by a newer version is refused.

Errors: a database that cannot be reached or written (down, full disk, locked past the busy
timeout) raises `StoreUnavailable`; callers decide what it costs (a record lost and counted,
a 503 on /feedback), never a prediction answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from iris_service.errors import first_line
from iris_service.records.store_errors import (  # the store's users may import them from here
    AlreadyLabelled as AlreadyLabelled,
)
from iris_service.records.store_errors import (
    NewerSchema as NewerSchema,
)
from iris_service.records.store_errors import (
    Record as Record,
)
from iris_service.records.store_errors import (
    StoreUnavailable as StoreUnavailable,
)

logger = logging.getLogger("iris_service.records.store")

SCHEMA_VERSION = 1

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("server_request_id", sa.String(32), nullable=False, unique=True),
    sa.Column("client_request_id", sa.String(64)),
    sa.Column("api_key_id", sa.String(16)),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("endpoint", sa.String(80), nullable=False),
    sa.Column("protocol", sa.String(16), nullable=False),
    sa.Column("model_tag", sa.String(160), nullable=False),
    sa.Column("latency_ms", sa.Float),
    sa.Column("inputs", sa.Text),
    sa.Column("outputs", sa.Text, nullable=False),
    sa.Index("ix_predictions_client", "client_request_id", "api_key_id"),
    sa.Index("ix_predictions_ts", "ts"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("key", sa.String(48), nullable=False, unique=True),
    sa.Column("server_request_id", sa.String(32), nullable=False),
    sa.Column("flower_index", sa.Integer),
    sa.Column("request_id", sa.String(80), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("class_name", sa.String(32), nullable=False),
    sa.Column("predicted", sa.String(32), nullable=False),
    sa.Column("correct", sa.Boolean, nullable=False),
    sa.Column("model_tag", sa.String(160), nullable=False),
    sa.Column("predicted_at", sa.Float, nullable=False),
    sa.Column("endpoint", sa.String(80), nullable=False),
    sa.Column("features", sa.Text),
    sa.Index("ix_labels_ts", "ts"),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

PREDICTION_COLUMNS = tuple(c.name for c in predictions.columns if c.name != "id")
LABEL_FIELDS = (
    "key",
    "request_id",
    "server_request_id",
    "index",
    "ts",
    "class_name",
    "predicted",
    "correct",
    "model_tag",
    "predicted_at",
    "endpoint",
    "features",
)


def engine_url(url: str) -> str:
    """`url` with the driver this project ships: psycopg 3 for PostgreSQL."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path)}"


def describe(url: str) -> str:
    """The store's URL without its password, for logs and errors."""
    try:
        return sa.engine.make_url(engine_url(url)).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "an unreadable store URL"


def _make_engine(url: str, busy_timeout_s: float) -> Engine:
    url = engine_url(url)
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.close()

        return engine
    return sa.create_engine(
        url,
        pool_pre_ping=True,  # a connection the server dropped (restart) is replaced
        pool_size=2,
        max_overflow=2,
        pool_timeout=busy_timeout_s,
        connect_args={"connect_timeout": max(1, int(busy_timeout_s))},
    )


def _json_text(value: Any) -> str | None:
    """A JSON column's text: bytes are a JSON document already encoded (a request body as
    it came, an answer as it was sent); anything else is encoded here (a string too)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return json.dumps(value, separators=(",", ":"))


class RecordStore:
    """Predictions and labels in one database (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        retention_s: float = 30 * 86_400,
        max_predictions: int = 1_000_000,
        max_labels: int = 1_000_000,
        busy_timeout_s: float = 5.0,
    ) -> None:
        if min(retention_s, max_predictions, max_labels) <= 0:
            raise ValueError("retention and row limits must be positive")
        self.url = url
        self.retention_s = retention_s
        self.max_predictions = max_predictions
        self.max_labels = max_labels
        self.engine = _make_engine(url, busy_timeout_s)
        self._schema_ready = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"RecordStore({describe(self.url)})"

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------ schema

    def ensure_schema(self) -> None:
        """`migrate()` once: a store that was down when the service started gets its tables
        on the first use after it is back (StoreUnavailable until then)."""
        if not self._schema_ready:
            self.migrate()

    def migrate(self) -> None:
        """Create the tables of SCHEMA_VERSION, or check that they are there; NewerSchema for
        a store a newer version wrote. Safe when several processes start at once (PostgreSQL:
        an advisory lock; SQLite: a process that loses the race to create a table retries)."""
        for attempt in range(5):
            try:
                with self._unavailable_as_error(), self.engine.begin() as connection:
                    self._migrate(connection)
                self._schema_ready = True
                return
            except StoreUnavailable as exc:
                if attempt == 4 or not ("already exists" in str(exc) or "locked" in str(exc)):
                    raise
                time.sleep(0.2)

    def _migrate(self, connection: sa.Connection) -> None:
        if self.dialect == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7277001)"))
        metadata.create_all(connection, checkfirst=True)
        found = connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar_one()
        if found is None:
            connection.execute(schema_version.insert(), {"version": SCHEMA_VERSION})
        elif found > SCHEMA_VERSION:
            raise NewerSchema(
                f"the record store {describe(self.url)} has schema version {found}; this "
                f"service knows versions up to {SCHEMA_VERSION}"
            )

    # -------------------------------------------------------------------------- predictions

    def add_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert prediction rows (PREDICTION_COLUMNS; "inputs" and "outputs" as JSON bytes
        or as values to encode) in one transaction."""
        self.ensure_schema()
        if not rows:
            return
        values = [
            {
                **{name: row.get(name) for name in PREDICTION_COLUMNS},
                "inputs": _json_text(row.get("inputs")),
                "outputs": _json_text(row["outputs"]),
            }
            for row in rows
        ]
        with self._unavailable_as_error(), self.engine.begin() as connection:
            connection.execute(predictions.insert(), values)

    def prediction(self, server_id: str) -> Record | None:
        """The prediction of `server_id`, its JSON columns decoded, or None."""
        self.ensure_schema()
        query = sa.select(predictions).where(predictions.c.server_request_id == server_id)
        with self._unavailable_as_error(), self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else _decoded_prediction(row)

    def server_ids(self, client_id: str, key_id: str | None, limit: int = 2) -> list[str]:
        """Up to `limit` server ids of predictions sent with the client id `client_id` and
        the API key `key_id` (None: keys off), newest first."""
        self.ensure_schema()
        key_match = (
            predictions.c.api_key_id.is_(None)
            if key_id is None
            else predictions.c.api_key_id == key_id
        )
        query = (
            sa.select(predictions.c.server_request_id)
            .where(predictions.c.client_request_id == client_id, key_match)
            .order_by(predictions.c.id.desc())
            .limit(limit)
        )
        with self._unavailable_as_error(), self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def count_predictions(self) -> int:
        with self._unavailable_as_error(), self.engine.connect() as connection:
            return connection.execute(
                sa.select(sa.func.count()).select_from(predictions)
            ).scalar_one()

    # ------------------------------------------------------------------------------- labels

    def add_labels(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Insert every label of `records` in one transaction, or none: AlreadyLabelled with
        the keys that have a label (in the store, or twice in `records`)."""
        self.ensure_schema()
        keys = [record["key"] for record in records]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise AlreadyLabelled(twice)
        values = [_label_row(record) for record in records]
        with self._unavailable_as_error():
            try:
                with self.engine.begin() as connection:
                    connection.execute(labels.insert(), values)
            except sa.exc.IntegrityError:
                raise AlreadyLabelled(self._labelled_among(keys)) from None

    def _labelled_among(self, keys: Sequence[str]) -> list[str]:
        query = sa.select(labels.c.key).where(labels.c.key.in_(keys))
        with self.engine.connect() as connection:
            return sorted(connection.execute(query).scalars())

    def labels_after(self, cursor: int, limit: int = 10_000) -> tuple[int, list[Record]]:
        """Labels recorded after the label id `cursor`, oldest first, at most `limit`; and
        the new cursor."""
        self.ensure_schema()
        query = sa.select(labels).where(labels.c.id > cursor).order_by(labels.c.id).limit(limit)
        with self._unavailable_as_error(), self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return (rows[-1]["id"] if rows else cursor), [_decoded_label(row) for row in rows]

    def label_ids_after(self, cursor: int, limit: int = 10_000) -> list[int]:
        """The ids of the labels after `cursor`, ascending (an index-only read)."""
        self.ensure_schema()
        query = sa.select(labels.c.id).where(labels.c.id > cursor).order_by(labels.c.id)
        with self._unavailable_as_error(), self.engine.connect() as connection:
            return list(connection.execute(query.limit(limit)).scalars())

    def labels_by_id(self, ids: Sequence[int]) -> list[Record]:
        """The labels of these ids, in id order."""
        if not ids:
            return []
        query = sa.select(labels).where(labels.c.id.in_(ids)).order_by(labels.c.id)
        with self._unavailable_as_error(), self.engine.connect() as connection:
            return [_decoded_label(row) for row in connection.execute(query).mappings()]

    def recent_labels(self, count: int) -> tuple[int, list[Record]]:
        """The newest `count` labels, oldest first, and the cursor after them: what a
        starting worker reads (never more, however long the history)."""
        self.ensure_schema()
        query = sa.select(labels).order_by(labels.c.id.desc()).limit(count)
        with self._unavailable_as_error(), self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            last = connection.execute(sa.select(sa.func.max(labels.c.id))).scalar_one()
        return (last or 0), [_decoded_label(row) for row in reversed(rows)]

    def iter_labels(self, batch: int = 5_000) -> Iterator[Record]:
        """Every label, oldest first, read in batches (retraining, exports)."""
        cursor = 0
        while True:
            cursor, found = self.labels_after(cursor, batch)
            if not found:
                return
            yield from found

    def iter_predictions(self, batch: int = 5_000) -> Iterator[Record]:
        """Every prediction, oldest first, read in batches (exports)."""
        cursor = 0
        while True:
            query = (
                sa.select(predictions)
                .where(predictions.c.id > cursor)
                .order_by(predictions.c.id)
                .limit(batch)
            )
            with self._unavailable_as_error(), self.engine.connect() as connection:
                rows = connection.execute(query).mappings().all()
            if not rows:
                return
            cursor = rows[-1]["id"]
            yield from (_decoded_prediction(row) for row in rows)

    def count_labels(self) -> int:
        return self._count(labels)

    # ---------------------------------------------------------------------------- retention

    def enforce_retention(self, now: float | None = None) -> int:
        """Delete rows older than the retention age and beyond the row limits (oldest
        first); the number of rows deleted."""
        now = time.time() if now is None else now
        deleted = 0
        with self._unavailable_as_error(), self.engine.begin() as connection:
            for table, limit in ((predictions, self.max_predictions), (labels, self.max_labels)):
                deleted += connection.execute(
                    table.delete().where(table.c.ts < now - self.retention_s)
                ).rowcount
                newest = connection.execute(sa.select(sa.func.max(table.c.id))).scalar_one()
                if newest is not None and newest > limit:
                    deleted += connection.execute(
                        table.delete().where(table.c.id <= newest - limit)
                    ).rowcount
        return deleted

    # ------------------------------------------------------------------------------ helpers

    def _count(self, table: sa.Table) -> int:
        with self._unavailable_as_error(), self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()

    def _unavailable_as_error(self) -> _Unavailable:
        return _Unavailable(self.url)


class _Unavailable:
    """Turns the database's errors, but a unique key's, into StoreUnavailable (one line, no
    URL password, no driver internals)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> bool:
        unavailable = isinstance(exc, sa.exc.DBAPIError) and not isinstance(
            exc, sa.exc.IntegrityError
        )  # down, full, locked, not a database, tables gone: not a request's fault
        if unavailable:
            reason = first_line(getattr(exc, "orig", exc), 200)
            raise StoreUnavailable(f"{describe(self.url)}: {reason}") from None
        return False


def _label_row(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": record["key"],
        "server_request_id": record["server_request_id"],
        "flower_index": record.get("index"),
        "request_id": record["request_id"],
        "ts": record["ts"],
        "class_name": record["class_name"],
        "predicted": record["predicted"],
        "correct": bool(record["correct"]),
        "model_tag": record["model_tag"] or "",
        "predicted_at": record["predicted_at"],
        "endpoint": record["endpoint"],
        "features": _json_text(record.get("features")),
    }


def _decoded_label(row: Mapping[str, Any]) -> Record:
    record = {name: row[name] for name in row if name != "flower_index"}
    record["index"] = row["flower_index"]
    record["correct"] = bool(row["correct"])
    record["features"] = json.loads(row["features"]) if row["features"] else None
    return record


def _decoded_prediction(row: Mapping[str, Any]) -> Record:
    record = {name: row[name] for name in row if name != "id"}
    for name in ("inputs", "outputs"):
        if record[name] is not None:
            # Stored as JSON text; anything else (written by hand) is given back as text.
            with contextlib.suppress(ValueError, RecursionError):
                record[name] = json.loads(record[name])
    return record


def open_record_store(url: str) -> RecordStore:
    """The store at `url` with the settings' retention; nothing is connected yet."""
    from iris_service.settings import settings

    return RecordStore(
        url,
        retention_s=settings.record_retention_days * 86_400,
        max_predictions=settings.record_max_predictions,
        max_labels=settings.record_max_labels,
    )
