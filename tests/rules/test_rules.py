"""Each rule of the source document with passing and failing inputs, on hand-built views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asn1crypto import x509

from mailbot.findings import Finding
from mailbot.intake.subject import ApplicationSubject
from mailbot.pki import sm2
from mailbot.pki.ca import build_name, sig_alg, spki_of, x509_time
from mailbot.pki.csr import CsrReport
from mailbot.rules.engine import load_rules
from mailbot.rules.table import RULES_BY_NAME
from mailbot.rules.validators import resident_id_check_digit, uscc_check_char
from mailbot.rules.view import AttachmentView, CaseView, KnownCertificate

ORG = "厦门云帆网络科技有限公司"
USCC = "91350200MA2Y8XXX" + "1"  # 17 characters; the check character is added below
USCC = USCC + uscc_check_char(USCC)
ID_NO = "35020319900101123"
ID_NO = ID_NO + resident_id_check_digit(ID_NO)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
ALL = ("application_form", "business_licence", "legal_rep_id", "handler_id",
       "crypto_product_cert", "csr")


def form(**changes: str) -> dict[str, str]:
    base = {"application_type": "new", "applicant_org": ORG, "org_code": USCC,
            "email": "it@yunfan.example.cn", "legal_rep_name": "吴堃",
            "legal_rep_phone": "13805921234", "legal_rep_id_type": "居民身份证",
            "legal_rep_id_no": ID_NO, "handler_name": "林小明", "handler_phone": "13906001234",
            "handler_id_type": "居民身份证", "handler_id_no": ID_NO, "common_name": ORG}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def atts(*rows: tuple[str, tuple[str, ...]]) -> list[AttachmentView]:
    return [AttachmentView(name, mats) for name, mats in rows]


FULL = atts(("申请表.docx", ("application_form",)), ("营业执照.pdf", ("business_licence",)),
            ("法定代表人身份证.jpg", ("legal_rep_id",)), ("经办人身份证.jpg", ("handler_id",)),
            ("商用密码产品认证证书.pdf", ("crypto_product_cert",)), ("server.csr", ("csr",)))


def view(**kw: Any) -> CaseView:
    subject = kw.pop("subject", f"{ORG}+数字证书申办")
    base: dict[str, Any] = {"kind": "new", "subject": subject,
                            "subject_info": ApplicationSubject.parse(subject),
                            "from_addr": "it@yunfan.example.cn", "form": form(),
                            "attachments": list(FULL), "now": NOW}
    base.update(kw)
    return CaseView(**base)


def run(name: str, v: CaseView, **params: Any) -> list[Finding]:
    rule = RULES_BY_NAME[name]
    merged = {**load_rules().of(rule), **params}
    return rule.check(v, merged)


def codes(name: str, v: CaseView, **params: Any) -> list[str]:
    return [f.code for f in run(name, v, **params)]


def test_a_good_application_raises_nothing() -> None:
    from mailbot.rules.engine import evaluate
    v = view(csr=CsrReport(valid=True, algorithm="SM2", subject_fields={"CN": ORG, "O": ORG}))
    result = evaluate(v)
    assert result.findings == [] and result.failed == []


# --- subject ---------------------------------------------------------------------------------

@pytest.mark.parametrize("subject", [f"{ORG}+数字证书申办", f"{ORG}数字证书申办",
                                     f"{ORG}＋数字证书申办", f"{ORG} + 数字证书申办",
                                     f"{ORG}\u3000＋\u3000数字证书申办",
                                     f"Re: 转发：{ORG}+数字证书申办", f"【{ORG}】+数字证书申办"])
def test_standard_subjects_raise_nothing(subject: str) -> None:
    assert codes("subject_format", view(subject=subject)) == []


@pytest.mark.parametrize("subject,problem", [
    (f"{ORG}+数字证书申请", "wording"), (f"{ORG}证书办理", "wording"),
    ("数字证书申办", "no_company"), ("+数字证书申办", "no_company"), ("请查收", "wording"), ("", "no_company"),
    (f"{ORG}+数字证书申办（注销）", "wording")])
def test_other_subjects_are_subject_format(subject: str, problem: str) -> None:
    found = run("subject_format", view(subject=subject))
    assert [(f.code, f.severity) for f in found] == [("subject_format", "warn")]
    assert found[0].facts["problem"] == problem


def test_lenient_wording_by_setting() -> None:
    v = view(subject=f"{ORG}+数字证书申请")
    assert codes("subject_format", v, accepted_wordings=["数字证书申办", "数字证书申请"]) == []
    v = view(subject=f"{ORG}数字证书申办")
    assert codes("subject_format", v, plus_optional=False) == ["subject_format"]


def test_application_type_ambiguous() -> None:
    assert codes("application_type", view()) == []
    # the form says 新办, the subject 注销, and neither a request nor a certificate decides
    unclear = view(subject=f"{ORG}+数字证书注销",
                   attachments=[a for a in FULL if a.materials != ("csr",)])
    assert codes("application_type", unclear) == ["application_type_ambiguous"]
    assert run("application_type", unclear)[0].severity == "reject"
    mixed = view(attachments=FULL + atts(("old.cer", ("certificate",))),
                 subject=f"{ORG}+数字证书注销")
    assert codes("application_type", mixed) == ["application_type_ambiguous"]


# --- materials and ID scans -------------------------------------------------------------------

def _ids(*rows: tuple[str, tuple[str, ...]], **form_changes: str) -> CaseView:
    base = [a for a in FULL if not set(a.materials) & {"legal_rep_id", "handler_id"}]
    return view(attachments=base + atts(*rows), form=form(**form_changes))


BOTH = ("legal_rep_id", "handler_id")


def test_a_scan_named_after_a_person_counts_for_that_role_only() -> None:
    v = _ids(("吴堃身份证.jpg", BOTH))
    found = run("materials", v)
    assert [(f.code, f.facts.get("material")) for f in found] == [
        ("missing_material", "handler_id")]
    v = _ids(("吴堃身份证.jpg", BOTH), ("林小明 身份证.jpg", BOTH))
    assert run("materials", v) == []


def test_one_person_in_both_roles_or_a_file_naming_both_covers_both() -> None:
    assert run("materials", _ids(("吴堃身份证.jpg", BOTH), handler_name="吴 堃")) == []
    assert run("materials", _ids(("法人及经办人身份证.pdf", BOTH))) == []


def test_an_unnamed_id_scan_counts_for_the_missing_role_as_a_guess() -> None:
    found = run("materials", _ids(("法定代表人身份证.jpg", ("legal_rep_id",)),
                                  ("身份证.jpg", BOTH)))
    assert [(f.code, f.severity) for f in found] == [("id_scan_inferred", "warn")]
    assert found[0].facts == {"filename": "身份证.jpg", "roles": ["handler_id"]}
    two = run("materials", _ids(("身份证1.jpg", BOTH), ("身份证2.jpg", BOTH)))
    assert [f.facts["roles"] for f in two] == [["legal_rep_id"], ["handler_id"]]
    # nothing missing: the unnamed scan is not needed and guessed for nothing
    assert run("materials", _ids(("吴堃身份证.jpg", BOTH), ("经办人身份证.jpg", ("handler_id",)),
                                 ("身份证.jpg", BOTH))) == []


def test_files_not_named_as_id_scans_stay_as_they_are() -> None:
    found = run("materials", _ids(("scan001.jpg", ("other",))))
    assert [f.facts.get("material") for f in found] == ["legal_rep_id", "handler_id"]


def test_materials_per_kind() -> None:
    revoke = view(kind="revoke", attachments=atts(("申请表.docx", ("application_form",))))
    assert [f.facts["material"] for f in run("materials", revoke)] == [
        "business_licence", "legal_rep_id", "handler_id", "certificate"]
    assert [f.facts["material"] for f in run("materials", view(attachments=[]))] == list(ALL)


# --- the request -------------------------------------------------------------------------------

def test_csr_findings_come_from_the_pki_and_explain_sm2_only() -> None:
    report = CsrReport(algorithm="RSA 2048")
    report.add("csr_not_sm2", "reject", "the request holds an RSA 2048 key, not SM2")
    found = run("csr", view(csr=report))
    assert [(f.code, f.severity) for f in found] == [("csr_not_sm2", "reject")]
    assert "2022-07-01" in found[0].detail and "SM2" in found[0].detail
    for code in ("csr_bad_signature", "csr_wrong_sm2_id"):
        report = CsrReport(algorithm="SM2")
        report.add(code, "reject", "x")
        assert codes("csr", view(csr=report)) == [code]
    assert codes("csr", view(csr=CsrReport(valid=True, algorithm="SM2"))) == []
    assert codes("csr", view(csr=None)) == []


def _csr(cn: str | None = ORG, o: str | None = ORG) -> CsrReport:
    fields = {k: v for k, v in (("CN", cn), ("O", o)) if v}
    return CsrReport(valid=True, algorithm="SM2", subject_fields=fields)


def test_cn_mismatch() -> None:
    assert codes("cn_mismatch", view(csr=_csr())) == []
    assert codes("cn_mismatch", view(csr=_csr(cn="厦门云帆网络科技有限公司 "))) == []
    assert codes("cn_mismatch", view(csr=_csr(cn="server.yunfan.cn"))) == ["cn_mismatch"]
    v = view(csr=_csr(cn="server.yunfan.cn"), form=form(common_name="server.yunfan.cn"))
    assert codes("cn_mismatch", v) == []
    v = view(csr=_csr(cn=ORG), form=form(common_name=None))  # default: the 申请单位
    assert codes("cn_mismatch", v) == []
    assert run("cn_mismatch", view(csr=_csr(cn="x")))[0].severity == "warn"


def test_company_mismatch() -> None:
    assert codes("company_mismatch", view(csr=_csr())) == []
    full_width = view(subject="厦门云帆网络科技有限公司　＋数字证书申办", csr=_csr())
    assert codes("company_mismatch", full_width) == []
    short = run("company_mismatch", view(subject="云帆网络+数字证书申办", csr=_csr(o="云帆")))
    assert [(f.code, f.severity, f.facts["where"]) for f in short] == [
        ("company_mismatch", "warn", "subject"), ("company_mismatch", "warn", "csr")]


# --- 机构代码 ----------------------------------------------------------------------------------

def test_org_code() -> None:
    assert codes("org_code", view()) == []
    wrong = USCC[:-1] + ("0" if USCC[-1] != "0" else "1")
    found = run("org_code", view(form=form(org_code=wrong)))
    assert [(f.code, f.severity) for f in found] == [("org_code_invalid", "reject")]
    found = run("org_code", view(form=form(org_code="12345678-9")))
    assert [(f.code, f.severity) for f in found] == [("org_code_not_uscc", "warn")]
    assert codes("org_code", view(form=form(org_code=""))) == []


def test_outside_district() -> None:
    assert codes("outside_district", view()) == []
    fuzhou = "91350100MA2Y8XXX1"
    fuzhou += uscc_check_char(fuzhou)
    found = run("outside_district", view(form=form(org_code=fuzhou)))
    assert [(f.code, f.severity) for f in found] == [("outside_district", "warn")]
    assert codes("outside_district", view(form=form(org_code=fuzhou)),
                 prefixes=["3501"]) == []
    for region in ("350500", "350600", "350800"):
        code = f"91{region}MA2Y8XXX1"
        assert codes("outside_district", view(form=form(org_code=code + uscc_check_char(code)))) \
            == []


# --- people ------------------------------------------------------------------------------------

def test_id_numbers_only_for_resident_ids() -> None:
    assert codes("id_number", view()) == []
    bad = ID_NO[:-1] + ("0" if ID_NO[-1] != "0" else "1")
    found = run("id_number", view(form=form(handler_id_no=bad)))
    assert [(f.code, f.severity, f.facts["role"]) for f in found] == [
        ("id_number_invalid", "reject", "handler")]
    assert codes("id_number", view(form=form(handler_id_no="E12345678",
                                             handler_id_type="护照"))) == []


def test_phones_are_mobiles() -> None:
    assert codes("phone_not_mobile", view()) == []
    found = run("phone_not_mobile", view(form=form(handler_phone="0592-5653395",
                                                   legal_rep_phone="1380592123")))
    assert [(f.severity, f.facts["role"]) for f in found] == [("reject", "legal_rep"),
                                                               ("reject", "handler")]
    assert codes("phone_not_mobile", view(form=form(handler_phone="+86 139 0600 1234"))) == []


@pytest.mark.parametrize("address,bad", [("it@yunfan.example.cn", False), ("it@localhost", True),
                                         ("it yunfan@x.cn", True), ("it.yunfan.cn", True)])
def test_email(address: str, bad: bool) -> None:
    got = codes("email_invalid", view(form=form(email=address)))
    assert got == (["email_invalid"] if bad else [])


def test_sender_not_form_address() -> None:
    assert codes("sender_not_form_address", view(from_addr="IT@yunfan.example.cn")) == []
    found = run("sender_not_form_address", view(from_addr="zhangsan@qq.com"))
    assert [(f.code, f.severity) for f in found] == [("sender_not_form_address", "warn")]


def test_delivery_fields_missing() -> None:
    assert codes("delivery_fields", view()) == []
    scanned = view(form={})  # a scanned form: nothing read yet, staff type it in
    found = run("delivery_fields", scanned)
    assert [(f.code, f.severity) for f in found] == [("delivery_fields_missing", "missing")]
    assert found[0].facts["fields"] == ["applicant_org", "org_code", "email", "handler_name",
                                        "handler_phone"]
    assert run("delivery_fields", view(form=form(handler_phone="")))[0].facts["fields"] == [
        "handler_phone"]
    assert codes("delivery_fields", view(form={}, attachments=[])) == []  # no form: missing


def test_key_loss_words() -> None:
    assert codes("key_compromise", view()) == []
    found = run("key_compromise", view(kind="revoke", text="我司证书私钥丢失，申请注销"))
    assert [(f.code, f.severity) for f in found] == [("key_compromise", "warn")]
    assert found[0].facts["reason"] == "keyCompromise" and found[0].facts["urgent"]
    assert codes("key_compromise", view(kind="revoke", key_loss_marked=True)) == [
        "key_compromise"]


# --- the register (hand-built views; the daemon fills them from the database) ----------------

def _ours(**kw: Any) -> KnownCertificate:
    base = {"serial": "7e2a09c4", "org_code": USCC, "organisation": ORG,
            "not_after": NOW + timedelta(days=3000)}
    base.update(kw)
    return KnownCertificate(**base)


def test_already_certified_and_renewal() -> None:
    found = run("already_certified", view(database=True, known_certificates=[_ours()]))
    assert [(f.code, f.severity) for f in found] == [("already_certified", "warn")]
    assert found[0].facts["serial"] == "7e2a09c4" and "7e2a09c4" in found[0].detail
    soon = _ours(not_after=NOW + timedelta(days=30))
    assert codes("already_certified", view(database=True, known_certificates=[soon])) == []
    assert codes("already_certified", view(database=True, known_certificates=[soon]),
                 renewal_window_days=10) == ["already_certified"]
    gone = [_ours(revoked=True), _ours(serial="01", not_after=NOW - timedelta(days=1))]
    assert codes("already_certified", view(database=True, known_certificates=gone)) == []


def test_renamed_organisation() -> None:
    old = _ours(organisation="厦门云帆网络有限公司")
    v = view(database=True, known_certificates=[old])
    found = run("renamed_organisation", v)
    assert [(f.code, f.severity) for f in found] == [("renamed_organisation", "warn")]
    assert found[0].facts["old_name"] == "厦门云帆网络有限公司"
    assert codes("already_certified", v) == []
    assert codes("renamed_organisation", view(database=True, known_certificates=[_ours()])) \
        == []


def _cert(issuer_key: int, serial: int, *, org: str = ORG) -> bytes:
    pub = sm2.public_key_of(sm2.generate_private_key())
    tbs = x509.TbsCertificate({
        "version": "v3", "serial_number": serial, "signature": sig_alg(),
        "issuer": build_name({"C": "CN", "O": "Test CA", "CN": "test ca"}),
        "validity": {"not_before": x509_time(NOW), "not_after": x509_time(NOW + timedelta(1))},
        "subject": build_name({"C": "CN", "O": org, "CN": org}),
        "subject_public_key_info": spki_of(pub)})
    sig = sm2.sign(issuer_key, tbs.dump())
    return x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": sig_alg(),
                             "signature_value": sig}).dump()


def test_revoke_foreign_certificate() -> None:
    ca = sm2.generate_private_key()
    ours, theirs = _cert(ca, 0x7E2A09C4), _cert(sm2.generate_private_key(), 0x1234)
    base = {"kind": "revoke", "database": True, "ca_public_keys": [sm2.public_key_of(ca)]}
    assert codes("revoke_foreign_certificate", view(certificates=[ours], **base)) == []
    found = run("revoke_foreign_certificate", view(certificates=[theirs], **base))
    assert [(f.code, f.severity) for f in found] == [("revoke_foreign_certificate", "warn")]
    assert found[0].facts["serial"] == "1234"


def test_revoke_serial_mismatch() -> None:
    cert = _cert(sm2.generate_private_key(), 0x7E2A09C4)
    for written in ("7E2A09C4", "7e:2a:09:c4", "00 7E 2A 09 C4"):
        v = view(kind="revoke", certificates=[cert], form=form(revoke_serial=written))
        assert codes("revoke_serial_mismatch", v) == [], written
    v = view(kind="revoke", certificates=[cert], form=form(revoke_serial="7E2A09C5"))
    found = run("revoke_serial_mismatch", v)
    assert [(f.code, f.severity) for f in found] == [("revoke_serial_mismatch", "reject")]
    # the certificate file is lost: our register decides (a serial we issued to this code)
    lost = {"kind": "revoke", "certificates": [], "form": form(revoke_serial="7E2A09C4")}
    assert codes("revoke_serial_mismatch", view(**lost)) == []  # no database: not judged
    assert codes("revoke_serial_mismatch",
                 view(database=True, known_certificates=[_ours()], **lost)) == []
    assert codes("revoke_serial_mismatch",
                 view(database=True, known_certificates=[_ours(serial="99")], **lost)) == [
        "revoke_serial_mismatch"]
