"""a job's result key (l335q.reuse: results reused across submissions)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('result_key', sa.String(length=64), nullable=True))
        batch.create_index('ix_jobs_result_key', ['result_key'])


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_result_key')
        batch.drop_column('result_key')
