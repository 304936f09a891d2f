"""The case workflow: the audit row's channel (via), state times, phone confirmation, the
call after delivery, and what transitions ask to be sent (case_notices).

Revision ID: 0005_cases_workflow
Revises: 0004_mailbox_move_error
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_cases_workflow"
down_revision = "0004_mailbox_move_error"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("via", sa.String(length=10), nullable=True))
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("confirmed_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("called_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("called_by", sa.String(length=200), nullable=True))
    op.execute("UPDATE cases SET state_changed_at = updated_at")
    op.create_table(
        "case_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(length=40), nullable=False),
        sa.Column("recipients", sa.String(length=20), nullable=False),
        sa.Column("message_row_id", sa.Integer(), nullable=True),
        sa.Column("audit_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"],
                                name=op.f("fk_case_notices_case_id_cases")),
        sa.ForeignKeyConstraint(["message_row_id"], ["messages.id"],
                                name=op.f("fk_case_notices_message_row_id_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_notices")),
    )
    op.create_index(op.f("ix_case_notices_case_id"), "case_notices", ["case_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_case_notices_case_id"), table_name="case_notices")
    op.drop_table("case_notices")
    with op.batch_alter_table("cases") as batch:
        for name in ("called_by", "called_at", "confirmed_by", "confirmed_at",
                     "state_changed_at"):
            batch.drop_column(name)
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("via")
