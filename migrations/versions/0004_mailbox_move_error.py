"""Mailbox state keeps the current move failure, so `status` can say why mail stays put.

Revision ID: 0004_mailbox_move_error
Revises: 0003_pki_standalone
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_mailbox_move_error"
down_revision = "0003_pki_standalone"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox_state") as batch:
        batch.add_column(sa.Column("move_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("move_failing_since", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox_state") as batch:
        batch.drop_column("move_failing_since")
        batch.drop_column("move_error")
