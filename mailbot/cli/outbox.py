"""`mailbot outbox list|retry`: the outgoing mail as staff and operators see it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from mailbot.cli.errors import OperationFailed, UsageError
from mailbot.clock import local, now
from mailbot.db import make_engine, require_schema, session_factory
from mailbot.outbox.models import STATES, OutboxMessage
from mailbot.outbox.queue import requeue

STATE_NAMES = {"queued": "待发送", "sent": "已发送", "failed": "发送失败",
               "suppressed": "不发送"}


def _row(r: OutboxMessage) -> dict[str, Any]:
    return {"id": r.id, "ref": r.case_ref, "template": r.template, "to": list(r.to_addrs),
            "state": r.state, "attempts": r.attempts, "message_id": r.message_id,
            "created_at": r.created_at.isoformat() if r.created_at else None,
            "sent_at": r.sent_at.isoformat() if r.sent_at else None,
            "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at else None,
            "error": r.last_error, "copy_state": r.copy_state, "copy_error": r.copy_error}


def _cmd_list(args: argparse.Namespace) -> int:
    if args.state and args.state not in STATES:
        raise UsageError(f"outbox list: unknown state {args.state!r} (use {', '.join(STATES)})",
                         "未知状态")
    url = args.config.database_url
    require_schema(url)
    engine = make_engine(url, read_only=True)
    try:
        with session_factory(engine)() as s:
            # Not the bytes (a result mail holds certificates and the notice PDF).
            query = select(OutboxMessage).options(defer(OutboxMessage.raw)).order_by(
                OutboxMessage.id)
            if args.state:
                query = query.where(OutboxMessage.state == args.state)
            found = list(s.scalars(query))
            rows = [_row(r) for r in found]
            created = [r.created_at for r in found]
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for r, at in zip(rows, created, strict=True):
        when = local(at).strftime("%m-%d %H:%M") if at else "-"
        print(f"#{r['id']:<5} {when}  {r['ref'] or '-':<13} {r['template']:<15} "
              f"{r['state']} {STATE_NAMES.get(r['state'], '')}  {', '.join(r['to'])}"
              + (f"  ({r['error']})" if r["error"] and r["state"] != "sent" else ""))
    print(f"{len(rows)} mail(s) / 共 {len(rows)} 封")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    url = args.config.database_url
    require_schema(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            for row_id in args.ids:
                row = s.get(OutboxMessage, row_id)
                if row is None:
                    raise OperationFailed(f"outbox {row_id}: no such mail", "没有这封邮件")
                try:
                    requeue(row, now(), rerender=args.rerender)
                except ValueError as exc:
                    raise OperationFailed(str(exc), "该邮件已发送，不再重发") from None
            s.commit()
    finally:
        engine.dispose()
    print(f"queued again / 已重新排队: {', '.join(f'#{i}' for i in args.ids)}"
          " (sent by the next run / 下次运行时发送)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="outgoing mail / 发件箱")
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    q = osub.add_parser("list", help="outgoing mail and its state / 列出发件")
    q.add_argument("--state", help=f"only this state: {', '.join(STATES)}")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_list)
    q = osub.add_parser("retry", help="send failed mail again / 重新发送失败的邮件")
    q.add_argument("ids", nargs="+", type=int, metavar="ID", help="outbox id (outbox list)")
    q.add_argument("--rerender", action="store_true",
                   help="make the mail again from the templates (after fixing them) / 重新生成")
    q.set_defaults(func=_cmd_retry)
