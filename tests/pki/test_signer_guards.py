"""The signer guards what it signs: end-entity TBS only, the right keys, one pair per approval.

The PKI alone: approvals here are confirmed by a StubCheck (tests/support/pki_issue.py), so
these tests need no cases. tests/cases/test_approval.py covers the cases' real check.
"""

from __future__ import annotations

import pytest
from asn1crypto import x509
from sqlalchemy.exc import IntegrityError

from mailbot.pki import ca as ca_mod
from mailbot.pki import issue, sm2
from mailbot.pki.ca import CaState
from mailbot.pki.errors import PkiError
from mailbot.pki.models import IssuedCertificate
from mailbot.pki.signer import ApprovalRequired, SignerError
from mailbot.pki.signer.issuance import end_entity_public_key
from tests.support.pki_issue import StubCheck, independent_verify, stub_approval

pytest_plugins = ["tests.support.pki_issue_fixtures"]


def _pub() -> bytes:
    return sm2.public_key_of(sm2.generate_private_key())


def _tbs(ca: CaState, pub: bytes, *, kind: str = "sign", ca_flag: bool | None = False,
         usage: set[str] | None = None, path_len: int | None = None) -> bytes:
    """A TBSCertificate like issue.build_tbs makes, with the CA-relevant parts set by hand."""
    start, end = issue.validity(ca, 1)
    exts: list[dict[str, object]] = []
    if ca_flag is not None:
        value: dict[str, object] = {"ca": ca_flag}
        if path_len is not None:
            value["path_len_constraint"] = path_len
        exts.append({"extn_id": "basic_constraints", "critical": True, "extn_value": value})
    exts.append({"extn_id": "key_usage", "critical": True,
                 "extn_value": usage if usage is not None else issue.KEY_USAGE[kind]})
    return x509.TbsCertificate({
        "version": "v3", "serial_number": ca_mod.random_serial(), "signature": ca_mod.sig_alg(),
        "issuer": ca.subject, "validity": {"not_before": ca_mod.x509_time(start),
                                           "not_after": ca_mod.x509_time(end)},
        "subject": ca_mod.build_name({"CN": "outsider"}),
        "subject_public_key_info": ca_mod.spki_of(pub), "extensions": exts,
    }).dump()


def _issuance(ca: CaState, pub: bytes, **kw: object):
    approval = stub_approval(pub, **kw)  # type: ignore[arg-type]
    return ca.signer.begin_issuance(approval, StubCheck(approval))


def test_refuses_ca_true_tbs_under_an_end_entity_approval(ca_state):
    pub = _pub()
    issuance = _issuance(ca_state, pub)
    # the attack of the issue: a CA certificate for the approved key, signed as if a leaf
    with pytest.raises(SignerError, match="cA FALSE"):
        issuance.sign(_tbs(ca_state, pub, ca_flag=True, usage={"key_cert_sign", "crl_sign"}),
                      "sign")
    with pytest.raises(SignerError, match="cA FALSE"):
        issuance.sign(_tbs(ca_state, pub, ca_flag=True), "sign")
    with pytest.raises(SignerError, match="cA FALSE"):  # no basicConstraints: not an end entity
        issuance.sign(_tbs(ca_state, pub, ca_flag=None), "sign")
    with pytest.raises(SignerError, match="cA FALSE"):
        issuance.sign(_tbs(ca_state, pub, ca_flag=False, path_len=0), "sign")
    # nothing was signed: the issuance still signs the legitimate certificate
    good = _tbs(ca_state, pub)
    assert independent_verify(ca_state.public_key, good, issuance.sign(good, "sign"))


def test_refuses_key_cert_sign_or_crl_sign_tbs(ca_state):
    pub = _pub()
    issuance = _issuance(ca_state, pub)
    for usage in ({"key_cert_sign"}, {"crl_sign"}, {"digital_signature", "key_cert_sign"}):
        with pytest.raises(SignerError, match="keyCertSign / cRLSign"):
            issuance.sign(_tbs(ca_state, pub, usage=usage), "sign")
    with pytest.raises(SignerError, match="keyUsage"):
        issuance.sign(_tbs(ca_state, pub, usage=set()), "sign")
    with pytest.raises(SignerError, match="not a readable TBSCertificate"):
        issuance.sign(b"\x30\x00", "sign")


def test_refuses_a_key_neither_approved_nor_generated(ca_state):
    approved, outsider = _pub(), _pub()
    issuance = _issuance(ca_state, approved)
    # sign.cer: only the approved request's key
    with pytest.raises(ApprovalRequired, match="not the key of the request"):
        issuance.sign(_tbs(ca_state, outsider), "sign")
    # env.cer: only the key this issuance generated; not before it made one
    with pytest.raises(SignerError, match="issuance generated"):
        issuance.sign(_tbs(ca_state, outsider, kind="enc"), "enc")
    # the envelope goes to the approved key only
    with pytest.raises(ApprovalRequired, match="not the key of the request"):
        issuance.make_encryption_key(outsider)
    enc_pub, _env = issuance.make_encryption_key(approved)
    for key in (outsider, approved):  # neither the outsider's nor the signing key
        with pytest.raises(SignerError, match="issuance generated"):
            issuance.sign(_tbs(ca_state, key, kind="enc"), "enc")
    with pytest.raises(SignerError, match="already generated"):
        issuance.make_encryption_key(approved)
    assert issuance.sign(_tbs(ca_state, enc_pub, kind="enc"), "enc")
    # and issue_pair refuses a request key other than the approved one before signing
    with pytest.raises(ApprovalRequired, match="not the key of the request"):
        issue.issue_pair(None, ca_state, issuance.approval,  # type: ignore[arg-type]
                         StubCheck(issuance.approval), outsider, {"CN": "x"})


def test_refuses_a_second_pair_under_one_approval(session, ca_state):
    pub = _pub()
    approval = stub_approval(pub, ref="XM-2026-0910", audit_id=910)
    check = StubCheck(approval)
    first = issue.issue_pair(session, ca_state, approval, check, pub, {"CN": "a"})
    session.commit()
    assert first.sign_serial and first.enc_serial
    with pytest.raises(ApprovalRequired, match="one approval gives one pair"):
        issue.issue_pair(session, ca_state, approval, check, pub, {"CN": "a"})
    session.rollback()
    assert session.query(IssuedCertificate).filter_by(approval_audit_id=910).count() == 2
    # the database says so too, whoever writes the row
    row = session.query(IssuedCertificate).filter_by(serial=first.sign_serial).one()
    session.add(IssuedCertificate(
        issuer_key_id=row.issuer_key_id, issuer=row.issuer, serial="1234", case_ref=row.case_ref,
        kind="sign", subject="x", not_before=row.not_before, not_after=row.not_after, der=b"",
        public_key=pub.hex(), approval_audit_id=910))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    # and one issuance signs each kind once
    issuance = ca_state.signer.begin_issuance(approval, check)
    tbs = _tbs(ca_state, pub)
    issuance.sign(tbs, "sign")
    with pytest.raises(ApprovalRequired, match="already signed"):
        issuance.sign(tbs, "sign")


def test_refuses_an_approval_the_check_does_not_confirm(ca_state):
    pub = _pub()
    real = stub_approval(pub)
    check = StubCheck(real)
    for forged in (stub_approval(pub, audit_id=901), stub_approval(pub, staff="李四"),
                   stub_approval(pub, ref="XM-2026-0999")):
        with pytest.raises(ApprovalRequired):
            ca_state.signer.begin_issuance(forged, check)
    with pytest.raises(ApprovalRequired, match="no approval check"):
        ca_state.signer.begin_issuance(real, None)  # type: ignore[arg-type]


def test_check_runs_before_every_signature(session, ca_state):
    pub = _pub()
    approval = stub_approval(pub, ref="XM-2026-0911", audit_id=911)
    check = StubCheck(approval)
    issue.issue_pair(session, ca_state, approval, check, pub, {"CN": "a"})
    assert check.calls == 3  # on beginning, and before each of the two signatures
    session.rollback()

    class WithdrawnAfterFirst(StubCheck):
        def confirm(self, approval):  # type: ignore[no-untyped-def]
            super().confirm(approval)
            if self.calls == 2:  # the signing certificate is signed; then it is withdrawn
                self.approved.clear()

    key = _pub()
    other = stub_approval(key, ref="XM-2026-0912", audit_id=912)
    issuance = ca_state.signer.begin_issuance(other, WithdrawnAfterFirst(other))
    issuance.sign(_tbs(ca_state, key), "sign")
    enc_pub, _ = issuance.make_encryption_key(key)
    with pytest.raises(ApprovalRequired):
        issuance.sign(_tbs(ca_state, enc_pub, kind="enc"), "enc")


def test_a_refused_signature_leaves_no_empty_certificate_row(session, ca_state):
    """The (approval, kind) slot reserved before signing is given back when signing fails."""
    pub = _pub()
    approval = stub_approval(pub, ref="XM-2026-0913", audit_id=913)

    class WithdrawnBeforeTheSecond(StubCheck):
        def confirm(self, approval):  # type: ignore[no-untyped-def]
            super().confirm(approval)
            if self.calls == 2:
                self.approved.clear()

    with pytest.raises(ApprovalRequired):
        issue.issue_pair(session, ca_state, approval, WithdrawnBeforeTheSecond(approval), pub,
                         {"CN": "a"})
    rows = session.query(IssuedCertificate).filter_by(approval_audit_id=913).all()
    assert [(r.kind, bool(r.der)) for r in rows] == [("sign", True)]  # no reserved enc row
    session.rollback()


def test_ca_operations_keep_their_own_path(ca_state):
    pub = _pub()
    # an end-entity TBS is not a CA operation, and a CA TBS is no end entity
    with pytest.raises(SignerError):
        ca_state.signer.sign_ca_operation(_tbs(ca_state, pub), "self_signed_root")
    root_tbs = ca_state.cert["tbs_certificate"].dump()
    with pytest.raises(SignerError, match="cA FALSE"):
        end_entity_public_key(root_tbs)


def test_every_pki_error_has_one_base():
    from mailbot.pki.ca import CaError
    from mailbot.pki.crl import RevokeError
    from mailbot.pki.der import DerError
    from mailbot.pki.envelope import EnvelopeError
    from mailbot.pki.issue import IssueError
    from mailbot.pki.signer.sdf import SdfError
    from mailbot.pki.signer.soft import KeyFileError
    from mailbot.pki.sm2 import SM2Error

    for exc in (CaError, RevokeError, DerError, EnvelopeError, IssueError, SdfError,
                KeyFileError, SM2Error, SignerError, ApprovalRequired):
        assert issubclass(exc, PkiError), exc
    # the built-in bases callers caught before still hold
    assert issubclass(DerError, ValueError) and issubclass(IssueError, RuntimeError)


@pytest.mark.timeout(60)
def test_two_processes_one_approval_one_pair(engine, ca_state):
    """Two writers issuing under one approval at once: the unique constraint lets one through."""
    import threading
    import time

    from mailbot.db import session_factory

    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite serialises writers: the second one waits for the whole file")
    pub = _pub()
    approval = stub_approval(pub, ref="XM-2026-0913", audit_id=913)
    make = session_factory(engine)
    outcome: list[BaseException | None] = []
    with make() as first:
        issue.issue_pair(first, ca_state, approval, StubCheck(approval), pub, {"CN": "a"})

        def second() -> None:
            with make() as s:
                try:
                    issue.issue_pair(s, ca_state, approval, StubCheck(approval), pub, {"CN": "b"})
                    s.commit()
                    outcome.append(None)
                except PkiError as exc:
                    outcome.append(exc)

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)  # the second writer now waits on the first one's (approval, kind) row
        first.commit()
        t.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], ApprovalRequired)
    with make() as s:
        assert s.query(IssuedCertificate).filter_by(approval_audit_id=913).count() == 2
