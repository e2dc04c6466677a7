"""Discarded prompts, comparisons and labels with an audit trail; OpenAI tools kept with a prompt; and every
index of the first landing present (a database made by an earlier snapshot may lack the queue's). Prompts the
first release stored empty (TRL implicit-prompt records) are discarded, since nothing can train on or export them.

Revision ID: 0002
Revises: 0001
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (name, table, columns, unique) of the first landing's indexes; the partial and descending ones are spelled out.
LANDED_INDEXES = (
    ("ix_apitoken_token_hash", "apitoken", ["token_hash"], True),
    ("ix_apitoken_user_name", "apitoken", ["user_name"], False),
    ("ix_judgerun_judge", "judgerun", ["judge"], False),
    ("ix_modelversion_name", "modelversion", ["name"], True),
    ("ix_prompt_content_hash", "prompt", ["content_hash"], True),
    ("ix_user_name", "user", ["name"], True),
    ("ix_response_model_version_id", "response", ["model_version_id"], False),
    ("ix_response_prompt_id", "response", ["prompt_id"], False),
    ("ix_comparison_model_version_id", "comparison", ["model_version_id"], False),
    ("ix_comparison_prompt_id", "comparison", ["prompt_id"], False),
    ("ix_label_annotator", "label", ["annotator"], False),
    ("ix_label_comparison_id", "label", ["comparison_id"], False),
    ("ix_label_created_at", "label", ["created_at"], False),
    ("ix_lease_annotator", "lease", ["annotator"], False),
    ("ix_lease_comparison_id", "lease", ["comparison_id"], False),
    ("ix_lease_expires_at", "lease", ["expires_at"], False),
)
DISCARD_COLUMNS = ("prompt", "comparison", "label")
# How the first release marked the empty prompts it stored for TRL implicit-prompt records.
EMPTY_PROMPT_SKIP = "no prompt: implicit-prompt preference pair"
EMPTY_PROMPT_DISCARD = ("empty prompt, stored before prefloop took TRL's shared prefix as the prompt: re-import the "
                        "file to store the pair with its prompt")


def upgrade() -> None:
    _create_missing_indexes()
    with op.batch_alter_table("prompt") as batch:
        batch.add_column(sa.Column("tools", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("parallel_tool_calls", sa.Boolean(), nullable=True))
    for table in DISCARD_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column("discard_reason", sa.String(), nullable=True))
    op.create_table(
        "auditevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auditevent_created_at", "auditevent", ["created_at"], unique=False)
    _discard_empty_prompts()


def _discard_empty_prompts() -> None:
    """Every empty prompt is discarded, with an audit event each: its pairs never reach a round or an export."""
    conn = op.get_bind()
    prompt = sa.table("prompt", sa.column("id", sa.Integer), sa.column("messages", sa.Text),
                      sa.column("skip_reason", sa.String), sa.column("discarded_at", sa.DateTime(timezone=True)),
                      sa.column("discard_reason", sa.String))
    empty = sa.or_(prompt.c.skip_reason == EMPTY_PROMPT_SKIP, sa.cast(prompt.c.messages, sa.Text) == "[]")
    ids = [row[0] for row in conn.execute(sa.select(prompt.c.id).where(empty))]
    if not ids:
        return
    now = datetime.now(UTC)
    conn.execute(prompt.update().where(prompt.c.id.in_(ids)).values(discarded_at=now,
                                                                     discard_reason=EMPTY_PROMPT_DISCARD))
    audit = sa.table("auditevent", sa.column("created_at", sa.DateTime(timezone=True)), sa.column("actor", sa.String),
                     sa.column("action", sa.String), sa.column("target", sa.String),
                     sa.column("target_id", sa.Integer), sa.column("reason", sa.String), sa.column("detail", sa.JSON))
    op.bulk_insert(audit, [dict(created_at=now, actor="prefloop db upgrade", action="discard", target="prompt",
                                target_id=i, reason=EMPTY_PROMPT_DISCARD, detail={"migration": revision})
                           for i in ids])


def _create_missing_indexes() -> None:
    present = _index_names()
    for name, table, columns, unique in LANDED_INDEXES:
        if name not in present:
            op.create_index(name, table, columns, unique=unique)
    if "ix_comparison_queue" not in present:
        op.create_index("ix_comparison_queue", "comparison", ["status", sa.text("priority DESC"), "id"])
    if "ix_modelversion_one_deployed" not in present:
        op.create_index("ix_modelversion_one_deployed", "modelversion", ["deployed"], unique=True,
                        sqlite_where=sa.text("deployed = 1"), postgresql_where=sa.text("deployed"))


def _index_names() -> set[str]:
    inspector = sa.inspect(op.get_bind())
    # Expression indexes are left out of get_indexes on some dialects, so SQLite's catalogue is asked directly.
    if op.get_bind().dialect.name == "sqlite":
        rows = op.get_bind().exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {row[0] for row in rows}
    return {ix["name"] for table in inspector.get_table_names() for ix in inspector.get_indexes(table)}


def downgrade() -> None:
    op.drop_index("ix_auditevent_created_at", table_name="auditevent")
    op.drop_table("auditevent")
    for table in DISCARD_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("discard_reason")
            batch.drop_column("discarded_at")
    with op.batch_alter_table("prompt") as batch:
        batch.drop_column("parallel_tool_calls")
        batch.drop_column("tools")
