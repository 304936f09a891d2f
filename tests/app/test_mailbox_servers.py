"""The daemon on other standard IMAP servers: a namespace prefix, and folder creation refused.

Processing never waits on the mailbox: what is archived and committed becomes a case even
when it cannot be moved; the move is tried again every cycle and the failure is reported
once, in the log and in `status`.
"""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import func, select

from mailbot.app.daemon import Daemon
from mailbot.cases.models import Case
from mailbot.cli import main
from mailbot.intake.models import MESSAGE_PROCESSED, Message
from tests.support.intake import make_config, make_mail, write_config

pytestmark = pytest.mark.timeout(120)


def _counts(daemon: Daemon) -> tuple[int, int, int]:
    with daemon.sessions() as s:
        cases = s.scalar(select(func.count()).select_from(Case))
        processed = s.scalar(select(func.count()).select_from(Message)
                             .where(Message.status == MESSAGE_PROCESSED))
        unmoved = s.scalar(select(func.count()).select_from(Message)
                           .where(Message.moved_at.is_(None)))
    return int(cases or 0), int(processed or 0), int(unmoved or 0)


def test_mail_is_processed_and_moved_under_the_namespace_prefix(tmp_path, db_url, engine,
                                                                dovecot_prefixed_user) -> None:
    user = dovecot_prefixed_user
    cfg = make_config(tmp_path, db_url, user.url)
    user.append(make_mail(subject="厦门前缀测试有限公司+数字证书申办"))
    daemon = Daemon(cfg, engine=engine)
    try:
        report = daemon.cycle()
    finally:
        daemon.close()
    assert report.errors == [] and report.move_error is None
    assert (report.processing.cases_opened, report.intake.moved) == (1, 1)
    assert _counts(daemon) == (1, 1, 0)
    assert user.uids("INBOX") == [] and len(user.uids("INBOX.已处理")) == 1


def test_refused_folder_creation_stalls_nothing(tmp_path, db_url, engine, dovecot_nocreate_user,
                                                caplog, capsys) -> None:
    user = dovecot_nocreate_user
    cfg = make_config(tmp_path, db_url, user.url, fetch_batch=2)
    for i in range(5):  # three batches: a failed move must not stop the later ones
        user.append(make_mail(subject=f"厦门无权{i}有限公司+数字证书申办"))
    daemon = Daemon(cfg, engine=engine)
    caplog.set_level(logging.WARNING, logger="mailbot.intake.moves")
    try:
        first = daemon.cycle()
        second = daemon.cycle()  # the same refusal again: tried, not logged again
    finally:
        daemon.close()
    assert first.errors == [] and second.errors == []  # a failed move is no failure of a run
    assert first.processing.cases_opened == 5 and first.intake.move_failed == 5
    assert "cannot create folder" in (first.move_error or "")
    assert second.intake.archived == 0 and second.intake.move_failed == 5
    assert _counts(daemon) == (5, 5, 5)
    assert len(user.uids("INBOX")) == 5
    warnings = [r for r in caplog.records if "moving" in r.getMessage()]
    assert len(warnings) == 1

    config = write_config(tmp_path / "mailbot.toml", cfg)
    assert main(["--config", str(config), "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["not_moved"]["count"] == 5 and st["messages"] == {"processed": 5}
    [box] = st["mailboxes"]
    assert "cannot create folder" in box["move_error"] and box["move_failing_since"]
    assert main(["--config", str(config), "status"]) == 0
    assert "moving fails since" in capsys.readouterr().out
    assert main(["--config", str(config), "run", "--once"]) == 0  # still no failure of the run
    assert "moving failed" in capsys.readouterr().err

    user.allow_create()  # the operator fixed the mailbox: the next cycle moves everything
    daemon = Daemon(cfg, engine=engine)
    try:
        third = daemon.cycle()
    finally:
        daemon.close()
    assert (third.intake.archived, third.intake.moved, third.move_error) == (0, 5, None)
    assert _counts(daemon) == (5, 5, 0)
    assert main(["--config", str(config), "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["not_moved"]["count"] == 0 and st["mailboxes"][0]["move_error"] is None
    assert user.uids("INBOX") == [] and len(user.uids("已处理")) == 5


def test_parked_mail_that_cannot_be_moved_aside_is_logged_once(tmp_path, db_url, engine,
                                                               dovecot_nocreate_user,
                                                               caplog) -> None:
    from mailbot.intake import archive
    from mailbot.intake.ingest import ingest

    user = dovecot_nocreate_user
    cfg = make_config(tmp_path, db_url, user.url, max_attempts=1)
    user.append(make_mail(subject="厦门搁置无权有限公司+数字证书申办"))
    daemon = Daemon(cfg, engine=engine)
    caplog.set_level(logging.WARNING, logger="mailbot.intake.moves")
    try:
        daemon.source.open()
        ingest(cfg, daemon.sessions, daemon.source)  # archived, not yet analysed
        with daemon.sessions() as s:
            row = s.scalars(select(Message)).one()
        archive.archive_path(cfg.archive_dir, row.sha256).write_bytes(b"damaged")
        first = daemon.cycle()
        second = daemon.cycle()
    finally:
        daemon.close()
    assert first.processing.parked == [row.id] and first.errors == second.errors == []
    parking = [r for r in caplog.records if "parked mail" in r.getMessage()]
    assert len(parking) == 1 and not any(r.exc_info for r in caplog.records)
    assert len(user.uids("INBOX")) == 1  # nothing lost: it waits where it was
