"""trials: the trials of a search, claimed by any worker

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 07:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_trials",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=256), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("study_trial_number", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "number"),
    )
    op.create_index("ix_training_trials_job_id", "training_trials", ["job_id"])
    op.create_index("ix_training_trials_state", "training_trials", ["state"])


def downgrade() -> None:
    op.drop_index("ix_training_trials_state", table_name="training_trials")
    op.drop_index("ix_training_trials_job_id", table_name="training_trials")
    op.drop_table("training_trials")
