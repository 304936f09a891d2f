"""A bounce of one of our mails joins that mail's case, audited, without changing its state;
other bounces (and automatic mail) open no case and join none."""

from __future__ import annotations

from sqlalchemy import select

from mailbot.cases.audit import verify_chain
from mailbot.cases.models import AuditEntry, Case, CaseNotice
from mailbot.cases.store import CaseStore
from mailbot.intake.analyse import analyse_message
from mailbot.intake.facts import AttachmentFact, MessageFacts
from tests.support.cases import recorded_message
from tests.support.mailbuilders import CRLF, bounce, multipart, plain, text_part

OURS = "<XM-2026-0001.0a1b2c3d4e5f6789@xmport.example>"
ALL = ["application_form", "business_licence", "legal_rep_id", "handler_id",
       "crypto_product_cert", "csr"]


def _open_case(session) -> Case:
    facts = MessageFacts(kind="new", company="厦门某某科技有限公司", from_addr="a@example.cn",
                         attachments=[AttachmentFact("all.pdf", "application/pdf", 10, ALL,
                                                     "0" * 64)])
    case = CaseStore(session).record_facts(recorded_message(session, 1), facts)
    session.commit()
    assert case is not None and case.state == "awaiting_confirmation"
    return case


def _our_reply(message_id: str = OURS) -> bytes:
    return plain("[XM-2026-0001] 申请已受理", "您的申请已受理。", message_id=message_id,
                 from_addr="xmport <xmport@189.cn>", in_reply_to="<m1@x>", references="<m1@x>")


def _audit(session, case: Case) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                                .order_by(AuditEntry.id)))


def test_analyse_reads_the_returned_message_id_of_a_delivery_report() -> None:
    facts = analyse_message(bounce(_our_reply()))
    assert facts.kind == "bounce"
    assert facts.case_ref == "XM-2026-0001"
    assert facts.returned_message_ids[0] == OURS
    assert facts.to_inspect_json()["case_ref"] == "XM-2026-0001"


def test_analyse_reads_text_rfc822_headers_too() -> None:
    head = [b"Return-Path: <>", b"From: MAILER-DAEMON@189.cn", b"To: xmport@189.cn",
            b"Subject: Delivery Status Notification (Failure)",
            b"Message-ID: <dsn.2@189.cn>", b"MIME-Version: 1.0"]
    headers_part = (b"Content-Type: text/rfc822-headers\r\n\r\n"
                    b"From: xmport@189.cn\r\nSubject: [XM-2026-0001] x\r\n"
                    b"Message-ID: " + OURS.encode() + b"\r\n")
    raw = CRLF.join(head) + CRLF + multipart(
        "report", [text_part("failed", "us-ascii", cte="7bit"), headers_part], "B1",
        "; report-type=delivery-status")
    facts = analyse_message(raw)
    assert facts.kind == "bounce" and facts.case_ref == "XM-2026-0001"


def test_bounce_of_mail_not_ours_cites_no_case() -> None:
    facts = analyse_message(bounce(_our_reply("<plain.1@example.com.cn>")))
    assert facts.kind == "bounce" and facts.case_ref is None


def test_bounce_of_an_unknown_case_cites_none_when_cases_are_looked_up() -> None:
    facts = analyse_message(bounce(_our_reply()), case_exists=lambda ref: False)
    assert facts.kind == "bounce" and facts.case_ref is None


def test_bounce_joins_its_case_without_changing_the_state(session, frozen_clock) -> None:
    case = _open_case(session)
    before = (case.state, case.state_changed_at)
    notices = session.scalars(select(CaseNotice)).all()
    row = recorded_message(session, 2)
    joined = CaseStore(session).record_facts(row, analyse_message(bounce(_our_reply())))
    session.commit()
    assert joined is case
    assert row.case_id == case.id
    assert (case.state, case.state_changed_at) == before
    last = _audit(session, case)[-1]
    assert (last.action, last.actor, last.via) == ("bounce", f"message:{row.id}", "system")
    assert last.to_state is None and OURS in (last.reason or "")
    # nothing is to be answered for a bounce
    assert session.scalars(select(CaseNotice)).all() == notices
    assert verify_chain(session).ok


def test_bounce_citing_ours_in_in_reply_to_joins(session, frozen_clock) -> None:
    case = _open_case(session)
    raw = plain("Undeliverable", "could not deliver", from_addr="postmaster@example.cn",
                message_id="<ndr.1@example.cn>", in_reply_to=OURS)
    facts = analyse_message(raw)
    assert facts.kind == "bounce" and facts.case_ref == "XM-2026-0001"
    row = recorded_message(session, 2)
    assert CaseStore(session).record_facts(row, facts) is case
    session.commit()
    assert row.case_id == case.id and case.state == "awaiting_confirmation"
    assert _audit(session, case)[-1].action == "bounce"


def test_bounce_of_an_unknown_case_or_no_case_joins_nothing(session, frozen_clock) -> None:
    case = _open_case(session)
    rows_before = len(_audit(session, case))
    store = CaseStore(session)
    for n, facts in enumerate([MessageFacts(kind="bounce"),
                               MessageFacts(kind="bounce", case_ref="XM-2026-0999"),
                               MessageFacts(kind="auto_reply", case_ref="XM-2026-0001")], 2):
        assert store.record_facts(recorded_message(session, n), facts) is None
    session.commit()
    assert len(_audit(session, case)) == rows_before
    assert session.scalars(select(Case)).all() == [case]
