"""CaseStore: numbers cases and records what intake found (attachments, fields, findings)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from mailbot.cases.audit import append_audit, append_audit_rows
from mailbot.cases.models import Attachment, Case, CaseCounter, CaseField, CaseFinding
from mailbot.clock import now
from mailbot.findings import Finding
from mailbot.intake.models import Message
from mailbot.refs import format_ref
from mailbot.rules.materials import (
    REQUIRED_MATERIALS,
    check_materials,
    missing_material,
    missing_of,
)

if TYPE_CHECKING:
    from mailbot.intake.facts import MessageFacts

log = logging.getLogger(__name__)

OPENING_KINDS = ("new", "revoke")
# States in which an applicant's reply can still change the case.
OPEN_STATES = ("received", "incomplete", "awaiting_confirmation")


BLOCKING = ("reject", "missing")  # finding severities that keep a case incomplete
_CHECK_REASON = {"incomplete": "materials or request need fixing",
                 "awaiting_confirmation": "materials complete; waiting for the phone confirmation"}


@dataclass
class _Opening:
    """A case opened by record_many, with the rows that need its id."""

    case: Case
    message_id: int
    fields: list[dict[str, object]]
    findings: list[dict[str, object]]


# session.info key: the counter rows this transaction has locked, by year.
_COUNTERS = "mailbot.case_counters"


@event.listens_for(Session, "after_transaction_end")
def _forget_counters(session: Session, transaction: SessionTransaction) -> None:
    """After a commit or rollback the counters must be read (and locked) again."""
    if transaction.parent is None or transaction.nested:  # not a flush's inner one
        session.info.pop(_COUNTERS, None)


class CaseStore:
    """All writes of intake to cases go through here, inside the caller's transaction."""

    def __init__(self, session: Session,
                 required: dict[str, Iterable[str]] | None = None) -> None:
        self.session = session
        self.required = {k: tuple(v) for k, v in (required or REQUIRED_MATERIALS).items()}
        # Rows of record_many waiting to be written in bulk (see _write_pending).
        self._attachments: list[dict[str, object]] = []
        self._openings: list[_Opening] = []

    # numbering ---------------------------------------------------------------------------
    def next_ref(self, year: int | None = None) -> str:
        """The next free number of the year; the counter row is locked until commit.

        The row is read (and locked) once per transaction; later numbers are counted on it.
        """
        year = year or now().year
        counters: dict[int, CaseCounter] = self.session.info.setdefault(_COUNTERS, {})
        counter = counters.get(year)
        if counter is None:
            # Pending writes first: on SQLite they open the write transaction, so the read
            # below happens under the write lock, not before it.
            self.session.flush()
            counter = self.session.scalars(
                select(CaseCounter).where(CaseCounter.year == year).with_for_update()
            ).first()
            if counter is None:
                counter = CaseCounter(year=year, last_seq=0)
                self.session.add(counter)
            counters[year] = counter
        counter.last_seq += 1
        return format_ref(year, counter.last_seq)

    def by_ref(self, ref: str) -> Case | None:
        return self.session.scalars(select(Case).where(Case.ref == ref.upper())).first()

    # intake ------------------------------------------------------------------------------
    def record_facts(self, message: Message, facts: MessageFacts) -> Case | None:
        """Record one analysed message: open a case (new/revoke), join one (reply), or neither."""
        return self.record_many([(message, facts)])[0]

    def record_many(self, items: Sequence[tuple[Message, MessageFacts]]) -> list[Case | None]:
        """Record analysed messages in order; returns the case each opened or joined.

        A run of openings is built in memory and written together: one flush gives the cases
        their ids, then attachments, fields and findings go in as one multi-row INSERT per
        table (a new case's materials are its one message's files, so no query is needed).
        A reply writes what came before it first, since it reads its case from the database.
        """
        cases: list[Case | None] = []
        with self.session.no_autoflush:
            for message, facts in items:
                self._record_message(message, facts)
                case: Case | None = None
                if facts.kind in OPENING_KINDS:
                    case = self._open_case(message, facts)
                elif facts.kind == "reply" and facts.case_ref:
                    self._write_pending()
                    case = self.by_ref(facts.case_ref)
                    if case is None:
                        log.warning("message %s cites unknown case %s", message.id,
                                    facts.case_ref)
                    else:
                        self._join_case(case, message, facts)
                cases.append(case)
            self._write_pending()
        return cases

    def _record_message(self, message: Message, facts: MessageFacts) -> None:
        check_materials(facts, self.required)  # the message's own list, for `inspect` views
        message.facts = facts.to_inspect_json()
        # Plain rows, not through message.attachments: that would load the collection.
        self._attachments.extend(
            {"message_row_id": message.id, "filename": att.filename,
             "content_type": att.content_type, "size": att.size, "sha256": att.sha256 or None,
             "materials": list(att.materials)}
            for att in facts.attachments)

    def _open_case(self, message: Message, facts: MessageFacts) -> Case:
        """A new case; its fields, findings and first verdict wait in `_openings`."""
        company = facts.company or facts.form.get("applicant_org") or None
        case = Case(ref=self.next_ref(), kind=facts.kind, company=company,
                    applicant_address=facts.reply_to or facts.from_addr)
        self.session.add(case)
        message.case = case
        at = now()
        fields = [{"key": key, "value": value, "source": "form", "message_row_id": message.id,
                   "set_by": "system", "set_at": at} for key, value in facts.form.items()]
        findings = [self._finding_row(message.id, f.code, f.severity, f.detail, f.facts, at)
                    for f in facts.findings if f.code != "missing_material"]
        findings.extend(self._finding_row(None, f.code, f.severity, f.detail, f.facts, at)
                        for f in map(missing_material, missing_of(
                            case.kind, facts.materials_present, self.required)))
        if any(f["severity"] in BLOCKING for f in findings):
            case.state = "incomplete"
        else:
            case.state = "awaiting_confirmation"
        self._openings.append(_Opening(case, message.id, fields, findings))
        return case

    @staticmethod
    def _finding_row(message_id: int | None, code: str, severity: str, detail: str,
                     facts: object, at: datetime) -> dict[str, object]:
        return {"message_row_id": message_id, "code": code, "severity": severity,
                "detail": detail, "facts": _jsonable(facts), "created_at": at,
                "resolved_at": None, "overridden_by": None, "override_reason": None}

    def _write_pending(self) -> None:
        """Flush, then write the rows waiting for ids and chain the openings' audit rows."""
        self.session.flush()  # the openings' cases get their ids
        fields: list[dict[str, object]] = []
        findings: list[dict[str, object]] = []
        for o in self._openings:
            fields.extend({**row, "case_id": o.case.id} for row in o.fields)
            findings.extend({**row, "case_id": o.case.id} for row in o.findings)
        for model, rows in ((Attachment, self._attachments), (CaseField, fields),
                            (CaseFinding, findings)):
            if rows:
                # render_nulls: a None (a scan's hash) would otherwise split the batch
                # into one INSERT per run of rows with the same columns.
                self.session.execute(insert(model).execution_options(render_nulls=True), rows)
        self._attachments = []
        audit: list[dict[str, object]] = []
        for o in self._openings:
            # The case row went in with its verdict; the log tells both steps.
            audit.append({"case_id": o.case.id, "actor": f"message:{o.message_id}",
                          "action": "open", "to_state": "received",
                          "reason": f"{o.case.kind} application by mail"})
            audit.append({"case_id": o.case.id, "actor": "system", "action": "intake_check",
                          "from_state": "received", "to_state": o.case.state,
                          "reason": _CHECK_REASON[o.case.state]})
        append_audit_rows(self.session, audit)
        self._openings = []

    def _join_case(self, case: Case, message: Message, facts: MessageFacts) -> None:
        message.case = case
        self.session.flush()
        append_audit(self.session, actor=f"message:{message.id}", action="reply", case=case,
                     reason="applicant replied")
        if case.state not in OPEN_STATES:
            return  # a reply to a settled case is kept with it, but changes nothing
        self._record_fields(case, message, facts.form)
        # What this reply brings supersedes what earlier messages said of the same thing.
        brings_csr = any("csr" in a.materials for a in facts.attachments) or facts.csr is not None
        for f in self._open_findings(case):
            if brings_csr and f.code.startswith("csr_"):
                f.resolved_at = now()
        # Materials count across the whole case; the reply's own missing list does not apply.
        own = [f for f in facts.findings if f.code != "missing_material"]
        self._add_findings(case, message, own)
        self._settle_state(case, actor=f"message:{message.id}")

    def _record_fields(self, case: Case, message: Message, form: dict[str, str]) -> None:
        current = {f.key: f for f in case.fields}
        for key, value in form.items():
            existing = current.get(key)
            if existing is not None and existing.source == "staff":
                continue  # what staff typed in wins over a later form
            if existing is None:
                case.fields.append(CaseField(key=key, value=value, source="form",
                                             message_row_id=message.id))
            elif existing.value != value:
                existing.value, existing.message_row_id, existing.set_at = value, message.id, now()
        if form.get("applicant_org") and not case.company:
            case.company = form["applicant_org"]

    def _add_findings(self, case: Case, message: Message, findings: Iterable[Finding]) -> None:
        for f in findings:
            if f.code == "missing_material":
                continue  # recomputed for the whole case in _settle_state
            case.findings.append(CaseFinding(message_row_id=message.id, code=f.code,
                                             severity=f.severity, detail=f.detail,
                                             facts=_jsonable(f.facts)))

    def _open_findings(self, case: Case) -> list[CaseFinding]:
        return [f for f in case.findings if f.resolved_at is None and f.overridden_by is None]

    def materials_present(self, case: Case) -> set[str]:
        rows = self.session.scalars(
            select(Attachment.materials).join(Message).where(Message.case_id == case.id))
        return {m for materials in rows for m in (materials or [])}

    def missing_materials(self, case: Case) -> list[str]:
        return missing_of(case.kind, self.materials_present(case), self.required)

    def _sync_missing(self, case: Case, missing: list[str]) -> str:
        """One open missing_material finding per absent material; resolve the rest.

        Returns the state the findings call for: incomplete or awaiting_confirmation.
        """
        open_missing = {f.facts.get("material"): f for f in self._open_findings(case)
                        if f.code == "missing_material"}
        for material, f in open_missing.items():
            if material not in missing:
                f.resolved_at = now()
        for material in missing:
            if material not in open_missing:
                f = missing_material(material)
                case.findings.append(CaseFinding(code=f.code, severity=f.severity,
                                                 detail=f.detail, facts=f.facts))
        blocking = any(f.severity in BLOCKING for f in self._open_findings(case))
        return "incomplete" if blocking else "awaiting_confirmation"

    def _move_state(self, case: Case, target: str, actor: str) -> None:
        """Audit the intake check's verdict when it changes the case's state."""
        if case.state == target:
            return
        append_audit(self.session, actor=actor, action="intake_check", case=case,
                     from_state=case.state, to_state=target, reason=_CHECK_REASON[target])
        case.state = target

    def _settle_state(self, case: Case, actor: str) -> None:
        """Sync missing-material findings with all the case's files, then incomplete vs ready."""
        self.session.flush()  # this message's files count too
        self._move_state(case, self._sync_missing(case, self.missing_materials(case)), actor)


def _jsonable(facts: object) -> dict[str, object]:
    """Finding facts as plain JSON values (bytes and other objects become text)."""
    out: dict[str, object] = {}
    for key, value in dict(facts or {}).items():  # type: ignore[call-overload]
        if isinstance(value, str | int | float | bool) or value is None:
            out[str(key)] = value
        elif isinstance(value, list | tuple):
            out[str(key)] = [v if isinstance(v, str | int | float | bool) else str(v)
                             for v in value]
        else:
            out[str(key)] = str(value)
    return out
