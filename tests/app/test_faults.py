"""Faults (issue 11, Tests): the daemon killed at every named point of the flow, then restarted.

Each named point of mailbot/faults.py (POINTS) gets one test. An inbox in Dovecot holding a
complete application (A), an incomplete one (B), a revocation (R) and an automatic reply goes
through the flow below, `mailbot run --once` after `run --once`. The run in which the point is
reached (REACHED_IN) is a subprocess, `python3 -m mailbot.cli --config FILE run --once` with
MAILBOT_TEST_CRASH_AT=<point>, which must end SIGKILLed by its own hand; it is restarted at
once without the switch, and the flow runs to its end. The runs without the switch go
in-process through `mailbot.cli.main` (the same command, instance lock included, without a
new interpreter: the whole file stays fast).

  run 1   intake, the acknowledgements and the incomplete notice (sent, copied to 已发送),
          the first CRL, the staff digest queued
  staff   the red flag on A and R in 已处理 (another IMAP client); B left incomplete for
          longer than [cases] incomplete_expiry_days (its state_changed_at moved back)
  run 2   the approvals, A issued and R revoked (the CRL written), the digest and both
          results sent, delivered; B expired
  run 3   the expired notice sent; nothing else to do

A mail claimed by the killed sender waits for its lease (outbox/sender.py CLAIM_SECONDS) to
end: after the restart, the outbox job runs in-process on the tests' frozen clock set past
the lease, instead of sleeping.

Afterwards every case has completed (A and R delivered, B expired), one case per application,
every mail the flow asks for (and one staff digest a day) was accepted exactly once by
aiosmtpd, counted by Message-ID and by (template, case), except at send_after_accept, the documented window between the SMTP
server's acceptance and the `sent` commit, where exactly that one mail goes twice; every sent
mail is in 已发送 (twice at most for the copy killed between its APPEND and its commit); the
CRL file lists R's certificate; the audit chain holds.

The crash runs of the parametrized test are forked from a zygote that imported mailbot once
(tests/support/zygote.py: the same command in a process of its own, the switch read at
start, without a second of imports per point); the no-fault flow and the CRL test below
start `python3 -m mailbot.cli` itself.

Also: a kill between a revocation's commit and the CRL file's write, when the CRL was signed
in the second after the revocation (the restart publishes it); Dovecot restarted under a
running daemon; SMTP down for a while, then back.
On SQLite and, with MAILBOT_TEST_DATABASE_URL, PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import x509
from sqlalchemy import select

from mailbot import clock
from mailbot.app.daemon import Daemon
from mailbot.cases.audit import verify_chain
from mailbot.cases.models import Case
from mailbot.config import Config
from mailbot.db import make_engine, session_factory, upgrade
from mailbot.faults import POINTS
from mailbot.intake.models import Message
from mailbot.outbox.models import COPY_DONE, QUEUED, SENT, OutboxMessage
from mailbot.pki.ca import ca_certificate, init_ca
from mailbot.pki.crl import verify_crl
from mailbot.pki.models import CrlState
from tests.support import replies as replies_support
from tests.support.e2e import PROCESSED, Desk, Outcome, child_env, wait_until
from tests.support.mailbuilders import make_sm2, plain
from tests.support.pki_issue import issue_csr_stubbed
from tests.support.replies import ORG_CODE, application, revocation
from tests.support.zygote import Zygote

pytestmark = pytest.mark.timeout(180)

ORG_A, ORG_B, ORG_R = "厦门故障甲科技有限公司", "厦门故障乙科技有限公司", "厦门故障丙科技有限公司"
MID_A, MID_B, MID_R = ("<fault.a@example.com.cn>", "<fault.b@example.com.cn>",
                       "<fault.r@example.com.cn>")
MID_AUTO = "<fault.auto@example.com.cn>"
FORM_A, FORM_R = "a-cert@example.cn", "r-cert@example.cn"
STAFF = "staff@xmport.example.cn"
APPLICANT = "zhangsan@example.com.cn"  # the builders' sender
# Beyond the URL keys: a staff digest every day from 00:00 (so the first run queues it).
EXTRA = f'[outbox]\nstaff_addresses = ["{STAFF}"]\ndigest_hour = 0\n'
APPROVED = "$MailbotApproved"

smtp_module = replies_support.smtp_module  # fixture (an argument would shadow an import)


@pytest.fixture
def smtp(smtp_module):
    """The module's aiosmtpd, running and empty; what it accepted is checked by each test
    (the documented window may send one mail twice, which replies.smtp would refuse)."""
    smtp_module.start()
    smtp_module.clear()
    yield smtp_module
    smtp_module.clear()


# -- what every test starts from (made once per module) ------------------------------------------
@dataclass
class Material:
    ca_dir: Path  # var/ca of a soft test CA, copied into each installation
    mails: list[bytes]  # A, B, R and the automatic reply
    revoked_serial: str  # the certificate R asks to revoke (signed by that CA, upper hex)


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> Material:
    root = tmp_path_factory.mktemp("faults-material")
    cfg = Config()
    cfg.base_dir = str(root)
    ca = init_ca(cfg)
    # R's certificate: issued by this CA before (a scratch database; the installations
    # never saw it, as with a certificate from before mailbot)
    target = make_sm2(root / "r", ORG_R)
    engine = make_engine(f"sqlite:///{root / 'scratch.sqlite3'}")
    upgrade(engine=engine)
    with session_factory(engine)() as s:
        pair = issue_csr_stubbed(s, ca, "XM-2025-0001", target.csr_der, company=ORG_R,
                                 org_code=ORG_CODE)
        s.commit()
    engine.dispose()
    ca.signer.close()
    sign = x509.Certificate.load(pair.sign_cert)
    req = make_sm2(root / "a", ORG_A)
    mails = [
        application(ORG_A, csr_pem=req.csr_pem, message_id=MID_A, email=FORM_A),
        application(ORG_B, csr_pem=None, message_id=MID_B, email="b-cert@example.cn"),
        revocation(ORG_R, cert_der=pair.sign_cert, serial=f"{sign.serial_number:X}",
                   message_id=MID_R, email=FORM_R),
        plain("自动回复: 休假", "我正在休假。", message_id=MID_AUTO,
              headers=[("Auto-Submitted", "auto-replied")]),
    ]
    return Material(cfg.var_dir / "ca", mails, f"{sign.serial_number:X}")


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    """Crash runs are children forked from one process that imported mailbot once."""
    z = Zygote(child_env())
    yield z
    z.close()


@pytest.fixture
def site(tmp_path, db_url, dovecot_user, smtp, material):
    desk = Desk(tmp_path / "site", db_url, dovecot_user, smtp, extra=EXTRA)
    shutil.copytree(material.ca_dir, desk.var / "ca")
    for raw in material.mails:
        dovecot_user.append(raw)
    yield desk
    desk.close()


# -- the flow --------------------------------------------------------------------------------------
# The run of the flow in which each point is first reached (the crash run is a subprocess
# with the switch; the others run in-process: a restart needs no new interpreter).
REACHED_IN = {point: 2 for point in ("mark_before_keyword", "issue_before_commit",
                                     "issue_after_commit", "revoke_before_commit",
                                     "revoke_after_commit", "delivered_before_commit",
                                     "delivered_after_commit", "expiry_after_commit")}
RUNS = 3


@dataclass
class Flow:
    """The flow of the module docstring, killed once at `point`."""

    site: Desk
    point: str | None
    zygote: Zygote | None = None  # where the crash run is forked from (else a new python3)
    after_crash: Callable[[Desk], None] | None = None  # what else the crash left, if anything
    crash: Outcome | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def run(self, number: int) -> None:
        crashed = None
        if self.point is not None and number == REACHED_IN.get(self.point, 1):
            crashed = self.site.run_once(self.point, zygote=self.zygote)
            assert crashed.crashed, (f"{self.point} not reached in run {number}: exit "
                                     f"{crashed.code}\n{crashed.out}{crashed.err}")
            self.crash = crashed
            if self.after_crash is not None:
                self.after_crash(self.site)
        out = self.site.run_here()  # the (re)start without the switch
        self.outcomes.append(out)
        assert out.code == 0, (self.point, number, out.out, out.err)
        if crashed is not None:
            outbox_after_leases(self.site)  # what the killed sender had claimed, if anything

    def staff(self) -> None:
        for mid in (MID_A, MID_R):
            self.site.flag(mid)
        with self.site.session() as s:  # B has been incomplete for 40 days
            case = s.get(Case, s.scalar(select(Message.case_id).where(Message.message_id == MID_B)))
            assert case is not None and case.state == "incomplete", case
            case.state_changed_at = (case.state_changed_at or case.updated_at) - timedelta(days=40)
            s.commit()

    def drive(self) -> None:
        self.run(1)
        self.staff()
        for number in range(2, RUNS + 1):
            self.run(number)


def outbox_after_leases(site: Desk) -> None:
    """Mail a killed sender had claimed waits for its lease (CLAIM_SECONDS): the outbox job
    runs in-process on the frozen clock set just past the last lease, instead of sleeping."""
    with site.session() as s:
        later = s.scalar(select(OutboxMessage.next_attempt_at).where(
            OutboxMessage.state == QUEUED).order_by(OutboxMessage.next_attempt_at.desc()))
    if later is None:
        return
    later = later if later.tzinfo else later.replace(tzinfo=UTC)
    if later <= datetime.now(UTC):
        return
    clock.set_clock(clock.FrozenClock(later + timedelta(seconds=1)))
    daemon = Daemon(Config.load(site.config), once=True)
    try:
        report = daemon.cycle(only={"outbox"})
    finally:
        daemon.close()
        clock.set_clock(None)
    assert report.errors == [], report.errors


# -- what must hold afterwards ---------------------------------------------------------------------
EXPECTED = Counter({("acknowledgement", "A"): 1, ("incomplete", "B"): 1,
                    ("acknowledgement", "R"): 1, ("issued", "A"): 1, ("revoked", "R"): 1,
                    ("expired", "B"): 1})  # and the staff digest: once a day (Beijing time)


def check_completed(site: Desk, smtp, material: Material, point: str | None) -> None:
    cases = {mid: site.case_of(mid) for mid in (MID_A, MID_B, MID_R)}
    assert all(cases.values()), cases
    name = {cases[MID_A].ref: "A", cases[MID_B].ref: "B", cases[MID_R].ref: "R"}
    # every case completed, one per application
    assert {n: c.state for n, c in zip("ABR", cases.values(), strict=True)} == \
        {"A": "delivered", "B": "expired", "R": "delivered"}
    assert len(site.cases()) == 3
    messages = site.messages()
    assert sorted(m.message_id for m in messages) == sorted([MID_A, MID_B, MID_R, MID_AUTO])
    assert all(m.status == "processed" for m in messages)
    # every mail once (Message-ID and (template, case)), but for the documented window
    rows = {r.message_id: r for r in site.outbox_rows()}
    assert {(r.state, r.copy_state) for r in rows.values()} == {(SENT, COPY_DONE)}, \
        [(r.template, r.state, r.copy_state, r.last_error) for r in rows.values()]
    sent = Counter(d.message_id for d in smtp.deliveries)
    assert set(sent) == set(rows), "a mail went out that the outbox does not know, or none"
    pairs: Counter[tuple[str, str | None]] = Counter()
    for mid, n in sent.items():
        pairs[(rows[mid].template, name.get(rows[mid].case_ref or ""))] += n
    days = {clock.local(r.created_at).date() for r in rows.values() if r.template == "digest"}
    assert pairs.pop(("digest", None)) == len(days) >= 1  # a test may straddle midnight
    twice = [mid for mid, n in sent.items() if n > 1]
    if point == "send_after_accept":  # accepted, killed before `sent`: that mail once more
        assert len(twice) == 1 and sent[twice[0]] == 2, sent
        extra = (rows[twice[0]].template, name.get(rows[twice[0]].case_ref or ""))
        assert pairs - EXPECTED == Counter({extra: 1}) and EXPECTED - pairs == Counter()
    else:
        assert twice == [], sent
        assert pairs == EXPECTED
    # who got what
    to = {(rows[d.message_id].template, name.get(rows[d.message_id].case_ref or "")):
          d.rcpt_tos for d in smtp.deliveries}
    assert to[("issued", "A")] == [FORM_A] and to[("revoked", "R")] == [FORM_R]
    assert to[("digest", None)] == [STAFF] and to[("acknowledgement", "A")] == [APPLICANT]
    # each sent mail in 已发送: once, or twice for the copy killed before its commit
    copies = Counter(site.sent_copies())
    assert set(copies) == set(rows)
    if point == "copy_after_append":  # APPENDed, killed before recorded: APPENDed again
        assert sorted(copies.values())[-2:] == [1, 2], copies
    else:
        assert max(copies.values()) == 1, copies
    # the mailbox: everything processed, the flags acted on
    assert site.user.uids("INBOX") == []
    flags = site.user.flags(PROCESSED)
    assert len(flags) == 4 and sum(APPROVED in f for f in flags.values()) == 2
    # the published CRL lists R's certificate and is signed by the CA
    crl = verify_crl((site.var / "ca" / "ca.crl").read_bytes(),
                     ca_certificate(Config.load(site.config)))
    assert crl.ok, crl.problems
    assert {serial.upper() for serial, _at, _why in crl.revoked} == {material.revoked_serial}
    with site.session() as s:
        assert verify_chain(s).ok


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_named_point_and_restarted_completes_once(point, site, smtp, material,
                                                              zygote) -> None:
    flow = Flow(site, point, zygote)
    flow.drive()
    assert flow.crash is not None, f"{point} was never reached"
    assert "Traceback" not in flow.crash.err
    check_completed(site, smtp, material, point)


def test_the_flow_without_a_fault(site, smtp, material) -> None:
    """The same flow unharmed: the yardstick of the faults above."""
    flow = Flow(site, None)
    flow.drive()
    assert flow.crash is None
    check_completed(site, smtp, material, None)
    before = len(smtp.deliveries)
    out = site.run_once()  # and a further run changes nothing
    assert out.code == 0 and len(smtp.deliveries) == before


def test_every_point_is_named_once_in_the_code() -> None:
    """POINTS is the list of crash_point calls: none missing, none unlisted, none twice."""
    root = Path(__file__).resolve().parents[2] / "mailbot"
    found = Counter(re.findall(r'crash_point\("([a-z_]+)"\)',
                               "".join(p.read_text(encoding="utf-8")
                                       for p in root.rglob("*.py"))))
    assert set(found) == set(POINTS) and max(found.values()) == 1, found
    assert len(POINTS) >= 20


def test_a_kill_between_the_revocation_and_the_crl_file_is_published_on_restart(
        site, smtp, material) -> None:
    """revoke_after_commit when the CRL was signed in the second after the revocation (its
    thisUpdate, kept to the second, then lies after revoked_at): the restart must still
    publish the CRL the database holds, not leave the file without the revocation."""
    def signed_a_second_later(desk: Desk) -> None:
        with desk.session() as s:
            for state in s.scalars(select(CrlState)):
                assert state.this_update is not None
                state.this_update += timedelta(seconds=1)
            s.commit()

    flow = Flow(site, "revoke_after_commit", after_crash=signed_a_second_later)  # python3 -m
    flow.drive()
    assert flow.crash is not None
    check_completed(site, smtp, material, "revoke_after_commit")


# -- the servers going away ------------------------------------------------------------------------
def test_dovecot_restarted_under_a_running_daemon(tmp_path, dovecot_own, dovecot_own_user,
                                                  smtp, material) -> None:
    """The long-running daemon loses its IMAP connections when Dovecot restarts, reconnects,
    and goes on: mail after the restart is answered, a flag set after it is acted on.
    (On SQLite only: the database plays no part here, and the test waits on real time.)"""
    user = dovecot_own_user
    site = Desk(tmp_path / "site", f"sqlite:///{tmp_path / 'site.sqlite3'}", user, smtp)
    shutil.copytree(material.ca_dir, site.var / "ca")
    user.append(material.mails[0])  # A
    try:
        with site.running() as daemon:
            def waiting(what, check):
                return wait_until(check, timeout=90, what=what, alive=daemon,
                                  log=site.daemon_log)

            waiting("A's acknowledgement", lambda: len(smtp.deliveries) == 1)
            waiting("its Sent copy", lambda: len(site.sent_copies()) == 1)
            dovecot_own.restart()
            user.append(material.mails[2])  # R, while the daemon reconnects
            waiting("R's acknowledgement", lambda: len(smtp.deliveries) == 2)
            waiting("its Sent copy", lambda: len(site.sent_copies()) == 2)  # else a retry
            dovecot_own.restart()  # (a copy the restart refused waits for its backoff)
            site.flag(MID_A)
            waiting("A's certificates", lambda: any(FORM_A in d.rcpt_tos
                                                    for d in smtp.deliveries))
            waiting("A delivered", lambda: site.case_of(MID_A).state == "delivered")
            waiting("every Sent copy", lambda: len(site.sent_copies()) == 3)
        assert daemon.returncode == 0, site.daemon_log()
    finally:
        site.close()
    sent = Counter(d.message_id for d in smtp.deliveries)
    assert len(sent) == 3 and max(sent.values()) == 1, sent
    assert Counter(site.sent_copies()) == sent
    assert user.uids("INBOX") == [] and len(user.uids(PROCESSED)) == 2


def test_smtp_down_for_a_while_then_back(site, smtp, material) -> None:
    """No SMTP server: `run --once` exits 1 and every answer waits, queued; once the server is
    back and the backoff has passed (the frozen clock, in-process), each goes out once."""
    smtp.stop()
    try:
        down = site.run_once()
        assert down.code == 1 and "Traceback" not in down.err, down.err
        assert "outbox" in down.err
        again = site.run_here()  # still down: the mail tried waits for its backoff, the
        assert again.code == 1  # next one is tried (each run stops at the first refusal)
        assert len(site.cases()) == 3
        rows = site.outbox_rows()
        assert len(rows) == 4 and {r.state for r in rows} == {QUEUED}
        assert sorted(r.attempts for r in rows) == [0, 0, 1, 1] and smtp.deliveries == []
    finally:
        smtp.start()
    tried = {r.message_id for r in rows if r.attempts}
    late = site.run_here()  # back: the mail never tried goes; the mail tried waits its turn
    assert late.code == 0, late.err
    assert {d.message_id for d in smtp.deliveries} == {r.message_id for r in rows} - tried
    outbox_after_leases(site)  # the backoff passed
    assert {r.state for r in site.outbox_rows()} == {SENT}
    done = site.run_here()  # the Sent copies (and nothing sent again)
    assert done.code == 0, done.err
    sent = Counter(d.message_id for d in smtp.deliveries)
    rows = {r.message_id: r.template for r in site.outbox_rows()}
    assert set(sent) == set(rows) and max(sent.values()) == 1
    assert sorted(rows.values()) == ["acknowledgement", "acknowledgement", "digest",
                                     "incomplete"]
    assert Counter(site.sent_copies()) == sent
