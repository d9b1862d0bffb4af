"""webhooks deadlines retention

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 12:44:00.471324
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('attempt_log', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_webhook_deliveries_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    op.create_index('ix_webhook_deliveries_job_id_created', 'webhook_deliveries', ['job_id', 'created_at'], unique=False)
    op.add_column('jobs', sa.Column('webhook_url', sa.String(length=2048), nullable=True))
    op.add_column('jobs', sa.Column('webhook_events', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
    op.add_column('jobs', sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('jobs', sa.Column('data_removed_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_jobs_deadline_at'), 'jobs', ['deadline_at'], unique=False)
    op.add_column('media', sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('users', sa.Column('webhook_secret', sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column('users', 'webhook_secret')
    op.drop_column('media', 'removed_at')
    op.drop_index(op.f('ix_jobs_deadline_at'), table_name='jobs')
    op.drop_column('jobs', 'data_removed_at')
    op.drop_column('jobs', 'deadline_at')
    op.drop_column('jobs', 'webhook_events')
    op.drop_column('jobs', 'webhook_url')
    op.drop_index('ix_webhook_deliveries_job_id_created', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
