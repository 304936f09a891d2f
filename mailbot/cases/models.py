"""Tables of cases: cases, their numbering, fields, findings, message files and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from mailbot.clock import now
from mailbot.db import Base, UTCDateTime
from mailbot.intake.models import Message

CASE_STATES = (
    "received", "incomplete", "awaiting_confirmation", "approved",
    "issued", "delivered", "rejected", "revoked", "expired", "closed",
)


class Case(Base):
    """One application (new or revoke), numbered XM-YYYY-NNNN."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The sentinel (unique, set by us) lets the ORM insert a batch's cases in one statement
    # and still match the ids RETURNING gives back to the rows (one INSERT per case before).
    ref: Mapped[str] = mapped_column(String(20), unique=True, insert_sentinel=True)
    kind: Mapped[str] = mapped_column(String(10))  # new | revoke
    state: Mapped[str] = mapped_column(String(30), default="received")
    company: Mapped[str | None] = mapped_column(String(300), nullable=True)
    applicant_address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now, onupdate=now)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Set by the workflow with every state change (incomplete cases expire from it).
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The phone confirmation (cases confirm, or an approval that includes it).
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    confirmed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The call to the handler after delivery (cases called): until then on the to-call list.
    called_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    called_by: Mapped[str | None] = mapped_column(String(200), nullable=True)

    # Intake's messages table knows no cases: the link is declared from this side.
    messages: Mapped[list[Message]] = relationship(Message, backref=backref("case"))
    fields: Mapped[list[CaseField]] = relationship(back_populates="case",
                                                   cascade="all, delete-orphan")
    findings: Mapped[list[CaseFinding]] = relationship(back_populates="case",
                                                       cascade="all, delete-orphan")


class CaseCounter(Base):
    """The last case number handed out per year (rows locked while numbering)."""

    __tablename__ = "case_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class Attachment(Base):
    """One file of a message (zip members one by one), with the materials it counts for."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_row_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    materials: Mapped[list[str]] = mapped_column(JSON, default=list)

    message: Mapped[Message] = relationship(
        Message, backref=backref("attachments", cascade="all, delete-orphan"))


class CaseField(Base):
    """A form field of a case: as extracted from the form, or typed in by staff."""

    __tablename__ = "case_fields"
    __table_args__ = (UniqueConstraint("case_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    key: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20), default="form")  # form | staff
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), nullable=True)
    set_by: Mapped[str] = mapped_column(String(100), default="system")
    set_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)

    case: Mapped[Case] = relationship(back_populates="fields")


class CaseFinding(Base):
    """A finding against a case, from one message; resolved or overridden later."""

    __tablename__ = "case_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), nullable=True)
    code: Mapped[str] = mapped_column(String(60))
    severity: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str] = mapped_column(Text)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    overridden_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    override_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    case: Mapped[Case] = relationship(back_populates="findings")


class AuditEntry(Base):
    """Append-only, SM3-chained record of every transition and staff action."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    actor: Mapped[str] = mapped_column(String(200))  # staff name, "system", or "message:<id>"
    action: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(30), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(30), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # cli | mailbox | system; NULL on rows from before it was recorded (hashed only when set)
    via: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # unique: two writers chaining onto the same row would fork the chain; one must retry
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class CaseNotice(Base):
    """What a transition says should be sent (a template to a kind of recipient).

    The outbox turns these into outgoing mail; until then they are the record of it.
    `audit_hash` names the audit row of the transition that asked for it.
    """

    __tablename__ = "case_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    template: Mapped[str] = mapped_column(String(40))
    recipients: Mapped[str] = mapped_column(String(20))  # sender | form_address
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), nullable=True)
    audit_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
