"""The schema as of prefloop's first landing: every table the first release created.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("lease", "label", "comparison", "trainingrun", "response", "user", "prompt", "modelversion", "judgerun",
          "apitoken")


def upgrade() -> None:
    op.create_table('apitoken',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('user_name', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_apitoken_token_hash', 'apitoken', ['token_hash'], unique=True)
    op.create_index('ix_apitoken_user_name', 'apitoken', ['user_name'], unique=False)
    op.create_table('judgerun',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('judge', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('judged', sa.Integer(), nullable=False),
        sa.Column('labelled', sa.Integer(), nullable=False),
        sa.Column('consistent', sa.Integer(), nullable=False),
        sa.Column('flipped', sa.Integer(), nullable=False),
        sa.Column('abstained', sa.Integer(), nullable=False),
        sa.Column('choices', sa.JSON(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('error', sa.String(), nullable=True),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_judgerun_judge', 'judgerun', ['judge'], unique=False)
    op.create_table('modelversion',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('path', sa.String(), nullable=False),
        sa.Column('parent_id', sa.Integer(), nullable=True),
        sa.Column('round', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('deployed', sa.Boolean(), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('deployed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['parent_id'], ['modelversion.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_modelversion_name', 'modelversion', ['name'], unique=True)
    op.create_index('ix_modelversion_one_deployed', 'modelversion', ['deployed'], unique=True,
                    sqlite_where=sa.text('deployed = 1'), postgresql_where=sa.text('deployed'))
    op.create_table('prompt',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('messages', sa.JSON(), nullable=False),
        sa.Column('source', sa.String(), nullable=False),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('skip_reason', sa.String(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_prompt_content_hash', 'prompt', ['content_hash'], unique=True)
    op.create_table('user',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('password_hash', sa.String(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_user_name', 'user', ['name'], unique=True)
    op.create_table('response',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('prompt_id', sa.Integer(), nullable=False),
        sa.Column('model_version_id', sa.Integer(), nullable=True),
        sa.Column('text', sa.String(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('finish_reason', sa.String(length=16), nullable=True),
        sa.Column('token_count', sa.Integer(), nullable=True),
        sa.Column('sampling_params', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['model_version_id'], ['modelversion.id'], ),
        sa.ForeignKeyConstraint(['prompt_id'], ['prompt.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_response_model_version_id', 'response', ['model_version_id'], unique=False)
    op.create_index('ix_response_prompt_id', 'response', ['prompt_id'], unique=False)
    op.create_table('trainingrun',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('parent_version_id', sa.Integer(), nullable=True),
        sa.Column('output_version_id', sa.Integer(), nullable=True),
        sa.Column('pairs_used', sa.Integer(), nullable=False),
        sa.Column('comparison_ids', sa.JSON(), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('error', sa.String(), nullable=True),
        sa.ForeignKeyConstraint(['output_version_id'], ['modelversion.id'], ),
        sa.ForeignKeyConstraint(['parent_version_id'], ['modelversion.id'], ),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_table('comparison',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('prompt_id', sa.Integer(), nullable=False),
        sa.Column('response_a_id', sa.Integer(), nullable=False),
        sa.Column('response_b_id', sa.Integer(), nullable=False),
        sa.Column('model_version_id', sa.Integer(), nullable=True),
        sa.Column('overlap', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('origin', sa.String(), nullable=True),
        sa.Column('content_hash', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['model_version_id'], ['modelversion.id'], ),
        sa.ForeignKeyConstraint(['prompt_id'], ['prompt.id'], ),
        sa.ForeignKeyConstraint(['response_a_id'], ['response.id'], ),
        sa.ForeignKeyConstraint(['response_b_id'], ['response.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('content_hash'),
        sa.UniqueConstraint('response_a_id', 'response_b_id')
    )
    op.create_index('ix_comparison_queue', 'comparison', ['status', sa.text('priority DESC'), 'id'],
                    unique=False)
    op.create_index('ix_comparison_model_version_id', 'comparison', ['model_version_id'], unique=False)
    op.create_index('ix_comparison_prompt_id', 'comparison', ['prompt_id'], unique=False)
    op.create_table('label',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('comparison_id', sa.Integer(), nullable=False),
        sa.Column('annotator', sa.String(length=128), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('choice', sa.String(length=16), nullable=False),
        sa.Column('shown_order', sa.String(length=2), nullable=False),
        sa.Column('rationale', sa.String(), nullable=True),
        sa.Column('time_spent_s', sa.Float(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['comparison_id'], ['comparison.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('comparison_id', 'annotator')
    )
    op.create_index('ix_label_annotator', 'label', ['annotator'], unique=False)
    op.create_index('ix_label_comparison_id', 'label', ['comparison_id'], unique=False)
    op.create_index('ix_label_created_at', 'label', ['created_at'], unique=False)
    op.create_table('lease',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('comparison_id', sa.Integer(), nullable=False),
        sa.Column('annotator', sa.String(length=128), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('shown_order', sa.String(length=2), nullable=False),
        sa.ForeignKeyConstraint(['comparison_id'], ['comparison.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('comparison_id', 'annotator')
    )
    op.create_index('ix_lease_annotator', 'lease', ['annotator'], unique=False)
    op.create_index('ix_lease_comparison_id', 'lease', ['comparison_id'], unique=False)
    op.create_index('ix_lease_expires_at', 'lease', ['expires_at'], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
