"""CA signers: one small interface (public key, sign) in front of a soft key or an HSM.

Who may make a CA signature, and why (the design):

* End-entity certificates are signed only under an **approval record**: the audit_log row of
  the case whose transition went to ``approved`` (actor = the staff member, time = when). The
  audit log is SM3-chained and append-only, so the authority for every signature is the same
  tamper-evident row staff already produce; no second approvals table can drift from it.
  ``load_approval(session, case_ref)`` is the only way issuance gets one, and ``Signer.sign``
  refuses anything that is not such a record.
* The CA's own structures are no case: a CRL and the self-signed root are **CA operations**,
  signed through ``Signer.sign_ca_operation(tbs, purpose)``. That path checks the TBS really
  is what the purpose says (a TBSCertList; or a TBSCertificate with subject == issuer, the
  signer's own public key and CA:TRUE), so it cannot be used to slip an end-entity
  certificate past the approval rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from mailbot.pki import sm2

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailbot.config import CaConfig, Config

CaPurpose = Literal["crl", "self_signed_root"]
CA_PURPOSES: tuple[str, ...] = ("crl", "self_signed_root")


class SignerError(RuntimeError):
    """The signer cannot sign (key unreadable, device error, ...); the message is for people."""


class ApprovalRequired(SignerError):
    """A signature was asked for without a valid approval record."""


@dataclass(frozen=True)
class Approval:
    """The staff approval of one case: an audit_log row (to_state 'approved')."""

    case_ref: str
    staff: str
    at: datetime
    audit_id: int


def load_approval(session: Session, case_ref: str) -> Approval:
    """The latest staff approval of the case, from its audit log; raises ApprovalRequired."""
    from sqlalchemy import select

    from mailbot.cases.models import AuditEntry, Case

    case = session.scalars(select(Case).where(Case.ref == case_ref)).first()
    if case is None:
        raise ApprovalRequired(f"no case {case_ref}: nothing to issue under")
    row = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.case_id == case.id, AuditEntry.to_state == "approved")
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).first()
    if row is None:
        raise ApprovalRequired(f"case {case_ref} has no approval in its audit log")
    if not _is_staff(row.actor):
        raise ApprovalRequired(f"case {case_ref} was moved to approved by {row.actor!r}, "
                               "which is not a staff member")
    if case.state != "approved":
        raise ApprovalRequired(f"case {case_ref} is {case.state}, not approved: "
                               "an earlier approval does not count")
    return Approval(case_ref=case_ref, staff=row.actor, at=row.at, audit_id=row.id)


def _is_staff(actor: str) -> bool:
    # automatic actors are "system" and "message:<id>"; staff give a name with --by
    return bool(actor.strip()) and actor != "system" and not actor.startswith("message:")


def check_approval(approval: object) -> Approval:
    """Refuse unless `approval` is a complete approval record."""
    if not isinstance(approval, Approval):
        raise ApprovalRequired("refusing to sign: no approval record for this case")
    if not (approval.case_ref and _is_staff(approval.staff) and approval.audit_id
            and isinstance(approval.at, datetime)):
        raise ApprovalRequired("refusing to sign: the approval record is incomplete")
    return approval


class Signer(Protocol):
    def public_key(self) -> bytes: ...

    def sign(self, tbs: bytes, approval: Approval) -> bytes: ...

    def sign_ca_operation(self, tbs: bytes, purpose: CaPurpose) -> bytes: ...


class BaseSigner:
    """Approval and purpose checks; subclasses give `public_key` and `_sign_digest`."""

    uid: bytes = sm2.DEFAULT_ID

    def public_key(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sign_digest(self, e: bytes) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sign(self, tbs: bytes) -> bytes:
        # e = SM3(Z||M) in software, with the standard ID; the key only signs the digest
        e = sm2.message_digest(self.public_key(), bytes(tbs), self.uid)
        r, s = self._sign_digest(e)
        return sm2.encode_signature(r, s)

    def sign(self, tbs: bytes, approval: Approval) -> bytes:
        """DER SM2Signature over an end-entity TBS, only under an approval record."""
        check_approval(approval)
        return self._sign(tbs)

    def sign_ca_operation(self, tbs: bytes, purpose: CaPurpose) -> bytes:
        """Sign one of the CA's own structures (CRL, self-signed root); checked to be one."""
        _check_ca_tbs(tbs, purpose, self.public_key())
        return self._sign(tbs)

    def close(self) -> None:
        """Release device handles (nothing for soft keys)."""


def _check_ca_tbs(tbs: bytes, purpose: str, pub: bytes) -> None:
    from asn1crypto import crl, x509

    if purpose not in CA_PURPOSES:
        raise SignerError(f"unknown CA operation {purpose!r}")
    try:
        if purpose == "crl":
            tl = crl.TbsCertList.load(bytes(tbs), strict=True)
            tl.native  # noqa: B018 - parse it all
            return
        tc = x509.TbsCertificate.load(bytes(tbs), strict=True)
        ok = (tc["subject"].dump() == tc["issuer"].dump()
              and bytes(tc["subject_public_key_info"]["public_key"].contents)[1:] == pub
              and bool(_basic_ca(tc)))
    except (ValueError, TypeError) as exc:
        raise SignerError(f"CA operation {purpose}: the data is not a {purpose} ({exc})") from exc
    if not ok:
        raise SignerError("CA operation self_signed_root: not a self-signed CA certificate "
                          "for this signer's key; end-entity certificates need an approval")


def _basic_ca(tc: object) -> bool:
    for ext in tc["extensions"]:  # type: ignore[index]
        if ext["extn_id"].native == "basic_constraints":
            return bool(ext["extn_value"].parsed["ca"].native)
    return False


def open_signer(cfg: Config | CaConfig, *, base: Config | None = None) -> BaseSigner:
    """The signer the [ca] section names: "soft" (key file) or "sdf" (GM/T 0018 device)."""
    from mailbot.config import Config as _Config

    if isinstance(cfg, _Config):
        base, ca = cfg, cfg.ca
    else:
        ca = cfg
    if ca.signer == "soft":
        from mailbot.pki.signer.soft import SoftSigner

        path = base.var_path(ca.key_path) if base is not None else ca.key_path
        return SoftSigner.from_file(path, passphrase_env=ca.key_passphrase_env)
    if ca.signer == "sdf":
        from mailbot.pki.signer.sdf import SdfSigner

        return SdfSigner.from_config(ca)
    raise SignerError(f"unknown signer {ca.signer!r} in [ca] (use soft or sdf)")
