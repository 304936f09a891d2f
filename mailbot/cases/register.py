"""The 受理登记 register: one row per case, as the source document's 受理登记表 lists them.

`register_rows` reads it (nothing is written); `write_csv` gives the CSV Excel opens (UTF-8
with BOM, CRLF line ends); `COLUMNS` holds each column's stable English key (the `--json`
keys) and its heading (Chinese, with the English key's meaning).

What each column comes from:

* date: the day the case opened (its `created_at`), as a local date of Asia/Shanghai (UTC+8,
  no summer time); `--from`/`--to` select on it, both days included;
* organisation, credit code, handler, phone, serial to revoke: the case's form fields, where
  what staff typed in (`cases edit`) has replaced what the form said; the organisation falls
  back to the case's company;
* certificate serials: the certificates of ours issued for the case (pki_certificates with
  its case_ref), sign before enc, lowercase hex;
* approved by / at and the checklist: the audit log: the staff approvals counted for the row
  that moved the case to ``approved`` (with ``approvals_required = 2`` both of them), or,
  while the case waits for a second approval, the one recorded so far; the checklist ticked
  with `cases approve --stamps-ok …` (the union over those approvals);
* channel: 现场受理 when staff took the application in at the hall (`cases new --from-dir`),
  else 不见面办理 (by mail).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.cases.models import AuditEntry, Case, CaseField
from mailbot.cases.workflow import CHECKLIST, is_staff
from mailbot.pki.models import IssuedCertificate

# Asia/Shanghai: UTC+8 all year (China keeps no summer time), so no tz database is needed.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
KIND_NAMES = {"new": "新办", "revoke": "注销"}
STATE_LABELS = {
    "received": "已接收", "incomplete": "材料不全", "awaiting_confirmation": "待电话确认",
    "approved": "已审核", "issued": "已签发", "delivered": "已发送", "rejected": "已退回",
    "revoked": "已注销", "expired": "已过期", "closed": "已关闭",
}
CHANNEL_MAIL = "不见面办理"   # the source document's 申办方式 2: by mail
CHANNEL_HALL = "现场受理"     # 申办方式 1: at the service hall
HALL_ACTION = "accept_in_person"  # the audit action of `cases new --from-dir`
CHECKED_MARK = "是"

# (key, heading): the order of the CSV and the table. Keys are a contract of `--json`.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("no", "序号 no."),
    ("date", "受理日期 date"),
    ("ref", "受理编号 case"),
    ("type", "申请类别 type"),
    ("channel", "申办方式 channel"),
    ("organisation", "申请单位 organisation"),
    ("org_code", "机构代码 credit code"),
    ("handler", "经办人 handler"),
    ("handler_phone", "联系电话 phone"),
    ("serials", "证书序列号 certificate serials"),
    ("revoke_serial", "待注销证书序号 serial to revoke"),
    ("state", "办理状态 state"),
    ("approved_by", "审核人 approved by"),
    ("approved_at", "审核时间 approved at"),
    ("stamps_ok", "公章齐全 stamps"),
    ("signature_ok", "承诺声明签字 signature"),
    ("server_device", "服务类密码设备 server device"),
    ("eport_access", "符合入网要求 E-Port access"),
)
CHECK_KEYS: tuple[str, ...] = tuple(CHECKLIST)
_CHECKED = re.compile(r";\s*checked:\s*(.+)$")


@dataclass
class Approval:
    by: str
    at: datetime
    via: str | None = None


@dataclass
class RegisterRow:
    """One case in the register; `as_json` gives the stable English keys."""

    ref: str
    day: date
    kind: str
    channel: str
    organisation: str
    org_code: str
    handler: str
    handler_phone: str
    serials: list[str]
    revoke_serial: str
    state: str
    approvals: list[Approval] = field(default_factory=list)
    checks: set[str] = field(default_factory=set)

    def as_json(self, no: int) -> dict[str, Any]:
        return {
            "no": no, "date": self.day.isoformat(), "ref": self.ref, "type": self.kind,
            "type_label": KIND_NAMES.get(self.kind, self.kind), "channel": self.channel,
            "organisation": self.organisation, "org_code": self.org_code,
            "handler": self.handler, "handler_phone": self.handler_phone,
            "serials": list(self.serials), "revoke_serial": self.revoke_serial,
            "state": self.state, "state_label": STATE_LABELS.get(self.state, ""),
            "approvals": [{"by": a.by, "at": a.at.astimezone(SHANGHAI).isoformat(),
                           "via": a.via} for a in self.approvals],
            "checklist": {k: k in self.checks for k in CHECK_KEYS},
        }

    def cells(self, no: int) -> dict[str, str]:
        """The row as text, by column key (what the CSV and the table show)."""
        label = STATE_LABELS.get(self.state, "")
        return {
            "no": str(no), "date": self.day.isoformat(), "ref": self.ref,
            "type": KIND_NAMES.get(self.kind, self.kind), "channel": self.channel,
            "organisation": self.organisation, "org_code": self.org_code,
            "handler": self.handler, "handler_phone": self.handler_phone,
            "serials": " / ".join(self.serials), "revoke_serial": self.revoke_serial,
            "state": f"{label} {self.state}" if label else self.state,
            "approved_by": "; ".join(a.by + (f" (via {a.via})" if a.via == "mailbox" else "")
                                     for a in self.approvals),
            "approved_at": "; ".join(f"{a.at.astimezone(SHANGHAI):%Y-%m-%d %H:%M}"
                                     for a in self.approvals),
            **{k: CHECKED_MARK if k in self.checks else "" for k in CHECK_KEYS},
        }


def local_day(moment: datetime) -> date:
    """The Asia/Shanghai date of a moment (naive values are UTC, as the database keeps them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(SHANGHAI).date()


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), SHANGHAI).astimezone(UTC)


def _checked(reason: str | None) -> set[str]:
    """The checklist keys an approval row's reason names ("…; checked: stamps_ok, …")."""
    m = _CHECKED.search(reason or "")
    if not m:
        return set()
    return {k.strip() for k in m.group(1).split(",") if k.strip() in CHECKLIST}


def _approvals(entries: Iterable[AuditEntry]) -> tuple[list[AuditEntry], set[str]]:
    """The approvals that count: those of the last move to approved (the row itself and the
    staff approvals recorded since the state before it), else those of the current round."""
    pending: list[AuditEntry] = []
    counted: list[AuditEntry] | None = None
    for e in entries:
        if e.to_state is None:
            if e.action == "approve" and is_staff(e.actor):
                pending.append(e)
            continue
        if e.to_state == "approved" and is_staff(e.actor):
            counted = [*pending, e]
        pending = []
    rows = counted if counted is not None else pending
    checks: set[str] = set()
    for e in rows:
        checks |= _checked(e.reason)
    return rows, checks


def register_rows(session: Session, *, start: date | None = None,
                  end: date | None = None) -> list[RegisterRow]:
    """Every case opened from `start` to `end` (local dates, both included), by number."""
    q = select(Case).order_by(Case.created_at, Case.id)
    if start is not None:
        q = q.where(Case.created_at >= _day_start(start))
    if end is not None:
        q = q.where(Case.created_at < _day_start(end + timedelta(days=1)))
    cases = list(session.scalars(q))
    if not cases:
        return []
    ids = [c.id for c in cases]
    refs = [c.ref for c in cases]
    fields: dict[int, dict[str, str]] = {}
    for f in session.scalars(select(CaseField).where(CaseField.case_id.in_(ids))):
        fields.setdefault(f.case_id, {})[f.key] = f.value
    audit: dict[int, list[AuditEntry]] = {}
    for e in session.scalars(select(AuditEntry).where(AuditEntry.case_id.in_(ids))
                             .order_by(AuditEntry.id)):
        audit.setdefault(e.case_id or 0, []).append(e)
    serials: dict[str, list[str]] = {}
    for ref, serial in session.execute(
            select(IssuedCertificate.case_ref, IssuedCertificate.serial)
            .where(IssuedCertificate.case_ref.in_(refs))
            .order_by(IssuedCertificate.case_ref, IssuedCertificate.kind != "sign",
                      IssuedCertificate.id)):
        serials.setdefault(ref, []).append(serial.lower())
    rows = []
    for case in cases:
        f = fields.get(case.id, {})
        entries = audit.get(case.id, [])
        approvals, checks = _approvals(entries)
        hall = any(e.action == HALL_ACTION for e in entries)
        rows.append(RegisterRow(
            ref=case.ref, day=local_day(case.created_at), kind=case.kind,
            channel=CHANNEL_HALL if hall else CHANNEL_MAIL,
            organisation=(f.get("applicant_org") or case.company or "").strip(),
            org_code=f.get("org_code", "").strip(), handler=f.get("handler_name", "").strip(),
            handler_phone=f.get("handler_phone", "").strip(),
            serials=serials.get(case.ref, []), revoke_serial=f.get("revoke_serial", "").strip(),
            state=case.state,
            approvals=[Approval(e.actor, e.at, e.via) for e in approvals], checks=checks))
    return rows


# -- output ---------------------------------------------------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Text Excel would turn into a number and spoil: long digit runs (ID and phone numbers past
# 11 digits lose digits), leading zeros, and 1e5-like hex serials.
_NUMBERLIKE = re.compile(r"\d{12,}|0\d+|\d+[eE]\d+")


def excel_cell(value: str) -> str:
    """A cell as Excel should show it: what looks like a formula starts with an apostrophe
    (an applicant's form must not run in staff's spreadsheet); what Excel would read as a
    number is written as a text formula ="…"."""
    if value.startswith(_FORMULA_START):
        return "'" + value
    if _NUMBERLIKE.fullmatch(value):
        return f'="{value}"'
    return value


def write_csv(out: TextIO, rows: Sequence[RegisterRow]) -> None:
    """The register as CSV: a header of COLUMNS' headings, one line per case, CRLF ends.
    Open `out` with encoding "utf-8-sig" and newline="" for the BOM Excel needs."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([heading for _key, heading in COLUMNS])
    for no, row in enumerate(rows, 1):
        cells = row.cells(no)
        writer.writerow([excel_cell(cells[key]) for key, _heading in COLUMNS])


def csv_bytes(rows: Sequence[RegisterRow]) -> bytes:
    """The CSV file's bytes: UTF-8 with BOM."""
    buf = io.StringIO(newline="")
    write_csv(buf, rows)
    return buf.getvalue().encode("utf-8-sig")
