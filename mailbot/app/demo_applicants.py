"""The demo's sample applicants and the mails they send to the desk.

Three companies of the Xiamen customs district: one sends a complete application, one forgets
the handler's ID scan, one attaches an RSA request (refused since 2022-07-01). Their 统一社会
信用代码 and ID numbers carry computed check characters (GB 32100, GB 11643), so the rules
judge only what the demo means to show. SM2 keys and requests are made fresh by the PKI's own
code (mailbot.pki.request); the mails are written as a mail client writes them (Python's
email package: RFC 2047 subject, RFC 2231 file names).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path

from mailbot import clock
from mailbot.app.demo_forms import DOCX_TYPE, application_form, scan_jpeg, scan_pdf
from mailbot.config import Config
from mailbot.pki import sm2
from mailbot.pki.request import build_csr, csr_pem
from mailbot.pki.signer.soft import write_private_key
from mailbot.rules.validators import resident_id_check_digit, uscc_check_char

FORM_NAME = "中国电子口岸数字证书申请表.docx"
CRYPTO_CERT_NO = "GM003312220230456"

# An RSA-2048 request (`openssl req -new -key rsa.key -utf8 -subj /C=CN/O=厦门同安电子有限公司/
# CN=厦门同安电子有限公司`): public data, kept here so the demo needs no OpenSSL CLI.
RSA_CSR_PEM = b"""\
-----BEGIN CERTIFICATE REQUEST-----
MIICpDCCAYwCAQAwXzELMAkGA1UEBhMCQ04xJzAlBgNVBAoMHuWOpumXqOWQjOWu
ieeUteWtkOaciemZkOWFrOWPuDEnMCUGA1UEAwwe5Y6m6Zeo5ZCM5a6J55S15a2Q
5pyJ6ZmQ5YWs5Y+4MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmoaL
tOjDh6E1mMP1J8vy/9csoc4GkVl10k9M8zSs9TelE3WZ/UNorQjilNFZPKa5cqCp
iGHjUWAKP3IkInv2PHW0Mnh/n2mkLthm0pSkjxo8EcbudZ4FborqS69FCwlRIYGt
CbOc4mdfga8AwqCImU2O+kgkSzZRNOO2u/JN7n2xVeb6BOwrw5RGFnTGn4yUqldu
+a/Y5WfnxDeTgN80gvPc42wMgMVjM6IoW9HdbZmWetvcexNrBMmg7qNBD72LLD6m
5MX0agw2TFfFnkQNtplbczGnMiPnXmaD/EoVyt64xtq5cttGHawxVUQ4rV1t4R6/
3KOmprzr+RBAcdmX4wIDAQABoAAwDQYJKoZIhvcNAQELBQADggEBABR0IQFyEHvz
QXwk5v3/izWQ7MV/VAewzj2+QwbCa5z6FJ1/PHDxD2YYZ1fCIEM4sm5T7AXAJY+Y
wz6UYDVbXUpu9UfXAem7UqfbbUDPn7eGu/8rr4RxBK1YBqLSu3Ubuh1lg9N6rRYk
+CuMzJeKzKArK3CUa2m0j0Fh9fxg0Kmn56z8KCpCY57WRwLVpc2Wof3qVMZR/5UT
2O/OCgm0xJfjE7IFmfP3nHJTHlabFxzBPSh3Gd6zeB10AvQjQtHwCT3fy5GTcv+h
EZOfL/p+/i/o+Uv7qCS/Z/jz9oStFi/PfUZuw0Qk/3XpdvNOJ9+yAi2XaxdUn2q1
+kL9ruwOPgk=
-----END CERTIFICATE REQUEST-----
"""

Attachment = tuple[str, bytes, str]  # (file name, bytes, content type)


@dataclass(frozen=True)
class Person:
    name: str
    mobile: str
    id_first17: str  # the check digit is computed (GB 11643), so every number is valid

    @property
    def id_no(self) -> str:
        return self.id_first17 + resident_id_check_digit(self.id_first17)


@dataclass(frozen=True)
class Applicant:
    slug: str  # its folder under applicants/ and its mail domain
    company: str
    uscc17: str  # 统一社会信用代码 without its check character (GB 32100), Xiamen district
    legal_rep: Person
    handler: Person
    form_email: str  # the form's 邮件地址: where certificates and results go
    request: str  # "sm2" (made here) or "rsa" (the fixed request above)
    leave_out: tuple[str, ...] = ()  # attachments this applicant forgot

    @property
    def org_code(self) -> str:
        return self.uscc17 + uscc_check_char(self.uscc17)

    @property
    def sender(self) -> str:
        # The handler mails from their own address: acknowledgements go back there, the
        # certificates to the form's 邮件地址.
        return formataddr((self.handler.name, f"handler@{self.slug}.example.cn"))

    def form_values(self, **changes: str) -> dict[str, str]:
        return {"applicant_org": self.company, "org_code": self.org_code,
                "email": self.form_email,
                "legal_rep_name": self.legal_rep.name, "legal_rep_phone": self.legal_rep.mobile,
                "legal_rep_id_type": "居民身份证", "legal_rep_id_no": self.legal_rep.id_no,
                "handler_name": self.handler.name, "handler_phone": self.handler.mobile,
                "handler_id_type": "居民身份证", "handler_id_no": self.handler.id_no,
                "crypto_cert_no": CRYPTO_CERT_NO, "common_name": self.company, **changes}


COMPLETE = Applicant("ludao", "厦门鹭岛港航科技有限公司", "91350206MA8DM0001",
                     Person("陈海天", "13805921234", "35020619700101123"),
                     Person("林小明", "13905920000", "35020619920202123"),
                     "cert@ludao.example.cn", "sm2")
MISSING = Applicant("haicang", "厦门海沧物流有限公司", "91350205MA8DM0002",
                    Person("王建国", "13606051111", "35020519750315101"),
                    Person("黄丽", "13706052222", "35020519900720202"),
                    "pki@haicang.example.cn", "sm2", leave_out=("经办人身份证.jpg",))
RSA = Applicant("tongan", "厦门同安电子有限公司", "91350212MA8DM0003",
                Person("吴志强", "13859201111", "35021219680808303"),
                Person("郑芳", "13859202222", "35021219950101404"),
                "it@tongan.example.cn", "rsa")
APPLICANTS = (COMPLETE, MISSING, RSA)


def _mail(cfg: Config, who: Applicant, subject: str, text: str,
          files: list[Attachment]) -> tuple[bytes, str]:
    """(raw message, Message-ID) from the applicant's handler to our address."""
    msg = EmailMessage()
    msg["From"] = who.sender
    msg["To"] = cfg.mailbox.our_address
    msg["Subject"] = subject
    msg["Date"] = format_datetime(clock.now())
    message_id = f"<demo.{uuid.uuid4().hex[:16]}@{who.slug}.example.cn>"
    msg["Message-ID"] = message_id
    msg.set_content(text)
    for name, data, ctype in files:
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(), message_id


def _scans(who: Applicant, *, product_cert: bool) -> list[Attachment]:
    files = [("营业执照.pdf", scan_pdf(f"Business licence {who.org_code}"), "application/pdf"),
             ("法定代表人身份证.jpg", scan_jpeg("ID card: legal representative"), "image/jpeg"),
             ("经办人身份证.jpg", scan_jpeg("ID card: handler"), "image/jpeg")]
    if product_cert:
        files.append(("商用密码产品认证证书.pdf",
                      scan_pdf(f"Commercial cryptography product certificate {CRYPTO_CERT_NO}"),
                      "application/pdf"))
    return files


def _keep(folder: Path, files: list[Attachment]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data, _ctype in files:
        (folder / name).write_bytes(data)


def application_mail(cfg: Config, who: Applicant, folder: Path) -> tuple[bytes, str]:
    """A 新办 application, (raw, Message-ID); the applicant's signing key (sign.key.pem,
    which opens envprivatekey later), request and files are kept in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if who.request == "sm2":
        d = sm2.generate_private_key()
        write_private_key(folder / "sign.key.pem", d)
        request = csr_pem(build_csr(d, {"C": "CN", "O": who.company, "CN": who.company}))
    else:
        request = RSA_CSR_PEM
    files = [(FORM_NAME, application_form(who.form_values()), DOCX_TYPE),
             *_scans(who, product_cert=True), ("server.csr", request, "application/pkcs10")]
    files = [f for f in files if f[0] not in who.leave_out]
    _keep(folder, files)
    return _mail(cfg, who, f"{who.company}+数字证书申办",
                 f"您好：\n附件是{who.company}的数字证书申请材料，请查收。\n"
                 f"经办人：{who.handler.name} {who.handler.mobile}\n", files)


def revocation_mail(cfg: Config, who: Applicant, sign_cer: bytes, serial: str,
                    folder: Path) -> tuple[bytes, str]:
    """A 注销 application as the holder sends it: the form (注销 ticked, its 序号), the
    licence and ID scans, and the certificate itself (sign.cer as it was received)."""
    form = application_form(who.form_values(revoke_serial=serial, crypto_cert_no="",
                                            common_name=""), kind="revoke")
    files = [(FORM_NAME, form, DOCX_TYPE), *_scans(who, product_cert=False),
             ("sign.cer", sign_cer, "application/pkix-cert")]
    _keep(folder, files)
    return _mail(cfg, who, f"{who.company}+数字证书注销",
                 f"您好：\n我司申请注销序号为 {serial} 的数字证书，材料见附件。\n", files)
