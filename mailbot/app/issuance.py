"""Issue the certificate pair of an approved case: the cases' approval, handed to the PKI.

The PKI knows no cases, so this is where the two meet. In ONE transaction (the caller's
session; the caller commits):

1. the case's request is checked again (`check_csr`, as at intake, plus "key not already in a
   certificate of ours"), so a request that has become invalid is not signed;
2. cases builds the `Approval` from the case's audit log (the latest staff row to
   ``approved``) with the fingerprint of that request's key;
3. the PKI issues the pair, and its signer calls `CaseApprovalCheck(session).confirm` before
   each of the two signatures (audit row, actor, case state re-read in this transaction);
4. the case's audit log records which certificates the case got (``issue_certificates``).

What goes into the certificates is the vetted case (`vetted_subject`): C=CN, O = the form's
申请单位 (applicant_org), CN = 通用名 (common_name, default 申请单位), serialNumber = 机构代码
(org_code), staff edits winning over the form; nothing of the request's own subject.

Where the request comes from is the caller's: the issuance job (issuance_job.py) reads the
CSR the applicant sent with the case (the archived message). The approval binds the signature to exactly that
request's key: `sign.cer` cannot be made for another key, and one approval gives one pair.
Moving the case on (``approved`` -> ``issued``) is the workflow's, after this returns.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.cases.approval import CaseApprovalCheck, approval_for_case
from mailbot.cases.audit import append_audit
from mailbot.cases.models import Case, CaseField
from mailbot.pki.ca import CaState
from mailbot.pki.issue import (
    CertificateSubject,
    IssuedPair,
    IssueError,
    checked_request,
    issue_pair,
)

ISSUE_ACTION = "issue_certificates"


def case_fields(case: Case) -> dict[str, str]:
    """The case's form fields as vetted: a staff edit wins over what a form said."""
    rank = {"staff": 1}
    best: dict[str, CaseField] = {}
    for f in case.fields:
        old = best.get(f.key)
        if old is None or rank.get(f.source, 0) >= rank.get(old.source, 0):
            best[f.key] = f
    return {k: (f.value or "").strip() for k, f in best.items()}


def vetted_subject(case: Case, *, company: str | None = None, common_name: str | None = None,
                   org_code: str | None = None) -> CertificateSubject:
    """C=CN, O=申请单位, CN=通用名 (default 申请单位), serialNumber=机构代码, from the case."""
    fields = case_fields(case)
    org = (company or fields.get("applicant_org") or case.company or "").strip()
    if not org:
        raise IssueError(f"case {case.ref} has no 申请单位 (applicant_org): staff type it in "
                         "with `mailbot cases edit`")
    return CertificateSubject(
        organization=org,
        common_name=(common_name or fields.get("common_name") or "").strip() or org,
        org_code=(org_code or fields.get("org_code") or "").strip() or None)


def issue_for_case(session: Session, ca: CaState, case_ref: str, csr_der: bytes, *,
                   company: str | None = None, common_name: str | None = None,
                   org_code: str | None = None, crl_url: str = "", validity_years: int = 10,
                   actor: str = "system") -> IssuedPair:
    """Issue sign.cer, env.cer and envprivatekey for the approved case `case_ref`.

    `csr_der` is the case's request (PEM or DER, as sent): only its key is used. The subject
    is the case's vetted values (`vetted_subject`); `company`, `common_name` and `org_code`
    replace them when given. Raises the PKI's errors (PkiError: ApprovalRequired, IssueError,
    SignerError); rows are flushed, not committed.
    """
    report = checked_request(session, csr_der, case_ref)
    assert report.public_key is not None  # checked_request refuses a request without one
    approval = approval_for_case(session, case_ref, report.public_key)
    case = session.scalars(select(Case).where(Case.ref == case_ref)).one()
    subject = vetted_subject(case, company=company, common_name=common_name, org_code=org_code)
    pair = issue_pair(session, ca, approval, CaseApprovalCheck(session), report.public_key,
                      subject, crl_url=crl_url, validity_years=validity_years)
    append_audit(session, actor=actor, action=ISSUE_ACTION, case=case, via="system",
                 reason=(f"sign certificate serial {pair.sign_serial}, enc certificate serial "
                         f"{pair.enc_serial}, under approval {approval.audit_id} by "
                         f"{approval.staff}"))
    session.flush()
    return pair
