"""`mailbot run [--once]`, `mailbot reprocess`, `mailbot status`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mailbot.app.status import collect_status
from mailbot.cli.errors import EXIT_INTERRUPTED, UsageError
from mailbot.config import Config
from mailbot.db import require_schema

log = logging.getLogger(__name__)

JOB_TITLES = {"mailbox": "staff marks / 邮箱审核标记", "issuance": "issuance / 签发",
              "outbox": "outbox / 发件", "expiry": "expiry / 过期", "crl": "CRL / 证书撤销列表",
              "digest": "digest / 日报"}


def _prepare(cfg: Config) -> None:
    """Folders and schema as `mailbot init` makes them, so `run` works on a fresh ./var; the
    CA: the soft test CA made on the first start where [ca] is left at its defaults, else
    checked to be there (a missing key or SDF device refuses the start: one line, exit 1)."""
    from mailbot.app.outbox_job import check_outbox
    from mailbot.app.workspace import init_workspace, prepare_ca

    check_outbox(cfg)  # a broken template or a missing notice font: refused before any work
    init_workspace(cfg)
    made = prepare_ca(cfg)
    if made:
        print(f"mailbot: {made} / 已创建测试 CA", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from mailbot.app.daemon import Daemon
    from mailbot.app.instance import hold_instance_lock, startup_line
    from mailbot.db import make_engine

    cfg: Config = args.config
    # A failure to start or of the run itself (mailbox, database) propagates to the one
    # handler in mailbot.cli.main: one line, exit 1 (2 for a configuration mistake); so
    # does a second instance on this mailbox and database, refused before it makes anything.
    lock_engine = make_engine(cfg.database_url)  # the lock's own: the daemon has its engine
    try:
        with hold_instance_lock(cfg, lock_engine) as lock:
            _prepare(cfg)
            daemon = Daemon(cfg, once=args.once, still_held=lock.still_held)
            if not args.once:
                print(startup_line(cfg, daemon.source), file=sys.stderr, flush=True)
                return daemon.run_forever()
            report = daemon.run_once()
    finally:
        lock_engine.dispose()
    i, p = report.intake, report.processing
    print(f"intake / 收件: listed {i.listed}, new {i.archived}, duplicate {i.duplicates}, "
          f"oversize {i.oversize}, moved {i.moved}")
    print(f"processing / 处理: processed {p.processed}, cases opened {p.cases_opened}, "
          f"failed {p.failed}, parked {len(p.parked)}")
    for name, summary in report.summaries.items():
        print(f"{JOB_TITLES.get(name, name)}: {summary}")
    if report.move_error:  # reported, but no failure of the run: the mail was processed
        print(f"mailbox / 邮箱: {i.move_failed} message(s) left in the inbox, moving failed:"
              f" {report.move_error} / 邮件已处理, 但未能移出收件箱", file=sys.stderr)
    for err in report.errors:
        print(f"job error / 任务错误: {err}", file=sys.stderr)
    if report.stopped:  # Ctrl-C: the step in hand finished, the rest waits for the next run
        print("mailbot: interrupted; the rest waits for the next run / 已中断", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if report.errors else 0


def _cmd_reprocess(args: argparse.Namespace) -> int:
    from mailbot.app.reprocess import reprocess
    from mailbot.cli.logs import ProgressLine

    if not args.targets and not args.all_parked:
        raise UsageError("reprocess: name message rows or Message-IDs, or --all-parked",
                         "请指定邮件编号或 Message-ID，或 --all-parked")
    cfg: Config = args.config
    require_schema(cfg.database_url)  # nothing to reprocess, and nothing created, without one
    with ProgressLine("reprocess") as progress:  # on stderr; stdout's summary stays as it is
        reset, unknown, report = reprocess(cfg, args.targets, all_parked=args.all_parked,
                                           progress=progress)
    if reset:
        progress.finish()
    for t in unknown:
        print(f"not parked or not found / 未找到或未搁置: {t}", file=sys.stderr)
    print(f"reprocess / 重新处理: {len(reset)} message(s); processed {report.processed}, "
          f"failed {report.failed}, parked again {len(report.parked)}")
    if not reset:
        return 1
    return 1 if unknown or report.failed else 0


def _cmd_status(args: argparse.Namespace) -> int:
    require_schema(args.config.database_url)  # read-only: no database yet is exit 1, not a new one
    st = collect_status(args.config)
    if args.json:
        print(json.dumps(st, ensure_ascii=False, indent=2))
        return 0
    ca_warning = st.get("ca", {}).get("warning")
    if ca_warning:  # on stderr, as `ca show` does
        print(f"mailbot: warning: {ca_warning}", file=sys.stderr)
    nm = st["not_moved"]
    ob = st["outbox"]
    sections = [
        ("Messages / 邮件:", [f"{k:<12} {n}" for k, n in sorted(st["messages"].items())],
         "(none / 无)"),
        ("Cases / 案件:", [f"{k:<22} {n}" for k, n in sorted(st["cases"].items())],
         "(none / 无)"),
        ("Mailboxes / 邮箱 (last poll / 最近收取):",
         [f"{m['source']}  last poll {m['last_poll']}  last sweep {m['last_sweep']}"
          f"  last UID {m['last_uid']}" for m in st["mailboxes"]], "(never polled / 尚未收取)"),
        ("Parked messages / 搁置的邮件 (mailbot reprocess ID):",
         [f"#{r['id']} {r['message_id'] or '-'} {r['subject'] or ''!s}"
          f"  attempts {r['attempts']}: {r['error'] or ''}" for r in st["parked"]],
         "(none / 无)"),
        ("Oversize messages left on the server / 超过大小限制、留在服务器上的邮件:",
         [f"#{r['id']} {r['source']} UID {r['uid'] or r['key']} {r['size']} bytes"
          for r in st["oversize"]], "(none / 无)"),
        ("Processed but not moved out of the inbox / 已处理但未能移出收件箱:",
         [f"{nm['count']} message(s) since {nm['since']}; tried again every cycle / 每个周期重试"]
         * bool(nm["count"])
         + [f"{m['source']}: moving fails since {m['move_failing_since']}: {m['move_error']}"
            for m in st["mailboxes"] if m["move_error"]], "(none / 无)"),
        ("Staff marks in the mailbox that were refused / 邮箱中被拒绝的审核标记:",
         [f"{r['ref']} ({r['state']}) {r['at']}: {r['reason']}"
          for r in st.get("mailbox_refusals", [])], "(none / 无)"),
        ("Waiting for staff / 待工作人员处理:",
         [f"{'!! URGENT 紧急 ' if r['urgent'] else ''}{r['ref']} {r['company'] or ''}: {what}"
          for key, what in (("confirmation", "phone confirmation / 待电话确认"),
                            ("issuance", "approved, not issued / 已审核、未签发"),
                            ("call", "delivered, call the handler / 已发送、待致电经办人"))
          for r in st["waiting"][key]], "(none / 无)"),
        ("Outgoing mail / 发件箱:",
         [f"{k:<12} {n}" for k, n in sorted(ob["states"].items())]
         + [f"queued since {ob['queued_since']}"] * bool(ob["queued_since"])
         + [f"failed / 发送失败: #{r['id']} {r['ref'] or '-'} {r['template']} to "
            f"{', '.join(r['to'])}: {r['error']}" for r in ob["failed"]]
         + [f"no Sent copy / 未存入已发送: #{r['id']} {r['ref'] or '-'}: {r['copy_error']}"
            for r in ob["copy_failed"]], "(none / 无)"),
    ]
    for title, lines, empty in sections:
        print(title)
        for line in lines or [empty]:
            print(f"  {line}")
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
