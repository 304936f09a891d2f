"""Materials of one attachment: parsing, magic bytes, names, zip and winmail.dat (issue 3 item 7).

CSRs and certificates are made by the real OpenSSL CLI; zips with GBK names, lying headers and
encrypted flags are written byte by byte, as Windows tools and attackers write them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import subprocess
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbot.config import load_rule_settings
from mailbot.intake.attachments import (
    DEFAULT_SETTINGS,
    classify_attachment,
    find_csr_in_text,
    material_settings,
    name_materials,
    safe_member_name,
    sniff_type,
)
from tests.support.formbuilder import FILLED, TINY_PNG, blank_template, build_form, scanned_form

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64
OLE_DOC = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
           + "WordDocument".encode("utf-16-le") + b"\x00" * 512)


# ---------------------------------------------------------------------------------------------
# fixtures: real SM2 material from OpenSSL


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("genpkey", "-algorithm", "SM2", "-out", "key.pem")
    run("req", "-new", "-key", "key.pem", "-sm3", "-sigopt", "distid:1234567812345678",
        "-utf8", "-subj", "/C=CN/O=厦门某某科技有限公司/CN=厦门某某科技有限公司", "-out", "req.pem")
    run("req", "-in", "req.pem", "-outform", "DER", "-out", "req.der")
    run("req", "-x509", "-key", "key.pem", "-sm3", "-sigopt", "distid:1234567812345678",
        "-subj", "/C=CN/O=Test/CN=old cert", "-days", "3650", "-out", "cert.pem")
    run("x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der")
    run("crl2pkcs7", "-nocrl", "-certfile", "cert.pem", "-outform", "DER", "-out", "cert.p7b")
    run("pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der")
    run("ec", "-in", "key.pem", "-out", "sec1.pem")
    run("ec", "-in", "key.pem", "-outform", "DER", "-out", "sec1.der")
    run("pkcs8", "-topk8", "-in", "key.pem", "-passout", "pass:secret", "-out", "enc.pem")
    run("pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-passout", "pass:x",
        "-out", "id.p12")
    return {p.name: p.read_bytes() for p in Path(d).iterdir()}


def one(filename: str, data: bytes, content_type: str = "application/octet-stream",
        settings: dict | None = None):
    facts = classify_attachment(filename, content_type, data, settings)
    assert len(facts) == 1, facts
    return facts[0]


# ---------------------------------------------------------------------------------------------
# raw zip writer: full control over flags, name bytes and declared sizes


def raw_zip(entries: list[dict]) -> bytes:
    """entries: {"name": bytes, "data": bytes, "flags": int, "deflate": bool,
    "declared_size": int (lie about the size), "extra": bytes}."""
    out, central = io.BytesIO(), []
    for e in entries:
        data, name = e["data"], e["name"]
        method = 8 if e.get("deflate", True) else 0
        if method == 8:
            comp = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = comp.compress(data) + comp.flush()
        else:
            payload = data
        crc = zlib.crc32(data)
        size = e.get("declared_size", len(data))
        flags, extra = e.get("flags", 0), e.get("extra", b"")
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc,
                              len(payload), size, len(name), len(extra)) + name + extra + payload)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0,
                                   0x21, crc, len(payload), size, len(name), len(extra), 0, 0,
                                   0, 0, offset) + name + extra)
    cd_start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          out.tell() - cd_start, cd_start, 0))
    return out.getvalue()


def std_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# TNEF writer (MS-OXTNEF): signature, key, then level/id/type/length/data/checksum attributes


def _tnef_attr(level: int, name: int, typ: int, data: bytes) -> bytes:
    return (struct.pack("<BHHI", level, name, typ, len(data)) + data
            + struct.pack("<H", sum(data) & 0xFFFF))


def winmail(files: list[tuple[bytes, bytes]]) -> bytes:
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += _tnef_attr(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += _tnef_attr(1, 0x9007, 0x0006, struct.pack("<II", 936, 0))      # attOemCodepage
    out += _tnef_attr(1, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    for name, data in files:
        out += _tnef_attr(2, 0x9002, 0x0006, struct.pack("<HIIHH", 1, 0xFFFFFFFF, 0, 0, 0))
        out += _tnef_attr(2, 0x8010, 0x0001, name + b"\x00")              # attAttachTitle
        out += _tnef_attr(2, 0x800F, 0x0006, data)                        # attAttachData
    return out


# ---------------------------------------------------------------------------------------------
# magic bytes


@pytest.mark.parametrize("data,kind", [
    (PDF, "pdf"), (b"\xef\xbb\xbf%PDF-1.4", "pdf"), (JPEG, "jpeg"), (TINY_PNG, "png"),
    (b"GIF89a\x01\x00", "gif"), (b"BM" + b"\x00" * 12 + struct.pack("<I", 40) + b"\x00" * 30,
                                 "bmp"),
    (b"II*\x00\x08\x00", "tiff"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"), (OLE_DOC, "doc"),
    (b"Rar!\x1a\x07\x01\x00", "rar"), (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z"),
    (b"\x78\x9f\x3e\x22\x01\x00", "tnef"), (b"hello world", None), (b"BM hello", None),
    (b"", None),
])
def test_sniff_type(data: bytes, kind: str | None) -> None:
    assert sniff_type(data) == kind


def test_sniff_office_and_zip() -> None:
    assert sniff_type(build_form()) == "docx"
    assert sniff_type(build_form()[:512]) == "docx"  # analyse passes a prefix for big parts
    assert sniff_type(std_zip({"a.pdf": PDF})) == "zip"
    xlsx = std_zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
    assert sniff_type(xlsx) == "xlsx"
    assert sniff_type(std_zip({"OFD.xml": b"<ofd/>", "Doc_0/Document.xml": b"<d/>"})) == "ofd"


# ---------------------------------------------------------------------------------------------
# CSR and certificate by parsing, whatever the name


def _csr_forms(pki: dict[str, bytes]) -> dict[str, bytes]:
    pem, der = pki["req.pem"], pki["req.der"]
    b64 = base64.b64encode(der)
    return {
        "pem": pem,
        "pem-new-label": pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"),
        "pem-crlf": pem.replace(b"\n", b"\r\n"),
        "der": der,
        "base64-one-line": b64,
        "base64-wrapped-crlf": b"\r\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)),
        "utf16-le-bom": pem.decode().encode("utf-16"),
        "utf16-be-bom": b"\xfe\xff" + pem.decode().encode("utf-16-be"),
        "utf8-bom": b"\xef\xbb\xbf" + pem,
    }


@pytest.mark.parametrize("name", ["server.csr", "request.txt", "req.pem", "申请文件", "营业执照.pdf"])
@pytest.mark.parametrize("form", ["pem", "pem-new-label", "pem-crlf", "der", "base64-one-line",
                                  "base64-wrapped-crlf", "utf16-le-bom", "utf16-be-bom",
                                  "utf8-bom"])
def test_csr_recognised_by_parsing(pki: dict[str, bytes], name: str, form: str) -> None:
    data = _csr_forms(pki)[form]
    fact = one(name, data)
    assert fact.materials == ["csr"]
    assert fact.content_type == "application/pkcs10"
    assert fact.data == data and fact.size == len(data)


@pytest.mark.parametrize("name", ["sign.cer", "old.crt", "cert.txt", "noext", "证书.der"])
@pytest.mark.parametrize("form", ["pem", "der", "base64", "utf16", "p7b"])
def test_certificate_recognised_by_parsing(pki: dict[str, bytes], name: str, form: str) -> None:
    data = {"pem": pki["cert.pem"], "der": pki["cert.der"],
            "base64": base64.b64encode(pki["cert.der"]),
            "utf16": pki["cert.pem"].decode().encode("utf-16"), "p7b": pki["cert.p7b"]}[form]
    fact = one(name, data)
    assert fact.materials == ["certificate"]
    assert fact.content_type == "application/pkix-cert"
    assert fact.data == data


def test_csr_and_certificate_in_one_file(pki: dict[str, bytes]) -> None:
    fact = one("both.pem", pki["req.pem"] + pki["cert.pem"])
    assert fact.materials == ["csr", "certificate"]


@pytest.mark.parametrize("file", ["key.pem", "key.der", "sec1.pem", "sec1.der", "enc.pem",
                                  "id.p12", "key.pem-utf16"])
def test_private_key_is_flagged_and_never_kept(pki: dict[str, bytes], file: str) -> None:
    data = pki["key.pem"].decode().encode("utf-16") if file == "key.pem-utf16" else pki[file]
    fact = one("server.key", data)
    assert fact.materials == ["other"] and fact.data is None
    assert [(f.code, f.severity) for f in fact.findings] == [("private_key_sent", "reject")]
    assert not any(b"PRIVATE" in str(f.facts).encode() for f in fact.findings)


def test_unreadable_csr_file_is_still_the_csr(pki: dict[str, bytes]) -> None:
    # The PKI check will say csr_unreadable; "missing CSR" would be the wrong advice.
    fact = one("device.csr", b"garbage that is no request")
    assert fact.materials == ["csr"] and fact.data
    broken = pki["req.pem"].replace(b"MII", b"!!!", 1)
    for name in ("x.txt", "noext", "营业执照.pdf"):
        assert one(name, broken).materials == ["csr"]
        assert one(name, broken.decode().encode("utf-16")).materials == ["csr"]


def test_unreadable_certificate_gets_a_finding() -> None:
    fact = one("old.cer", b"not a certificate")
    assert fact.materials == ["other"]
    assert [f.code for f in fact.findings] == ["attachment_rejected"]


def test_random_text_is_not_pki() -> None:
    assert one("notes.txt", b"hello\r\nMIIB this is not base64 at all").materials == ["other"]
    assert one("x.bin", b"\x30\x03\x02\x01\x00").materials == ["other"]


# ---------------------------------------------------------------------------------------------
# documents: magic bytes, then names


def test_magic_beats_the_name() -> None:
    fact = one("营业执照.pdf", JPEG, "application/pdf")
    assert fact.content_type == "image/jpeg" and fact.materials == ["business_licence"]
    fact = one("scan.jpg", PDF, "image/jpeg")
    assert fact.content_type == "application/pdf" and fact.materials == ["other"]
    fact = one("经办人身份证.png", TINY_PNG, "application/octet-stream")
    assert fact.content_type == "image/png" and fact.materials == ["handler_id"]


@pytest.mark.parametrize("name,materials", [
    ("中国电子口岸数字证书申请表.pdf", ["application_form"]),
    ("申请表（盖章）.jpg", ["application_form"]),
    ("营业执照副本.pdf", ["business_licence"]),
    ("企业法人营业执照.jpg", ["business_licence"]),
    ("事业单位法人证书.pdf", ["business_licence"]),
    ("资质证明.pdf", ["business_licence"]),
    ("法定代表人身份证.jpg", ["legal_rep_id"]),
    ("法人身份证正反面.pdf", ["legal_rep_id"]),
    ("主要负责人证件.jpg", ["legal_rep_id"]),
    ("经办人身份证.jpg", ["handler_id"]),
    ("法人及经办人身份证.pdf", ["legal_rep_id", "handler_id"]),
    ("身份证.pdf", ["legal_rep_id", "handler_id"]),
    ("商用密码产品认证证书.pdf", ["crypto_product_cert"]),
    ("产品认证证书（服务器密码机）.pdf", ["crypto_product_cert"]),
    ("申请表+营业执照+法人身份证.pdf", ["application_form", "business_licence", "legal_rep_id"]),
    ("ＦＵＬＬ　营业执照．ＰＤＦ", ["business_licence"]),
    ("image001.png", []), ("logo.gif", []),
])
def test_name_keywords(name: str, materials: list[str]) -> None:
    assert name_materials(name) == materials
    assert one(name, PDF).materials == (materials or ["other"])


def test_settings_change_keywords() -> None:
    settings = {"materials": {"keywords": dict(DEFAULT_SETTINGS["keywords"],
                                               business_licence=["yyzz"])}}
    assert one("yyzz.jpg", JPEG, settings=settings).materials == ["business_licence"]
    assert one("营业执照.jpg", JPEG, settings=settings).materials == ["other"]


def test_shipped_rules_file_equals_builtin_defaults() -> None:
    shipped = load_rule_settings()["materials"]
    assert material_settings(shipped) == material_settings(None)
    for section, values in shipped.items():
        if section != "required":  # the rules' table (tests/rules/test_materials.py)
            assert DEFAULT_SETTINGS[section] == values


def test_inline_logo_is_other() -> None:
    facts = classify_attachment("image001.png", "image/png", TINY_PNG, None, inline=True,
                                content_id="<logo@x>")
    assert facts[0].materials == ["other"] and facts[0].inline
    assert facts[0].content_id == "<logo@x>"


# ---------------------------------------------------------------------------------------------
# the application form


def test_form_docx_is_recognised_even_when_misnamed() -> None:
    fact = one("附件1.docx", build_form())
    assert fact.materials == ["application_form"]
    assert fact.form == dict(FILLED, application_type="new")
    assert fact.data is not None
    assert fact.content_type.endswith("wordprocessingml.document")


def test_blank_template_is_the_form() -> None:
    fact = one("document.docx", blank_template())
    assert fact.materials == ["application_form"] and fact.form == {}


def test_scanned_docx_named_as_form() -> None:
    fact = one("数字证书申请表.docx", scanned_form())
    assert fact.materials == ["application_form"] and fact.form == {}
    assert one("other.docx", scanned_form()).materials == ["other"]


def test_doc_form_by_name_no_crash() -> None:
    fact = one("申请表.doc", OLE_DOC)
    assert fact.materials == ["application_form"]
    assert fact.content_type == "application/msword"


# ---------------------------------------------------------------------------------------------
# zip archives


def test_zip_members_are_listed_one_by_one(pki: dict[str, bytes]) -> None:
    z = std_zip({"材料/营业执照.pdf": PDF, "材料/申请表.docx": build_form(),
                 "server.csr": pki["req.pem"], "__MACOSX/._x": b"junk", "dir/": b""})
    facts = classify_attachment("材料.zip", "application/zip", z)
    rows = {f.filename: f.materials for f in facts}
    assert rows == {"材料.zip/营业执照.pdf": ["business_licence"],
                    "材料.zip/申请表.docx": ["application_form"],
                    "材料.zip/server.csr": ["csr"]}
    form = next(f for f in facts if f.filename.endswith(".docx"))
    assert form.form and form.form["applicant_org"] == FILLED["applicant_org"]


def test_gbk_names_without_utf8_flag() -> None:
    z = raw_zip([{"name": "营业执照.pdf".encode("gbk"), "data": PDF},
                 {"name": "法人身份证.jpg".encode("gbk"), "data": JPEG},
                 {"name": "经办人.jpg".encode(), "data": JPEG, "flags": 0x800},
                 {"name": "申请表.pdf".encode(), "data": PDF}])  # UTF-8, flag unset
    facts = classify_attachment("材料.zip", "application/zip", z)
    assert [(f.filename, f.materials) for f in facts] == [
        ("材料.zip/营业执照.pdf", ["business_licence"]), ("材料.zip/法人身份证.jpg", ["legal_rep_id"]),
        ("材料.zip/经办人.jpg", ["handler_id"]), ("材料.zip/申请表.pdf", ["application_form"])]


def test_info_zip_unicode_path_extra() -> None:
    utf8 = "商用密码产品认证证书.pdf".encode()
    extra = struct.pack("<HHB", 0x7075, 5 + len(utf8), 1) + struct.pack("<I", 0) + utf8
    z = raw_zip([{"name": b"????.pdf", "data": PDF, "extra": extra}])
    fact = one("a.zip", z)
    assert fact.filename == "a.zip/商用密码产品认证证书.pdf"
    assert fact.materials == ["crypto_product_cert"]


def test_nested_zip(pki: dict[str, bytes]) -> None:
    inner = std_zip({"证书.cer": pki["cert.der"], "经办人身份证.jpg": JPEG})
    outer = std_zip({"inner.zip": inner, "营业执照.pdf": PDF})
    facts = classify_attachment("outer.zip", "application/zip", outer)
    assert {f.filename: f.materials for f in facts} == {
        "outer.zip/inner.zip/证书.cer": ["certificate"],
        "outer.zip/inner.zip/经办人身份证.jpg": ["handler_id"],
        "outer.zip/营业执照.pdf": ["business_licence"]}


def test_member_inherits_the_archive_name() -> None:
    facts = classify_attachment("经办人身份证.zip", "", std_zip({"正面.jpg": JPEG, "反面.jpg": JPEG}))
    assert [f.materials for f in facts] == [["handler_id"], ["handler_id"]]


def test_nesting_depth_is_limited() -> None:
    z = std_zip({"营业执照.pdf": PDF})
    for n in range(5):
        z = std_zip({f"level{n}.zip": z})
    facts = classify_attachment("deep.zip", "", z)
    assert all("营业执照" not in f.filename for f in facts)
    assert any(x.code == "attachment_rejected" and x.facts["reason"] == "depth"
               for f in facts for x in f.findings)


def _zero_bomb(size: int) -> bytes:
    """A zip with one member of `size` zero bytes, written in streaming fashion."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("bomb.txt", "w", force_zip64=True) as fh:
            block = b"\x00" * (1024 * 1024)
            for _ in range(size // len(block)):
                fh.write(block)
        zf.writestr("营业执照.pdf", PDF)
    return buf.getvalue()


@pytest.mark.timeout(60)
def test_zip_bomb_is_refused_with_bounded_memory() -> None:
    bomb = _zero_bomb(300 * 1024 * 1024)  # ~300 KB on the wire, 300 MB inflated
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        facts = classify_attachment("bomb.zip", "application/zip", bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    bad = next(f for f in facts if f.filename == "bomb.zip/bomb.txt")
    assert bad.materials == ["other"] and bad.data is None
    assert [(x.code, x.severity, x.facts["reason"]) for x in bad.findings] == [
        ("attachment_rejected", "reject", "ratio")]
    # The other member is still read.
    assert any(f.materials == ["business_licence"] for f in facts)


@pytest.mark.timeout(60)
def test_lying_header_stops_early() -> None:
    # Declares 1 KB, inflates to 50 MB: reading stops at the declared size, never further.
    z = raw_zip([{"name": b"liar.pdf", "data": b"\x00" * (50 * 1024 * 1024),
                  "declared_size": 1024}])
    tracemalloc.start()
    try:
        facts = classify_attachment("liar.zip", "", z)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert facts[0].materials == ["other"]
    assert facts[0].findings[0].code == "attachment_rejected"


def test_big_member_is_judged_by_its_head() -> None:
    settings = {"materials": {"archive": {"keep_bytes": 4096}}}
    big_pdf = PDF + os.urandom(20000)
    facts = classify_attachment("a.zip", "", std_zip({"营业执照.pdf": big_pdf,
                                                      "inner.zip": std_zip({"x.pdf": big_pdf})}),
                                settings)
    assert facts[0].materials == ["business_licence"] and facts[0].size == len(big_pdf)
    assert facts[0].sha256 == hashlib.sha256(big_pdf).hexdigest() and facts[0].data is None
    assert facts[1].materials == ["other"]
    assert facts[1].findings[0].facts["reason"] == "too_large"


def test_total_size_and_count_limits() -> None:
    settings = {"materials": {"archive": {"max_total_bytes": 3000, "max_members": 3}}}
    z = std_zip({f"{n}.bin": os.urandom(1200) for n in range(5)})
    facts = classify_attachment("big.zip", "", z, settings)
    reasons = [x.facts["reason"] for f in facts for x in f.findings]
    assert "total_size" in reasons
    assert sum(1 for f in facts if not f.findings) == 2  # 2400 bytes fit, the third does not
    facts = classify_attachment("many.zip", "", std_zip({f"{n}.pdf": PDF for n in range(5)}),
                                settings)
    assert len([f for f in facts if not f.findings]) == 3
    assert facts[-1].findings[0].facts["reason"] == "count"
    assert facts[-1].findings[0].severity == "warn"


def test_zip_with_thousands_of_entries_is_refused_before_listing() -> None:
    z = raw_zip([{"name": f"{n}.txt".encode(), "data": b"", "deflate": False}
                 for n in range(2500)])
    fact = one("many.zip", z)
    assert fact.materials == ["other"]
    assert fact.findings[0].facts["reason"] == "count"


@pytest.mark.parametrize("raw,expected", [
    (b"../../etc/passwd", "passwd"), (b"/abs/path/x.pdf", "x.pdf"),
    (b"C:\\Windows\\System32\\x.pdf", "x.pdf"), (b"a/../../b.jpg", "b.jpg"),
    (b"..", "unnamed"), (b"evil\x01\x1b[31m.pdf", "evil[31m.pdf"),
    ("inv\u202egpj.exe".encode(), "invgpj.exe"),
])
def test_member_names_never_become_paths(raw: bytes, expected: str, tmp_path: Path) -> None:
    flags = 0x800 if not raw.isascii() else 0
    z = raw_zip([{"name": raw, "data": PDF, "flags": flags}])
    before = set(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        fact = one("x.zip", z)
    finally:
        os.chdir(cwd)
    assert fact.filename == f"x.zip/{expected}"
    assert set(os.listdir(tmp_path)) == before
    label, path = safe_member_name(raw.decode("utf-8", "replace"))
    assert ".." not in path.split("/") and "/" not in label


def test_encrypted_member_is_reported() -> None:
    z = raw_zip([{"name": b"secret.pdf", "data": PDF, "flags": 0x1},
                 {"name": "营业执照.pdf".encode(), "data": PDF, "flags": 0x800}])
    facts = classify_attachment("locked.zip", "", z)
    locked = facts[0]
    assert locked.filename == "locked.zip/secret.pdf" and locked.materials == ["other"]
    assert locked.findings[0].code == "attachment_rejected"
    assert locked.findings[0].facts["reason"] == "encrypted"
    assert facts[1].materials == ["business_licence"]


def test_corrupt_and_empty_zip() -> None:
    fact = one("broken.zip", b"PK\x03\x04" + os.urandom(200))
    assert fact.materials == ["other"] and fact.findings[0].facts["reason"] == "corrupt"
    fact = one("empty.zip", std_zip({}))
    assert fact.materials == ["other"] and fact.findings[0].facts["reason"] == "empty"


@pytest.mark.parametrize("magic,kind", [(b"Rar!\x1a\x07\x00", "rar"),
                                        (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z")])
def test_rar_and_7z_are_not_opened(magic: bytes, kind: str) -> None:
    fact = one(f"材料.{kind}", magic + os.urandom(100))
    assert fact.materials == ["other"]
    assert [(f.code, f.severity) for f in fact.findings] == [("archive_unsupported", "warn")]
    assert "zip" in fact.findings[0].detail


# ---------------------------------------------------------------------------------------------
# TNEF winmail.dat


def test_winmail_dat_is_expanded(pki: dict[str, bytes]) -> None:
    import tnefparse
    data = winmail([(b"server.csr", pki["req.pem"]), ("营业执照.pdf".encode(), PDF),
                    ("经办人.jpg".encode("gbk"), JPEG)])
    parsed = tnefparse.TNEF(data)  # the library reads what we built
    assert len(parsed.attachments) == 3
    facts = classify_attachment("winmail.dat", "application/ms-tnef", data)
    assert [(f.filename, f.materials) for f in facts] == [
        ("winmail.dat/server.csr", ["csr"]), ("winmail.dat/营业执照.pdf", ["business_licence"]),
        ("winmail.dat/经办人.jpg", ["handler_id"])]


def test_zip_inside_winmail_dat() -> None:
    data = winmail([(b"a.zip", std_zip({"营业执照.pdf": PDF}))])
    facts = classify_attachment("winmail.dat", "application/ms-tnef", data)
    assert [(f.filename, f.materials) for f in facts] == [
        ("winmail.dat/a.zip/营业执照.pdf", ["business_licence"])]


def _mapi(props: bytes, count: int) -> bytes:
    return struct.pack("<I", count) + props


@pytest.mark.timeout(20)
@pytest.mark.parametrize("props", [
    _mapi(b"", 0xFFFFFFFF),  # tnefparse alone would loop 2**32 times
    _mapi(struct.pack("<HHI", 0x1003, 0x3001, 0xFFFFFFF0), 1),  # huge multi-value count
    _mapi(struct.pack("<HHI", 0x001E, 0x3001, 0x7FFFFFFF), 1),  # huge string count
])
def test_hostile_winmail_dat_is_refused_quickly(props: bytes) -> None:
    data = winmail([(b"a.pdf", PDF)]) + _tnef_attr(1, 0x9003, 0x0006, props)
    fact = one("winmail.dat", data)
    assert fact.materials == ["other"]
    assert fact.findings[0].facts["reason"] == "corrupt"


def test_winmail_dat_with_long_filename_property() -> None:
    # attAttachment carrying PidTagAttachLongFilename (0x3707, unicode), as Outlook writes it
    name = "商用密码产品认证证书.pdf".encode("utf-16-le") + b"\x00\x00"
    prop = struct.pack("<HHII", 0x001F, 0x3707, 1, len(name)) + name + b"\x00" * (-len(name) % 4)
    data = winmail([(b"CRYPTO~1.PDF", PDF)])
    data += _tnef_attr(2, 0x9005, 0x0006, _mapi(prop, 1))
    facts = classify_attachment("winmail.dat", "application/ms-tnef", data)
    assert [(f.filename, f.materials) for f in facts] == [
        ("winmail.dat/商用密码产品认证证书.pdf", ["crypto_product_cert"])]


def test_broken_winmail_dat() -> None:
    fact = one("winmail.dat", b"\x78\x9f\x3e\x22" + os.urandom(40))
    assert fact.materials == ["other"]


# ---------------------------------------------------------------------------------------------
# CSR pasted in a body


def test_find_csr_in_text(pki: dict[str, bytes]) -> None:
    pem, der = pki["req.pem"].decode(), pki["req.der"]
    assert find_csr_in_text(f"您好，\n请查收：\n{pem}\n谢谢") == der
    html_stripped = pem.replace("\n", "\u00a0\n")
    assert find_csr_in_text("见下：" + html_stripped) == der
    b64 = base64.b64encode(der).decode()
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    assert find_csr_in_text(f"CSR:\n{wrapped}\nRegards") == der
    assert find_csr_in_text(f"CSR:\r\n{wrapped.replace(chr(10), chr(13) + chr(10))}") == der
    nbsp = wrapped.replace("\n", "\u00a0 \n")
    assert find_csr_in_text(f"ADMIN says MIME type below\n{nbsp}\n") == der
    assert find_csr_in_text(f"Our request: {b64} thanks") == der
    assert find_csr_in_text("no request here, just words") is None
    assert find_csr_in_text(base64.b64encode(pki["cert.der"]).decode()) is None
    broken = "-----BEGIN CERTIFICATE REQUEST-----\nnot base64!!\n-----END CERTIFICATE REQUEST-----"
    assert find_csr_in_text(broken) == broken.encode()


# ---------------------------------------------------------------------------------------------
# robustness


_NAMES = st.sampled_from(["a.pdf", "申请表.docx", "x.zip", "winmail.dat", "r.csr", "", "营业执照"])
_PREFIXES = st.sampled_from([b"", b"PK\x03\x04", b"\x78\x9f\x3e\x22", b"\xd0\xcf\x11\xe0",
                             b"-----BEGIN CERTIFICATE REQUEST-----\n", b"\x30\x82\x01\x00",
                             b"\xff\xfe"])


@given(name=_NAMES, prefix=_PREFIXES, body=st.binary(max_size=600))
def test_classify_never_raises(name: str, prefix: bytes, body: bytes) -> None:
    facts = classify_attachment(name, "application/octet-stream", prefix + body)
    assert facts and all(f.materials for f in facts)


@given(st.binary(min_size=1, max_size=64))
def test_mutated_zip_never_raises(noise: bytes) -> None:
    z = bytearray(std_zip({"营业执照.pdf": PDF, "b.csr": b"x"}))
    pos = noise[0] % len(z)
    z[pos:pos + len(noise)] = noise
    assert classify_attachment("m.zip", "", bytes(z))


@given(st.text(max_size=500))
def test_find_csr_in_text_never_raises(text: str) -> None:
    assert find_csr_in_text(text) is None or isinstance(find_csr_in_text(text), bytes)
