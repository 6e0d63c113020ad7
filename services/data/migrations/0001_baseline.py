"""baseline: the schema of the releases before migrations

Revision ID: 0001
Revises:
Create Date: 2026-12-07 04:14:04.867275
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("source_bytes", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("label_column", sa.String(length=1024), nullable=False),
        sa.Column("split_ratios", sa.JSON(), nullable=False),
        sa.Column("max_bad_row_fraction", sa.Float(), nullable=False),
        sa.Column("reference_version", sa.String(length=160), nullable=False),
        sa.Column("schema_json", sa.JSON(), nullable=False),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("anomalies", sa.JSON(), nullable=False),
        sa.Column("statistics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_versions_dataset"), ["dataset"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dataset_versions_source_sha256"), ["source_sha256"], unique=False
        )

    op.create_table(
        "dataset_shards",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("header_bytes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["dataset_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version_id", "split", "position"),
    )
    with op.batch_alter_table("dataset_shards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_shards_sha256"), ["sha256"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dataset_shards_version_id"), ["version_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dataset_shards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_shards_version_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_shards_sha256"))

    op.drop_table("dataset_shards")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_versions_source_sha256"))
        batch_op.drop_index(batch_op.f("ix_dataset_versions_dataset"))

    op.drop_table("dataset_versions")
