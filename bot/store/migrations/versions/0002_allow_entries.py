"""allow entries: scoped, expiring permissions from user answers, SOC verdicts and approved trips

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "allow_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("user_principal", sa.String(320), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # pending | active | refused
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_allow_user", "allow_entries", ["tenant", "user_principal", "status"])


def downgrade() -> None:
    op.drop_table("allow_entries")
