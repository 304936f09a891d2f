"""`mailbot inspect FILE.eml [--json]`: what the daemon would decide for one message.

Touches no mailbox and no database. Reads any file whatever its size (mapped, not read in).
"""

from __future__ import annotations

import argparse
import json
import mmap
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mailbot.app.inspection import inspect_with_rules
from mailbot.config import load_rule_settings
from mailbot.intake.facts import MessageFacts

KIND_LABELS = {"new": "新办申请 new application", "revoke": "注销申请 revocation",
               "reply": "回复 reply to a case", "auto_reply": "自动回复 automatic reply",
               "bounce": "退信 bounce", "unrelated": "无关邮件 unrelated"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="analyse one .eml without touching mailbox or database"
                                       " / 分析单封邮件")
    p.add_argument("file", metavar="FILE", help="raw message (.eml)")
    p.add_argument("--json", action="store_true", help="print the inspect JSON")
    p.set_defaults(func=_cmd_inspect)


@contextmanager
def _mapped(path: str) -> Iterator[Any]:
    """The file's bytes: mmap for anything non-empty (no copy of a 64 MB message)."""
    with open(path, "rb") as fh:
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty file or not mappable (a pipe)
            yield fh.read()
            return
        try:
            yield mm
        finally:
            mm.close()


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The rules files in use: the daemon's, so inspect decides as it would."""
    return load_rule_settings(args.config.rules_dir)


def summary(facts: MessageFacts, ran: list[str] | None = None) -> str:
    """A short bilingual summary for staff."""
    data = facts.to_inspect_json()
    lines = [f"类型 kind:      {KIND_LABELS.get(data['kind'], data['kind'])}",
             f"主题 subject:   {facts.subject}",
             f"发件人 from:    {facts.from_addr or '-'}",
             f"单位 company:   {data['company'] or '-'}",
             f"案件 case:      {data['case_ref'] or '-'}"]
    lines.append("附件 attachments:")
    for row in data["attachments"] or [{"filename": "-", "material": "", "size": 0}]:
        if row["filename"] == "-":
            lines.append("  (none / 无)")
        else:
            lines.append(f"  {row['filename']}  [{row['material']}]  {row['size']} bytes")
    lines.append(f"缺少 missing:    {', '.join(data['missing']) or '-'}")
    if data["csr"]:
        c = data["csr"]
        lines.append(f"CSR:            {'valid 有效' if c['valid'] else 'INVALID 无效'} "
                     f"{c['algorithm']} {c['subject']} {' '.join(c['codes'])}")
    for key, value in data["form"].items():
        lines.append(f"表单 form.{key}: {value}")
    for f in data["findings"]:
        lines.append(f"发现 finding:    [{f['severity']}] {f['code']}: {f['detail']}")
    if ran is not None:
        lines.append(f"规则 rules run:  {', '.join(ran) or '-'}")
    return "\n".join(lines)


def _cmd_inspect(args: argparse.Namespace) -> int:
    try:
        with _mapped(args.file) as raw:
            facts, evaluation = inspect_with_rules(raw, _settings(args))
            data = {**facts.to_inspect_json(), "rules": evaluation.to_json()}
            out = (json.dumps(data, ensure_ascii=False, indent=2)
                   if args.json else summary(facts, evaluation.ran))
    except OSError as exc:
        print(f"mailbot inspect: cannot read {args.file}: {exc} / 无法读取文件", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(out.encode("utf-8") + b"\n")
    sys.stdout.flush()
    return 0
