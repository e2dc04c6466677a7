"""Alembic's environment for prefloop: always run from data/schema.py, on the connection it hands over."""

from alembic import context
from sqlmodel import SQLModel

from data import models  # noqa: F401  (registers the tables on SQLModel.metadata, for `alembic revision --autogenerate`)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata,
                  # SQLite cannot ALTER most things in place: batch mode copies the table when a migration asks.
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
