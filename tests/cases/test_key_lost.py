"""The staff's key-loss mark (须知四): `workflow.mark_key_lost` on a revocation, kept as its
audit row, read by the case view; the rules then find key_compromise (urgent, keyCompromise)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailbot.app.issuance_job import revocation_reason
from mailbot.cases import workflow
from mailbot.cases.audit import KEY_LOST, key_lost_mark, verify_chain
from mailbot.cases.models import AuditEntry, Case, CaseFinding
from mailbot.cases.store import CaseStore
from mailbot.cases.view import case_view
from mailbot.cases.workflow import TransitionRefused
from mailbot.intake.facts import FORM_KEYS, MessageFacts
from mailbot.intake.models import Message
from mailbot.rules.judge import judge_message
from tests.cases.forms import ORG, form
from tests.support.cases import attachment

REVOKE_FILES = [("申请表.pdf", ("application_form",)), ("营业执照.pdf", ("business_licence",)),
                ("法人及经办人身份证.pdf", ("legal_rep_id", "handler_id")),
                ("sign.cer", ("certificate",))]
NEW_FILES = [*REVOKE_FILES[:3], ("认证证书.pdf", ("crypto_product_cert",)),
             ("server.csr", ("csr",))]


def _message(session, n: int, subject: str) -> Message:
    m = Message(source="maildir:/x", source_key=f"k{n}", size=100, message_id=f"<m{n}@x>",
                subject=subject, from_addr="cert@example.cn")
    session.add(m)
    session.flush()
    return m


def _case(session, *, kind: str = "revoke", body: str = "", n: int = 1) -> Case:
    """A complete application as the analysis worker hands it over, recorded."""
    wording = "数字证书注销" if kind == "revoke" else "数字证书申办"
    subject = f"{ORG}+{wording}"
    facts = MessageFacts(kind=kind, company=ORG, subject=subject, text_body=body,
                         from_addr="cert@example.cn",
                         form=form(application_type=kind, revoke_serial="7e2a09c4")
                         if kind == "revoke" else form(),
                         attachments=[attachment(name, *m)
                                      for name, m in (REVOKE_FILES if kind == "revoke"
                                                      else NEW_FILES)])
    judge_message(facts)
    case = CaseStore(session).record_facts(_message(session, n, subject), facts)
    session.commit()
    return case


def _open(case: Case) -> list[CaseFinding]:
    return [f for f in workflow.open_findings(case) if f.code == "key_compromise"]


def test_mark_raises_key_compromise_urgent_and_keycompromise(session, frozen_clock) -> None:
    case = _case(session)
    assert case.state == "awaiting_confirmation" and _open(case) == []
    assert not workflow.is_urgent(case) and revocation_reason(case) == "cessationOfOperation"
    assert workflow.mark_key_lost(session, case, by="张三", reason="电话告知：服务器硬盘损坏") \
        is None
    session.commit()
    [f] = _open(case)
    assert f.severity == "warn" and "marked by staff" in f.detail
    assert f.facts["marked_by_staff"] is True and f.facts["reason"] == "keyCompromise"
    assert workflow.is_urgent(case) and workflow.urgent_case_ids(session) == {case.id}
    assert revocation_reason(case) == "keyCompromise"
    assert case.state == "awaiting_confirmation"  # a warning never blocks
    mark = key_lost_mark(session, case)
    assert (mark.actor, mark.action, mark.via, mark.reason) == \
        ("张三", KEY_LOST, "cli", "电话告知：服务器硬盘损坏")
    assert case_view(session, case).key_loss_marked
    # the mark is no form field: nothing of it among the case's fields
    assert {f.key for f in case.fields} <= set(FORM_KEYS)
    # the rules again (an edit): the finding stays, once
    workflow.edit(session, case, {"handler_name": "赵六"}, by="李四")
    assert _open(case) == [f] and len([x for x in case.findings
                                        if x.code == "key_compromise"]) == 1
    assert verify_chain(session).ok


def test_refused_for_a_new_application_twice_or_when_settled(session, frozen_clock) -> None:
    new = _case(session, kind="new")
    with pytest.raises(TransitionRefused, match="only a revocation"):
        workflow.mark_key_lost(session, new, by="张三")
    case = _case(session, n=2)
    with pytest.raises(TransitionRefused, match="staff member"):
        workflow.mark_key_lost(session, case, by="system")
    workflow.mark_key_lost(session, case, by="张三")
    with pytest.raises(TransitionRefused, match="was marked key lost by 张三"):
        workflow.mark_key_lost(session, case, by="李四")
    closed = _case(session, n=3)
    workflow.close(session, closed, by="张三", reason="申请人撤回")
    with pytest.raises(TransitionRefused, match="is closed: too late"):
        workflow.mark_key_lost(session, closed, by="张三")
    session.commit()
    marks = session.scalars(select(AuditEntry).where(AuditEntry.action == KEY_LOST)).all()
    assert [m.case_id for m in marks] == [case.id]
    assert _open(new) == [] and _open(closed) == []


def test_an_approved_revocation_can_still_be_marked(session, frozen_clock) -> None:
    case = _case(session)
    workflow.approve(session, case, by="张三")
    assert case.state == "approved" and revocation_reason(case) == "cessationOfOperation"
    workflow.mark_key_lost(session, case, by="李四")
    session.commit()
    assert case.state == "approved" and len(_open(case)) == 1
    assert workflow.is_urgent(case) and revocation_reason(case) == "keyCompromise"
    workflow.transition(session, case, "revoked", actor="system", via="system")
    assert not workflow.is_urgent(case)  # done: no longer waiting for anyone
    assert workflow.urgent_case_ids(session) == set()


def test_words_in_the_body_survive_the_rules_and_the_mark_joins_them(session,
                                                                     frozen_clock) -> None:
    case = _case(session, body="我司服务器私钥丢失，申请注销证书。")
    [words] = _open(case)
    assert "丢失" in words.detail and not words.facts["marked_by_staff"]
    assert workflow.is_urgent(case)
    # the body is not kept: the rules read the words from the message's recorded verdict
    workflow.edit(session, case, {"handler_name": "赵六"}, by="李四")
    assert _open(case) == [words] and words.resolved_at is None
    workflow.mark_key_lost(session, case, by="张三")
    [both] = _open(case)
    assert "丢失; marked by staff" in both.detail and words.resolved_at is not None


def test_a_mark_after_an_override_is_staffs_later_word(session, frozen_clock) -> None:
    case = _case(session, body="私钥未泄露，正常注销")  # negation is not understood
    workflow.override(session, case, "key_compromise", by="张三",
                      reason="申请人电话确认私钥未泄露")
    assert _open(case) == [] and revocation_reason(case) == "cessationOfOperation"
    workflow.edit(session, case, {"handler_name": "赵六"}, by="李四")
    assert _open(case) == []  # never raised again by the words
    workflow.mark_key_lost(session, case, by="王五", reason="再次来电：私钥确已泄露")
    assert len(_open(case)) == 1 and revocation_reason(case) == "keyCompromise"


def test_with_the_rule_switched_off_the_mark_is_kept_but_finds_nothing(session,
                                                                        frozen_clock) -> None:
    case = _case(session)
    off = {"rules": {"key_compromise": {"enabled": False}}}
    workflow.mark_key_lost(session, case, by="张三", settings=off)
    assert key_lost_mark(session, case) is not None
    assert _open(case) == [] and not workflow.is_urgent(case)
    assert revocation_reason(case) == "cessationOfOperation"
