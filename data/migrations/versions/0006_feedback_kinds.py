"""Richer feedback: comparisons of k responses (rankings, ratings) or of one (thumbs), the labels that rank or rate
them, and conversations continued turn by turn after a label.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): SQLite cannot rebuild `comparison` while labels and leases point at it.
    op.add_column("comparison", sa.Column("kind", sa.String(length=16), server_default="pair", nullable=False))
    op.create_table(
        "comparisonresponse",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("response_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparison.id"]),
        sa.ForeignKeyConstraint(["response_id"], ["response.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("comparison_id", "position"),
    )
    op.create_index("ix_comparisonresponse_comparison_id", "comparisonresponse", ["comparison_id"])
    op.create_index("ix_comparisonresponse_response_id", "comparisonresponse", ["response_id"])
    op.add_column("label", sa.Column("ranking", sa.JSON(), nullable=True))
    op.add_column("label", sa.Column("ratings", sa.JSON(), nullable=True))
    op.add_column("prompt", sa.Column("parent_comparison_id", sa.Integer(), nullable=True))
    op.add_column("prompt", sa.Column("depth", sa.Integer(), server_default="0", nullable=False))
    op.add_column("prompt", sa.Column("next_turns", sa.JSON(), nullable=True))
    op.create_index("ix_prompt_parent_comparison_id", "prompt", ["parent_comparison_id"])


def downgrade() -> None:
    op.drop_index("ix_prompt_parent_comparison_id", "prompt")
    with op.batch_alter_table("prompt") as batch:
        for column in ("next_turns", "depth", "parent_comparison_id"):
            batch.drop_column(column)
    with op.batch_alter_table("label") as batch:
        for column in ("ratings", "ranking"):
            batch.drop_column(column)
    op.drop_index("ix_comparisonresponse_response_id", "comparisonresponse")
    op.drop_index("ix_comparisonresponse_comparison_id", "comparisonresponse")
    op.drop_table("comparisonresponse")
    with op.batch_alter_table("comparison") as batch:
        batch.drop_column("kind")
