"""The 受理登记 register: one row per case, from its fields, certificates and audit log."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session

from mailbot.cases import workflow
from mailbot.cases.audit import append_audit
from mailbot.cases.models import Case, CaseField
from mailbot.cases.register import (
    COLUMNS,
    csv_bytes,
    excel_cell,
    local_day,
    register_rows,
)
from mailbot.pki.models import IssuedCertificate

COMPANY = "厦门某某科技有限公司"


def make_case(session: Session, ref: str, at: datetime, *, kind: str = "new",
              state: str = "awaiting_confirmation", company: str = COMPANY,
              fields: dict[str, str] | None = None) -> Case:
    """A case opened at `at` (UTC) with form fields, as intake would leave it."""
    case = Case(ref=ref, kind=kind, state=state, company=company, created_at=at,
                updated_at=at, state_changed_at=at)
    session.add(case)
    session.flush()
    append_audit(session, actor="message:1", action="open", case=case, to_state="received",
                 via="system")
    for key, value in (fields or {}).items():
        case.fields.append(CaseField(key=key, value=value, source="form"))
    session.flush()
    return case


def add_certificate(session: Session, ref: str, serial: str, kind: str) -> None:
    t = datetime(2026, 1, 6, tzinfo=UTC)
    session.add(IssuedCertificate(issuer_key_id="ab" * 20, issuer="CN=Test CA", serial=serial,
                                  case_ref=ref, kind=kind, subject="CN=x", not_before=t,
                                  not_after=t + timedelta(days=3650), der=b"0",
                                  public_key=f"04{serial:0>128}"[:130]))
    session.flush()


FORM = {"applicant_org": COMPANY, "org_code": "91350200MA2Y00000A",
        "handler_name": "吴堃", "handler_phone": "13900000002"}


def test_local_date_is_asia_shanghai() -> None:
    assert local_day(datetime(2026, 1, 4, 16, 30, tzinfo=UTC)) == date(2026, 1, 5)
    assert local_day(datetime(2026, 1, 5, 15, 59, tzinfo=UTC)) == date(2026, 1, 5)
    assert local_day(datetime(2026, 1, 5, 16, 0, tzinfo=UTC)) == date(2026, 1, 6)


def test_rows_fields_serials_and_approval(session, frozen_clock) -> None:
    case = make_case(session, "XM-2026-0001", datetime(2026, 1, 4, 17, 0, tzinfo=UTC),
                     fields=FORM)
    frozen_clock.current = datetime(2026, 1, 5, 2, 15, tzinfo=UTC)
    workflow.approve(session, case, by="张三", checklist=["stamps_ok", "server_device",
                                                          "eport_access"])
    add_certificate(session, case.ref, "7f3a", "enc")
    add_certificate(session, case.ref, "1c2b", "sign")
    session.commit()
    [row] = register_rows(session)
    assert row.day == date(2026, 1, 5)  # 01:00 in Xiamen
    cells = row.cells(1)
    assert cells["type"] == "新办" and cells["channel"] == "不见面办理"
    assert (cells["organisation"], cells["org_code"]) == (COMPANY, "91350200MA2Y00000A")
    assert (cells["handler"], cells["handler_phone"]) == ("吴堃", "13900000002")
    assert cells["serials"] == "1c2b / 7f3a"  # sign first
    assert cells["state"] == "已审核 approved"
    assert (cells["approved_by"], cells["approved_at"]) == ("张三", "2026-01-05 10:15")
    assert [cells[k] for k in ("stamps_ok", "signature_ok", "server_device",
                               "eport_access")] == ["是", "", "是", "是"]
    data = row.as_json(1)
    assert data["checklist"] == {"stamps_ok": True, "signature_ok": False,
                                 "server_device": True, "eport_access": True}
    assert data["approvals"] == [{"by": "张三", "at": "2026-01-05T10:15:00+08:00",
                                  "via": "cli"}]
    assert data["serials"] == ["1c2b", "7f3a"] and data["type"] == "new"


def test_staff_edit_wins_and_revoke_serial(session, frozen_clock) -> None:
    case = make_case(session, "XM-2026-0002", datetime(2026, 1, 5, 1, tzinfo=UTC),
                     kind="revoke", state="incomplete",
                     fields={**FORM, "revoke_serial": "01:AB:CD"})
    workflow.edit(session, case, {"applicant_org": "厦门新名称有限公司",
                                  "handler_phone": "13900000009"}, by="李四")
    session.commit()
    [row] = register_rows(session)
    cells = row.cells(1)
    assert cells["type"] == "注销" and cells["revoke_serial"] == "01:AB:CD"
    assert cells["organisation"] == "厦门新名称有限公司"
    assert cells["handler_phone"] == "13900000009"
    assert cells["serials"] == "" and cells["approved_by"] == ""


def test_two_person_approvals_are_both_listed(session, frozen_clock) -> None:
    case = make_case(session, "XM-2026-0003", datetime(2026, 1, 5, 1, tzinfo=UTC), fields=FORM)
    policy = workflow.Policy(approvals_required=2)
    frozen_clock.current = datetime(2026, 1, 5, 2, tzinfo=UTC)
    workflow.approve(session, case, by="张三", policy=policy, checklist=["stamps_ok"])
    session.commit()
    [row] = register_rows(session)
    assert [a.by for a in row.approvals] == ["张三"]  # waiting for the second
    assert row.cells(1)["state"] == "待电话确认 awaiting_confirmation"
    frozen_clock.current = datetime(2026, 1, 5, 3, tzinfo=UTC)
    workflow.approve(session, case, by="mailbox", via="mailbox", policy=policy,
                     checklist=["eport_access"])
    session.commit()
    [row] = register_rows(session)
    cells = row.cells(1)
    assert cells["approved_by"] == "张三; mailbox (via mailbox)"
    assert cells["approved_at"] == "2026-01-05 10:00; 2026-01-05 11:00"
    assert row.checks == {"stamps_ok", "eport_access"}


def test_hall_channel(session, frozen_clock) -> None:
    case = make_case(session, "XM-2026-0004", datetime(2026, 1, 5, 1, tzinfo=UTC))
    append_audit(session, actor="张三", action="accept_in_person", case=case, via="cli")
    session.commit()
    assert register_rows(session)[0].channel == "现场受理"


def test_date_filter_is_inclusive_in_local_dates(session, frozen_clock) -> None:
    # opened 2026-01-04, -05 (two: just after local midnight and just before), -06 locally
    make_case(session, "XM-2026-0001", datetime(2026, 1, 4, 3, tzinfo=UTC))
    make_case(session, "XM-2026-0002", datetime(2026, 1, 4, 16, 0, tzinfo=UTC))
    make_case(session, "XM-2026-0003", datetime(2026, 1, 5, 15, 59, 59, tzinfo=UTC))
    make_case(session, "XM-2026-0004", datetime(2026, 1, 5, 16, 0, tzinfo=UTC))
    session.commit()

    def refs(**kw: date) -> list[str]:
        return [r.ref for r in register_rows(session, **kw)]

    assert refs() == ["XM-2026-0001", "XM-2026-0002", "XM-2026-0003", "XM-2026-0004"]
    assert refs(start=date(2026, 1, 5), end=date(2026, 1, 5)) == ["XM-2026-0002",
                                                                  "XM-2026-0003"]
    assert refs(start=date(2026, 1, 5)) == ["XM-2026-0002", "XM-2026-0003", "XM-2026-0004"]
    assert refs(end=date(2026, 1, 4)) == ["XM-2026-0001"]
    assert refs(start=date(2026, 2, 1)) == []


def test_empty_register(session) -> None:
    assert register_rows(session) == []
    data = csv_bytes([])
    assert data.startswith(b"\xef\xbb\xbf") and data.endswith(b"\r\n")
    assert data.count(b"\r\n") == 1
    assert data[3:].decode("utf-8").rstrip("\r\n").split(",") == [h for _k, h in COLUMNS]


def test_csv_bytes(session, frozen_clock) -> None:
    make_case(session, "XM-2026-0001", datetime(2026, 1, 5, 1, tzinfo=UTC), fields=FORM)
    make_case(session, "XM-2026-0002", datetime(2026, 1, 5, 2, tzinfo=UTC),
              company="=HYPERLINK(\"http://x\")", fields={"handler_phone": "059205653395"})
    session.commit()
    data = csv_bytes(register_rows(session))
    assert data.startswith(b"\xef\xbb\xbf")
    text = data[3:].decode("utf-8")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    lines = list(csv.reader(io.StringIO(text, newline="")))
    assert lines[0][0] == "序号 no." and "受理编号 case" in lines[0]
    header = {h: i for i, h in enumerate(lines[0])}
    assert len(lines) == 3
    first, second = lines[1], lines[2]
    assert first[header["受理编号 case"]] == "XM-2026-0001"
    assert first[header["受理日期 date"]] == "2026-01-05"
    assert first[header["申请类别 type"]] == "新办"
    assert first[header["申请单位 organisation"]] == COMPANY
    assert first[header["机构代码 credit code"]] == "91350200MA2Y00000A"
    assert first[header["经办人 handler"]] == "吴堃"
    assert first[header["联系电话 phone"]] == "13900000002"
    assert second[header["序号 no."]] == "2"
    # an applicant's text never becomes a formula; a landline keeps its leading zero
    assert second[header["申请单位 organisation"]] == "'=HYPERLINK(\"http://x\")"
    assert second[header["联系电话 phone"]] == '="059205653395"'


def test_excel_cell() -> None:
    assert excel_cell("厦门") == "厦门"
    assert excel_cell("13900000002") == "13900000002"
    assert excel_cell("350203199001011234") == '="350203199001011234"'
    assert excel_cell("-1") == "'-1" and excel_cell("@x") == "'@x"
    assert excel_cell("12e4") == '="12e4"'
    assert excel_cell("") == ""
