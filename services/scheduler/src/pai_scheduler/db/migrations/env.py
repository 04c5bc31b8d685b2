"""Alembic environment for scheduler: runs on the connection the service hands over at start."""

from pai_common.db import migration_env
from pai_scheduler.db.rows import Base

migration_env(Base.metadata, "scheduler")
