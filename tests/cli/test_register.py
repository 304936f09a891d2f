"""`mailbot cases register`: the table, CSV for Excel (BOM, CRLF), JSON, dates, refusals."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.cases import workflow
from mailbot.cli import main
from mailbot.db import make_engine, session_factory
from tests.cases.test_register import FORM, add_certificate, make_case
from tests.support.intake import make_config, write_config

BOM = b"\xef\xbb\xbf"


class Cli:
    def __init__(self, tmp_path: Path, db_url: str, capsys) -> None:
        self.cfg = make_config(tmp_path, db_url, "maildir:mail", workers=1)
        self.path = write_config(tmp_path / "mailbot.toml", self.cfg)
        self.capsys = capsys
        self.db_url = db_url

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = main(["--config", str(self.path), *args])
        out, err = self.capsys.readouterr()
        return rc, out, err


@pytest.fixture
def cli(tmp_path, db_url, capsys) -> Cli:
    c = Cli(tmp_path, db_url, capsys)
    assert c("db", "upgrade")[0] == 0
    return c


@pytest.fixture
def filled(cli, frozen_clock) -> Cli:
    """Three cases opened on 2026-01-04, -05 and -06 (Xiamen time); the first issued."""
    engine = make_engine(cli.db_url)
    try:
        with session_factory(engine)() as s:
            first = make_case(s, "XM-2026-0001", datetime(2026, 1, 3, 17, tzinfo=UTC),
                              fields=FORM)
            frozen_clock.current = datetime(2026, 1, 4, 2, tzinfo=UTC)
            workflow.approve(s, first, by="张三", checklist=["server_device", "eport_access"])
            add_certificate(s, first.ref, "1c2b", "sign")
            add_certificate(s, first.ref, "7f3a", "enc")
            workflow.transition(s, first, "issued", actor="system", via="system")
            make_case(s, "XM-2026-0002", datetime(2026, 1, 4, 16, 30, tzinfo=UTC),
                      kind="revoke", fields={"revoke_serial": "0A1B"})
            make_case(s, "XM-2026-0003", datetime(2026, 1, 6, 1, tzinfo=UTC),
                      state="incomplete", company="厦门另一家有限公司")
            s.commit()
    finally:
        engine.dispose()
    return cli


def _csv(path: Path) -> list[list[str]]:
    data = path.read_bytes()
    assert data.startswith(BOM)
    text = data[len(BOM):].decode("utf-8")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    return list(csv.reader(io.StringIO(text, newline="")))


def test_table(filled) -> None:
    rc, out, err = filled("cases", "register")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("序号 no.") and "审核人 approved by" in lines[0]
    assert "XM-2026-0001" in lines[1] and "1c2b / 7f3a" in lines[1] and "张三" in lines[1]
    assert "新办" in lines[1] and "已签发 issued" in lines[1]
    assert "注销" in lines[2] and "0A1B" in lines[2]
    assert lines[-1] == "3 case(s) / 共 3 件"
    # aligned: every row's case number starts in the same terminal column
    starts = {line.index("XM-") for line in lines[1:4]}
    assert len(starts) == 1


def test_csv_file(filled, tmp_path) -> None:
    target = tmp_path / "register.csv"
    rc, out, err = filled("cases", "register", "--csv", str(target))
    assert rc == 0 and "3 case(s) written" in out, err
    rows = _csv(target)
    header = rows[0]
    col = {h: i for i, h in enumerate(header)}
    assert header[:4] == ["序号 no.", "受理日期 date", "受理编号 case", "申请类别 type"]
    assert [r[col["受理编号 case"]] for r in rows[1:]] == ["XM-2026-0001", "XM-2026-0002",
                                                       "XM-2026-0003"]
    assert [r[col["受理日期 date"]] for r in rows[1:]] == ["2026-01-04", "2026-01-05",
                                                       "2026-01-06"]
    first = rows[1]
    assert first[col["证书序列号 certificate serials"]] == "1c2b / 7f3a"
    assert first[col["审核人 approved by"]] == "张三"
    assert first[col["审核时间 approved at"]] == "2026-01-04 10:00"
    assert first[col["服务类密码设备 server device"]] == "是"
    assert first[col["符合入网要求 E-Port access"]] == "是"
    assert first[col["公章齐全 stamps"]] == ""
    assert rows[2][col["申请类别 type"]] == "注销"


def test_csv_never_overwrites_silently(filled, tmp_path) -> None:
    target = tmp_path / "register.csv"
    target.write_bytes(b"keep me")
    rc, _out, err = filled("cases", "register", "--csv", str(target))
    assert rc == 1 and "exists" in err and "--force" in err and err.count("\n") == 1
    assert target.read_bytes() == b"keep me"
    rc, _out, err = filled("cases", "register", "--csv", str(target), "--force")
    assert rc == 0, err
    assert len(_csv(target)) == 4


def test_dates_filter_inclusive(filled, tmp_path) -> None:
    target = tmp_path / "jan5.csv"
    rc, _, err = filled("cases", "register", "--from", "2026-01-05", "--to", "2026-01-05",
                        "--csv", str(target))
    assert rc == 0, err
    assert [r[2] for r in _csv(target)[1:]] == ["XM-2026-0002"]
    rc, out, _ = filled("cases", "register", "--from", "2026-01-05", "--json")
    assert [r["ref"] for r in json.loads(out)] == ["XM-2026-0002", "XM-2026-0003"]
    rc, out, _ = filled("cases", "register", "--to", "2026-01-04", "--json")
    assert [r["ref"] for r in json.loads(out)] == ["XM-2026-0001"]


def test_json_keys(filled) -> None:
    rc, out, err = filled("cases", "register", "--json")
    assert rc == 0, err
    first = json.loads(out)[0]
    assert set(first) == {"no", "date", "ref", "type", "type_label", "channel", "organisation",
                          "org_code", "handler", "handler_phone", "serials", "revoke_serial",
                          "state", "state_label", "approvals", "checklist"}
    assert first["state"] == "issued" and first["serials"] == ["1c2b", "7f3a"]
    assert first["approvals"][0]["by"] == "张三"
    assert first["checklist"]["server_device"] and first["checklist"]["eport_access"]


def test_empty_register(cli, tmp_path) -> None:
    rc, out, err = cli("cases", "register")
    assert rc == 0, err
    assert out.splitlines()[-1] == "0 case(s) / 共 0 件"
    target = tmp_path / "empty.csv"
    assert cli("cases", "register", "--csv", str(target))[0] == 0
    rows = _csv(target)
    assert len(rows) == 1 and rows[0][0] == "序号 no."
    rc, out, _ = cli("cases", "register", "--json")
    assert rc == 0 and json.loads(out) == []


@pytest.mark.parametrize("args", [["--from", "2026-13-01"], ["--to", "yesterday"],
                                  ["--from", "2026/01/05"],
                                  ["--from", "2026-01-06", "--to", "2026-01-05"]])
def test_bad_dates_are_usage_errors(cli, tmp_path, args) -> None:
    target = tmp_path / "x.csv"
    rc, out, err = cli("cases", "register", *args, "--csv", str(target))
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert out == "" and not target.exists()


def test_no_database_no_file(tmp_path, capsys) -> None:
    c = Cli(tmp_path, f"sqlite:///{tmp_path / 'none.sqlite3'}", capsys)
    target = tmp_path / "r.csv"
    rc, _out, err = c("cases", "register", "--csv", str(target))
    assert rc == 1 and "no database yet" in err
    assert not (tmp_path / "none.sqlite3").exists() and not target.exists()
