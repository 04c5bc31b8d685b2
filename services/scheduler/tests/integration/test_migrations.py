"""The alembic tree matches the ORM models (what `alembic check` does), on SQLite and PostgreSQL."""

from __future__ import annotations

from pai_common.testing import migration_drift
from pai_scheduler.bootstrap import MIGRATIONS
from pai_scheduler.db.rows import Base


async def test_migrations_match_models_and_reapply(database: tuple[str, str]) -> None:
    url, schema = database
    assert await migration_drift(url, schema, MIGRATIONS, Base.metadata, "scheduler") == []
