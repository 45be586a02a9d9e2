"""The prediction log's storage layout: Alembic migrations from the first releases' schema, day
partitions on PostgreSQL, exactly once across redeliveries, and retention (`prune`).

PostgreSQL tests run on the real server (a fresh database each); SQLite ones on a file."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from lifecycle.core.durations import parse_duration
from lifecycle.core.errors import ConfigError
from lifecycle.core.settings import Settings
from lifecycle.core.store import PredictionReader, PredictionRecord, PredictionStore, migrate
from lifecycle.core.store.database import PredictionDatabase
from lifecycle.core.store.partitions import AHEAD_DAYS, DEFAULT, partition_name
from lifecycle.core.store.prune import PRUNE_LOCK
from lifecycle.core.store.tables import DEDUP_WINDOW
from tests.support.cli import assert_one_line_error, cli_env, run_cli
from tests.support.store_records import make_record

NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()


def _at(record: PredictionRecord, when: datetime) -> PredictionRecord:
    return dataclasses.replace(record, created_at=when)


def _db(url: str, retention: timedelta | None = None) -> PredictionDatabase:
    return PredictionDatabase(url, on_rejected=lambda _: None, retention=retention)


def _scalar(url: str, sql: str, **params: object) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def _partitions(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'predictions'::regclass"
                )
            )
            return {name for (name,) in rows}
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- migrations ---------------------------------------------------------------------------

# The schema the releases before the migrations created (metadata.create_all), written out.
_OLD_DDL = {
    "postgresql": [
        "CREATE TABLE predictions (request_id VARCHAR(255) NOT NULL, "
        "created_at TIMESTAMP WITH TIME ZONE NOT NULL, source VARCHAR(16) NOT NULL, "
        "model_name VARCHAR(255) NOT NULL, model_version VARCHAR(64) NOT NULL, "
        "run_id VARCHAR(64), features JSONB NOT NULL, prediction JSONB, label VARCHAR(255), "
        "probabilities JSONB, latency_ms FLOAT NOT NULL, PRIMARY KEY (request_id))",
        "CREATE INDEX ix_predictions_created_at ON predictions (created_at)",
        "CREATE INDEX ix_predictions_model ON predictions (model_name, model_version)",
        "CREATE INDEX ix_predictions_model_time ON predictions "
        "(model_name, created_at, request_id)",
        "CREATE INDEX ix_predictions_model_version_time ON predictions "
        "(model_name, model_version, created_at)",
        "CREATE TABLE feedback (request_id VARCHAR(255) NOT NULL, label VARCHAR(255) NOT NULL, "
        "created_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (request_id))",
        # Another component's table in the same database: never touched by the migrations.
        "CREATE TABLE report_index (id VARCHAR(64) PRIMARY KEY)",
        "INSERT INTO report_index VALUES ('kept')",
    ],
    "sqlite": [
        "CREATE TABLE predictions (request_id VARCHAR(255) NOT NULL, "
        "created_at DATETIME NOT NULL, source VARCHAR(16) NOT NULL, "
        "model_name VARCHAR(255) NOT NULL, model_version VARCHAR(64) NOT NULL, "
        "run_id VARCHAR(64), features JSON NOT NULL, prediction JSON, label VARCHAR(255), "
        "probabilities JSON, latency_ms FLOAT NOT NULL, PRIMARY KEY (request_id))",
        "CREATE INDEX ix_predictions_created_at ON predictions (created_at)",
        "CREATE INDEX ix_predictions_model ON predictions (model_name, model_version)",
        "CREATE TABLE feedback (request_id VARCHAR(255) NOT NULL, label VARCHAR(255) NOT NULL, "
        "created_at DATETIME NOT NULL, PRIMARY KEY (request_id))",
        "CREATE TABLE report_index (id VARCHAR(64) PRIMARY KEY)",
        "INSERT INTO report_index VALUES ('kept')",
    ],
}
_ROW = (
    "INSERT INTO predictions VALUES (:id, :at, 'rest', 'iris-classifier', '1', 'run', "
    ":features, '1', 'versicolor', :probabilities, 0.5)"
)


def _old_database(url: str) -> list[tuple[str, datetime]]:
    """A database as the first releases left it: 12 rows over 6 days, one with feedback."""
    engine = sa.create_engine(url)
    rows = [(f"old-{i}", NOW - timedelta(days=i // 2, minutes=i)) for i in range(12)]
    with engine.begin() as conn:
        for statement in _OLD_DDL[engine.dialect.name]:
            conn.execute(sa.text(statement))
        for request_id, at in rows:
            if engine.dialect.name == "sqlite":  # UTC wall-clock text, as SQLAlchemy stores it
                stored: object = f"{at:%Y-%m-%d %H:%M:%S.%f}"
            else:
                stored = at
            conn.execute(
                sa.text(_ROW),
                {
                    "id": request_id,
                    "at": stored,
                    "features": f'{{"petal_length": {len(request_id)}}}',
                    "probabilities": '{"versicolor": 0.9}',
                },
            )
        conn.execute(sa.text("INSERT INTO feedback VALUES ('old-3', 'setosa', :at)"), {"at": NOW})
    engine.dispose()
    return rows


def test_a_database_of_the_first_releases_is_migrated_with_every_row(
    any_url: str, tmp_path: Path
) -> None:
    rows = _old_database(any_url)

    store = PredictionStore(any_url, tmp_path / "spool")
    store.start()
    store.stop(timeout=2)

    reader = PredictionReader(any_url)
    window = reader.window("iris-classifier")
    reader.dispose()
    assert sorted(window["request_id"]) == sorted(r for r, _ in rows)
    assert window.set_index("request_id").loc["old-3", "feedback"] == "setosa"
    assert window["petal_length"].tolist() == [6.0] * 2 + [5.0] * 10  # old-11, old-10 first
    assert {r: at for r, at in rows} == {
        r: at.to_pydatetime()
        for r, at in zip(window["request_id"], window["created_at"], strict=True)
    }
    assert _scalar(any_url, f"SELECT version_num FROM {migrate.VERSION_TABLE}") == "0003"
    assert _scalar(any_url, "SELECT id FROM report_index") == "kept"
    engine = sa.create_engine(any_url)
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("predictions")}
    engine.dispose()
    assert "ix_predictions_model" not in indexes
    assert {"ix_predictions_model_time", "ix_predictions_model_version_time"} <= indexes
    if any_url.startswith("postgresql"):
        # Each old row sits in the partition of its UTC day.
        for request_id, at in rows:
            where = _scalar(
                any_url,
                "SELECT tableoid::regclass::text FROM predictions WHERE request_id = :id",
                id=request_id,
            )
            assert where == partition_name(at.date())


def test_a_fresh_database_is_created_at_the_head_revision(any_url: str) -> None:
    db = _db(any_url)
    db.ensure_schema()
    db.dispose()
    assert _scalar(any_url, f"SELECT version_num FROM {migrate.VERSION_TABLE}") == "0003"
    assert {"predictions", "feedback", migrate.VERSION_TABLE} <= _tables(any_url)


@pytest.mark.postgres
def test_processes_starting_at_once_take_turns(pg_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        db = _db(pg_url)
        try:
            barrier.wait()
            db.ensure_schema()
        except BaseException as exc:  # reported below, with the thread's own error
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert _scalar(pg_url, f"SELECT count(*) FROM {migrate.VERSION_TABLE}") == 1


# -- partitions ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_days_ahead_are_partitioned_and_rows_land_in_their_day(pg_url: str) -> None:
    db = _db(pg_url)
    db.ensure_schema()
    expected = {partition_name(TODAY + timedelta(days=i)) for i in range(AHEAD_DAYS + 1)}
    assert _partitions(pg_url) == expected | {DEFAULT}

    tomorrow = datetime.combine(TODAY + timedelta(days=1), datetime.min.time(), UTC)
    late = NOW - timedelta(days=40)
    records = [
        _at(make_record(1, request_id="today"), NOW),
        _at(make_record(2, request_id="tomorrow"), tomorrow),
        _at(make_record(3, request_id="late"), late),
    ]
    assert db.insert(records) == 3
    where = {
        r.request_id: _scalar(
            pg_url,
            "SELECT tableoid::regclass::text FROM predictions WHERE request_id = :id",
            id=r.request_id,
        )
        for r in records
    }
    assert where == {
        "today": partition_name(TODAY),
        "tomorrow": partition_name(TODAY + timedelta(days=1)),
        "late": DEFAULT,
    }

    # Days later, the maintenance makes the new days' partitions and moves the default
    # partition's rows of a day that gets a partition.
    db.insert([_at(make_record(4, request_id="early"), NOW + timedelta(days=AHEAD_DAYS + 2))])
    assert db.maintain(NOW + timedelta(days=2)) is None  # no retention configured
    db.dispose()
    later = TODAY + timedelta(days=AHEAD_DAYS + 2)
    assert partition_name(later) in _partitions(pg_url)
    where_early = _scalar(
        pg_url, "SELECT tableoid::regclass::text FROM predictions WHERE request_id = 'early'"
    )
    assert where_early == partition_name(later)


# -- exactly once -------------------------------------------------------------------------


def _count(url: str, request_id: str) -> object:
    return _scalar(url, "SELECT count(*) FROM predictions WHERE request_id = :id", id=request_id)


def test_a_redelivered_row_scored_later_is_not_stored_twice(any_url: str) -> None:
    db = _db(any_url)
    first = [_at(make_record(i, request_id=f"task-{i}"), NOW) for i in range(3)]
    assert db.insert(first) == 3  # a batch
    assert db.insert([first[0]]) == 0  # a spool replay: the same row, the same time

    # The task redelivered and scored again an hour later: a batch (COPY) and one row.
    again = [_at(r, NOW + timedelta(hours=1)) for r in first]
    assert db.insert(again) == 0
    assert db.insert([again[1]]) == 0
    # A spooled older copy replayed after a newer one was stored.
    fresh = _at(make_record(9, request_id="replayed-late"), NOW + timedelta(minutes=5))
    assert db.insert([fresh]) == 1
    assert db.insert([_at(fresh, NOW), make_record(10, request_id="new")]) == 1
    db.dispose()
    for request_id in ("task-0", "task-1", "task-2", "replayed-late", "new"):
        assert _count(any_url, request_id) == 1


def test_one_batch_with_the_same_request_id_twice_stores_it_once(any_url: str) -> None:
    db = _db(any_url)
    record = make_record(1, request_id="twice")
    later = _at(record, NOW + timedelta(minutes=1))
    batch = [_at(record, NOW), make_record(2, request_id="other"), later]
    assert db.insert(batch) == 2
    db.dispose()
    assert _count(any_url, "twice") == 1


@pytest.mark.postgres
def test_redelivery_across_a_day_boundary_is_caught_in_the_previous_partition(
    pg_url: str,
) -> None:
    db = _db(pg_url)
    midnight = datetime.combine(TODAY + timedelta(days=1), datetime.min.time(), UTC)
    before = _at(make_record(1, request_id="midnight"), midnight - timedelta(seconds=10))
    after = _at(before, midnight + timedelta(seconds=10))
    assert db.insert([before]) == 1
    assert db.insert([after, make_record(2)]) == 1  # the other row only
    assert db.insert([after]) == 0
    db.dispose()
    assert _count(pg_url, "midnight") == 1


@pytest.mark.postgres
def test_a_redelivery_beyond_the_window_is_stored_again(pg_url: str) -> None:
    """The documented limit of the guarantee on PostgreSQL (docs/prediction-store.md)."""
    db = _db(pg_url)
    record = _at(make_record(1, request_id="much-later"), NOW)
    assert db.insert([record]) == 1
    assert db.insert([_at(record, NOW + DEDUP_WINDOW + timedelta(seconds=1))]) == 1
    db.dispose()
    assert _count(pg_url, "much-later") == 2


# -- retention ----------------------------------------------------------------------------


def _day(days_ago: int, hour: int = 12) -> datetime:
    return datetime.combine(TODAY - timedelta(days=days_ago), datetime.min.time(), UTC).replace(
        hour=hour
    )


def _aged(url: str) -> PredictionDatabase:
    """Rows 0..9 days old at noon (ids age-N), plus one 30 days old (no day partition on
    PostgreSQL: the default one); feedback on age-8 and age-1."""
    db = _db(url)
    db.ensure_schema()
    records = [_at(make_record(n, request_id=f"age-{n}"), _day(n)) for n in range(10)]
    records.append(_at(make_record(30, request_id="age-30"), _day(30)))
    if url.startswith("postgresql"):
        with db.engine.begin() as conn:
            from lifecycle.core.store.partitions import ensure_day_partitions

            ensure_day_partitions(conn, [TODAY - timedelta(days=n) for n in range(10)])
    assert db.insert(records) == 11
    db.set_feedback("age-8", "setosa")
    db.set_feedback("age-1", "setosa")
    return db


def _ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {r for (r,) in conn.execute(sa.text("SELECT request_id FROM predictions"))}
    finally:
        engine.dispose()


def _feedback_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {r for (r,) in conn.execute(sa.text("SELECT request_id FROM feedback"))}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_prune_drops_whole_day_partitions_and_keeps_newer_rows(pg_url: str) -> None:
    db = _aged(pg_url)
    # The cutoff is 5 days ago at 06:00: the partitions of days 6..9 end before it, the one
    # of day 5 does not (its noon row is kept though older than a day it ends after).
    result = db.prune(_day(5, hour=6))
    db.dispose()

    assert set(result.partitions) == {
        partition_name(TODAY - timedelta(days=n)) for n in (6, 7, 8, 9)
    }
    assert all(n == 1 for n in result.partitions.values())
    assert result.rows_deleted == 1  # age-30, from the default partition
    assert result.feedback_deleted == 1  # age-8's
    remaining = _partitions(pg_url)
    assert not remaining & set(result.partitions)
    assert partition_name(TODAY - timedelta(days=5)) in remaining
    for name in result.partitions:  # dropped, not emptied
        assert _scalar(pg_url, "SELECT to_regclass(:n)::text", n=name) is None
    assert _ids(pg_url) == {f"age-{n}" for n in range(6)}
    assert _feedback_ids(pg_url) == {"age-1"}


def test_sqlite_prune_deletes_older_rows_and_their_feedback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prune.db'}"
    db = _aged(url)
    result = db.prune(_day(5, hour=6))
    db.dispose()
    assert result.rows_deleted == 5 and result.partitions == {}
    assert result.feedback_deleted == 1
    assert _ids(url) == {f"age-{n}" for n in range(6)}
    assert _feedback_ids(url) == {"age-1"}


def test_retention_runs_from_maintain_at_most_hourly(any_url: str) -> None:
    db = _db(any_url, retention=timedelta(days=20))
    db.ensure_schema()
    db.insert([_at(make_record(1, request_id="old-a"), NOW - timedelta(days=25))])
    first = db.maintain(NOW)
    assert first is not None and first.rows == 1

    db.insert([_at(make_record(2, request_id="old-b"), NOW - timedelta(days=25))])
    assert db.maintain(NOW + timedelta(minutes=30)) is None  # not due yet
    assert "old-b" in _ids(any_url)
    again = db.maintain(NOW + timedelta(minutes=61))
    db.dispose()
    assert again is not None and again.rows == 1
    assert "old-b" not in _ids(any_url)


def test_a_running_store_applies_the_retention_setting(any_url: str, tmp_path: Path) -> None:
    """The writer thread runs the upkeep: a store started with `prediction_retention` removes
    what is older without anyone calling prune."""
    _aged(any_url).dispose()
    settings = Settings(database_url=any_url, data_dir=tmp_path / "data", prediction_retention="3d")
    store = PredictionStore.from_settings(settings)
    store.start()
    try:
        deadline = time.monotonic() + 20
        while "age-4" in _ids(any_url) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        store.stop(timeout=5)
    cutoff = datetime.now(UTC) - timedelta(days=3)
    if any_url.startswith("postgresql"):  # the day holding the cutoff is kept whole
        kept = {f"age-{n}" for n in range(10) if _day(n).date() >= cutoff.date()}
    else:
        kept = {f"age-{n}" for n in range(10) if _day(n) >= cutoff}
    assert _ids(any_url) == kept


@pytest.mark.postgres
def test_one_process_at_a_time_applies_the_retention(pg_url: str) -> None:
    db = _aged(pg_url)
    holder = sa.create_engine(pg_url)
    with holder.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": PRUNE_LOCK})
        result = db.prune(_day(5, hour=6))
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PRUNE_LOCK})
    holder.dispose()
    db.dispose()
    assert result.skipped and result.rows == 0
    assert len(_ids(pg_url)) == 11


# -- durations, setting and CLI -----------------------------------------------------------


def test_durations() -> None:
    assert parse_duration("30d", "f") == timedelta(days=30)
    assert parse_duration("1.5h", "f") == timedelta(minutes=90)
    assert parse_duration("2w", "f") == timedelta(weeks=2)
    for bad in ("soon", "30", "0d", "-1d", "3y"):
        with pytest.raises(ConfigError, match=r"^f: "):
            parse_duration(bad, "f")
    assert Settings(prediction_retention="12h").resolved_prediction_retention() == timedelta(
        hours=12
    )
    assert Settings().resolved_prediction_retention() is None
    with pytest.raises(ConfigError, match="prediction_retention: 'a month'"):
        Settings(prediction_retention="a month").resolved_prediction_retention()


def test_prune_command_refuses_a_bad_duration(tmp_path: Path) -> None:
    env = cli_env(LIFECYCLE_DATA_DIR=str(tmp_path / "data"))
    for bad in ("soon", "0d"):
        result = run_cli("prune", "--older-than", bad, env=env, timeout=60)
        assert result.returncode == 2
        assert_one_line_error(result, "--older-than", repr(bad))
    assert not (tmp_path / "data").exists()  # refused before touching the database


@pytest.mark.postgres
def test_prune_command_prints_what_it_dropped(pg_url: str, tmp_path: Path) -> None:
    _aged(pg_url).dispose()
    env = cli_env(LIFECYCLE_DATABASE_URL=pg_url, LIFECYCLE_DATA_DIR=str(tmp_path / "data"))
    # Eight days: only day 9's partition ends before the cutoff, whatever the time of day.
    result = run_cli("prune", "--older-than", "8d", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"dropped partition {partition_name(TODAY - timedelta(days=9))} (1 rows)"
    assert lines[1].startswith("deleted 1 rows from the default partition older than ")
    assert lines[2] == "deleted 0 feedback labels of pruned predictions"
    assert _ids(pg_url) == {f"age-{n}" for n in range(9)}
