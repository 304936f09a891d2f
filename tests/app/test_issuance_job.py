"""The issuance job (mailbot.app.issuance_job): approved cases become certificates or revocations.

Cases are set up as intake leaves them (the message archived, its row linked to the case, the
form's fields) and approved by a staff audit row; the job then reads the request again from
the archive. OpenSSL checks the pair and the subject; the CRL is checked with verify_crl.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from asn1crypto import pem, x509
from sqlalchemy import select

from mailbot.app import issuance_job as job_mod
from mailbot.app.issuance_job import HELD_ACTION, run_issuance
from mailbot.app.jobs import JOBS
from mailbot.app.notices import app_sessions
from mailbot.cases import workflow
from mailbot.cases.audit import append_audit, verify_chain
from mailbot.cases.models import AuditEntry, Case, CaseField, CaseFinding, CaseNotice
from mailbot.intake import archive
from mailbot.intake.models import Message
from mailbot.outbox.models import OutboxAttachment, OutboxMessage
from mailbot.pki import envelope, sm2
from mailbot.pki.ca import CaState, ca_certificate, init_ca, self_signed_root
from mailbot.pki.crl import verify_crl
from mailbot.pki.models import IssuedCertificate
from mailbot.pki.signer.sdf import SdfSigner
from mailbot.pki.signer.soft import load_private_key
from tests.support.intake import make_config, write_config
from tests.support.mailbuilders import Att, Mail, build, make_sm2
from tests.support.pki_issue import openssl

pytest_plugins = ["tests.support.pki_issue_fixtures"]  # user_csr, softsdf_lib

ORG = "厦门测试贸易有限公司"
CODE = "91350200MA31ABCD1X"
FORM = {"applicant_org": ORG, "org_code": CODE, "email": "cert@example.cn",
        "handler_name": "李四", "handler_phone": "13800000000"}


class Desk:
    """A configuration, its soft test CA and sessions on the test database."""

    def __init__(self, tmp_path: Path, db_url: str, engine) -> None:  # type: ignore[no-untyped-def]
        self.cfg = make_config(tmp_path, db_url, "maildir:mail", workers=1)
        self.ca = init_ca(self.cfg)
        self.sessions = app_sessions(self.cfg, engine)  # commits queue the outgoing mail
        self.tmp = tmp_path

    def run(self, **kw):  # type: ignore[no-untyped-def]
        return run_issuance(self.cfg, self.sessions, ca=kw.pop("ca", self.ca), **kw)

    def envelope(self, ref: str) -> bytes:
        """The `envprivatekey` of the case's issued mail, as the outbox holds it."""
        with self.sessions() as s:
            return s.scalars(select(OutboxAttachment.data).join(
                OutboxMessage, OutboxMessage.id == OutboxAttachment.outbox_id).where(
                OutboxMessage.case_ref == ref, OutboxMessage.template == "issued",
                OutboxAttachment.filename == "envprivatekey")).one()

    def case(self, ref: str):  # type: ignore[no-untyped-def]
        s = self.sessions()
        return s, s.scalars(select(Case).where(Case.ref == ref)).one()


@pytest.fixture
def desk(tmp_path, db_url, engine) -> Desk:
    return Desk(tmp_path, db_url, engine)


def approved(desk: Desk, ref: str, kind: str, attachments: list[Att], *,
             fields: dict[str, str] | None = None, staff_fields: dict[str, str] | None = None,
             findings: tuple[str, ...] = ()) -> None:
    """A case as intake leaves it (archived message, fields, findings), approved by 张三."""
    wording = "数字证书申办" if kind == "new" else "数字证书注销"
    raw = build(Mail(subject=f"{ORG}+{wording}", attachments=attachments,
                     message_id=f"<{ref}.{len(attachments)}@example.com.cn>"))
    sha, _ = archive.store(desk.cfg.archive_dir, raw)
    with desk.sessions() as s:
        case = Case(ref=ref, kind=kind, state="awaiting_confirmation", company=ORG)
        s.add(case)
        s.flush()
        s.add(Message(source="test", source_key=ref, size=len(raw), sha256=sha, case_id=case.id,
                      status="processed", kind=kind))
        staff = staff_fields or {}
        # one row per key: what staff typed in (`cases edit`) replaced what the form said
        for key, value in {**(fields if fields is not None else FORM), **staff}.items():
            case.fields.append(CaseField(key=key, value=value,
                                         source="staff" if key in staff else "form"))
        for code in findings:
            case.findings.append(CaseFinding(code=code, severity="warn", detail=code, facts={}))
        append_audit(s, actor="张三", action="approve", case=case, via="cli",
                     from_state="awaiting_confirmation", to_state="approved")
        case.state = "approved"
        s.commit()


def _subject(tmp: Path, der: bytes, name: str) -> str:
    (tmp / name).write_bytes(pem.armor("CERTIFICATE", der))
    out = openssl("x509", "-in", name, "-noout", "-subject", "-nameopt", "utf8,sep_comma_plus",
                  cwd=tmp).stdout.decode().strip()
    return out


def _verify(tmp: Path, ca: CaState, *ders: bytes) -> None:
    (tmp / "ca.pem").write_text(ca.chain_pem())
    for n, der in enumerate(ders):
        (tmp / f"c{n}.pem").write_bytes(pem.armor("CERTIFICATE", der))
        res = openssl("verify", "-vfyopt", "distid:1234567812345678", "-CAfile", "ca.pem",
                      f"c{n}.pem", cwd=tmp)
        assert res.stdout.decode().strip() == f"c{n}.pem: OK"


def test_registered_between_mailbox_and_expiry():
    names = [n for n, _ in JOBS]
    assert names.count("issuance") == 1
    assert names.index("issuance") < names.index("expiry")
    if "mailbox" in names:
        assert names.index("mailbox") < names.index("issuance")


@pytest.mark.timeout(120)
def test_issues_an_approved_case_once_with_only_the_vetted_names(desk, user_csr, tmp_path):
    key, csr = user_csr  # OpenSSL's request says /C=CN/O=Xiamen Test Trading/OU=IT/CN=alice
    approved(desk, "XM-2026-0001", "new", [Att("server.csr", csr.read_bytes())],
             fields={**FORM, "common_name": "表格上的名字"},
             staff_fields={"common_name": "报关服务器"})
    run = desk.run()
    assert run.issued == ["XM-2026-0001"] and not run.held and not run.failed
    s, case = desk.case("XM-2026-0001")
    with s:
        assert case.state == "issued"
        rows = s.scalars(select(IssuedCertificate).where(
            IssuedCertificate.case_ref == "XM-2026-0001")).all()
        assert sorted(r.kind for r in rows) == ["enc", "sign"]
        notices = s.scalars(select(CaseNotice).where(CaseNotice.case_id == case.id)).all()
        assert [(n.template, n.recipients) for n in notices] == [("issued", "form_address")]
        last = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                         .order_by(AuditEntry.id.desc())).first()
        assert (last.from_state, last.to_state, last.actor, last.via) == (
            "approved", "issued", "system", "system")
        assert verify_chain(s).ok
        sign = next(r for r in rows if r.kind == "sign")
        enc = next(r for r in rows if r.kind == "enc")
    _verify(tmp_path, desk.ca, sign.der, enc.der)
    want = f"subject=C=CN,O={ORG},CN=报关服务器,serialNumber={CODE}"  # staff's CN wins
    assert _subject(tmp_path, sign.der, "s.pem") == want
    assert _subject(tmp_path, enc.der, "e.pem") == want
    user_pub = openssl("pkey", "-in", str(key), "-pubout").stdout
    assert openssl("x509", "-in", "s.pem", "-noout", "-pubkey", cwd=tmp_path).stdout == user_pub
    # the envelope queued with the issued mail opens with the applicant's key to the enc
    # certificate's
    enc_d = envelope.open_envelope(load_private_key(key.read_bytes()),
                                   desk.envelope("XM-2026-0001"))
    cert_pub = bytes(x509.Certificate.load(enc.der).public_key["public_key"].contents)[1:]
    assert sm2.public_key_of(enc_d) == cert_pub
    # a second run issues nothing more
    again = desk.run()
    assert again.issued == [] and again.held == [] and again.failed == []
    with desk.sessions() as s:
        assert s.query(IssuedCertificate).count() == 2


def test_common_name_defaults_to_the_organisation(desk, user_csr, tmp_path):
    approved(desk, "XM-2026-0002", "new", [Att("server.csr", user_csr[1].read_bytes())])
    desk.run()
    with desk.sessions() as s:
        der = s.scalars(select(IssuedCertificate.der).where(
            IssuedCertificate.case_ref == "XM-2026-0002", IssuedCertificate.kind == "sign")).one()
    assert _subject(tmp_path, der, "s.pem") == f"subject=C=CN,O={ORG},CN={ORG},serialNumber={CODE}"


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


def test_failure_between_signing_and_commit_leaves_nothing_and_retry_issues_once(
        desk, user_csr, monkeypatch):
    approved(desk, "XM-2026-0003", "new", [Att("server.csr", user_csr[1].read_bytes())])
    signed = []
    real = workflow.transition

    def die_after_signing(session, case, target, **kw):  # type: ignore[no-untyped-def]
        signed.append(session.query(IssuedCertificate).count())  # the pair is flushed
        raise Killed()

    monkeypatch.setattr(workflow, "transition", die_after_signing)
    with pytest.raises(Killed):
        desk.run()
    assert signed == [2]
    with desk.sessions() as s:
        assert s.query(IssuedCertificate).count() == 0
        assert s.scalars(select(Case.state).where(Case.ref == "XM-2026-0003")).one() == "approved"
        assert s.query(CaseNotice).count() == 0
    monkeypatch.setattr(workflow, "transition", real)
    assert desk.run().issued == ["XM-2026-0003"]
    assert desk.run().issued == []
    with desk.sessions() as s:
        rows = s.query(IssuedCertificate).all()
        assert sorted(r.kind for r in rows) == ["enc", "sign"]
        assert len({r.approval_audit_id for r in rows}) == 1
        assert s.scalars(select(Case.state).where(Case.ref == "XM-2026-0003")).one() == "issued"


KILLER = textwrap.dedent("""
    import os, signal, sys
    from mailbot.app.issuance_job import run_issuance
    from mailbot.cases import workflow
    from mailbot.config import Config
    from mailbot.db import make_engine, session_factory

    def kill(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)  # after signing, before the commit

    workflow.transition = kill
    cfg = Config.load(sys.argv[1])
    run_issuance(cfg, session_factory(make_engine(cfg.database_url)))
""")


@pytest.mark.timeout(120)
def test_process_killed_after_signing_then_retry(desk, user_csr, db_url):
    approved(desk, "XM-2026-0004", "new", [Att("server.csr", user_csr[1].read_bytes())])
    cfg_file = write_config(desk.tmp / "mailbot.toml", desk.cfg)
    res = subprocess.run([sys.executable, "-c", KILLER, str(cfg_file)], capture_output=True,
                         timeout=100, cwd=Path(__file__).resolve().parents[2],
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert res.returncode == -signal.SIGKILL, res.stderr.decode()
    with desk.sessions() as s:
        assert s.query(IssuedCertificate).count() == 0
    assert desk.run().issued == ["XM-2026-0004"]
    with desk.sessions() as s:
        assert s.query(IssuedCertificate).count() == 2


def test_no_request_is_held_and_audited_once(desk):
    approved(desk, "XM-2026-0005", "new", [Att("申请表.pdf", b"%PDF-1.4 not a request")])
    for _ in range(3):
        run = desk.run()
        assert run.held and "no certificate request" in run.held[0][1] and not run.failed
    s, case = desk.case("XM-2026-0005")
    with s:
        assert case.state == "approved"
        held = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id,
                                                  AuditEntry.action == HELD_ACTION)).all()
        assert len(held) == 1


# -- revocation -----------------------------------------------------------------------------
def _issue_for(desk: Desk, ref: str, csr: bytes) -> tuple[IssuedCertificate, IssuedCertificate]:
    approved(desk, ref, "new", [Att("server.csr", csr)])
    assert desk.run().issued == [ref]
    with desk.sessions() as s:
        rows = {r.kind: r for r in s.scalars(select(IssuedCertificate).where(
            IssuedCertificate.case_ref == ref))}
        s.expunge_all()
    return rows["sign"], rows["enc"]


def _crl_serials(desk: Desk) -> dict[str, str]:
    data = desk.cfg.var_path(desk.cfg.ca.crl_path).read_bytes()
    check = verify_crl(data, ca_certificate(desk.cfg))
    assert check.ok, check.problems
    return {serial: reason for serial, _, reason in check.revoked}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("compromised", [False, True])
def test_revocation_revokes_both_of_the_pair_and_lists_them(desk, user_csr, compromised):
    sign, enc = _issue_for(desk, "XM-2026-0010", user_csr[1].read_bytes())
    approved(desk, "XM-2026-0011", "revoke", [Att("sign.cer", sign.der)],
             fields={**FORM, "application_type": "revoke", "revoke_serial": sign.serial},
             findings=("key_compromise",) if compromised else ())
    run = desk.run()
    assert run.revoked == ["XM-2026-0011"] and run.crl_written
    reason = "keyCompromise" if compromised else "cessationOfOperation"
    with desk.sessions() as s:
        rows = {r.kind: r for r in s.scalars(select(IssuedCertificate).where(
            IssuedCertificate.case_ref == "XM-2026-0010"))}
        assert all(r.revoked_at is not None and r.revocation_reason == reason
                   for r in rows.values())
        case = s.scalars(select(Case).where(Case.ref == "XM-2026-0011")).one()
        assert case.state == "revoked"
        assert [n.template for n in s.scalars(select(CaseNotice).where(
            CaseNotice.case_id == case.id))] == ["revoked"]
        assert verify_chain(s).ok
    listed = _crl_serials(desk)
    want = "key_compromise" if compromised else "cessation_of_operation"
    assert listed == {sign.serial: want, enc.serial: want}
    assert desk.run().revoked == []


def test_revocation_by_the_forms_serial_alone(desk, user_csr):
    sign, enc = _issue_for(desk, "XM-2026-0012", user_csr[1].read_bytes())
    approved(desk, "XM-2026-0013", "revoke", [Att("申请表.pdf", b"%PDF-1.4 form")],
             fields={**FORM, "revoke_serial": enc.serial.upper()})
    assert desk.run().revoked == ["XM-2026-0013"]
    assert set(_crl_serials(desk)) == {sign.serial, enc.serial}


@pytest.mark.timeout(120)
def test_certificate_from_before_mailbot_is_revoked(desk, tmp_path):
    """Signed by the CA key but not in the database: still this CA's to revoke."""
    d = tmp_path / "old"
    d.mkdir()
    mat = make_sm2(d, "old")
    (d / "ca.key").write_bytes(desk.cfg.var_path(desk.cfg.ca.key_path).read_bytes())
    (d / "ca.pem").write_text(desk.ca.chain_pem())
    (d / "r.csr").write_bytes(mat.csr_pem)
    openssl("x509", "-req", "-in", "r.csr", "-vfyopt", "distid:1234567812345678", "-CA",
            "ca.pem", "-CAkey", "ca.key", "-sm3", "-sigopt", "distid:1234567812345678",
            "-set_serial", "0x5A5A01", "-days", "365", "-outform", "DER", "-out", "old.cer",
            cwd=d)
    approved(desk, "XM-2026-0014", "revoke", [Att("old.cer", (d / "old.cer").read_bytes())])
    assert desk.run().revoked == ["XM-2026-0014"]
    assert _crl_serials(desk) == {"5a5a01": "cessation_of_operation"}
    with desk.sessions() as s:
        row = s.scalars(select(IssuedCertificate)).one()
        assert (row.serial, row.kind, row.case_ref) == ("5a5a01", "sign", None)
        assert bytes.fromhex(row.public_key) == b"\x04" + bytes.fromhex(
            openssl("pkey", "-in", str(d / "k.pem"), "-pubout", "-outform", "DER").stdout[-64:].hex())


def test_foreign_certificate_is_not_revoked(desk, user_csr, tmp_path):
    sign, _ = _issue_for(desk, "XM-2026-0015", user_csr[1].read_bytes())
    foreign = make_sm2(tmp_path / "f", "foreign")  # self-signed: another CA's signature
    approved(desk, "XM-2026-0016", "revoke", [Att("sign.cer", foreign.cert_der)])
    for _ in range(2):
        run = desk.run()
        assert run.revoked == [] and "signed by another CA" in run.held[0][1]
    s, case = desk.case("XM-2026-0016")
    with s:
        assert case.state == "approved"
        assert s.query(IssuedCertificate).filter(
            IssuedCertificate.revoked_at.is_not(None)).count() == 0
        assert s.query(AuditEntry).filter_by(case_id=case.id, action=HELD_ACTION).count() == 1
    assert not desk.cfg.var_path(desk.cfg.ca.crl_path).exists()


# -- the SDF signer ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_sdf_signer_generates_the_encryption_key_on_the_device(desk, user_csr, softsdf_lib,
                                                               tmp_path, monkeypatch):
    from mailbot.pki.signer.soft import write_private_key

    d = sm2.generate_private_key()
    write_private_key(tmp_path / "hsm.pem", d)
    monkeypatch.setenv("SOFTSDF_KEYS", f"2|{tmp_path / 'hsm.pem'}|pw")
    monkeypatch.delenv("SOFTSDF_SM2_1", raising=False)
    signer = SdfSigner(str(softsdf_lib), 2, b"pw")
    counter = ctypes.CDLL(str(softsdf_lib)).SOFTSDF_KeyPairsGenerated
    counter.restype = ctypes.c_uint
    before = counter()

    def no_python_keys() -> int:
        raise AssertionError("the encryption key must come from the signer, not sm2.py")

    monkeypatch.setattr(sm2, "generate_private_key", no_python_keys)
    try:
        root = self_signed_root(signer, {"C": "CN", "CN": "HSM test CA"})
        ca = CaState(signer=signer, cert=root, chain=[root])
        approved(desk, "XM-2026-0020", "new", [Att("server.csr", user_csr[1].read_bytes())])
        assert desk.run(ca=ca).issued == ["XM-2026-0020"]
    finally:
        signer.close()
    assert counter() == before + 1
    with desk.sessions() as s:
        rows = {r.kind: r for r in s.query(IssuedCertificate).all()}
    _verify(tmp_path, ca, rows["sign"].der, rows["enc"].der)
    env = desk.envelope("XM-2026-0020")
    enc_d = envelope.open_envelope(load_private_key(user_csr[0].read_bytes()), env)
    cert_pub = bytes(x509.Certificate.load(rows["enc"].der).public_key["public_key"].contents)
    assert sm2.public_key_of(enc_d) == cert_pub[1:]


def test_the_daemon_job_runs_it(desk, user_csr, monkeypatch):
    """issuance_job(daemon) loads the CA itself and reports a failure as the job's."""
    approved(desk, "XM-2026-0030", "new", [Att("server.csr", user_csr[1].read_bytes())])

    class FakeDaemon:
        cfg = desk.cfg
        sessions = desk.sessions

    job_mod.issuance_job(FakeDaemon())  # type: ignore[arg-type]
    with desk.sessions() as s:
        assert s.scalars(select(Case.state).where(Case.ref == "XM-2026-0030")).one() == "issued"
    approved(desk, "XM-2026-0031", "new", [Att("server.csr", make_sm2(
        desk.tmp / "k2", "x").csr_pem)])

    def broken(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError("device unplugged")

    monkeypatch.setattr(job_mod, "issue_for_case", broken)
    with pytest.raises(job_mod.IssuanceFailed, match="XM-2026-0031: OSError: device unplugged"):
        job_mod.issuance_job(FakeDaemon())  # type: ignore[arg-type]
