"""The case view the rules judge, built from the database (the rules never query it).

`case_view` gathers a recorded case: its form fields (what staff typed wins: the case's
fields already hold it), every file of its messages with the materials they count for, the
application mail's subject and the latest sender, what the messages' recorded facts keep of
the request (its subject names) and of a lost key, the staff's key-loss mark, the findings
staff overrode, and the database part: the certificates of ours known for its 机构代码 or
organisation (`known_certificates`).

Certificates are found for a code or a name in two ways: the vetted subject pki/issue.py
writes (C, O, CN, serialNumber = 机构代码), whose O and serialNumber the PKI keeps in
columns of their own (subject_org, subject_serial_number), and the fields of the case a
certificate was issued for (`case_ref`), for certificates whose subject has no serialNumber.
`known_certificates` looks up many codes and names in one query, so intake asks once per
batch, not once per message; the query's shape does not depend on how many (expanding IN
lists), so SQLAlchemy compiles it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session, aliased

from mailbot import clock
from mailbot.cases.audit import key_lost_mark
from mailbot.cases.models import Attachment, Case, CaseField
from mailbot.intake.models import Message
from mailbot.intake.subject import ApplicationSubject
from mailbot.pki.models import IssuedCertificate
from mailbot.rules.validators import normalise_company, normalise_uscc, same_company
from mailbot.rules.view import (
    AttachmentView,
    CaseView,
    KnownCertificate,
    dn_fields,
    view_from_facts,
)

if TYPE_CHECKING:
    from mailbot.intake.facts import MessageFacts

PAIR_KINDS = ("sign", "enc")  # a CA's own certificate is no organisation's


def kinds_for(case_kind: str) -> tuple[str, ...]:
    """The certificates a case's rules are shown: a new application, one per pair (the sign
    certificate; already_certified and renamed_organisation name a pair once, not each of its
    two serials); a revocation, both (the form's serial may be either's)."""
    return PAIR_KINDS if case_kind == "revoke" else ("sign",)


@dataclass(frozen=True)
class _Known:
    case_ref: str | None
    certificate: KnownCertificate


@dataclass
class CertificateIndex:
    """Certificates of ours looked up for some codes and names; `for_case` picks a case's."""

    entries: list[_Known] = field(default_factory=list)

    def for_case(self, org_code: str | None, organisation: str | None,
                 exclude_ref: str | None = None,
                 kinds: tuple[str, ...] = PAIR_KINDS) -> list[KnownCertificate]:
        """Those of `kinds` issued under the same credit code or the same organisation name
        (not the case's own, `exclude_ref`), in the order found."""
        code = normalise_uscc(org_code or "")
        org = organisation or ""
        out = []
        for e in self.entries:
            if exclude_ref and e.case_ref == exclude_ref:
                continue
            c = e.certificate
            if c.kind not in kinds:
                continue
            if (code and normalise_uscc(c.org_code) == code) or same_company(org, c.organisation):
                out.append(c)
        return out


def _variants(values: Iterable[str | None], fold: Callable[[str], str]) -> list[str]:
    out: set[str] = set()
    for v in values:
        v = (v or "").strip()
        if v:
            out.update(x for x in (v, fold(v)) if x)
    return sorted(out)


_ISSUED_FOR = aliased(Case)
_CODE_FIELD = aliased(CaseField)
_ORG_FIELD = aliased(CaseField)
# One statement for every lookup, whatever the number of codes and names: the lists are
# expanding IN parameters (an empty one matches nothing), so SQLAlchemy compiles it once and
# takes it from its cache afterwards.
_KNOWN = (
    select(IssuedCertificate.case_ref, IssuedCertificate.serial, IssuedCertificate.kind,
           IssuedCertificate.subject_serial_number, IssuedCertificate.subject_org,
           IssuedCertificate.not_after, IssuedCertificate.revoked_at, _CODE_FIELD.value,
           _ORG_FIELD.value, _ISSUED_FOR.company)
    .outerjoin(_ISSUED_FOR, _ISSUED_FOR.ref == IssuedCertificate.case_ref)
    .outerjoin(_CODE_FIELD, and_(_CODE_FIELD.case_id == _ISSUED_FOR.id,
                                 _CODE_FIELD.key == "org_code"))
    .outerjoin(_ORG_FIELD, and_(_ORG_FIELD.case_id == _ISSUED_FOR.id,
                                _ORG_FIELD.key == "applicant_org"))
    .where(IssuedCertificate.kind.in_(PAIR_KINDS),
           or_(IssuedCertificate.subject_serial_number.in_(bindparam("codes", expanding=True)),
               IssuedCertificate.subject_org.in_(bindparam("orgs", expanding=True)),
               _CODE_FIELD.value.in_(bindparam("codes", expanding=True)),
               _ORG_FIELD.value.in_(bindparam("orgs", expanding=True)),
               _ISSUED_FOR.company.in_(bindparam("orgs", expanding=True))))
    .order_by(IssuedCertificate.id))


def known_certificates(session: Session, org_codes: Iterable[str | None],
                       organisations: Iterable[str | None]) -> CertificateIndex:
    """Our sign/enc certificates for any of these codes or names, in one query.

    A row matches on its subject (its serialNumber or O column equal to a code or a name,
    as given or normalised) or on the fields of the case it was issued for;
    `CertificateIndex.for_case` then compares exactly (normalised codes, the rules'
    same_company), so the query may find a little more than it keeps.
    """
    codes = _variants(org_codes, normalise_uscc)
    orgs = _variants(organisations, normalise_company)
    if not codes and not orgs:
        return CertificateIndex()
    index = CertificateIndex()
    for (ref, serial, kind, subject_code, subject_org, not_after, revoked_at, field_code,
         field_org, company) in session.execute(_KNOWN, {"codes": codes, "orgs": orgs}):
        index.entries.append(_Known(ref, KnownCertificate(
            serial=serial, org_code=subject_code or field_code or "",
            organisation=subject_org or field_org or company or "",
            not_after=not_after, revoked=revoked_at is not None, kind=kind)))
    return index


def batch_certificates(session: Session, org_codes: Iterable[str | None] = (),
                       organisations: Iterable[str | None] = (),
                       case_refs: Iterable[str | None] = ()) -> CertificateIndex:
    """`known_certificates` for a batch: these codes and names, and those of the recorded
    cases `case_refs` (their org_code, applicant_org and company, read in one query): at
    most two queries, whatever the batch's size."""
    codes, orgs = list(org_codes), list(organisations)
    refs = sorted({r.strip().upper() for r in case_refs if r and r.strip()})
    if refs:
        for company, key, value in session.execute(
                select(Case.company, CaseField.key, CaseField.value)
                .outerjoin(CaseField, and_(CaseField.case_id == Case.id,
                                           CaseField.key.in_(("org_code", "applicant_org"))))
                .where(Case.ref.in_(refs))):
            orgs.append(company)
            (codes if key == "org_code" else orgs).append(value)
    return known_certificates(session, codes, orgs)


def with_database(view: CaseView, certificates: CertificateIndex | list[KnownCertificate], *,
                  ca_public_keys: Iterable[bytes] = (), overrides: Iterable[str] = (),
                  exclude_ref: str | None = None) -> CaseView:
    """Fill the view's database part (in place; returned for convenience)."""
    if isinstance(certificates, CertificateIndex):
        certificates = certificates.for_case(
            view.form.get("org_code"), view.form.get("applicant_org")
            or (view.subject_info.company if view.subject_info else None), exclude_ref,
            kinds_for(view.kind))
    view.database = True
    view.known_certificates = list(certificates)
    view.ca_public_keys = [bytes(k) for k in ca_public_keys]
    view.overrides = set(overrides)
    view.now = clock.now()
    return view


OPENING_KINDS = ("new", "revoke")  # the message that opened a case is one of these


def stored_request_names(messages: Iterable[Message]) -> dict[str, str] | None:
    """The subject names of the case's request: the newest message whose recorded facts
    carry a CSR (the one issuance reads), from the subject string kept there; None when no
    message brought one."""
    for m in sorted(messages, key=lambda m: m.id, reverse=True):
        csr = (m.facts or {}).get("csr")
        if isinstance(csr, dict):
            return dn_fields(str(csr.get("subject") or ""))
    return None


def stored_key_loss(messages: Iterable[Message]) -> list[str]:
    """What the messages' own analysis said of a lost key (their key_compromise details name
    the words it found in a body, which is not kept), for the rule to read again."""
    return [str(f.get("detail") or "") for m in messages
            for f in ((m.facts or {}).get("findings") or [])
            if isinstance(f, dict) and f.get("code") == "key_compromise"]


def case_view(session: Session, case: Case, *, facts: MessageFacts | None = None,
              ca_public_keys: Iterable[bytes] = (),
              certificates: CertificateIndex | None = None) -> CaseView:
    """The whole case as the rules see it, database part filled.

    Kept in the database and read from there: the fields, every file, the application mail's
    subject (the company it names), the request's subject names and what each message's
    analysis said of a lost key (both from the messages' recorded facts), and the staff's
    key-loss mark. `facts` (the message being recorded) lends what the database does not
    keep: the CSR report and the DER of certificates attached for revocation.
    `certificates` is a lookup made beforehand for a batch; without it the case's
    certificates are looked up here.
    """
    session.flush()
    form = {f.key: f.value for f in case.fields}
    mails = sorted((m for m in case.messages if m.kind != "bounce"), key=lambda m: m.id)
    latest = mails[-1] if mails else None
    opening = next((m for m in mails if m.kind in OPENING_KINDS), latest)
    files = session.execute(
        select(Attachment.filename, Attachment.materials, Attachment.content_type,
               Attachment.size)
        .join(Message, Message.id == Attachment.message_row_id)
        .where(Message.case_id == case.id).order_by(Attachment.id)).all()
    subject = (opening.subject if opening is not None else None) or ""
    csr_subject = None
    if facts is not None:
        base = view_from_facts(facts)
        csr, certs, sender = base.csr, base.certificates, facts.from_addr
    else:
        csr, certs, sender = None, [], None
    if csr is None:
        csr_subject = stored_request_names(mails)
    view = CaseView(
        kind=case.kind, subject=subject, subject_info=ApplicationSubject.parse(subject),
        from_addr=sender or (latest.from_addr if latest is not None else None),
        reply_to=case.applicant_address, form=form,
        attachments=[AttachmentView(name, tuple(materials or ("other",)), ctype or "",
                                    int(size or 0))
                     for name, materials, ctype, size in files],
        csr=csr, csr_subject=csr_subject, certificates=certs,
        text="\n".join([*(m.subject or "" for m in mails), *stored_key_loss(mails)]),
        # Only a revocation can carry the mark (cases key-lost refuses the rest): no query else.
        key_loss_marked=case.kind == "revoke" and key_lost_mark(session, case) is not None)
    if certificates is None:
        certificates = known_certificates(session, [form.get("org_code")],
                                          [form.get("applicant_org"), case.company])
    kinds = kinds_for(case.kind)
    found = certificates.for_case(form.get("org_code"), form.get("applicant_org"), case.ref,
                                  kinds)
    if case.company and not form.get("applicant_org"):
        found += [c for c in certificates.for_case(None, case.company, case.ref, kinds)
                  if c not in found]
    overridden = {f.code for f in case.findings if f.overridden_by is not None}
    return with_database(view, found, ca_public_keys=ca_public_keys, overrides=overridden)
