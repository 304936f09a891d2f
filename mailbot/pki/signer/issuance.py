"""One end-entity issuance: the signer's guarded path for the two certificates of one approval.

An `Issuance` is made by ``signer.begin_issuance(approval, check)``. It signs at most one
``sign`` and one ``enc`` TBSCertificate, and for each, before the key is used:

* ``check.confirm(approval)`` (the caller's check, e.g. the case's audit row re-read in the
  signing transaction) must pass: every signature, not just the first;
* the TBS must be an end-entity certificate: basicConstraints present with cA FALSE and no
  path length, keyUsage present without keyCertSign or cRLSign, no extension twice;
* its subject public key must be the right one: for ``sign`` the key whose fingerprint the
  approval carries; for ``enc`` the encryption key pair this issuance generated itself
  (`make_encryption_key`), so a caller cannot put another key in the encryption certificate.

The database's unique (approval, kind) constraint on pki_certificates makes "one approval,
one pair" hold across issuances and processes too (issue.py reserves the row first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asn1crypto import x509

from mailbot.pki import envelope, sm2
from mailbot.pki.approval import Approval, ApprovalCheck, check_approval, check_is_a_check
from mailbot.pki.approval import key_fingerprint as _fingerprint
from mailbot.pki.errors import ApprovalRequired, SignerError

if TYPE_CHECKING:
    from mailbot.pki.signer import BaseSigner

EC_PUBLIC_KEY = "1.2.840.10045.2.1"
SM2_CURVE = "1.2.156.10197.1.301"
CA_KEY_USAGES = frozenset({"key_cert_sign", "crl_sign"})
KINDS = ("sign", "enc")


def end_entity_public_key(tbs: bytes) -> bytes:
    """The subject SM2 key (04||X||Y) of an end-entity TBSCertificate; SignerError otherwise."""
    try:
        tc = x509.TbsCertificate.load(bytes(tbs), strict=True)
        seen: dict[str, object] = {}
        for ext in tc["extensions"]:
            name = ext["extn_id"].dotted
            if name in seen:
                raise SignerError(f"refusing to sign: extension {ext['extn_id'].native} twice")
            seen[name] = ext["extn_value"].parsed
        spki = tc["subject_public_key_info"]
        alg = spki["algorithm"]
        pub = bytes(spki["public_key"].contents)[1:]
        alg_ok = (alg["algorithm"].dotted == EC_PUBLIC_KEY
                  and alg["parameters"].name == "named"
                  and alg["parameters"].chosen.dotted == SM2_CURVE)
        basic = seen.get("2.5.29.19")
        usage = seen.get("2.5.29.15")
        is_ca = basic is None or bool(basic["ca"].native)  # type: ignore[index]
        path_len = basic is not None and basic["path_len_constraint"].native is not None  # type: ignore[index]
        usages = set(usage.native) if usage is not None else set()  # type: ignore[attr-defined]
    except SignerError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise SignerError(f"refusing to sign: not a readable TBSCertificate ({exc})") from exc
    if is_ca or path_len:
        raise SignerError("refusing to sign: an end-entity certificate must carry "
                          "basicConstraints with cA FALSE (a CA certificate needs no approval "
                          "of a case: it is a CA operation)")
    if usage is None or not usages:
        raise SignerError("refusing to sign: an end-entity certificate must carry keyUsage")
    if usages & CA_KEY_USAGES:
        raise SignerError("refusing to sign: keyCertSign / cRLSign are for CA certificates, "
                          f"not end-entity ones (keyUsage {sorted(usages)})")
    if not alg_ok:
        raise SignerError("refusing to sign: the subject key is not an SM2 key")
    try:
        sm2.check_public_key(pub)
    except sm2.SM2Error as exc:
        raise SignerError(f"refusing to sign: the subject key is not usable ({exc})") from exc
    return pub


class Issuance:
    """The signatures for one approved request: one signing and one encryption certificate."""

    def __init__(self, signer: BaseSigner, approval: Approval, check: ApprovalCheck) -> None:
        self._signer = signer
        self._approval = check_approval(approval)
        self._check = check_is_a_check(check)
        self._check.confirm(self._approval)  # refuse early, before any key is generated
        self._enc_public: bytes | None = None
        self._signed: set[str] = set()

    @property
    def approval(self) -> Approval:
        return self._approval

    def confirm_request_key(self, public_key: bytes) -> None:
        """Refuse unless `public_key` is the approved request's key."""
        try:
            ok = _fingerprint(public_key) == self._approval.key_fingerprint
        except sm2.SM2Error:
            ok = False
        if not ok:
            raise ApprovalRequired(f"refusing to sign: that key is not the key of the request "
                                   f"approved for {self._approval.case_ref}")

    def make_encryption_key(self, request_public_key: bytes) -> tuple[bytes, bytes]:
        """Generate the pair's encryption key: (its public key, SM2EnvelopedKey to the request key).

        The signer generates the pair (`generate_key_pair`: the device with SDF, libcrypto with
        the soft key). The private key exists only here and inside the envelope, which only the
        holder of the approved request's key can open; it is never stored or logged.
        """
        if self._enc_public is not None:
            raise SignerError("this issuance already generated its encryption key")
        self.confirm_request_key(request_public_key)
        # from the signer: the cipher device (SDF) or OpenSSL's libcrypto (soft)
        enc_d, enc_pub = self._signer.generate_key_pair()
        try:
            if not 1 <= enc_d <= sm2.N - 2 or sm2.public_key_of(enc_d) != bytes(enc_pub):
                raise SignerError("the signer generated an unusable encryption key pair")
            sm2.check_public_key(enc_pub)
            env = envelope.make_envelope(bytes(request_public_key), enc_d)
        finally:
            del enc_d
        self._enc_public = enc_pub
        return enc_pub, env

    def sign(self, tbs: bytes, kind: str) -> bytes:
        """DER SM2Signature over an end-entity TBS of `kind` ("sign" or "enc"), once each."""
        if kind not in KINDS:
            raise SignerError(f"unknown certificate kind {kind!r} (sign or enc)")
        if kind in self._signed:
            raise ApprovalRequired(f"refusing to sign: the {kind} certificate of this approval "
                                   "was already signed (one approval gives one pair)")
        pub = end_entity_public_key(tbs)
        if kind == "sign":
            self.confirm_request_key(pub)
        elif self._enc_public is None or pub != self._enc_public:
            raise SignerError("refusing to sign: the encryption certificate must carry the key "
                              "this issuance generated (make_encryption_key)")
        self._check.confirm(self._approval)  # before every end-entity signature
        sig = self._signer._sign(tbs)
        self._signed.add(kind)
        return sig
