"""The outbox: outgoing mail as rows (and their attachments); where a message's answer goes.

Revision ID: 0006_outbox
Revises: 0005_cases_workflow
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_outbox"
down_revision = "0005_cases_workflow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("case_ref", sa.String(length=20), nullable=True),
        sa.Column("message_row_id", sa.Integer(), nullable=True),
        sa.Column("notice_id", sa.Integer(), nullable=True),
        sa.Column("template", sa.String(length=40), nullable=False),
        sa.Column("from_addr", sa.String(length=320), nullable=False),
        sa.Column("to_addrs", sa.JSON(), nullable=False),
        sa.Column("recipient_key", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("in_reply_to", sa.String(length=998), nullable=True),
        sa.Column("references", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("cap_exempt", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("copy_state", sa.String(length=10), nullable=False),
        sa.Column("copy_attempts", sa.Integer(), nullable=False),
        sa.Column("copy_next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("copy_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_outbox_case_id_cases")),
        sa.ForeignKeyConstraint(["message_row_id"], ["messages.id"],
                                name=op.f("fk_outbox_message_row_id_messages")),
        sa.ForeignKeyConstraint(["notice_id"], ["case_notices.id"],
                                name=op.f("fk_outbox_notice_id_case_notices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_outbox_message_id")),
        sa.UniqueConstraint("notice_id", name=op.f("uq_outbox_notice_id")),
    )
    op.create_index(op.f("ix_outbox_case_id"), "outbox", ["case_id"])
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_copy", "outbox", ["copy_state"])
    op.create_index("ix_outbox_recipient", "outbox", ["recipient_key", "created_at"])
    op.create_table(
        "outbox_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"],
                                name=op.f("fk_outbox_attachments_outbox_id_outbox")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_attachments")),
    )
    op.create_index(op.f("ix_outbox_attachments_outbox_id"), "outbox_attachments",
                    ["outbox_id"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reply_address", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("no_reply_reason", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("no_reply_reason")
        batch.drop_column("reply_address")
    op.drop_index(op.f("ix_outbox_attachments_outbox_id"), table_name="outbox_attachments")
    op.drop_table("outbox_attachments")
    op.drop_index("ix_outbox_recipient", table_name="outbox")
    op.drop_index("ix_outbox_copy", table_name="outbox")
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.drop_index(op.f("ix_outbox_case_id"), table_name="outbox")
    op.drop_table("outbox")
