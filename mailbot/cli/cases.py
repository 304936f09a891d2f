"""`mailbot cases list|show` and `mailbot audit verify` (read-only views for staff)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.cases.audit import verify_chain
from mailbot.cases.models import CASE_STATES, AuditEntry, Case
from mailbot.cases.store import CaseStore
from mailbot.cli.errors import OperationFailed
from mailbot.db import make_engine, require_schema, session_factory
from mailbot.intake.models import Message
from mailbot.rules.materials import configured_required

STATE_NAMES = {
    "received": "已接收", "incomplete": "材料不全", "awaiting_confirmation": "待电话确认",
    "approved": "已审核", "issued": "已签发", "delivered": "已发送", "rejected": "已退回",
    "revoked": "已注销", "expired": "已过期", "closed": "已关闭",
}


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Session]:
    """A read-only session on an existing database; where there is none, NoDatabase (exit 1)
    and nothing is created."""
    url = args.config.database_url
    require_schema(url)
    engine = make_engine(url, read_only=True)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def case_summary(case: Case) -> dict[str, Any]:
    return {"ref": case.ref, "kind": case.kind, "state": case.state, "company": case.company,
            "applicant_address": case.applicant_address,
            "created_at": case.created_at.isoformat(), "updated_at": case.updated_at.isoformat()}


def case_detail(session: Session, case: Case,
                required: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """What staff see of one case; `required`: the configured rules' required materials."""
    store = CaseStore(session, required)
    messages = session.scalars(select(Message).where(Message.case_id == case.id)
                               .order_by(Message.id)).all()
    return {
        **case_summary(case),
        "fields": {f.key: {"value": f.value, "source": f.source} for f in case.fields},
        "missing": store.missing_materials(case),
        "findings": [{"code": f.code, "severity": f.severity, "detail": f.detail,
                      "open": f.resolved_at is None and f.overridden_by is None}
                     for f in case.findings],
        "messages": [{"id": m.id, "message_id": m.message_id, "subject": m.subject,
                      "from": m.from_addr, "kind": m.kind, "fetched_at": m.fetched_at.isoformat(),
                      "attachments": [{"filename": a.filename, "materials": a.materials,
                                       "size": a.size} for a in m.attachments]}
                     for m in messages],
        "audit": [{"at": a.at.isoformat(), "actor": a.actor, "action": a.action,
                   "from": a.from_state, "to": a.to_state, "reason": a.reason}
                  for a in session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                                           .order_by(AuditEntry.id))],
    }


def _cmd_list(args: argparse.Namespace) -> int:
    with _session(args) as s:
        q = select(Case).order_by(Case.id)
        if args.state:
            q = q.where(Case.state == args.state)
        cases = s.scalars(q).all()
        if args.json:
            print(json.dumps([case_summary(c) for c in cases], ensure_ascii=False, indent=1))
            return 0
        print(f"{'ref 编号':<14} {'kind 类别':<9} {'state 状态':<28} company 企业")
        for c in cases:
            state = f"{c.state} {STATE_NAMES.get(c.state, '')}"
            print(f"{c.ref:<14} {c.kind:<9} {state:<28} {c.company or '-'}")
        print(f"{len(cases)} case(s) / 共 {len(cases)} 件")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with _session(args) as s:
        case = CaseStore(s).by_ref(args.ref)
        if case is None:
            raise OperationFailed(f"no such case: {args.ref}", "无此案件")
        detail = case_detail(s, case, configured_required(args.config.rules_dir))
    if args.json:
        print(json.dumps(detail, ensure_ascii=False, indent=1))
        return 0
    print(f"{detail['ref']}  {detail['kind']}  {detail['state']} {STATE_NAMES.get(detail['state'], '')}")
    print(f"company 企业: {detail['company'] or '-'}   reply to 回复地址: {detail['applicant_address']}")
    print("fields 表单字段:")
    for key, f in detail["fields"].items():
        print(f"  {key}: {f['value']} ({f['source']})")
    print(f"missing 缺少材料: {', '.join(detail['missing']) or '-'}")
    print("findings 问题:")
    for f in detail["findings"]:
        mark = "*" if f["open"] else " "
        print(f" {mark}{f['severity']:<8} {f['code']}: {f['detail']}")
    print("messages 邮件:")
    for m in detail["messages"]:
        print(f"  #{m['id']} {m['kind']} {m['from']} {m['subject']}")
        for a in m["attachments"]:
            print(f"      {a['filename']} [{', '.join(a['materials'])}] {a['size']} B")
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    with _session(args) as s:
        report = verify_chain(s)
    if report.ok:
        print(f"ok: audit chain intact, {report.rows} row(s) / 审计链完整")
        return 0
    print(f"BROKEN: audit row {report.broken_id}: {report.problem} / 审计链在第 {report.broken_id}"
          " 行断开", file=sys.stderr)
    return 1


def register(sub: argparse._SubParsersAction) -> None:
    cases = sub.add_parser("cases", help="cases / 案件")
    csub = cases.add_subparsers(dest="cases_command", metavar="ACTION", required=True)
    p = csub.add_parser("list", help="list cases / 案件列表")
    p.add_argument("--state", choices=CASE_STATES, metavar="STATE",
                   help=f"only this state: {', '.join(CASE_STATES)}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)
    p = csub.add_parser("show", help="one case in full / 案件详情")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_show)
    audit = sub.add_parser("audit", help="audit log / 审计日志")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("verify", help="check the SM3 chain / 校验审计链")
    p.set_defaults(func=_cmd_audit_verify)
