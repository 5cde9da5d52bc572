"""a job's time limit; a submission's notification

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 16:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('time_limit_s', sa.Float(), nullable=True))
    with op.batch_alter_table('submissions') as batch:
        batch.add_column(sa.Column('notify_state', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('notify_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('notify_attempts', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('notify_error', sa.Text(), nullable=True))
        batch.add_column(sa.Column('notified_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        for name in ('notified_at', 'notify_error', 'notify_attempts', 'notify_at', 'notify_state'):
            batch.drop_column(name)
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('time_limit_s')
