"""The alembic tree matches the ORM models (what `alembic check` does), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pai_common import db
from pai_lineage.db.rows import MIGRATIONS, Base


async def test_migrations_match_models_and_reapply(database: tuple[str, str]) -> None:
    url, schema = database
    engine = db.create_engine(url, schema)
    await db.ensure_schema(engine, schema)
    await db.migrate(engine, MIGRATIONS, "alembic_version_lineage")
    await db.migrate(engine, MIGRATIONS, "alembic_version_lineage")  # idempotent on every start

    def diff(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"version_table": "alembic_version_lineage"})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await engine.dispose()
    assert differences == []
