"""Database plumbing: one async engine per service, its alembic tree, and the unit of work.

SQLite (WAL) in the service's own file by default; PostgreSQL by DSN, each service in its own
schema. Engines are built by the service's bootstrap, never at import time.
"""

from __future__ import annotations

import datetime as dt
import logging
import pathlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def metadata() -> sa.MetaData:
    """A MetaData with the shared constraint naming convention (one per service)."""
    return sa.MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def normalise_url(url: str) -> str:
    """Pick the async driver for a DSN: `postgresql://` → asyncpg, `sqlite://` → aiosqlite."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def create_engine(url: str, schema: str = "") -> AsyncEngine:
    """An engine for the service's store; WAL and foreign keys on SQLite, a schema on PostgreSQL."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling is off, for the explicit BEGIN below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # Writers take the lock at BEGIN, so two transactions never deadlock on upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    return create_async_engine(url, connect_args=connect_args, pool_pre_ping=True)


async def ensure_schema(engine: AsyncEngine, schema: str) -> None:
    """Create the service's PostgreSQL schema if needed (no-op on SQLite)."""
    if engine.dialect.name != "postgresql" or not schema:
        return
    async with engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


async def migrate(engine: AsyncEngine, script_location: pathlib.Path, version_table: str) -> None:
    """Apply the service's alembic migrations up to head (run on every start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["version_table"] = version_table

    def _upgrade(connection: sa.Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


def is_retryable(error: BaseException) -> bool:
    """Serialization failures, deadlocks and SQLite busy errors: retry the whole unit of work."""
    if not isinstance(error, exc.DBAPIError):
        return False
    text = str(error.orig).lower()
    code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return code in {"40001", "40P01"} or "database is locked" in text or "deadlock" in text


def conflict(error: BaseException) -> bool:
    """Whether a failed transaction lost a race (duplicate key, serialization failure, deadlock).

    Such a unit of work changed nothing; the caller gets ABORTED and may retry the request.
    """
    return isinstance(error, exc.IntegrityError) or is_retryable(error)


def migration_env(metadata: sa.MetaData, service: str) -> None:
    """The body of every service's alembic `env.py`: run the service's migrations on the connection
    `migrate` hands over (in its transaction), with the service's own version table."""
    from alembic import context

    config = context.config
    context.configure(
        connection=config.attributes["connection"],
        target_metadata=metadata,
        version_table=config.attributes.get("version_table", f"alembic_version_{service}"),
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
