"""Helpers for the PKI issuance tests: OpenSSL runs, approvals, an independent SM2 verify.

Two kinds of approval: `approved_case` + `issue_approved` go through the cases' audit log and
`CaseApprovalCheck` (as mailbot.app wires it); `StubCheck` + `stub_approval` let the PKI be
tested alone, with a check that confirms exactly the approvals it was given.

The independent verifier is written here from GB/T 32918.2 with gmssl's point arithmetic and
hashlib's SM3, so CRL/certificate signatures are not checked only by mailbot.pki.sm2.
"""

from __future__ import annotations

import hashlib
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from gmssl.sm2 import CryptSM2
from sqlalchemy.orm import Session

from mailbot.cases.approval import CaseApprovalCheck, approval_for_case
from mailbot.cases.audit import append_audit
from mailbot.cases.models import Case
from mailbot.pki import issue
from mailbot.pki.approval import Approval, key_fingerprint
from mailbot.pki.ca import CaState
from mailbot.pki.errors import ApprovalRequired

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


def approved_case(session: Session, ref: str, company: str = "厦门测试贸易有限公司",
                  staff: str = "张三") -> Case:
    case = Case(ref=ref, kind="new", state="awaiting_confirmation", company=company)
    session.add(case)
    session.flush()
    append_audit(session, actor=staff, action="approve", case=case,
                 from_state="awaiting_confirmation", to_state="approved")
    case.state = "approved"
    session.flush()
    return case


def issue_approved(session: Session, ca: CaState, ref: str, public_key: bytes,
                   subject: dict[str, str], **kwargs: object) -> issue.IssuedPair:
    """Issue under the case's approval from its audit log, checked by CaseApprovalCheck."""
    approval = approval_for_case(session, ref, public_key)
    return issue.issue_pair(session, ca, approval, CaseApprovalCheck(session), public_key,
                            subject, **kwargs)  # type: ignore[arg-type]


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


def independent_verify(pub65: bytes, message: bytes, sig_der: bytes, uid: bytes = STD_ID) -> bool:
    """SM2 verify from the standard: Z, e = SM3(Z||M), range checks, gmssl point arithmetic."""
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
    gm = CryptSM2(private_key=None, public_key=pub65[1:].hex(), mode=1)
    return bool(gm.verify(f"{r:064x}{s:064x}", e))


def gmssl_public_key(d: int) -> bytes:
    """d*G computed by gmssl (not by mailbot), 04||X||Y."""
    gm = CryptSM2(private_key=f"{d:064x}", public_key="", mode=1)
    return b"\x04" + bytes.fromhex(gm._kg(d, gm.ecc_table["g"]))


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
