"""`inspect` runs every rule that needs no database; ID scans are listed under their roles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.app.inspection import inspect_message, inspect_with_rules
from tests.support.mailbuilders import Att, Mail, build, jpeg, make_form, pdf

ORG = "厦门云帆网络科技有限公司"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def _mail(*scans: str) -> bytes:
    form = make_form({"applicant_org": ORG, "legal_rep_name": "吴堃", "handler_name": "林小明",
                      "email": "zhangsan@example.com.cn", "handler_phone": "13906001234"})
    atts = [Att("申请表.docx", form, DOCX), Att("营业执照.pdf", pdf(300), "application/pdf")]
    atts += [Att(name, jpeg(200 + n), "image/jpeg") for n, name in enumerate(scans)]
    return build(Mail(subject=f"{ORG}+数字证书申办", attachments=atts))


def _rows(raw: bytes) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for row in inspect_message(raw).to_inspect_json()["attachments"]:
        rows.setdefault(row["filename"], []).append(row["material"])
    return rows


def test_id_scans_are_listed_under_their_roles() -> None:
    raw = _mail("吴堃身份证.jpg", "身份证.jpg", "scan001.jpg")
    facts = inspect_message(raw)
    rows = _rows(raw)
    assert rows["吴堃身份证.jpg"] == ["legal_rep_id"]
    assert rows["身份证.jpg"] == ["handler_id"]
    assert rows["scan001.jpg"] == ["other"]
    assert "legal_rep_id" not in facts.missing and "handler_id" not in facts.missing
    inferred = [f for f in facts.findings if f.code == "id_scan_inferred"]
    assert [f.facts["filename"] for f in inferred] == ["身份证.jpg"]


def test_a_scan_of_one_person_leaves_the_other_role_missing() -> None:
    raw = _mail("林小明身份证.jpg")
    assert _rows(raw)["林小明身份证.jpg"] == ["handler_id"]
    assert "legal_rep_id" in inspect_message(raw).missing
    assert _rows(_mail("法人及经办人身份证.pdf"))["法人及经办人身份证.pdf"] == [
        "legal_rep_id", "handler_id"]


def test_inspect_runs_every_rule_without_the_database() -> None:
    _facts, result = inspect_with_rules(_mail("法人及经办人身份证.pdf"))
    assert result.failed == []
    assert "needs the database" in result.to_json()["skipped"].values()
    assert {"subject_format", "materials", "org_code", "delivery_fields"} <= set(result.ran)


@pytest.mark.timeout(60)
def test_inspect_json_adds_the_rules_key(tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(_mail("吴堃身份证.jpg"))
    proc = subprocess.run([sys.executable, "-m", "mailbot.cli", "inspect", str(eml), "--json"],
                          capture_output=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"kind", "company", "case_ref", "attachments", "missing", "csr", "form",
            "findings", "rules"} == set(data)
    assert "already_certified" in data["rules"]["skipped"]
    assert "handler_id" in data["missing"]
