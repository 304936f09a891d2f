"""`mailbot cases …` staff actions end to end: 现场受理 through intake, approvals, refusals,
the to-call list, export, and commands that never create a database."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot.app.staff import safe_name, take_in
from mailbot.cases import workflow
from mailbot.cli import main
from mailbot.db import make_engine, session_factory
from mailbot.intake.facts import FORM_KEYS
from tests.support.formbuilder import FILLED, build_form
from tests.support.intake import make_config, write_config
from tests.support.mailbuilders import jpeg, make_sm2, pdf

COMPANY = "厦门某某科技有限公司"


@pytest.fixture(scope="module")
def csr_pem(tmp_path_factory) -> bytes:
    return make_sm2(tmp_path_factory.mktemp("sm2"), COMPANY).csr_pem


# The sample form with values the rules accept (valid check characters, mobile numbers).
VALID_FORM = {**FILLED, "org_code": "91350200MA2XXXXX1Q", "legal_rep_id_no": "35020319900101123X",
              "handler_id_no": "350203199202025670", "handler_phone": "13900000003"}


def _hall(folder: Path, csr: bytes | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "申请表.docx").write_bytes(build_form(VALID_FORM))
    (folder / "营业执照.pdf").write_bytes(pdf(tag=b"licence"))
    (folder / "法人身份证.jpg").write_bytes(jpeg(tag=b"legal"))
    (folder / "经办人身份证.jpg").write_bytes(jpeg(tag=b"handler"))
    (folder / "商用密码产品认证证书.pdf").write_bytes(pdf(tag=b"product"))
    if csr is not None:
        (folder / "server.csr").write_bytes(csr)
    return folder


class Cli:
    def __init__(self, tmp_path: Path, db_url: str, capsys, extra: str = "") -> None:
        self.cfg = make_config(tmp_path, db_url, "maildir:mail", workers=1)
        self.path = write_config(tmp_path / "mailbot.toml", self.cfg)
        if extra:
            self.path.write_text(self.path.read_text(encoding="utf-8") + extra, encoding="utf-8")
        self.capsys = capsys
        self.db_url = db_url

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = main(["--config", str(self.path), *args])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def json(self, *args: str):
        rc, out, err = self(*args, "--json")
        assert rc == 0, err
        return json.loads(out)

    def upgrade(self) -> None:
        assert self("db", "upgrade")[0] == 0

    def new(self, folder: Path, by: str = "张三") -> str:
        rc, out, err = self("cases", "new", "--from-dir", str(folder), "--by", by)
        assert rc == 0, err
        return out.split(":", 1)[0]


@pytest.fixture
def cli(tmp_path, db_url, capsys) -> Cli:
    c = Cli(tmp_path, db_url, capsys)
    c.upgrade()
    return c


def test_commands_never_create_a_database(tmp_path, capsys) -> None:
    c = Cli(tmp_path, f"sqlite:///{tmp_path / 'none.sqlite3'}", capsys)
    for args in (["cases", "list"], ["cases", "show", "XM-2026-0001"],
                 ["cases", "export", "XM-2026-0001", str(tmp_path / "out")],
                 ["cases", "approve", "XM-2026-0001", "--by", "张三"],
                 ["cases", "new", "--from-dir", str(tmp_path), "--by", "张三"],
                 ["audit", "verify"]):
        rc, _out, err = c(*args)
        assert rc == 1 and "no database yet" in err and err.count("\n") == 1, args
    assert not (tmp_path / "none.sqlite3").exists()
    assert not (tmp_path / "var").exists()


@pytest.mark.timeout(180)
def test_hall_application_goes_through_intake(cli, tmp_path, csr_pem) -> None:
    ref = cli.new(_hall(tmp_path / "hall", csr_pem))
    [summary] = cli.json("cases", "list")
    assert summary["ref"] == ref and summary["kind"] == "new"
    assert summary["company"] == COMPANY and summary["state"] == "awaiting_confirmation"
    detail = cli.json("cases", "show", ref)
    [message] = detail["messages"]
    assert message["subject"] == f"{COMPANY}+数字证书申办" and message["kind"] == "new"
    assert message["from"] == cli.cfg.mailbox.our_address
    assert {m for a in message["attachments"] for m in a["materials"]} >= {
        "application_form", "business_licence", "legal_rep_id", "handler_id",
        "crypto_product_cert", "csr"}
    assert detail["fields"]["applicant_org"]["value"] == COMPANY
    assert [(a["actor"], a["action"], a["via"]) for a in detail["audit"]][-1] == \
        ("张三", "accept_in_person", "cli")
    assert [n["template"] for n in detail["notices"]] == ["acknowledgement"]
    rc, out, _ = cli("cases", "show", ref)
    assert rc == 0 and "history 记录:" in out and "accept_in_person" in out

    out_dir = tmp_path / "export"
    rc, out, err = cli("cases", "export", ref, str(out_dir))
    assert rc == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert f"message-{message['id']}.eml" in names
    assert f"{message['id']}-server.csr" in names and f"{message['id']}-申请表.docx" in names
    assert (out_dir / f"{message['id']}-server.csr").read_bytes() == csr_pem
    assert cli("audit", "verify")[0] == 0
    rc, _, err = cli("cases", "new", "--from-dir", str(tmp_path / "nothing"), "--by", "张三")
    assert rc == 1 and "no such folder" in err


@pytest.mark.timeout(180)
def test_staff_actions_and_refusals(cli, tmp_path, csr_pem) -> None:
    ref = cli.new(_hall(tmp_path / "hall", csr_pem))
    rc, _, err = cli("cases", "edit", ref, "nonsense=1", "--by", "李四")
    assert rc == 2 and "form key" in err
    rc, out, err = cli("cases", "edit", ref, "handler_phone=13900000002", "--by", "李四")
    assert rc == 0, err
    assert cli.json("cases", "show", ref)["fields"]["handler_phone"] == \
        {"value": "13900000002", "source": "staff"}
    rc, _, err = cli("cases", "confirm", ref, "--by", "system")
    assert rc == 2 and "staff member" in err
    assert cli("cases", "confirm", ref, "--by", "李四")[0] == 0
    rc, _, err = cli("cases", "confirm", ref, "--by", "李四")
    assert rc == 1 and "confirmed by 李四" in err
    rc, _, err = cli("cases", "called", ref, "--by", "李四")
    assert rc == 1 and "only a delivered case" in err
    rc, out, err = cli("cases", "approve", ref, "--by", "王五", "--stamps-ok", "--signature-ok",
                       "--server-device", "--eport-access")
    assert rc == 0 and "approved by 王五" in out, err
    rc, _, err = cli("cases", "approve", ref, "--by", "王五")
    assert rc == 1 and "already approved" in err and err.count("\n") == 1
    rc, _, err = cli("cases", "reject", ref, "--by", "王五")
    assert rc == 2 and "--reason" in err
    rc, out, _ = cli("cases", "reject", ref, "--by", "赵六", "--reason", "营业执照未盖章")
    assert rc == 0 and "rejected" in out
    rc, _, err = cli("cases", "close", ref, "--by", "赵六", "--reason", "x")
    assert rc == 1 and "cannot become closed" in err
    rc, _, err = cli("cases", "override", ref, "csr_not_sm2", "--by", "赵六", "--reason", "x")
    assert rc == 1
    rc, _, err = cli("cases", "approve", "XM-2026-9999", "--by", "王五")
    assert rc == 1 and "no such case" in err
    audit = cli.json("cases", "show", ref)["audit"]
    approve = next(a for a in audit if a["action"] == "approve")
    assert approve["to"] == "approved" and "stamps_ok, signature_ok, server_device, " \
        "eport_access" in approve["reason"]
    assert audit[-1]["action"] == "reject" and audit[-1]["reason"] == "营业执照未盖章"
    assert cli("audit", "verify")[0] == 0


@pytest.mark.timeout(180)
def test_incomplete_case_override_then_approve_then_close(cli, tmp_path) -> None:
    ref = cli.new(_hall(tmp_path / "hall", None))
    assert cli.json("cases", "show", ref)["state"] == "incomplete"
    rc, _, err = cli("cases", "approve", ref, "--by", "王五")
    assert rc == 1 and "incomplete" in err
    rc, out, err = cli("cases", "override", ref, "missing_material", "--by", "王五",
                       "--reason", "CSR 随后现场补交 U 盘")
    assert rc == 0 and "awaiting_confirmation" in out, err
    detail = cli.json("cases", "show", ref)
    [f] = [f for f in detail["findings"] if f["code"] == "missing_material"]
    assert not f["open"] and f["overridden_by"] == "王五"
    assert [a["action"] for a in detail["audit"]][-2:] == ["override", "reassess"]
    assert cli("cases", "approve", ref, "--by", "王五")[0] == 0
    rc, out, err = cli("cases", "close", ref, "--by", "王五", "--reason", "申请人撤回")
    assert rc == 0 and "closed" in out, err


@pytest.mark.timeout(180)
def test_two_person_rule(tmp_path, db_url, capsys, csr_pem) -> None:
    cli = Cli(tmp_path, db_url, capsys, extra="[cases]\napprovals_required = 2\n")
    cli.upgrade()
    ref = cli.new(_hall(tmp_path / "hall", csr_pem))
    rc, out, _ = cli("cases", "approve", ref, "--by", "张三")
    assert rc == 0 and "approval 1 of 2" in out and "awaiting_confirmation" in out
    rc, _, err = cli("cases", "approve", ref, "--by", "张三")
    assert rc == 1 and "another staff member" in err
    rc, out, _ = cli("cases", "approve", ref, "--by", "李四")
    assert rc == 0 and "approved by 李四" in out
    assert cli.json("cases", "show", ref)["state"] == "approved"


@pytest.mark.timeout(180)
def test_to_call_list(cli, tmp_path, csr_pem) -> None:
    ref = cli.new(_hall(tmp_path / "hall", csr_pem))
    engine = make_engine(cli.db_url)
    try:
        with session_factory(engine)() as s:  # what issuance and the outbox will do
            case = workflow.case_for_update(s, ref)
            workflow.approve(s, case, by="张三")
            workflow.transition(s, case, "issued", actor="system", via="system")
            workflow.transition(s, case, "delivered", actor="system", via="system")
            s.commit()
    finally:
        engine.dispose()
    assert [c["ref"] for c in cli.json("cases", "list", "--to-call")] == [ref]
    assert cli.json("cases", "list", "--state", "delivered")[0]["to_call"] is True
    rc, out, err = cli("cases", "called", ref, "--by", "李四")
    assert rc == 0, err
    assert cli.json("cases", "list", "--to-call") == []
    assert cli.json("cases", "show", ref)["called"]["by"] == "李四"
    rc, _, err = cli("cases", "called", ref, "--by", "李四")
    assert rc == 1 and "was called" in err


@pytest.mark.timeout(180)
def test_export_never_writes_outside_its_folder(cli, tmp_path, csr_pem) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"] = "a@example.cn", "xmport@189.cn"
    msg["Subject"] = f"{COMPANY}+数字证书申办"
    msg["Message-ID"] = "<export-test@example.cn>"
    msg.set_content("材料见附件")
    msg.add_attachment(csr_pem, maintype="application", subtype="pkcs10",
                       filename="../../server.csr")
    msg.add_attachment(b"x", maintype="application", subtype="octet-stream",
                       filename="/etc/passwd")
    msg.add_attachment(b"y", maintype="application", subtype="octet-stream",
                       filename="..\\..\\evil\x01.bat")
    msg.add_attachment(b"z", maintype="application", subtype="octet-stream", filename="..")
    engine = make_engine(cli.db_url)
    try:
        row = take_in(cli.cfg, session_factory(engine), msg.as_bytes())
    finally:
        engine.dispose()
    [case] = cli.json("cases", "list")
    out_dir = tmp_path / "deep" / "export"
    rc, _, err = cli("cases", "export", case["ref"], str(out_dir))
    assert rc == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted([f"message-{row}.eml", f"{row}-server.csr", f"{row}-passwd",
                            f"{row}-evil_.bat", f"{row}-part-5"])
    assert not (tmp_path / "server.csr").exists() and not (tmp_path / "deep" / "server.csr").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and "export" not in p.parts
            and p.suffix in (".csr", ".bat")] == []


def test_safe_name() -> None:
    assert safe_name("../../a.pdf") == "a.pdf"
    assert safe_name("C:\\Users\\x\\身份证.jpg") == "身份证.jpg"
    assert safe_name(".hidden") == "hidden"
    assert safe_name("..", "f") == "f" and safe_name("", "f") == "f"
    assert safe_name("a\x00b\nc.txt") == "a_b_c.txt"
    long = safe_name("名" * 200 + ".pdf")
    assert long.endswith(".pdf") and len(long.encode("utf-8")) <= 200


@pytest.mark.parametrize("extra", ["approvals_required = 3", "incomplete_expiry_days = -1",
                                   'mailbox_actor = "system"', "approvals_required = \"2\""])
def test_bad_cases_settings_are_refused(tmp_path, capsys, extra) -> None:
    c = Cli(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", capsys, extra=f"[cases]\n{extra}\n")
    rc, _, err = c("cases", "list")
    assert rc == 2 and ("[cases]" in err or "cases." in err), err


def _hall_revocation(folder: Path, cert_der: bytes, serial: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "申请表.docx").write_bytes(build_form(VALID_FORM, "revoke", serial=serial))
    (folder / "营业执照.pdf").write_bytes(pdf(tag=b"licence"))
    (folder / "法人身份证.jpg").write_bytes(jpeg(tag=b"legal"))
    (folder / "经办人身份证.jpg").write_bytes(jpeg(tag=b"handler"))
    (folder / "sign.cer").write_bytes(cert_der)
    return folder


@pytest.mark.timeout(180)
def test_key_lost_mark(cli, tmp_path, csr_pem) -> None:
    from asn1crypto import x509

    material = make_sm2(tmp_path / "old", COMPANY)
    serial = f"{x509.Certificate.load(material.cert_der).serial_number:x}"
    ref = cli.new(_hall_revocation(tmp_path / "hall", material.cert_der, serial))
    summary = cli.json("cases", "show", ref)
    assert summary["kind"] == "revoke" and summary["state"] == "awaiting_confirmation"
    assert summary["urgent"] is False and summary["key_lost"] is None

    rc, _, err = cli("cases", "key-lost", ref)
    assert rc == 2 and "--by" in err
    rc, out, err = cli("cases", "key-lost", ref.lower(), "--by", "张三",
                       "--reason", "电话告知：服务器私钥丢失")
    assert rc == 0 and "URGENT" in out and "keyCompromise" in out, err
    detail = cli.json("cases", "show", ref)
    assert detail["urgent"] is True
    assert (detail["key_lost"]["by"], detail["key_lost"]["reason"]) == \
        ("张三", "电话告知：服务器私钥丢失")
    [f] = [f for f in detail["findings"] if f["code"] == "key_compromise"]
    assert f["open"] and "marked by staff" in f["detail"]
    assert [(a["actor"], a["action"], a["via"]) for a in detail["audit"]][-1] == \
        ("张三", "key_lost", "cli")
    assert "key_lost" not in detail["fields"] and set(detail["fields"]) <= set(FORM_KEYS)
    assert [c["urgent"] for c in cli.json("cases", "list")] == [True]
    rc, out, _ = cli("cases", "list")
    assert rc == 0 and any(ref in line and "URGENT 紧急" in line for line in out.splitlines())
    rc, out, _ = cli("cases", "show", ref)
    assert rc == 0 and "!! URGENT 紧急" in out and "key lost 密钥丢失: marked by 张三" in out

    rc, _, err = cli("cases", "key-lost", ref, "--by", "李四")
    assert rc == 1 and "was marked key lost by 张三" in err and err.count("\n") == 1
    rc, _, err = cli("cases", "key-lost", "XM-2026-9999", "--by", "李四")
    assert rc == 1 and "no such case" in err

    new = cli.new(_hall(tmp_path / "hall2", csr_pem))
    rc, _, err = cli("cases", "key-lost", new, "--by", "李四")
    assert rc == 1 and "only a revocation" in err and err.count("\n") == 1
    assert cli.json("cases", "show", new)["urgent"] is False

    assert cli("cases", "close", ref, "--by", "李四", "--reason", "申请人撤回")[0] == 0
    assert [c["urgent"] for c in cli.json("cases", "list")] == [False, False]
    other = cli.new(_hall_revocation(tmp_path / "hall3", material.cert_der, serial))
    assert cli("cases", "close", other, "--by", "李四", "--reason", "x")[0] == 0
    rc, _, err = cli("cases", "key-lost", other, "--by", "李四")
    assert rc == 1 and "too late" in err and err.count("\n") == 1
    assert cli("audit", "verify")[0] == 0


@pytest.mark.timeout(180)
def test_edit_judges_the_common_name_against_the_kept_request(cli, tmp_path,
                                                             tmp_path_factory) -> None:
    csr = make_sm2(tmp_path_factory.mktemp("host"), "server.example.cn", COMPANY).csr_pem
    ref = cli.new(_hall(tmp_path / "hall", csr))

    def open_codes() -> list[str]:
        return sorted(f["code"] for f in cli.json("cases", "show", ref)["findings"] if f["open"])

    assert "cn_mismatch" in open_codes()
    rc, _, err = cli("cases", "edit", ref, "common_name=server.example.cn", "--by", "李四")
    assert rc == 0, err
    assert "cn_mismatch" not in open_codes()
    rc, _, err = cli("cases", "edit", ref, "applicant_org=厦门别家有限公司", "--by", "李四")
    assert rc == 0, err
    detail = cli.json("cases", "show", ref)
    assert {f["code"] for f in detail["findings"] if f["open"]} >= {"company_mismatch"}
    assert "cn_mismatch" not in open_codes()
