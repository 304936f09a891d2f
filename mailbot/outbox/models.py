"""The outbox's tables: every outgoing email is a row, written in the transaction of the case
change that caused it, and sent from here only (DESIGN.md §2, issue 10).

A row is born `queued` with its recipients, Message-ID and what renders it (template and
context; attachments as rows of their own). The sender renders it once into `raw`, the exact
bytes SMTP carries, before the first attempt, so every retry sends the same message. A row the
server accepted is `sent` and is never sent again. Rows that must not go out at all (automatic
mail, our own address, the daily cap) are `suppressed` with the reason, so staff can see them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.clock import now
from mailbot.db import Base, UTCDateTime

# OutboxMessage.state
QUEUED = "queued"  # waiting for its (next) attempt
SENT = "sent"  # accepted by the SMTP server (or written by file: delivery): never again
FAILED = "failed"  # a permanent failure (5xx) or too many temporary ones: staff are told
SUPPRESSED = "suppressed"  # never to be sent (loop safety); `last_error` says why
STATES = (QUEUED, SENT, FAILED, SUPPRESSED)

# OutboxMessage.copy_state: the copy in the mailbox's Sent folder
COPY_NONE = "none"  # no copy wanted (file: delivery, or not sent)
COPY_PENDING = "pending"  # sent; the copy is still to be APPENDed
COPY_DONE = "done"
COPY_FAILED = "failed"  # gave up after retries; shown in status, the mail itself went out


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The case it belongs to (declared by name: the outbox imports no other layer).
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True, index=True)
    case_ref: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # The inbound message it answers, if any.
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), nullable=True)
    # The case_notices row it was made from, if any (one outbox row per notice).
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("case_notices.id"), nullable=True,
                                                  unique=True)
    template: Mapped[str] = mapped_column(String(40))
    from_addr: Mapped[str] = mapped_column(String(320))
    to_addrs: Mapped[list[str]] = mapped_column(JSON)
    # The first recipient, lower-cased: what the per-address daily cap counts.
    recipient_key: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(998), unique=True)  # fixed at creation
    in_reply_to: Mapped[str | None] = mapped_column(String(998), nullable=True)
    references: Mapped[list[str]] = mapped_column(JSON, default=list)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what renders it
    # Issued and revocation results go out whatever the per-address daily cap says.
    cap_exempt: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # rendered once
    state: Mapped[str] = mapped_column(String(12), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Staff were told of a permanent failure (by the digest): set when it was reported.
    failure_reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    copy_state: Mapped[str] = mapped_column(String(10), default=COPY_NONE)
    copy_attempts: Mapped[int] = mapped_column(Integer, default=0)
    copy_next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    copy_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_copy", "copy_state"),
        Index("ix_outbox_recipient", "recipient_key", "created_at"),
    )


class OutboxAttachment(Base):
    """A file the mail carries, as bytes (certificates, the envelope); the notice PDF is
    rendered from the row's context instead."""

    __tablename__ = "outbox_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    data: Mapped[bytes] = mapped_column(LargeBinary)
