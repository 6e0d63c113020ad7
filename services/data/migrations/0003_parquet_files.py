"""parquet files: each version's splits as Parquet files beside its shards

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 19:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_parquet_files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["dataset_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version_id", "split", "position"),
    )
    with op.batch_alter_table("dataset_parquet_files", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dataset_parquet_files_sha256"), ["sha256"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dataset_parquet_files_version_id"), ["version_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dataset_parquet_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_parquet_files_version_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_parquet_files_sha256"))
    op.drop_table("dataset_parquet_files")
