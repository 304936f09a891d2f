"""The daemon judges each application with the rules (in its analysis workers), as inspect does."""

from __future__ import annotations

import mailbox

import pytest
from sqlalchemy import select

from mailbot.app.daemon import Daemon
from mailbot.cases.models import CaseFinding
from mailbot.intake.models import Message
from tests.support.intake import make_config, make_mail

pytestmark = pytest.mark.timeout(120)


def test_cases_get_the_rules_findings(tmp_path, db_url, engine) -> None:
    (tmp_path / "var").mkdir()
    md = mailbox.Maildir(str(tmp_path / "var" / "mail"), create=True)
    # only the rule engine raises key_compromise (须知四: a lost key means revocation)
    md.add(make_mail(subject="厦门规则测试有限公司+数字证书申办", body="我司私钥丢失，请处理。"))
    cfg = make_config(tmp_path, db_url, "maildir:mail")
    daemon = Daemon(cfg, engine=engine)
    try:
        report = daemon.cycle()
    finally:
        daemon.close()
    assert report.errors == [] and report.processing.cases_opened == 1
    with daemon.sessions() as s:
        codes = set(s.scalars(select(CaseFinding.code)))
        facts = s.scalars(select(Message.facts)).one()
    assert "key_compromise" in codes and "missing_material" in codes
    assert "key_compromise" in {f["code"] for f in facts["findings"]}
