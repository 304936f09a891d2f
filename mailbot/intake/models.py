"""Intake's tables: mailbox positions, fetched messages and failed processing attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.clock import now
from mailbot.db import Base, UTCDateTime

# Message.status values: where a fetched message stands in the pipeline.
MESSAGE_ARCHIVED = "archived"  # raw bytes archived and recorded; not yet turned into facts
MESSAGE_PROCESSED = "processed"  # facts recorded; joined or opened a case (or none for its kind)
MESSAGE_DUPLICATE = "duplicate"  # the same Message-ID or bytes were recorded before
MESSAGE_PARKED = "parked"  # failed max_attempts times; waits for `mailbot reprocess`
MESSAGE_OVERSIZE = "oversize"  # over the size limit: left on the server, not fetched

# Message.no_reply_reason: never answer automatic mail, a bounce or a null sender (RFC 3834);
# mailing-list and spam-marked mail gets no notice unless it is an application.
NO_REPLY_AUTOMATIC = "automatic"
NO_REPLY_BOUNCE = "bounce"
NO_REPLY_NULL_SENDER = "null_sender"
NO_REPLY_LIST = "list"
NO_REPLY_SPAM = "spam"
NO_REPLY_REASONS = (NO_REPLY_AUTOMATIC, NO_REPLY_BOUNCE, NO_REPLY_NULL_SENDER, NO_REPLY_LIST,
                    NO_REPLY_SPAM)


class MailboxState(Base):
    """Where reading a mailbox stands: UIDVALIDITY and the highest UID seen."""

    __tablename__ = "mailbox_state"

    source: Mapped[str] = mapped_column(String(400), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, default=0)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sweep_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now, onupdate=now)
    # The mailbox refuses to move processed mail out of the inbox: why, and since when.
    move_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    move_failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Message(Base):
    """One fetched message: where it came from, its archived bytes, what it was judged to be."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("source", "uidvalidity", "uid"),
        Index("ix_messages_sha256", "sha256"),
        Index("ix_messages_message_id", "message_id"),
        Index("ix_messages_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(400))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The listing's key (IMAP: the UID; Maildir: the file's key), distinct within a fetch
    # batch: as the insert sentinel it lets a batch's rows go in one INSERT ... RETURNING on
    # SQLite too, which otherwise inserts row by row to match the ids to the rows.
    source_key: Mapped[str] = mapped_column(String(400), insert_sentinel=True)
    message_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    archive_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    from_addr: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # Where an answer goes (Reply-To if present, else From), and why none may go at all
    # (NO_REPLY_REASONS); the outbox reads these, intake decides them.
    reply_address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    no_reply_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    date_header: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    status: Mapped[str] = mapped_column(String(20), default=MESSAGE_ARCHIVED)
    kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # inspect JSON
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    moved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The case the message was recorded into: set by the cases side (cases.models adds the
    # `case` and `attachments` relationships); intake itself never reads it.
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), nullable=True)


class ProcessingFailure(Base):
    """One failed attempt to process a message; after max_attempts the message is parked."""

    __tablename__ = "processing_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_row_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    error: Mapped[str] = mapped_column(Text)
