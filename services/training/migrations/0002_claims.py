"""claims and checkpoints: jobs run on a fleet of workers

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 04:39:43.804231
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=256), nullable=True))
        batch_op.add_column(
            sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("checkpoint_epoch", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.drop_column("checkpoint_epoch")
        batch_op.drop_column("checkpoint_sha256")
        batch_op.drop_column("claim_expires_at")
        batch_op.drop_column("claimed_by")
