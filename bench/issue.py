#!/usr/bin/env python3
"""Issuance benchmark (issue 10): certificate pairs issued and rendered into the outbox per second.

    python3 bench/issue.py [--cases 100] [--scan-kb 0] [--seconds 1] [--db URL] [--json]

In a fresh temporary var dir (SQLite there by default; with --db postgresql+psycopg://... a
throw-away schema, dropped at the end, as bench/intake.py does), with the soft test CA:
1. set-up, not timed: N approved ``new`` cases as intake leaves them and staff approve them
   (tests/app/test_issuance_job.py `approved`): each its own SM2 key and CSR (made with
   mailbot's sm2 via tests/support/pki_csr.py), the archived application (the filled form
   .docx, the CSR, and with --scan-kb two scans of that size), its message row, the form's
   fields, the staff audit row to ``approved``;
2. (a) `run_issuance` over all cases, as the daemon's issuance job: the request re-read from
   the archive, checked again, both certificates signed, the encryption key and its envelope
   made, the case moved to ``issued`` and its issued mail queued in the outbox (app_sessions),
   one commit per case;
3. (b) every queued issued row rendered into the exact bytes SMTP would carry, as the sender
   does before it sends (make_preparer: Jinja text + HTML, the notice PDF, the MIME message;
   the bytes stored in the row and committed);
4. the baseline, in the same run: mailbot's SM2 encryption of a 16-byte key (sm2.encrypt,
   libcrypto) per second against `openssl pkeyutl -encrypt`, one process per call
   (bench/envelope.py `encryption_rates`).
Prints pairs/s for (a), (b) and (a+b) and where the time goes: signing (the CA's two SM2
signatures, BaseSigner._sign), envelope (make_envelope), notice (render_notice, with its font
build and fpdf2 output shown "of which"), rendering (Renderer.render + compose), and the parts
of (a) worth seeing apart: the encryption key pair generated, the TBS built, the approval
re-checked before each signature, the request re-read (archive.load + analyse_message), the
CSR checked again (checked_request), the issued mail queued (queue_pending, run by the
app_sessions hook at every commit); database/other is the rest (queries, flushes, commits,
the audit chain, the workflow). Each part is timed by wrapping that function here, in the
benchmark only (a part called inside another counts in the inner one only). Also the first
notice of the process (the CJK font opened, its glyphs converted) against a warm one.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import functools
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.envelope import encryption_rates  # noqa: E402
from bench.timing import PgSchema  # noqa: E402
from mailbot.pki import sm2  # noqa: E402

# -- timing wrapped functions ---------------------------------------------------------------


@dataclass
class Part:
    label: str
    parent: str | None = None  # shown as "of which" under that part
    seconds: float = 0.0  # exclusive: time in parts called from inside this one is theirs
    calls: int = 0
    durations: list[float] = field(default_factory=list)  # inclusive, per call


class Timers:
    """Wraps module or class attributes; restores them on exit."""

    def __init__(self) -> None:
        self.parts: dict[str, Part] = {}
        self._stack: list[float] = []  # per open call: time its nested parts took
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, part: str, label: str = "",
             parent: str | None = None) -> None:
        real = getattr(owner, name)
        entry = self.parts.setdefault(part, Part(label, parent))
        stack = self._stack

        @functools.wraps(real)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                inner = stack.pop()
                entry.seconds += spent - inner
                entry.calls += 1
                entry.durations.append(spent)
                if stack:
                    stack[-1] += spent

        self._undo.append((owner, name, owner.__dict__[name] if isinstance(owner, type)
                           else real))
        setattr(owner, name, timed)

    def reset(self) -> None:
        for p in self.parts.values():
            p.seconds, p.calls, p.durations = 0.0, 0, []

    def restore(self) -> None:
        for owner, name, real in reversed(self._undo):
            setattr(owner, name, real)
        self._undo.clear()

    def snapshot(self) -> dict[str, tuple[float, int]]:
        return {k: (p.seconds, p.calls) for k, p in self.parts.items()}


def install_timers() -> Timers:
    """The parts of the split, wrapped where the code under test looks them up."""
    from fpdf import FPDF

    from mailbot.app import issuance, issuance_job, notices
    from mailbot.cases.approval import CaseApprovalCheck
    from mailbot.intake import archive
    from mailbot.outbox import notice, prepare, render
    from mailbot.pki import envelope, issue
    from mailbot.pki.signer import BaseSigner
    from mailbot.pki.signer.soft import SoftSigner

    t = Timers()
    # (a) issuing
    t.wrap(BaseSigner, "_sign", "signing", "signing (the 2 CA SM2 signatures)")
    t.wrap(envelope, "make_envelope", "envelope", "envelope (make_envelope)")
    t.wrap(SoftSigner, "generate_key_pair", "keygen", "enc key pair generated (libcrypto)")
    t.wrap(issue, "build_tbs", "tbs", "certificate TBS built (asn1crypto)")
    t.wrap(CaseApprovalCheck, "confirm", "approval",
           "approval re-checked, 3 a pair (flush + queries)")
    t.wrap(archive, "load", "reread", "request re-read (archive + analyse_message)")
    t.wrap(issuance_job, "analyse_message", "reread")
    t.wrap(issuance, "checked_request", "csr", "CSR checked again (checked_request)")
    t.wrap(notices, "queue_pending", "queue", "issued mail queued (queue_pending)")
    # (b) rendering
    t.wrap(prepare, "render_notice", "notice", "notice PDF (render_notice)")
    t.wrap(notice._Source, "build", "notice_font", "TrueType font of its glyphs built",
           parent="notice")
    t.wrap(FPDF, "output", "notice_output", "PDF written (fpdf2 output, font subset)",
           parent="notice")
    t.wrap(render.Renderer, "render", "rendering", "rendering (Jinja + MIME compose)")
    t.wrap(prepare, "compose", "rendering")
    return t


# -- set-up ---------------------------------------------------------------------------------


def config_for(root: Path, db_url: str | None):  # type: ignore[no-untyped-def]
    from mailbot.config import Config

    cfg = Config()
    cfg.base_dir = str(root)
    cfg.paths.var_dir = str(root / "var")
    cfg.database.url = db_url or f"sqlite:///{root / 'var' / 'mailbot.sqlite3'}"
    cfg.mailbox.url = "maildir:mail"
    return cfg


def _uscc(n: int) -> str:
    from mailbot.rules.validators import uscc_check_char

    first17 = f"91350200MA{n:07d}"
    return first17 + uscc_check_char(first17)


def make_requests(count: int) -> list[bytes]:
    """PEM SM2 CSRs (SM3withSM2, standard ID), each with its own key."""
    from tests.support.pki_csr import info, name, pem, request

    out = []
    for i in range(count):
        d = sm2.generate_private_key()
        subject = name(("2.5.4.6", "CN", 0x13), ("2.5.4.10", f"厦门基准测试{i}有限公司", 0x0C),
                       ("2.5.4.3", f"厦门基准测试{i}有限公司", 0x0C))
        out.append(pem(request(d, info(sm2.public_key_of(d), subject=subject))))
    return out


def make_cases(cfg, sessions, csrs: list[bytes], scan_kb: int) -> None:  # type: ignore[no-untyped-def]
    """Approved new-application cases as tests/app/test_issuance_job.py `approved` makes them."""
    from mailbot.cases.audit import append_audit
    from mailbot.cases.models import Case, CaseField
    from mailbot.intake import archive
    from mailbot.intake.models import Message
    from tests.support.mailbuilders import Att, Mail, build, jpeg, make_form, pdf

    for i, csr in enumerate(csrs):
        ref = f"XM-2026-{i + 1:04d}"
        org = f"厦门基准测试{i}有限公司"
        fields = {"applicant_org": org, "org_code": _uscc(i), "email": f"cert{i}@example{i}.cn",
                  "handler_name": f"李{i}", "handler_phone": f"1380000{i:04d}"}
        files = [Att("中国电子口岸数字证书申请表.docx", make_form(fields),
                     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                 Att("server.csr", csr, "application/pkcs10")]
        if scan_kb:
            files += [Att("营业执照副本.pdf", pdf(scan_kb * 1024, ref.encode()), "application/pdf"),
                      Att("经办人身份证.jpg", jpeg(scan_kb * 1024, ref.encode()), "image/jpeg")]
        raw = build(Mail(subject=f"{org}+数字证书申办", attachments=files,
                         from_addr=f"李{i} <cert{i}@example{i}.cn>",
                         message_id=f"<{ref}.bench@example{i}.cn>"))
        sha, _ = archive.store(cfg.archive_dir, raw)
        with sessions() as s:
            case = Case(ref=ref, kind="new", state="awaiting_confirmation", company=org)
            s.add(case)
            s.flush()
            s.add(Message(source="bench", size=len(raw), sha256=sha, case_id=case.id,
                          status="processed", kind="new", message_id=f"<{ref}.bench@example{i}.cn>",
                          subject=f"{org}+数字证书申办", from_addr=f"cert{i}@example{i}.cn",
                          reply_address=f"cert{i}@example{i}.cn"))
            for key, value in fields.items():
                case.fields.append(CaseField(key=key, value=value, source="form"))
            append_audit(s, actor="张三", action="approve", case=case, via="cli",
                         from_state="awaiting_confirmation", to_state="approved")
            case.state = "approved"
            s.commit()


# -- the two timed stages -------------------------------------------------------------------


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def stage_issue(cfg, sessions) -> tuple[float, float, Any]:  # type: ignore[no-untyped-def]
    from mailbot.app.issuance_job import run_issuance

    t0, c0 = time.perf_counter(), _cpu()
    run = run_issuance(cfg, sessions)  # loads the CA as the daemon's job does
    return time.perf_counter() - t0, _cpu() - c0, run


def stage_render(cfg, sessions) -> tuple[float, float, int, bytes]:  # type: ignore[no-untyped-def]
    """Render every queued issued row into its bytes and store them, as the sender's
    _send_one does before SMTP (without the claim and the send)."""
    from sqlalchemy import select

    from mailbot.app.outbox_job import make_preparer
    from mailbot.outbox.models import OutboxMessage
    from mailbot.outbox.sender import QUEUED

    t0, c0 = time.perf_counter(), _cpu()
    preparer = make_preparer(cfg)
    with sessions() as s:
        ids = list(s.scalars(select(OutboxMessage.id).where(
            OutboxMessage.state == QUEUED, OutboxMessage.template == "issued")
            .order_by(OutboxMessage.created_at, OutboxMessage.id)))
    sample = b""
    for row_id in ids:
        with sessions() as s:
            row = s.get(OutboxMessage, row_id)
            assert row is not None
            raw = row.raw = bytes(preparer(s, row))
            s.commit()
        sample = sample or raw
    return time.perf_counter() - t0, _cpu() - c0, len(ids), sample


def check_mail(raw: bytes) -> list[str]:
    """The attachment names of one rendered issued mail (sanity check, not timed)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    names = [p.get_filename() for p in msg.iter_attachments()]  # type: ignore[attr-defined]
    want = {"sign.cer", "env.cer", "envprivatekey", "中国电子口岸数字证书申请受理告知书.pdf"}
    if set(names) != want:
        raise AssertionError(f"issued mail carries {names}, expected {sorted(want)}")
    return names


# -- PostgreSQL: a throw-away schema ----------------------------------------------------------


# -- main -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import func, select

    from mailbot.app.notices import app_sessions
    from mailbot.app.workspace import init_workspace
    from mailbot.db import make_engine
    from mailbot.outbox.models import OutboxMessage
    from mailbot.pki.ca import init_ca

    n = args.cases
    root = Path(tempfile.mkdtemp(prefix="mailbot-bench-issue-"))
    pg = PgSchema(args.db) if args.db and args.db.startswith("postgresql") else None
    timers: Timers | None = None
    engine = None
    try:
        cfg = config_for(root, pg.url if pg else args.db)
        init_workspace(cfg)
        init_ca(cfg)
        engine = make_engine(cfg.database_url)
        sessions = app_sessions(cfg, engine)  # commits queue the issued mail (app/notices.py)
        t0 = time.perf_counter()
        csrs = make_requests(n)
        make_cases(cfg, sessions, csrs, args.scan_kb)
        setup = time.perf_counter() - t0

        timers = install_timers()
        wall_a, cpu_a, result = stage_issue(cfg, sessions)
        if result.failed or result.held or len(result.issued) != n:
            raise AssertionError(f"issuance: issued {len(result.issued)} of {n}, held "
                                 f"{result.held[:3]}, failed {result.failed[:3]}")
        with sessions() as s:
            queued = s.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.template == "issued", OutboxMessage.state == "queued"))
        if queued != n:
            raise AssertionError(f"{queued} issued mails queued, expected {n}")
        split_a = timers.snapshot()
        wall_b, cpu_b, rendered, sample = stage_render(cfg, sessions)
        split_ab = timers.snapshot()
        notice_calls = list(timers.parts["notice"].durations)
        timers.restore()
        if rendered != n:
            raise AssertionError(f"rendered {rendered} mails, expected {n}")
        check_mail(sample)

        ours, cli = encryption_rates(args.seconds)
    finally:
        if timers is not None:
            timers.restore()
        if engine is not None:
            engine.dispose()
        if pg is not None:
            pg.drop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    total = wall_a + wall_b
    parts = []
    for key, part in timers.parts.items():
        sec_a, _calls = split_a[key]
        sec_ab, calls_ab = split_ab[key]
        parts.append({"part": key, "label": part.label, "parent": part.parent,
                      "seconds_a": sec_a, "seconds_b": sec_ab - sec_a, "seconds": sec_ab,
                      "calls": calls_ab})
    accounted_a = sum(p["seconds_a"] for p in parts)
    accounted_b = sum(p["seconds_b"] for p in parts)
    parts.append({"part": "other", "label": "database/other", "parent": None,
                  "seconds_a": wall_a - accounted_a, "seconds_b": wall_b - accounted_b,
                  "seconds": total - accounted_a - accounted_b, "calls": 0})
    # a part's figures include its "of which" parts; theirs are shown under it
    for p in parts:
        for kid in (k for k in parts if k["parent"] == p["part"]):
            for key in ("seconds_a", "seconds_b", "seconds"):
                p[key] += kid[key]
    warm = statistics.median(notice_calls[1:]) if len(notice_calls) > 1 else float("nan")
    envelope_calls = split_a["envelope"][1]
    return {
        "database": "postgresql" if pg else "sqlite", "cases": n, "scan_kb": args.scan_kb,
        "setup_seconds": setup, "sm2_backend": sm2.backend_name(),
        "issue": {"seconds": wall_a, "cpu_seconds": cpu_a, "pairs_per_second": n / wall_a},
        "render": {"seconds": wall_b, "cpu_seconds": cpu_b, "pairs_per_second": n / wall_b,
                   "mail_bytes": len(sample)},
        "total": {"seconds": total, "pairs_per_second": n / total},
        "split": parts,
        "notice": {"first_seconds": notice_calls[0], "warm_median_seconds": warm},
        "envelope_in_run_ms": split_a["envelope"][0] / max(1, envelope_calls) * 1000,
        # ratio as bench/envelope.py: our time per op / the reference's (lower is better)
        "baseline": {"sm2_encrypt_per_second": ours, "openssl_pkeyutl_per_second": cli,
                     "ratio": cli / ours},
    }


def report(r: dict[str, Any]) -> None:
    n = r["cases"]
    a, b, t = r["issue"], r["render"], r["total"]
    print(f"{n} approved new cases on {r['database']}, soft signer, SM2 {r['sm2_backend']}"
          f" (set-up {r['setup_seconds']:.1f} s, not timed"
          f"{'; scans ' + str(r['scan_kb']) + ' KB x2' if r['scan_kb'] else ''})")
    print(f"(a) issue (run_issuance, committed, mail queued): {a['pairs_per_second']:7.1f} pairs/s"
          f"  {a['seconds']:6.2f} s  (process CPU {a['cpu_seconds'] / a['seconds']:.0%} of wall)")
    print(f"(b) render into the outbox (Preparer):          {b['pairs_per_second']:7.1f} pairs/s"
          f"  {b['seconds']:6.2f} s  (process CPU {b['cpu_seconds'] / b['seconds']:.0%} of wall;"
          f" {b['mail_bytes'] / 1024:.0f} KB a mail)")
    print(f"(a+b) issued and rendered:                      {t['pairs_per_second']:7.1f} pairs/s"
          f"  {t['seconds']:6.2f} s")
    print(f"where the time goes ({t['seconds'] / n * 1000:.1f} ms a pair):")
    print(f"  {'part':50} {'ms/pair':>8} {'share':>6}   {'of (a)':>6} {'of (b)':>6}")
    split = r["split"]
    for p in sorted((p for p in split if not p["parent"]), key=lambda p: -p["seconds"]):
        kids = [k for k in split if k["parent"] == p["part"]]
        rows = [(p["label"], p)] + [("  of which " + k["label"], k) for k in kids]
        for label, q in rows:
            print(f"  {label:50} {q['seconds'] / n * 1000:8.2f}"
                  f" {q['seconds'] / t['seconds']:6.1%}   {q['seconds_a'] / a['seconds']:6.1%}"
                  f" {q['seconds_b'] / b['seconds']:6.1%}")
    nt = r["notice"]
    print(f"notice PDF: first of the process {nt['first_seconds'] * 1000:.0f} ms (font opened,"
          f" glyphs converted), warm {nt['warm_median_seconds'] * 1000:.1f} ms (median);"
          f" ratio {nt['first_seconds'] / nt['warm_median_seconds']:.1f}")
    base = r["baseline"]
    ours_ms, cli_ms = 1000 / base["sm2_encrypt_per_second"], 1000 / base["openssl_pkeyutl_per_second"]
    print(f"baseline, same run: sm2.encrypt of a 16-byte key {base['sm2_encrypt_per_second']:.0f}/s"
          f" ({ours_ms:.3f} ms) vs `openssl pkeyutl -encrypt` {base['openssl_pkeyutl_per_second']:.0f}/s"
          f" ({cli_ms:.2f} ms, a process a call): ratio {base['ratio']:.3f}"
          f" (our time / openssl's), {1 / base['ratio']:.1f}x faster")
    print(f"  the whole make_envelope in (a): {r['envelope_in_run_ms']:.3f} ms a pair"
          f" (SM2 + SM4 + d*G + DER), {r['envelope_in_run_ms'] / cli_ms:.2f}x the time of one"
          f" `openssl pkeyutl -encrypt` process")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100, help="approved cases (pairs) to issue")
    ap.add_argument("--scan-kb", type=int, default=0,
                    help="add two scans of this size to each archived application (the job "
                         "re-reads the whole message)")
    ap.add_argument("--seconds", type=float, default=1.0,
                    help="time per baseline measurement (SM2 encryption, openssl)")
    ap.add_argument("--db", default=None,
                    help="database URL (default: SQLite in the temp dir); PostgreSQL runs in a"
                         " throw-away schema")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args(argv)
    if args.cases < 2:
        ap.error("--cases must be 2 or more (first and warm notice)")
    logging.basicConfig(level=logging.WARNING)
    r = run(args)
    if args.json:
        print(json.dumps(r, indent=2, ensure_ascii=False))
    else:
        report(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
