"""Classification: bounce > auto_reply > reply > new/revoke > unrelated, on whole messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.app.inspection import inspect_message
from mailbot.intake.analyse import analyse_message
from mailbot.intake.classify import Headers, application_type, case_ref_from_ids, is_auto_reply
from tests.support.mailbuilders import (
    Att,
    Mail,
    bounce,
    build,
    make_form,
    make_sm2,
    pdf,
    plain,
    smime_signed,
)

ORG = "厦门海天测试科技有限公司"
APP = f"{ORG}+数字证书申办"


@pytest.fixture(scope="module")
def sm2(tmp_path_factory: pytest.TempPathFactory):
    return make_sm2(Path(tmp_path_factory.mktemp("sm2")), ORG)


def kind(raw: bytes) -> str:
    return analyse_message(raw).kind


@pytest.mark.parametrize("headers", [
    [("Auto-Submitted", "auto-replied")], [("Auto-Submitted", "auto-generated")],
    [("Auto-Submitted", "auto-replied; owner-email=\"x@y\"")], [("Precedence", "bulk")],
    [("Precedence", "junk")], [("Precedence", "list")], [("X-Autoreply", "yes")],
    [("X-Autorespond", "vacation")]])
def test_automatic_headers(headers: list[tuple[str, str]]) -> None:
    assert kind(plain(APP, "x", headers=headers)) == "auto_reply"


@pytest.mark.parametrize("headers", [[("Auto-Submitted", "no")],
                                     [("X-Auto-Response-Suppress", "All")],
                                     [("X-Auto-Response-Suppress", "DR, OOF, AutoReply")],
                                     [("Precedence", "normal")]])
def test_not_automatic(headers: list[tuple[str, str]]) -> None:
    assert kind(plain(APP, "x", headers=headers)) == "new"


@pytest.mark.parametrize("subject", ["自动回复: 你好", "Automatic reply: 申请", "Out of Office: x"])
def test_auto_reply_subject(subject: str) -> None:
    assert kind(plain(subject, "x")) == "auto_reply"


def test_delivery_report_is_a_bounce_even_with_auto_submitted() -> None:
    original = plain(APP, "x")
    assert kind(bounce(original, auto_submitted=True)) == "bounce"
    assert kind(bounce(original, auto_submitted=False)) == "bounce"


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@189.cn", "postmaster@example.com",
                                    "Mailer-Daemon@mx.qq.com"])
def test_bounce_senders(sender: str) -> None:
    assert kind(plain("Delivery failure", "x", from_addr=f"System <{sender}>")) == "bounce"


def test_null_return_path_is_a_bounce() -> None:
    raw = plain("你好", "x").replace(b"Return-Path: <wangwu@example.com.cn>", b"Return-Path: <>")
    assert b"Return-Path: <>" in raw
    assert kind(raw) == "bounce"


def test_delivery_status_part_alone_is_a_bounce() -> None:
    raw = (b"From: a@example.com\r\nSubject: notice\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\n--b--\r\n")
    assert kind(raw) == "bounce"


def test_reply_by_subject_tag_and_by_message_id() -> None:
    f = analyse_message(plain(f"Re: [XM-2026-0007] {APP}", "x"))
    assert (f.kind, f.case_ref) == ("reply", "XM-2026-0007")
    f = analyse_message(plain("补充", "x", in_reply_to="<XM-2026-0042.abcdef@other.example>"))
    assert (f.kind, f.case_ref) == ("reply", "XM-2026-0042")
    f = analyse_message(plain("补充", "x", references="<a@b> <XM-2025-0100.z@mail.example>"))
    assert (f.kind, f.case_ref) == ("reply", "XM-2025-0100")
    f = analyse_message(plain("补充", "x", in_reply_to="<XM-2026-0042@other.example>"))
    assert f.kind == "unrelated"  # no dot after the number: not one of ours


def test_case_exists_hook() -> None:
    raw = plain(f"Re: [XM-2026-0007] {APP}", "x")
    assert analyse_message(raw, case_exists=lambda ref: False).kind == "new"
    assert analyse_message(raw, case_exists=lambda ref: True).kind == "reply"


def test_case_ref_from_ids() -> None:
    assert case_ref_from_ids(["<xm-2026-0001.r@d>"]) == "XM-2026-0001"
    assert case_ref_from_ids(["<foo@bar>"]) is None


def test_auto_reply_wins_over_reply() -> None:
    raw = plain(f"自动回复: [XM-2026-0003] {APP}", "x", headers=[("Auto-Submitted", "auto-replied")])
    f = analyse_message(raw)
    assert (f.kind, f.case_ref) == ("auto_reply", "XM-2026-0003")
    assert f.missing == [] and f.company is None


def test_is_auto_reply_unit() -> None:
    assert not is_auto_reply(Headers(subject="hi"))
    assert is_auto_reply(Headers(subject="hi", auto_submitted="Auto-Generated"))


@pytest.mark.parametrize("form,hint,csr,cert,want,ambiguous", [
    ("new", False, True, False, "new", False),
    ("revoke", False, False, True, "revoke", False),
    ("revoke", False, True, False, "new", False),        # files decide
    ("new", True, False, True, "revoke", False),         # files decide
    ("new", True, True, True, "new", True),              # both files: ambiguous
    ("new", True, False, False, "new", True),            # neither: ambiguous
    (None, True, False, False, "revoke", False),
    (None, False, False, False, "new", False),
    (None, False, True, True, "new", True),
    ("new", False, True, True, "new", False),            # renewal with the old cert attached
])
def test_application_type(form, hint, csr, cert, want, ambiguous) -> None:
    k, findings = application_type(form, hint, csr, cert)
    assert k == want
    assert [f.code for f in findings] == (["application_type_ambiguous"] if ambiguous else [])
    assert all(f.severity == "reject" for f in findings)


def test_revocation_by_certificate_instead_of_csr(sm2) -> None:
    atts = [Att("sign.cer", sm2.cert_der, "application/pkix-cert", "ascii")]
    f = inspect_message(build(Mail(subject=APP, attachments=atts)))
    assert f.kind == "revoke"
    assert f.certificate_der == sm2.cert_der
    assert f.missing == ["application_form", "business_licence", "legal_rep_id", "handler_id"]


def test_smime_signature_certificate_is_no_material(sm2) -> None:
    atts = [Att("营业执照.pdf", pdf(300), "application/pdf")]
    f = analyse_message(smime_signed(Mail(subject=APP, attachments=atts), sm2.cert_der))
    assert f.kind == "new"
    assert "certificate" not in f.materials_present
    assert [a.materials for a in f.attachments if a.filename == "smime.p7s"] == [["other"]]
    assert f.certificate_der is None


def test_form_type_revoke_with_certificate(sm2) -> None:
    atts = [Att("申请表.docx", make_form({"applicant_org": ORG, "revoke_serial": "01AB"},
                                          kind="revoke"),
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            Att("old.cer", sm2.cert_der, "application/octet-stream", "ascii")]
    f = analyse_message(build(Mail(subject=f"{ORG}+数字证书申办", attachments=atts)))
    assert f.kind == "revoke"
    assert f.form.get("revoke_serial") == "01AB"


def test_unrelated_mail_has_no_missing() -> None:
    f = analyse_message(plain("周末聚餐", "x"))
    assert f.kind == "unrelated" and f.missing == [] and f.findings == []
    assert f.to_inspect_json()["missing"] == []


def test_attachments_alone_make_an_application(sm2) -> None:
    atts = [Att("server.csr", sm2.csr_pem, "application/octet-stream", "ascii")]
    f = analyse_message(build(Mail(subject="请查收", attachments=atts)))
    assert f.kind == "new"
    assert [x.code for x in f.findings][0] == "subject_format"
    assert f.csr is not None and f.csr.valid and f.csr_der == sm2.csr_der


def test_opaque_smime_body_is_no_certificate(sm2) -> None:
    p7m = b"\x30\x82" + len(sm2.cert_der).to_bytes(2, "big") + sm2.cert_der
    raw = (b"From: a@example.com\r\nSubject: " + APP.encode() + b"\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n"
           + __import__("base64").encodebytes(p7m))
    f = analyse_message(raw)
    assert f.kind == "new" and "certificate" not in f.materials_present
    assert [a.materials for a in f.attachments] == [["other"]]
