"""fleets (cross-user detection state per tenant) and watchlist (stricter thresholds after an incident)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleets",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "watchlist",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("user_principal", sa.String(320), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("quiet_until", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_watchlist_user", "watchlist", ["tenant", "user_principal", "expires_at"])


def downgrade() -> None:
    op.drop_table("watchlist")
    op.drop_table("fleets")
