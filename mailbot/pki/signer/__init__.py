"""CA signers: one small interface (public key, sign) in front of a soft key or an HSM.

Who may make a CA signature, and why (the design):

* End-entity certificates are signed only inside an **issuance** (`Signer.begin_issuance`,
  signer/issuance.py): one pair (sign.cer, env.cer) under one `Approval`, with the
  `ApprovalCheck` the caller hands in (mailbot.app gives mailbot.cases' check, which re-reads
  the audit row that approved the case in the signing transaction). Before every end-entity
  signature the issuance calls ``check.confirm(approval)`` and refuses a TBSCertificate that
  is a CA (cA TRUE, keyCertSign, cRLSign) or carries another key than the approved request's
  (sign) or the encryption key the issuance itself generated (enc).
* The CA's own structures are no case: a CRL and the self-signed root are **CA operations**,
  signed through ``Signer.sign_ca_operation(tbs, purpose)``. That path checks the TBS really
  is what the purpose says (a TBSCertList; or a TBSCertificate with subject == issuer, the
  signer's own public key and CA:TRUE), so it cannot be used to slip an end-entity
  certificate past the approval rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from mailbot.pki import sm2
from mailbot.pki.approval import Approval, ApprovalCheck, check_approval, key_fingerprint
from mailbot.pki.errors import ApprovalRequired, PkiError, SignerError
from mailbot.pki.signer.issuance import Issuance

if TYPE_CHECKING:
    from mailbot.config import CaConfig, Config

__all__ = [
    "CA_PURPOSES", "Approval", "ApprovalCheck", "ApprovalRequired", "BaseSigner", "CaPurpose",
    "Issuance", "PkiError", "Signer", "SignerError", "check_approval", "key_fingerprint",
    "open_signer",
]

CaPurpose = Literal["crl", "self_signed_root"]
CA_PURPOSES: tuple[str, ...] = ("crl", "self_signed_root")


class Signer(Protocol):
    def public_key(self) -> bytes: ...

    def begin_issuance(self, approval: Approval, check: ApprovalCheck) -> Issuance: ...

    def sign_ca_operation(self, tbs: bytes, purpose: CaPurpose) -> bytes: ...


class BaseSigner:
    """Approval and purpose checks; subclasses give `public_key` and `_sign_digest`."""

    uid: bytes = sm2.DEFAULT_ID

    def public_key(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sign_digest(self, e: bytes) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def generate_key_pair(self) -> tuple[int, bytes]:
        """A fresh SM2 key pair (d, 04||X||Y) for an encryption certificate; the subclass says
        where it comes from (OpenSSL's libcrypto, the cipher device). Only an `Issuance` calls
        this, and d leaves it only inside the applicant's envelope."""
        raise SignerError(f"{type(self).__name__} cannot generate key pairs")

    def _sign(self, tbs: bytes) -> bytes:
        # e = SM3(Z||M) in software, with the standard ID; the key only signs the digest
        e = sm2.message_digest(self.public_key(), bytes(tbs), self.uid)
        r, s = self._sign_digest(e)
        return sm2.encode_signature(r, s)

    def begin_issuance(self, approval: Approval, check: ApprovalCheck) -> Issuance:
        """The only way to end-entity signatures: one pair under `approval`, confirmed by
        `check` now and again before each signature (raises ApprovalRequired)."""
        return Issuance(self, approval, check)

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
