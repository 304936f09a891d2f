"""Helpers for the PKI tests: OpenSSL runs, stub approvals, an independent SM2 verify.

The PKI is tested alone: `StubCheck` + `stub_approval` stand in for the cases' approval, with
a check that confirms exactly the approvals it was given (one approval gives one pair, so each
pair needs its own: `issue_stubbed` makes a fresh one per call). Nothing here imports cases or
app; the case-backed helpers (`approved_case`, `issue_approved`) live in tests/support/cases.py.

The independent verifier is written here from GB/T 32918.2 with gmssl's point arithmetic and
hashlib's SM3, so CRL/certificate signatures are not checked only by mailbot.pki.sm2.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import core
from sqlalchemy.orm import Session

from mailbot.pki import issue
from mailbot.pki.approval import Approval, key_fingerprint
from mailbot.pki.ca import CaState
from mailbot.pki.errors import ApprovalRequired
from tests.support import sm2_reference

STD_ID = b"1234567812345678"
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
CURVE = bytes.fromhex(
    "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"
    "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"
    "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"
    "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")


def openssl(*args: str, cwd: Path | None = None, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, input=input,
                         timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {res.stderr.decode()}")
    return res


class StubCheck:
    """An ApprovalCheck confirming exactly the approvals it was given; counts its calls."""

    def __init__(self, *approvals: Approval) -> None:
        self.approved = set(approvals)
        self.calls = 0

    def confirm(self, approval: Approval) -> None:
        self.calls += 1
        if approval not in self.approved:
            raise ApprovalRequired("stub check: not an approval it knows")


def stub_approval(public_key: bytes, ref: str = "XM-2026-0900", audit_id: int = 900,
                  staff: str = "张三") -> Approval:
    return Approval(case_ref=ref, staff=staff, at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
                    audit_id=audit_id, key_fingerprint=key_fingerprint(public_key))


_AUDIT_IDS = itertools.count(100_000)  # stub approvals' audit ids, apart from hand-picked ones


def issue_stubbed(session: Session, ca: CaState, ref: str, public_key: bytes,
                  subject: dict[str, str], *, audit_id: int | None = None,
                  staff: str = "张三", **kwargs: object) -> issue.IssuedPair:
    """Issue a pair under a fresh stub approval for `ref`, confirmed by its own StubCheck."""
    approval = stub_approval(public_key, ref=ref, staff=staff,
                             audit_id=next(_AUDIT_IDS) if audit_id is None else audit_id)
    return issue.issue_pair(session, ca, approval, StubCheck(approval), public_key, subject,
                            **kwargs)  # type: ignore[arg-type]


def issue_csr_stubbed(session: Session, ca: CaState, ref: str, csr: bytes, *,
                      audit_id: int | None = None, company: str = "Xiamen Test Trading",
                      common_name: str | None = None, org_code: str | None = None,
                      **kwargs: object) -> issue.IssuedPair:
    """issue_from_csr (check_csr again, then issue) under a fresh stub approval of its key,
    with the vetted names given here (never the request's own subject)."""
    from mailbot.pki.csr import check_csr

    public_key = check_csr(csr).public_key or bytes(65)  # an invalid request is refused anyway
    approval = stub_approval(public_key, ref=ref,
                             audit_id=next(_AUDIT_IDS) if audit_id is None else audit_id)
    subject = issue.CertificateSubject(company, common_name, org_code)
    return issue.issue_from_csr(session, ca, approval, StubCheck(approval), csr, subject,
                                **kwargs)  # type: ignore[arg-type]


def independent_verify(pub65: bytes, message: bytes, sig_der: bytes, uid: bytes = STD_ID) -> bool:
    """SM2 verify from the standard: Z, e = SM3(Z||M), range checks, the reference point
    arithmetic of tests/support/sm2_reference.py (neither mailbot's code nor OpenSSL's)."""
    from asn1crypto import core

    class Sig(core.Sequence):
        _fields = [("r", core.Integer), ("s", core.Integer)]

    sig = Sig.load(sig_der, strict=True)
    r, s = sig["r"].native, sig["s"].native
    if not (1 <= r < N and 1 <= s < N):
        return False
    entl = (len(uid) * 8).to_bytes(2, "big")
    z = hashlib.new("sm3", entl + uid + CURVE + pub65[1:]).digest()
    e = hashlib.new("sm3", z + message).digest()
    return sm2_reference.verify_digest(pub65, e, r, s)


def gmssl_public_key(d: int) -> bytes:
    """d*G computed independently of mailbot (the reference arithmetic), 04||X||Y."""
    return sm2_reference.public_key(d)


def write_config(folder: Path, **ca: object) -> Path:
    """A config TOML with var_dir and the database in `folder`, plus [ca] overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[paths]", f'var_dir = "{folder / "var"}"', "[database]",
             f'url = "sqlite:///{folder / "mailbot.sqlite3"}"', "[ca]"]
    for key, value in ca.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    path = folder / "mailbot.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_envelope_opens_with_openssl(pair: object, key: Path, tmp_path: Path) -> None:
    """The applicant's OpenSSL key opens `pair.envelope` with `pkeyutl -decrypt` +
    `enc -sm4-ecb`, and d*G (computed independently) is the envelope's and env.cer's key."""
    from asn1crypto import x509

    env = SM2EnvelopedKey.load(pair.envelope, strict=True)  # type: ignore[attr-defined]
    (tmp_path / "c.der").write_bytes(env["sym_encrypted_key"].dump())
    sym = openssl("pkeyutl", "-decrypt", "-inkey", str(key), "-in", "c.der",
                  cwd=tmp_path).stdout
    assert len(sym) == 16
    (tmp_path / "p.bin").write_bytes(env["sm2_encrypted_private_key"].native)
    plain = openssl("enc", "-d", "-sm4-ecb", "-nopad", "-K", sym.hex(), "-in", "p.bin",
                    cwd=tmp_path).stdout
    d = int.from_bytes(plain, "big")
    enc_cert = x509.Certificate.load(pair.enc_cert)  # type: ignore[attr-defined]
    cert_pub = bytes(enc_cert.public_key["public_key"].contents)[1:]
    assert gmssl_public_key(d) == env["sm2_public_key"].native == cert_pub


class _Alg(core.Sequence):
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class _SM2Cipher(core.Sequence):
    _fields = [("x", core.Integer), ("y", core.Integer), ("hash", core.OctetString),
               ("ciphertext", core.OctetString)]


class SM2EnvelopedKey(core.Sequence):
    """SM2EnvelopedKey written down here from GM/T 0009 (reference §4), independently."""

    _fields = [("sym_alg", _Alg), ("sym_encrypted_key", _SM2Cipher),
               ("sm2_public_key", core.OctetBitString),
               ("sm2_encrypted_private_key", core.OctetBitString)]
