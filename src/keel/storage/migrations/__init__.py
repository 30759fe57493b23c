"""Alembic migrations of Keel's schema, applied by `Database.open` (no alembic.ini needed)."""
