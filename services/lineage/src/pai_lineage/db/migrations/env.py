"""Alembic environment for lineage: runs on the connection the service hands over at start."""

from __future__ import annotations

from alembic import context

from pai_lineage.db.rows import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=config.attributes.get("version_table", "alembic_version_lineage"),
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
