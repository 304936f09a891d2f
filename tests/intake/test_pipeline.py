"""One intake cycle: a stop request takes no new batch, and what was taken is finished."""

from __future__ import annotations

import mailbox

import pytest
from sqlalchemy import func, select

from mailbot.cases.models import Case
from mailbot.cases.recorder import CaseRecorder
from mailbot.db import session_factory
from mailbot.intake.pipeline import IntakePipeline
from mailbot.mailbox.url import source_from_config
from tests.support.intake import make_config, make_mail

pytestmark = pytest.mark.timeout(120)


def test_a_stop_request_ends_the_cycle_between_batches(tmp_path, db_url, engine) -> None:
    (tmp_path / "var").mkdir()
    md = mailbox.Maildir(str(tmp_path / "var" / "mail"), create=True)
    for i in range(12):
        md.add(make_mail(subject=f"厦门停止{i}有限公司+数字证书申办"))
    cfg = make_config(tmp_path, db_url, "maildir:mail", fetch_batch=5)
    sessions = session_factory(engine)
    asked: list[int] = []

    def stop_after_the_first_batch() -> bool:
        asked.append(1)
        return len(asked) > 1

    pipeline = IntakePipeline(cfg, sessions, source_from_config(cfg), CaseRecorder())
    try:
        first = pipeline.cycle(should_stop=stop_after_the_first_batch)
        assert first.intake.stopped and first.intake.archived == 5
        assert first.processing.cases_opened == 5  # the batch in hand is finished
        assert len(md.keys()) == 7  # the rest waits in the inbox, untouched
        second = pipeline.cycle()
    finally:
        pipeline.close()
    assert not second.intake.stopped and second.intake.archived == 7
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 12
    assert len(md.keys()) == 0
