"""enqueue: one row per mail in the caller's transaction, and the loop-safety rules decided
there (null, invalid and own addresses, the per-address daily cap in Beijing days)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailbot.outbox import context as ctx
from mailbot.outbox.models import QUEUED, SUPPRESSED, OutboxAttachment, OutboxMessage
from mailbot.outbox.queue import (
    Outgoing,
    address_problem,
    attachments_of,
    enqueue,
    local_midnight,
    sent_today,
)

OURS = ["xmport@189.cn", "XMPort-Staff@189.cn"]
# 10:00 in Beijing; Beijing midnight is 16:00 UTC the day before.
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
_serial = iter(range(1, 10_000))


def _mail(to: list[str] | str = "applicant@example.cn", template: str = ctx.ACKNOWLEDGEMENT,
          **kw: object) -> Outgoing:
    n = next(_serial)
    return Outgoing(template=template, from_addr="xmport@189.cn",
                    to_addrs=[to] if isinstance(to, str) else to,
                    message_id=f"<XM-2026-0007.{n:06d}@189.cn>", **kw)  # type: ignore[arg-type]


def _queue(session: Session, outgoing: Outgoing, *, cap: int = 20,
           now: datetime = NOW) -> OutboxMessage:
    return enqueue(session, outgoing, our_addresses=OURS, daily_cap=cap, now=now)


def test_a_row_and_its_attachments_join_the_callers_transaction(session: Session) -> None:
    files = [("sign.cer", "application/pkix-cert", b"\x30\x82sign"),
             ("envprivatekey", "application/octet-stream", b"\x30\x82env")]
    row = _queue(session, _mail(" <Applicant@Example.CN> ", template=ctx.ISSUED,
                                in_reply_to="<m1@example.cn>", references=["<m1@example.cn>"],
                                context={"ref": "XM-2026-0007", "company": "厦门某某有限公司"},
                                case_ref="XM-2026-0007", attachments=files))
    assert (row.state, row.attempts, row.raw, row.last_error) == (QUEUED, 0, None, None)
    assert row.to_addrs == ["Applicant@Example.CN"]  # trimmed, brackets off, case kept
    assert row.recipient_key == "applicant@example.cn"
    assert row.next_attempt_at == NOW and row.created_at == NOW
    assert row.cap_exempt  # issued is exempt whatever the caller said
    assert [(a.position, a.filename, a.data) for a in attachments_of(session, row)] == [
        (0, "sign.cer", b"\x30\x82sign"), (1, "envprivatekey", b"\x30\x82env")]
    session.rollback()  # nothing was committed: the caller's rollback takes it all back
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert session.scalar(select(func.count()).select_from(OutboxAttachment)) == 0


def test_the_row_survives_the_callers_commit(session: Session) -> None:
    row = _queue(session, _mail(context={"ref": "XM-2026-0007"}, references=["<a@b.cn>"]))
    session.commit()
    session.expire_all()
    again = session.get(OutboxMessage, row.id)
    assert again is not None
    assert (again.context, again.references, again.state) == ({"ref": "XM-2026-0007"},
                                                              ["<a@b.cn>"], QUEUED)


@pytest.mark.parametrize(("to", "reason"), [
    ([], "no recipient"),
    ([""], "null recipient"),
    (["<>"], "null recipient"),
    (["   "], "null recipient"),
    (["not-an-address"], "invalid recipient"),
    (["a@localhost"], "invalid recipient"),
    (["a b@example.cn"], "invalid recipient"),
    (["张三 <a@example.cn>"], "invalid recipient"),
    (["a@example.cn", "a@@example.cn"], "invalid recipient"),
    (["xmport@189.cn"], "our own address"),
    (["XMPORT@189.CN"], "our own address"),
    (["a@example.cn", "<xmport-staff@189.cn>"], "our own address"),
])
def test_loop_safety_suppresses(to: list[str], reason: str, session: Session) -> None:
    row = _queue(session, _mail(to, template=ctx.ISSUED))  # exempt from the cap, not from this
    session.commit()
    assert row.state == SUPPRESSED
    assert row.last_error is not None and row.last_error.startswith("suppressed: ")
    assert reason in row.last_error


@pytest.mark.parametrize("address", ["a@example.cn", "first.last+tag@mail.example.com.cn",
                                     "x_y-z@sub-domain.example.cn", "张三@例子.中国"])
def test_ordinary_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


def test_daily_cap_counts_rows_since_beijing_midnight(session: Session) -> None:
    yesterday = NOW - timedelta(hours=10, minutes=1)  # 23:59 Beijing the day before
    assert _queue(session, _mail("a@example.cn"), cap=3, now=yesterday).state == QUEUED
    states = [_queue(session, _mail("A@Example.cn"), cap=3).state for _ in range(3)]
    assert states == [QUEUED] * 3  # yesterday's row does not count
    over = _queue(session, _mail("a@EXAMPLE.cn"), cap=3)
    assert over.state == SUPPRESSED and "daily cap of 3" in (over.last_error or "")
    # Suppressed rows do not count, exempt rows pass but count, other addresses are apart.
    assert _queue(session, _mail("a@example.cn", template=ctx.REVOKED), cap=3).state == QUEUED
    assert _queue(session, _mail("a@example.cn", cap_exempt=True), cap=4).state == QUEUED
    assert _queue(session, _mail("a@example.cn"), cap=5).state == SUPPRESSED  # 3 + 2 exempt
    assert _queue(session, _mail("a@example.cn"), cap=6).state == QUEUED
    assert _queue(session, _mail("b@example.cn"), cap=1).state == QUEUED
    # The cap counts the first recipient only.
    assert _queue(session, _mail(["c@example.cn", "a@example.cn"]), cap=1).state == QUEUED
    session.commit()
    midnight = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)  # 00:00 Beijing the next day
    assert _queue(session, _mail("a@example.cn"), cap=1,
                  now=midnight - timedelta(microseconds=1)).state == SUPPRESSED
    assert _queue(session, _mail("a@example.cn"), cap=1, now=midnight).state == QUEUED


def test_local_midnight_is_beijing() -> None:
    assert local_midnight(NOW) == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
    assert local_midnight(datetime(2026, 11, 24, 16, 0, tzinfo=UTC)) == datetime(
        2026, 11, 24, 16, 0, tzinfo=UTC)


def test_sent_today(session: Session) -> None:
    assert not sent_today(session, ctx.UNRELATED, "who@example.cn", NOW)
    row = _queue(session, _mail("Who@Example.cn", template=ctx.UNRELATED))
    assert sent_today(session, ctx.UNRELATED, " who@example.CN ", NOW)
    assert not sent_today(session, ctx.DIGEST, "who@example.cn", NOW)
    assert not sent_today(session, ctx.UNRELATED, "who@example.cn", NOW + timedelta(days=1))
    row.state = SUPPRESSED  # a suppressed notice was the day's one notice too
    session.commit()
    assert sent_today(session, ctx.UNRELATED, "who@example.cn", NOW)


def test_a_message_id_is_required(session: Session) -> None:
    outgoing = _mail()
    outgoing.message_id = ""
    with pytest.raises(ValueError):
        _queue(session, outgoing)
