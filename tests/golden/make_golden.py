"""Write tests/golden/NNN.eml + NNN.json: raw mail from the builders, and the `inspect` JSON a
person expects for it, reasoned out here case by case (never dumped from the code under test).

Run from the repo root: `python -m tests.golden.make_golden` (needs the OpenSSL CLI for the
SM2 CSRs and certificates). Findings: `code` and `severity` are compared exactly, `detail`
only where it is not "*". CSR `subject` is compared as a set of RDNs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.mailbuilders import (
    PNG,
    Att,
    Mail,
    bounce,
    build,
    forward,
    jpeg,
    make_form,
    make_rsa_csr,
    make_sm2,
    make_zip,
    pdf,
    plain,
    smime_signed,
)

HERE = Path(__file__).resolve().parent
ORG = "厦门海天测试科技有限公司"
ORG2 = "厦门鹭江（集团）有限公司"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
FIELDS = {
    "applicant_org": ORG, "org_code": "91350200MA2Y8XXX1A", "email": "it@haitian-test.com.cn",
    "legal_rep_name": "陈海天", "legal_rep_phone": "13805921234", "legal_rep_id_type": "居民身份证",
    "legal_rep_id_no": "350203197001011234", "handler_name": "林小明",
    "handler_phone": "0592-5123456", "handler_id_type": "居民身份证",
    "handler_id_no": "350203199202021238", "crypto_cert_no": "GM003312220230456",
    "common_name": ORG,
}
NEW = ["application_form", "business_licence", "legal_rep_id", "handler_id",
       "crypto_product_cert", "csr"]
REVOKE = ["application_form", "business_licence", "legal_rep_id", "handler_id", "certificate"]


# A CSR or certificate recognised by parsing is reported with its proper type, whatever
# the mail declared; other files keep the type their magic bytes give (here: as declared).
PARSED_TYPES = {"csr": "application/pkcs10", "certificate": "application/pkix-cert"}


def row(att: Att, material: str) -> dict[str, Any]:
    return {"filename": att.filename, "material": material,
            "content_type": PARSED_TYPES.get(material, att.content_type), "size": len(att.data)}


def missing(kind: str, present: set[str]) -> tuple[list[str], list[dict[str, str]]]:
    need = [m for m in (NEW if kind == "new" else REVOKE) if m not in present]
    return need, [{"code": "missing_material", "severity": "missing",
                   "detail": f"missing material: {m}"} for m in need]


def finding(code: str, severity: str) -> dict[str, str]:
    """A finding whose wording is the rule's business: only code and severity are compared."""
    return {"code": code, "severity": severity, "detail": "*"}


def warn_subject() -> dict[str, str]:
    return finding("subject_format", "warn")


def form_findings() -> list[dict[str, str]]:
    """What the form rules find in FIELDS (and ORG2's copy, same codes and people), sent from
    the builders' addresses; in rule-table order, after the materials and request findings."""
    return [
        # 机构代码 91350200MA2Y8XXX1A: GB 32100 gives check character Q for the first 17, not A.
        finding("org_code_invalid", "reject"),
        # 法定代表人 350203197001011234: GB 11643 (MOD 11-2) gives check digit 0, not 4.
        finding("id_number_invalid", "reject"),
        # 经办人 350203199202021238: GB 11643 gives check digit 1, not 8.
        finding("id_number_invalid", "reject"),
        # 经办人 phone 0592-5123456 is a Xiamen landline (legal rep's 13805921234 is a mobile).
        finding("phone_not_mobile", "reject"),
        # From zhangsan@ / lisi@example.com.cn, not the form's 邮件地址 it@haitian-test.com.cn.
        finding("sender_not_form_address", "warn"),
    ]


def expect(kind: str, *, company: str | None, rows: list[dict[str, Any]], form: dict | None,
           csr: dict | None, case_ref: str | None = None, pre: list | None = None,
           post: list | None = None) -> dict[str, Any]:
    """The JSON for a message: missing materials and their findings follow from the rows."""
    present = {r["material"] for r in rows}
    need, miss_findings = (missing(kind, present) if kind in ("new", "revoke") else ([], []))
    return {"kind": kind, "company": company, "case_ref": case_ref, "attachments": rows,
            "missing": need, "csr": csr, "form": form or {},
            "findings": (pre or []) + miss_findings + (post or [])}


def csr_ok(cn: str, org: str) -> dict[str, Any]:
    return {"valid": True, "algorithm": "SM2", "subject": f"CN={cn},O={org},C=CN", "codes": []}


class Materials:
    def __init__(self, workdir: Path) -> None:
        self.sm2 = make_sm2(workdir / "a", ORG)
        self.sm2b = make_sm2(workdir / "b", ORG2)
        self.signer = make_sm2(workdir / "s", "Zhang San")
        self.rsa_csr = make_rsa_csr(workdir / "r", ORG)

    def full_set(self, style: str = "b", charset: str = "GBK",
                 fields: dict | None = None, kind: str = "new") -> list[Att]:
        f = dict(FIELDS, **(fields or {}))
        return [
            Att("中国电子口岸数字证书申请表.docx", make_form(f, kind=kind), DOCX, style, charset),
            Att("营业执照.pdf", pdf(900, b"licence"), "application/pdf", style, charset),
            Att("法定代表人身份证.jpg", jpeg(700, b"legal"), "image/jpeg", style, charset),
            Att("经办人身份证.jpg", jpeg(650, b"handler"), "image/jpeg", style, charset),
            Att("商用密码产品认证证书.pdf", pdf(800, b"gm"), "application/pdf", style, charset),
        ]


MATERIAL_OF = {"中国电子口岸数字证书申请表.docx": "application_form", "营业执照.pdf": "business_licence",
               "法定代表人身份证.jpg": "legal_rep_id", "经办人身份证.jpg": "handler_id",
               "商用密码产品认证证书.pdf": "crypto_product_cert"}


def rows_of(atts: list[Att]) -> list[dict[str, Any]]:
    return [row(a, MATERIAL_OF[a.filename]) for a in atts]


def form_of(fields: dict | None = None, kind: str = "new") -> dict[str, str]:
    f = dict(FIELDS, **(fields or {}))
    out = {k: v for k, v in f.items() if v}
    if kind in ("new", "revoke"):
        out["application_type"] = kind
    return out


def cases(m: Materials) -> dict[str, tuple[bytes, dict[str, Any]]]:
    out: dict[str, tuple[bytes, dict[str, Any]]] = {}
    csr = Att("server.csr", m.sm2.csr_pem, "application/octet-stream", "ascii")

    # 001 Foxmail, GBK, RFC 2047 B subject and filenames, complete new application.
    atts = m.full_set("b", "GBK") + [csr]
    out["001"] = (build(Mail(subject=f"{ORG}+数字证书申办", attachments=atts, client="foxmail")),
                  expect("new", company=ORG, rows=rows_of(atts[:5]) + [row(csr, "csr")],
                         form=form_of(), csr=csr_ok(ORG, ORG), post=form_findings()))

    # 002 Outlook, UTF-8, Q subject, RFC 2231 names, one file for both IDs, inline logo.
    both = Att("法人及经办人身份证.pdf", pdf(1200, b"ids"), "application/pdf", "2231", "utf-8")
    logo = Att("image001.png", PNG, "image/png", "ascii", inline_cid="image001.png@01DA0000")
    base = m.full_set("2231", "utf-8")
    atts = [base[0], base[1], both, base[4], csr, logo]
    mail = Mail(subject=f"{ORG} + 数字证书申办", charset="utf-8", subject_style="q",
                client="outlook", attachments=atts,
                html="<p>您好，附件为申请材料。</p><img src=\"cid:image001.png@01DA0000\">")
    rows = [row(base[0], "application_form"), row(base[1], "business_licence"),
            row(both, "legal_rep_id"), row(both, "handler_id"),
            row(base[4], "crypto_product_cert"), row(csr, "csr")]
    # The related part (logo) comes first in the tree: body + inline image, then the files.
    out["002"] = (build(mail), expect("new", company=ORG, rows=[row(logo, "other")] + rows,
                                      form=form_of(), csr=csr_ok(ORG, ORG),
                                      post=form_findings()))

    # 003 163 webmail: raw 8-bit GBK subject and names, no plus sign (optional: no
    # subject_format), CSR pasted in the body of both the text and the HTML part -> listed once
    # as (body).
    pem = m.sm2.csr_pem.decode()
    atts = m.full_set("raw", "GBK")[:3]
    mail = Mail(subject=f"{ORG}数字证书申办", subject_style="raw", client="webmail163",
                text=f"您好，证书请求如下：\n{pem}\n谢谢", html="<div>您好，证书请求如下：<br>"
                + pem.replace("\n", "<br>") + "</div>", attachments=atts)
    body = {"filename": "(body)", "material": "csr", "content_type": "text/plain",
            "size": len(m.sm2.csr_der)}
    out["003"] = (build(mail), expect("new", company=ORG, rows=rows_of(atts) + [body],
                                      form=form_of(), csr=csr_ok(ORG, ORG),
                                      post=form_findings()))

    # 004 Revocation: strict subject, form says 注销 with the serial, the old certificate.
    # The certificate's serial is OpenSSL's random one, never the form's 7E2A09C4: mismatch.
    rf = {"revoke_serial": "7E2A09C4", "crypto_cert_no": "", "common_name": ""}
    cer = Att("sign.cer", m.sm2.cert_der, "application/x-x509-ca-cert", "ascii")
    atts = m.full_set("b", "GBK", rf, kind="revoke")[:4] + [cer]
    out["004"] = (build(Mail(subject=f"{ORG}+数字证书申办", attachments=atts)),
                  expect("revoke", company=ORG, rows=rows_of(atts[:4]) + [row(cer, "certificate")],
                         form=form_of(rf, "revoke"), csr=None,
                         post=form_findings() + [finding("revoke_serial_mismatch", "reject")]))

    # 005 Subject says 注销 but the form says 新办 and only a CSR is attached: the files decide.
    atts = m.full_set("b", "GBK")[:2] + [csr]
    out["005"] = (build(Mail(subject=f"{ORG}+数字证书申办（注销）", attachments=atts)),
                  expect("new", company=ORG, rows=rows_of(atts[:2]) + [row(csr, "csr")],
                         form=form_of(), csr=csr_ok(ORG, ORG), pre=[warn_subject()],
                         post=form_findings()))

    # 006 Subject 注销, form 新办, both a CSR and a certificate: new, ambiguous.
    atts = m.full_set("b", "GBK")[:1] + [csr, cer]
    out["006"] = (build(Mail(subject=f"{ORG}+数字证书注销", attachments=atts)),
                  expect("new", company=ORG,
                         rows=rows_of(atts[:1]) + [row(csr, "csr"), row(cer, "certificate")],
                         form=form_of(), csr=csr_ok(ORG, ORG),
                         pre=[warn_subject(), finding("application_type_ambiguous", "reject")],
                         post=form_findings()))

    # 007 Reply with our case tag and repeated prefixes, bringing the CSR.
    out["007"] = (build(Mail(subject=f"回复：Re: [XM-2026-0007] {ORG}+数字证书申办",
                             attachments=[csr], text="补充CSR文件。")),
                  expect("reply", company=ORG, case_ref="XM-2026-0007", rows=[row(csr, "csr")],
                         form=None, csr=csr_ok(ORG, ORG)))

    # 008 Reply found only by In-Reply-To citing our Message-ID (any domain).
    out["008"] = (plain("补充材料", "营业执照见附件。", charset="GBK",
                        in_reply_to="<XM-2026-0012.4f9c2a@mail.xmport.example>",
                        references="<abc@example.com.cn> <XM-2026-0012.4f9c2a@mail.xmport.example>"),
                  expect("reply", company=None, case_ref="XM-2026-0012", rows=[], form=None,
                         csr=None))

    # 009 Automatic reply (Auto-Submitted + 自动回复 subject) to our notice.
    out["009"] = (plain(f"自动回复: [XM-2026-0003] {ORG}+数字证书申办", "我正在休假，1月10日返回。",
                        headers=[("Auto-Submitted", "auto-replied")]),
                  expect("auto_reply", company=None, case_ref="XM-2026-0003", rows=[],
                         form=None, csr=None))

    # 010 Exchange out-of-office: only X-Autoreply and an English subject.
    out["010"] = (plain("Automatic reply: hello", "I am out of the office.",
                        headers=[("X-Autoreply", "yes")], message_id="<ooo.2@example.com>"),
                  expect("auto_reply", company=None, rows=[], form=None, csr=None))

    # 011 X-Auto-Response-Suppress alone is no automatic mail: still a new application.
    atts = m.full_set("b", "GBK")
    mail = Mail(subject=f"{ORG}+数字证书申办", attachments=atts + [csr], client="outlook",
                headers=[("X-Auto-Response-Suppress", "All")], charset="GB2312",
                subject_style="q")
    out["011"] = (build(mail), expect("new", company=ORG, rows=rows_of(atts) + [row(csr, "csr")],
                                      form=form_of(), csr=csr_ok(ORG, ORG),
                                      post=form_findings()))

    # 012 Delivery report (multipart/report) also carrying Auto-Submitted: a bounce.
    out["012"] = (bounce(plain("[XM-2026-0001] 受理通知", "您的申请已受理。")),
                  expect("bounce", company=None, case_ref=None, rows=[], form=None, csr=None))

    # 013 Unrelated mail.
    out["013"] = (plain("关于2026年春节放假安排的通知", "各位同事：春节放假安排如下。"),
                  expect("unrelated", company=None, rows=[], form=None, csr=None))

    # 014 S/MIME-signed application: the signer's certificate in smime.p7s is no material.
    atts = m.full_set("b", "GBK") + [csr]
    raw = smime_signed(Mail(subject=f"{ORG}+数字证书申办", attachments=atts,
                            client="outlook"), m.signer.cert_der)
    p7s = {"filename": "smime.p7s", "material": "other",
           "content_type": "application/pkcs7-signature", "size": len(m.signer.cert_der) + 4}
    out["014"] = (raw, expect("new", company=ORG,
                              rows=rows_of(atts[:5]) + [row(csr, "csr"), p7s],
                              form=form_of(), csr=csr_ok(ORG, ORG), post=form_findings()))

    # 015 An application forwarded as an attachment: its files count; prefixes stripped.
    fatts = m.full_set("b", "GBK", {"applicant_org": ORG2, "common_name": ORG2})[:3]
    inner = build(Mail(subject=f"{ORG2}+数字证书申办", attachments=fatts
                       + [Att("req.csr", m.sm2b.csr_pem, "application/pkcs10", "ascii")]))
    out["015"] = (forward(inner, subject=f"转发：Fwd: {ORG2}＋数字证书申办"),
                  expect("new", company=ORG2,
                         rows=rows_of(fatts) + [{"filename": "req.csr", "material": "csr",
                                                 "content_type": PARSED_TYPES["csr"],
                                                 "size": len(m.sm2b.csr_pem)}],
                         form=form_of({"applicant_org": ORG2, "common_name": ORG2}),
                         csr=csr_ok(ORG2, ORG2), post=form_findings()))

    # 016 Mislabelled: encoded-words declare UTF-8 but carry GBK bytes (subject and names).
    atts = m.full_set("b", "GBK")[:2]
    raw = build(Mail(subject=f"{ORG}+数字证书申办", attachments=atts))
    raw = raw.replace(b"=?GBK?B?", b"=?utf-8?B?")
    out["016"] = (raw, expect("new", company=ORG, rows=rows_of(atts), form=form_of(), csr=None,
                              post=form_findings()))

    # 017 GB2312 Q subject with full-width plus and spaces, repeated Fw prefixes, RFC 2231
    # continuations in GBK, base64 words split mid-character. The subject names ORG2, the
    # form's 申请单位 is ORG: company_mismatch (request rules run before the form's values).
    atts = m.full_set("2231cont", "gbk")[:2]
    mail = Mail(subject=f"FW: Fw：  {ORG2}　＋　数字证书申办", attachments=atts, charset="GB2312",
                subject_style="q")
    out["017"] = (build(mail), expect("new", company=ORG2, rows=rows_of(atts), form=form_of(),
                                      csr=None, post=[finding("company_mismatch", "warn")]
                                      + form_findings()))

    # 018 Split encoded-words (a character cut between two words) in the subject.
    atts = m.full_set("b", "GBK")[1:2]
    mail = Mail(subject=f"{ORG}+数字证书申办", attachments=atts, subject_style="b_split")
    out["018"] = (build(mail), expect("new", company=ORG, rows=rows_of(atts), form=None,
                                      csr=None))

    # 019 Zip of the scans with GBK names (no UTF-8 flag), as Windows zips them.
    z = make_zip([("营业执照.pdf", pdf(500, b"z1")), ("法定代表人身份证.jpg", jpeg(400, b"z2"))])
    zatt = Att("申请材料.zip", z, "application/x-zip-compressed", "b", "GBK")
    atts = m.full_set("b", "GBK")[:1] + [zatt, csr]
    out["019"] = (build(Mail(subject=f"{ORG}+数字证书申办", attachments=atts, client="qq")),
                  expect("new", company=ORG, rows=rows_of(atts[:1]) + [
                      {"filename": "申请材料.zip/营业执照.pdf", "material": "business_licence",
                       "content_type": "application/pdf", "size": 500},
                      {"filename": "申请材料.zip/法定代表人身份证.jpg", "material": "legal_rep_id",
                       "content_type": "image/jpeg", "size": 400},
                      row(csr, "csr")], form=form_of(), csr=csr_ok(ORG, ORG),
                         post=form_findings()))

    # 020 Binary junk: still JSON, with unparseable_message.
    out["020"] = (bytes(range(256)) * 4,
                  expect("unrelated", company=None, rows=[], form=None, csr=None,
                         post=[finding("unparseable_message", "reject")]))

    # 021 Subject without company: the company comes from the form.
    atts = m.full_set("b", "GBK")[:1]
    out["021"] = (build(Mail(subject="数字证书申请", attachments=atts)),
                  expect("new", company=ORG, rows=rows_of(atts), form=form_of(), csr=None,
                         pre=[warn_subject()], post=form_findings()))

    # 022 Bounce by sender only (postmaster, plain text, no report part).
    out["022"] = (plain("邮件退回", "您发送的邮件无法投递。", from_addr="postmaster@example.com.cn"),
                  expect("bounce", company=None, rows=[], form=None, csr=None))

    # 023 The CSR as a DER file.
    der = Att("server.der.csr", m.sm2.csr_der, "application/octet-stream", "ascii")
    atts = m.full_set("b", "GBK")[:1] + [der]
    out["023"] = (build(Mail(subject=f"{ORG}+数字证书申办", attachments=atts)),
                  expect("new", company=ORG, rows=rows_of(atts[:1]) + [row(der, "csr")],
                         form=form_of(), csr=csr_ok(ORG, ORG), post=form_findings()))

    # 024 The CSR as Windows certreq writes it: UTF-16 with a BOM, CRLF lines.
    u16 = b"\xff\xfe" + m.sm2.csr_pem.decode().replace("\n", "\r\n").encode("utf-16-le")
    att = Att("certreq.csr", u16, "application/octet-stream", "ascii")
    out["024"] = (build(Mail(subject=f"{ORG}+数字证书申办", attachments=[att])),
                  expect("new", company=ORG, rows=[row(att, "csr")], form=None,
                         csr=csr_ok(ORG, ORG)))

    # 025 Bare base64 (no armour) in a .txt file, Outlook Q-encoded subject in GBK.
    bare = b"\r\n".join(line for line in m.sm2.csr_pem.splitlines()
                         if not line.startswith(b"-----"))
    att = Att("证书请求.txt", bare, "text/plain", "b", "GBK")
    out["025"] = (build(Mail(subject=f"{ORG}+数字证书申办", subject_style="q", client="outlook",
                             attachments=[att])),
                  expect("new", company=ORG, rows=[row(att, "csr")], form=None,
                         csr=csr_ok(ORG, ORG)))

    # 026 An RSA request: refused by the checker, still a new application.
    att = Att("rsa.csr", m.rsa_csr, "application/octet-stream", "ascii")
    out["026"] = (build(Mail(subject=f"{ORG}+数字证书申办", attachments=[att])),
                  expect("new", company=ORG, rows=[row(att, "csr")], form=None,
                         csr={"valid": False, "algorithm": "RSA-2048",
                              "subject": f"CN={ORG},O={ORG},C=CN", "codes": ["csr_not_sm2"]},
                         post=[finding("csr_not_sm2", "reject")]))

    # 027 A list/bulk mail that looks like an application is automatic, not a case.
    out["027"] = (plain(f"{ORG}+数字证书申办", "newsletter", headers=[("Precedence", "bulk")]),
                  expect("auto_reply", company=None, rows=[], form=None, csr=None))

    # 028 A reply found by References alone (In-Reply-To missing), QQ-style raw UTF-8 subject.
    raw = build(Mail(subject="回复：补充经办人身份证", subject_style="raw", charset="utf-8",
                     client="qq", references="<XM-2026-0031.77aa@xmport.example>",
                     attachments=[Att("经办人身份证.jpg", jpeg(300), "image/jpeg", "raw",
                                      "utf-8")]))
    out["028"] = (raw, expect("reply", company=None, case_ref="XM-2026-0031",
                              rows=[{"filename": "经办人身份证.jpg", "material": "handler_id",
                                     "content_type": "image/jpeg", "size": 300}],
                              form=None, csr=None))
    return out


def main(argv: list[str] | None = None) -> int:
    target = Path((argv or sys.argv[1:] or [str(HERE)])[0])
    with tempfile.TemporaryDirectory() as tmp:
        made = cases(Materials(Path(tmp)))
    for old in list(target.glob("[0-9][0-9][0-9].eml")) + list(target.glob("[0-9][0-9][0-9].json")):
        old.unlink()
    for name, (raw, expected) in made.items():
        (target / f"{name}.eml").write_bytes(raw)
        (target / f"{name}.json").write_text(
            json.dumps(expected, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(made)} golden pairs to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

