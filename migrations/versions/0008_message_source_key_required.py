"""messages.source_key is required: every message has the key its listing gave it (IMAP: the
UID; Maildir: the file's key). Intake always wrote one; as NOT NULL it can serve as the insert
sentinel that lets a fetch batch's rows go in one INSERT ... RETURNING on SQLite.

A row without one (none is written so) gets its UID, or else 'row-<id>'. On SQLite the table
is copied (batch mode), which takes a while on a large `messages` table.

Revision ID: 0008_message_source_key_required
Revises: 0007_certificate_subject_names
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_message_source_key_required"
down_revision = "0007_certificate_subject_names"
branch_labels = None
depends_on = None

_messages = sa.table("messages", sa.column("id", sa.Integer()), sa.column("uid", sa.BigInteger()),
                     sa.column("source_key", sa.String()))


def upgrade() -> None:
    fallback = sa.func.coalesce(sa.cast(_messages.c.uid, sa.String(400)),
                                sa.literal("row-") + sa.cast(_messages.c.id, sa.String(400)))
    op.get_bind().execute(_messages.update().where(_messages.c.source_key.is_(None))
                          .values(source_key=fallback))
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("source_key", existing_type=sa.String(length=400), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("source_key", existing_type=sa.String(length=400), nullable=True)
