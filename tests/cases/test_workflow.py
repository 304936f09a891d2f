"""The workflow: every allowed transition, every forbidden one, and the staff actions."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from mailbot.cases import workflow
from mailbot.cases.approval import approval_for_case
from mailbot.cases.audit import verify_chain
from mailbot.cases.models import CASE_STATES, AuditEntry, Case, CaseField, CaseFinding, CaseNotice
from mailbot.cases.store import CaseStore
from mailbot.cases.workflow import TRANSITIONS, Policy, TransitionRefused
from mailbot.intake.facts import MessageFacts
from mailbot.pki import sm2
from tests.cases.forms import form
from tests.support.cases import attachment, recorded_message

_PUB = sm2.public_key_of(sm2.generate_private_key())
ALL = ["application_form", "business_licence", "legal_rep_id", "handler_id",
       "crypto_product_cert", "csr"]
_refs = itertools.count(1)


def _case(session, state: str, kind: str = "new") -> Case:
    case = Case(ref=f"XM-2026-{next(_refs):04d}", kind=kind, state=state, company="厦门测试有限公司")
    session.add(case)
    session.flush()
    return case


def _rows(session, case: Case) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                                .order_by(AuditEntry.id)))


def _notices(session, case: Case) -> list[tuple[str, str]]:
    session.flush()
    return [(n.template, n.recipients) for n in session.scalars(
        select(CaseNotice).where(CaseNotice.case_id == case.id).order_by(CaseNotice.id))]


@pytest.mark.parametrize(("source", "target"), sorted(TRANSITIONS))
def test_every_allowed_transition(session, frozen_clock, source: str, target: str) -> None:
    edge = TRANSITIONS[(source, target)]
    case = _case(session, source, kind=edge.kinds[0])
    actor = "张三" if edge.staff else "system"
    notice = workflow.transition(session, case, target, actor=actor, via="cli",
                                 reason="because")
    session.commit()
    assert case.state == target and case.state_changed_at == frozen_clock.current
    [row] = _rows(session, case)
    assert (row.actor, row.from_state, row.to_state, row.reason, row.via) == \
        (actor, source, target, "because", "cli")
    assert notice == edge.notice
    expected = [(edge.notice.template, edge.notice.recipients)] if edge.notice else []
    assert _notices(session, case) == expected
    assert verify_chain(session).ok


FORBIDDEN = [(a, b) for a in CASE_STATES for b in CASE_STATES if (a, b) not in TRANSITIONS]


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_every_forbidden_transition_is_refused(session, frozen_clock, source: str,
                                               target: str) -> None:
    for kind in ("new", "revoke"):
        case = _case(session, source, kind=kind)
        with pytest.raises(TransitionRefused, match=case.ref):
            workflow.transition(session, case, target, actor="张三", via="cli")
        assert case.state == source and _rows(session, case) == []


def test_the_table_knows_every_state_and_ends_nowhere_else() -> None:
    states = set(CASE_STATES)
    assert {s for pair in TRANSITIONS for s in pair} <= states
    for final in ("rejected", "closed", "expired", "delivered"):
        assert not [t for (f, t) in TRANSITIONS if f == final]


@pytest.mark.parametrize(("source", "target"),
                         sorted(k for k, e in TRANSITIONS.items() if e.staff))
def test_staff_steps_refuse_automatic_actors(session, frozen_clock, source, target) -> None:
    case = _case(session, source)
    for actor in ("system", "message:7", " "):
        with pytest.raises(TransitionRefused):
            workflow.transition(session, case, target, actor=actor, via="system")
    assert case.state == source


def test_issued_only_for_new_revoked_only_for_revoke(session, frozen_clock) -> None:
    new, revoke = _case(session, "approved", "new"), _case(session, "approved", "revoke")
    with pytest.raises(TransitionRefused, match="revoke application"):
        workflow.transition(session, revoke, "issued", actor="system", via="system")
    with pytest.raises(TransitionRefused, match="new application"):
        workflow.transition(session, new, "revoked", actor="system", via="system")
    assert workflow.transition(session, revoke, "revoked", actor="system",
                               via="system") == workflow.REVOKED


def test_unknown_channel_is_refused(session, frozen_clock) -> None:
    case = _case(session, "received")
    with pytest.raises(ValueError):
        workflow.transition(session, case, "incomplete", actor="system", via="fax")


# -- approval -------------------------------------------------------------------------------
def _blocking(case: Case, code: str = "phone_not_mobile", severity: str = "reject") -> None:
    case.findings.append(CaseFinding(code=code, severity=severity, detail="d", facts={}))


def test_approve_refused_while_a_blocking_finding_is_open(session, frozen_clock) -> None:
    case = _case(session, "awaiting_confirmation")
    _blocking(case)
    case.findings.append(CaseFinding(code="cn_mismatch", severity="warn", detail="w", facts={}))
    with pytest.raises(TransitionRefused, match="phone_not_mobile"):
        workflow.approve(session, case, by="张三")
    assert case.state == "awaiting_confirmation"


def test_override_then_approve_with_checklist(session, frozen_clock) -> None:
    case = CaseStore(session).record_facts(recorded_message(session, 1), MessageFacts(
        kind="new", attachments=[attachment(f"{m}.pdf", m) for m in ALL], form=form()))
    _blocking(case, "csr_duplicate_key")
    assert workflow.override(session, case, "csr_duplicate_key", by="张三",
                             reason="old key reused on purpose") is None
    f = next(f for f in case.findings if f.code == "csr_duplicate_key")
    assert (f.overridden_by, f.override_reason) == ("张三", "old key reused on purpose")
    assert workflow.approve(session, case, by="李四",
                            checklist=["stamps_ok", "signature_ok"]) is None
    session.commit()
    assert case.state == "approved" and case.confirmed_by == "李四"
    last = _rows(session, case)[-1]
    assert (last.action, last.actor, last.to_state, last.via) == \
        ("approve", "李四", "approved", "cli")
    assert "stamps_ok, signature_ok" in last.reason
    assert approval_for_case(session, case.ref, _PUB).staff == "李四"


def test_override_refused_without_such_open_finding_or_reason(session, frozen_clock) -> None:
    case = _case(session, "incomplete")
    with pytest.raises(TransitionRefused, match="no open finding"):
        workflow.override(session, case, "csr_not_sm2", by="张三", reason="x")
    _blocking(case, "csr_not_sm2")
    with pytest.raises(TransitionRefused, match="reason"):
        workflow.override(session, case, "csr_not_sm2", by="张三", reason="  ")
    closed = _case(session, "closed")
    _blocking(closed, "csr_not_sm2")
    with pytest.raises(TransitionRefused, match="closed"):
        workflow.override(session, closed, "csr_not_sm2", by="张三", reason="x")


def test_two_person_rule(session, frozen_clock) -> None:
    two = Policy(approvals_required=2)
    case = _case(session, "awaiting_confirmation")
    assert workflow.approve(session, case, by="张三", policy=two) is None
    assert case.state == "awaiting_confirmation"
    with pytest.raises(TransitionRefused, match="another staff member"):
        workflow.approve(session, case, by="张三", policy=two)
    workflow.approve(session, case, by="李四", policy=two)
    session.commit()
    assert case.state == "approved"
    approvals = [r for r in _rows(session, case) if r.action == "approve"]
    assert [(r.actor, r.to_state) for r in approvals] == [("张三", None), ("李四", "approved")]
    assert "(2 of 2)" in approvals[1].reason
    assert approval_for_case(session, case.ref, _PUB).staff == "李四"


def test_two_person_rejection_by_anyone_ends_the_case(session, frozen_clock) -> None:
    two = Policy(approvals_required=2)
    case = _case(session, "awaiting_confirmation")
    workflow.approve(session, case, by="张三", policy=two)
    assert workflow.reject(session, case, by="李四", reason="印章不清") == workflow.REJECTED
    assert case.state == "rejected"
    with pytest.raises(TransitionRefused):
        workflow.approve(session, case, by="王五", policy=two)


def test_approvals_of_an_earlier_round_do_not_count(session, frozen_clock) -> None:
    two = Policy(approvals_required=2)
    case = _case(session, "awaiting_confirmation")
    workflow.approve(session, case, by="张三", policy=two)
    workflow.transition(session, case, "incomplete", actor="system", via="system")
    workflow.transition(session, case, "awaiting_confirmation", actor="system", via="system")
    workflow.approve(session, case, by="李四", policy=two)
    assert case.state == "awaiting_confirmation"  # 张三's approval was for the old round
    workflow.approve(session, case, by="张三", policy=two)
    assert case.state == "approved"


def test_mailbox_approval_counts_as_one(session, frozen_clock) -> None:
    two = Policy(approvals_required=2)
    case = _case(session, "awaiting_confirmation")
    workflow.approve(session, case, by=two.mailbox_actor, via="mailbox", policy=two)
    workflow.approve(session, case, by="张三", policy=two)
    assert case.state == "approved"
    assert [r.via for r in _rows(session, case)] == ["mailbox", "cli"]


@pytest.mark.parametrize("state", ["received", "incomplete", "approved", "issued", "delivered",
                                   "rejected", "revoked", "closed", "expired"])
def test_approve_refused_in_other_states(session, frozen_clock, state) -> None:
    case = _case(session, state)
    with pytest.raises(TransitionRefused):
        workflow.approve(session, case, by="张三")
    assert case.state == state


# -- other staff actions --------------------------------------------------------------------
def test_reject_and_close_need_a_reason_and_a_name(session, frozen_clock) -> None:
    case = _case(session, "incomplete")
    with pytest.raises(TransitionRefused, match="reason"):
        workflow.reject(session, case, by="张三", reason="")
    with pytest.raises(TransitionRefused, match="staff"):
        workflow.close(session, case, by="system", reason="x")
    assert workflow.close(session, case, by="张三", reason="revoked at the issuing CA") is None
    assert case.state == "closed" and _rows(session, case)[-1].reason == \
        "revoked at the issuing CA"


def test_confirm_once_in_an_open_state(session, frozen_clock) -> None:
    case = _case(session, "awaiting_confirmation")
    workflow.confirm(session, case, by="张三")
    assert case.confirmed_by == "张三" and case.state == "awaiting_confirmation"
    with pytest.raises(TransitionRefused, match="confirmed by 张三"):
        workflow.confirm(session, case, by="李四")
    with pytest.raises(TransitionRefused):
        workflow.confirm(session, _case(session, "delivered"), by="张三")
    row = _rows(session, case)[-1]
    assert (row.action, row.to_state, row.via) == ("confirm", None, "cli")


def test_called_moves_a_delivered_case_off_the_to_call_list(session, frozen_clock) -> None:
    waiting, other = _case(session, "delivered"), _case(session, "issued")
    assert workflow.to_call(session) == [waiting]
    with pytest.raises(TransitionRefused, match="only a delivered case"):
        workflow.called(session, other, by="张三")
    workflow.called(session, waiting, by="张三")
    assert workflow.to_call(session) == [] and waiting.called_by == "张三"
    with pytest.raises(TransitionRefused, match="was called"):
        workflow.called(session, waiting, by="张三")


def test_incomplete_cases_expire(session, frozen_clock) -> None:
    old = _case(session, "received")
    workflow.transition(session, old, "incomplete", actor="system", via="system")
    frozen_clock.advance(days=20)
    young = _case(session, "received")
    workflow.transition(session, young, "incomplete", actor="system", via="system")
    frozen_clock.advance(days=11)
    assert workflow.expire_incomplete(session, Policy(incomplete_expiry_days=0)) == []
    assert workflow.expire_incomplete(session, Policy(incomplete_expiry_days=30)) == [old]
    assert (old.state, young.state) == ("expired", "incomplete")
    assert _notices(session, old)[-1] == ("expired", "sender")
    assert _rows(session, old)[-1].actor == "system"


# -- intake through the workflow ------------------------------------------------------------
def test_opening_and_replies_record_one_notice_per_message(session, frozen_clock) -> None:
    store = CaseStore(session)
    m1 = recorded_message(session, 1)
    case = store.record_facts(m1, MessageFacts(
        kind="new", company="厦门测试有限公司", form=form(),
        attachments=[attachment(f"{m}.pdf", m) for m in ALL[:-1]]))
    session.commit()
    assert case.state == "incomplete" and case.state_changed_at == frozen_clock.current
    rows = _rows(session, case)
    assert [(r.action, r.via) for r in rows] == [("open", "system"), ("intake_check", "system")]
    [n1] = session.scalars(select(CaseNotice).where(CaseNotice.case_id == case.id)).all()
    assert (n1.template, n1.message_row_id, n1.audit_hash) == ("incomplete", m1.id, rows[1].hash)

    m2 = recorded_message(session, 2)  # brings nothing new: still incomplete, answered again
    store.record_facts(m2, MessageFacts(kind="reply", case_ref=case.ref))
    m3 = recorded_message(session, 3)
    store.record_facts(m3, MessageFacts(kind="reply", case_ref=case.ref,
                                        attachments=[attachment("r.csr", "csr")]))
    session.commit()
    assert case.state == "awaiting_confirmation"
    notices = session.scalars(select(CaseNotice).where(CaseNotice.case_id == case.id)
                              .order_by(CaseNotice.id)).all()
    assert [(n.template, n.message_row_id) for n in notices] == \
        [("incomplete", m1.id), ("incomplete", m2.id), ("acknowledgement", m3.id)]
    assert verify_chain(session).ok


def test_overridden_missing_material_is_not_asked_for_again(session, frozen_clock) -> None:
    store = CaseStore(session)
    case = store.record_facts(recorded_message(session, 1), MessageFacts(
        kind="revoke", form=form(),
        attachments=[attachment("a.pdf", "application_form", "business_licence", "legal_rep_id",
                          "handler_id")]))
    session.commit()
    assert case.state == "incomplete"
    workflow.override(session, case, "missing_material", by="张三",
                      reason="certificate file lost; serial 1A issued by us to the same code")
    assert case.state == "awaiting_confirmation"
    store.record_facts(recorded_message(session, 2), MessageFacts(kind="reply", case_ref=case.ref))
    session.commit()
    assert case.state == "awaiting_confirmation"
    assert [f.code for f in workflow.blocking_findings(case)] == []


def test_edit_wins_over_later_forms_and_reassesses(session, frozen_clock) -> None:
    store = CaseStore(session)
    case = store.record_facts(recorded_message(session, 1), MessageFacts(
        kind="new", attachments=[attachment(f"{m}.pdf", m) for m in ALL],
        form={"org_code": "wrong"}))
    session.commit()
    assert case.state == "awaiting_confirmation"
    workflow.edit(session, case, {"org_code": "91350200MA2Y00000A", "applicant_org": "厦门新名"},
                  by="张三")
    assert case.company == "厦门新名"
    store.record_facts(recorded_message(session, 2), MessageFacts(
        kind="reply", case_ref=case.ref, form={"org_code": "again wrong"}))
    session.commit()
    fields = {f.key: (f.value, f.source, f.set_by) for f in session.scalars(select(CaseField))}
    assert fields["org_code"] == ("91350200MA2Y00000A", "staff", "张三")
    edit_row = next(r for r in _rows(session, case) if r.action == "edit")
    assert "org_code: 'wrong' -> '91350200MA2Y00000A'" in edit_row.reason
    with pytest.raises(ValueError, match="unknown form key"):
        workflow.edit(session, case, {"nonsense": "1"}, by="张三")
    workflow.close(session, case, by="张三", reason="x")
    with pytest.raises(TransitionRefused):
        workflow.edit(session, case, {"email": "a@b.cn"}, by="张三")
