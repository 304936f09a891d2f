"""CaseStore: numbers cases and records what intake found (attachments, fields, findings)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from mailbot.cases import verdict, workflow
from mailbot.cases.audit import append_audit, append_audit_rows
from mailbot.cases.models import Attachment, Case, CaseCounter, CaseField, CaseFinding, CaseNotice
from mailbot.cases.verdict import jsonable as _jsonable
from mailbot.cases.view import CertificateIndex, batch_certificates
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
    from mailbot.rules.engine import RuleSettings

log = logging.getLogger(__name__)

OPENING_KINDS = ("new", "revoke")
# States in which an applicant's reply can still change the case (the workflow's).
OPEN_STATES = workflow.OPEN_STATES
BLOCKING = workflow.BLOCKING


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
                 required: dict[str, Iterable[str]] | None = None, *,
                 settings: Mapping[str, Any] | RuleSettings | None = None,
                 ca_public_keys: Iterable[bytes] = ()) -> None:
        self.session = session
        self.required = {k: tuple(v) for k, v in (required or REQUIRED_MATERIALS).items()}
        # The rules' settings (None: the shipped rules folder) and the CA's public key(s),
        # for the rules run on a case (mailbot.cases.verdict).
        self.settings = verdict.settings_of(settings)
        self.ca_public_keys = [bytes(k) for k in ca_public_keys]
        # Certificates of ours known for the batch's codes and names (one lookup a batch).
        self._certificates = CertificateIndex()
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
        """Record one analysed message: open a case (new/revoke), join one (a reply, or a
        bounce of one of our mails: kept with the case, its state unchanged), or neither."""
        return self.record_many([(message, facts)])[0]

    def record_many(self, items: Sequence[tuple[Message, MessageFacts]]) -> list[Case | None]:
        """Record analysed messages in order; returns the case each opened or joined.

        A run of openings is built in memory and written together: one flush gives the cases
        their ids, then attachments, fields and findings go in as one multi-row INSERT per
        table (a new case's materials are its one message's files, so no query is needed).
        A reply writes what came before it first, since it reads its case from the database.
        The certificates of ours the database rules need are looked up once for the batch.
        """
        cases: list[Case | None] = []
        with self.session.no_autoflush:
            self._certificates = self._batch_certificates(items)
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
                elif facts.kind == "bounce" and facts.case_ref:
                    self._write_pending()
                    case = self.by_ref(facts.case_ref)
                    if case is not None:
                        self._attach_bounce(case, message, facts)
                cases.append(case)
            self._write_pending()
        return cases

    def _batch_certificates(self, items: Sequence[tuple[Message, MessageFacts]]
                            ) -> CertificateIndex:
        """One lookup for every opening's and reply's code and name, and those of the cases
        the replies cite (see mailbot.cases.view.batch_certificates)."""
        codes: list[str | None] = []
        orgs: list[str | None] = []
        refs: list[str | None] = []
        for _message, facts in items:
            if facts.kind in OPENING_KINDS or (facts.kind == "reply" and facts.case_ref):
                codes.append(facts.form.get("org_code"))
                orgs.extend((facts.form.get("applicant_org"), facts.company))
            if facts.kind == "reply":
                refs.append(facts.case_ref)
        if not any(codes) and not any(orgs) and not any(refs):
            return CertificateIndex()
        return batch_certificates(self.session, codes, orgs, refs)

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
        # The worker judged the message; the rules that need the database judge it here.
        judged = verdict.opening_findings(facts, self._certificates, settings=self.settings,
                                          ca_public_keys=self.ca_public_keys)
        findings = [self._finding_row(message.id, f.code, f.severity, f.detail, f.facts, at)
                    for f in judged if f.code != "missing_material"]
        findings.extend(self._finding_row(None, f.code, f.severity, f.detail, f.facts, at)
                        for f in map(missing_material, missing_of(
                            case.kind, facts.materials_present, self.required)))
        # The first verdict goes in with the case row; opening_rows audits both steps.
        case.state = workflow.initial_state(str(f["severity"]) for f in findings)
        case.state_changed_at = at
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
        notices: list[tuple[_Opening, workflow.Notice | None]] = []
        for o in self._openings:
            rows, notice = workflow.opening_rows(o.case, o.message_id)
            audit.extend(rows)
            notices.append((o, notice))
        hashes = append_audit_rows(self.session, audit)
        # Each opening wrote two rows: the verdict's (the second) asked for the notice.
        notice_rows = [{"case_id": o.case.id, "template": n.template,
                        "recipients": n.recipients, "message_row_id": o.message_id,
                        "audit_hash": hashes[2 * i + 1], "created_at": now(),
                        "queued_at": None}
                       for i, (o, n) in enumerate(notices) if n is not None]
        if notice_rows:
            self.session.execute(insert(CaseNotice).execution_options(render_nulls=True),
                                 notice_rows)
        self._openings = []

    def _join_case(self, case: Case, message: Message, facts: MessageFacts) -> None:
        message.case = case
        self.session.flush()
        append_audit(self.session, actor=f"message:{message.id}", action="reply", case=case,
                     reason="applicant replied", via="system")
        if case.state not in OPEN_STATES:
            return  # a reply to a settled case is kept with it, but changes nothing
        self._record_fields(case, message, facts.form)
        # What this reply brings supersedes what earlier messages said of the same thing.
        brings_csr = any("csr" in a.materials for a in facts.attachments) or facts.csr is not None
        for f in self._open_findings(case):
            if brings_csr and f.code.startswith("csr_"):
                f.resolved_at = now()
        # The rules judge the whole case again (its fields, files and the register).
        result, _resolved, _added = verdict.reevaluate(
            self.session, case, settings=self.settings, facts=facts,
            ca_public_keys=self.ca_public_keys, certificates=self._certificates,
            message_row_id=message.id)
        # Materials count across the whole case; the reply's own missing list does not apply.
        # A code the rules decided has one home, the rules; what is already open is not
        # repeated.
        present = {(f.code, f.detail) for f in case.findings if f.resolved_at is None}
        own = [f for f in facts.findings if f.code != "missing_material"
               and f.code not in result.decided and (f.code, f.detail) not in present]
        self._add_findings(case, message, own)
        workflow.reassess(self.session, case, actor=f"message:{message.id}", via="system",
                          required=self.required, message_row_id=message.id)

    def _attach_bounce(self, case: Case, message: Message, facts: MessageFacts) -> None:
        """A bounce of one of our mails about `case` is kept with it, for staff to see (the
        address may be wrong); the case's state does not change and nothing is answered."""
        message.case = case
        self.session.flush()
        returned = facts.returned_message_ids[0] if facts.returned_message_ids else None
        append_audit(self.session, actor=f"message:{message.id}", action="bounce", case=case,
                     reason="a mail of ours bounced" + (f": {returned}" if returned else ""),
                     via="system")

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
        return workflow.open_findings(case)

    def materials_present(self, case: Case) -> set[str]:
        return workflow.materials_present(self.session, case)

    def missing_materials(self, case: Case) -> list[str]:
        return missing_of(case.kind, self.materials_present(case), self.required)
