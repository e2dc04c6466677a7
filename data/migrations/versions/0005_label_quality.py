"""Label quality: gold questions (a comparison's known answer), labels released from the gold-accuracy hold,
and what the queue's priority strategies sort by (the policy's reward margin, judge verdicts split by order).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): SQLite cannot rebuild `comparison` while labels and leases point at it.
    op.add_column("comparison", sa.Column("gold_choice", sa.String(length=16), nullable=True))
    op.add_column("comparison", sa.Column("margin", sa.Float(), nullable=True))
    op.add_column("comparison", sa.Column("margin_version_id", sa.Integer(), nullable=True))
    op.add_column("comparison", sa.Column("judge_split", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_comparison_gold_choice", "comparison", ["gold_choice"])
    op.create_index("ix_comparison_uncertainty", "comparison",
                    ["status", sa.text("priority DESC"), sa.text("(coalesce(abs(margin), 1e300))"), "id"])
    op.create_index("ix_comparison_judge_split", "comparison",
                    ["status", sa.text("priority DESC"), sa.text("judge_split DESC"), "id"])
    op.add_column("label", sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("label") as batch:
        batch.drop_column("released_at")
    for index in ("ix_comparison_judge_split", "ix_comparison_uncertainty", "ix_comparison_gold_choice"):
        op.drop_index(index, "comparison")
    with op.batch_alter_table("comparison") as batch:
        for column in ("judge_split", "margin_version_id", "margin", "gold_choice"):
            batch.drop_column(column)
