"""Builders of raw .eml bytes the way real clients write them (Foxmail, Outlook, 163/QQ webmail).

Everything is assembled by hand, byte by byte, so the tests see exactly the encodings those
clients emit: GBK/GB2312/UTF-8 headers in RFC 2047 B or Q, RFC 2231 filenames (with
continuations), raw 8-bit GBK headers, forwarded message/rfc822, inline logos with Content-ID,
S/MIME signatures, delivery reports and automatic replies. Also a tiny real .docx form and real
SM2 CSRs/certificates made with the OpenSSL CLI.
"""

from __future__ import annotations

import base64
import binascii
import io
import subprocess
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

CRLF = b"\r\n"
SM2_ID = "1234567812345678"

# ---------------------------------------------------------------------------------------------
# small files
PDF = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
       b"trailer\n<< /Root 1 0 R >>\n%%EOF\n")
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 \
    + b"\xff\xd9"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")


def pdf(size: int = 0, tag: bytes = b"") -> bytes:
    """A PDF-looking file of about `size` bytes (scans are opaque to intake)."""
    body = PDF + b"%" + tag + b"\n"
    return body + b"%" * max(0, size - len(body))


def jpeg(size: int = 0, tag: bytes = b"") -> bytes:
    body = JPEG[:-2] + tag
    return body + b"\x00" * max(0, size - len(body) - 2) + b"\xff\xd9"


# ---------------------------------------------------------------------------------------------
# the application form (.docx): a table laid out like the source document's form
def _cell(text: str) -> str:
    runs = "".join(f"<w:p><w:r><w:t xml:space=\"preserve\">{escape(line)}</w:t></w:r></w:p>"
                   for line in text.split("\n")) or "<w:p/>"
    return f"<w:tc><w:tcPr><w:tcW w:w=\"1500\" w:type=\"dxa\"/></w:tcPr>{runs}</w:tc>"


def form_rows(fields: dict[str, str], *, kind: str = "new") -> list[list[str]]:
    """The rows of 《中国电子口岸数字证书申请表》 with the values filled beside their labels.
    kind: "new", "revoke", "both" (both boxes ticked) or "none"."""
    new_box = "☑" if kind in ("new", "both") else "□"
    rev_box = "☑" if kind in ("revoke", "both") else "□"
    serial = fields.get("revoke_serial", "")
    return [
        ["申请类别", f"{new_box}新办        {rev_box}注销（待注销的证书[序号：{serial}]）"],
        ["申请者基本信息"],
        ["申请单位", fields.get("applicant_org", ""), "机构代码", fields.get("org_code", "")],
        ["邮件地址", fields.get("email", "")],
        ["法定代表人/主要负责人", fields.get("legal_rep_name", ""), "联系电话",
         fields.get("legal_rep_phone", ""), "证件类型", fields.get("legal_rep_id_type", "")],
        ["证件号码", fields.get("legal_rep_id_no", "")],
        ["经办人", fields.get("handler_name", ""), "联系电话", fields.get("handler_phone", ""),
         "证件类型", fields.get("handler_id_type", "")],
        ["证件号码", fields.get("handler_id_no", "")],
        ["服务类密码设备商用密码产品认证证书编号", fields.get("crypto_cert_no", "")],
        ["数字证书信息"],
        ["通用名", fields.get("common_name", ""), "算法", "SM2", "证书有效期", "10年"],
    ]


def make_docx(rows: list[list[str]], title: str = "中国电子口岸数字证书申请表") -> bytes:
    """A minimal real .docx (content types, rels, document.xml with one table)."""
    ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    table = "".join("<w:tr>" + "".join(_cell(c) for c in row) + "</w:tr>" for row in rows)
    document = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:document xmlns:w="{ns}"><w:body>'
        f'<w:p><w:r><w:t>{escape(title)}</w:t></w:r></w:p>'
        f'<w:tbl><w:tblPr><w:tblW w:w="0" w:type="auto"/></w:tblPr>{table}</w:tbl>'
        f'<w:sectPr/></w:body></w:document>')
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.wordprocessingml.document.main+xml"/></Types>')
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
    doc_rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("[Content_Types].xml", content_types), ("_rels/.rels", rels),
                           ("word/_rels/document.xml.rels", doc_rels),
                           ("word/document.xml", document)):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def make_form(fields: dict[str, str], *, kind: str = "new") -> bytes:
    return make_docx(form_rows(fields, kind=kind))


def make_zip(members: list[tuple[str, bytes]], *, gbk_names: bool = True) -> bytes:
    """A zip as Windows' "send to compressed folder" makes it: GBK names, no UTF-8 flag."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    if gbk_names and any(not n.isascii() for n, _ in members):
        return _rebuild_zip_gbk(members)
    return buf.getvalue()


def _rebuild_zip_gbk(members: list[tuple[str, bytes]]) -> bytes:
    """Write a stored zip by hand with GBK-encoded names and flag bit 11 clear."""
    import struct
    import zlib
    out = io.BytesIO()
    central = []
    for name, data in members:
        fname = name.encode("gbk")
        crc = zlib.crc32(data) & 0xFFFFFFFF
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        cdata = comp.compress(data) + comp.flush()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x5C21, crc, len(cdata),
                              len(data), len(fname), 0))
        out.write(fname)
        out.write(cdata)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x5C21,
                                   crc, len(cdata), len(data), len(fname), 0, 0, 0, 0, 0x20,
                                   offset) + fname)
    start = out.tell()
    for c in central:
        out.write(c)
    size = out.tell() - start
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), size,
                          start, 0))
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# OpenSSL: real SM2 CSRs and certificates
@dataclass
class Sm2Material:
    key_pem: bytes
    csr_pem: bytes
    csr_der: bytes
    cert_der: bytes


def make_rsa_csr(workdir: Path, cn: str) -> bytes:
    """A real RSA-2048 CSR (PEM): refused since 2022-07-01."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, csr = workdir / "rsa.pem", workdir / "rsa.csr"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-utf8", "-subj",
                    f"/C=CN/O={cn}/CN={cn}", "-out", str(csr)], check=True, capture_output=True)
    return csr.read_bytes()


def make_sm2(workdir: Path, cn: str, org: str | None = None) -> Sm2Material:
    """A real SM2 key, CSR (SM3withSM2, default ID) and a self-signed cert, by the OpenSSL CLI."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, csr, cer = workdir / "k.pem", workdir / "r.csr", workdir / "c.cer"
    subj = f"/C=CN/O={org or cn}/CN={cn}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "genpkey", "-algorithm", "SM2", "-out", str(key))
    run("openssl", "req", "-new", "-key", str(key), "-sm3", "-sigopt", f"distid:{SM2_ID}",
        "-utf8", "-subj", subj, "-out", str(csr))
    run("openssl", "req", "-x509", "-new", "-key", str(key), "-sm3", "-sigopt",
        f"distid:{SM2_ID}", "-utf8", "-subj", subj, "-days", "3650", "-outform", "DER",
        "-out", str(cer))
    pem = csr.read_bytes()
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    return Sm2Material(key.read_bytes(), pem, base64.b64decode(body), cer.read_bytes())


# ---------------------------------------------------------------------------------------------
# header encodings
def b_word(text: str, charset: str = "GBK", chunk: int = 0) -> str:
    """RFC 2047 B encoded-word(s); `chunk` > 0 splits the bytes (maybe mid-character)."""
    data = text.encode(charset)
    if chunk <= 0:
        return f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    return "\r\n ".join(f"=?{charset}?B?{base64.b64encode(data[i:i + chunk]).decode()}?="
                        for i in range(0, len(data), chunk))


def q_word(text: str, charset: str = "GB2312") -> str:
    data = text.encode(charset)
    out = []
    for b in data:
        c = chr(b)
        if c == " ":
            out.append("_")
        elif c.isalnum() and b < 128:
            out.append(c)
        else:
            out.append(f"={b:02X}")
    return f"=?{charset}?Q?{''.join(out)}?="


def rfc2231(param: str, text: str, charset: str = "utf-8", pieces: int = 1) -> str:
    """filename*=charset''%XX (or filename*0*=..; filename*1*=.. continuations)."""
    quoted = urllib.parse.quote(text.encode(charset), safe="")
    if pieces <= 1:
        return f"{param}*={charset}''{quoted}"
    # Cut only between %XX escapes.
    tokens = []
    i = 0
    while i < len(quoted):
        step = 3 if quoted[i] == "%" else 1
        tokens.append(quoted[i:i + step])
        i += step
    per = max(1, len(tokens) // pieces)
    chunks = ["".join(tokens[i:i + per]) for i in range(0, len(tokens), per)]
    parts = [f"{param}*0*={charset}''{chunks[0]}"]
    parts += [f"{param}*{n}*={c}" for n, c in enumerate(chunks[1:], 1)]
    return ";\r\n\t".join(parts)


def b64_body(data: bytes, width: int = 76) -> bytes:
    enc = binascii.b2a_base64(data, newline=False)
    return CRLF.join(enc[i:i + width] for i in range(0, len(enc), width))


def qp_body(text: bytes) -> bytes:
    return binascii.b2a_qp(text).replace(b"\n", b"\r\n")


# ---------------------------------------------------------------------------------------------
# messages
@dataclass
class Att:
    """One attachment. name_style: "b" (RFC 2047 in quotes, Foxmail/Outlook), "q",
    "2231" (RFC 2231, Thunderbird/Outlook), "2231cont" (continuations), "raw" (8-bit bytes
    of `charset`, 163/QQ webmail), "ascii"."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"
    name_style: str = "b"
    charset: str = "GBK"
    inline_cid: str | None = None
    encoding: str = "base64"


@dataclass
class Mail:
    subject: str = ""
    from_addr: str = "张三 <zhangsan@example.com.cn>"
    to_addr: str = "xmport@189.cn"
    client: str = "foxmail"       # foxmail | outlook | webmail163 | qq
    charset: str = "GBK"          # header and body charset
    subject_style: str = "b"      # b | q | raw | ascii
    text: str | None = "您好，附件是我司数字证书申请材料，请查收。"
    html: str | None = None
    attachments: list[Att] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    message_id: str = "<20260105093000123456@example.com.cn>"
    in_reply_to: str | None = None
    references: str | None = None
    date: str = "Mon, 5 Jan 2026 09:30:00 +0800"
    boundary_seed: str = "0"


MAILERS = {"foxmail": "Foxmail 7.2.25.228[cn]",
           "outlook": "Microsoft Outlook 16.0",
           "webmail163": "Coremail Webmail Server Version XT5.0.14",
           "qq": "QQMail 2.x"}


def _addr(text: str, charset: str, style: str) -> bytes:
    if "<" in text and not text.split("<", 1)[0].strip().isascii():
        name, rest = text.split("<", 1)
        if style == "raw":
            return name.strip().encode(charset) + b" <" + rest.encode()
        word = q_word(name.strip(), charset) if style == "q" else b_word(name.strip(), charset)
        return f"{word} <{rest}".encode()
    return text.encode()


def header_value(text: str, charset: str, style: str) -> bytes:
    if text.isascii() or style == "ascii":
        return text.encode(charset if not text.isascii() else "ascii")
    if style == "raw":
        return text.encode(charset)
    if style == "q":
        return q_word(text, charset).encode()
    if style == "b_split":
        return b_word(text, charset, chunk=7).encode()
    return b_word(text, charset).encode()


def _filename_params(att: Att) -> tuple[bytes, bytes]:
    """(Content-Type name param, Content-Disposition filename param) as the client writes."""
    name = att.filename
    if name.isascii() or att.name_style == "ascii":
        return f'name="{name}"'.encode(), f'filename="{name}"'.encode()
    if att.name_style == "raw":
        raw = name.encode(att.charset)
        return b'name="' + raw + b'"', b'filename="' + raw + b'"'
    if att.name_style in ("2231", "2231cont"):
        pieces = 3 if att.name_style == "2231cont" else 1
        return (rfc2231("name", name, att.charset, pieces).encode(),
                rfc2231("filename", name, att.charset, pieces).encode())
    word = q_word(name, att.charset) if att.name_style == "q" else b_word(name, att.charset)
    return f'name="{word}"'.encode(), f'filename="{word}"'.encode()


def attachment_part(att: Att) -> bytes:
    name_p, file_p = _filename_params(att)
    disp = b"inline" if att.inline_cid else b"attachment"
    lines = [b"Content-Type: " + att.content_type.encode() + b";\r\n\t" + name_p,
             b"Content-Transfer-Encoding: " + att.encoding.encode()]
    if att.inline_cid:
        lines.append(f"Content-ID: <{att.inline_cid}>".encode())
    lines.append(b"Content-Disposition: " + disp + b";\r\n\t" + file_p)
    if att.encoding == "base64":
        body = b64_body(att.data)
    elif att.encoding == "quoted-printable":
        body = qp_body(att.data)
    else:
        body = att.data
    return CRLF.join(lines) + CRLF + CRLF + body


def text_part(text: str, charset: str, subtype: str = "plain", cte: str = "base64") -> bytes:
    data = text.encode(charset)
    body = b64_body(data) if cte == "base64" else (qp_body(data) if cte == "quoted-printable"
                                                   else data)
    return (f"Content-Type: text/{subtype};\r\n\tcharset=\"{charset}\"\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode() + body


def multipart(subtype: str, parts: list[bytes], boundary: str, extra: str = "") -> bytes:
    head = f"Content-Type: multipart/{subtype};\r\n\tboundary=\"{boundary}\"{extra}\r\n\r\n"
    out = [head.encode(), b"This is a multi-part message in MIME format.\r\n"]
    for p in parts:
        out.append(f"\r\n--{boundary}\r\n".encode() + p)
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


def _body_entity(mail: Mail) -> bytes:
    cs = mail.charset
    seed = mail.boundary_seed
    cte = "quoted-printable" if mail.client == "outlook" else "base64"
    alts: list[bytes] = []
    if mail.text is not None:
        alts.append(text_part(mail.text, cs, "plain", cte))
    if mail.html is not None:
        alts.append(text_part(mail.html, cs, "html", cte))
    if len(alts) == 1:
        body = alts[0]
    elif alts:
        body = multipart("alternative", alts, f"----=_NextPart_{seed}_ALT")
    else:
        body = text_part("", cs)
    inline = [a for a in mail.attachments if a.inline_cid]
    files = [a for a in mail.attachments if not a.inline_cid]
    if inline:
        body = multipart("related", [body] + [attachment_part(a) for a in inline],
                         f"----=_NextPart_{seed}_REL", ';\r\n\ttype="multipart/alternative"')
    if files:
        body = multipart("mixed", [body] + [attachment_part(a) for a in files],
                         f"----=_NextPart_{seed}_MIX")
    return body


def build(mail: Mail) -> bytes:
    """The whole message as the chosen client would write it."""
    cs = mail.charset
    style = mail.subject_style
    h: list[bytes] = [
        b"Return-Path: <" + mail.from_addr.split("<")[-1].strip(">").encode() + b">"
        if "<" in mail.from_addr else b"Return-Path: <" + mail.from_addr.encode() + b">",
        b"Date: " + mail.date.encode(),
        b"From: " + _addr(mail.from_addr, cs, "raw" if style == "raw" else "b"),
        b"To: " + mail.to_addr.encode(),
        b"Subject: " + header_value(mail.subject, cs, style),
        b"Message-ID: " + mail.message_id.encode(),
    ]
    if mail.in_reply_to:
        h.append(b"In-Reply-To: " + mail.in_reply_to.encode())
    if mail.references:
        h.append(b"References: " + mail.references.encode())
    h.append(b"X-Mailer: " + MAILERS.get(mail.client, mail.client).encode())
    h.append(b"MIME-Version: 1.0")
    for name, value in mail.headers:
        h.append(f"{name}: ".encode() + header_value(value, cs, style))
    return CRLF.join(h) + CRLF + _body_entity(mail)


def forward(inner: bytes, *, subject: str, from_addr: str = "李四 <lisi@example.com.cn>",
            charset: str = "GBK", note: str = "请见转发的申请邮件。") -> bytes:
    """Forward as attachment (message/rfc822), as Foxmail and Outlook do."""
    head = CRLF.join([
        b"Date: Tue, 6 Jan 2026 10:00:00 +0800",
        b"From: " + _addr(from_addr, charset, "b"),
        b"To: xmport@189.cn",
        b"Subject: " + header_value(subject, charset, "b"),
        b"Message-ID: <fwd.20260106100000@example.com.cn>",
        b"MIME-Version: 1.0",
    ])
    rfc822 = b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n" + inner
    return head + CRLF + multipart("mixed", [text_part(note, charset), rfc822], "----=_FWD_0")


def smime_signed(mail: Mail, signer_cert_der: bytes) -> bytes:
    """multipart/signed with an smime.p7s (a PKCS#7 blob carrying the signer's certificate)."""
    inner = _body_entity(mail)
    # Not a valid signature: intake only needs to see the shape and the embedded certificate.
    p7s = b"\x30\x82" + len(signer_cert_der).to_bytes(2, "big") + signer_cert_der
    sig = (b"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n" + b64_body(p7s))
    signed = multipart("signed", [inner, sig], "----=_SIGNED_0",
                       ';\r\n\tprotocol="application/pkcs7-signature"; micalg=sha-256')
    cs = mail.charset
    head = CRLF.join([
        b"Date: " + mail.date.encode(),
        b"From: " + _addr(mail.from_addr, cs, "b"),
        b"To: " + mail.to_addr.encode(),
        b"Subject: " + header_value(mail.subject, cs, mail.subject_style),
        b"Message-ID: " + mail.message_id.encode(),
        b"X-Mailer: Microsoft Outlook 16.0",
        b"MIME-Version: 1.0",
    ])
    return head + CRLF + signed


def bounce(original: bytes, *, auto_submitted: bool = True,
           from_addr: str = "MAILER-DAEMON@189.cn") -> bytes:
    """A delivery status notification (RFC 3464) returning `original`."""
    head = [b"Return-Path: <>", b"Date: Mon, 5 Jan 2026 09:31:00 +0800",
            f"From: Mail Delivery System <{from_addr}>".encode(),
            b"To: xmport@189.cn",
            b"Subject: Undelivered Mail Returned to Sender",
            b"Message-ID: <dsn.20260105093100@189.cn>", b"MIME-Version: 1.0"]
    if auto_submitted:
        head.append(b"Auto-Submitted: auto-replied")
    text = text_part("This is the mail system at host 189.cn. Your message could not be "
                     "delivered.", "us-ascii", cte="7bit")
    status = (b"Content-Type: message/delivery-status\r\n\r\n"
              b"Reporting-MTA: dns; 189.cn\r\n\r\nFinal-Recipient: rfc822; nobody@example.com\r\n"
              b"Action: failed\r\nStatus: 5.1.1\r\n")
    orig = b"Content-Type: message/rfc822\r\n\r\n" + original
    return CRLF.join(head) + CRLF + multipart("report", [text, status, orig], "DSN_0",
                                              "; report-type=delivery-status")


def plain(subject: str, text: str, headers: list[tuple[str, str]] | None = None,
          from_addr: str = "王五 <wangwu@example.com.cn>", charset: str = "UTF-8",
          message_id: str = "<plain.1@example.com.cn>", in_reply_to: str | None = None,
          references: str | None = None) -> bytes:
    """A one-part text mail (auto replies, notices, unrelated mail)."""
    return build(Mail(subject=subject, text=text, from_addr=from_addr, charset=charset,
                      headers=headers or [], message_id=message_id, in_reply_to=in_reply_to,
                      references=references, client="outlook", subject_style="b"))


def zip_bomb(size: int = 64 * 1024 * 1024, *, hostile_names: bool = False) -> bytes:
    """A zip of a few tens of KB that inflates to `size` bytes, with a small second member
    (named to escape the folder it is unpacked in, with `hostile_names`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("营业执照.pdf", "w") as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                fh.write(chunk)
        if hostile_names:
            zf.writestr("../../../../tmp/mailbot-e2e-escape.pdf", pdf(300))
            zf.writestr("/etc/mailbot-e2e-absolute.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 100)
        else:
            zf.writestr("经办人身份证.pdf", pdf(300))
    return buf.getvalue()
