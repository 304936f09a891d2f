"""CaseStore: numbering, opening a case from an application, a reply joining it."""

from __future__ import annotations

from sqlalchemy import select

from mailbot.cases.audit import verify_chain
from mailbot.cases.models import Case, CaseField
from mailbot.cases.store import CaseStore
from mailbot.findings import Finding
from mailbot.intake.facts import MessageFacts
from mailbot.intake.models import Message
from tests.cases.forms import form
from tests.support.cases import attachment, recorded_message

ALL_BUT_CSR = ["application_form", "business_licence", "legal_rep_id", "handler_id",
               "crypto_product_cert"]


def test_refs_count_up_per_year(session, frozen_clock) -> None:
    store = CaseStore(session)
    assert store.next_ref() == "XM-2026-0001"
    assert store.next_ref() == "XM-2026-0002"
    assert store.next_ref(2027) == "XM-2027-0001"


def test_application_without_csr_is_incomplete_then_reply_completes_it(session,
                                                                       frozen_clock) -> None:
    store = CaseStore(session)
    first = MessageFacts(
        kind="new", company="厦门某某科技有限公司", from_addr="a@example.cn",
        attachments=[attachment("申请表.docx", "application_form"), attachment("执照.pdf", "business_licence"),
                     attachment("法人及经办人身份证.pdf", "legal_rep_id", "handler_id"),
                     attachment("认证证书.pdf", "crypto_product_cert")],
        form=form(email="a@example.cn"),
        findings=[Finding("missing_material", "missing", "csr missing", {"material": "csr"})])
    case = store.record_facts(recorded_message(session, 1), first)
    session.commit()
    assert case is not None and case.ref == "XM-2026-0001" and case.state == "incomplete"
    assert store.missing_materials(case) == ["csr"]
    assert [f.code for f in case.findings if f.resolved_at is None] == ["missing_material"]

    reply = MessageFacts(kind="reply", case_ref="XM-2026-0001", from_addr="a@example.cn",
                         attachments=[attachment("server.csr", "csr")],
                         form={"email": "other@example.cn"})
    joined = store.record_facts(recorded_message(session, 2), reply)
    session.commit()
    assert joined is case and case.state == "awaiting_confirmation"
    assert store.missing_materials(case) == []
    # the rules ran on the case again: the new address is not the sender's (warn only)
    assert [f.code for f in case.findings if f.resolved_at is None] == \
        ["sender_not_form_address"]
    fields = {f.key: f.value for f in session.scalars(select(CaseField))}
    assert fields["email"] == "other@example.cn"
    assert verify_chain(session).ok


def test_staff_typed_field_is_not_overwritten_by_a_later_form(session, frozen_clock) -> None:
    store = CaseStore(session)
    facts = MessageFacts(kind="revoke", company="X", attachments=[attachment("a.cer", "certificate")],
                         form={"org_code": "91350200MA0000000X"})
    case = store.record_facts(recorded_message(session, 1), facts)
    field = next(f for f in case.fields if f.key == "org_code")
    field.value, field.source = "91350200MA2Y00000A", "staff"
    session.commit()
    store.record_facts(recorded_message(session, 2), MessageFacts(
        kind="reply", case_ref=case.ref, form={"org_code": "wrong"}))
    session.commit()
    assert next(f for f in case.fields if f.key == "org_code").value == "91350200MA2Y00000A"


def test_kinds_that_open_no_case(session, frozen_clock) -> None:
    store = CaseStore(session)
    for n, kind in enumerate(("auto_reply", "bounce", "unrelated")):
        assert store.record_facts(recorded_message(session, n), MessageFacts(kind=kind)) is None
    assert store.record_facts(recorded_message(session, 9),
                              MessageFacts(kind="reply", case_ref="XM-2026-0999")) is None
    session.commit()
    assert session.scalars(select(Case)).all() == []
    # The status is intake's to set (intake.processor); the case side keeps the facts.
    assert all(m.facts is not None for m in session.scalars(select(Message)))


def test_reject_finding_keeps_case_incomplete(session, frozen_clock) -> None:
    store = CaseStore(session)
    facts = MessageFacts(
        kind="new", company="X",
        attachments=[attachment("f", *ALL_BUT_CSR), attachment("s.csr", "csr")], form=form(),
        findings=[Finding("csr_not_sm2", "reject", "RSA-2048 request")])
    case = store.record_facts(recorded_message(session, 1), facts)
    session.commit()
    assert case.state == "incomplete"
    fixed = MessageFacts(kind="reply", case_ref=case.ref, attachments=[attachment("n.csr", "csr")])
    store.record_facts(recorded_message(session, 2), fixed)
    session.commit()
    assert case.state == "awaiting_confirmation"


def test_a_batch_reads_counter_and_audit_head_once_per_transaction(session, engine,
                                                                   frozen_clock) -> None:
    """Numbers and the audit chain are read (and locked) once per transaction, not per case;
    a commit makes the next batch read them again."""
    from sqlalchemy import event

    reads: list[str] = []

    def count(_conn, _cur, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and (
                "case_counters" in statement or "audit_log" in statement):
            reads.append("counter" if "case_counters" in statement else "head")

    event.listen(engine, "before_cursor_execute", count)
    try:
        for batch in range(2):
            items = [(recorded_message(session, 10 * batch + n),
                      MessageFacts(kind="new", company=f"厦门{n}"))
                     for n in range(5)]
            cases = CaseStore(session).record_many(items)
            session.commit()
            assert sorted(reads) == ["counter", "head"]
            reads.clear()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [c.ref for c in cases] == [f"XM-2026-{n:04d}" for n in range(6, 11)]
    assert verify_chain(session).ok
