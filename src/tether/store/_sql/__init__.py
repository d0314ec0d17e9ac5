"""SQL adapter on SQLAlchemy 2 Core: SQLite (embedded) and PostgreSQL via psycopg 3."""

from tether.store._sql.adapter import SqlStore

__all__ = ["SqlStore"]
