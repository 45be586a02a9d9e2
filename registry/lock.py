"""The lock held around a promotion's read → gates → transition → alias sequence.

Two promotions of the same model at once would otherwise both read the same Production
version, both transition, and leave the alias on whichever wrote last. The lock lives in the
application database when it is PostgreSQL (an advisory lock, so every host sharing that
database is covered) and in a file under the data directory in the embedded SQLite mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import filelock
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from lifecycle.core.errors import ConfigError, LifecycleError
from lifecycle.core.settings import Settings


class LockTimeout(LifecycleError):
    """Another promotion of the same model held the lock for too long."""

    status_code = 409


def lock_key(name: str) -> int:
    """A stable signed 64-bit key per model name (pg_advisory_lock takes a bigint)."""
    digest = hashlib.sha256(f"lifecycle.promote:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def promotion_lock(settings: Settings, name: str, timeout: float) -> Iterator[None]:
    url = sa.make_url(settings.resolved_database_url())
    backend = url.get_backend_name()
    if backend == "postgresql":
        with _advisory_lock(url, name, timeout):
            yield
    elif backend == "sqlite":
        with _file_lock(settings, name, timeout):
            yield
    else:
        raise ConfigError(
            f"promotion lock: database_url must be PostgreSQL or SQLite, not {backend}"
        )


@contextmanager
def _advisory_lock(url: sa.URL, name: str, timeout: float) -> Iterator[None]:
    engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        try:
            conn = engine.connect()
        except sa.exc.OperationalError as exc:
            raise LifecycleError(
                f"application database unreachable at {url.render_as_string()}"
            ) from exc
        with conn:
            conn.execute(
                sa.text("SELECT set_config('lock_timeout', :ms, false)"),
                {"ms": f"{int(timeout * 1000)}ms"},
            )
            try:
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(name)})
            except sa.exc.OperationalError as exc:
                raise LockTimeout(
                    f"another promotion of {name} held the lock for more than {timeout:g}s"
                ) from exc
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(name)})
    finally:
        engine.dispose()


@contextmanager
def _file_lock(settings: Settings, name: str, timeout: float) -> Iterator[None]:
    folder = settings.resolved_data_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    lock = filelock.FileLock(folder / f"promote-{digest}.lock", timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockTimeout(
            f"another promotion of {name} held the lock for more than {timeout:g}s"
        ) from exc
    try:
        yield
    finally:
        lock.release()
