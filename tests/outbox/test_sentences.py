"""Finding code -> sentence: every code has one, in one place, and says exactly what to fix."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mailbot.config import DEFAULT_TEMPLATES_DIR
from mailbot.findings import CODES, Finding
from mailbot.outbox.sentences import (
    FALLBACK,
    SENTENCES_FILE,
    Sentences,
    SentencesError,
    load_sentences,
)

PACKAGE = Path(__file__).resolve().parents[2] / "mailbot"
SHIPPED = tomllib.loads((DEFAULT_TEMPLATES_DIR / SENTENCES_FILE).read_text(encoding="utf-8"))

# The facts each code's emitter really writes (rules/, intake/, pki/csr.py).
FACTS: dict[str, dict[str, Any]] = {
    "unparseable_message": {},
    "application_type_ambiguous": {"form": "new revoke", "subject_revoke": True, "csr": True,
                                   "certificate": True},
    "attachment_rejected": {"filename": "材料.zip", "reason": "encrypted"},
    "archive_unsupported": {"filename": "材料.rar", "format": "rar"},
    "private_key_sent": {"filename": "sm2_sign.key"},
    "subject_format": {"subject": "申请证书", "problem": "wording",
                       "expected": "企业名称+数字证书申办"},
    "missing_material": {"material": "handler_id"},
    "id_scan_inferred": {"filename": "身份证.jpg", "roles": ["handler_id"]},
    "rule_failed": {"rule": "org_code"},
    "key_compromise": {"words": ["泄露"], "reason": "keyCompromise", "urgent": True,
                       "marked_by_staff": False},
    "org_code_invalid": {"org_code": "91350200MA31XXXX8A", "problem": "wrong check character"},
    "org_code_not_uscc": {"org_code": "12345678-9"},
    "outside_district": {"org_code": "91110000MA01XXXX5Q", "region": "110000",
                         "prefixes": ["3502", "3505", "3506", "3508"]},
    "id_number_invalid": {"role": "handler", "id_no": "350203199001011230",
                          "problem": "wrong check digit"},
    "phone_not_mobile": {"role": "legal_rep", "phone": "0592-5651234", "problem": "landline"},
    "email_invalid": {"email": "ca@xiangyu。com", "problem": "uses the Chinese full stop"},
    "sender_not_form_address": {"sender": "zhang@qq.com", "email": "ca@xiangyu.com"},
    "delivery_fields_missing": {"fields": ["org_code", "email"]},
    "cn_mismatch": {"csr_cn": "xiangyu", "form_cn": "厦门象屿港务有限公司"},
    "company_mismatch": {"where": "csr", "value": "象屿港务", "form": "厦门象屿港务有限公司"},
    "already_certified": {"serial": "5f3a9c0d", "organisation": "厦门象屿港务有限公司",
                          "org_code": "91350200MA31XXXX8K"},
    "renamed_organisation": {"serial": "5f3a9c0d", "old_name": "厦门象屿港口有限公司",
                             "new_name": "厦门象屿港务有限公司", "org_code": "91350200MA31XXXX8K"},
    "revoke_foreign_certificate": {"serial": "1a2b", "issuer": "CN=Other CA"},
    "revoke_serial_mismatch": {"form_serial": "1234", "certificates": ["5f3a9c0d"]},
    "csr_unreadable": {},
    "csr_not_sm2": {"algorithm": "RSA", "since": "2022-07-01"},
    "csr_bad_signature": {"signature_algorithm": "sha256WithRSAEncryption"},
    "csr_wrong_sm2_id": {},
    "csr_bad_public_key": {},
    "csr_duplicate_key": {},
    "csr_unknown_critical_attribute": {"oid": "1.2.3.4.5"},
    "csr_encoding_quirk": {"quirk": "ber_length"},
    "csr_empty_subject": {},
    "csr_temp_key_unreadable": {},
}


@pytest.fixture(scope="module")
def sentences() -> Sentences:
    return load_sentences()


def finding(code: str, facts: dict[str, Any] | None = None,
            severity: str | None = None) -> dict[str, Any]:
    return {"code": code, "severity": severity or CODES[code], "detail": "x",
            "facts": FACTS[code] if facts is None else facts}


def test_every_code_has_a_sentence_and_no_sentence_is_stale() -> None:
    assert sorted(SHIPPED["codes"]) == sorted(CODES)
    assert sorted(FACTS) == sorted(CODES)  # a new code needs a realistic example here too


def test_every_warning_decides_whether_the_applicant_is_told() -> None:
    for code, severity in CODES.items():
        entry = SHIPPED["codes"][code]
        if severity == "warn":
            assert isinstance(entry.get("tell"), bool), f"{code}: say tell = true or false"
        else:
            assert entry.get("tell", True) is True, f"{code} blocks: the applicant is told"


@pytest.mark.parametrize("code", sorted(CODES))
def test_each_sentence_is_one_plain_line_with_and_without_facts(sentences: Sentences,
                                                                 code: str) -> None:
    full = sentences.sentence(finding(code))
    bare = sentences.sentence(finding(code, facts={}))
    for text in (full, bare):
        assert "\n" not in text and "{" not in text and "None" not in text
        assert "「」" not in text  # an absent value leaves no empty quotes
    assert full.endswith("。")
    if code != "company_mismatch":  # said only of the request's O, which `facts` names
        assert bare.endswith("。")


def test_the_sentences_say_exactly_what_to_fix(sentences: Sentences) -> None:
    def say(code: str, **facts: Any) -> str:
        return sentences.sentence(finding(code, {**FACTS[code], **facts}))

    assert "法定代表人/主要负责人身份证明复印件" in say("missing_material", material="legal_rep_id")
    assert "经办人身份证明复印件" in say("missing_material", material="handler_id")
    assert ".csr" in say("missing_material", material="csr")
    rsa = say("csr_not_sm2")
    assert "2022 年 7 月 1 日" in rsa and "RSA" in rsa and "SM2" in rsa
    sm2_id = say("csr_wrong_sm2_id")
    assert "1234567812345678" in sm2_id and "distid:1234567812345678" in sm2_id
    cn = say("cn_mismatch")
    assert "xiangyu" in cn and "申请单位名称一致" in cn
    assert "经办人" in say("id_number_invalid") and "350203199001011230" in say("id_number_invalid")
    assert "11 位" in say("phone_not_mobile") and "法定代表人" in say("phone_not_mobile")
    assert "机构代码、邮件地址" in say("delivery_fields_missing")
    assert "设有密码" in say("attachment_rejected")
    assert "5f3a9c0d" in say("revoke_serial_mismatch")


def test_subject_format_is_never_told_and_warnings_are_told_only_when_marked(
        sentences: Sentences) -> None:
    told = {code for code in CODES if sentences.told(finding(code))}
    blocking = {code for code, sev in CODES.items() if sev != "warn"}
    assert blocking <= told
    assert "subject_format" not in told and "rule_failed" not in told
    assert {"cn_mismatch", "id_scan_inferred", "sender_not_form_address"} <= told
    assert sentences.to_note([finding("subject_format")]) == []
    # a subject naming another company is for staff: the applicant is not asked about it
    assert sentences.to_note([finding("company_mismatch", {"where": "subject", "value": "甲",
                                                           "form": "乙"})]) == []


def test_to_fix_lists_each_blocking_finding_once_in_order(sentences: Sentences) -> None:
    found = [finding("missing_material", {"material": "csr"}), finding("subject_format"),
             finding("csr_not_sm2"), finding("missing_material", {"material": "csr"}),
             finding("cn_mismatch")]
    fixes = sentences.to_fix(found)
    assert fixes == [sentences.sentence(found[0]), sentences.sentence(found[2])]
    assert sentences.to_note(found) == [sentences.sentence(found[4])]


def test_finding_objects_read_like_their_json(sentences: Sentences) -> None:
    obj = Finding("missing_material", "missing", "missing material: csr", {"material": "csr"})
    assert sentences.sentence(obj) == sentences.sentence(obj.to_json() | {"facts": obj.facts})
    assert sentences.told(obj) and sentences.to_fix([obj])


def test_a_code_without_sentence_still_says_something(sentences: Sentences) -> None:
    text = sentences.sentence({"code": "brand_new_code", "severity": "reject", "facts": {}})
    assert text == FALLBACK.format(code="brand_new_code")
    assert sentences.to_fix([{"code": "brand_new_code", "severity": "reject"}]) == [text]


def test_an_operator_file_replaces_single_entries(tmp_path: Path) -> None:
    (tmp_path / SENTENCES_FILE).write_text(
        '[labels.materials]\nhandler_id = "经办人身份证正反面复印件"\n'
        '[codes.csr_duplicate_key]\ntext = "请换一对新密钥。"\n', encoding="utf-8")
    own = load_sentences(tmp_path)
    assert own.sentence(finding("csr_duplicate_key")) == "请换一对新密钥。"
    assert "经办人身份证正反面复印件" in own.sentence(finding("missing_material"))
    assert "1234567812345678" in own.sentence(finding("csr_wrong_sm2_id"))  # the rest shipped


@pytest.mark.parametrize(("text", "message"), [
    ('[codes.x]\ntext = "{% if %}"\n', "[codes.x]"),
    ('[codes.x]\ntext = "a"\ntell = "yes"\n', "tell must be true or false"),
    ('[codes.x]\ntext = "a"\nsay = 1\n', "unknown key"),
    ('[codes.x]\ntell = true\n', "needs text"),
    ("[codes.x\n", SENTENCES_FILE),
    ('[labels.colours]\nred = "红"\n', "[labels.colours]"),
])
def test_a_broken_file_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / SENTENCES_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(SentencesError) as err:
        load_sentences(tmp_path)
    assert message in str(err.value) and str(tmp_path) in str(err.value)


def test_a_sentence_reading_an_unknown_name_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / SENTENCES_FILE).write_text('[codes.csr_unreadable]\ntext = "{{ nothing }}"\n',
                                           encoding="utf-8")
    with pytest.raises(SentencesError, match="csr_unreadable"):
        load_sentences(tmp_path).sentence(finding("csr_unreadable"))


# -- every code the code base emits is registered --------------------------------------------

SEVERITIES = {"reject", "missing", "warn"}
# CONTRACTS.md: "warn or reject" (one unreadable file, or a broken or unsafe archive).
EITHER_SEVERITY = {"attachment_rejected"}


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def emitted_codes(package: Path = PACKAGE) -> dict[str, set[tuple[str, str]]]:
    """code -> {(severity or "?", where)} for every finding code written in the package:
    Finding("code", "sev", ...), Finding(code="code", ...), the `_finding(...)` and
    `report.add(...)` helpers, and the `codes = (...)` a rule declares."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(package.rglob("*.py")):
        where = str(path.relative_to(package.parent))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else \
                    node.func.attr if isinstance(node.func, ast.Attribute) else ""
                if name not in ("Finding", "_finding", "add"):
                    continue
                kw = {k.arg: k.value for k in node.keywords}
                code = _literal(node.args[0] if node.args else kw.get("code"))
                sev = _literal(node.args[1] if len(node.args) > 1 else kw.get("severity"))
                if name == "add" and sev not in SEVERITIES:
                    continue  # set.add("revoke") and friends
                if code:
                    found.setdefault(code, set()).add((sev or "?", where))
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("codes", "CSR_CODES")
                    for t in node.targets) and isinstance(node.value, ast.Tuple):
                for element in node.value.elts:
                    if _literal(element):
                        found.setdefault(_literal(element), set()).add(("?", where))
    return found


def test_every_code_the_package_emits_is_registered() -> None:
    found = emitted_codes()
    # the scan really sees the emitters: intake, rules and the PKI each write some
    assert {"unparseable_message", "key_compromise", "csr_wrong_sm2_id", "missing_material",
            "attachment_rejected", "private_key_sent"} <= set(found)
    unknown = {code: sorted(w for _s, w in uses) for code, uses in found.items()
               if code not in CODES}
    assert unknown == {}, "add these codes to mailbot.findings.CODES and templates/findings.toml"
    wrong = {code: sorted(uses) for code, uses in found.items()
             if code not in EITHER_SEVERITY
             and any(sev not in ("?", CODES[code]) for sev, _w in uses)}
    assert wrong == {}


def test_the_scan_sees_every_form_of_emitting(tmp_path: Path) -> None:
    pkg = tmp_path / "mailbot"
    pkg.mkdir()
    (pkg / "x.py").write_text(
        "a = Finding('one_code', 'warn', 'd')\n"
        "b = Finding(code='two_code', severity='reject', detail='d')\n"
        "report.add('three_code', 'missing', 'd')\n"
        "signals.add('revoke')\n"
        "c = _finding('four_code', 'warn', 'd')\n"
        "class R:\n    codes = ('five_code',)\n", encoding="utf-8")
    found = emitted_codes(pkg)
    assert sorted(found) == ["five_code", "four_code", "one_code", "three_code", "two_code"]
    assert found["two_code"] == {("reject", "mailbot/x.py")}
