"""The issuance job: every approved case carried out, one transaction per case.

Run by the daemon after the staff flags and folders (jobs.py, "issuance"):

* a ``new`` case: the request is read again from the archive (the latest message of the case
  that carried a CSR, analysed as intake does), the pair is issued with the case's vetted names
  (`issue_for_case`) and the case moves approved -> issued. The certificate rows (one pair per
  approval, the database says so), the audit rows, the transition and the notice it records
  commit together: a kill before the commit leaves nothing, and the next run signs again.
  The issued mail's outbox row, carrying the envelope (`envprivatekey`, encrypted to the
  applicant's signing key), commits with them too (app/notices.py).
* a ``revoke`` case: the certificate attached to the case (or, without a file, the form's
  revoke_serial among this CA's certificates). One this CA's key signed (its signature
  verifies, in the database or not) is revoked with the other certificate of its pair, reason
  keyCompromise when the case has an open key_compromise finding, else cessationOfOperation
  (the holder asked to end the certificate: 注销); the CRL is brought up to date in the same
  transaction and written to [ca] crl_path after the commit; the case moves approved ->
  revoked. A certificate another CA signed is not revoked here (the rule
  revoke_foreign_certificate told staff): the case stays approved for staff to close.

A case that cannot go on without staff (no request, an invalid one, a foreign certificate, a
serial this CA never issued) is *held*: its reason goes into the case's audit log once
(``issuance_held``) and is logged once, not at every cycle. A failure of the signer or the
database fails the job (the daemon reports it; `run --once` exits 1) after the other cases ran.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailbot.app.issuance import case_fields, issue_for_case
from mailbot.app.notices import NoticePayload, hand_payload
from mailbot.app.revocation import revoke_certificate
from mailbot.cases import workflow
from mailbot.cases.audit import append_audit
from mailbot.cases.models import AuditEntry, Case
from mailbot.config import Config, load_rule_settings
from mailbot.faults import crash_point
from mailbot.intake import archive
from mailbot.intake.analyse import analyse_message
from mailbot.intake.facts import MessageFacts
from mailbot.intake.models import Message
from mailbot.pki.ca import CaState, load_ca
from mailbot.pki.crl import (
    RevokeError,
    certificate_row,
    current_crl,
    find_issued,
    load_certificate,
    pair_of,
    signed_by_ca,
    write_crl,
)
from mailbot.pki.errors import ApprovalRequired
from mailbot.pki.issue import IssueError
from mailbot.pki.models import IssuedCertificate

if TYPE_CHECKING:
    from mailbot.app.daemon import Daemon

log = logging.getLogger(__name__)

HELD_ACTION = "issuance_held"
SYSTEM = "system"
KEY_COMPROMISE = "keyCompromise"
# 注销 at the holder's request, key not known to be compromised: the certificate is no longer
# needed (RFC 5280 cessationOfOperation). `unspecified` would leave the CRL entry without a
# reason, and superseded / affiliationChanged claim more than the case says.
REQUESTED_REASON = "cessationOfOperation"
ISSUED_DIR = "issued"


class Held(Exception):
    """The case waits for staff; the message says why (audited once)."""


class IssuanceFailed(RuntimeError):
    """Cases failed for a reason other than the case itself (signer, database)."""


@dataclass
class IssuanceRun:
    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    crl_written: bool = False


def issuance_job(daemon: Daemon) -> str:
    """The daemon's job: run_issuance; a case that failed (not held) fails the job."""
    run = run_issuance(daemon.cfg, daemon.sessions)
    if run.failed:
        raise IssuanceFailed("; ".join(f"{ref}: {why}" for ref, why in run.failed))
    return (f"issued {len(run.issued)}, revoked {len(run.revoked)}, "
            f"waiting for staff {len(run.held)}")


def approved_refs(session: Session) -> list[str]:
    return list(session.scalars(select(Case.ref).where(Case.state == "approved")
                                .order_by(Case.id)))


def run_issuance(cfg: Config, sessions: sessionmaker[Session], *,
                 ca: CaState | None = None) -> IssuanceRun:
    """Carry out every approved case (module docstring); each case commits on its own."""
    run = IssuanceRun()
    with sessions() as s:
        refs = approved_refs(s)
    if not refs:
        return run
    own_ca = ca is None
    ca = ca or load_ca(cfg)
    settings = load_rule_settings(cfg.rules_dir)
    try:
        for ref in refs:
            _one(cfg, sessions, ca, settings, ref, run)
    finally:
        if own_ca:
            ca.signer.close()
    return run


def _one(cfg: Config, sessions: sessionmaker[Session], ca: CaState,
         settings: dict[str, Any], ref: str, run: IssuanceRun) -> None:
    crl_der: bytes | None = None
    try:
        with sessions() as s:
            case = workflow.case_for_update(s, ref)
            if case is None or case.state != "approved":
                return  # another process took it meanwhile
            if case.kind == "new":
                _issue(cfg, s, ca, settings, case)
                crash_point("issue_before_commit")
                s.commit()
                crash_point("issue_after_commit")
                run.issued.append(ref)
                log.info("case %s: certificates issued", ref)
            elif case.kind == "revoke":
                crl_der = _revoke(cfg, s, ca, settings, case)
                crash_point("revoke_before_commit")
                s.commit()
                crash_point("revoke_after_commit")
                run.revoked.append(ref)
                log.info("case %s: certificates revoked", ref)
            else:
                raise Held(f"a {case.kind} case issues nothing")
    except (Held, IssueError, ApprovalRequired, RevokeError,
            workflow.TransitionRefused) as exc:
        why = str(exc)
        run.held.append((ref, why))
        _hold(sessions, ref, why)
        return
    except Exception as exc:  # noqa: BLE001 - the other cases still run; the job fails
        log.warning("case %s: issuance failed: %s: %s", ref, type(exc).__name__, exc)
        run.failed.append((ref, f"{type(exc).__name__}: {exc}"))
        return
    if crl_der is not None:
        # after the commit: a CRL file never lists what the database does not (a kill just
        # here leaves the old file until the next start's CRL job writes the database's CRL)
        run.crl_written = write_crl(cfg.var_path(cfg.ca.crl_path), crl_der) or run.crl_written


def _hold(sessions: sessionmaker[Session], ref: str, why: str) -> None:
    """Audit (and log) why the case waits, once per reason while it stays approved."""
    with sessions() as s:
        case = s.scalars(select(Case).where(Case.ref == ref)).first()
        if case is None:
            return
        last = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                         .order_by(AuditEntry.id.desc()).limit(1)).first()
        if last is not None and last.action == HELD_ACTION and last.reason == why:
            return  # told already
        append_audit(s, actor=SYSTEM, action=HELD_ACTION, case=case, reason=why, via=SYSTEM)
        s.commit()
    log.warning("case %s waits for staff: %s", ref, why)


# -- what the applicant sent ----------------------------------------------------------------
def _case_facts(cfg: Config, session: Session, case: Case, settings: dict[str, Any],
                wanted: str) -> MessageFacts | None:
    """The facts of the latest message of the case that carried `wanted` ("csr" or
    "certificate"), analysed again from the archive."""
    messages = session.scalars(select(Message).where(Message.case_id == case.id)
                               .order_by(Message.id.desc())).all()
    for m in messages:
        if not m.sha256:
            continue
        if m.facts is not None and wanted == "csr" and not m.facts.get("csr"):
            continue  # intake saw no request in it
        facts = analyse_message(archive.load(cfg.archive_dir, m.sha256, verify=True), settings)
        if wanted == "csr" and facts.csr_der:
            return facts
        if wanted == "certificate" and (facts.certificates_der or facts.certificate_der):
            return facts
    return None


# -- a new certificate pair -----------------------------------------------------------------
def _issue(cfg: Config, session: Session, ca: CaState, settings: dict[str, Any],
           case: Case) -> None:
    facts = _case_facts(cfg, session, case, settings, "csr")
    if facts is None or not facts.csr_der:
        raise Held("no certificate request (CSR) among the case's messages")
    pair = issue_for_case(session, ca, case.ref, facts.csr_der, crl_url=cfg.ca.crl_url,
                          validity_years=cfg.ca.validity_years, actor=SYSTEM)
    workflow.transition(session, case, "issued", actor=SYSTEM, via=SYSTEM,
                        reason=(f"sign certificate {pair.sign_serial}, enc certificate "
                                f"{pair.enc_serial}"))
    certs = session.scalars(select(IssuedCertificate).where(
        IssuedCertificate.case_ref == case.ref,
        IssuedCertificate.serial.in_((pair.sign_serial, pair.enc_serial)))).all()
    # The issued mail (its outbox row, with the envelope) commits with the pair.
    hand_payload(session, case, NoticePayload(certificates=list(certs),
                                              envelope=pair.envelope))
    session.flush()


# -- a revocation ---------------------------------------------------------------------------
def revocation_reason(case: Case) -> str:
    """keyCompromise for an open key_compromise finding (须知四), else cessationOfOperation."""
    compromised = any(f.code == "key_compromise" and f.resolved_at is None
                      and f.overridden_by is None for f in case.findings)
    return KEY_COMPROMISE if compromised else REQUESTED_REASON


def _targets(cfg: Config, session: Session, ca: CaState, settings: dict[str, Any],
             case: Case) -> tuple[list[IssuedCertificate], list[str]]:
    """This CA's certificates the case asks to revoke, and notes on the foreign ones."""
    facts = _case_facts(cfg, session, case, settings, "certificate")
    files = []
    if facts is not None:
        files = list(facts.certificates_der or [facts.certificate_der])
    ours: list[IssuedCertificate] = []
    foreign: list[str] = []
    for data in files:
        if data is None:
            continue
        cert = load_certificate(data)
        if signed_by_ca(ca, cert):
            ours.append(certificate_row(session, ca, data))
        else:
            foreign.append(f"certificate {cert.serial_number:x} was signed by another CA "
                           f"({cert.issuer.human_friendly})")
    if not files:
        serial = case_fields(case).get("revoke_serial", "")
        if not serial:
            raise Held("no certificate file and no serial on the form: nothing to revoke")
        row = find_issued(session, ca, serial)
        if row is None:
            raise Held(f"the form's serial {serial} is no certificate of this CA")
        ours.append(row)
    if not ours:
        raise Held("; ".join(foreign) + ": staff revoke it where it was issued and close the "
                   "case (`mailbot cases close REF --by NAME --reason TEXT`)")
    return ours, foreign


def _revoke(cfg: Config, session: Session, ca: CaState, settings: dict[str, Any],
            case: Case) -> bytes:
    ours, foreign = _targets(cfg, session, ca, settings, case)
    rows: dict[int, IssuedCertificate] = {}
    for row in ours:
        for r in (row, pair_of(session, row)):
            if r is not None:
                rows[r.id] = r
    reason = revocation_reason(case)
    done, before = [], []
    for row in rows.values():
        if row.revoked_at is not None:
            before.append(f"{row.kind} {row.serial} (revoked before)")
            continue
        revoke_certificate(session, ca, row.serial, reason=reason, by=SYSTEM,
                           issuer_key_id=ca.key_id, via=SYSTEM)
        done.append(f"{row.kind} {row.serial}")
    crl = current_crl(session, ca, next_update_days=cfg.ca.crl_next_update_days)
    why = f"revoked ({reason}): {', '.join(done) or 'none'}"
    if before:
        why += "; " + ", ".join(before)
    if foreign:
        why += "; not revoked here: " + "; ".join(foreign)
    workflow.transition(session, case, "revoked", actor=SYSTEM, via=SYSTEM,
                        reason=f"{why}; CRL number {crl.number}")
    hand_payload(session, case, NoticePayload(certificates=list(rows.values())))
    session.flush()
    return crl.der
