"""The rules on a whole case: the database rules when a case is opened or joined, and the
rules run again on an edit or an override (mailbot.cases.view, mailbot.cases.verdict)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import event, select

from mailbot.cases import workflow
from mailbot.cases.audit import verify_chain
from mailbot.cases.models import AuditEntry, Case, CaseField, CaseFinding
from mailbot.cases.store import CaseStore
from mailbot.cases.view import case_view, known_certificates
from mailbot.intake.facts import AttachmentFact, MessageFacts
from mailbot.intake.models import Message
from mailbot.pki import der, sm2
from mailbot.pki.csr import CsrReport, check_csr
from mailbot.rules.judge import judge_message
from tests.cases.forms import ORG, ORG_CODE, form
from tests.support.cases import approved_case, issue_approved
from tests.support.pki_csr import info, name, request

pytest_plugins = ["tests.support.pki_issue_fixtures"]

ALL = ["application_form", "business_licence", "legal_rep_id", "handler_id",
       "crypto_product_cert", "csr"]
FILES = [("申请表.pdf", ("application_form",)), ("营业执照.pdf", ("business_licence",)),
         ("法人及经办人身份证.pdf", ("legal_rep_id", "handler_id")),
         ("认证证书.pdf", ("crypto_product_cert",)), ("server.csr", ("csr",))]
BAD_CODE = "91350200MA2Y00000A"  # wrong check character: org_code_invalid (reject)


def _message(session, n: int, sender: str = "cert@example.cn") -> Message:
    m = Message(source="maildir:/x", source_key=f"k{n}", size=100, message_id=f"<m{n}@x>",
                subject=f"{ORG}+数字证书申办", from_addr=sender)
    session.add(m)
    session.flush()
    return m


def _att(name: str, *materials: str) -> AttachmentFact:
    return AttachmentFact(filename=name, content_type="application/pdf", size=10,
                          materials=list(materials), sha256="0" * 64)


def _application(**fields: str) -> MessageFacts:
    """A complete application as the analysis worker hands it over: judged by every rule that
    needs no database."""
    facts = MessageFacts(kind="new", company=fields.get("applicant_org", ORG),
                         subject=f"{fields.get('applicant_org', ORG)}+数字证书申办",
                         from_addr="cert@example.cn", form=form(**fields),
                         attachments=[_att(name, *materials) for name, materials in FILES])
    judge_message(facts)
    return facts


def _open(case: Case) -> dict[str, list[CaseFinding]]:
    out: dict[str, list[CaseFinding]] = {}
    for f in workflow.open_findings(case):
        out.setdefault(f.code, []).append(f)
    return out


def _certify(session, ca_state, ref: str, *, subject: dict[str, str] | None = None,
             years: int = 1) -> str:
    """A pair issued by our CA under an approved case `ref`; the sign serial."""
    approved_case(session, ref, company=ORG)
    pub = sm2.public_key_of(sm2.generate_private_key())
    pair = issue_approved(session, ca_state, ref, pub,
                          subject or {"O": ORG, "SERIALNUMBER": ORG_CODE},
                          validity_years=years)
    session.flush()
    return pair.sign_serial


# -- the database rules when a case opens -----------------------------------------------------
def test_already_certified_while_a_certificate_is_valid(session, frozen_clock, ca_state) -> None:
    serial = _certify(session, ca_state, "XM-2025-0900")
    session.commit()
    case = CaseStore(session).record_facts(_message(session, 1), _application())
    session.commit()
    found = _open(case)
    assert list(found) == ["already_certified"]
    [f] = found["already_certified"]
    assert f.severity == "warn" and f.facts["serial"] == serial and serial in f.detail
    assert case.state == "awaiting_confirmation"  # a warning never blocks
    assert verify_chain(session).ok


def test_no_already_certified_within_the_renewal_window(session, frozen_clock,
                                                         ca_state) -> None:
    _certify(session, ca_state, "XM-2025-0900", years=1)  # until 2027-11-25
    session.commit()
    frozen_clock.current = datetime(2027, 9, 20, tzinfo=UTC)  # 66 days left: a renewal
    case = CaseStore(session).record_facts(_message(session, 1), _application())
    session.commit()
    assert _open(case) == {} and case.state == "awaiting_confirmation"


def test_revoked_or_expired_certificates_do_not_count(session, frozen_clock, ca_state) -> None:
    from mailbot.pki.models import IssuedCertificate
    _certify(session, ca_state, "XM-2025-0900")
    for row in session.scalars(select(IssuedCertificate)):
        row.revoked_at = frozen_clock.current
    session.commit()
    case = CaseStore(session).record_facts(_message(session, 1), _application())
    assert "already_certified" not in _open(case)


def test_renamed_organisation_same_code_other_name(session, frozen_clock, ca_state) -> None:
    serial = _certify(session, ca_state, "XM-2025-0900")
    session.commit()
    case = CaseStore(session).record_facts(
        _message(session, 1), _application(applicant_org="厦门新名称科技有限公司"))
    session.commit()
    found = _open(case)
    assert set(found) == {"renamed_organisation"}  # not already_certified: another name
    [f] = found["renamed_organisation"]
    assert (f.facts["serial"], f.facts["old_name"], f.facts["new_name"]) == \
        (serial, ORG, "厦门新名称科技有限公司")


def test_certificate_without_serial_number_is_found_through_its_case(session, frozen_clock,
                                                                     ca_state) -> None:
    """A certificate whose subject carries no serialNumber (issued before it was written) is
    matched on the fields of the case it was issued for."""
    approved = approved_case(session, "XM-2025-0901", company=ORG)
    approved.fields.append(CaseField(key="org_code", value=ORG_CODE))
    session.flush()
    pub = sm2.public_key_of(sm2.generate_private_key())
    issue_approved(session, ca_state, "XM-2025-0901", pub, {"O": ORG}, validity_years=2)
    session.commit()
    [cert] = known_certificates(session, [ORG_CODE], []).for_case(ORG_CODE, None,
                                                                 kinds=("sign",))
    assert (cert.org_code, cert.organisation) == (ORG_CODE, ORG)
    case = CaseStore(session).record_facts(
        _message(session, 1), _application(applicant_org="厦门改名科技有限公司"))
    assert set(_open(case)) == {"renamed_organisation"}


def test_a_batch_looks_certificates_up_once(session, engine, frozen_clock, ca_state) -> None:
    _certify(session, ca_state, "XM-2025-0900")
    session.commit()
    reads: list[str] = []

    def count(_conn, _cur, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "pki_certificates" in statement:
            reads.append(statement)

    items = [(_message(session, n), _application(org_code=code))
             for n, code in enumerate((ORG_CODE, BAD_CODE, ORG_CODE, "12345"), 1)]
    event.listen(engine, "before_cursor_execute", count)
    try:
        cases = CaseStore(session).record_many(items)
        session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(reads) == 1
    assert ["already_certified" in _open(c) for c in cases] == [True, True, True, True]


# -- a reply joins: the rules run on the whole case ----------------------------------------
def test_a_reply_runs_the_rules_on_the_case(session, frozen_clock, ca_state) -> None:
    store = CaseStore(session)
    case = store.record_facts(_message(session, 1), _application(email="bad address"))
    session.commit()
    assert set(_open(case)) == {"email_invalid"} and case.state == "incomplete"
    _certify(session, ca_state, "XM-2025-0900")  # issued meanwhile (say, another case)
    session.commit()
    for n in (2, 3):  # the same reply twice: nothing is repeated
        store.record_facts(_message(session, n), MessageFacts(
            kind="reply", case_ref=case.ref, form={"email": "cert@example.cn"},
            from_addr="cert@example.cn"))
        session.commit()
        found = _open(case)
        assert set(found) == {"already_certified"} and len(found["already_certified"]) == 1
        assert case.state == "awaiting_confirmation"


# -- staff edit and override: the rules run again -----------------------------------------
def test_edit_of_org_code_resolves_org_code_invalid(session, frozen_clock) -> None:
    case = CaseStore(session).record_facts(_message(session, 1),
                                           _application(org_code=BAD_CODE))
    session.commit()
    assert set(_open(case)) == {"org_code_invalid"} and case.state == "incomplete"
    workflow.edit(session, case, {"org_code": ORG_CODE}, by="张三")
    session.commit()
    assert _open(case) == {} and case.state == "awaiting_confirmation"
    old = next(f for f in case.findings if f.code == "org_code_invalid")
    assert old.resolved_at == frozen_clock.current and old.overridden_by is None
    last = session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                           .order_by(AuditEntry.id.desc())).first()
    assert (last.action, last.to_state) == ("reassess", "awaiting_confirmation")
    assert "-org_code_invalid" in last.reason
    # and back: a wrong code typed in is found again
    workflow.edit(session, case, {"org_code": BAD_CODE}, by="张三")
    assert set(_open(case)) == {"org_code_invalid"} and case.state == "incomplete"
    assert verify_chain(session).ok


def test_edit_that_leaves_another_blocking_finding_stays_incomplete(session,
                                                                    frozen_clock) -> None:
    case = CaseStore(session).record_facts(
        _message(session, 1), _application(org_code=BAD_CODE, handler_phone="0592-5653395"))
    assert set(_open(case)) == {"org_code_invalid", "phone_not_mobile"}
    workflow.edit(session, case, {"org_code": ORG_CODE}, by="张三")
    assert set(_open(case)) == {"phone_not_mobile"} and case.state == "incomplete"


def test_edit_brings_in_the_database_rules(session, frozen_clock, ca_state) -> None:
    _certify(session, ca_state, "XM-2025-0900")
    session.commit()
    case = CaseStore(session).record_facts(_message(session, 1),
                                           _application(org_code=BAD_CODE))
    assert "renamed_organisation" not in _open(case)
    workflow.edit(session, case, {"org_code": ORG_CODE, "applicant_org": "厦门另名有限公司"},
                  by="张三")
    # the mail's subject still names the old company: company_mismatch (warn) as well
    assert set(_open(case)) == {"renamed_organisation", "company_mismatch"}
    assert case.state == "awaiting_confirmation"


def test_an_override_is_never_undone(session, frozen_clock) -> None:
    store = CaseStore(session)
    case = store.record_facts(_message(session, 1), _application(org_code=BAD_CODE))
    session.commit()
    workflow.override(session, case, "org_code_invalid", by="张三",
                      reason="the licence shows this code; checked by phone")
    assert case.state == "awaiting_confirmation" and _open(case) == {}
    # another edit, a reply re-sending the same code, the override again: nothing reopens
    workflow.edit(session, case, {"handler_name": "赵六"}, by="李四")
    store.record_facts(_message(session, 2), MessageFacts(
        kind="reply", case_ref=case.ref, form={"org_code": BAD_CODE},
        from_addr="cert@example.cn"))
    session.commit()
    assert _open(case) == {} and case.state == "awaiting_confirmation"
    [f] = [f for f in case.findings if f.code == "org_code_invalid"]
    assert (f.overridden_by, f.resolved_at) == ("张三", None)
    # staff fixing the field leaves the overridden finding as it is (overridden, not resolved)
    workflow.edit(session, case, {"org_code": ORG_CODE}, by="李四")
    assert (f.overridden_by, f.resolved_at) == ("张三", None)
    assert _open(case) == {} and case.state == "awaiting_confirmation"


def test_case_view_gathers_the_case(session, frozen_clock, ca_state) -> None:
    serial = _certify(session, ca_state, "XM-2025-0900")
    store = CaseStore(session)
    first = _application()
    first.attachments = [_att(name, *materials) for name, materials in FILES[:-1]]
    case = store.record_facts(_message(session, 1), first)
    store.record_facts(_message(session, 2, sender="other@example.cn"), MessageFacts(
        kind="reply", case_ref=case.ref, attachments=[_att("s.csr", "csr")],
        form={"handler_phone": "13900139000"}))
    workflow.edit(session, case, {"handler_name": "赵六"}, by="张三")
    view = case_view(session, case)
    assert view.kind == "new" and view.database and view.now == frozen_clock.current
    assert view.form["handler_name"] == "赵六" and view.form["handler_phone"] == "13900139000"
    assert view.materials_present == set(ALL)
    assert view.sender == "other@example.cn"
    assert [c.serial for c in view.known_certificates if c.kind == "sign"] == [serial]
    # the case's own certificates are not another application's
    assert not case_view(session, session.scalars(
        select(Case).where(Case.ref == "XM-2025-0900")).one()).known_certificates


# -- the request's names against the form, from what the case keeps ---------------------------
SERVER_CN = "server.example.cn"


def _request(cn: str = ORG, o: str = ORG, *, quirk: bool = False) -> CsrReport:
    """A valid SM2 request's report; `quirk`: its CN as a BMPString (csr_encoding_quirk)."""
    d = sm2.generate_private_key()
    subject = name(("2.5.4.6", "CN", der.PRINTABLE_STRING), ("2.5.4.10", o, der.UTF8_STRING),
                   ("2.5.4.3", cn, der.BMP_STRING if quirk else der.UTF8_STRING))
    return check_csr(request(d, info(sm2.public_key_of(d), subject=subject)))


def _with_request(report: CsrReport, **fields: str) -> MessageFacts:
    facts = MessageFacts(kind="new", company=ORG, subject=f"{ORG}+数字证书申办",
                         from_addr="cert@example.cn", form=form(**fields),
                         attachments=[_att(name, *materials) for name, materials in FILES],
                         csr=report)
    judge_message(facts)
    return facts


def _codes(case: Case) -> list[str]:
    return sorted(f.code for f in workflow.open_findings(case))


def test_edit_of_the_common_name_fixes_cn_mismatch(session, frozen_clock) -> None:
    case = CaseStore(session).record_facts(
        _message(session, 1), _with_request(_request(cn=SERVER_CN, quirk=True)))
    session.commit()
    assert _codes(case) == ["cn_mismatch", "csr_encoding_quirk"]
    quirk = next(f for f in case.findings if f.code == "csr_encoding_quirk")
    # staff type in the form's 通用名: the request's CN (kept in the message's facts) agrees
    workflow.edit(session, case, {"common_name": SERVER_CN}, by="张三")
    session.commit()
    assert _codes(case) == ["csr_encoding_quirk"]
    old = next(f for f in case.findings if f.code == "cn_mismatch")
    assert old.resolved_at == frozen_clock.current
    # a wrong 通用名 typed in raises it again, naming both values
    workflow.edit(session, case, {"common_name": "www.example.cn"}, by="张三")
    [again] = _open(case)["cn_mismatch"]
    assert (again.facts["csr_cn"], again.facts["form_cn"]) == (SERVER_CN, "www.example.cn")
    # the request's own finding (needs its bytes) is neither lost nor repeated
    assert [f for f in case.findings if f.code == "csr_encoding_quirk"] == [quirk]
    assert quirk.resolved_at is None
    assert case.state == "awaiting_confirmation" and verify_chain(session).ok


def test_edit_of_the_applicant_org_introduces_company_mismatch(session, frozen_clock) -> None:
    case = CaseStore(session).record_facts(_message(session, 1),
                                           _with_request(_request(cn=ORG, o=ORG)))
    session.commit()
    assert _codes(case) == []
    other = "厦门另一家科技有限公司"  # the 通用名 stays the request's CN: only the company
    workflow.edit(session, case, {"applicant_org": other, "common_name": ORG}, by="张三")
    session.commit()
    found = _open(case)
    assert set(found) == {"company_mismatch"}
    assert sorted((f.facts["where"], f.facts["value"]) for f in found["company_mismatch"]) == \
        [("csr", ORG), ("subject", ORG)]
    assert case.state == "awaiting_confirmation"  # a warning never blocks
    workflow.edit(session, case, {"applicant_org": ORG}, by="张三")
    assert _codes(case) == []


def test_a_reply_without_a_request_keeps_the_requests_verdict(session, frozen_clock) -> None:
    store = CaseStore(session)
    case = store.record_facts(_message(session, 1),
                              _with_request(_request(cn=SERVER_CN), email="bad address"))
    session.commit()
    assert _codes(case) == ["cn_mismatch", "email_invalid"]
    store.record_facts(_message(session, 2), MessageFacts(
        kind="reply", case_ref=case.ref, form={"email": "cert@example.cn"},
        from_addr="cert@example.cn", subject=f"Re: [{case.ref}] 材料需补正"))
    session.commit()
    assert _codes(case) == ["cn_mismatch"] and len(_open(case)["cn_mismatch"]) == 1
    # a reply bringing a new request whose CN is right resolves it
    reply = MessageFacts(kind="reply", case_ref=case.ref, from_addr="cert@example.cn",
                         attachments=[_att("new.csr", "csr")], csr=_request(cn=ORG))
    store.record_facts(_message(session, 3), reply)
    session.commit()
    assert _codes(case) == []


def test_overrides_of_request_findings_are_never_undone(session, frozen_clock) -> None:
    case = CaseStore(session).record_facts(
        _message(session, 1), _with_request(_request(cn=SERVER_CN, o="云帆")))
    session.commit()
    assert _codes(case) == ["cn_mismatch", "company_mismatch"]
    workflow.override(session, case, "cn_mismatch", by="张三", reason="CN is the host name")
    workflow.override(session, case, "company_mismatch", by="张三", reason="short name, checked")
    for values in ({"handler_name": "赵六"}, {"common_name": SERVER_CN},
                   {"common_name": ""}, {"applicant_org": ORG}):
        workflow.edit(session, case, values, by="李四")
        session.commit()
        assert _codes(case) == [], values
        for f in case.findings:
            assert (f.overridden_by, f.resolved_at) == ("张三", None), f.code
    assert len(case.findings) == 2
