"""`mailbot run [--once]`, `mailbot reprocess`, `mailbot status`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from sqlalchemy import func, select

from mailbot.cases.models import (
    MESSAGE_OVERSIZE,
    MESSAGE_PARKED,
    Case,
    MailboxState,
    Message,
)
from mailbot.config import Config
from mailbot.db import make_engine, session_factory

log = logging.getLogger(__name__)


def _prepare(cfg: Config) -> None:
    """Folders and schema as `mailbot init` makes them, so `run` works on a fresh ./var."""
    from mailbot.core_cli import init_workspace

    init_workspace(cfg)


def _cmd_run(args: argparse.Namespace) -> int:
    from mailbot.daemon import Daemon

    cfg: Config = args.config
    try:
        _prepare(cfg)
        daemon = Daemon(cfg)
    except Exception as exc:  # noqa: BLE001
        print(f"mailbot run: cannot start: {exc} / 无法启动", file=sys.stderr)
        return 1
    if not args.once:
        return daemon.run_forever()
    try:
        report = daemon.run_once()
    except Exception as exc:  # noqa: BLE001 - the run itself failed (mailbox, database)
        log.exception("run --once failed")
        print(f"mailbot run --once: failed: {exc} / 运行失败", file=sys.stderr)
        return 1
    i, p = report.intake, report.processing
    print(f"intake / 收件: listed {i.listed}, new {i.archived}, duplicate {i.duplicates}, "
          f"oversize {i.oversize}, moved {i.moved}")
    print(f"processing / 处理: processed {p.processed}, cases opened {p.cases_opened}, "
          f"failed {p.failed}, parked {len(p.parked)}")
    for err in report.errors:
        print(f"job error / 任务错误: {err}", file=sys.stderr)
    return 1 if report.errors else 0


def _cmd_reprocess(args: argparse.Namespace) -> int:
    from mailbot.daemon import reprocess

    if not args.targets and not args.all_parked:
        print("mailbot reprocess: name message rows / Message-IDs, or --all-parked",
              file=sys.stderr)
        return 2
    cfg: Config = args.config
    reset, unknown, report = reprocess(cfg, args.targets, all_parked=args.all_parked)
    for t in unknown:
        print(f"not parked or not found / 未找到或未搁置: {t}", file=sys.stderr)
    print(f"reprocess / 重新处理: {len(reset)} message(s); processed {report.processed}, "
          f"failed {report.failed}, parked again {len(report.parked)}")
    if not reset:
        return 1
    return 1 if unknown or report.failed else 0


def collect_status(cfg: Config) -> dict[str, Any]:
    engine = make_engine(cfg.database_url)
    try:
        with session_factory(engine)() as s:
            messages = dict(s.execute(select(Message.status, func.count())
                                      .group_by(Message.status)).all())
            cases = dict(s.execute(select(Case.state, func.count())
                                   .group_by(Case.state)).all())
            mailboxes = [{"source": m.source, "uidvalidity": m.uidvalidity,
                          "last_uid": m.last_uid,
                          "last_poll": m.updated_at.isoformat() if m.updated_at else None,
                          "last_sweep": m.last_sweep_at.isoformat() if m.last_sweep_at else None}
                         for m in s.scalars(select(MailboxState).order_by(MailboxState.source))]

            def rows(status: str) -> list[dict[str, Any]]:
                return [{"id": m.id, "message_id": m.message_id, "subject": m.subject,
                         "from": m.from_addr, "size": m.size, "attempts": m.attempts,
                         "error": m.last_error, "source": m.source, "uid": m.uid,
                         "key": m.source_key}
                        for m in s.scalars(select(Message).where(Message.status == status)
                                           .order_by(Message.id))]

            return {"messages": messages, "cases": cases, "mailboxes": mailboxes,
                    "parked": rows(MESSAGE_PARKED), "oversize": rows(MESSAGE_OVERSIZE)}
    finally:
        engine.dispose()


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        st = collect_status(args.config)
    except Exception as exc:  # noqa: BLE001 - e.g. no database yet
        print(f"mailbot status: cannot read the database: {exc} / 无法读取数据库"
              " (run `mailbot init`)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(st, ensure_ascii=False, indent=2))
        return 0
    print("Messages / 邮件:")
    for status, n in sorted(st["messages"].items()):
        print(f"  {status:<12} {n}")
    if not st["messages"]:
        print("  (none / 无)")
    print("Cases / 案件:")
    for state, n in sorted(st["cases"].items()):
        print(f"  {state:<22} {n}")
    if not st["cases"]:
        print("  (none / 无)")
    print("Mailboxes / 邮箱 (last poll / 最近收取):")
    for m in st["mailboxes"]:
        print(f"  {m['source']}  last poll {m['last_poll']}  last sweep {m['last_sweep']}"
              f"  last UID {m['last_uid']}")
    if not st["mailboxes"]:
        print("  (never polled / 尚未收取)")
    print("Parked messages / 搁置的邮件 (mailbot reprocess ID):")
    for r in st["parked"]:
        print(f"  #{r['id']} {r['message_id'] or '-'} {r['subject'] or ''!s}"
              f"  attempts {r['attempts']}: {r['error'] or ''}")
    if not st["parked"]:
        print("  (none / 无)")
    print("Oversize messages left on the server / 超过大小限制、留在服务器上的邮件:")
    for r in st["oversize"]:
        print(f"  #{r['id']} {r['source']} UID {r['uid'] or r['key']} {r['size']} bytes")
    if not st["oversize"]:
        print("  (none / 无)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the daemon: read mail, record cases, run jobs / 运行")
    p.add_argument("--once", action="store_true",
                   help="run every job once (all waiting mail, then processing) and exit"
                        " / 只运行一次")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("reprocess", help="process parked messages again / 重新处理搁置的邮件")
    p.add_argument("targets", nargs="*", metavar="MESSAGE_ID_OR_ROW",
                   help="message row id or Message-ID")
    p.add_argument("--all-parked", action="store_true", help="every parked message / 全部")
    p.set_defaults(func=_cmd_reprocess)
    p = sub.add_parser("status", help="messages, cases, last poll, parked mail / 状态")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)
