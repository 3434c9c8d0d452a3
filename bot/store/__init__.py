"""Storage: SQLAlchemy 2 (async) tables, engine set-up, Alembic migrations and repositories."""
