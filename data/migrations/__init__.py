"""Alembic migrations of prefloop's database: `versions/` holds one file per schema revision, never edited once
released. data/schema.py runs them; `prefloop db upgrade` is how a person does."""
