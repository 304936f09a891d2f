"""`mailbot outbox list|retry`: failed mail is shown and queued again; sent mail never is."""

from __future__ import annotations

from datetime import UTC, datetime

from mailbot.db import make_engine, session_factory
from mailbot.outbox.models import FAILED, QUEUED, SENT, OutboxMessage
from tests.cli.test_cases_cli import Cli


def _rows(cli: Cli, *states: str) -> list[int]:
    engine = make_engine(cli.db_url)
    at = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    ids = []
    try:
        with session_factory(engine)() as s:
            for i, state in enumerate(states):
                row = OutboxMessage(template="acknowledgement", from_addr="xmport@189.cn",
                                    to_addrs=["a@example.cn"], recipient_key="a@example.cn",
                                    message_id=f"<XM-2026-0001.{i}@189.cn>", references=[],
                                    context={}, cap_exempt=False, state=state, attempts=3,
                                    raw=b"x", next_attempt_at=at, created_at=at,
                                    last_error="550 no such user" if state == FAILED else None)
                s.add(row)
                s.flush()
                ids.append(row.id)
            s.commit()
    finally:
        engine.dispose()
    return ids


def test_list_and_retry(tmp_path, db_url, capsys) -> None:
    cli = Cli(tmp_path, db_url, capsys)
    cli.upgrade()
    failed, sent = _rows(cli, FAILED, SENT)
    listed = cli.json("outbox", "list")
    assert [(r["id"], r["state"]) for r in listed] == [(failed, FAILED), (sent, SENT)]
    assert [r["id"] for r in cli.json("outbox", "list", "--state", "failed")] == [failed]
    rc, out, err = cli("outbox", "list")
    assert rc == 0 and "550 no such user" in out and "发送失败" in out
    rc, out, err = cli("outbox", "retry", str(failed), "--rerender")
    assert rc == 0, err
    [row] = [r for r in cli.json("outbox", "list") if r["id"] == failed]
    assert (row["state"], row["attempts"], row["error"]) == (QUEUED, 0, None)
    rc, _out, err = cli("outbox", "retry", str(sent))
    assert rc == 1 and "sent already" in err  # the server has it: never again
    rc, _out, err = cli("outbox", "retry", "999")
    assert rc == 1 and "no such mail" in err
    rc, _out, err = cli("outbox", "list", "--state", "bogus")
    assert rc == 2 and "unknown state" in err


def test_list_and_status_leave_the_bytes_in_the_database(tmp_path, db_url, capsys) -> None:
    """A result mail's bytes hold certificates and the notice PDF: listing the outbox (and the
    status of failed mail) reads the columns it shows, never `raw`."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    cli = Cli(tmp_path, db_url, capsys)
    cli.upgrade()
    _rows(cli, FAILED, SENT)
    selects: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "outbox" in statement:
            selects.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        assert len(cli.json("outbox", "list")) == 2
        assert len(cli.json("status")["outbox"]["failed"]) == 1
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert selects and not [s for s in selects if "outbox.raw" in s]
