"""`mailbot cases …` (views and staff actions) and `mailbot audit verify`.

Views open the database read-only and never create one. Staff actions need an existing
schema, take only `--by NAME` (and `--reason` where the contract says), never prompt, and go
through mailbot.cases.workflow (refused: one line, exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.app.judging import rule_context
from mailbot.app.notices import app_sessions
from mailbot.cases import register as case_register
from mailbot.cases import workflow
from mailbot.cases.audit import key_lost_mark, verify_chain
from mailbot.cases.models import CASE_STATES, AuditEntry, Case, CaseNotice
from mailbot.cases.store import CaseStore
from mailbot.cli.errors import OperationFailed, UsageError
from mailbot.db import make_engine, require_schema, session_factory
from mailbot.intake.facts import FORM_KEYS
from mailbot.intake.models import Message
from mailbot.rules.materials import configured_required

T = TypeVar("T")
WRITE_TRIES = 3  # a clash with another writer on the audit chain head: read again, retry

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


def _write(args: argparse.Namespace, action: Callable[[Session], T]) -> T:
    """Run a staff action in one transaction on an existing database; a refusal is one line
    (exit 1), a clash with another writer on the audit chain is retried."""
    url = args.config.database_url
    require_schema(url)
    engine = make_engine(url)
    try:
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                # app's sessions: the commit queues the mail the action asks for
                with app_sessions(args.config, engine)() as s:
                    result = action(s)
                    s.commit()
                    return result
            except workflow.TransitionRefused as exc:
                raise OperationFailed(str(exc), "该操作不允许") from None
            except IntegrityError:
                if attempt == WRITE_TRIES:
                    raise
        raise AssertionError("unreachable")
    finally:
        engine.dispose()


def _staff_name(value: str) -> str:
    name = value.strip()
    if not workflow.is_staff(name):
        raise UsageError(f"--by {value!r}: give a staff member's name (not system or "
                         "message:…)", "请用 --by 填写经办人员姓名")
    return name


def _case(s: Session, ref: str) -> Case:
    case = workflow.case_for_update(s, ref)
    if case is None:
        raise OperationFailed(f"no such case: {ref}", "无此案件")
    return case


def _policy(args: argparse.Namespace) -> workflow.Policy:
    return workflow.Policy.from_config(args.config.cases)


def _required(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    return configured_required(args.config.rules_dir)


URGENT_TEXT = "!! URGENT 紧急"
KEY_LOST_TEXT = ("key lost, leaked or damaged: revoke with reason keyCompromise / "
                 "密钥丢失、泄露或损毁，按 keyCompromise 尽快注销")


def case_summary(case: Case, urgent: bool | None = None) -> dict[str, Any]:
    """One case for `list`; `urgent` when known (a list looks it up for all at once)."""
    return {"ref": case.ref, "kind": case.kind, "state": case.state, "company": case.company,
            "applicant_address": case.applicant_address,
            "created_at": case.created_at.isoformat(), "updated_at": case.updated_at.isoformat(),
            "confirmed_by": case.confirmed_by,
            "to_call": case.state == "delivered" and case.called_at is None,
            "urgent": workflow.is_urgent(case) if urgent is None else urgent}


def case_detail(session: Session, case: Case,
                required: dict[str, tuple[str, ...]] | None = None,
                expiry_days: int = 0) -> dict[str, Any]:
    """What staff see of one case; `required`: the configured rules' required materials."""
    since = case.state_changed_at or case.updated_at
    expires = (since + timedelta(days=expiry_days)).isoformat() \
        if case.state == "incomplete" and expiry_days > 0 else None
    store = CaseStore(session, required)
    messages = session.scalars(select(Message).where(Message.case_id == case.id)
                               .order_by(Message.id)).all()
    mark = key_lost_mark(session, case)
    return {
        **case_summary(case),
        "key_lost": ({"by": mark.actor, "at": mark.at.isoformat(), "reason": mark.reason}
                     if mark is not None else None),
        "fields": {f.key: {"value": f.value, "source": f.source} for f in case.fields},
        "missing": store.missing_materials(case),
        "findings": [{"code": f.code, "severity": f.severity, "detail": f.detail,
                      "open": f.resolved_at is None and f.overridden_by is None,
                      "overridden_by": f.overridden_by, "override_reason": f.override_reason}
                     for f in case.findings],
        "confirmed": ({"by": case.confirmed_by, "at": case.confirmed_at.isoformat()}
                      if case.confirmed_at else None),
        "called": ({"by": case.called_by, "at": case.called_at.isoformat()}
                   if case.called_at else None),
        "expires_at": expires,
        "messages": [{"id": m.id, "message_id": m.message_id, "subject": m.subject,
                      "from": m.from_addr, "kind": m.kind, "fetched_at": m.fetched_at.isoformat(),
                      "attachments": [{"filename": a.filename, "materials": a.materials,
                                       "size": a.size} for a in m.attachments]}
                     for m in messages],
        "audit": [{"at": a.at.isoformat(), "actor": a.actor, "action": a.action,
                   "from": a.from_state, "to": a.to_state, "reason": a.reason, "via": a.via}
                  for a in session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                                           .order_by(AuditEntry.id))],
        "notices": [{"at": n.created_at.isoformat(), "template": n.template,
                     "recipients": n.recipients, "message_row_id": n.message_row_id,
                     "queued": n.queued_at is not None}
                    for n in session.scalars(select(CaseNotice).where(
                        CaseNotice.case_id == case.id).order_by(CaseNotice.id))],
    }


def _cmd_list(args: argparse.Namespace) -> int:
    with _session(args) as s:
        q = select(Case).order_by(Case.id)
        if args.state:
            q = q.where(Case.state == args.state)
        if args.to_call:
            q = q.where(Case.state == "delivered", Case.called_at.is_(None))
        cases = s.scalars(q).all()
        urgent = workflow.urgent_case_ids(s)
        if args.json:
            print(json.dumps([case_summary(c, c.id in urgent) for c in cases],
                             ensure_ascii=False, indent=1))
            return 0
        print(f"{'ref 编号':<14} {'kind 类别':<9} {'state 状态':<28} company 企业")
        for c in cases:
            state = f"{c.state} {STATE_NAMES.get(c.state, '')}"
            mark = f"  {URGENT_TEXT}" if c.id in urgent else ""
            print(f"{c.ref:<14} {c.kind:<9} {state:<28} {c.company or '-'}{mark}")
        print(f"{len(cases)} case(s) / 共 {len(cases)} 件")
        shown = sum(1 for c in cases if c.id in urgent)
        if shown:
            print(f"{shown} urgent / 紧急 {shown} 件: {KEY_LOST_TEXT}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with _session(args) as s:
        case = CaseStore(s).by_ref(args.ref)
        if case is None:
            raise OperationFailed(f"no such case: {args.ref}", "无此案件")
        detail = case_detail(s, case, configured_required(args.config.rules_dir),
                             args.config.cases.incomplete_expiry_days)
    if args.json:
        print(json.dumps(detail, ensure_ascii=False, indent=1))
        return 0
    print(f"{detail['ref']}  {detail['kind']}  {detail['state']} {STATE_NAMES.get(detail['state'], '')}")
    print(f"company 企业: {detail['company'] or '-'}   reply to 回复地址: {detail['applicant_address']}")
    if detail["urgent"]:
        print(f"{URGENT_TEXT}: {KEY_LOST_TEXT}")
    if detail["key_lost"]:
        mark = detail["key_lost"]
        print(f"key lost 密钥丢失: marked by {mark['by']} {mark['at'][:19]}: {mark['reason']}")
    print("fields 表单字段:")
    for key, f in detail["fields"].items():
        print(f"  {key}: {f['value']} ({f['source']})")
    print(f"missing 缺少材料: {', '.join(detail['missing']) or '-'}")
    if detail["confirmed"]:
        print(f"phone confirmed 电话确认: {detail['confirmed']['by']} {detail['confirmed']['at']}")
    if detail["expires_at"]:
        print(f"expires 过期时间: {detail['expires_at']}")
    if detail["state"] == "delivered":
        called = detail["called"]
        print(f"call 回访: {called['by'] + ' ' + called['at'] if called else 'to call 待回访'}")
    print("findings 问题 (* open 未解决):")
    for f in detail["findings"]:
        mark = "*" if f["open"] else " "
        over = (f"  [overridden by {f['overridden_by']}: {f['override_reason']}]"
                if f["overridden_by"] else "")
        print(f" {mark}{f['severity']:<8} {f['code']}: {f['detail']}{over}")
    print("messages 邮件:")
    for m in detail["messages"]:
        print(f"  #{m['id']} {m['kind']} {m['from']} {m['subject']}")
        for a in m["attachments"]:
            print(f"      {a['filename']} [{', '.join(a['materials'])}] {a['size']} B")
    print("history 记录:")
    for a in detail["audit"]:
        move = f" {a['from'] or ''}->{a['to']}" if a["to"] else ""
        via = f" via {a['via']}" if a["via"] else ""
        print(f"  {a['at'][:19]} {a['actor']}{via}: {a['action']}{move}"
              f"{': ' + a['reason'] if a['reason'] else ''}")
    if detail["notices"]:
        print("to send 待发送:")
        for n in detail["notices"]:
            print(f"  {n['at'][:19]} {n['template']} -> {n['recipients']}"
                  f"{' (queued)' if n['queued'] else ''}")
    return 0


def _done(case: Case, what: str, notice: workflow.Notice | None = None) -> int:
    text = f"{case.ref}: {what}; now {case.state} {STATE_NAMES.get(case.state, '')}"
    if notice is not None:
        text += f"; to send: {notice.template} -> {notice.recipients}"
    print(text)
    return 0


def _cmd_edit(args: argparse.Namespace) -> int:
    values: dict[str, str] = {}
    for item in args.assignments:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in FORM_KEYS:
            raise UsageError(f"cases edit: {item!r}: use field=value with a form key of "
                             f"{', '.join(FORM_KEYS)}", "字段名有误")
        values[key] = value
    by = _staff_name(args.by)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        notice = workflow.edit(s, case, values, by=by, required=_required(args),
                               **rule_context(args.config))
        return _done(case, f"{len(values)} field(s) set by {by}", notice)
    return _write(args, act)


def _cmd_confirm(args: argparse.Namespace) -> int:
    by = _staff_name(args.by)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        workflow.confirm(s, case, by=by)
        return _done(case, f"phone confirmation recorded by {by}")
    return _write(args, act)


def _cmd_approve(args: argparse.Namespace) -> int:
    by = _staff_name(args.by)
    checks = [key for key in workflow.CHECKLIST if getattr(args, key)]
    policy = _policy(args)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        notice = workflow.approve(s, case, by=by, policy=policy, checklist=checks)
        if case.state != "approved":
            got = len(workflow.approvals_so_far(s, case))
            return _done(case, f"approval {got} of {policy.approvals_required} recorded ({by});"
                               " another staff member must approve")
        return _done(case, f"approved by {by}", notice)
    return _write(args, act)


def _cmd_reject(args: argparse.Namespace) -> int:
    by = _staff_name(args.by)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        return _done(case, f"rejected by {by}", workflow.reject(s, case, by=by,
                                                                reason=args.reason))
    return _write(args, act)


def _cmd_close(args: argparse.Namespace) -> int:
    by = _staff_name(args.by)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        return _done(case, f"closed by {by}", workflow.close(s, case, by=by, reason=args.reason))
    return _write(args, act)


def _cmd_override(args: argparse.Namespace) -> int:
    by = _staff_name(args.by)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        notice = workflow.override(s, case, args.code, by=by, reason=args.reason,
                                   required=_required(args), **rule_context(args.config))
        return _done(case, f"{args.code} overridden by {by}", notice)
    return _write(args, act)


def _cmd_key_lost(args: argparse.Namespace) -> int:
    by = _staff_name(args.by)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        notice = workflow.mark_key_lost(s, case, by=by, reason=args.reason,
                                        required=_required(args), **rule_context(args.config))
        what = f"key marked lost, leaked or damaged by {by}"
        if workflow.is_urgent(case):
            what += f"; {URGENT_TEXT}: {KEY_LOST_TEXT}"
        else:  # the operator switched the rule off
            what += ("; but rule key_compromise is switched off in rules.toml: the revocation "
                     "reason stays cessationOfOperation")
        return _done(case, what, notice)
    return _write(args, act)


def _cmd_called(args: argparse.Namespace) -> int:
    by = _staff_name(args.by)

    def act(s: Session) -> int:
        case = _case(s, args.ref)
        workflow.called(s, case, by=by)
        return _done(case, f"handler called, recorded by {by}")
    return _write(args, act)


def _cmd_export(args: argparse.Namespace) -> int:
    from mailbot.app.staff import StaffActionFailed, export_case

    with _session(args) as s:
        try:
            written = export_case(args.config, s, args.ref, Path(args.dir))
        except StaffActionFailed as exc:
            raise OperationFailed(str(exc), "导出失败") from None
    for path in written:
        print(path)
    print(f"{len(written)} file(s) written to {args.dir} / 已导出 {len(written)} 个文件")
    return 0


def _cmd_new(args: argparse.Namespace) -> int:
    from mailbot.app.staff import StaffActionFailed, new_from_dir
    from mailbot.cli.logs import ProgressLine

    by = _staff_name(args.by)
    url = args.config.database_url
    require_schema(url)
    engine = make_engine(url)
    try:
        with ProgressLine("cases new") as progress:  # on stderr; stdout keeps its one line
            result = new_from_dir(args.config, app_sessions(args.config, engine),
                                  Path(args.from_dir), by=by, progress=progress)
    except StaffActionFailed as exc:
        raise OperationFailed(str(exc), "现场受理失败") from None
    finally:
        engine.dispose()
    progress.finish(f"{result.ref} {result.state}")
    print(f"{result.ref}: taken in by {by} (message {result.message_row_id}); now "
          f"{result.state} {STATE_NAMES.get(result.state, '')}")
    return 0


def _register_day(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"{flag} {value!r}: give a date as YYYY-MM-DD",
                         "日期格式应为 YYYY-MM-DD") from None


def _width(text: str) -> int:
    """Columns a text takes in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _cmd_register(args: argparse.Namespace) -> int:
    start = _register_day(args.start, "--from")
    end = _register_day(args.end, "--to")
    if start and end and start > end:
        raise UsageError(f"--from {start} is after --to {end}", "起始日期晚于截止日期")
    target = Path(args.csv) if args.csv else None
    if target is not None and target.exists() and not args.force:
        raise OperationFailed(f"{target} exists; not overwriting it (give --force to replace "
                              "it)", "文件已存在，如需覆盖请加 --force")
    with _session(args) as s:
        rows = case_register.register_rows(s, start=start, end=end)
    if args.json:
        print(json.dumps([r.as_json(n) for n, r in enumerate(rows, 1)], ensure_ascii=False,
                         indent=1))
        return 0
    if target is not None:
        data = case_register.csv_bytes(rows)
        try:
            with open(target, "wb" if args.force else "xb") as fh:
                fh.write(data)
        except FileExistsError:
            raise OperationFailed(f"{target} exists; not overwriting it (give --force to "
                                  "replace it)", "文件已存在，如需覆盖请加 --force") from None
        except OSError as exc:
            raise OperationFailed(f"cannot write {target}: {exc.strerror or exc}",
                                  "无法写入文件") from None
        print(f"{len(rows)} case(s) written to {target} / 已导出 {len(rows)} 件")
        return 0
    table = [[h for _k, h in case_register.COLUMNS]]
    table += [[c[k] for k, _h in case_register.COLUMNS]
              for c in (r.cells(n) for n, r in enumerate(rows, 1))]
    widths = [max(_width(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(_pad(cell, w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print(f"{len(rows)} case(s) / 共 {len(rows)} 件")
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
    p.add_argument("--to-call", action="store_true",
                   help="delivered cases whose handler is still to be called / 待回访")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)
    p = csub.add_parser("show", help="one case in full, with its history / 案件详情")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_show)

    def staff(name: str, func: Callable[[argparse.Namespace], int], text: str, *,
              reason: bool = False) -> argparse.ArgumentParser:
        sp = csub.add_parser(name, help=text)
        sp.add_argument("ref")
        sp.add_argument("--by", required=True, metavar="NAME", help="staff member / 经办人员")
        if reason:
            sp.add_argument("--reason", required=True, metavar="TEXT", help="why / 原因")
        sp.set_defaults(func=func)
        return sp

    p = staff("edit", _cmd_edit, "type in form fields: key=value … / 录入表单字段")
    p.add_argument("assignments", nargs="+", metavar="FIELD=VALUE")
    staff("confirm", _cmd_confirm, "phone confirmation done / 已电话确认")
    p = staff("approve", _cmd_approve, "approve (confirmed by phone) / 审核通过")
    for key, text in workflow.CHECKLIST.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, action="store_true",
                       help=f"checked: {text}")
    staff("reject", _cmd_reject, "reject / 退回", reason=True)
    staff("close", _cmd_close, "close / 关闭", reason=True)
    p = staff("override", _cmd_override, "override the open findings of CODE / 人工放行",
              reason=True)
    p.add_argument("code")
    p = staff("key-lost", _cmd_key_lost, "a revocation whose key was lost, leaked or damaged: "
              "urgent, reason keyCompromise / 密钥丢失、泄露或损毁")
    p.add_argument("--reason", metavar="TEXT", help="what the applicant said / 说明")
    staff("called", _cmd_called, "the handler was called after delivery / 已回访")
    p = csub.add_parser("export", help="the case's mails and attachments into DIR / 导出材料")
    p.add_argument("ref")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_export)
    p = csub.add_parser("new", help="an application handed in at the hall / 现场受理")
    p.add_argument("--from-dir", required=True, metavar="DIR", dest="from_dir")
    p.add_argument("--by", required=True, metavar="NAME")
    p.set_defaults(func=_cmd_new)
    p = csub.add_parser("register", help="the 受理登记 register, as a table or CSV / 受理登记表")
    p.add_argument("--from", dest="start", metavar="DATE",
                   help="cases opened on or after DATE (YYYY-MM-DD, Asia/Shanghai)")
    p.add_argument("--to", dest="end", metavar="DATE",
                   help="cases opened on or before DATE (YYYY-MM-DD, Asia/Shanghai)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE",
                     help="write CSV for Excel (UTF-8 with BOM) to FILE; an existing FILE is "
                          "refused unless --force")
    out.add_argument("--json", action="store_true")
    p.add_argument("--force", action="store_true", help="with --csv: replace an existing FILE")
    p.set_defaults(func=_cmd_register)
    audit = sub.add_parser("audit", help="audit log / 审计日志")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("verify", help="check the SM3 chain / 校验审计链")
    p.set_defaults(func=_cmd_audit_verify)
