"""leases, attempts, progress and checkpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 20:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('claim', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('heartbeat_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('lease_s', sa.Float(), nullable=True))
        batch.add_column(sa.Column('queued_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('queue', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('max_attempts', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('progress', sa.JSON(), nullable=True))
    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'stage', name='uq_checkpoints_job_stage')
    )


def downgrade() -> None:
    op.drop_table('checkpoints')
    with op.batch_alter_table('jobs') as batch:
        for name in ('progress', 'max_attempts', 'queue', 'queued_at', 'lease_s', 'heartbeat_at', 'claim'):
            batch.drop_column(name)
