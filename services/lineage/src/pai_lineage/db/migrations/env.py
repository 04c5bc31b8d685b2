"""Alembic environment for lineage: runs on the connection the service hands over at start."""

from pai_common.db import migration_env
from pai_lineage.db.rows import Base

migration_env(Base.metadata, "lineage")
