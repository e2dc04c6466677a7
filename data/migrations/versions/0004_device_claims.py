"""Device claims: a round asks the generator on its GPU for the device, the generator sleeps and says so, and wakes
when the round releases it (training.handoff).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deviceclaim",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("generator_pid", sa.Integer(), nullable=True),
        sa.Column("generator_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("generator_note", sa.String(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("wanted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["trainingrun.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host", "device"),
    )


def downgrade() -> None:
    op.drop_table("deviceclaim")
