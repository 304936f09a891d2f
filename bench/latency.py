#!/usr/bin/env python3
"""Latency benchmark (issue 11): how soon an applicant hears back, and staff's flag is obeyed.

    python3 bench/latency.py [--messages 100] [--flags 10] [--db URL]

Starts its own Dovecot and aiosmtpd on loopback and the daemon (`mailbot run`, configured
only through the URL keys, IDLE on the inbox) as a subprocess, then:
1. APPENDs N complete applications one by one (a random 0.2-0.6 s apart) and times each from
   the APPEND to the acknowledgement accepted by the SMTP server (the server records it);
2. sets the red flag, as staff would in another IMAP client, on M of them in 已处理 (0.5-6 s
   apart, out of step with the daemon's 5 s flag poll) and times each from the flag to the
   issued reply (certificates, notice) accepted by the server.
Prints p50 and p95 against the goals: acknowledgement p50 < 1 s and p95 < 5 s, issuance
p95 < 10 s. Baseline in the same run: a bare IMAP APPEND + SMTP send round trip of our own,
the floor no daemon can beat.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import PgSchema  # noqa: E402
from mailbot.app.workspace import toml_value  # noqa: E402
from mailbot.pki import sm2  # noqa: E402
from mailbot.pki.request import build_csr, csr_pem  # noqa: E402
from tests.support.dovecot import DovecotServer, ensure_vmail, free_port  # noqa: E402
from tests.support.replies import application  # noqa: E402
from tests.support.smtp import SmtpServer  # noqa: E402

GOALS = {"acknowledgement p50": 1.0, "acknowledgement p95": 5.0, "issuance p95": 10.0}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class Watch:
    """Records when the SMTP server accepted each mail (by In-Reply-To and recipients)."""

    def __init__(self, smtp: SmtpServer) -> None:
        self.smtp = smtp
        self.seen = 0
        self.at: list[tuple[float, bytes, list[str]]] = []

    def poll(self) -> None:
        deliveries = self.smtp.deliveries
        now = time.perf_counter()
        for d in deliveries[self.seen:]:
            self.at.append((now, d.data, list(d.rcpt_tos)))
        self.seen = len(deliveries)

    def wait(self, predicate, limit: float = 60.0) -> float | None:  # type: ignore[no-untyped-def]
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            self.poll()
            for when, data, rcpt in self.at:
                if predicate(data, rcpt):
                    return when
            time.sleep(0.005)
        return None


def answers(message_id: str):  # type: ignore[no-untyped-def]
    needle = f"In-Reply-To: {message_id}".encode()
    return lambda data, _rcpt: needle in data.split(b"\r\n\r\n", 1)[0]


def issued_to(address: str, message_id: str):  # type: ignore[no-untyped-def]
    def match(data: bytes, rcpt: list[str]) -> bool:
        head = data.split(b"\r\n\r\n", 1)[0]
        return address in rcpt and f"In-Reply-To: {message_id}".encode() in head \
            and b"sign.cer" in data
    return match


def baseline(user, smtp: SmtpServer, rounds: int = 20) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of an IMAP APPEND followed by one SMTP send: the floor."""
    times = []
    raw = b"From: a@example.cn\r\nTo: b@example.cn\r\nSubject: x\r\n\r\nx\r\n"
    c = user.client()
    for i in range(rounds):
        t0 = time.perf_counter()
        c.append("BaselineFolder", raw) if c.folder_exists("BaselineFolder") else (
            c.create_folder("BaselineFolder"), c.append("BaselineFolder", raw))
        host, port = smtp.url().removeprefix("smtp://").split(":")
        with smtplib.SMTP(host, int(port)) as s:
            s.sendmail("a@example.cn", [f"b{i}@example.cn"], raw)
        times.append(time.perf_counter() - t0)
    c.logout()
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--flags", type=int, default=10)
    ap.add_argument("--db", help="database URL (default: SQLite in the temporary folder)")
    ap.add_argument("--log", metavar="FILE", help="keep the daemon's log here")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mailbot-latency-"))
    os.chmod(root, 0o755)
    uid, gid = ensure_vmail()
    server = DovecotServer(root=root / "dovecot", port=free_port(), uid=uid, gid=gid)
    server.start()
    smtp = SmtpServer().start()
    proc = None
    # A throw-away schema on PostgreSQL: the named database's own tables are never touched.
    pg = PgSchema(args.db) if args.db and args.db.startswith("postgresql") else None
    try:
        user = server.add_user()
        floor = baseline(user, smtp)
        smtp.clear()
        db = pg.url if pg else args.db or f"sqlite:///{root / 'var' / 'mailbot.sqlite3'}"
        config = root / "mailbot.toml"
        config.write_text(
            f"[mailbox]\nurl = {toml_value(user.url)}\n[smtp]\nurl = {toml_value(smtp.url())}\n"
            f"[database]\nurl = {toml_value(db)}\n[paths]\n"
            f"var_dir = {toml_value(str(root / 'var'))}\n"
            + os.environ.get("MAILBOT_BENCH_EXTRA_TOML", ""),
            encoding="utf-8")
        keys = [sm2.generate_private_key() for _ in range(args.messages + 1)]
        mails = []
        for i, key in enumerate(keys):
            org = f"厦门时延测试{i:03d}科技有限公司"
            csr = csr_pem(build_csr(key, {"C": "CN", "O": org, "CN": org}))
            mid = f"<lat{i}.{os.getpid()}@example.cn>"
            raw = application(org, csr_pem=csr, message_id=mid,
                              sender=f"申请人 <applicant{i}@example.cn>",
                              email=f"cert{i}@example.cn")
            mails.append((mid, raw, f"cert{i}@example.cn"))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "mailbot.cli", "--config", str(config),
                                 "run"], stdout=subprocess.DEVNULL,
                                stderr=(root / "daemon.log").open("w"), env=env, text=True)
        watch = Watch(smtp)
        c = user.client()
        # The first one also waits for the start (schema, CA, first cycle): not timed.
        warm_mid, warm_raw, _ = mails[0]
        c.append("INBOX", warm_raw)
        if watch.wait(answers(warm_mid), limit=120) is None:
            proc.kill()
            raise SystemExit("the daemon never answered the first application: "
                             + (root / "daemon.log").read_text()[-3000:])
        acks: list[float] = []
        for mid, raw, _email in mails[1:]:
            time.sleep(random.uniform(0.2, 0.6))
            t0 = time.perf_counter()
            c.append("INBOX", raw)
            got = watch.wait(answers(mid))
            if got is None:
                raise SystemExit(f"no acknowledgement for {mid}")
            acks.append(got - t0)
            print(f"  {mid}: acknowledged in {(got - t0) * 1000:.0f} ms at {time.time():.3f}",
                  file=sys.stderr) if args.log else None
        c.logout()
        flags: list[float] = []
        staff = user.client()
        staff.select_folder("已处理")
        for mid, _raw, email in mails[1:args.flags + 1]:
            # Staff flag at any moment, not in step with the daemon's flag poll.
            time.sleep(random.uniform(0.5, 6.0))
            [uid_] = staff.search(["HEADER", "Message-ID", mid])
            t0 = time.perf_counter()
            staff.add_flags([uid_], [b"\\Flagged"])
            got = watch.wait(issued_to(email, mid))
            if got is None:
                raise SystemExit(f"no issued reply for {mid} after its flag (--log FILE keeps"
                                 " the daemon's log)")
            flags.append(got - t0)
        staff.logout()
        rows = [("acknowledgement p50", statistics.median(acks)),
                ("acknowledgement p95", percentile(acks, 95)),
                ("issuance p50", statistics.median(flags)),
                ("issuance p95", percentile(flags, 95))]
        print(f"database: {db.split('://')[0]}; {len(acks)} applications one by one, "
              f"{len(flags)} flags; new mail by IDLE")
        print(f"baseline (same run): IMAP APPEND + one SMTP send of our own {floor * 1000:.1f} ms")
        for name, value in rows:
            goal = GOALS.get(name)
            verdict = "" if goal is None else (" OK" if value < goal else " ABOVE GOAL")
            print(f"{name:<20} {value * 1000:8.0f} ms  ({value / floor:6.1f}x the baseline)"
                  + (f"  goal < {goal:.0f} s{verdict}" if goal else ""))
        print(f"acknowledgement max {max(acks) * 1000:.0f} ms; issuance max "
              f"{max(flags) * 1000:.0f} ms")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        smtp.stop()
        server.stop()
        if args.log and (root / "daemon.log").exists():
            shutil.copy(root / "daemon.log", args.log)
        shutil.rmtree(root, ignore_errors=True)
        if pg is not None:
            pg.drop()


if __name__ == "__main__":
    sys.exit(main())
