"""Alembic environment for auth: runs on the connection the service hands over at start."""

from pai_auth.db.rows import Base
from pai_common.db import migration_env

migration_env(Base.metadata, "auth")
